"""Quantize a GGUF with llama.cpp's own quantizer, and say what it really did.

llama.cpp picks the type of every tensor itself (Q4_K_M keeps some tensors at Q6_K, norms at
F32) and silently falls back to another type when a tensor's row size is not a multiple of
the block size (256 for K-quants). `find_fallbacks` reads the result back so that a fallback
is reported, never silent. `logit_error` measures how far the quantized model's logits are
from the F32 model's on the same tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeagent.shapes import GGML_BLOCK, read_gguf_meta

# quant name -> (llama.h's llama_ftype, as llama-cpp-python names it; the ggml type most tensors
# are meant to get). Names, not gguf-py's enums: the agent checks a quant name on every start,
# and gguf-py would cost a runtime process ~4.6 MB.
QUANT_TYPES: dict[str, tuple[str, str]] = {
    "q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", "Q8_0"),
    "q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", "Q4_0"),
    "q4_k_m": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", "Q4_K"),
    "q5_k_m": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", "Q5_K"),
    "q6_k": ("LLAMA_FTYPE_MOSTLY_Q6_K", "Q6_K"),
}

# A short text with words, digits, punctuation, CJK and emoji: what quant error is measured on.
SAMPLE_TEXT = (
    "The phone's battery was at 41% when the agent opened Settings > Display and set the "
    "brightness to 30. 然后它打开了相机应用。 Total: 3 taps, 2 swipes 👍 — done in 12.5 s."
)


def quantize(src: Path, dst: Path, quant: str, threads: int | None = None) -> None:
    """llama_model_quantize(src -> dst) to the named type; raises RuntimeError on failure."""
    import llama_cpp
    from llama_cpp import _logger

    ftype = getattr(llama_cpp, QUANT_TYPES[quant][0])
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = threads or os.cpu_count() or 1
    _logger.set_verbose(False)  # llama.cpp prints one line per tensor otherwise
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize to {quant} failed (code {rc})")


def find_fallbacks(path: Path, quant: str) -> list[dict]:
    """Tensors whose row size the intended type cannot take, with the type llama.cpp used."""
    block_size = GGML_BLOCK[QUANT_TYPES[quant][1]][0]
    out = []
    for t in read_gguf_meta(path).tensors:
        row_size = int(t.shape[0])  # GGUF order: ne0 (the row) first
        if len(t.shape) >= 2 and row_size % block_size != 0:
            out.append(
                {
                    "tensor": t.name,
                    "row_size": row_size,
                    "block_size": block_size,
                    "quant": quant,
                    "got": t.ggml_type,
                }
            )
    return out


def all_logits(model_path: Path, tokens: list[int], threads: int | None = None) -> np.ndarray:
    """llama.cpp's logits at every position, with an F32 KV cache (the F16 default alone
    adds ~1e-3 relative error, which would hide what the weights do)."""
    llm = _load_for_logits(model_path, len(tokens), threads)
    try:
        return _eval_logits(llm, tokens)
    finally:
        llm.close()


def logit_error(reference: Path, quantized: Path, text: str = SAMPLE_TEXT, threads: int | None = None) -> dict:
    """How far `quantized`'s logits are from `reference`'s on `text` (both run by llama.cpp)."""
    llm = _load_for_logits(reference, 128, threads)
    try:
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=True)[:96]
        ref = _eval_logits(llm, tokens)
    finally:
        llm.close()
    return compare_logits(ref, all_logits(quantized, tokens, threads))


def _load_for_logits(model_path: Path, n_tokens: int, threads: int | None):
    from edgeagent.llama import kv_type_id, load_llama

    f32 = kv_type_id("f32")
    return load_llama(
        model_path,
        n_ctx=max(64, n_tokens + 8),
        n_batch=max(64, n_tokens),
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=True,
        type_k=f32,
        type_v=f32,
    )


def _eval_logits(llm, tokens: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def compare_logits(ref: np.ndarray, got: np.ndarray) -> dict:
    """Error of `got` against `ref` (positions x vocab): absolute, relative, top-1, KL."""
    diff = got.astype(np.float64) - ref.astype(np.float64)
    ref_centered = ref - ref.mean(axis=-1, keepdims=True)

    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        x = x - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

    lp, lq = log_softmax(ref), log_softmax(got)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    return {
        "positions": int(ref.shape[0]),
        "max_abs_diff": float(np.abs(diff).max()),
        "mean_abs_diff": float(np.abs(diff).mean()),
        "rel_rms": float(np.sqrt((diff**2).mean()) / max(np.sqrt((ref_centered**2).mean()), 1e-12)),
        "top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean()),
        "mean_kl": float(kl.mean()),
    }
