"""Build a model variant GGUF from a base GGUF and a low-rank delta, torch-free.

The shipped agent is not a 100 MB binary in git: it is the fine-tune's LoRA delta (a few MB)
on top of a base GGUF that a registry package ships (``edgeagent.sources``). At first use this
module writes the merged model once per variant into the user's cache:

1. every tensor of the base is dequantized with gguf-py (``gguf.quants.dequantize``);
2. where the delta has factors for a tensor, ``W + B @ A`` (B already carries alpha/r and
   llama.cpp's row order for the rotary Q/K projections, so this is a plain sum);
3. the result is written as F32 with the base's metadata (tokenizer and chat template
   included), blocks past ``exit_layer`` left out (llama.cpp rejects unused tensors, so a
   shallower exit is its own file), and the exit's own norm and output head where the delta
   has them;
4. llama.cpp's quantizer (``edgeagent.quantize``) makes the Q8_0 / Q4_K_M file.

The delta file is safetensors with numpy-readable tensors named
``<gguf tensor name>.lora_a`` (r x in) and ``.lora_b`` (out x r), plus for an exit at layer k
``exit.<k>.output_norm.weight`` / ``exit.<k>.output.weight`` when that exit has a head of its
own (a shared exit reuses the model's final norm and output), or ``exit.<k>.lens.weight`` (d x d)
for a lens exit: its head is the model's own output matrix (the embedding, when tied) times the
lens, E W, so the delta carries d^2 numbers instead of V x d.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from edgeagent.atomic import atomic_path

_BLOCK = re.compile(r"^blk\.(\d+)\.")


class MergeError(Exception):
    """The base and the delta do not fit together; the message names the tensor."""


def _copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, overrides: dict[str, tuple]) -> None:
    for field in reader.fields.values():
        name = field.name
        if name.startswith("GGUF.") or name == gguf.Keys.General.ARCHITECTURE or name in overrides:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub_type)
    for name, (value, vtype) in overrides.items():
        writer.add_key_value(name, value, vtype)


def merged_tensors(reader: gguf.GGUFReader, delta: dict[str, np.ndarray], exit_layer: int | None,
                   n_layers: int):
    """(name, float32 array) of the merged model, in the base's order."""
    used: set[str] = set()
    exit_norm = exit_out = exit_lens = None
    if exit_layer is not None and exit_layer < n_layers:
        exit_norm = delta.get(f"exit.{exit_layer}.output_norm.weight")
        exit_out = delta.get(f"exit.{exit_layer}.output.weight")
        exit_lens = delta.get(f"exit.{exit_layer}.lens.weight")
        used |= {f"exit.{exit_layer}.output_norm.weight", f"exit.{exit_layer}.output.weight",
                 f"exit.{exit_layer}.lens.weight"}
        if exit_lens is not None and exit_out is not None:
            raise MergeError(f"delta: exit {exit_layer} has both an output matrix and a lens; give one")
    names = {t.name for t in reader.tensors}
    if exit_lens is not None:  # E W from the base's output matrix, or the embedding it is tied to
        unembed = next(t for t in reader.tensors if t.name == ("output.weight" if "output.weight" in names
                                                                 else "token_embd.weight"))
        e = gguf.quants.dequantize(unembed.data, unembed.tensor_type).astype(np.float32, copy=False)
        lens = exit_lens.astype(np.float32)
        if lens.shape != (e.shape[1], e.shape[1]):
            raise MergeError(f"delta: exit.{exit_layer}.lens.weight is {tuple(lens.shape)}, the model's width is "
                             f"{e.shape[1]}: expected ({e.shape[1]}, {e.shape[1]})")
        exit_out = e @ lens
    for t in reader.tensors:
        block = _BLOCK.match(t.name)
        if block and exit_layer is not None and int(block.group(1)) >= exit_layer:
            continue
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        if t.name == "output_norm.weight" and exit_norm is not None:
            w = exit_norm.astype(np.float32)
        elif t.name == "output.weight" and exit_out is not None:
            w = exit_out.astype(np.float32)
        a, b = delta.get(t.name + ".lora_a"), delta.get(t.name + ".lora_b")
        if (a is None) != (b is None):
            raise MergeError(f"delta for {t.name}: lora_a and lora_b must come together")
        if a is not None:
            if b.shape[0] != w.shape[0] or a.shape[1] != w.shape[1] or a.shape[0] != b.shape[1]:
                raise MergeError(f"delta for {t.name}: B{tuple(b.shape)} @ A{tuple(a.shape)} does not fit "
                                 f"the weight {tuple(w.shape)}")
            w = w + b.astype(np.float32) @ a.astype(np.float32)
            used |= {t.name + ".lora_a", t.name + ".lora_b"}
        yield t.name, w
    if exit_out is not None and "output.weight" not in names:  # tied embeddings: the exit's own head
        yield "output.weight", exit_out.astype(np.float32)
    def dropped(key: str) -> bool:  # a block past the exit: its factors have nothing to go into
        block = _BLOCK.match(key)
        return bool(block) and exit_layer is not None and int(block.group(1)) >= exit_layer and key.split(".lora_")[0] in names

    unknown = sorted(k for k in delta if k not in used and not k.startswith("exit.") and not dropped(k))
    if unknown:
        raise MergeError(f"delta has tensors the base has not: {', '.join(unknown[:5])}")


def merge_to_f32(base: Path, delta: dict[str, np.ndarray], out: Path, *, exit_layer: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
    """Write the merged model as an F32 GGUF at ``out`` (atomically)."""
    reader = gguf.GGUFReader(base)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    n_layers = int(reader.fields[f"{arch}.block_count"].contents())
    if exit_layer is not None and not 1 <= exit_layer <= n_layers:
        raise MergeError(f"exit layer {exit_layer} is outside 1..{n_layers}")
    overrides = {"general.file_type": (int(gguf.LlamaFileType.ALL_F32), gguf.GGUFValueType.UINT32)}
    if exit_layer is not None:
        overrides[f"{arch}.block_count"] = (int(exit_layer), gguf.GGUFValueType.UINT32)
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        _copy_metadata(reader, writer, overrides)
        tensors = list(merged_tensors(reader, delta, exit_layer, n_layers))
        for name, w in tensors:
            writer.add_tensor(name, w)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
