"""Forward goldens of genuine Caffe: FCN-32s, FCN-16s, FCN-8s at once (fcn.berkeleyvision.org
@1305c73 ``voc-fcn*/val.prototxt`` made deploy nets) and DeepLab-LargeFOV up to ``fc8_voc12``
(transcribed, ``oracle_nets.py``), at a reduced width with random weights, on genuine VOC images.

FCN: ``infer.py``'s procedure (mean-subtracted BGR, the whole input, the ``score`` blob) on a
window of each image (to keep the files small; ``facts.json`` gives it). DeepLab: the LargeFOV
``test.prototxt`` input (the image padded at the bottom and right with the mean to 513 x 513, i.e.
zeros after the mean is subtracted) and its stride-8 ``fc8_voc12`` scores (65 x 65; BVLC Caffe has
no ``Interp``, so the x8 zoom is not part of the golden).

Usage (pycaffe on the path): forward_goldens.py OUT --fcn FCN_REPO_CHECKOUT --voc VOC2012_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import caffe
import numpy as np
from oracle_nets import (
    CAFFE,
    MEAN_DEEPLAB,
    MEAN_FCN,
    deeplab_largefov_net,
    fcn_net,
    fill,
    read_bgr,
    strip_upscore_blobs,
)

FCN_NETS = {"fcn32s": "voc-fcn32s", "fcn16s": "voc-fcn16s", "fcn8s_atonce": "voc-fcn8s-atonce"}
# net -> (image id, window top, left, height, width): one genuine image each, odd window sizes so
# that the crops meet every rounding case, small so that the float16 scores stay near 0.5 MB
FCN_WINDOWS = {"fcn32s": ("2007_000129", 40, 60, 117, 131), "fcn16s": ("2007_000346", 100, 20, 125, 119),
               "fcn8s_atonce": ("2007_000033", 60, 90, 121, 127)}
DEEPLAB_IMAGES = ("2007_000033", "2007_000129")
DEEPLAB_SIDE = 513


def run(proto: Path, model: Path, seed: int) -> caffe.Net:
    """The net of ``proto`` with random weights, saved to ``model`` and read back; the saved file's
    fixed ``upscore*`` kernels are then stripped (``strip_upscore_blobs``)."""
    net = caffe.Net(str(proto), caffe.TEST)
    fill(net, seed)
    net.save(str(model))
    net = caffe.Net(str(proto), str(model), caffe.TEST)  # read back: the file is what the tests convert
    strip_upscore_blobs(model)
    return net


def forward(net: caffe.Net, image: np.ndarray, blob: str) -> np.ndarray:
    data = image.transpose(2, 0, 1)[None]
    net.blobs["data"].reshape(*data.shape)
    net.blobs["data"].data[...] = data
    net.forward()
    return net.blobs[blob].data[0].copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--fcn", type=Path, required=True, help="a checkout of fcn.berkeleyvision.org @1305c73")
    parser.add_argument("--voc", type=Path, required=True, help="VOC2012 folder (JPEGImages)")
    parser.add_argument("--width", type=float, default=0.03125)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    caffe.set_mode_cpu()
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"w{args.width:g}_seed{args.seed}"
    facts: dict[str, object] = {"caffe": CAFFE, "width": args.width, "seed": args.seed}
    for name, folder in FCN_NETS.items():
        proto = args.out / f"{name}_w{args.width:g}.prototxt"
        proto.write_text(fcn_net((args.fcn / folder / "val.prototxt").read_text(), args.width, (1, 3, 200, 200),
                                 train=False))
        net = run(proto, args.out / f"{name}_{tag}.caffemodel", args.seed)
        image_id, *window = FCN_WINDOWS[name]
        score = forward(net, read_bgr(args.voc, image_id, MEAN_FCN, tuple(window)), "score")
        arrays = {f"{image_id}/score": score.astype(np.float16), f"{image_id}/label": score.argmax(0).astype(np.uint8)}
        np.savez_compressed(args.out / f"{name}_{tag}_outputs.npz", **arrays)
        facts[name] = {"source": f"fcn.berkeleyvision.org@1305c73 {folder}/val.prototxt",
                       "prototxt": proto.name, "caffemodel": f"{name}_{tag}.caffemodel",
                       "outputs": f"{name}_{tag}_outputs.npz", "output": "score",
                       "image": image_id, "window_top_left_height_width": window, "mean_bgr": MEAN_FCN}
    proto = args.out / f"deeplab_largefov_w{args.width:g}.prototxt"
    proto.write_text(deeplab_largefov_net(args.width, (1, 3, DEEPLAB_SIDE, DEEPLAB_SIDE), train=False))
    net = run(proto, args.out / f"deeplab_largefov_{tag}.caffemodel", args.seed)
    arrays = {}
    for image_id in DEEPLAB_IMAGES:
        image = read_bgr(args.voc, image_id, MEAN_DEEPLAB, None)
        padded = np.zeros((DEEPLAB_SIDE, DEEPLAB_SIDE, 3), np.float32)
        padded[: image.shape[0], : image.shape[1]] = image
        fc8 = forward(net, padded, "fc8_voc12")
        arrays[f"{image_id}/fc8"] = fc8.astype(np.float16)
        arrays[f"{image_id}/label"] = fc8.argmax(0).astype(np.uint8)
    np.savez_compressed(args.out / f"deeplab_largefov_{tag}_outputs.npz", **arrays)
    facts["deeplab_largefov"] = {
        "source": "DeepLab-LargeFOV train/test.prototxt as released with DeepLab v1, transcribed (hole -> dilation)",
        "prototxt": proto.name, "caffemodel": f"deeplab_largefov_{tag}.caffemodel",
        "outputs": f"deeplab_largefov_{tag}_outputs.npz", "output": "fc8", "images": list(DEEPLAB_IMAGES),
        "padded_to": DEEPLAB_SIDE, "mean_bgr": MEAN_DEEPLAB}
    (args.out / "facts.json").write_text(json.dumps(facts, indent=1) + "\n")


if __name__ == "__main__":
    main()
