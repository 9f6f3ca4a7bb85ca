"""Hugging Face checkpoint directory -> one GGUF file that llama.cpp runs with transformers' numbers.

Supported: ``llama``, ``mistral`` (both llama.cpp's ``llama`` architecture) and ``qwen2``.
Read top to bottom:

1. config.json -> ``Hparams`` (every GGUF hyperparameter key comes from one field here);
2. the weights (safetensors, read with numpy; a legacy ``pytorch_model.bin`` is first turned
   into safetensors by the converter, ``converters.sources.resolve_source``);
3. ``TENSOR_MAP``: the one HF -> GGUF name table. A tensor it does not list is an error;
4. the q/k permutation for the llama architecture;
5. the tokenizer (``edgeagent.export.tokenizer``);
6. F32/F16 written directly by ``gguf.GGUFWriter``, everything else quantized from an F32
   intermediate by llama.cpp itself (``edgeagent.quantize``);
7. an atomic rename: on any error no output file is left behind.

Length (about 560 lines) on purpose: one export read top to bottom (the steps above), with
the HF -> GGUF name table inline so the step that uses it is next to it.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from edgeagent.export.tokenizer import TokenizerError, Vocab, load_vocab, write_vocab
from edgeagent.atomic import atomic_path, temp_file_next_to


class ExportError(Exception):
    """The checkpoint cannot be exported; the message is one line saying why."""


QUANTS = ("f32", "f16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k")

# HF `model_type` -> llama.cpp architecture. Mistral (v0.1-v0.3 and its derivatives) is a
# llama with a different name; llama.cpp's converter writes it as `llama` too.
ARCHS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}

LLAMA_FAMILY = frozenset({"llama", "mistral"})
ALL = frozenset(ARCHS)
QWEN2 = frozenset({"qwen2"})

# The one HF -> GGUF tensor-name table: (HF name, GGUF name, model types that may have it).
# `{bid}` is the block index. A GGUF name of None marks a tensor we know and deliberately
# leave out. Anything not listed here is an error.
TENSOR_MAP: list[tuple[str, str | None, frozenset[str]]] = [
    ("model.embed_tokens.weight", "token_embd.weight", ALL),
    ("model.norm.weight", "output_norm.weight", ALL),
    ("lm_head.weight", "output.weight", ALL),
    ("model.layers.{bid}.input_layernorm.weight", "blk.{bid}.attn_norm.weight", ALL),
    ("model.layers.{bid}.self_attn.q_proj.weight", "blk.{bid}.attn_q.weight", ALL),
    ("model.layers.{bid}.self_attn.k_proj.weight", "blk.{bid}.attn_k.weight", ALL),
    ("model.layers.{bid}.self_attn.v_proj.weight", "blk.{bid}.attn_v.weight", ALL),
    ("model.layers.{bid}.self_attn.q_proj.bias", "blk.{bid}.attn_q.bias", QWEN2),
    ("model.layers.{bid}.self_attn.k_proj.bias", "blk.{bid}.attn_k.bias", QWEN2),
    ("model.layers.{bid}.self_attn.v_proj.bias", "blk.{bid}.attn_v.bias", QWEN2),
    ("model.layers.{bid}.self_attn.o_proj.weight", "blk.{bid}.attn_output.weight", ALL),
    ("model.layers.{bid}.post_attention_layernorm.weight", "blk.{bid}.ffn_norm.weight", ALL),
    ("model.layers.{bid}.mlp.gate_proj.weight", "blk.{bid}.ffn_gate.weight", ALL),
    ("model.layers.{bid}.mlp.up_proj.weight", "blk.{bid}.ffn_up.weight", ALL),
    ("model.layers.{bid}.mlp.down_proj.weight", "blk.{bid}.ffn_down.weight", ALL),
    # A buffer old checkpoints saved; llama.cpp computes it from rope.freq_base.
    ("model.layers.{bid}.self_attn.rotary_emb.inv_freq", None, ALL),
]

_TABLE = [
    (re.compile("^" + re.escape(hf).replace(r"\{bid\}", r"(?P<bid>\d+)") + "$"), gguf_name, archs)
    for hf, gguf_name, archs in TENSOR_MAP
]


def gguf_name(hf_name: str, model_type: str) -> str | None:
    """The GGUF name for an HF tensor name (None: known, not exported). Unknown -> ExportError."""
    for pattern, name, archs in _TABLE:
        m = pattern.match(hf_name)
        if m and model_type in archs:
            return None if name is None else name.format(bid=m.groupdict().get("bid"))
    raise ExportError(f"tensor {hf_name!r} is not in the {model_type} name table (refusing to drop it silently)")


@dataclass
class Hparams:
    """The hyperparameters written to GGUF, read once from config.json."""

    model_type: str  # HF: llama | mistral | qwen2
    arch: str  # GGUF / llama.cpp architecture
    name: str
    context_length: int
    embedding_length: int
    block_count: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    head_dim: int
    rope_freq_base: float
    rms_norm_eps: float
    vocab_size: int
    tie_word_embeddings: bool
    rope_scaling: dict | None  # None for plain RoPE
    sliding_window: int | None

    @classmethod
    def from_config(cls, config: dict, model_dir: Path) -> "Hparams":
        model_type = config.get("model_type")
        if model_type is None:
            for architecture in config.get("architectures") or []:
                model_type = ARCHITECTURES.get(architecture)
        if model_type not in ARCHS:
            raise ExportError(
                f"{model_dir / 'config.json'}: model_type {model_type!r} is not supported "
                f"(supported: {', '.join(ARCHS)})"
            )

        def need(key: str):
            if config.get(key) is None:
                raise ExportError(f"{model_dir / 'config.json'}: missing key {key!r}")
            return config[key]

        hidden, n_head = int(need("hidden_size")), int(need("num_attention_heads"))
        # transformers 5 keeps RoPE settings in `rope_parameters`; older files at top level.
        rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
        rope_theta = config.get("rope_theta", rope.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        sliding_window = config.get("sliding_window")
        if model_type == "qwen2" and not config.get("use_sliding_window", False):
            sliding_window = None
        return cls(
            model_type=model_type,
            arch=ARCHS[model_type],
            name=str(config.get("_name_or_path") or model_dir.name),
            context_length=int(need("max_position_embeddings")),
            embedding_length=hidden,
            block_count=int(need("num_hidden_layers")),
            feed_forward_length=int(need("intermediate_size")),
            head_count=n_head,
            head_count_kv=int(config.get("num_key_value_heads") or n_head),
            head_dim=int(config.get("head_dim") or hidden // n_head),
            rope_freq_base=float(rope_theta),
            rms_norm_eps=float(need("rms_norm_eps")),
            vocab_size=int(need("vocab_size")),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            rope_scaling=None if rope_type in (None, "default") else {**rope, "rope_type": rope_type},
            sliding_window=int(sliding_window) if sliding_window else None,
        )

    def expected_shape(self, name: str) -> tuple[int, ...] | None:
        """numpy (row-major, HF) shape each GGUF tensor must have."""
        n_q, n_kv = self.head_count * self.head_dim, self.head_count_kv * self.head_dim
        d, ff = self.embedding_length, self.feed_forward_length
        shapes = {
            "token_embd.weight": (self.vocab_size, d), "output.weight": (self.vocab_size, d),
            "output_norm.weight": (d,), "attn_norm.weight": (d,), "ffn_norm.weight": (d,),
            "attn_q.weight": (n_q, d), "attn_k.weight": (n_kv, d), "attn_v.weight": (n_kv, d),
            "attn_q.bias": (n_q,), "attn_k.bias": (n_kv,), "attn_v.bias": (n_kv,),
            "attn_output.weight": (d, n_q),
            "ffn_gate.weight": (ff, d), "ffn_up.weight": (ff, d), "ffn_down.weight": (d, ff),
        }
        return shapes.get(name.split(".", 2)[-1] if name.startswith("blk.") else name)


def write_hparams(writer: gguf.GGUFWriter, hp: Hparams, file_type: int) -> None:
    """Every model key, written explicitly (gguf-py's names, llama.cpp's meaning)."""
    writer.add_name(hp.name)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(hp.vocab_size)
    writer.add_context_length(hp.context_length)
    writer.add_embedding_length(hp.embedding_length)
    writer.add_block_count(hp.block_count)
    writer.add_feed_forward_length(hp.feed_forward_length)
    writer.add_head_count(hp.head_count)
    writer.add_head_count_kv(hp.head_count_kv)
    writer.add_key_length(hp.head_dim)
    writer.add_value_length(hp.head_dim)
    writer.add_rope_dimension_count(hp.head_dim)
    writer.add_rope_freq_base(hp.rope_freq_base)
    writer.add_layer_norm_rms_eps(hp.rms_norm_eps)
    if hp.rope_scaling and hp.rope_scaling["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(hp.rope_scaling["factor"]))


def permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF stores each head's q/k rows as two halves (x0..x63 | x64..x127, for rotate_half);
    llama.cpp's llama architecture rotates adjacent pairs (x0,x64), (x1,x65)... so the rows
    are interleaved. Works on weights (rows, cols) and biases (rows,)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of ``permute_rotary``: llama.cpp's interleaved rows back to HF's halves."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(hp: Hparams) -> np.ndarray:
    """Per-frequency divisors for Llama 3.1+ RoPE scaling (`rope_type: llama3`), the
    `rope_freqs.weight` tensor llama.cpp multiplies into the rotation wavelengths."""
    rs = hp.rope_scaling or {}
    factor = float(rs["factor"])
    low, high = float(rs.get("low_freq_factor", 1.0)), float(rs.get("high_freq_factor", 4.0))
    old_ctx = float(rs.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (hp.rope_freq_base ** (np.arange(0, hp.head_dim, 2, dtype=np.float64) / hp.head_dim))
    wavelen = 2 * math.pi / freqs
    smooth = (old_ctx / wavelen - low) / (high - low)
    factors = 1.0 / ((1 - smooth) / factor + smooth)
    factors = np.where(wavelen < old_ctx / high, 1.0, factors)
    factors = np.where(wavelen > old_ctx / low, factor, factors)
    return factors.astype(np.float32)


# ---------------------------------------------------------------------------------------
# reading weights


class Checkpoint:
    """The tensors of an HF checkpoint: names, shapes, and float32 numpy data on demand."""

    def __init__(self, model_dir: Path):
        self.model_dir = model_dir
        self._files: dict[str, Path] = {}  # tensor name -> file
        self._handles: dict[Path, object] = {}
        index = model_dir / "model.safetensors.index.json"
        single = model_dir / "model.safetensors"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ExportError(f"{index}: not a safetensors index ({e})") from None
            for name, file in weight_map.items():
                self._files[name] = model_dir / file
            for path in set(self._files.values()):
                self._open(path)
        elif single.is_file():
            handle = self._open(single)
            for name in handle.keys():
                self._files[name] = single
        elif (model_dir / "pytorch_model.bin").is_file():
            raise ExportError(
                f"{model_dir / 'pytorch_model.bin'}: the exporter reads safetensors; `edgeagent export` and "
                "`convert` with the converter extra (pip install 'edgeagent[convert]') turn this checkpoint into one")
        else:
            raise ExportError(f"{model_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")

    def _open(self, path: Path):
        from safetensors import safe_open

        if not path.is_file():
            raise ExportError(f"{path}: listed in the safetensors index but missing")
        try:
            handle = safe_open(str(path), framework="numpy")
        except Exception as e:  # SafetensorError is not importable under one stable name
            raise ExportError(f"{path}: corrupt or unreadable safetensors file ({str(e).strip()[:160]})") from None
        self._handles[path] = handle
        return handle

    def names(self) -> list[str]:
        return list(self._files)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self._files[name]].get_slice(name).get_shape())

    def load(self, name: str) -> np.ndarray:
        """The tensor as float32 (the exporter converts once, from full precision)."""
        path = self._files[name]
        handle = self._handles[path]
        try:
            if handle.get_slice(name).get_dtype() == "BF16":
                return _read_bf16(path, name)
            return np.asarray(handle.get_tensor(name), dtype=np.float32)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"{path}: cannot read tensor {name!r} ({str(e).strip()[:160]})") from None


def _read_bf16(path: Path, name: str) -> np.ndarray:
    """numpy has no bfloat16, so safetensors' numpy API cannot return it: read the raw
    16-bit words at the offsets the file header gives and widen them to float32."""
    with open(path, "rb") as f:
        n_header = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n_header))
        begin, end = header[name]["data_offsets"]
        f.seek(8 + n_header + begin)
        raw = np.frombuffer(f.read(end - begin), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(header[name]["shape"])


# ---------------------------------------------------------------------------------------
# the export


@dataclass
class ExportResult:
    path: str
    quant: str
    arch: str
    model_type: str
    file_type: int
    n_params: int
    size_bytes: int
    tokenizer: str  # e.g. "gpt2/llama-bpe" or "llama"
    tensor_types: dict[str, int]  # ggml type -> number of tensors
    fallbacks: list[dict] = field(default_factory=list)  # tensors that could not take the quant type
    warnings: list[str] = field(default_factory=list)
    quant_error: dict | None = None  # logits vs the F32 export, if measured
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _TensorPlan:
    gguf_name: str
    hf_name: str | None  # None: computed here (rope_freqs)
    shape: tuple[int, ...]
    permute_heads: int | None  # q/k rows to interleave (llama arch)


def export(
    model_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    quant: str = "f16",
    *,
    measure_error: bool = False,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Export the HF checkpoint in `model_dir` to a GGUF file at `out_path`.

    `quant` is one of QUANTS. With `measure_error`, a quantized export is compared with its F32
    intermediate on a short text (logits, llama.cpp on both sides) and `quant_error` is filled.
    `progress(done, total)` is called per tensor written. Raises ExportError; on any error no
    file is left at `out_path` (an existing file there is left untouched).
    """
    started = time.perf_counter()
    model_dir, out_path = Path(model_dir), Path(out_path)
    quant = quant.lower()
    if quant not in QUANTS:
        raise ExportError(f"unknown quant {quant!r} (choose from {', '.join(QUANTS)})")
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir}: not a directory")
    if not out_path.parent.is_dir():
        raise ExportError(f"{out_path.parent}: output directory does not exist")

    try:
        hp = Hparams.from_config(_read_config(model_dir), model_dir)
    except (TypeError, ValueError) as e:
        raise ExportError(f"{model_dir / 'config.json'}: bad value ({e})") from None
    checkpoint = Checkpoint(model_dir)
    plan, notes = _plan_tensors(checkpoint, hp)
    try:
        vocab = load_vocab(model_dir, hp.vocab_size)
    except TokenizerError as e:
        raise ExportError(str(e)) from None
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        raise ExportError(f"{model_dir}: unexpected tokenizer file layout ({type(e).__name__}: {e})") from None
    notes += vocab.notes
    if hp.sliding_window and hp.sliding_window < hp.context_length:
        notes.append(
            f"sliding_window={hp.sliding_window} is not exported (llama.cpp's {hp.arch} attends "
            f"to the whole context): outputs differ past {hp.sliding_window} tokens"
        )

    direct = quant if quant in ("f32", "f16") else "f32"
    fallbacks: list[dict] = []
    quant_error = None
    try:
        with atomic_path(out_path) as final:
            if quant == direct:
                _write_gguf(final, hp, vocab, checkpoint, plan, direct, progress)
            else:
                from edgeagent import quantize

                with temp_file_next_to(out_path, f".{direct}") as unquantized:
                    _write_gguf(unquantized, hp, vocab, checkpoint, plan, direct, progress)
                    quantize.quantize(unquantized, final, quant, threads=threads)
                    if measure_error:
                        quant_error = quantize.logit_error(unquantized, final, threads=threads)
                fallbacks = quantize.find_fallbacks(final, quant)
                if fallbacks:  # one line for them all (``fallbacks`` keeps each tensor)
                    msg = _fallback_summary(fallbacks, quant)
                    notes.append(msg)
                    warnings.warn(msg, stacklevel=2)
            tensor_types = _tensor_type_counts(final)
    except ExportError:
        raise
    except (OSError, ValueError, RuntimeError) as e:
        raise ExportError(f"writing {out_path}: {e}") from None

    return ExportResult(
        path=str(out_path),
        quant=quant,
        arch=hp.arch,
        model_type=hp.model_type,
        file_type=_file_type(quant),
        n_params=sum(math.prod(p.shape) for p in plan),
        size_bytes=out_path.stat().st_size,
        tokenizer=vocab.model + (f"/{vocab.pre}" if vocab.pre else ""),
        tensor_types=tensor_types,
        fallbacks=fallbacks,
        warnings=notes,
        quant_error=quant_error,
        seconds=round(time.perf_counter() - started, 3),
    )


def _read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ExportError(f"{path}: missing (not a Hugging Face model directory?)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return config


def _plan_tensors(checkpoint: Checkpoint, hp: Hparams) -> tuple[list[_TensorPlan], list[str]]:
    """Map every checkpoint tensor to its GGUF name and check shapes, before writing a byte."""
    plan: dict[str, _TensorPlan] = {}
    notes: list[str] = []
    for hf_name in sorted(checkpoint.names(), key=_natural_key):
        name = gguf_name(hf_name, hp.model_type)
        if name is None:
            continue
        if name == "output.weight" and hp.tie_word_embeddings:
            # Tied checkpoints sometimes save the copy too; llama.cpp ties by its absence.
            notes.append("lm_head.weight is a copy of the tied embedding; not exported")
            continue
        shape = checkpoint.shape(hf_name)
        expected = hp.expected_shape(name)
        if expected is not None and shape != expected:
            raise ExportError(f"tensor {hf_name!r} has shape {list(shape)}, config.json implies {list(expected)}")
        if name.startswith("blk.") and int(name.split(".")[1]) >= hp.block_count:
            raise ExportError(f"tensor {hf_name!r} is beyond num_hidden_layers={hp.block_count}")
        heads = None
        if hp.arch == "llama" and name.split(".")[-2] in ("attn_q", "attn_k"):
            heads = hp.head_count if ".attn_q." in name else hp.head_count_kv
        plan[name] = _TensorPlan(name, hf_name, shape, heads)

    required = ["token_embd.weight", "output_norm.weight"]
    if not hp.tie_word_embeddings:
        required.append("output.weight")
    per_block = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    for bid in range(hp.block_count):
        required += [f"blk.{bid}.{t}.weight" for t in per_block]
        if hp.arch == "qwen2":
            required += [f"blk.{bid}.{t}.bias" for t in ("attn_q", "attn_k", "attn_v")]
    missing = [n for n in required if n not in plan]
    if missing:
        raise ExportError(f"checkpoint lacks {len(missing)} tensor(s) the {hp.model_type} graph needs, e.g. {missing[0]}")

    if hp.rope_scaling is not None:
        kind = hp.rope_scaling["rope_type"]
        if kind == "llama3":
            plan["rope_freqs.weight"] = _TensorPlan("rope_freqs.weight", None, (hp.head_dim // 2,), None)
        elif kind != "linear":
            raise ExportError(f"config.json: rope scaling type {kind!r} is not supported (supported: linear, llama3)")

    # llama.cpp reads tensors by name, the order only matters to people reading the file.
    return sorted(plan.values(), key=lambda p: _natural_key(p.gguf_name)), notes


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _tensor_data(plan: _TensorPlan, checkpoint: Checkpoint, hp: Hparams, dtype: type) -> np.ndarray:
    if plan.hf_name is None:
        return llama3_rope_factors(hp)
    data = checkpoint.load(plan.hf_name)
    if not np.isfinite(data).all():
        raise ExportError(f"tensor {plan.hf_name!r} contains NaN or Inf values (corrupt checkpoint?)")
    if plan.permute_heads is not None:
        data = permute_rotary(data, plan.permute_heads)
    # Norms, biases and RoPE factors stay F32 in every file type, as llama.cpp expects.
    return np.ascontiguousarray(data.astype(dtype if data.ndim > 1 else np.float32))


def _write_gguf(
    path: Path,
    hp: Hparams,
    vocab: Vocab,
    checkpoint: Checkpoint,
    plan: list[_TensorPlan],
    quant: str,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Stream the tensors into `path` one at a time (peak memory: one tensor, not the model)."""
    dtype = np.float16 if quant == "f16" else np.float32
    writer = gguf.GGUFWriter(path, hp.arch)
    write_hparams(writer, hp, _file_type(quant))
    write_vocab(writer, vocab)
    for p in plan:
        out_dtype = np.dtype(dtype if len(p.shape) > 1 else np.float32)
        writer.add_tensor_info(p.gguf_name, p.shape, out_dtype, math.prod(p.shape) * out_dtype.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    try:
        for i, p in enumerate(plan):
            writer.write_tensor_data(_tensor_data(p, checkpoint, hp, dtype))
            if progress is not None:
                progress(i + 1, len(plan))
    finally:
        writer.close()


def _file_type(quant: str) -> int:
    return {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
        "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M,
        "q5_k_m": gguf.LlamaFileType.MOSTLY_Q5_K_M,
        "q6_k": gguf.LlamaFileType.MOSTLY_Q6_K,
    }[quant]


def _tensor_type_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in gguf.GGUFReader(path).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def _fallback_summary(fallbacks: list[dict], quant: str) -> str:
    """One line for the tensors llama.cpp stored in another type than ``quant`` asks for:
    how many, their row sizes, the block size the quant needs and each type it chose, counted
    ("N tensors have rows of 576, not a multiple of 256 as q4_k_m needs: llama.cpp stored them
    as Q5_0 (n), Q8_0 (m)")."""
    from collections import Counter

    rows = sorted({fb["row_size"] for fb in fallbacks})
    blocks = sorted({fb["block_size"] for fb in fallbacks})
    got = Counter(fb["got"] for fb in fallbacks)
    return (f"{len(fallbacks)} tensor{'s have' if len(fallbacks) != 1 else ' has'} rows of "
            f"{', '.join(map(str, rows))}, not a multiple of {', '.join(map(str, blocks))} as {quant} needs: "
            f"llama.cpp stored {'them' if len(fallbacks) != 1 else 'it'} as "
            + ", ".join(f"{t} ({n})" for t, n in got.most_common()))
