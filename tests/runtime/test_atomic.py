"""edgeagent.atomic: a write either lands whole or leaves the old file (or directory) as it was,
and no temp file stays behind either way."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgeagent.atomic import atomic_dir, atomic_path, temp_file_next_to, write_bytes, write_text


class Interrupted(Exception):
    pass


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_write_text_replaces_the_whole_file_with_a_plain_file_mode(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old, and longer than the new text")
    assert write_text(target, "new") == target
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
    assert _names(tmp_path) == {"report.html"}


def test_write_bytes_creates_missing_parent_directories(tmp_path):
    target = tmp_path / "a" / "b" / "shot.png"
    write_bytes(target, b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG"


def test_an_interrupted_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"step 100")
    with pytest.raises(Interrupted):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"step 2")  # half of the new checkpoint is on disk...
            raise Interrupted  # ...when the writer dies
    assert target.read_bytes() == b"step 100"
    assert _names(tmp_path) == {"ckpt.pt"}


def test_keyboard_interrupt_is_cleaned_up_too(tmp_path):
    target = tmp_path / "manifest.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise KeyboardInterrupt
    assert not target.exists()
    assert _names(tmp_path) == set()


def test_atomic_path_is_written_by_name_in_the_target_directory(tmp_path):
    target = tmp_path / "model.gguf"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.gguf.") and tmp.name.endswith(".tmp")
        assert not target.exists()  # nothing is visible before the block ends
        tmp.write_bytes(b"GGUF")
    assert target.read_bytes() == b"GGUF"
    assert _names(tmp_path) == {"model.gguf"}


def test_temp_file_next_to_is_removed_whatever_happens(tmp_path):
    with temp_file_next_to(tmp_path / "model.gguf", ".f32") as tmp:
        assert tmp.name.endswith(".f32.tmp") and tmp.exists()
    assert not tmp.exists()
    with pytest.raises(Interrupted):
        with temp_file_next_to(tmp_path / "model.gguf") as tmp:
            raise Interrupted
    assert _names(tmp_path) == set()


def test_atomic_dir_swaps_the_new_directory_in_whole(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.gguf").write_text("old")
    with atomic_dir(out) as tmp:
        (tmp / "new.gguf").write_text("new")
        assert _names(out) == {"old.gguf"}  # the old directory is intact while the new one is written
    assert _names(out) == {"new.gguf"}
    assert _names(tmp_path) == {"bundle"}  # the old directory is gone, no staging left


def test_an_interrupted_directory_write_leaves_the_old_directory(tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "weights").write_text("old")
    with pytest.raises(Interrupted):
        with atomic_dir(out) as tmp:
            (tmp / "weights").write_text("half")
            raise Interrupted
    assert (out / "weights").read_text() == "old"
    assert _names(tmp_path) == {"adapter"}


def test_atomic_dir_refuses_to_replace_a_file(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file, not a model directory")
    with pytest.raises(FileExistsError, match="not a directory"):
        with atomic_dir(out) as tmp:
            (tmp / "config.json").write_text("{}")
    assert out.read_text() == "a file, not a model directory"
    assert _names(tmp_path) == {"out"}
