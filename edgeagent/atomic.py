"""Atomic writes: a reader sees the old file (or directory) or the new one, never half of one.

Everything the project writes in place goes through here: reports, traces, GGUF files,
manifests, checkpoints, model directories. A file is written to a temp file in the same
directory (so the final ``os.replace`` is a rename on one file system), flushed to disk, given
the mode a plain new file would get (``mkstemp`` makes it private) and renamed over the
target. A directory is filled next to its place and swapped in whole; the old one is moved
aside first and removed after. When the writing raises (or the process is interrupted by an
exception such as KeyboardInterrupt) the temp file or directory is removed and the old one is
left as it was.

Torch-free on purpose: the converter's ``torch.save`` checkpoints use ``atomic_path`` with
their own writer.

    write_text(path, text)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def temp_file_next_to(path: str | os.PathLike, tag: str = "") -> Iterator[Path]:
    """An empty temp file in ``path``'s directory (``.NAME.<random><tag>.tmp``), removed when
    the block ends unless it was renamed away. For intermediate files (e.g. an f32 GGUF that is
    quantized into the final one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{tag}.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp file next to ``path`` for the block to write (by name: ``torch.save``,
    safetensors, ``GGUFWriter``...). When the block ends without an exception the temp file is
    synced and renamed over ``path``; when it raises, it is removed and ``path`` is untouched."""
    path = Path(path)
    with temp_file_next_to(path) as tmp:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """``data`` as the whole content of ``path``, atomically. Returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """``text`` as the whole content of ``path``, atomically. Returns the path."""
    return write_bytes(path, text.encode(encoding))


def temp_dir_next_to(out_dir: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A fresh directory next to ``out_dir`` to fill before ``swap_dir_in``. Its name carries
    the writing process's id (``.OUT.<pid>.<random><suffix>``), so the leftovers of a killed
    run can be told from a live writer's (``edgeagent.export.bundle.remove_stale_staging``)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{os.getpid()}.", suffix=suffix, dir=out_dir.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; give it a normal directory's mode
    return tmp


def swap_dir_in(tmp: Path, out_dir: str | os.PathLike) -> Path:
    """Rename the finished ``tmp`` to ``out_dir``; an old ``out_dir`` is moved aside to
    ``.OUT.old.<pid>`` first and removed after, so ``out_dir`` is never half written."""
    out_dir = Path(out_dir)
    old = None
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir}: exists and is not a directory")
        old = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


@contextmanager
def atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """A directory for the block to fill, swapped in as ``out_dir`` when the block ends without
    an exception; removed (and ``out_dir`` untouched) when it raises."""
    tmp = temp_dir_next_to(out_dir)
    try:
        yield tmp
        swap_dir_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
