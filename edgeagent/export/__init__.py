"""Writing what the runtime runs, torch-free: a Hugging Face checkpoint as one GGUF
(``hf_to_gguf``, with the tokenizer as llama.cpp reads it, ``tokenizer``), an early exit as a
GGUF of its own (``exit_pack``) and a bundle of variants with its manifest (``bundle``).

Numpy, safetensors, gguf-py and llama.cpp only, so the runtime builds the built-in model's
files, calibration's probe models and the benches' exit variants itself; the converter
(``converters``) uses the same code after training.
"""
