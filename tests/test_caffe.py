"""Caffe weights: the caffemodel decoder against an independent protobuf decoding of a genuine
Caffe file and against files written by an independent encoder (the ``protobuf`` package with
the caffe.proto messages declared here), the conversion of every method's Caffe layers, and
``pretrained="caffe"``."""

import dataclasses
import hashlib
import json
import mmap
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import methods
from benchmarks.caffe_blobs import blob_rows
from benchmarks.check import verdict
from benchmarks.cli import main
from benchmarks.convert_caffe import convert_caffe
from benchmarks.data.datasets import resolve_dataset
from benchmarks.networks import build_model, build_trained
from benchmarks.recipes import apply_overrides, get_recipe, paper_weights
from benchmarks.records import TORCHVISION_WEIGHTS, weights_summary
from benchmarks.report import summary_table
from benchmarks.resolve import RunPlan, run_identity
from methods.caffe_weights import caffe_state_dict, read_caffe_source
from methods.caffemodel import CaffeModelError, read_caffemodel
from methods.deeplab import DEEPLAB_MEAN_BGR

LENET = str(SHARED / "data" / "caffe-genuine" / "lenet_iter_10000.caffemodel")
WIDTH = 1 / 16
V1_TYPES = {"Data": 5, "Convolution": 4, "InnerProduct": 14, "Deconvolution": 39, "ReLU": 18}  # caffe.proto
F_ = descriptor_pb2.FieldDescriptorProto


def _caffe_messages(packed: bool) -> type:
    """``NetParameter`` of caffe.proto (the fields weights live in), built from a descriptor."""
    file = descriptor_pb2.FileDescriptorProto(name=f"caffe_subset_{packed}.proto", package="caffe", syntax="proto2")

    def message(name, *fields):
        m = file.message_type.add(name=name)
        for field_name, number, kind, repeated, type_name in fields:
            field = m.field.add(name=field_name, number=number, type=kind,
                                label=F_.LABEL_REPEATED if repeated else F_.LABEL_OPTIONAL)
            if type_name:
                field.type_name = f".caffe.{type_name}"
            if repeated and kind in (F_.TYPE_FLOAT, F_.TYPE_DOUBLE, F_.TYPE_INT64):
                field.options.packed = packed or kind == F_.TYPE_INT64

    message("BlobShape", ("dim", 1, F_.TYPE_INT64, True, None))
    message("BlobProto", ("num", 1, F_.TYPE_INT32, False, None), ("channels", 2, F_.TYPE_INT32, False, None),
            ("height", 3, F_.TYPE_INT32, False, None), ("width", 4, F_.TYPE_INT32, False, None),
            ("data", 5, F_.TYPE_FLOAT, True, None), ("shape", 7, F_.TYPE_MESSAGE, False, "BlobShape"),
            ("double_data", 8, F_.TYPE_DOUBLE, True, None))
    message("LayerParameter", ("name", 1, F_.TYPE_STRING, False, None), ("type", 2, F_.TYPE_STRING, False, None),
            ("blobs", 7, F_.TYPE_MESSAGE, True, "BlobProto"))
    message("V1LayerParameter", ("name", 4, F_.TYPE_STRING, False, None), ("type", 5, F_.TYPE_INT32, False, None),
            ("blobs", 6, F_.TYPE_MESSAGE, True, "BlobProto"), ("layer", 1, F_.TYPE_MESSAGE, False, "V0LayerParameter"))
    message("V0LayerParameter", ("name", 1, F_.TYPE_STRING, False, None), ("type", 2, F_.TYPE_STRING, False, None),
            ("blobs", 50, F_.TYPE_MESSAGE, True, "BlobProto"))
    message("NetParameter", ("name", 1, F_.TYPE_STRING, False, None),
            ("layers", 2, F_.TYPE_MESSAGE, True, "V1LayerParameter"),
            ("layer", 100, F_.TYPE_MESSAGE, True, "LayerParameter"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe.NetParameter"))


NET, NET_UNPACKED = _caffe_messages(True), _caffe_messages(False)


def write_caffemodel(path, layers, *, v1=False, packed=True, double=False):
    """``layers``: (name, type, [arrays]). V1 stores legacy num/channels/height/width shapes."""
    net = (NET if packed else NET_UNPACKED)(name="test")
    for name, kind, arrays in layers:
        layer = net.layers.add(name=name, type=V1_TYPES[kind]) if v1 else net.layer.add(name=name, type=kind)
        for array in arrays:
            blob = layer.blobs.add()
            (blob.double_data if double else blob.data).extend(np.asarray(array).ravel().tolist())
            if v1:
                blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
            else:
                blob.shape.dim.extend(array.shape)
    path.write_bytes(net.SerializeToString())
    return path


def test_genuine_lenet_against_an_independent_decoding(capsys):
    net = NET()
    with open(LENET, "rb") as file:
        net.ParseFromString(file.read())
    expected = {layer.name: (layer.type, [(tuple(b.shape.dim), np.array(b.data, np.float64)) for b in layer.blobs])
                for layer in net.layer}
    assert main(["caffe-blobs", LENET, "--json"]) == 0
    rows = {row["layer"]: row for row in json.loads(capsys.readouterr().out)}
    assert list(rows) == list(expected)
    shapes = {name: [tuple(b["shape"]) for b in row["blobs"]] for name, row in rows.items() if row["blobs"]}
    assert shapes == {"conv1": [(20, 1, 5, 5), (20,)], "conv2": [(50, 20, 5, 5), (50,)], "ip1": [(500, 800), (500,)],
                      "ip2": [(10, 500), (10,)]}
    for name, (kind, blobs) in expected.items():
        assert rows[name]["type"] == kind
        for row, (shape, values) in zip(rows[name]["blobs"], blobs, strict=True):
            assert tuple(row["shape"]) == shape and values.size == np.prod(shape)
            assert row["mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-12)
            assert row["std"] == pytest.approx(values.std(), rel=1e-9)


@pytest.mark.parametrize(("packed", "double"), [(True, False), (False, False), (True, True)])
def test_legacy_v1_file_reads_back_exactly(tmp_path, packed, double):
    g = np.random.default_rng(0)
    layers = [("data", "Data", []), ("conv1", "Convolution", [g.standard_normal((4, 3, 3, 3)), g.standard_normal(4)]),
              ("relu1", "ReLU", []), ("fc6", "InnerProduct", [g.standard_normal((5, 36)), g.standard_normal(5)])]
    dtype = np.float64 if double else np.float32
    layers = [(n, t, [a.astype(dtype) for a in arrays]) for n, t, arrays in layers]
    path = write_caffemodel(tmp_path / "v1.caffemodel", layers, v1=True, packed=packed, double=double)
    read = read_caffemodel(path)
    assert [(layer.name, layer.type) for layer in read] == [(n, t) for n, t, _ in layers]
    for layer, (_, _, arrays) in zip(read, layers, strict=True):
        assert [b.shape for b in layer.blobs] == [(1,) * (4 - a.ndim) + a.shape for a in arrays]
        for blob, array in zip(layer.blobs, arrays, strict=True):
            assert blob.data.dtype == dtype and np.array_equal(blob.array().reshape(array.shape), array)


def test_oldest_v0_layers_inside_v1_read_back(tmp_path):
    net = NET()
    old = net.layers.add().layer
    old.name, old.type = "conv1", "conv"
    blob = old.blobs.add(num=2, channels=1, height=1, width=3)
    blob.data.extend([1.5, -2.0, 0.25, 4.0, 5.0, -6.5])
    (tmp_path / "v0.caffemodel").write_bytes(net.SerializeToString())
    [layer] = read_caffemodel(tmp_path / "v0.caffemodel")
    assert (layer.name, layer.type, layer.blobs[0].shape) == ("conv1", "conv", (2, 1, 1, 3))
    assert layer.blobs[0].data.tolist() == [1.5, -2.0, 0.25, 4.0, 5.0, -6.5]


def _file_backed(array: np.ndarray) -> bool:
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base.obj if isinstance(base, memoryview) else base, mmap.mmap)


@pytest.mark.parametrize("packed", [True, False])
def test_blobs_are_views_of_the_file_and_listing_copies_none(tmp_path, packed):
    big = np.random.default_rng(1).standard_normal(1 << 21).astype(np.float32)  # 8 MB
    path = write_caffemodel(tmp_path / "big.caffemodel", [("fc6", "InnerProduct", [big.reshape(2048, 1024)])],
                            packed=packed)
    blob = read_caffemodel(path)[0].blobs[0]
    assert _file_backed(blob.data) and not blob.data.flags.writeable
    assert np.array_equal(blob.data, big)
    tracemalloc.start()
    try:
        row = blob_rows(path)[0]["blobs"][0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < big.nbytes / 2, f"listing allocated {peak} bytes for an {big.nbytes}-byte blob"
    assert row["mean"] == pytest.approx(big.astype(np.float64).mean()) and row["std"] == pytest.approx(big.std())


def test_damaged_files_are_one_line_errors(tmp_path, capsys):
    truncated = tmp_path / "cut.caffemodel"
    truncated.write_bytes(open(LENET, "rb").read()[:100_000])
    with pytest.raises(CaffeModelError, match=r"cut\.caffemodel"):
        read_caffemodel(truncated)
    for path in (truncated, tmp_path / "absent.caffemodel", SHARED / "data" / "caffe-genuine" / "lenet.prototxt"):
        assert main(["caffe-blobs", str(path)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and str(path) in error


# --- conversion ---------------------------------------------------------------------------------

TRUNK = [f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3), strict=True) for i in range(1, n + 1)]
CONTEXT = ["conv1_1", "conv1_2", "conv2_1", "conv3_1", "conv4_1", "conv5_1", "fc1", "final"]
# (Caffe layer, our module) of each method's Caffe net beyond conv1_1..fc7 (shelhamer/fcn.berkeleyvision.org
# voc-fcn*/net.py, DeepLab-LargeFOV's prototxt, fyu/dilation deploy net and network.py); None: a fixed deconvolution
HEADS = {
    "fcn32s": [("score_fr", "score_fr"), ("upscore", None)],
    "fcn16s": [("score_fr", "score_fr"), ("upscore2", None), ("score_pool4", "score_pool4"), ("upscore16", None)],
    "fcn8s": [("score_fr", "score_fr"), ("upscore2", None), ("score_pool4", "score_pool4"), ("upscore_pool4", None),
              ("score_pool3", "score_pool3"), ("upscore8", None)],
    "deeplab_v1": [("fc8_voc12", "fc8")],
    "frontend": [("fc-final", "final")],
    "context_basic": [("final", "final")] + [(f"ctx_{n}", f"context.ctx_{n}") for n in CONTEXT],
    "context_large": [("fc-final", "final")] + [(f"ct_{n}", f"context.ctx_{n}") for n in CONTEXT],
}
DECONVOLUTIONS = {"upscore": 64, "upscore2": 4, "upscore16": 32, "upscore_pool4": 4, "upscore8": 16}


def _bilinear(channels: int, k: int) -> np.ndarray:
    """FCN's surgery.upsample_filt on the diagonal of a channels x channels deconvolution."""
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = np.ogrid[:k, :k]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    weight = np.zeros((channels, channels, k, k), np.float32)
    weight[range(channels), range(channels)] = filt
    return weight


def _caffe_net(name: str, model: torch.nn.Module, seed: int = 0) -> tuple[list, dict[str, str]]:
    """Random arrays for each Caffe layer of ``name`` (shapes of ``model``), and layer -> module."""
    prefix = "frontend." if hasattr(model, "frontend") else ""
    pairs = [(n, prefix + n) for n in [*TRUNK, "fc6", "fc7"]] + HEADS[name]
    modules, g = dict(model.named_modules()), np.random.default_rng(seed)
    layers = []
    for caffe_name, target in pairs:
        if target is None:
            layers.append((caffe_name, "Deconvolution", [_bilinear(21, DECONVOLUTIONS[caffe_name])]))
        else:
            conv = modules[target]
            layers.append((caffe_name, "Convolution", [0.1 * g.standard_normal(tuple(conv.weight.shape)),
                                                       0.1 * g.standard_normal(tuple(conv.bias.shape))]))
    return [(n, t, [a.astype(np.float32) for a in arrays]) for n, t, arrays in layers], dict(pairs)


@pytest.mark.parametrize("name", list(HEADS))
def test_every_method_converts_from_its_caffe_net(tmp_path, name):
    model = methods.create(name, width=WIDTH).eval()
    layers, targets = _caffe_net(name, model)
    path = write_caffemodel(tmp_path / f"{name}.caffemodel", layers)
    out = tmp_path / f"{name}.pt"
    report = convert_caffe(path, name, out, {"width": WIDTH})
    assert report.unmapped == [] and report.initialised == []
    assert sorted(report.dropped) == sorted(n for n, t in targets.items() if t is None)

    by_hand = methods.create(name, width=WIDTH).eval()
    modules = dict(by_hand.named_modules())
    with torch.no_grad():
        for caffe_name, _, arrays in layers:
            if targets[caffe_name] is not None:
                modules[targets[caffe_name]].weight.copy_(torch.from_numpy(arrays[0]))
                modules[targets[caffe_name]].bias.copy_(torch.from_numpy(arrays[1]))
    model.load_state_dict(torch.load(out, weights_only=True))
    x = torch.randn(1, 3, 36, 44)
    with torch.no_grad():
        assert torch.allclose(model(x), by_hand(x), rtol=1e-4, atol=1e-5)


def test_vgg16_v1_inner_products_become_convolutions(tmp_path):
    """VGG_ILSVRC_16_layers: legacy V1 blobs, fc6/fc7/fc8 InnerProduct; fc8 (1000-way) dropped."""
    model = methods.create("fcn32s", width=WIDTH)
    g = np.random.default_rng(2)
    c5, fc = model.fc6.in_channels, model.fc6.out_channels
    conv = [(n, "Convolution", [g.standard_normal(tuple(getattr(model, n).weight.shape)).astype(np.float32),
                                g.standard_normal(getattr(model, n).bias.shape).astype(np.float32)]) for n in TRUNK]
    ip = [(n, "InnerProduct", [g.standard_normal((o, i)).astype(np.float32), g.standard_normal(o).astype(np.float32)])
          for n, o, i in (("fc6", fc, c5 * 49), ("fc7", fc, fc), ("fc8", 1000, fc))]
    path = write_caffemodel(tmp_path / "vgg.caffemodel", [("data", "Data", []), *conv, *ip], v1=True)
    state, report = caffe_state_dict(model, read_caffe_source(path), str(path))
    assert report.unmapped == [] and list(report.dropped) == ["fc8"]
    assert report.initialised == ["score_fr.bias", "score_fr.weight"]
    window = torch.randn(1, c5, 7, 7)
    as_conv = F.conv2d(window, state["fc6.weight"], state["fc6.bias"])[0, :, 0, 0]
    as_linear = F.linear(window.flatten(1), torch.from_numpy(ip[0][2][0]), torch.from_numpy(ip[0][2][1]))[0]
    assert torch.allclose(as_conv, as_linear, atol=1e-4)


def test_pytorch_fcn_vgg16_from_caffe_pth(tmp_path):
    model = methods.create("frontend", width=WIDTH)
    fc6, fc7 = model.frontend.fc6, model.frontend.fc7
    g = torch.Generator().manual_seed(3)
    state = {f"features.{i}.{k}": torch.randn(getattr(getattr(model.frontend, n), k).shape, generator=g)
             for n, i in zip(TRUNK, (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28), strict=True)
             for k in ("weight", "bias")}
    state |= {"classifier.0.weight": torch.randn(fc6.out_channels, fc6.in_channels * 49, generator=g),
              "classifier.0.bias": torch.randn(fc6.out_channels, generator=g),
              "classifier.3.weight": torch.randn(fc7.out_channels, fc7.in_channels, generator=g),
              "classifier.3.bias": torch.randn(fc7.out_channels, generator=g),
              "classifier.6.weight": torch.randn(1000, fc7.out_channels, generator=g),
              "classifier.6.bias": torch.randn(1000, generator=g)}
    torch.save(state, tmp_path / "vgg16_from_caffe.pth")
    converted, report = caffe_state_dict(model, read_caffe_source(tmp_path / "vgg16_from_caffe.pth"), "pth")
    assert report.unmapped == [] and list(report.dropped) == ["fc8"]
    assert torch.equal(converted["frontend.conv3_2.weight"], state["features.12.weight"])
    assert torch.equal(converted["frontend.fc6.weight"].flatten(1), state["classifier.0.weight"])


def test_fcn8s_atonce_scales_and_learned_upsampling(tmp_path):
    model = methods.create("fcn8s", width=WIDTH, at_once=True)
    layers, _ = _caffe_net("fcn8s", model)
    scales = [("scale_pool4", "Scale", [np.full(model.score_pool4.in_channels, 0.01, np.float32)]),
              ("scale_pool3", "Scale", [np.full(model.score_pool3.in_channels, 1e-4, np.float32)])]
    path = write_caffemodel(tmp_path / "atonce.caffemodel", layers + scales)
    report = convert_caffe(path, "fcn8s", tmp_path / "atonce.pt", {"width": WIDTH, "at_once": True})
    assert "voc-fcn8s-atonce" in report.dropped["scale_pool4"] and report.unmapped == []
    with pytest.raises(ValueError, match="at_once=True"):
        convert_caffe(path, "fcn8s", tmp_path / "staged.pt", {"width": WIDTH})
    learned = [(n, t, [a[0] + 0.01] if n == "upscore2" else a) for n, t, a in layers]
    with pytest.raises(ValueError, match="upscore2 is not the fixed per-class bilinear kernel"):
        convert_caffe(write_caffemodel(tmp_path / "learned.caffemodel", learned), "fcn8s", tmp_path / "l.pt",
                      {"width": WIDTH})
    assert not (tmp_path / "l.pt").exists()


def test_convert_caffe_command(tmp_path, capsys):
    layers, _ = _caffe_net("fcn32s", methods.create("fcn32s", width=WIDTH))
    path = write_caffemodel(tmp_path / "fcn32s.caffemodel", layers)
    out = tmp_path / "w.pt"
    assert main(["convert-caffe", str(path), "--method", "fcn32s", "--out", str(out), "--option", "width=0.0625"]) == 0
    assert "dropped upscore: fixed bilinear" in capsys.readouterr().out
    assert set(torch.load(out, weights_only=True)) == set(methods.create("fcn32s", width=WIDTH).state_dict())
    assert main(["convert-caffe", LENET, "--method", "fcn32s", "--out", str(tmp_path / "x.pt")]) == 2
    error = capsys.readouterr().err
    assert "conv1" in error and "ip1" in error and error.count("\n") == 1 and not (tmp_path / "x.pt").exists()


# --- pretrained="caffe" and the records -----------------------------------------------------------

def _deeplab_init(tmp_path) -> tuple:
    """DeepLab's init model at reduced width: VGG-16 with 3x3 fc6 and fc7 reduced, 1000-way fc8."""
    model = methods.create("deeplab_v1", width=WIDTH)
    layers, _ = _caffe_net("deeplab_v1", model, seed=4)
    layers = [layer for layer in layers if layer[0] != "fc8_voc12"]
    layers.append(("fc8", "InnerProduct", [np.ones((1000, model.fc7.out_channels), np.float32), np.ones(1000)]))
    return write_caffemodel(tmp_path / "vgg16_20M.caffemodel", layers, v1=True), dict((n, a) for n, _, a in layers)


def test_pretrained_caffe_loads_the_init_model_with_the_caffe_convention(tmp_path, monkeypatch):
    path, arrays = _deeplab_init(tmp_path)
    monkeypatch.setenv("SEGREPRO_CAFFE_DEEPLAB_INIT", str(path))
    model = methods.create("deeplab_v1", width=WIDTH, pretrained="caffe")
    assert model.input_convention is DEEPLAB_MEAN_BGR and str(path) in model.weights_source
    assert np.array_equal(model.conv5_3.weight.detach().numpy(), arrays["conv5_3"][0])
    assert np.array_equal(model.fc6.weight.detach().numpy(), arrays["fc6"][0])
    assert model.load_report.dropped.keys() == {"fc8"} and model.load_report.initialised == ["fc8.bias", "fc8.weight"]
    assert 0 < model.fc8.weight.std() < 0.02  # the paper's N(0, 0.01^2), not the file's ones
    monkeypatch.delenv("SEGREPRO_CAFFE_DEEPLAB_INIT")
    with pytest.raises(FileNotFoundError, match="SEGREPRO_CAFFE_DEEPLAB_INIT"):
        methods.create("deeplab_v1", width=WIDTH, pretrained="caffe")
    with pytest.raises(ValueError, match="ip1"):
        methods.create("deeplab_v1", width=WIDTH, pretrained="caffe", weights_path=LENET)


def test_recipes_take_caffe_torchvision_or_none_and_records_name_the_weights(tmp_path, monkeypatch):
    recipe = get_recipe("deeplab_v1", "quick")
    assert [apply_overrides(recipe, [f"pretrained={v}"]).pretrained for v in ("caffe", "torchvision", "none")] == \
        ["caffe", True, False]
    with pytest.raises(ValueError, match="caffe, torchvision"):
        apply_overrides(recipe, ["pretrained=imagenet"])
    monkeypatch.delenv("SEGREPRO_CAFFE_DEEPLAB_INIT", raising=False)
    assert get_recipe("deeplab_v1", "paper").pretrained is True
    monkeypatch.setenv("SEGREPRO_CAFFE_DEEPLAB_INIT", str(_deeplab_init(tmp_path)[0]))
    assert paper_weights(get_recipe("deeplab_v1", "paper")).pretrained == "caffe"

    old = {"method": "deeplab_v1", "seed": 0, "path": "r.json", "metrics": {"miou": 0.6225},
           "comparable_to_paper": True, "comparable_reason": "", "dataset": {"split": "val"},
           "recipe": {"pretrained": True}, "weights_source": "ImageNet VGG-16 (torchvision)"}
    reference = {"id": "deeplab", "miou": {"deeplab_v1": 62.25}, "split": "val", "tolerance": 1.0, "requires": {}}
    assert verdict(old, reference)["weights"] == TORCHVISION_WEIGHTS
    caffe = {**old, "recipe": {"pretrained": "caffe"}, "weights_source": "DeepLab init, vgg16_20M.caffemodel sha256 ab",
             "seed": 1}
    assert weights_summary(caffe) == caffe["weights_source"]
    metrics = {"miou": 0.6, "pixel_acc": 0.9, "mean_acc": 0.7, "fwiou": 0.8}
    table = summary_table([{**old, "metrics": metrics}, {**caffe, "metrics": metrics}])
    assert sorted(table["weights"]) == sorted([TORCHVISION_WEIGHTS, caffe["weights_source"]])  # two recipes: two rows


def test_a_caffe_run_names_its_init_file_and_scores_in_the_caffe_convention(tmp_path, monkeypatch, small_voc):
    init, _ = _deeplab_init(tmp_path)
    plan = RunPlan(profile="quick", seeds=(0,), overrides=("pretrained=caffe",), runs=tmp_path / "runs")
    source = resolve_dataset(small_voc(tmp_path / "voc", train=1, val=1))
    monkeypatch.delenv("SEGREPRO_CAFFE_DEEPLAB_INIT", raising=False)
    with pytest.raises(FileNotFoundError, match="SEGREPRO_CAFFE_DEEPLAB_INIT"):
        run_identity(plan, source, "deeplab_v1", 0)
    monkeypatch.setenv("SEGREPRO_CAFFE_DEEPLAB_INIT", str(init))
    identity = run_identity(plan, source, "deeplab_v1", 0)
    assert identity["initial_weights"] == {"caffe_init": init.name,
                                           "sha256": hashlib.sha256(init.read_bytes()).hexdigest()}
    assert identity["key"] != run_identity(dataclasses.replace(plan, overrides=()), source, "deeplab_v1", 0)["key"]
    recipe = plan.recipe("deeplab_v1")
    weights = tmp_path / "w.pt"
    torch.save(build_model(recipe).state_dict(), weights)
    assert build_trained(recipe, weights).input_convention is DEEPLAB_MEAN_BGR
    assert build_trained(dataclasses.replace(recipe, pretrained=False), weights).input_convention is \
        methods.TORCHVISION_VGG
