"""Shared fixtures: one tiny real model and its bundle (f32 + q8_0 GGUFs written by the real
exporter, a manifest written by the converter's writer), built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer llama (hidden 256, vocab 512) with a trained BPE tokenizer."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from converters.tiny import TinyConfig, make_tiny_model

    torch.set_num_threads(1)
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", TinyConfig(arch="llama", seed=11))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model_dir, tmp_path_factory) -> Path:
    """A bundle of the tiny model at f32 and q8_0, full depth, with hand-set quality (the
    two equal, so selection goes to the cheaper one)."""
    pytest.importorskip("llama_cpp")
    from edgeagent.export.bundle import make_manifest, pack_variants, publish, staging_dir, write_manifest
    from edgeagent.bundle import PromptFormat

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    staging = staging_dir(out)
    variants = pack_variants(tiny_model_dir, staging, ["f32", "q8_0"], [2], name="tiny", threads=1)
    for v in variants:
        v["quality"] = {"task_success": 0.5, "tasks": 4, "source": "hand-set for the tests"}
    manifest = make_manifest(variants, source_model={"name": "tiny", "n_layers": 2}, prompt_format=PromptFormat(),
                             tokenizer={}, measurements={}, profile=None)
    write_manifest(staging, manifest)
    return publish(staging, out)
