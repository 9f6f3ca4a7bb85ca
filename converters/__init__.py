"""HF model -> phone bundle: GGUF export, quantization, QLoRA, early exit, GQA.

Needs the ``convert`` extra (torch, transformers, peft, bitsandbytes, accelerate) for
training; the GGUF exporter itself reads safetensors with numpy.
"""
