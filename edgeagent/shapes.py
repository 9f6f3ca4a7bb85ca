"""Model shapes for the roofline estimator (``edgeagent.estimate``): what a llama.cpp model is
made of, tensor by tensor, read from a GGUF file (``shape_from_gguf``, header checked before
anything is trusted) or built from a published config plus llama.cpp's quantization recipe
(``shape_from_config``, ``PUBLISHED_SHAPES``). Standard library only, and gguf's constants to
read a GGUF file (its header through ``edgeagent.gguf_meta``): it runs on phones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

# TensorInfo and check_gguf_header are importable from here (and edgeagent.estimate) too.
from edgeagent.gguf_meta import (GGML_TYPES, ArrayInfo, TensorInfo, check_gguf_header, file_type_name,  # noqa: F401
                                 read_gguf_meta)

MiB = 2**20
F32 = 4  # bytes

# Types a decode step reads without unpacking bits: llama.cpp's CPU kernels for these are plain
# int8 or float dot products, while the 4-to-6-bit types (Q4_0 ... Q6_K, IQ*) spend compute
# unpacking every block (``estimate.decode_read_bytes``, ``runtime.wide_weight_rate``).
WIDE_TYPES = frozenset({"F32", "F16", "BF16", "Q8_0", "Q8_1"})

# The weight types llama.cpp's CPU backend repacks into interleaved layouts, with the row multiple
# each needs, as the llama.cpp that llama-cpp-python 0.3.36 vendors chooses them
# (ggml/src/ggml-cpu/repack.cpp, ggml_repack_get_optimal_repack_type): on AArch64 with dotprod
# (every phone and board profile), and on x86 with AVX2. Older builds repack fewer types (the
# K-quants on AArch64 came in late 2025, Q8_0 in December 2025); a published row from such a
# build names its own set (anchors' ``repacked_types``).
REPACKED_TYPES: dict[str, dict[str, int]] = {
    "aarch64": {"Q4_0": 4, "Q4_K": 8, "Q5_K": 8, "Q6_K": 8, "IQ4_NL": 4, "Q8_0": 4},
    "x86_64": {"Q4_0": 8, "Q4_K": 8, "IQ4_NL": 8},
}


def repacked_bytes(tensors: Sequence[TensorInfo], repacked: dict[str, int]) -> int:
    """Bytes of a GGUF's tensors llama.cpp's CPU backend copies into its repack buffer: the
    2-D block weights and an untied output head (``output.weight``) whose type is in
    ``repacked`` with a row count its interleave divides (``REPACKED_TYPES``). The token
    embedding is read by row lookups, which the repack buffer does not serve, so it stays where
    it is (a tied head's second copy is ``ModelShape.repacked_head_copy_bytes``)."""
    total = 0
    for t in tensors:
        if not (t.name.startswith("blk.") or t.name == "output.weight"):
            continue
        multiple = repacked.get(t.ggml_type)
        if multiple is not None and len(t.shape) == 2 and t.shape[1] % multiple == 0:
            total += t.n_bytes
    return total


def repack_arch(machine: str) -> str | None:
    """The ``REPACKED_TYPES`` key of a ``platform.machine()`` name; None for an architecture
    whose repacking this table does not know."""
    machine = machine.lower()
    if machine in ("aarch64", "arm64", "armv8l", "armv9l"):
        return "aarch64"
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    return None

# ggml block sizes by type name: (weights per block, bytes per block), from gguf_meta's table
# (ggml-common.h's, held equal to gguf.constants.GGML_QUANT_SIZES by the test suite), so a phone
# can estimate without the gguf package. Q8_0 is 8.5 bits a weight, Q6_K 6.5625, Q4_K 4.5.
GGML_BLOCK: dict[str, tuple[int, int]] = {name: (block, size) for name, block, size in GGML_TYPES.values()}

@dataclass(frozen=True)
class ModelShape:
    """A model, tensor by tensor. Frozen: its derived sums are computed once per shape
    (``cached_property``), as the estimator asks for them thousands of times per command."""

    name: str
    arch: str
    n_layers: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    quant: str
    tensors: tuple[TensorInfo, ...]
    origin: str  # the GGUF path, or the published config the shape came from
    # The tokenizer's BPE merges (``tokenizer.ggml.merges``; 0 for a SentencePiece vocabulary),
    # or None where unknown (``estimate.vocab_bytes`` then takes one per token)
    n_merges: int | None = None

    @cached_property
    def weights_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @cached_property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @cached_property
    def tied_embeddings(self) -> bool:
        return not any(t.name == "output.weight" for t in self.tensors)

    @cached_property
    def _by_name(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.tensors}

    def get(self, name: str) -> TensorInfo | None:
        return self._by_name.get(name)

    @cached_property
    def head(self) -> TensorInfo:
        """The output projection: ``output.weight``, or the token embedding when tied."""
        head = self.get("output.weight") or self.get("token_embd.weight")
        if head is None:
            raise ValueError(f"{self.origin}: no output.weight or token_embd.weight tensor")
        return head

    @cached_property
    def block_tensors(self) -> tuple[TensorInfo, ...]:
        return tuple(t for t in self.tensors if t.name.startswith("blk."))

    @cached_property
    def block_bytes(self) -> int:
        return sum(t.n_bytes for t in self.block_tensors)

    @cached_property
    def decode_weight_bytes(self) -> tuple[float, float]:
        """The weight bytes one decode step reads, as (of ``WIDE_TYPES`` tensors, of the rest):
        every block weight, the output head (the whole token embedding when tied), one
        embedding row and the output norm."""
        head = self.head
        reads = [(float(t.n_bytes), t.ggml_type) for t in self.block_tensors] + [(float(head.n_bytes), head.ggml_type)]
        embd = self.get("token_embd.weight")
        if embd is not None and embd is not head:
            reads.append((embd.n_bytes / embd.shape[1], embd.ggml_type))
        norm = self.get("output_norm.weight")
        if norm is not None:
            reads.append((float(norm.n_bytes), norm.ggml_type))
        wide = sum(b for b, kind in reads if kind in WIDE_TYPES)
        return wide, sum(b for b, _ in reads) - wide

    def repacked_head_copy_bytes(self, repacked: dict[str, int]) -> int:
        """Bytes llama.cpp holds twice when it repacks a tied output head: the token embedding
        stays in the plain CPU buffer for its row lookups, and the head, the same table, is
        copied into the repack buffer for its matmul. ``repacked`` maps each repacked type to
        the row multiple it needs (``REPACKED_TYPES``). 0 for an untied head or a type (or row
        count) the backend leaves as it is."""
        head = self.head
        multiple = repacked.get(head.ggml_type)
        if not self.tied_embeddings or multiple is None or head.shape[-1] % multiple:
            return 0
        return head.n_bytes

    def repacked_bytes(self, repacked: dict[str, int]) -> int:
        """Bytes of this model's tensors llama.cpp copies into its repack buffer
        (``repacked_bytes``)."""
        return repacked_bytes(self.tensors, repacked)

    @cached_property
    def block_matmul_params(self) -> int:
        """Weights of the matrix multiplies inside the transformer blocks (2-D tensors)."""
        return sum(t.n_elements for t in self.block_tensors if len(t.shape) >= 2)

    @cached_property
    def block_matmul_params_by_type(self) -> dict[str, int]:
        """``block_matmul_params`` split by weight type (prefill's kernels differ per type)."""
        by_type: dict[str, int] = {}
        for t in self.block_tensors:
            if len(t.shape) >= 2:
                by_type[t.ggml_type] = by_type.get(t.ggml_type, 0) + t.n_elements
        return by_type

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.weights_bytes / self.n_params

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "quant": self.quant,
            "origin": self.origin,
            "n_layers": self.n_layers,
            "n_embd": self.n_embd,
            "n_head": self.n_head,
            "n_head_kv": self.n_head_kv,
            "head_dim": self.head_dim,
            "n_ff": self.n_ff,
            "n_vocab": self.n_vocab,
            "n_params": self.n_params,
            "weights_bytes": self.weights_bytes,
            "bits_per_weight": round(self.bits_per_weight, 3),
            "tied_embeddings": self.tied_embeddings,
        }


def _field(fields: dict[str, Any], key: str, default: Any = None) -> Any:
    value = fields.get(key, default)
    if isinstance(value, list):  # per-layer arrays (e.g. OpenELM head counts): the largest
        return max(value) if value and isinstance(value[0], (int, float)) else value
    return value


def shape_from_gguf(path: str | Path) -> ModelShape:
    """The shape of a GGUF model, with every tensor's real type and byte size, so the
    weight bytes are exact whatever quantization mix the file holds. The file is untrusted:
    any header or field it cannot back up is a ValueError naming the file, never a crash."""
    path = Path(path)
    try:
        return _shape_from_gguf(path)
    except (IndexError, TypeError, OverflowError) as exc:  # a field of the wrong kind
        raise ValueError(f"{path}: corrupt GGUF ({type(exc).__name__}: {str(exc)[:120]})") from None


def _shape_from_gguf(path: Path) -> ModelShape:
    meta = read_gguf_meta(path)
    fields, tensors = meta.fields, meta.tensors
    arch = _field(fields, "general.architecture")
    if not arch:
        raise ValueError(f"{path}: GGUF has no general.architecture")

    def hp(key: str, default: Any = None) -> Any:
        value = _field(fields, f"{arch}.{key}", default)
        if value is None:
            raise ValueError(f"{path}: GGUF has no {arch}.{key}")
        return value

    n_embd = int(hp("embedding_length"))
    n_head = int(hp("attention.head_count"))
    if n_embd <= 0 or n_head <= 0:
        raise ValueError(f"{path}: GGUF {arch}.embedding_length {n_embd} / attention.head_count {n_head} must be positive")
    embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
    tokens = _field(fields, "tokenizer.ggml.tokens")  # only its length: the vocabulary's size
    n_vocab = _field(fields, f"{arch}.vocab_size") or (tokens.count if isinstance(tokens, ArrayInfo) else None)
    if n_vocab is None and embd is not None:
        n_vocab = embd.shape[1]
    merges = _field(fields, "tokenizer.ggml.merges")
    n_merges = merges.count if isinstance(merges, ArrayInfo) else len(merges) if isinstance(merges, list) else 0
    file_type = _field(fields, "general.file_type")
    name = file_type_name(int(file_type)) if file_type is not None else None
    quant = "unknown" if file_type is None else name.removeprefix("MOSTLY_") if name else f"file_type {file_type}"
    return ModelShape(
        name=str(_field(fields, "general.name", path.stem)),
        arch=str(arch),
        n_layers=int(hp("block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=int(hp("attention.head_count_kv", n_head)),
        head_dim=int(hp("attention.key_length", n_embd // n_head)),
        n_ff=int(hp("feed_forward_length", 0)),
        n_vocab=int(n_vocab or 0),
        quant=quant,
        tensors=tensors,
        origin=str(path),
        n_merges=n_merges,
    )


# BPE merges of the published tokenizers, as their GGUFs carry them (``tokenizer.ggml.merges``,
# which llama.cpp's load log prints as ``arr[str,N]``): Qwen2's byte-level BPE (Qwen2.5 and Qwen3
# share it) 151,387; Llama 3's 280,147; SmolLM2's 48,900. SentencePiece vocabularies (Phi-3,
# TinyLlama: ``tokenizer.ggml.model = llama``) carry none. Phi-4-mini's is not recorded here.
_QWEN_MERGES = 151_387
_LLAMA3_MERGES = 280_147

# Published configs (each model's config.json on Hugging Face). "~4B" is covered twice on
# purpose: Qwen3-4B (GQA, 8 KV heads) and Phi-3-mini (3.8B, MHA: 32 KV heads), the kind of
# model the converter's MHA->GQA step is for.
PUBLISHED_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(arch="qwen2", n_layers=24, n_embd=896, n_head=14, n_head_kv=2, head_dim=64, n_ff=4864,
                         n_vocab=151936, n_merges=_QWEN_MERGES, tied=True, qkv_bias=True, url="https://huggingface.co/Qwen/Qwen2.5-0.5B/blob/main/config.json"),
    "qwen2.5-1.5b": dict(arch="qwen2", n_layers=28, n_embd=1536, n_head=12, n_head_kv=2, head_dim=128, n_ff=8960,
                         n_vocab=151936, n_merges=_QWEN_MERGES, tied=True, qkv_bias=True, url="https://huggingface.co/Qwen/Qwen2.5-1.5B/blob/main/config.json"),
    "qwen2.5-3b": dict(arch="qwen2", n_layers=36, n_embd=2048, n_head=16, n_head_kv=2, head_dim=128, n_ff=11008,
                       n_vocab=151936, n_merges=_QWEN_MERGES, tied=True, qkv_bias=True, url="https://huggingface.co/Qwen/Qwen2.5-3B/blob/main/config.json"),
    "llama-3.2-1b": dict(arch="llama", n_layers=16, n_embd=2048, n_head=32, n_head_kv=8, head_dim=64, n_ff=8192,
                         n_vocab=128256, n_merges=_LLAMA3_MERGES, tied=True, url="https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json"),
    "llama-3.2-3b": dict(arch="llama", n_layers=28, n_embd=3072, n_head=24, n_head_kv=8, head_dim=128, n_ff=8192,
                         n_vocab=128256, n_merges=_LLAMA3_MERGES, tied=True, url="https://huggingface.co/meta-llama/Llama-3.2-3B/blob/main/config.json"),
    "qwen3-4b": dict(arch="qwen3", n_layers=36, n_embd=2560, n_head=32, n_head_kv=8, head_dim=128, n_ff=9728,
                     n_vocab=151936, n_merges=_QWEN_MERGES, tied=True, qk_norm=True, url="https://huggingface.co/Qwen/Qwen3-4B/blob/main/config.json"),
    "phi-3-mini": dict(arch="phi3", n_layers=32, n_embd=3072, n_head=32, n_head_kv=32, head_dim=96, n_ff=8192,
                       n_vocab=32064, n_merges=0, tied=False, fused_qkv=True,
                       url="https://huggingface.co/microsoft/Phi-3-mini-4k-instruct/blob/main/config.json"),
    "smollm2-1.7b": dict(arch="llama", n_layers=24, n_embd=2048, n_head=32, n_head_kv=32, head_dim=64, n_ff=8192,
                         n_vocab=49152, n_merges=48900, tied=True,
                         url="https://huggingface.co/HuggingFaceTB/SmolLM2-1.7B/blob/main/config.json"),
    "qwen3-1.7b": dict(arch="qwen3", n_layers=28, n_embd=2048, n_head=16, n_head_kv=8, head_dim=128, n_ff=6144,
                       n_vocab=151936, n_merges=_QWEN_MERGES, tied=True, qk_norm=True, url="https://huggingface.co/Qwen/Qwen3-1.7B/blob/main/config.json"),
    "phi-4-mini": dict(arch="phi3", n_layers=32, n_embd=3072, n_head=24, n_head_kv=8, head_dim=128, n_ff=8192,
                       n_vocab=200064, tied=True, fused_qkv=True,
                       url="https://huggingface.co/microsoft/Phi-4-mini-instruct/blob/main/config.json"),
    "tinyllama-1.1b": dict(arch="llama", n_layers=22, n_embd=2048, n_head=32, n_head_kv=4, head_dim=64, n_ff=5632,
                           n_vocab=32000, n_merges=0, tied=False,
                           url="https://huggingface.co/TinyLlama/TinyLlama-1.1B-Chat-v1.0/blob/main/config.json"),
    "llama-3.1-8b": dict(arch="llama", n_layers=32, n_embd=4096, n_head=32, n_head_kv=8, head_dim=128, n_ff=14336,
                         n_vocab=128256, n_merges=_LLAMA3_MERGES, tied=False, url="https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json"),
}

QUANTS = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_1", "q4_0")
_BASE_TYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q6_k": "Q6_K", "q5_k_m": "Q5_K",
              "q4_k_m": "Q4_K", "q4_1": "Q4_1", "q4_0": "Q4_0"}
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}  # when ne0 is not a multiple of 256


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    # llama.cpp src/llama-quant.cpp: the first and last eighth of the layers, and every third
    # layer in between, get more bits in the *_M mixes.
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def llama_cpp_tensor_type(role: str, ne0: int, i_layer: int, n_layers: int, quant: str, tied: bool) -> str:
    """The ggml type ``llama-quantize`` gives a 2-D weight, for the mixes in ``QUANTS``.

    Mirrors ``llama_tensor_get_type`` in llama.cpp's src/llama-quant.cpp for dense models:
    the output head (or the tied token embedding) goes to Q6_K; in Q4_K_M/Q5_K_M, attn_v
    (or fused attn_qkv) and ffn_down go to Q6_K in the ``_use_more_bits`` layers; a tensor
    whose rows are not a multiple of the block size falls back (Q4_K->Q5_0, Q6_K->Q8_0).
    """
    base = _BASE_TYPE[quant]
    if base in ("F32", "F16", "BF16"):
        return base
    t = base
    if role == "output" or (tied and role == "token_embd"):
        t = "Q8_0" if ne0 % GGML_BLOCK[base][0] else ("Q8_0" if base == "Q8_0" else "Q6_K")
    elif role in ("attn_v", "attn_qkv") and quant in ("q4_k_m", "q5_k_m") and _use_more_bits(i_layer, n_layers):
        t = "Q6_K"
    elif role == "ffn_down" and quant in ("q4_k_m", "q5_k_m") and _use_more_bits(i_layer, n_layers):
        t = "Q6_K"
    if ne0 % GGML_BLOCK[t][0]:
        t = _FALLBACK.get(t, "F16")
        if ne0 % GGML_BLOCK[t][0]:
            t = "F16"
    return t


def _tensor(name: str, shape: tuple[int, ...], ggml_type: str) -> TensorInfo:
    block, size = GGML_BLOCK[ggml_type]
    n = math.prod(shape)
    return TensorInfo(name, shape, ggml_type, n // block * size)


def shape_from_config(name: str, quant: str = "q4_k_m", *, exit_layer: int | None = None,
                      n_head_kv: int | None = None) -> ModelShape:
    """A published model shape, quantized as ``llama-quantize`` would: tensor names and
    shapes as llama.cpp's converter writes them (GGUF ``blk.N.*``), types from the mixture.

    ``exit_layer`` k: the early-exit variant (the first k blocks, packed as a k-layer model,
    so the Q4_K_M mixture is the one llama-quantize picks for k layers). ``n_head_kv``: the
    model after MHA->GQA conversion to that many KV heads (``converters.gqa``)."""
    key, quant = name.lower(), quant.lower()
    if key not in PUBLISHED_SHAPES:
        raise ValueError(f"unknown model shape {name!r}; known: {', '.join(PUBLISHED_SHAPES)}")
    if quant not in QUANTS:
        raise ValueError(f"unknown quantization {quant!r}; known: {', '.join(QUANTS)}")
    c = dict(PUBLISHED_SHAPES[key])
    if exit_layer is not None:
        if not 1 <= exit_layer <= c["n_layers"]:
            raise ValueError(f"exit_layer {exit_layer} is not within 1..{c['n_layers']} for {key}")
        c["n_layers"] = exit_layer
    if n_head_kv is not None:
        if n_head_kv < 1 or c["n_head_kv"] % n_head_kv:
            raise ValueError(f"n_head_kv {n_head_kv} must divide {key}'s {c['n_head_kv']} KV heads")
        c["n_head_kv"] = n_head_kv
    L, d, hd, ff, V = c["n_layers"], c["n_embd"], c["head_dim"], c["n_ff"], c["n_vocab"]
    q_dim, kv_dim = c["n_head"] * hd, c["n_head_kv"] * hd
    tied = c["tied"]

    def weight(tname: str, role: str, ne0: int, ne1: int, i: int = 0) -> TensorInfo:
        return _tensor(tname, (ne0, ne1), llama_cpp_tensor_type(role, ne0, i, L, quant, tied))

    def vector(tname: str, n: int) -> TensorInfo:  # norms and biases stay F32
        return _tensor(tname, (n,), "F32")

    tensors = [weight("token_embd.weight", "token_embd", d, V)]
    for i in range(L):
        b = f"blk.{i}."
        tensors.append(vector(b + "attn_norm.weight", d))
        if c.get("fused_qkv"):
            tensors.append(weight(b + "attn_qkv.weight", "attn_qkv", d, q_dim + 2 * kv_dim, i))
        else:
            tensors += [weight(b + "attn_q.weight", "attn_q", d, q_dim, i),
                        weight(b + "attn_k.weight", "attn_k", d, kv_dim, i),
                        weight(b + "attn_v.weight", "attn_v", d, kv_dim, i)]
        if c.get("qkv_bias"):
            tensors += [vector(b + "attn_q.bias", q_dim), vector(b + "attn_k.bias", kv_dim), vector(b + "attn_v.bias", kv_dim)]
        if c.get("qk_norm"):
            tensors += [vector(b + "attn_q_norm.weight", hd), vector(b + "attn_k_norm.weight", hd)]
        tensors.append(weight(b + "attn_output.weight", "attn_output", q_dim, d, i))
        tensors.append(vector(b + "ffn_norm.weight", d))
        if c.get("fused_qkv"):  # Phi-3 also fuses gate and up into one ffn_up of 2*n_ff rows
            tensors.append(weight(b + "ffn_up.weight", "ffn_up", d, 2 * ff, i))
        else:
            tensors += [weight(b + "ffn_gate.weight", "ffn_gate", d, ff, i), weight(b + "ffn_up.weight", "ffn_up", d, ff, i)]
        tensors.append(weight(b + "ffn_down.weight", "ffn_down", ff, d, i))
    tensors.append(vector("output_norm.weight", d))
    if not tied:
        tensors.append(weight("output.weight", "output", d, V))
    return ModelShape(
        name=key + (f"-exit{L}" if exit_layer is not None else "") + (f"-kv{c['n_head_kv']}" if n_head_kv is not None else ""),
        arch=c["arch"], n_layers=L, n_embd=d, n_head=c["n_head"], n_head_kv=c["n_head_kv"], head_dim=hd,
        n_ff=ff, n_vocab=V, quant=quant.upper(), tensors=tuple(tensors), origin=c["url"], n_merges=c.get("n_merges"),
    )
