"""The fast GGUF header reader (edgeagent.gguf_meta): the same fields and tensor infos as
gguf-py's GGUFReader on real files, a one-line ValueError naming the file for every way a
hostile header can lie, and many times faster on a real vocabulary."""

from __future__ import annotations

import re
import struct
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgeagent.gguf_meta import MAX_LIST_ITEMS, VALUE_TYPES, ArrayInfo, read_gguf_meta
from edgeagent.quality import trained_context
from edgeagent.shapes import shape_from_gguf

VT = gguf.GGUFValueType


def write_all_types_gguf(path: Path) -> Path:
    """Every value type as a scalar and as a short array, numeric arrays at and past
    MAX_LIST_ITEMS, string arrays, and tensors of several ggml types and ranks."""
    w = gguf.GGUFWriter(str(path), "llama")
    numbers = {VT.UINT8: [0, 255], VT.INT8: [-128, 127], VT.UINT16: [65535, 1], VT.INT16: [-32768, 2],
               VT.UINT32: [2**32 - 1, 3], VT.INT32: [-2**31, 4], VT.FLOAT32: [0.5, -1.25], VT.BOOL: [True, False],
               VT.UINT64: [2**64 - 1, 5], VT.INT64: [-2**63, 6], VT.FLOAT64: [1e300, -0.1]}
    for vtype, values in numbers.items():
        w.add_key_value(f"test.{vtype.name.lower()}", values[0], vtype)
        w.add_key_value(f"test.{vtype.name.lower()}_array", values, VT.ARRAY, sub_type=vtype)
    w.add_string("test.string", "naïve ✓")
    w.add_array("test.strings", ["", "a", "naïve ✓"])
    w.add_key_value("test.ints_at_limit", list(range(MAX_LIST_ITEMS)), VT.ARRAY, sub_type=VT.INT32)
    w.add_key_value("test.ints_past_limit", list(range(MAX_LIST_ITEMS + 1)), VT.ARRAY, sub_type=VT.INT32)
    w.add_context_length(512)
    w.add_tensor("vector", np.ones(64, dtype=np.float32))
    w.add_tensor("half", np.zeros((3, 64), dtype=np.float16))
    w.add_tensor("q8_0", np.zeros((2, 64 // 32 * 34), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("q4_k", np.zeros((2, 144), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    w.add_tensor("cube", np.zeros((2, 3, 4), dtype=np.float32))
    w.add_tensor("four_d", np.zeros((2, 2, 2, 2), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def assert_same_as_gguf_reader(path: Path) -> None:
    """Every field and tensor info as GGUFReader reads them: scalars equal (and of the same
    Python type), short numeric arrays equal, other arrays of the same type and length."""
    meta = read_gguf_meta(path)
    reader = gguf.GGUFReader(path)
    expected = {key: f for key, f in reader.fields.items() if not key.startswith("GGUF.")}  # its own header
    assert set(meta.fields) == set(expected)
    for key, f in expected.items():
        value = meta.fields[key]
        if f.types[0] != VT.ARRAY:
            assert value == f.contents() and type(value) is type(f.contents()), key
        elif f.types[-1] == VT.STRING or len(f.data) > MAX_LIST_ITEMS:
            assert value == ArrayInfo(f.types[-1].name, len(f.data)), key
        else:
            assert value == f.contents(), key
    assert [(t.name, t.shape, t.ggml_type, t.n_bytes) for t in meta.tensors] == [
        (t.name, tuple(int(x) for x in t.shape), t.tensor_type.name, int(t.n_bytes)) for t in reader.tensors]


@pytest.fixture(scope="module")
def smollm2_agent_gguf() -> Path:
    """The shipped SmolLM2 agent at q8_0 (49,152-token vocabulary), merged and quantized by the
    project; built once on first use, like `edgeagent run` does."""
    from edgeagent.agents import AgentUnavailable, shipped_agent

    try:
        return shipped_agent("smollm2").gguf("q8_0", quiet=True)
    except AgentUnavailable as e:
        pytest.skip(str(e))


def test_value_type_names_match_gguf() -> None:
    assert VALUE_TYPES == {t.value: t.name for t in VT}


def test_every_value_type_and_tensor_kind_reads_as_gguf_reader_reads_it(tmp_path: Path) -> None:
    path = write_all_types_gguf(tmp_path / "all.gguf")
    assert_same_as_gguf_reader(path)
    fields = read_gguf_meta(path).fields
    assert fields["test.ints_at_limit"] == list(range(MAX_LIST_ITEMS))
    assert fields["test.ints_past_limit"] == ArrayInfo("INT32", MAX_LIST_ITEMS + 1)
    assert fields["test.strings"] == ArrayInfo("STRING", 3) and fields["test.string"] == "naïve ✓"


def test_the_builtin_models_gguf_reads_as_gguf_reader_reads_it() -> None:
    from edgeagent.builtin import builtin_gguf

    assert_same_as_gguf_reader(builtin_gguf("q8_0"))


def test_the_smollm2_agents_gguf_reads_as_gguf_reader_reads_it(smollm2_agent_gguf: Path) -> None:
    assert_same_as_gguf_reader(smollm2_agent_gguf)
    assert read_gguf_meta(smollm2_agent_gguf).fields["tokenizer.ggml.tokens"] == ArrayInfo("STRING", 49152)


def test_the_header_reads_many_times_faster_than_with_gguf_reader(smollm2_agent_gguf: Path) -> None:
    """A ratio within one run, both on a warm page cache: the machine's speed cancels out."""

    def seconds(read) -> float:
        start = time.perf_counter()
        read(smollm2_agent_gguf)
        return time.perf_counter() - start

    read_gguf_meta(smollm2_agent_gguf)  # warms the page cache
    slow = seconds(lambda p: gguf.GGUFReader(p).tensors)
    fast = min(seconds(read_gguf_meta) for _ in range(3))
    assert fast * 5 < slow, f"read_gguf_meta {fast:.3f} s vs GGUFReader {slow:.3f} s"


def test_shape_takes_per_layer_maxima_and_the_vocabulary_from_the_token_list(tmp_path: Path) -> None:
    """shapes._field as before: a per-layer array counts as its largest value; without
    {arch}.vocab_size the token list's length is the vocabulary (before the embedding's rows)."""
    path = tmp_path / "per_layer.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(3)
    w.add_embedding_length(64)
    w.add_key_value("llama.attention.head_count", [4, 8, 2], VT.ARRAY, sub_type=VT.UINT32)
    w.add_token_list([f"t{i}" for i in range(100)])
    w.add_tensor("token_embd.weight", np.zeros((96, 64), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    s = shape_from_gguf(path)
    assert (s.n_head, s.n_head_kv, s.head_dim, s.n_vocab) == (8, 8, 8, 100)
    assert trained_context(path) is None
    assert trained_context(write_all_types_gguf(tmp_path / "all.gguf")) == 512


# --- hostile headers ---------------------------------------------------------------------------

def _s(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def _kv(key: str | bytes, type_code: int, payload: bytes) -> bytes:
    return _s(key) + struct.pack("<I", type_code) + payload


def _tensor(name: str, dims: tuple[int, ...], type_code: int = 0, offset: int = 0) -> bytes:
    return _s(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, type_code, offset)


def _hand_gguf(path: Path, kvs: list[bytes], tensors: list[bytes]) -> Path:
    """A GGUF v3 written byte by byte from records that may lie, then 256 bytes of data."""
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs + tensors) + b"\0" * 256)
    return path


def test_the_hand_written_gguf_is_sound(tmp_path: Path) -> None:
    """The records the hostile cases bend, unbent: they read, as GGUFReader reads them."""
    path = _hand_gguf(tmp_path / "sound.gguf", [_kv("k", 4, struct.pack("<I", 7)), _kv("s", 8, _s("x"))],
                      [_tensor("t", (32, 2), 8)])
    assert_same_as_gguf_reader(path)
    meta = read_gguf_meta(path)
    assert meta.fields == {"k": 7, "s": "x"} and meta.tensors[0].n_bytes == 2 * 34


U32, Q8_0 = struct.Struct("<I"), 8
HOSTILE = {
    "string_length": ([_kv("k", 8, struct.pack("<Q", 2**60))], [], "run past the end"),
    "array_count": ([_kv("k", 9, struct.pack("<IQ", 5, 2**40))], [], "run past the end"),
    "string_array_count": ([_kv("k", 9, struct.pack("<IQ", 8, 2**40))], [], "cannot fit"),
    "string_in_array_length": ([_kv("k", 9, struct.pack("<IQ", 8, 2) + _s("a") + struct.pack("<Q", 2**60))], [],
                               "run past the end"),
    "unknown_value_type": ([_kv("k", 13, U32.pack(0))], [], "unknown value type 13"),
    "unknown_element_type": ([_kv("k", 9, struct.pack("<IQ", 13, 1) + U32.pack(0))], [], "element type 13"),
    "nested_array": ([_kv("k", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 4, 1) + U32.pack(0))], [],
                     "element type ARRAY"),
    "duplicate_key": ([_kv("k", 4, U32.pack(1)), _kv("k", 4, U32.pack(2))], [], "k appears twice"),
    "key_not_utf8": ([_kv(b"\xff\xfe", 4, U32.pack(1))], [], "not UTF-8"),
    "tensor_name_length": ([], [struct.pack("<Q", 2**60) + b"t" + struct.pack("<IQIQ", 1, 32, 0, 0)], "run past the end"),
    "five_dims": ([], [_tensor("t", (32, 1, 1, 1, 1))], "5 dimensions"),
    "no_dims": ([], [_tensor("t", ())], "0 dimensions"),
    "unknown_tensor_type": ([], [_tensor("t", (32,), 4)], "ggml type 4, which is unknown"),
    "partial_block": ([], [_tensor("t", (33, 1), Q8_0)], "not whole Q8_0 blocks"),
    "huge_tensor": ([], [_tensor("t", (2**40, 2**40))], "run past the end"),
    "data_offset": ([], [_tensor("t", (32,), 0, 2**50)], "run past the end"),
    "duplicate_tensor": ([], [_tensor("t", (32,)), _tensor("t", (32,), 0, 128)], "t appears twice"),
    "alignment": ([_kv("general.alignment", 4, U32.pack(3))], [_tensor("t", (32,))], "not a power of two"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_header_that_lies_is_a_value_error_naming_the_file(tmp_path: Path, case: str) -> None:
    kvs, tensors, why = HOSTILE[case]
    path = _hand_gguf(tmp_path / f"{case}.gguf", kvs, tensors)
    with pytest.raises(ValueError, match=re.escape(why)) as refused:
        read_gguf_meta(path)
    assert str(refused.value).startswith(f"{path}: ")


def test_a_file_cut_short_anywhere_is_a_value_error_naming_the_file(tmp_path: Path) -> None:
    whole = write_all_types_gguf(tmp_path / "whole.gguf").read_bytes()
    data_end = max(t.data_offset + int(t.n_bytes) for t in gguf.GGUFReader(tmp_path / "whole.gguf").tensors)
    cut = tmp_path / "cut.gguf"
    for size in [*range(0, data_end, 37), data_end - 1]:
        cut.write_bytes(whole[:size])
        with pytest.raises(ValueError) as refused:
            read_gguf_meta(cut)
        assert str(refused.value).startswith(f"{cut}: "), size
    cut.write_bytes(whole[:data_end])  # the tensor data's end is all a reader needs
    assert read_gguf_meta(cut).tensors == read_gguf_meta(tmp_path / "whole.gguf").tensors
