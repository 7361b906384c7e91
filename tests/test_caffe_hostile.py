"""Hostile Caffe files (issue 26): caffemodels written byte by byte in protobuf's wire format,
the genuine LeNet caffemodel cut short, and ``vgg16_from_caffe.pth`` files of the wrong kind.
Each is one ``error: ...`` line naming the file and what is wrong, exit 2, never a traceback,
never a hang, nothing written; the expected messages are spelled out here."""

import struct
import tracemalloc

import numpy as np
import pytest
import torch
from google.protobuf.message import DecodeError
from test_caffe import LENET, NET, WIDTH

import methods
from benchmarks.cli import main
from methods.caffemodel import CaffeModelError, read_caffemodel

FIX = "download it again (a .caffemodel written by Caffe, not a .prototxt or a partial copy)"


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out) + bytes([value])


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def integer(number: int, value: int) -> bytes:
    """A varint field (wire type 0)."""
    return varint(number << 3) + varint(value)


def blob(dims: bytes | None = None, values: tuple[float, ...] = ()) -> bytes:
    """A BlobProto: ``shape`` (7) holding packed ``dim`` (1) bytes as given, ``data`` (5) packed."""
    shape = field(7, field(1, dims)) if dims is not None else b""
    return shape + (field(5, struct.pack(f"<{len(values)}f", *values)) if values else b"")


def net(*layers: bytes) -> bytes:
    """A NetParameter of LayerParameters (field 100): each ``name`` 1, ``type`` 2, ``blobs`` 7."""
    return b"".join(field(100, layer) for layer in layers)


def layer(name: str, *blobs: bytes, kind: bytes | None = None) -> bytes:
    return field(1, name.encode()) + (kind if kind is not None else field(2, b"Convolution")) + b"".join(
        field(7, b) for b in blobs)


def dims(*values: int) -> bytes:
    return b"".join(varint(v) for v in values)


# (file content, what the message says is wrong, at which byte). The layer is at byte 3 (key 2 bytes, length 1),
# its type at 10, its blob at 25 (name 7 bytes, type 13, blob key and length 2), a dim at 29 (shape and dim headers)
DAMAGED = {
    "count": (net(layer("conv1", blob(dims(65536, 65536)))), "a blob of shape 65536x65536 holds 0 values, not "
              "4294967296", 25),
    "dim_2_32": (net(layer("conv1", blob(dims(2**32, 2**32)))), "BlobShape dim 4294967296, outside Caffe's "
                 "0..2147483647", 29),
    "dim_2_64": (net(layer("conv1", blob(b"\x80" * 9 + b"\x02", (1.0,)))), "varint overflows 64 bits", 29),
    "varint_11_bytes": (net(layer("conv1", blob(b"\x80" * 10 + b"\x01", (1.0,)))), "varint longer than 10 bytes",
                        29),
    "negative_dim": (net(layer("conv1", blob(varint(2**64 - 1), (1.0,)))), "BlobShape dim -1, outside Caffe's "
                     "0..2147483647", 29),
    "type_varint": (net(layer("conv1", kind=integer(2, 4))), 'LayerParameter type (a string such as "Convolution") '
                    "with wire type 0, where caffe.proto declares a length-delimited field", 11),
    "v1_type_string": (field(2, field(4, b"conv1") + field(5, b"Convolution")), "V1LayerParameter type (the "
                       "LayerType enum) with wire type 2, where caffe.proto declares a varint", 10),
    "scalar_without_value": (net(layer("conv1", blob(b""))), "a blob of shape () holds 0 values, not 1", 25),
    "huge_length": (varint(100 << 3 | 2) + varint(2**62) + b"abc", "a field runs past the end of its message", 2),
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_damaged_caffemodels_are_one_line_naming_file_and_fault(tmp_path, capsys, name):
    content, what, at = DAMAGED[name]
    path = tmp_path / f"{name}.caffemodel"
    path.write_bytes(content)
    assert main(["caffe-blobs", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {path} is not a readable caffemodel ({what} at byte {at}); {FIX}\n"
    assert captured.out == ""


def test_a_huge_declared_length_allocates_nothing(tmp_path):
    path = tmp_path / "huge.caffemodel"
    path.write_bytes(DAMAGED["huge_length"][0])
    tracemalloc.start()
    try:
        with pytest.raises(CaffeModelError, match="runs past the end"):
            read_caffemodel(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_garbage_bytes_are_one_line(tmp_path, capsys):
    for seed in range(20):
        path = tmp_path / f"garbage{seed}.caffemodel"
        path.write_bytes(np.random.default_rng(seed).integers(0, 256, 512, dtype=np.uint8).tobytes())
        assert main(["caffe-blobs", str(path)]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"error: {path} ") and error.count("\n") == 1, error


def test_truncated_genuine_file_fails_exactly_where_protobuf_does(tmp_path):
    """Cut LeNet at 60 points: where the protobuf library refuses the prefix, so does the reader
    (naming the file); where it accepts it (a cut between two top-level layers), the reader
    returns the same layers."""
    content = open(LENET, "rb").read()
    cuts = sorted({*np.linspace(1, len(content) - 1, 50).astype(int).tolist(), *range(1, 11)})
    outcomes = set()
    for cut in cuts:
        path = tmp_path / "cut.caffemodel"
        path.write_bytes(content[:cut])
        reference = NET()
        try:
            reference.ParseFromString(content[:cut])
        except DecodeError:
            with pytest.raises(CaffeModelError, match=f"{path} is not a readable caffemodel"):
                read_caffemodel(path)
            outcomes.add("refused")
            continue
        try:
            names = [layer.name for layer in read_caffemodel(path)]
        except CaffeModelError as error:  # the prefix holds no layer at all
            assert "holds no layers" in str(error) and not reference.layer
            continue
        assert names == [layer.name for layer in reference.layer]
        outcomes.add("shorter")
    assert "refused" in outcomes


def test_a_zero_dimensional_blob_is_a_caffe_scalar_and_fits_no_tensor(tmp_path, capsys):
    """``BlobShape {}`` holding one value is a scalar in Caffe (``Blob::Reshape`` of no dims: count
    1): it is listed as one, and converting it into a convolution is a one-line error."""
    path = tmp_path / "scalar.caffemodel"
    path.write_bytes(net(layer("conv1_1", blob(b"", (2.5,)), blob(b"", (1.0,))),
                         layer("fc8", blob(b"", (1.0,)), kind=field(2, b"InnerProduct"))))
    assert main(["caffe-blobs", str(path)]) == 0
    assert capsys.readouterr().out.split() == ["conv1_1", "Convolution", "scalar", "mean", "2.5", "std", "0", "scalar",
                                               "mean", "1", "std", "0", "fc8", "InnerProduct", "scalar", "mean", "1",
                                               "std", "0"]
    out = tmp_path / "w.pt"
    assert main(["convert-caffe", str(path), "--method", "fcn32s", "--out", str(out), "--option", "width=0.0625"]) == 2
    assert capsys.readouterr().err == (f"error: {path}: Caffe layer conv1_1 (Convolution) weight has shape (); the "
                                       "model's is (4, 3, 3, 3) (is the model built with the source's width and number "
                                       "of classes?)\n")
    path.write_bytes(net(layer("fc8", blob(b"", (1.0,)), kind=field(2, b"InnerProduct"))))  # not an ImageNet fc8
    assert main(["convert-caffe", str(path), "--method", "fcn32s", "--out", str(out), "--option", "width=0.0625"]) == 2
    assert capsys.readouterr().err == (f"error: {path}: layers that no tensor of fcn32s takes: ['fc8'] (is it a model "
                                       "of fcn32s? the README's 'Caffe weights' lists which file fits which method)\n")
    assert not out.exists()


def test_convert_caffe_refuses_shapes_the_network_does_not_have(tmp_path, capsys):
    model = methods.create("fcn32s", width=WIDTH)
    weight = np.zeros((8, 3, 3, 3), np.float32)  # the width-1/8 network's conv1_1, not width 1/16's (4, 3, 3, 3)
    path = tmp_path / "wide.caffemodel"
    path.write_bytes(net(layer("conv1_1", blob(dims(*weight.shape), tuple(weight.ravel())), blob(dims(8), (0.0,) * 8))))
    out = tmp_path / "w.pt"
    assert main(["convert-caffe", str(path), "--method", "fcn32s", "--out", str(out), "--option", "width=0.0625"]) == 2
    assert capsys.readouterr().err == (f"error: {path}: Caffe layer conv1_1 (Convolution) weight has shape (8, 3, 3, "
                                       f"3); the model's is {tuple(model.conv1_1.weight.shape)} (is the model built "
                                       "with the source's width and number of classes?)\n")
    path.write_bytes(net(layer("conv1_1"), layer("relu1_1", kind=field(2, b"ReLU"))))  # no blobs at all
    assert main(["convert-caffe", str(path), "--method", "fcn32s", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: {path} holds no weights for any tensor of fcn32s (layers with blobs: "
                                       "none that it takes); pass the .caffemodel of a trained network or of its "
                                       "ImageNet init\n")
    assert not out.exists()


PTH_FIX = "pass pytorch-fcn's vgg16_from_caffe.pth or a .caffemodel"


@pytest.mark.parametrize(("state", "message"), [
    ({"features.0.weight": torch.zeros(4, 3, 3, 3, dtype=torch.int64), "features.0.bias": torch.zeros(4)},
     "{path}: features.0.weight holds torch.int64 values, not a dense floating-point tensor; pass pytorch-fcn's "
     "vgg16_from_caffe.pth (float32 weights) or a .caffemodel"),
    ({0: torch.zeros(3)}, "{path} has a key 0 of type int; a state dict's keys are tensor names (strings): " + PTH_FIX),
    ({"features.0.weight": [1.0, 2.0]}, "{path}: features.0.weight holds a list value, not a dense floating-point "
     "tensor; pass pytorch-fcn's vgg16_from_caffe.pth (float32 weights) or a .caffemodel"),
    ({"features.0.bias": torch.zeros(4)}, "{path} has features.0.bias without features.0.weight; " + PTH_FIX),
    ({}, "{path} holds no tensors; " + PTH_FIX),
    ({"features.0.running_mean": torch.zeros(4)}, "{path} is not in torchvision's vgg16 layout (unknown tensors "
     "['features.0.running_mean']); " + PTH_FIX),
], ids=["integer values", "integer key", "list value", "bias only", "empty", "unknown tensor"])
def test_vgg16_from_caffe_pth_of_the_wrong_kind_is_one_line(tmp_path, capsys, state, message):
    path = tmp_path / "vgg16_from_caffe.pth"
    torch.save(state, path)
    out = tmp_path / "w.pt"
    assert main(["convert-caffe", str(path), "--method", "fcn32s", "--out", str(out), "--option", "width=0.0625"]) == 2
    assert capsys.readouterr().err == f"error: {message.format(path=path)}\n"
    assert not out.exists()
