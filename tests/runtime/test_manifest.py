"""The bundle manifest as one typed contract (edgeagent.bundle.Manifest): the writer builds and
validates it (edgeagent.export.bundle.make_manifest / write_manifest), the reader validates the
same model (load_bundle); a bundle written before keeps loading, and a bad manifest is one line
naming the file and the key, at the writer and at the command line (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeagent.agent.prompt import SYSTEM_TEXT, PromptFormat
from edgeagent.bundle import MANIFEST, BundleError, Manifest, load_bundle, sha256_file
from edgeagent.export.bundle import make_manifest, write_manifest

REPO = Path(__file__).resolve().parents[2]
CHAT = PromptFormat(kind="chat", chat_template="{{ messages[0]['content'] }}", bos_token="<s>", eos_token="</s>",
                    layout="episode", system=SYSTEM_TEXT)


def _variant(root: Path, vid: str = "m-q8_0", **extra) -> dict:
    f = root / f"{vid}.gguf"
    f.write_bytes(os.urandom(64))
    return {"id": vid, "quant": "q8_0", "exit_layer": 2, "n_layers": 2, "path": f.name, "sha256": sha256_file(f),
            "size_bytes": 64, "quality": {"perplexity": 2.5, "source": "measured"}, **extra}


def test_written_manifest_loads_with_every_key_kept(tmp_path):
    root = tmp_path / "b"
    root.mkdir()
    manifest = make_manifest([_variant(root, chance_nll=10.8)], source_model={"name": "m", "n_layers": 2},
                             prompt_format=CHAT, tokenizer={"class": "T"}, measurements={"timings_s": {"total": 1.5}},
                             profile="snapdragon-8-gen-2")
    assert isinstance(manifest, Manifest)
    write_manifest(root, manifest)
    on_disk = json.loads((root / MANIFEST).read_text())
    assert on_disk == manifest.to_dict()
    assert list(on_disk)[:4] == ["format", "format_version", "created_unix", "created_by"]
    assert on_disk["variants"][0]["chance_nll"] == 10.8  # a key the schema does not declare is kept
    assert "kv_cache_bytes_per_token" not in on_disk["variants"][0]  # nothing added that was not given
    bundle = load_bundle(root)
    assert bundle.manifest == on_disk and bundle.prompt_format == CHAT
    assert (bundle.variants[0].id, bundle.variants[0].quality["perplexity"]) == ("m-q8_0", 2.5)


def test_bundles_written_before_load_unchanged(tmp_path):
    """The built-in model's bundle (written by the previous code, cached) and a manifest with
    only the keys the first format had both load and re-serialize to what is on disk."""
    pytest.importorskip("llama_cpp")
    from edgeagent.builtin import builtin_bundle

    cached = builtin_bundle(threads=1)
    on_disk = json.loads((cached / MANIFEST).read_text())
    assert Manifest.model_validate(on_disk).to_dict() == on_disk
    assert load_bundle(cached).manifest == on_disk

    root = tmp_path / "old"
    root.mkdir()
    oldest = {"format": "edgeagent-bundle", "format_version": 1, "variants": [_variant(root)]}
    (root / MANIFEST).write_text(json.dumps(oldest))
    bundle = load_bundle(root)
    assert bundle.prompt_format == PromptFormat() and bundle.manifest == oldest


def test_the_writer_refuses_a_malformed_manifest_naming_the_key(tmp_path):
    root = tmp_path / "b"
    root.mkdir()
    broken = {k: v for k, v in _variant(root).items() if k != "sha256"}
    with pytest.raises(BundleError, match=r"^manifest.json: variants\[0\].sha256: field required$"):
        make_manifest([broken], source_model={}, prompt_format=PromptFormat(), tokenizer={}, measurements={},
                      profile=None)
    good = make_manifest([_variant(root)], source_model={}, prompt_format=PromptFormat(), tokenizer={},
                         measurements={}, profile=None).to_dict()
    good["variants"][0]["exit_layer"] = 3
    with pytest.raises(BundleError, match=rf"^{root / MANIFEST}: variants\[0\]: .*exit_layer 3 is not within"):
        write_manifest(root, good)
    assert not (root / MANIFEST).exists()  # nothing written


def test_a_bad_manifest_is_one_line_and_exit_2_at_the_command_line(tmp_path):
    root = tmp_path / "b"
    root.mkdir()
    entry = _variant(root)
    entry["size_bytes"] = "64"
    (root / MANIFEST).write_text(json.dumps({"format": "edgeagent-bundle", "format_version": 1, "variants": [entry]}))
    for args in (["run", "--task", "Open Clock", "--bundle", str(root)],
                 ["select", "--bundle", str(root), "--profile", "snapdragon-8-gen-2"]):
        proc = subprocess.run([sys.executable, "-m", "edgeagent.cli", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert f"{root.resolve() / MANIFEST}: variants[0].size_bytes" in lines[0] and "Traceback" not in proc.stderr
