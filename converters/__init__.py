"""HF model -> phone bundle: QLoRA fine-tune, early-exit heads, MHA->GQA, training data and
the ``convert`` pipeline.

Needs the ``convert`` extra (torch, transformers, peft, bitsandbytes, accelerate). The
torch-free steps it ends with (GGUF export, exit packing, bundle writing) live in the
runtime, ``edgeagent.export``.
"""
