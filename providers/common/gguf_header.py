"""A fast reader of a GGUF file's header, metadata and tensor index.

``gguf.GGUFReader`` turns every metadata array into numpy objects, the vocabulary's strings and
merges included: about 2 s for a 49k-token vocabulary, more for 150k. Validating a model needs the
scalar metadata, the *length* of each array, and the tensor index (names, shapes, types, offsets).
This reader walks the file with ``struct`` over a memory map and steps over array payloads without
decoding them, so its cost is a few milliseconds plus one step per string in string arrays.

Format (github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic ``GGUF``, version (uint32),
tensor count and metadata count (uint64), the metadata key/value pairs, the tensor infos, then the
tensor data at the next multiple of ``general.alignment`` (32 by default). Files written on a
big-endian machine have every number byte-swapped; the version tells which order a file uses.

``read_gguf`` is what providers call (gguf, and huggingface for a .gguf file): the header of a whole
file, or a ``ModelAccessError`` that says what is wrong with it.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelAccessError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types -> struct format of one value (strings and arrays are handled apart).
STRING, ARRAY = 8, 9
SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

#: ggml tensor type id -> (name, elements per block, bytes per block), as in gguf.constants
#: (GGMLQuantizationType and GGML_QUANT_SIZES); a unit test keeps the two equal. Ids not listed
#: here are looked up in the gguf package, when it knows them.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}

#: general.file_type -> its name (gguf.constants.LlamaFileType without the MOSTLY_ prefix).
FILE_TYPES: dict[int, str] = {
    0: "ALL_F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 1024: "GUESSED",
}


class GGUFFormatError(ValueError):
    """The file is not a whole, well-formed GGUF file; the message says where it breaks."""


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array, described but not decoded."""

    element_type: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int  # absolute, in the file

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def n_bytes(self) -> int:
        _, block, size = ggml_type(self.type_id)
        return self.n_elements // block * size


@dataclass
class GGUFHeader:
    version: int
    byte_order: str  # "little" or "big"
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    file_size: int = 0
    metadata_end: int = 0  # where the tensor index starts
    index_end: int = 0  # where the tensor index ends (the data follows, aligned)

    @property
    def data_end(self) -> int:
        return max((t.offset + t.n_bytes for t in self.tensors), default=self.data_offset)

    @property
    def parameters(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    def get(self, key: str) -> Any:
        return self.metadata.get(key)

    @property
    def file_type_name(self) -> str | None:
        file_type = self.metadata.get("general.file_type")
        if file_type is None:
            return None
        return file_type_name(int(file_type))


def ggml_type(type_id: int) -> tuple[str, int, int]:
    known = GGML_TYPES.get(type_id)
    if known is not None:
        return known
    try:  # a type newer than this table: the gguf package may know it
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        qtype = GGMLQuantizationType(type_id)
        return (qtype.name, *GGML_QUANT_SIZES[qtype])
    except (ImportError, ValueError, KeyError):
        raise GGUFFormatError(f"unknown tensor type {type_id}") from None


def file_type_name(file_type: int) -> str:
    known = FILE_TYPES.get(file_type)
    if known is not None:
        return known
    try:
        from gguf.constants import LlamaFileType

        return LlamaFileType(file_type).name.removeprefix("MOSTLY_")
    except (ImportError, ValueError):
        return f"file_type {file_type}"


class _Cursor:
    """Reads numbers and strings from a buffer, failing with where the file ends too early."""

    def __init__(self, buf: Any, order: str) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)
        self.order = order
        self._structs: dict[str, struct.Struct] = {}

    def _struct(self, fmt: str) -> struct.Struct:
        cached = self._structs.get(fmt)
        if cached is None:
            cached = self._structs[fmt] = struct.Struct(self.order + fmt)
        return cached

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFFormatError(f"it ends inside {what} (byte {self.pos} needs {n} more, the file has {self.size})")

    def number(self, fmt: str, what: str) -> Any:
        st = self._struct(fmt)
        self.need(st.size, what)
        (value,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return value

    def string(self, what: str) -> str:
        n = self.number("Q", what)
        self.need(n, what)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int, what: str) -> None:
        """Step over ``count`` length-prefixed strings without decoding them."""
        unpack = self._struct("Q").unpack_from
        buf, pos, size = self.buf, self.pos, self.size
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.need(8, what)
            pos += 8 + unpack(buf, pos)[0]
        if pos > size:
            self.pos = size
            raise GGUFFormatError(f"it ends inside {what} (the file has {size} bytes)")
        self.pos = pos

    def value(self, vtype: int, what: str) -> Any:
        if vtype == STRING:
            return self.string(what)
        if vtype == ARRAY:
            etype = self.number("I", what)
            length = self.number("Q", what)
            if etype == STRING:
                self.skip_strings(length, what)
            elif etype == ARRAY:
                for _ in range(length):  # nested arrays are rare and small
                    self.value(ARRAY, what)
            elif etype in SCALAR_FORMATS:
                n = self._struct(SCALAR_FORMATS[etype]).size * length
                self.need(n, what)
                self.pos += n
            else:
                raise GGUFFormatError(f"{what} has an unknown element type {etype}")
            return ArrayInfo(etype, length)
        fmt = SCALAR_FORMATS.get(vtype)
        if fmt is None:
            raise GGUFFormatError(f"{what} has an unknown value type {vtype}")
        return self.number(fmt, what)


def read_header(path: Path) -> GGUFHeader:
    """Parse ``path``'s header, metadata and tensor index; GGUFFormatError if it is not whole."""
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        if size < 24:
            raise GGUFFormatError(f"it ends inside the header (the file has {size} bytes)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return _parse(mapped, size)


def _parse(buf: Any, size: int) -> GGUFHeader:
    if bytes(buf[:4]) != MAGIC:
        raise GGUFFormatError(f"it starts with {bytes(buf[:4])!r}, not b'GGUF'")
    (version,) = struct.unpack_from("<I", buf, 4)
    order = "<"
    if version & 0xFFFF == 0:  # written big-endian: every number is byte-swapped
        (version,) = struct.unpack_from(">I", buf, 4)
        order = ">"
    if version not in (2, 3):
        raise GGUFFormatError(f"GGUF version {version} is not supported (2 and 3 are)")
    cur = _Cursor(buf, order)
    cur.pos = 8
    n_tensors = cur.number("Q", "the header")
    n_kv = cur.number("Q", "the header")
    header = GGUFHeader(version=version, byte_order="little" if order == "<" else "big", file_size=size)
    header.metadata.update({"GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv})
    for index in range(n_kv):
        key = cur.string(f"metadata entry {index}")
        vtype = cur.number("I", f"metadata {key!r}")
        header.metadata[key] = cur.value(vtype, f"metadata {key!r}")
    header.metadata_end = cur.pos
    infos = []
    for index in range(n_tensors):
        name = cur.string(f"tensor info {index}")
        n_dims = cur.number("I", f"tensor info {name!r}")
        if n_dims > 8:
            raise GGUFFormatError(f"tensor {name!r} claims {n_dims} dimensions")
        shape = tuple(cur.number("Q", f"tensor info {name!r}") for _ in range(n_dims))
        type_id = cur.number("I", f"tensor info {name!r}")
        offset = cur.number("Q", f"tensor info {name!r}")
        infos.append((name, shape, type_id, offset))
    alignment = header.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise GGUFFormatError(f"general.alignment is {alignment!r}")
    header.index_end = cur.pos
    header.data_offset = -(-cur.pos // alignment) * alignment
    header.tensors = [TensorInfo(name, shape, type_id, header.data_offset + offset)
                      for name, shape, type_id, offset in infos]
    return header


def read_gguf(path: Path) -> GGUFHeader:
    """Parse a GGUF file's header, metadata and tensor index; ModelAccessError unless it is whole."""
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelAccessError(f"Cannot read {path}: {exc.strerror}.", "Check the file's permissions.") from None
    if magic != MAGIC:
        raise ModelAccessError(
            f"{path.name} is not a GGUF file (it starts with {magic!r}, not b'GGUF').",
            "Pass a .gguf model file, or use --provider huggingface for other formats.",
        )
    try:
        header = read_header(path)
    except GGUFFormatError as exc:
        raise ModelAccessError(f"{path.name} is truncated or corrupt: {exc}", "Download the file again.") from None
    if header.data_end > header.file_size:
        raise ModelAccessError(
            f"{path.name} is truncated: its tensors need {header.data_end} bytes, the file has {header.file_size}.",
            "Download the file again.",
        )
    return header
