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

A file that does not decode is a :class:`CaffeModelError` naming the file, what is wrong and at
which byte: a varint longer than protobuf's 10 bytes or above 2^64 - 1, a field (or a declared
length) running past its message or the file, so a huge declared length is never allocated; a
field read here with another wire type than caffe.proto declares (a ``LayerParameter.type``
written as a varint); a dimension outside Caffe's ``0..INT_MAX`` (``blob.cpp: Blob::Reshape``);
a blob whose values are not exactly as many as its shape holds (``Blob::FromProto``'s
``CHECK_EQ(count_, proto.data_size())``; a ``BlobShape`` without dims is a scalar of one value, as
there). A file cut exactly between two top-level layers is a shorter valid message (protobuf has
no end mark): its missing layers show in the listing, and ``convert-caffe`` names what it lacks.

Every blob array is a read-only ``np.frombuffer`` view into the file's memory map (unpacked
repeated floats, which old writers produced, are a strided view), so listing or converting a
550 MB VGG-16 file needs about no memory beyond the pages the OS maps in.
"""

from __future__ import annotations

import math
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
_WIRE_NAMES = {_VARINT: "a varint", _BYTES: "a length-delimited field"}
_LEGACY = ("num", "channels", "height", "width")
_V0_FIELDS = {1: "name", 2: "type", 50: "blobs"}
_INT_MAX = 2**31 - 1  # Caffe's Blob shapes and counts are int
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
        """The unsigned varint at ``position`` (at most 10 bytes, below 2^64, as protobuf's)."""
        value = shift = 0
        start = position
        while True:
            if position >= end:
                raise self.fail("varint runs past its message", start)
            byte = self.buffer[position]
            position += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value >> 64:
                    raise self.fail("varint overflows 64 bits", start)
                return value, position
            shift += 7
            if shift > 63:
                raise self.fail("varint longer than 10 bytes", start)

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

    def expect(self, wire: int, expected: int, what: str, at: int) -> None:
        """Refuse a field we read whose wire type is not the one caffe.proto declares for it."""
        if wire != expected:
            raise self.fail(f"{what} with wire type {wire}, where caffe.proto declares {_WIRE_NAMES[expected]}", at)

    def dimension(self, value: int, what: str, at: int) -> int:
        """A shape dimension (int64 or legacy int32, both varints): Caffe's ``Blob::Reshape`` takes
        ``0 <= d <= INT_MAX``."""
        signed = value - (1 << 64) if value >> 63 else value
        if not 0 <= signed <= _INT_MAX:
            raise self.fail(f"{what} {signed}, outside Caffe's 0..{_INT_MAX}", at)
        return signed

    def dims(self, start: int, end: int) -> tuple[int, ...]:
        dims = []
        for field, kind, value, at in self.fields(start, end):
            if field != 1:
                continue
            if kind == _BYTES:
                position = value[0]
                while position < value[1]:
                    dim, after = self.varint(position, value[1])
                    dims.append(self.dimension(dim, "BlobShape dim", position))
                    position = after
            else:
                self.expect(kind, _VARINT, "BlobShape dim", at)
                dims.append(self.dimension(value, "BlobShape dim", at))
        return tuple(dims)

    def blob(self, start: int, end: int) -> CaffeBlob:
        """One ``BlobProto``. Its shape is Caffe's ``Blob::FromProto``'s: the legacy
        num/channels/height/width when any of them is present, else the ``BlobShape`` dims (none: a
        scalar of one value); the values stored must be exactly as many as the shape holds."""
        legacy: list[int | None] = [None] * 4
        shape: tuple[int, ...] = ()
        pieces: dict[int, list[np.ndarray]] = {5: [], 8: []}
        position = start
        while position < end:
            number, wire, value, at, position = self.field(position, end)
            if 1 <= number <= 4:
                self.expect(wire, _VARINT, f"BlobProto {_LEGACY[number - 1]}", at)
                legacy[number - 1] = self.dimension(value, f"BlobProto {_LEGACY[number - 1]}", at)
            elif number == 7:
                self.expect(wire, _BYTES, "BlobProto shape", at)
                shape = self.dims(*value)
            elif number in pieces:
                piece, position = self.values(number, wire, value, at, end, position)
                pieces[number].append(piece)
        if any(d is not None for d in legacy):
            shape = tuple(d or 0 for d in legacy)
        found = pieces[5] or pieces[8] or [np.empty(0, np.float32)]
        data = found[0] if len(found) == 1 else np.concatenate(found)
        count = math.prod(shape)  # exact, never wrapping round
        if data.size != count:
            raise self.fail(f"a blob of shape {'x'.join(map(str, shape)) or '()'} holds {data.size} values, not "
                            f"{count}", start)
        return CaffeBlob(shape=shape, data=data)

    def layer(self, start: int, end: int, v1: bool) -> CaffeLayer:
        """A ``LayerParameter`` (``v1=False``) or ``V1LayerParameter`` (with its V0 ``layer``)."""
        kind_name, name_field, type_field, blob_field = ("V1LayerParameter", 4, 5, 6) if v1 else ("LayerParameter", 1,
                                                                                                    2, 7)
        name, kind, blobs = "", "", []
        for field, wire, value, at in self.fields(start, end):
            if field == name_field:
                self.expect(wire, _BYTES, f"{kind_name} name", at)
                name = self.text(value)
            elif field == type_field and v1:
                self.expect(wire, _VARINT, "V1LayerParameter type (the LayerType enum)", at)
                kind = V1_LAYER_TYPES.get(value, f"V1 type {value}")
            elif field == type_field:
                self.expect(wire, _BYTES, "LayerParameter type (a string such as \"Convolution\")", at)
                kind = self.text(value)
            elif field == blob_field:
                self.expect(wire, _BYTES, f"{kind_name} blobs", at)
                blobs.append(self.blob(*value))
            elif v1 and field == 1:  # V0LayerParameter: name 1, type 2, blobs 50
                self.expect(wire, _BYTES, "V1LayerParameter layer (V0LayerParameter)", at)
                for inner, inner_wire, inner_value, inner_at in self.fields(*value):
                    if inner in (1, 2, 50):
                        self.expect(inner_wire, _BYTES, f"V0LayerParameter {_V0_FIELDS[inner]}", inner_at)
                    if inner == 1:
                        name = name or self.text(inner_value)
                    elif inner == 2:
                        kind = kind or self.text(inner_value)
                    elif inner == 50:
                        blobs.append(self.blob(*inner_value))
        return CaffeLayer(name=name, type=kind, blobs=tuple(blobs))


def read_caffemodel(path: str | os.PathLike[str]) -> list[CaffeLayer]:
    """Every layer of the caffemodel at ``path`` (both formats), in file order, with its blobs as
    views into a read-only memory map of the file (kept open while any view is alive)."""
    path = Path(path)
    if not path.is_file():
        state = "is not a regular file" if path.exists() else "does not exist"
        raise FileNotFoundError(f"caffemodel {path} {state}; give the path of a .caffemodel file")
    with path.open("rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            raise CaffeModelError(f"{path} is empty; download the caffemodel again")
        buffer = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    reader = _Reader(buffer, path)
    layers = []
    for field, wire, value, at in reader.fields(0, len(buffer)):
        if field in (2, 100):
            reader.expect(wire, _BYTES, f"NetParameter {'layers' if field == 2 else 'layer'}", at)
            layers.append(reader.layer(*value, v1=field == 2))
    if not layers:
        raise CaffeModelError(f"{path} holds no layers (NetParameter fields 2 / 100); is it a .caffemodel?")
    return layers
