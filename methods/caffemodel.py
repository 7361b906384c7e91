"""Reading ``.caffemodel`` files without Caffe: a small decoder of the protobuf wire format over
``mmap`` that walks just the messages a caffemodel's weights live in.

The messages and field numbers are those of BVLC Caffe's ``src/caffe/proto/caffe.proto``:

* ``NetParameter``: ``layer`` = 100 (``LayerParameter``, the current format) and the legacy
  ``layers`` = 2 (``V1LayerParameter``);
* ``LayerParameter``: ``name`` = 1, ``type`` = 2 (a string such as ``"Convolution"``), ``blobs`` = 7;
* ``V1LayerParameter``: ``name`` = 4, ``type`` = 5 (the ``LayerType`` enum, named here as Caffe's
  ``upgrade_proto.cpp: UpgradeV1LayerType`` names it), ``blobs`` = 6, and ``layer`` = 1, the
  oldest ``V0LayerParameter`` (``name`` = 1, ``type`` = 2, ``blobs`` = 50) inside it;
* ``BlobProto``: ``num``, ``channels``, ``height``, ``width`` = 1..4 (the legacy 4-D shape),
  ``data`` = 5 (packed float), ``shape`` = 7 (``BlobShape``: ``dim`` = 1, packed int64),
  ``double_data`` = 8 (packed double).

Every blob array is a read-only ``np.frombuffer`` view into the file's memory map (unpacked
repeated floats, which old writers produced, are a strided view), so listing or converting a
550 MB VGG-16 file needs about no memory beyond the pages the OS maps in.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SegreproError

__all__ = ["V1_LAYER_TYPES", "CaffeBlob", "CaffeLayer", "CaffeModelError", "read_caffemodel"]


class CaffeModelError(SegreproError, ValueError):
    """A file that does not decode as a Caffe ``NetParameter`` (truncated, corrupt, another format)."""


V1_LAYER_TYPES = {
    0: "", 35: "AbsVal", 1: "Accuracy", 30: "ArgMax", 2: "BNLL", 3: "Concat", 37: "ContrastiveLoss",
    4: "Convolution", 5: "Data", 39: "Deconvolution", 6: "Dropout", 32: "DummyData", 7: "EuclideanLoss",
    25: "Eltwise", 38: "Exp", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 28: "HingeLoss", 11: "Im2col",
    12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN", 29: "MemoryData",
    16: "MultinomialLogisticLoss", 34: "MVN", 17: "Pooling", 26: "Power", 18: "ReLU", 19: "Sigmoid",
    27: "SigmoidCrossEntropyLoss", 36: "Silence", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 33: "Slice",
    23: "TanH", 24: "WindowData", 31: "Threshold",
}
"""``V1LayerParameter.LayerType`` -> the ``LayerParameter.type`` string Caffe upgrades it to."""

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_FLOATS = {5: ("<f4", _FIXED32), 8: ("<f8", _FIXED64)}  # BlobProto data, double_data: dtype, unpacked wire type


@dataclass(frozen=True)
class CaffeBlob:
    """One ``BlobProto``: ``shape`` as stored (``BlobShape`` dims, else num/channels/height/width)
    and ``data``, a flat read-only view of its values (float32, or float64 from ``double_data``)."""

    shape: tuple[int, ...]
    data: np.ndarray

    def array(self) -> np.ndarray:
        """The values in ``shape`` (still a view)."""
        return self.data.reshape(self.shape)


@dataclass(frozen=True)
class CaffeLayer:
    name: str
    type: str
    blobs: tuple[CaffeBlob, ...]


class _Reader:
    """The protobuf wire format of ``buffer``, one message (``start:end``) at a time."""

    def __init__(self, buffer: mmap.mmap | bytes, path: Path) -> None:
        self.buffer, self.path = buffer, path

    def fail(self, what: str, position: int) -> CaffeModelError:
        return CaffeModelError(f"{self.path} is not a readable caffemodel ({what} at byte {position}); download it "
                               "again (a .caffemodel written by Caffe, not a .prototxt or a partial copy)")

    def varint(self, position: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if position >= end or shift > 63:
                raise self.fail("varint runs past its message", position)
            byte = self.buffer[position]
            position += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, position
            shift += 7

    def field(self, position: int, end: int) -> tuple[int, int, object, int, int]:
        """The field whose key is at ``position``: ``(number, wire type, value or (payload start,
        payload end), position of the value, position after it)``."""
        key, position = self.varint(position, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise self.fail("field number 0", position)
        at = position
        if wire == _VARINT:
            value, position = self.varint(position, end)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            value, position = (position, position + size), position + size
        elif wire == _BYTES:
            length, position = self.varint(position, end)
            value, position = (position, position + length), position + length
        else:
            raise self.fail(f"wire type {wire}, which caffe.proto does not use", at)
        if position > end:
            raise self.fail("a field runs past the end of its message", at)
        return number, wire, value, at, position

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, object, int]]:
        """Every field of the message ``buffer[start:end]``: ``(number, wire type, value, position)``."""
        position = start
        while position < end:
            number, wire, value, at, position = self.field(position, end)
            yield number, wire, value, at

    def text(self, span: tuple[int, int]) -> str:
        return bytes(self.buffer[span[0]:span[1]]).decode("utf-8", errors="replace")

    def values(self, number: int, wire: int, value: object, at: int, end: int, after: int) -> tuple[np.ndarray, int]:
        """The values of repeated float field ``number`` (``data`` = 5 or ``double_data`` = 8) whose
        key precedes ``at`` as a view, and where parsing goes on: a packed field is one slice; an
        unpacked one (``tag, value, tag, value``, as old writers made it) is taken as the whole run of
        consecutive tags, one strided view, without a Python step per value."""
        dtype, fixed = _FLOATS[number]
        size = np.dtype(dtype).itemsize
        if wire == _BYTES:
            low, high = value
            if (high - low) % size:
                raise self.fail(f"packed field {number} of {high - low} bytes, not whole values", at)
            return np.frombuffer(self.buffer, dtype=dtype, count=(high - low) // size, offset=low), after
        if wire != fixed:
            raise self.fail(f"field {number} with wire type {wire}", at)
        tag = number << 3 | wire  # one byte for fields 1..15
        tags = np.ndarray(((end - at + 1) // (size + 1),), np.uint8, self.buffer, at - 1, (size + 1,))
        matches = tags == tag
        count = len(tags) if matches.all() else int(np.argmin(matches))
        return np.ndarray((count,), dtype, self.buffer, at, (size + 1,)), at - 1 + count * (size + 1)

    def dims(self, start: int, end: int) -> tuple[int, ...]:
        dims = []
        for field, kind, value, _ in self.fields(start, end):
            if field == 1 and kind == _BYTES:
                position = value[0]
                while position < value[1]:
                    dim, position = self.varint(position, value[1])
                    dims.append(dim)
            elif field == 1 and kind == _VARINT:
                dims.append(value)
        return tuple(dims)

    def blob(self, start: int, end: int) -> CaffeBlob:
        legacy, shape = [0, 0, 0, 0], None
        pieces: dict[int, list[np.ndarray]] = {5: [], 8: []}
        position = start
        while position < end:
            number, wire, value, at, position = self.field(position, end)
            if 1 <= number <= 4 and wire == _VARINT:
                legacy[number - 1] = value
            elif number == 7 and wire == _BYTES:
                shape = self.dims(*value)
            elif number in pieces:
                piece, position = self.values(number, wire, value, at, end, position)
                pieces[number].append(piece)
        shape = shape if shape is not None else tuple(legacy)
        found = pieces[5] or pieces[8] or [np.empty(0, np.float32)]
        data = found[0] if len(found) == 1 else np.concatenate(found)
        if data.size != int(np.prod(shape, dtype=np.int64)):
            raise self.fail(f"a blob of shape {shape} holds {data.size} values", start)
        return CaffeBlob(shape=tuple(int(d) for d in shape), data=data)

    def layer(self, start: int, end: int, v1: bool) -> CaffeLayer:
        """A ``LayerParameter`` (``v1=False``) or ``V1LayerParameter`` (with its V0 ``layer``)."""
        name_field, type_field, blob_field = (4, 5, 6) if v1 else (1, 2, 7)
        name, kind, blobs = "", "", []
        for field, wire, value, _ in self.fields(start, end):
            if field == name_field and wire == _BYTES:
                name = self.text(value)
            elif field == type_field:
                kind = V1_LAYER_TYPES.get(value, f"V1 type {value}") if v1 else self.text(value)
            elif field == blob_field and wire == _BYTES:
                blobs.append(self.blob(*value))
            elif v1 and field == 1 and wire == _BYTES:  # V0LayerParameter: name 1, type 2, blobs 50
                for inner, inner_wire, inner_value, _ in self.fields(*value):
                    if inner == 1 and inner_wire == _BYTES:
                        name = name or self.text(inner_value)
                    elif inner == 2 and inner_wire == _BYTES:
                        kind = kind or self.text(inner_value)
                    elif inner == 50 and inner_wire == _BYTES:
                        blobs.append(self.blob(*inner_value))
        return CaffeLayer(name=name, type=kind, blobs=tuple(blobs))


def read_caffemodel(path: str | os.PathLike[str]) -> list[CaffeLayer]:
    """Every layer of the caffemodel at ``path`` (both formats), in file order, with its blobs as
    views into a read-only memory map of the file (kept open while any view is alive)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caffemodel {path} does not exist; give the path of a .caffemodel file")
    with path.open("rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            raise CaffeModelError(f"{path} is empty; download the caffemodel again")
        buffer = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    reader = _Reader(buffer, path)
    layers = [reader.layer(*value, v1=field == 2) for field, wire, value, _ in reader.fields(0, len(buffer))
              if field in (2, 100) and wire == _BYTES]
    if not layers:
        raise CaffeModelError(f"{path} holds no layers (NetParameter fields 2 / 100); is it a .caffemodel?")
    return layers
