"""Training goldens of genuine Caffe: three SGD steps of the authors' training nets under their
solvers, at a reduced width with random weights, on genuine VOC images (dropout layers removed:
they are random). Each golden folder holds ``train.prototxt``, ``solver.prototxt``,
``initial.caffemodel``, ``batch.npz``, ``params_after_3_iterations.npz`` (``LAYER/0`` weights,
``LAYER/1`` biases) and ``facts.json`` (the settings and the loss Caffe reported at each step).

* ``fcn32s``: fcn.berkeleyvision.org @1305c73 ``voc-fcn32s/train.prototxt`` (SoftmaxWithLoss
  ``normalize: false``: the loss summed over pixels) under its ``solver.prototxt`` as it stands
  (SGD, lr 1e-10 fixed, momentum 0.99, weight decay 5e-4); batch 1, one window of an image.
* ``deeplab_largefov``: the DeepLab-LargeFOV train net (``oracle_nets.py``) under its solver
  (SGD, lr 1e-3, ``step`` x0.1, momentum 0.9, weight decay 5e-4; fc8 at lr_mult 10/20) with the
  step size cut from 2000 to 2 so that the third step runs at lr 1e-4; batch 2 of 321 x 321
  windows, labels sampled at pixel 8k (``Interp`` ``shrink_factor: 8``, 41 x 41).
* ``context_basic``: fyu/dilation @0f10574 ``network.py: build_context`` (8 layers, each 3x3
  padded by its dilation) + ``make_softmax_loss`` as ``train.py make_context`` builds them, under
  ``train.py make_solver`` (lr 1e-3, the context default, momentum 0.9); random weights instead
  of the identity filler; batch 2 of 66 x 66 front-end score maps (``test.py --bin``: fyu/dilation's
  front end, ``network.py: build_frontend_vgg`` with random weights, on the 900 x 900 tile of the
  reflect-101-padded image) with labels sampled at stride 8 from offset 0 (``BinLabelData``
  ``label_slice``), 255 beyond the image.

Usage (pycaffe on the path): train_goldens.py OUT --fcn FCN_CHECKOUT --dilation DILATION_CHECKOUT --voc VOC2012_DIR
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import caffe
import cv2
import numpy as np
from caffe.proto import caffe_pb2
from google.protobuf import text_format
from oracle_nets import (
    CAFFE,
    MEAN_DEEPLAB,
    MEAN_DILATION,
    MEAN_FCN,
    block_type,
    deeplab_largefov_net,
    fcn_net,
    fill,
    layer_blocks,
    read_bgr,
    read_label,
    scale_widths,
    strip_upscore_blobs,
)

ITERATIONS = 3
FCN_WINDOW = ("2007_000129", 30, 40, 221, 263)  # image id, top, left, height, width
DEEPLAB_WINDOWS = (("2007_000033", 20, 100), ("2007_000346", 40, 60))  # image id, top, left of 321 x 321
CONTEXT_IMAGES = ("2007_000123", "2007_000129")
TILE, MARGIN, MAP = 900, 186, 66  # fyu/dilation test.py: 900 x 900 input, 186 margin, 66 x 66 scores


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def finish_solver(solver: caffe_pb2.SolverParameter, folder: Path, seed: int) -> Path:
    """``solver`` made runnable here: the golden's train net, no test net, no snapshots, CPU,
    ``ITERATIONS`` steps; every setting of the update kept."""
    solver.train_net = "train.prototxt"  # relative: Caffe runs in the golden's folder (``three_steps``)
    del solver.test_net[:], solver.test_iter[:]
    for field in ("test_interval", "test_initialization", "average_loss"):
        solver.ClearField(field)
    solver.max_iter, solver.display, solver.snapshot = ITERATIONS, 0, 0
    solver.snapshot_prefix = "snapshot"
    solver.solver_mode = caffe_pb2.SolverParameter.CPU
    solver.random_seed = seed
    path = folder / "solver.prototxt"
    path.write_text(text_format.MessageToString(solver))
    return path


def three_steps(folder: Path, solver_path: Path, seed: int, data: np.ndarray, label: np.ndarray,
                special_init=None) -> list[float]:
    """Random weights (``fill``, then ``special_init``), saved as ``initial.caffemodel``; ``data``
    and ``label`` fed at every step; the parameters after the last step and Caffe's losses."""
    with contextlib.chdir(folder):
        solver = caffe.get_solver(solver_path.name)
    fill(solver.net, seed)
    if special_init is not None:
        special_init(solver.net)
    solver.net.save(str(folder / "initial.caffemodel"))
    strip_upscore_blobs(folder / "initial.caffemodel")
    losses = []
    for _ in range(ITERATIONS):
        solver.net.blobs["data"].data[...] = data
        solver.net.blobs["label"].data[...] = label
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    params = {f"{name}/{j}": blob.data.copy() for name, blobs in solver.net.params.items()
              for j, blob in enumerate(blobs) if not name.startswith("upscore")}  # lr_mult 0: unchanged
    np.savez_compressed(folder / f"params_after_{ITERATIONS}_iterations.npz", **params)
    return losses


def fcn32s(out: Path, args: argparse.Namespace) -> dict[str, object]:
    folder = out / "fcn32s"
    folder.mkdir(parents=True, exist_ok=True)
    image_id, *window = FCN_WINDOW
    image = read_bgr(args.voc, image_id, (0.0, 0.0, 0.0), tuple(window))
    label = read_label(args.voc, image_id, tuple(window))
    shape = (1, 3, *label.shape)
    (folder / "train.prototxt").write_text(
        fcn_net((args.fcn / "voc-fcn32s" / "train.prototxt").read_text(), args.width, shape, train=True))
    solver = text_format.Parse((args.fcn / "voc-fcn32s" / "solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    solver_path = finish_solver(solver, folder, args.seed)
    data = (image - np.array(MEAN_FCN, np.float32)).transpose(2, 0, 1)[None]
    losses = three_steps(folder, solver_path, args.seed, data, label[None, None].astype(np.float32))
    np.savez_compressed(folder / "batch.npz", image_bgr=image.astype(np.uint8)[None], label=label[None])
    return {"source": "fcn.berkeleyvision.org@1305c73 voc-fcn32s/train.prototxt + solver.prototxt",
            "images": [image_id], "window_top_left_height_width": window, "mean_bgr": MEAN_FCN,
            "solver": {"base_lr": solver.base_lr, "lr_policy": solver.lr_policy, "momentum": solver.momentum,
                       "weight_decay": solver.weight_decay, "loss": "summed over pixels (normalize: false)"},
            "loss_of_each_step": losses}


def deeplab(out: Path, args: argparse.Namespace) -> dict[str, object]:
    folder = out / "deeplab_largefov"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for image_id, top, left in DEEPLAB_WINDOWS:
        images.append(read_bgr(args.voc, image_id, (0.0, 0.0, 0.0), (top, left, 321, 321)))
        labels.append(read_label(args.voc, image_id, (top, left, 321, 321))[::8, ::8])
    (folder / "train.prototxt").write_text(deeplab_largefov_net(args.width, (len(images), 3, 321, 321), train=True))
    solver = caffe_pb2.SolverParameter(base_lr=1e-3, lr_policy="step", gamma=0.1, stepsize=2, momentum=0.9,
                                       weight_decay=5e-4, type="SGD")
    solver_path = finish_solver(solver, folder, args.seed)
    data = np.stack([(i - np.array(MEAN_DEEPLAB, np.float32)).transpose(2, 0, 1) for i in images])
    def released_fc8_filler(net: caffe.Net) -> None:  # fc8_voc12: gaussian std 0.01, bias constant 0
        rng = np.random.default_rng(args.seed + 1000)
        net.params["fc8_voc12"][0].data[...] = rng.normal(0, 0.01, net.params["fc8_voc12"][0].data.shape)
        net.params["fc8_voc12"][1].data[...] = 0

    losses = three_steps(folder, solver_path, args.seed, data, np.stack(labels)[:, None].astype(np.float32),
                         released_fc8_filler)
    np.savez_compressed(folder / "batch.npz", image_bgr=np.stack(images).astype(np.uint8), label=np.stack(labels))
    return {"source": "DeepLab-LargeFOV train.prototxt + solver.prototxt as released with DeepLab v1, transcribed "
                      "(hole -> dilation; label_shrink done outside the net: labels at pixel 8k)",
            "images": [w[0] for w in DEEPLAB_WINDOWS], "window_top_left": [w[1:] for w in DEEPLAB_WINDOWS],
            "crop": 321, "mean_bgr": MEAN_DEEPLAB,
            "solver": {"base_lr": 1e-3, "lr_policy": "step", "gamma": 0.1, "stepsize": 2,
                       "released_stepsize": 2000, "momentum": 0.9, "weight_decay": 5e-4,
                       "loss": "mean over valid pixels"},
            "param_multipliers": "fc8_voc12 lr_mult 10/20, others 1/2; decay_mult 1/0",
            "fc8_voc12_init": "the released filler: gaussian std 0.01 (seed + 1000), bias 0",
            "loss_of_each_step": losses}


class _BvlcLayers:
    """``caffe.layers`` for ``network.py``, except that a convolution's ``identity`` weight filler
    (fyu/caffe-dilation's, with ``num_groups``; BVLC Caffe has neither) becomes ``gaussian`` with
    the same std: the weights are overwritten by random ones anyway."""

    def __getattr__(self, name: str):
        layer = getattr(caffe.layers, name)
        if name != "Convolution":
            return layer

        def convolution(*bottoms, **params):
            filler = params.get("convolution_param", {}).get("weight_filler", {})
            if filler.get("type") == "identity":
                filler.pop("num_groups")
                filler["type"] = "gaussian"
            return layer(*bottoms, **params)

        return convolution


def frontend_scores(network, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """``test.py --bin``'s 66 x 66 ``final`` maps of each image's first 900 x 900 tile (fyu/dilation's
    front end at ``args.width``, random weights) and the labels sampled at stride 8 from offset 0."""
    spec = caffe.NetSpec()
    spec.data = caffe.layers.Input(input_param={"shape": {"dim": [1, 3, TILE, TILE]}})
    network.build_frontend_vgg(spec, spec.data, 21)
    blocks = layer_blocks(scale_widths(str(spec.to_proto()), args.width))
    proto = args.out / "context_basic" / "frontend_for_features.prototxt"
    proto.write_text("".join(b for b in blocks if block_type(b) != "Dropout"))  # TEST phase: dropout is identity
    net = caffe.Net(str(proto), caffe.TEST)
    fill(net, args.seed + 100)
    features, labels = [], []
    for image_id in CONTEXT_IMAGES:
        image = read_bgr(args.voc, image_id, MEAN_DILATION, None)
        padded = cv2.copyMakeBorder(image, MARGIN, MARGIN, MARGIN, MARGIN, cv2.BORDER_REFLECT_101)
        tile = padded[:TILE, :TILE]
        tile = cv2.copyMakeBorder(tile, 0, TILE - tile.shape[0], 0, TILE - tile.shape[1], cv2.BORDER_REFLECT_101)
        net.blobs["data"].data[0] = tile.transpose(2, 0, 1)
        net.forward()
        features.append(net.blobs["final"].data[0].copy())
        label = np.full((MAP * 8, MAP * 8), 255, np.uint8)
        full = read_label(args.voc, image_id, None)[: MAP * 8, : MAP * 8]
        label[: full.shape[0], : full.shape[1]] = full
        labels.append(label[::8, ::8])
    return np.stack(features), np.stack(labels)


def context(out: Path, args: argparse.Namespace) -> dict[str, object]:
    folder = out / "context_basic"
    folder.mkdir(parents=True, exist_ok=True)
    network = load_module(args.dilation / "network.py", "network")
    train = load_module(args.dilation / "train.py", "dilation_train")
    features, labels = frontend_scores(network, args)
    features = features.astype(np.float16).astype(np.float32)  # stored as float16: Caffe trains on those values
    spec = caffe.NetSpec()
    spec.data = caffe.layers.Input(input_param={"shape": {"dim": list(features.shape)}})
    spec.label = caffe.layers.Input(input_param={"shape": {"dim": [len(labels), 1, MAP, MAP]}})
    network.L = _BvlcLayers()
    last = network.build_context(spec, spec.data, 21, 8)[0]
    spec.loss = network.make_softmax_loss(last, spec.label)
    (folder / "train.prototxt").write_text(str(spec.to_proto()))
    options = SimpleNamespace(train_net="train.prototxt", test_net=None, lr=1e-3, momentum=0.9, iter_size=1,
                              snapshot_prefix="snapshot")
    solver_path = finish_solver(train.make_solver(options), folder, args.seed)
    solver = text_format.Parse(solver_path.read_text(), caffe_pb2.SolverParameter())
    losses = three_steps(folder, solver_path, args.seed, features, labels[:, None].astype(np.float32))
    np.savez_compressed(folder / "batch.npz", features=features.astype(np.float16), label=labels)
    return {"source": "fyu/dilation@0f10574 network.py build_context(layers=8) + make_softmax_loss, "
                      "train.py make_solver (context: lr 1e-3, momentum 0.9)",
            "images": list(CONTEXT_IMAGES), "features": "front end (network.py build_frontend_vgg, width "
            f"{args.width:g}, random weights seed {args.seed + 100}) on each image's first 900 x 900 tile",
            "solver": {"base_lr": solver.base_lr, "lr_policy": solver.lr_policy, "gamma": solver.gamma,
                       "stepsize": solver.stepsize, "momentum": solver.momentum,
                       "weight_decay": solver.weight_decay, "loss": "mean over valid pixels"},
            "loss_of_each_step": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--fcn", type=Path, required=True, help="a checkout of fcn.berkeleyvision.org @1305c73")
    parser.add_argument("--dilation", type=Path, required=True, help="a checkout of fyu/dilation @0f10574")
    parser.add_argument("--voc", type=Path, required=True, help="VOC2012 folder (JPEGImages, SegmentationClass)")
    parser.add_argument("--width", type=float, default=0.03125)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    caffe.set_mode_cpu()
    facts = {"caffe": CAFFE, "width": args.width, "seed": args.seed, "iterations": ITERATIONS,
             "dropout": "removed (random)"}
    for name, make in (("fcn32s", fcn32s), ("deeplab_largefov", deeplab), ("context_basic", context)):
        facts[name] = make(args.out, args)
        print(name, facts[name]["loss_of_each_step"])
    (args.out / "facts.json").write_text(json.dumps(facts, indent=1) + "\n")


if __name__ == "__main__":
    main()
