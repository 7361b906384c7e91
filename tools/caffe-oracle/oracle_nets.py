"""The nets the Caffe goldens of ``tests/data/caffe-oracle`` run, as prototxt text for genuine
BVLC Caffe 1.0, and the weights and inputs they are fed. Imported by ``forward_goldens.py`` and
``train_goldens.py`` (run with a pycaffe build, see ``build-caffe.sh`` in ``../shared/tools``).

Sources (read, transcribed where a file is not usable as it stands):

* fcn.berkeleyvision.org @1305c73 ``voc-fcn32s``, ``voc-fcn16s``, ``voc-fcn8s-atonce``
  ``val.prototxt`` / ``train.prototxt``: used as they are, but the ``Python`` data layer becomes
  two ``Input`` blobs (``data``, ``label``) and, for deploy, the loss is dropped;
* DeepLab-LargeFOV ``train.prototxt`` as released with DeepLab v1 (``vgg128_noup``): transcribed
  below from its layout as SPEC section 6 and issue 22 give it (the released file itself was not
  readable here) (BVLC Caffe has no ``hole`` parameter, no ``Interp`` and no data layer of DeepLab's fork:
  ``hole: h`` is written ``dilation: h``, which is the same arithmetic; the labels are shrunk by
  8 outside the net, as ``Interp`` with ``shrink_factor: 8`` samples pixel 8k on a 321 crop);
* fyu/dilation @0f10574 ``network.py``: ``build_context`` and ``make_softmax_loss`` called as
  ``train.py make_context`` does; ``identity`` fillers (fyu/caffe-dilation only) are rewritten to
  ``gaussian`` so that BVLC Caffe builds the net; the weights are then overwritten anyway.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

VGG = {f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)} | {"fc6", "fc7"}
MEAN_FCN = (104.00698793, 116.66876762, 122.67891434)  # fcn.berkeleyvision.org infer.py / voc_layers.py
MEAN_DEEPLAB = (104.008, 116.669, 122.675)  # DeepLab-LargeFOV train/test.prototxt mean_value
MEAN_DILATION = (102.93, 111.36, 116.52)  # fyu/dilation train.py --mean default
CAFFE = "BVLC Caffe 1.0 (brocolli-caffe 9.0.2 sdist, official commit 9b89154), CPU"


def layer_blocks(text: str) -> list[str]:
    """The ``layer { ... }`` blocks of a prototxt (the text before the first one as block 0)."""
    return re.split(r"(?=^layer \{)", text, flags=re.M)


def block_name(block: str) -> str:
    found = re.search(r'name: "([^"]+)"', block)
    return found.group(1) if found else ""


def block_type(block: str) -> str:
    found = re.search(r'type: "([^"]+)"', block)
    return found.group(1) if found else ""


def scale_widths(text: str, width: float) -> str:
    """Every VGG layer's ``num_output`` times ``width`` (at least 1); score layers keep 21."""
    out = []
    for block in layer_blocks(text):
        if block_name(block) in VGG:
            block = re.sub(r"num_output: (\d+)", lambda m: f"num_output: {max(1, round(int(m.group(1)) * width))}",
                           block)
        out.append(block)
    return "".join(out)


INPUTS = """layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param { shape { dim: %d dim: %d dim: %d dim: %d } }
}
"""
LABEL_INPUT = """layer {
  name: "label"
  type: "Input"
  top: "label"
  input_param { shape { dim: %d dim: 1 dim: %d dim: %d } }
}
"""


def fcn_net(text: str, width: float, shape: tuple[int, int, int, int], *, train: bool) -> str:
    """An fcn.berkeleyvision.org ``val``/``train.prototxt`` with its ``Python`` data layer replaced by
    ``Input`` blobs of ``shape`` (and the label); deploy (``train=False``) drops the loss, train drops
    the ``Dropout`` layers (random, so not reproducible elsewhere)."""
    n, _, h, w = shape
    out = [INPUTS % shape + (LABEL_INPUT % (n, h, w) if train else "")]
    for block in layer_blocks(scale_widths(text, width))[1:]:
        kind = block_type(block)
        if kind == "Python" or (kind == "SoftmaxWithLoss" and not train) or (kind == "Dropout" and train):
            continue
        out.append(block)
    return "".join(out)


def deeplab_largefov_net(width: float, shape: tuple[int, int, int, int], *, train: bool) -> str:
    """DeepLab-LargeFOV (``vgg128_noup``, DeepLab v1 release) up to ``fc8_voc12``: pool1-3 MAX 3x3
    s2 p1, pool4/pool5 MAX 3x3 s1 p1, conv5_x pad 2 hole 2, ``pool5a`` AVE 3x3 s1 p1, fc6 3x3
    pad 12 hole 12 (1024), fc7 1x1 (1024), fc8_voc12 1x1 (21; lr_mult 10/20, decay_mult 1/0);
    every other conv lr_mult 1/2, decay_mult 1/0. ``train``: dropout dropped, SoftmaxWithLoss
    (ignore_label 255, the fork's default normalisation = over valid pixels) on the stride-8 label."""
    n, _, h, w = shape
    layers = [INPUTS % shape]
    if train:
        layers.append(LABEL_INPUT % (n, (h - 1) // 8 + 1, (w - 1) // 8 + 1))

    def conv(name: str, bottom: str, outputs: int, kernel: int, pad: int, dilation: int = 1,
             mult: tuple[int, int] = (1, 2)) -> None:
        extra = f" dilation: {dilation}" if dilation > 1 else ""
        layers.append(f"""layer {{
  name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"
  param {{ lr_mult: {mult[0]} decay_mult: 1 }} param {{ lr_mult: {mult[1]} decay_mult: 0 }}
  convolution_param {{ num_output: {outputs} pad: {pad} kernel_size: {kernel}{extra} }}
}}
""")

    def relu(name: str, blob: str) -> None:
        layers.append(f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n')

    def pool(name: str, bottom: str, stride: int, kind: str = "MAX") -> None:
        layers.append(f"""layer {{
  name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}"
  pooling_param {{ pool: {kind} kernel_size: 3 stride: {stride} pad: 1 }}
}}
""")

    bottom = "data"
    for block, (convs, channels, stride) in enumerate(((2, 64, 2), (2, 128, 2), (3, 256, 2), (3, 512, 1),
                                                       (3, 512, 1)), start=1):
        for i in range(1, convs + 1):
            name = f"conv{block}_{i}"
            dilation = 2 if block == 5 else 1
            conv(name, bottom, max(1, round(channels * width)), 3, dilation, dilation)
            relu(f"relu{block}_{i}", name)
            bottom = name
        pool(f"pool{block}", bottom, stride)
        bottom = f"pool{block}"
    pool("pool5a", "pool5", 1, "AVE")
    fc = max(1, round(1024 * width))
    conv("fc6", "pool5a", fc, 3, 12, 12)
    relu("relu6", "fc6")
    if not train:
        layers.append('layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" '
                      "dropout_param { dropout_ratio: 0.5 } }\n")
    conv("fc7", "fc6", fc, 1, 0)
    relu("relu7", "fc7")
    if not train:
        layers.append('layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" '
                      "dropout_param { dropout_ratio: 0.5 } }\n")
    conv("fc8_voc12", "fc7", 21, 1, 0, mult=(10, 20))
    if train:
        layers.append('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8_voc12" bottom: "label" '
                      'top: "loss" loss_param { ignore_label: 255 } }\n')
    return 'name: "DeepLab-LargeFOV"\n' + "".join(layers)


def fill(net, seed: int) -> None:
    """Random weights: He-normal from ``seed``, biases N(0, 0.05); FCN's ``upscore*``
    deconvolutions get ``surgery.interp``'s bilinear kernels and ``Scale`` layers keep their
    constant fillers (``voc-fcn8s-atonce``), as the authors' solve.py leaves them."""
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        weight = blobs[0].data
        if name.startswith("scale_pool"):
            continue
        if name.startswith("upscore"):
            k = weight.shape[2]
            factor = (k + 1) // 2
            centre = factor - 1 if k % 2 == 1 else factor - 0.5
            og = np.ogrid[:k, :k]
            kernel = (1 - abs(og[0] - centre) / factor) * (1 - abs(og[1] - centre) / factor)
            weight[...] = 0
            weight[range(weight.shape[0]), range(weight.shape[1])] = kernel
            continue
        weight[...] = rng.normal(0, np.sqrt(2.0 / np.prod(weight.shape[1:])), weight.shape).astype(np.float32)
        if len(blobs) > 1:
            blobs[1].data[...] = rng.normal(0, 0.05, blobs[1].data.shape).astype(np.float32)


def read_bgr(voc: Path, image_id: str, mean: tuple[float, float, float], window: tuple[int, int, int, int] | None
             ) -> np.ndarray:
    """``cv2.imread`` (BGR) of the image minus ``mean``, cut to ``window`` = (top, left, height, width)."""
    image = cv2.imread(str(voc / "JPEGImages" / f"{image_id}.jpg")).astype(np.float32) - np.array(mean, np.float32)
    if window is not None:
        top, left, height, width = window
        image = image[top:top + height, left:left + width]
    return image


def read_label(voc: Path, image_id: str, window: tuple[int, int, int, int] | None) -> np.ndarray:
    from PIL import Image

    label = np.array(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))
    if window is not None:
        top, left, height, width = window
        label = label[top:top + height, left:left + width]
    return label


def strip_upscore_blobs(path: Path) -> None:
    """Drop the blobs of the ``upscore*`` deconvolutions from a saved caffemodel: they are the fixed
    bilinear kernels that ``fill`` wrote (``surgery.interp``, ``lr_mult: 0``), 21 x 21 x k x k floats
    each (7 MB for FCN-32s's k = 64), and would dwarf the rest of the golden. Caffe ran with them."""
    from caffe.proto import caffe_pb2

    model = caffe_pb2.NetParameter()
    model.ParseFromString(path.read_bytes())
    for layer in model.layer:
        if layer.name.startswith("upscore"):
            del layer.blobs[:]
    path.write_bytes(model.SerializeToString())
