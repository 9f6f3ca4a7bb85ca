"""A GGUF file's header, its key/value metadata and tensor infos, read fast and safely.

gguf-py's ``GGUFReader`` builds a numpy view of every element of every array, which takes
seconds on a 49,152-token vocabulary; start-up only needs a few numbers and the tensor
table. This reader walks the header with ``struct`` over an mmap and steps over big arrays,
keeping just their element type and length (``ArrayInfo``).

The file is untrusted: every count and length is checked against the file's size before it
is used, and every fault is a ValueError whose message starts with the path. The layout is
ggml's docs/gguf.md, versions 2 and 3 (little-endian). Standard library only: the ggml type
table is ``GGML_TYPES`` (the test suite holds it equal to ``gguf.constants``); a type id it does
not know is looked up in ``gguf.constants``, imported only then (gguf-py's modules: ~4.6 MB
more resident in a runtime process that only wanted the tensor table).
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Numeric arrays up to this long (per-layer values, e.g. OpenELM's head counts) are read as
# lists; longer ones (a vocabulary's scores and token types) are kept as an ArrayInfo.
MAX_LIST_ITEMS = 1024
MAX_DIMS = 4  # GGML_MAX_DIMS
DEFAULT_ALIGNMENT = 32  # of the tensor data, unless general.alignment says otherwise

# GGUF value types by code, named as gguf.GGUFValueType names them.
VALUE_TYPES = {0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32", 6: "FLOAT32",
               7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64", 12: "FLOAT64"}
STRING, ARRAY = 8, 9
# struct formats of the fixed-size types (BOOL is one byte, non-zero true)
_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_U64 = struct.Struct("<Q")

# The smallest a key/value pair (key length, one byte of key, type, one byte of value) and
# a tensor record (name length, one byte of name, n_dims, one dim, type, offset) can be.
_MIN_KV_BYTES = 8 + 1 + 4 + 1
_MIN_TENSOR_BYTES = 8 + 1 + 4 + 8 + 4 + 8


# ggml's tensor types (ggml.h's enum ggml_type): id -> (name, weights per block, bytes per
# block), as gguf-py 0.19's GGML_QUANT_SIZES has them (the ids missing are types ggml retired).
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


# llama.h's llama_ftype (``general.file_type``): id -> name, as gguf-py 0.19's LlamaFileType
# names them (held equal by the test suite).
LLAMA_FILE_TYPES: dict[int, str] = {
    0: "ALL_F32", 1: "MOSTLY_F16", 2: "MOSTLY_Q4_0", 3: "MOSTLY_Q4_1", 7: "MOSTLY_Q8_0", 8: "MOSTLY_Q5_0",
    9: "MOSTLY_Q5_1", 10: "MOSTLY_Q2_K", 11: "MOSTLY_Q3_K_S", 12: "MOSTLY_Q3_K_M", 13: "MOSTLY_Q3_K_L",
    14: "MOSTLY_Q4_K_S", 15: "MOSTLY_Q4_K_M", 16: "MOSTLY_Q5_K_S", 17: "MOSTLY_Q5_K_M", 18: "MOSTLY_Q6_K",
    19: "MOSTLY_IQ2_XXS", 20: "MOSTLY_IQ2_XS", 21: "MOSTLY_Q2_K_S", 22: "MOSTLY_IQ3_XS", 23: "MOSTLY_IQ3_XXS",
    24: "MOSTLY_IQ1_S", 25: "MOSTLY_IQ4_NL", 26: "MOSTLY_IQ3_S", 27: "MOSTLY_IQ3_M", 28: "MOSTLY_IQ2_S",
    29: "MOSTLY_IQ2_M", 30: "MOSTLY_IQ4_XS", 31: "MOSTLY_IQ1_M", 32: "MOSTLY_BF16", 36: "MOSTLY_TQ1_0",
    37: "MOSTLY_TQ2_0", 38: "MOSTLY_MXFP4_MOE", 39: "MOSTLY_NVFP4", 40: "MOSTLY_Q1_0", 1024: "GUESSED",
}


def file_type_name(code: int) -> str | None:
    """llama.cpp's name of a ``general.file_type`` id (``MOSTLY_Q4_K_M``); None when neither
    ``LLAMA_FILE_TYPES`` nor the installed gguf-py knows it."""
    if code in LLAMA_FILE_TYPES:
        return LLAMA_FILE_TYPES[code]
    try:
        from gguf import LlamaFileType
    except ImportError:
        return None
    try:
        return LlamaFileType(code).name
    except ValueError:
        return None


def ggml_type(type_code: int) -> tuple[str, int, int] | None:
    """(name, weights per block, bytes per block) of a ggml type id; None when neither
    ``GGML_TYPES`` nor the installed gguf-py can size it."""
    known = GGML_TYPES.get(type_code)
    if known is not None:
        return known
    try:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError:
        return None
    try:
        qtype = GGMLQuantizationType(type_code)
    except ValueError:
        return None
    if qtype not in GGML_QUANT_SIZES:
        return None
    return (qtype.name, *GGML_QUANT_SIZES[qtype])


@dataclass(frozen=True)
class ArrayInfo:
    """An array left unread in the file (a vocabulary, say): what it holds and how many."""

    element_type: str  # a VALUE_TYPES name
    count: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] (ne0) is the row length, i.e. input features
    ggml_type: str
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class GGUFMeta:
    """``fields``: key -> int, float, bool, str, a list (short numeric arrays) or an ArrayInfo."""

    fields: dict[str, Any]
    tensors: tuple[TensorInfo, ...]


def check_gguf_header(path: Path) -> tuple[int, int]:
    """Refuse a file whose GGUF header cannot be true before any parser trusts its counts: a
    tensor or key/value count (2^40, say) that the file is far too small to hold. Raises
    ValueError naming the file and the field; returns (tensor count, key/value count)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(head) < 24 or head[:4] != b"GGUF":
        raise ValueError(f"{path}: cannot read as GGUF: no GGUF magic and header")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    for field, count, least in (("tensor count", n_tensors, _MIN_TENSOR_BYTES), ("key/value count", n_kv, _MIN_KV_BYTES)):
        if count * least > size:
            raise ValueError(f"{path}: GGUF header's {field} {count} cannot fit in a {size}-byte file")
    return n_tensors, n_kv


def read_gguf_meta(path: str | os.PathLike) -> GGUFMeta:
    """The metadata and tensor infos of the GGUF at ``path``, without reading any tensor data
    or big array; ValueError naming the file for anything the file cannot back up."""
    path = Path(path)
    n_tensors, n_kv = check_gguf_header(path)
    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:  # ValueError: the file was emptied since the check
        raise ValueError(f"{path}: cannot read ({exc})") from None
    with buf:
        cur = _Cursor(buf, path, 24)
        fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string("a key")
            if key in fields:
                raise cur.corrupt(f"key {key} appears twice")
            fields[key] = _read_value(cur, cur.number("I", f"the type of {key}"), key)
        tensors = _read_tensor_infos(cur, n_tensors, fields)
    return GGUFMeta(fields, tensors)


class _Cursor:
    """Reads little-endian values from ``buf`` one after another, never past its end."""

    def __init__(self, buf: mmap.mmap, path: Path, pos: int):
        self.buf, self.path, self.pos = buf, path, pos

    def corrupt(self, what: str) -> ValueError:
        return ValueError(f"{self.path}: corrupt GGUF ({what})")

    def skip(self, n: int, what: str) -> int:
        """Step over ``n`` bytes; returns where they start."""
        if n > len(self.buf) - self.pos:
            raise self.corrupt(f"{what}: {n} bytes at offset {self.pos} run past the end of the {len(self.buf)}-byte file")
        start, self.pos = self.pos, self.pos + n
        return start

    def number(self, fmt: str, what: str) -> Any:
        return struct.unpack_from("<" + fmt, self.buf, self.skip(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.number("Q", what)
        start = self.skip(n, what)
        try:
            return str(self.buf[start:start + n], "utf-8")
        except UnicodeDecodeError:
            raise self.corrupt(f"{what} at offset {start} is not UTF-8") from None

    def skip_strings(self, count: int, what: str) -> None:
        """Step over ``count`` strings, reading only their lengths (the hot loop: a vocabulary
        and its merges are ~100,000 strings)."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        if count * 8 > end - pos:
            raise self.corrupt(f"{what}: {count} strings cannot fit in the {end}-byte file")
        overrun = f"{what}: its strings run past the end of the {end}-byte file"
        for _ in range(count):
            if pos + 8 > end:
                raise self.corrupt(overrun)
            pos += 8 + _U64.unpack_from(buf, pos)[0]
        if pos > end:
            raise self.corrupt(overrun)
        self.pos = pos


def _read_value(cur: _Cursor, type_code: int, key: str) -> Any:
    if type_code == STRING:
        return cur.string(f"the value of {key}")
    if type_code == ARRAY:
        return _read_array(cur, key)
    if type_code not in _FORMATS:
        raise cur.corrupt(f"{key} has unknown value type {type_code}")
    return cur.number(_FORMATS[type_code], f"the value of {key}")


def _read_array(cur: _Cursor, key: str) -> list | ArrayInfo:
    element = cur.number("I", f"the element type of {key}")
    count = cur.number("Q", f"the length of {key}")
    if element == STRING:
        cur.skip_strings(count, key)
        return ArrayInfo("STRING", count)
    if element not in _FORMATS:  # arrays of arrays included: llama.cpp refuses them too
        raise cur.corrupt(f"array {key} has unsupported element type {VALUE_TYPES.get(element, element)}")
    fmt = _FORMATS[element]
    start = cur.skip(count * struct.calcsize(fmt), f"array {key}")
    if count > MAX_LIST_ITEMS:
        return ArrayInfo(VALUE_TYPES[element], count)
    return list(struct.unpack_from(f"<{count}{fmt}", cur.buf, start))


def _read_tensor_infos(cur: _Cursor, count: int, fields: dict[str, Any]) -> tuple[TensorInfo, ...]:
    """The tensor infos that follow the key/value pairs, each checked to have a known ggml
    type, whole blocks per row and its data inside the file."""
    infos: dict[str, tuple[TensorInfo, int]] = {}  # name -> (info, data offset)
    for _ in range(count):
        name = cur.string("a tensor name")
        if name in infos:
            raise cur.corrupt(f"tensor {name} appears twice")
        n_dims = cur.number("I", f"the dimension count of tensor {name}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.corrupt(f"tensor {name} has {n_dims} dimensions, not 1 to {MAX_DIMS}")
        shape = tuple(cur.number("Q", f"the shape of tensor {name}") for _ in range(n_dims))
        type_code = cur.number("I", f"the type of tensor {name}")
        offset = cur.number("Q", f"the data offset of tensor {name}")
        known = ggml_type(type_code)
        if known is None:
            raise cur.corrupt(f"tensor {name} has ggml type {type_code}, which is unknown or cannot be sized here")
        type_name, block, block_bytes = known
        if shape[0] % block:
            raise cur.corrupt(f"tensor {name}'s rows of {shape[0]} are not whole {type_name} blocks of {block}")
        infos[name] = TensorInfo(name, shape, type_name, math.prod(shape) // block * block_bytes), offset
    alignment = fields.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        raise cur.corrupt(f"general.alignment {alignment!r} is not a power of two")
    data_start = cur.pos + (-cur.pos) % alignment  # the tensor data begins at the next multiple
    for t, offset in infos.values():
        if data_start + offset + t.n_bytes > len(cur.buf):
            raise cur.corrupt(f"tensor {t.name}'s {t.n_bytes} bytes at data offset {offset} run past the end of the file")
    return tuple(t for t, _ in infos.values())
