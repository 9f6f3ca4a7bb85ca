"""Stock llama.cpp: its own tools, built from the very source llama-cpp-python vendors.

llama-cpp-python ships llama.cpp as a library only; its source distribution on PyPI carries the
whole llama.cpp tree it was built from (``vendor/llama.cpp``: ``tools/llama-bench``,
``examples/simple``, ``tools/completion``, ``convert_hf_to_gguf.py``). ``build_stock`` turns
that tree into stock binaries, so the project's GGUF files can be checked in llama.cpp's own
programs and the engine measured beside ``llama-bench`` on the same llama.cpp:

1. ``pip download --no-deps --no-binary :all: llama-cpp-python==<installed version>``;
2. which llama.cpp it is (``source_info``): the sdist has no git metadata, so the tree's own
   build info says build 0, commit "unknown"; llama-cpp-python's CHANGELOG names the llama.cpp
   commit each release moved to ("update llama.cpp to ggml-org/llama.cpp@<hash>"), and that
   hash is passed to cmake as ``LLAMA_BUILD_COMMIT`` (so ``llama-bench`` reports it);
3. cmake (Ninja when installed, else make), one job, static, the target's native flags plus
   ``$CMAKE_ARGS`` (what ``pip install`` passed to llama-cpp-python's build):
   ``llama-bench``, ``llama-simple`` and ``llama-completion`` (llama.cpp's former ``main``;
   today's ``llama-cli`` needs the server library and is not built);
4. the binaries, ``build.json`` and the conversion script (``convert_hf_to_gguf.py`` with its
   ``conversion/`` and ``gguf-py/``) are assembled in a temp directory and renamed to
   ``~/.cache/edgeagent/stock-llama.cpp/<version>/``: a second call finds them at once, a
   failed build leaves only its log (``last-build.log`` beside the builds).

Also here: generating from a GGUF in stock llama.cpp (``generate``) and comparing two GGUF files'
metadata and tensors (``compare_gguf``), what the stock-compatibility test checks.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

PACKAGE = "llama-cpp-python"
TOOLS = ("llama-bench", "llama-simple", "llama-completion")
# What the conversion script needs next to it (it imports ``conversion`` and, unless
# NO_LOCAL_GGUF is set, the ``gguf`` of ``gguf-py``).
CONVERTER_FILES = ("convert_hf_to_gguf.py", "conversion", "gguf-py")
BUILD_INFO = "build.json"


class StockError(RuntimeError):
    """Stock llama.cpp cannot be built or run here; the message is one line saying why."""


def stock_root() -> Path:
    from edgeagent.builtin import cache_dir

    return cache_dir() / "stock-llama.cpp"


def installed_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        raise StockError(f"{PACKAGE} is not installed (pip install {PACKAGE})") from None


@dataclass(frozen=True)
class StockBuild:
    """A finished build: ``dir/bin/<tool>``, ``dir/src/convert_hf_to_gguf.py``, ``dir/build.json``."""

    dir: Path
    info: dict

    def tool(self, name: str) -> Path:
        return self.dir / "bin" / name

    @property
    def convert_script(self) -> Path:
        return self.dir / "src" / "convert_hf_to_gguf.py"

    def describe(self) -> str:
        """One line: which llama.cpp this is."""
        src = self.info["source"]
        commit = (f"commit {src['commit']} (named by the CHANGELOG; the source has no git metadata)" if src["commit"]
                  else "no commit hash in the source")
        return f"llama.cpp {src['llama_cpp_version']} (ggml {src['ggml_version']}), {commit}, vendored by {PACKAGE} {self.info['version']}"


def cached_build(version: str | None = None, root: Path | None = None) -> StockBuild | None:
    """The finished build for ``version`` (default: the installed llama-cpp-python), or None."""
    version = version or installed_version()
    path = (root or stock_root()) / version
    try:
        info = json.loads((path / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    build = StockBuild(path, info)
    return build if all(build.tool(t).is_file() for t in info.get("tools", TOOLS)) else None


def missing_toolchain() -> str | None:
    """What is missing to build llama.cpp here (None: cmake, a C and a C++ compiler and a
    build tool are on PATH)."""
    needs = {"cmake": ("cmake",), "a C compiler": ("cc", "gcc", "clang"),
             "a C++ compiler": ("c++", "g++", "clang++"), "ninja or make": ("ninja", "make")}
    missing = [what for what, names in needs.items() if not any(shutil.which(n) for n in names)]
    return ", ".join(missing) or None


def source_info(tree: Path, version: str, changelog: Path | None) -> dict:
    """Which llama.cpp the vendored ``tree`` is: versions from its CMake files, the build
    number and commit its build info states, and the commit the CHANGELOG names for ``version``."""
    def cmake_set(path: Path, names: tuple[str, ...]) -> str:
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        parts = [re.search(rf"set\({n}\s+\"?([^\s\")]+)", text) for n in names]
        return ".".join(m.group(1) for m in parts if m) or "unknown"

    build_info = tree / "cmake" / "build-info.cmake"
    info = {
        "llama_cpp_version": cmake_set(tree / "CMakeLists.txt", ("LLAMA_VERSION_MAJOR", "LLAMA_VERSION_MINOR",
                                                                  "LLAMA_VERSION_PATCH")),
        "ggml_version": cmake_set(tree / "ggml" / "CMakeLists.txt", ("GGML_VERSION_MAJOR", "GGML_VERSION_MINOR",
                                                                      "GGML_VERSION_PATCH")),
        "tree_build_number": cmake_set(build_info, ("BUILD_NUMBER",)),
        "tree_commit": cmake_set(build_info, ("BUILD_COMMIT",)),
        "tree_has_git": (tree / ".git").is_dir(),
        "commit": None,
        "commit_from": "none: the sdist has no git metadata and the CHANGELOG names no llama.cpp commit",
    }
    if changelog is not None and changelog.is_file():
        commit = changelog_commit(changelog.read_text(encoding="utf-8", errors="replace"), version)
        if commit:
            info["commit"] = commit
            info["commit_from"] = (f"{PACKAGE}'s CHANGELOG.md, the latest 'update llama.cpp' at or before {version}; "
                                   "the tree itself has no git metadata (build 0, commit unknown)")
    return info


def changelog_commit(changelog: str, version: str) -> str | None:
    """The llama.cpp commit of ``version``: the first ``llama.cpp@<hash>`` from its section down
    (a release without an update of its own vendors the one before)."""
    start = re.search(rf"^## \[{re.escape(version)}\]", changelog, re.M)
    if start is None:
        return None
    found = re.search(r"llama\.cpp@([0-9a-f]{7,40})\b", changelog[start.end():])
    return found.group(1) if found else None


def build_stock(version: str | None = None, *, root: Path | None = None,
                log: Callable[[str], None] | None = None) -> StockBuild:
    """The stock build for ``version`` (default: the installed llama-cpp-python): the cached
    one, or built now (one compile job: 6 to 50 minutes on this project's 2-core host, by load).
    Raises ``StockError`` (one line)."""
    version = version or installed_version()
    root = root or stock_root()
    found = cached_build(version, root)
    if found is not None:
        return found
    missing = missing_toolchain()
    if missing:
        raise StockError(f"cannot build stock llama.cpp: no {missing} on PATH (on Debian/Ubuntu: "
                         "sudo apt-get install build-essential cmake ninja-build)")
    say = log or (lambda _msg: None)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{version}-{os.getpid()}-", dir=root))
    build_log = work / "build.log"
    try:
        tree, changelog = _download(version, work, build_log, say)
        info = {"version": version, "source": source_info(tree, version, changelog)}
        info["cmake_args"], seconds = _compile(tree, work / "build", info["source"]["commit"], build_log, say)
        out = work / "out"
        (out / "bin").mkdir(parents=True)
        for tool in TOOLS:
            shutil.copy2(work / "build" / "bin" / tool, out / "bin" / tool)
        (out / "src").mkdir()
        for name in CONVERTER_FILES:
            (shutil.copytree if (tree / name).is_dir() else shutil.copy2)(tree / name, out / "src" / name)
        if changelog is not None:
            shutil.copy2(changelog, out / "src" / "CHANGELOG.md")
        info.update(tools=list(TOOLS), built_unix=int(time.time()), build_seconds=round(seconds),
                    compiler=shutil.which("c++") or shutil.which("g++") or shutil.which("clang++"))
        (out / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(out, root / version)
        except OSError:  # another process finished first: use its build
            pass
        found = cached_build(version, root)
        if found is None:
            raise StockError(f"{root / version}: the build was renamed into place but is incomplete")
        return found
    except StockError as e:
        if not build_log.is_file():
            raise
        shutil.copy2(build_log, root / "last-build.log")
        raise StockError(f"{e}; full log: {root / 'last-build.log'}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_logged(cmd: list[str], log: Path, what: str, cwd: Path | None = None, timeout: float | None = None) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except (OSError, subprocess.TimeoutExpired) as e:
            f.write(f"{e}\n")
            rc = None
    if rc != 0:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else "no output"
        raise StockError(f"{what} failed ({last[:200]})")


def _download(version: str, work: Path, log: Path, say) -> tuple[Path, Path | None]:
    """pip download + unpack; (the vendored llama.cpp tree, the CHANGELOG or None)."""
    say(f"downloading the {PACKAGE}=={version} source from PyPI (pip download)")
    dl = work / "dl"
    _run_logged([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                 f"{PACKAGE}=={version}", "-d", str(dl)], log,
                f"downloading the {PACKAGE}=={version} source (pip download; no network to PyPI?)", timeout=900)
    archives = sorted(dl.glob("*.tar.gz"))
    if not archives:
        raise StockError(f"pip download of {PACKAGE}=={version} gave no source archive")
    with tarfile.open(archives[0]) as tar:
        # the "data" filter (no absolute paths, links out of the tree, devices) where Python has it (3.11.4+)
        tar.extractall(work / "src", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    tops = [p for p in (work / "src").iterdir() if p.is_dir()]
    tree = tops[0] / "vendor" / "llama.cpp" if len(tops) == 1 else None
    if tree is None or not (tree / "tools" / "llama-bench").is_dir():
        raise StockError(f"the {PACKAGE}=={version} source has no vendor/llama.cpp/tools/llama-bench")
    changelog = tops[0] / "CHANGELOG.md"
    return tree, changelog if changelog.is_file() else None


def _compile(tree: Path, build: Path, commit: str | None, log: Path, say) -> tuple[list[str], float]:
    started = time.perf_counter()
    args = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF"]
    if commit:
        args.append(f"-DLLAMA_BUILD_COMMIT={commit}")
    args += shlex.split(os.environ.get("CMAKE_ARGS", ""))
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    say(f"building {', '.join(TOOLS)} with one job (6 to 50 minutes on 2 cores, by load); log: {log}")
    _run_logged(["cmake", "-S", str(tree), "-B", str(build), *generator, *args], log, "configuring llama.cpp (cmake)")
    _run_logged(["cmake", "--build", str(build), "-j", "1", "--target", *TOOLS], log, "compiling llama.cpp")
    return args, time.perf_counter() - started


# ---------------------------------------------------------------------------------------
# running the stock tools


def generate(build: StockBuild, model: Path, prompt: str, n_predict: int = 8, *, repack: bool | None = None,
             timeout: float = 300, attempts: int = 3) -> dict:
    """Greedy generation of ``n_predict`` tokens after ``prompt`` in stock llama.cpp.

    With ``repack`` (default: ``edgeagent.llama.default_repack()``, the engine's choice) it is
    ``llama-simple -m MODEL -n N PROMPT``: llama.cpp's default model and context parameters,
    repacking on. Where repacking crashes (x86 with Intel AMX: llama.cpp's AMX buffer segfaults
    on quantized models, ggml-org/llama.cpp#20824, with any model, the package-shipped SmolLM2
    Q4_1 too) it is ``llama-completion --no-repack --temp 0 --ignore-eos``, as llama-simple has no
    such option. llama-completion prints through llama.cpp's log thread, which this llama.cpp
    does not drain at exit (ggml-org/llama.cpp#22142), so the end of its text can be missing
    and, rarely, all of it: an empty output is retried (``attempts``).

    Returns ``tool``, ``ok`` (exit 0 and something generated), ``returncode``, ``tokens``
    (llama-simple's own count; None for llama-completion), ``output`` (stdout: llama-simple
    echoes the prompt first, special tokens rendered) and the tail of stderr."""
    from edgeagent.llama import default_repack

    repack = default_repack() if repack is None else repack
    if repack:
        tool = "llama-simple"
        cmd = [str(build.tool(tool)), "-m", str(model), "-n", str(n_predict), prompt]
    else:
        tool = "llama-completion --no-repack"
        cmd = [str(build.tool("llama-completion")), "-m", str(model), "-p", prompt, "-n", str(n_predict), "--temp", "0",
               "--ignore-eos", "-no-cnv", "--no-repack", "--no-display-prompt", "--simple-io", "--no-warmup", "-t", "1"]
    for _ in range(attempts if not repack else 1):
        try:
            proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            return {"tool": tool, "ok": False, "returncode": None, "tokens": 0, "output": "", "stderr": str(e)}
        out = proc.stdout.decode("utf-8", errors="replace")
        if proc.returncode != 0 or out.strip():
            break
    err = proc.stderr.decode("utf-8", errors="replace")
    decoded = re.search(r"decoded (\d+) tokens", err)
    tokens = int(decoded.group(1)) if decoded else None
    generated = bool(tokens) if repack else bool(out.strip())
    return {"tool": tool, "ok": proc.returncode == 0 and generated, "returncode": proc.returncode, "tokens": tokens,
            "output": out.rstrip("\n"), "stderr": "\n".join(err.strip().splitlines()[-5:])}


# ---------------------------------------------------------------------------------------
# two GGUF files side by side

# Differences between the project's file and llama.cpp's converter's that change nothing llama.cpp
# computes, each with why and when (a test on both files' metadata). Anything else that differs
# (architecture, hyperparameters, RoPE, tokenizer, tensor names, shapes or types) matters.
NAMING = ("name", "basename", "finetune", "size_label", "type", "version", "organization", "license", "languages",
          "tags", "description", "quantized_by", "url", "repo_url", "author", "datasets")


def _absent_or(default: Any):
    """Allowed when one side leaves the key out and the other writes llama.cpp's default."""
    return lambda x, y, _a, _b: (x == "<absent>" and y == default) or (y == "<absent>" and x == default)


def _head_dim(x, y, a: dict, b: dict) -> bool:
    """key_length/value_length left out: llama.cpp uses embedding_length / head_count."""
    kv = a if x != "<absent>" else b
    value = x if x != "<absent>" else y
    arch = kv.get("general.architecture")
    try:
        return "<absent>" in (x, y) and value == kv[f"{arch}.embedding_length"] // kv[f"{arch}.attention.head_count"]
    except (KeyError, TypeError, ZeroDivisionError):
        return False


ALLOWED_DIFFERENCES: dict[str, tuple[str, Callable[[Any, Any, dict, dict], bool]]] = {
    **{f"general.{k}": ("naming and provenance, never read to build the model; each writer takes it from "
                        "different places (directory name, config, model card)", lambda *_: True) for k in NAMING},
    "general.quantization_version": ("only meaningful for quantized tensors; written by whichever step quantized",
                                     lambda *_: True),
    "tokenizer.ggml.add_eos_token": ("false is llama.cpp's default for a gpt2 (BPE) vocabulary: written or left out, "
                                     "no end-of-sequence token is added", _absent_or(False)),
    "tokenizer.ggml.add_space_prefix": ("false is llama.cpp's default for a gpt2 (BPE) vocabulary", _absent_or(False)),
    "{arch}.attention.key_length": ("left out, llama.cpp takes embedding_length / head_count: the value the other "
                                    "file writes", _head_dim),
    "{arch}.attention.value_length": ("left out, llama.cpp takes embedding_length / head_count: the value the "
                                      "other file writes", _head_dim),
}


def gguf_summary(path: Path) -> dict:
    """``{"kv": {key: value}, "tensors": {name: (shape, type name)}}`` of a GGUF (gguf-py)."""
    import gguf

    reader = gguf.GGUFReader(path)
    kv = {}
    for field in reader.fields.values():
        if field.name.startswith("GGUF."):
            continue
        value = field.contents()
        kv[field.name] = value
    tensors = {t.name: (tuple(int(d) for d in t.shape), t.tensor_type.name) for t in reader.tensors}
    return {"kv": kv, "tensors": tensors}


def compare_gguf(ours: Path | dict, theirs: Path | dict, *, explained: dict[str, str] | None = None) -> list[dict]:
    """Every difference between two GGUF files' metadata and tensors (name, shape, type): one
    dict per difference with ``what`` (``kv KEY`` or ``tensor NAME``), ``ours``, ``theirs``,
    ``allowed`` and ``reason``. A difference is allowed when ``ALLOWED_DIFFERENCES`` explains it
    (its condition holds), or ``explained`` (``what`` -> reason) does: what a caller has
    checked itself, e.g. two pre-tokenizer names that tokenize alike."""
    a = ours if isinstance(ours, dict) else gguf_summary(ours)
    b = theirs if isinstance(theirs, dict) else gguf_summary(theirs)
    arch = a["kv"].get("general.architecture")
    rules = {key.replace("{arch}", str(arch)): rule for key, rule in ALLOWED_DIFFERENCES.items()}
    explained = explained or {}
    diffs = []
    for key in sorted(set(a["kv"]) | set(b["kv"])):
        x, y = a["kv"].get(key, "<absent>"), b["kv"].get(key, "<absent>")
        if _same(x, y):
            continue
        rule = rules.get(key)
        reason = rule[0] if rule and rule[1](x, y, a["kv"], b["kv"]) else explained.get(f"kv {key}")
        diffs.append(_difference(f"kv {key}", x, y, reason))
    for name in sorted(set(a["tensors"]) | set(b["tensors"])):
        x, y = a["tensors"].get(name, "<absent>"), b["tensors"].get(name, "<absent>")
        if x != y:
            diffs.append(_difference(f"tensor {name}", x, y, explained.get(f"tensor {name}")))
    return diffs


def _difference(what: str, ours: Any, theirs: Any, reason: str | None) -> dict:
    return {"what": what, "ours": _short(ours), "theirs": _short(theirs), "allowed": reason is not None,
            "reason": reason or "matters: llama.cpp reads it to build the model or its tokenizer"}


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, float) or isinstance(y, float):
        try:
            return abs(float(x) - float(y)) <= 1e-6 * max(1.0, abs(float(x)))
        except (TypeError, ValueError):
            return False
    return x == y


def _short(value: Any) -> Any:
    """A printable value: long lists as their length and ends, long strings cut."""
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"[{len(value)} items: {', '.join(map(repr, value[:3]))}, ..., {value[-1]!r}]"
    if isinstance(value, str) and len(value) > 120:
        return value[:117] + "..."
    return value
