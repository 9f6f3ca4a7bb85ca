"""Stock llama.cpp (``edgeagent.stock``, ``edgeagent.stock_bench``, ``edgeagent bench stock``).

Fast, no compiler needed: which llama.cpp a source tree is, the toolchain check, llama-bench's
arguments, a recorded llama-bench JSON (``tests/data/llama_bench_builtin_q8_0.json``: the stock
build on the built-in model's Q8_0, both modes, on this busy host, so its figures describe the
load) turned into the side-by-side rows, the whole ``bench stock`` command against a stand-in
llama-bench replaying that recording, and the rules that say which GGUF metadata differences
are allowed.

Slow (``-m slow``; skipped without a compiler): stock llama.cpp built from the source
llama-cpp-python vendors; every GGUF the project writes loads and generates in it; the
exporter's metadata and tensors against llama.cpp's own ``convert_hf_to_gguf.py`` on the same
checkpoint; a real ``bench stock``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeagent import stock_bench
from edgeagent.cli import app
from edgeagent.stock import (
    StockError, build_stock, changelog_commit, compare_gguf, generate, missing_toolchain, source_info,
)

DATA = Path(__file__).resolve().parents[1] / "data"
RECORDED = DATA / "llama_bench_builtin_q8_0.json"
runner = CliRunner()


# ---------------------------------------------------------------------------------------
# which llama.cpp, and building it


CHANGELOG = """# Changelog

## [Unreleased]

## [0.3.37]

- fix: something

## [0.3.36]

- feat: update llama.cpp to ggml-org/llama.cpp@0c1e57098

## [0.3.35]

- feat: update llama.cpp to ggml-org/llama.cpp@4df29be4f
"""


def test_the_changelog_names_the_vendored_commit() -> None:
    assert changelog_commit(CHANGELOG, "0.3.36") == "0c1e57098"
    assert changelog_commit(CHANGELOG, "0.3.37") == "0c1e57098"  # no update of its own: the one before
    assert changelog_commit(CHANGELOG, "0.3.35") == "4df29be4f"
    assert changelog_commit(CHANGELOG, "9.9.9") is None


def test_source_info_says_where_the_commit_comes_from(tmp_path) -> None:
    tree = tmp_path / "llama.cpp"
    (tree / "cmake").mkdir(parents=True)
    (tree / "ggml").mkdir()
    (tree / "CMakeLists.txt").write_text("set(LLAMA_VERSION_MAJOR 0)\nset(LLAMA_VERSION_MINOR 5)\nset(LLAMA_VERSION_PATCH 0)\n")
    (tree / "ggml" / "CMakeLists.txt").write_text("set(GGML_VERSION_MAJOR 0)\nset(GGML_VERSION_MINOR 25)\n"
                                                  "set(GGML_VERSION_PATCH 3)\n")
    (tree / "cmake" / "build-info.cmake").write_text('set(BUILD_NUMBER 0)\nset(BUILD_COMMIT "unknown")\n')
    (tmp_path / "CHANGELOG.md").write_text(CHANGELOG)
    info = source_info(tree, "0.3.36", tmp_path / "CHANGELOG.md")
    assert (info["llama_cpp_version"], info["ggml_version"]) == ("0.5.0", "0.25.3")
    assert (info["tree_build_number"], info["tree_commit"], info["tree_has_git"]) == ("0", "unknown", False)
    assert info["commit"] == "0c1e57098" and "CHANGELOG" in info["commit_from"]
    bare = source_info(tree, "0.3.36", None)
    assert bare["commit"] is None and bare["commit_from"].startswith("none")


def test_no_compiler_is_one_error_before_any_download(tmp_path, monkeypatch) -> None:
    import edgeagent.stock as stock

    monkeypatch.setattr(stock.shutil, "which", lambda _name: None)
    assert missing_toolchain() == "cmake, a C compiler, a C++ compiler, ninja or make"
    with pytest.raises(StockError, match="cannot build stock llama.cpp: no cmake, a C compiler"):
        build_stock("0.3.36", root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing downloaded, nothing left


def test_bench_stock_without_llama_bench_or_compiler_is_one_line_exit_2(tmp_path, monkeypatch) -> None:
    import edgeagent.stock as stock

    monkeypatch.setenv("EDGEAGENT_CACHE", str(tmp_path))  # no cached build
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-bench on PATH
    monkeypatch.setattr(stock, "missing_toolchain", lambda: "cmake")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    for args, says in ((["bench", "stock", "-m", str(model)], "no llama-bench: give --llama-bench PATH"),
                       (["bench", "stock", "-m", str(model), "--build"], "no cmake on PATH"),
                       (["bench", "stock", "-m", str(model), "--llama-bench", str(tmp_path / "nope")], "no such llama-bench")):
        r = runner.invoke(app, args)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], r.output


# ---------------------------------------------------------------------------------------
# llama-bench beside the engine


ENGINE = {  # the keys bench_throughput returns that the comparison reads
    "model": "/m.gguf", "prompt_tokens": 128, "gen_tokens": 128, "reps": 5, "threads": 2, "flash_attn": False,
    "repack": False, "n_batch": 512, "n_ubatch": 512, "kv_type": "f16", "llama_cpp_python": "0.3.36",
    "prefill_tokens_per_s": 9000.0, "engine_tokens_per_s": 600.0, "cpu_utilization": 0.97, "runs": [],
}


def test_llama_bench_args_same_settings_and_defaults() -> None:
    same = stock_bench.llama_bench_args(Path("/m.gguf"), threads=2, prompt_tokens=128, gen_tokens=64, reps=3,
                                        settings=stock_bench.engine_settings(ENGINE))
    common = ["-m", "/m.gguf", "-t", "2", "-r", "3", "-o", "json", "-fa", "off", "--repack", "0", "-b", "512",
              "-ub", "512", "-ctk", "f16", "-ctv", "f16"]
    assert same == [[*common, "-p", "128", "-n", "0"], [*common, "-p", "0", "-n", "64", "-d", "128"]]
    defaults = stock_bench.llama_bench_args(Path("/m.gguf"), threads=2, prompt_tokens=128, gen_tokens=64, reps=3)
    assert defaults[0] == ["-m", "/m.gguf", "-t", "2", "-r", "3", "-o", "json", "-p", "128", "-n", "0"]
    amx = stock_bench.llama_bench_args(Path("/m.gguf"), threads=2, prompt_tokens=128, gen_tokens=64, reps=3,
                                       repack_crashes=True)
    assert amx[1][-8:] == ["--repack", "0", "-p", "0", "-n", "64", "-d", "128"]
    # An agent step: the prompt on tokens already cached, decode after both.
    step = stock_bench.llama_bench_args(Path("/m.gguf"), threads=2, prompt_tokens=160, gen_tokens=16, reps=3, depth=380)
    assert step[0][-6:] == ["-p", "160", "-n", "0", "-d", "380"] and step[1][-6:] == ["-p", "0", "-n", "16", "-d", "540"]
    # the engine's exact attention: llama-bench gets flash attention with its two KV types
    exact = stock_bench.llama_bench_args(Path("/m.gguf"), threads=2, prompt_tokens=128, gen_tokens=64, reps=3,
                                         settings=stock_bench.engine_settings({**ENGINE, "flash_attn": True,
                                                                               "kv_types": ["q8_0", "f16"]}))
    assert exact[0][8:10] == ["-fa", "on"] and exact[0][-8:-4] == ["-ctk", "q8_0", "-ctv", "f16"]
    assert "kv q8_0/f16" in stock_bench.describe_settings(stock_bench.engine_settings({**ENGINE, "kv_types": ["q8_0", "f16"]}))


def _recorded() -> list[dict]:
    return json.loads(RECORDED.read_text())


def test_recorded_llama_bench_json_becomes_figures_and_rows() -> None:
    records = _recorded()
    stock = {}
    for mode in stock_bench.MODES:
        mine = [r for r in records if (r["n_batch"] == 512) == (mode == "same")]
        stock[mode] = stock_bench.stock_figures(stock_bench.parse_llama_bench(json.dumps(mine)), 0.95)
    same, defaults = stock["same"], stock["defaults"]
    assert (same["flash_attn"], same["repack"], same["n_batch"]) == ("off", False, 512)
    assert defaults["flash_attn"] == "auto" and defaults["n_batch"] == 2048
    assert same["decode_depth"] == same["prompt_tokens"] and same["build_commit"] == "0c1e57098"
    result = stock_bench.compare(ENGINE, stock, binary="/bin/llama-bench", source="given")
    assert [(r["settings"], r["test"]) for r in result["rows"]] == [
        ("same", "prefill"), ("same", "decode"), ("same", "step"),
        ("defaults", "prefill"), ("defaults", "decode"), ("defaults", "step")]
    for row in result["rows"]:
        figures = stock[row["settings"]]
        if row["test"] == "step":  # one call of 128 prompt and 128 generated tokens at each side's rates
            engine_ms = 1000 * (128 / ENGINE["prefill_tokens_per_s"] + 128 / ENGINE["engine_tokens_per_s"])
            stock_ms = 1000 * (128 / figures["prefill_tokens_per_s"] + 128 / figures["decode_tokens_per_s"])
            assert math.isclose(row["engine_ms"], engine_ms) and math.isclose(row["stock_ms"], stock_ms)
            assert math.isclose(row["ratio"], stock_ms / engine_ms)
            continue
        key = "prefill_tokens_per_s" if row["test"] == "prefill" else "decode_tokens_per_s"
        engine = ENGINE["prefill_tokens_per_s" if row["test"] == "prefill" else "engine_tokens_per_s"]
        assert row["stock_tokens_per_s"] == stock[row["settings"]][key]
        assert math.isclose(row["ratio"], engine / row["stock_tokens_per_s"])
    assert not result["contended"]
    columns, rows = stock_bench.stock_rows(result)
    assert columns[4] == "engine ÷ stock (speed)" and rows[1][1] == f"tg{same['gen_tokens']} @ d{same['prompt_tokens']}"
    assert rows[2][1] == f"step: pp{same['prompt_tokens']} + tg{same['gen_tokens']}" and rows[2][2].endswith(" ms")
    notes = stock_bench.notes(result)
    assert notes[0] == "same: engine and llama-bench fa off, repack 0, b 512, ub 512, kv f16, t 2"
    assert notes[1].startswith("defaults: engine fa off") and "; llama-bench fa auto, repack 0, b 2048" in notes[1]
    assert any("llama-bench: /bin/llama-bench" in line for line in notes)


def test_llama_bench_output_that_is_not_its_json_is_one_error() -> None:
    for text in ("", "[{}]", "error: failed to load model"):
        with pytest.raises(StockError):
            stock_bench.parse_llama_bench(text)
    with pytest.raises(StockError, match="one prefill and one decode"):
        stock_bench.stock_figures(_recorded()[:1])


FAKE_LLAMA_BENCH = """#!{python}
# Replays a recorded llama-bench -o json run: the record of the mode (-b given: the engine's
# settings) and test (-n 0: prefill), with the sizes of this call.
import json, sys
args = sys.argv[1:]
get = lambda flag, default=None: args[args.index(flag) + 1] if flag in args else default
records = json.load(open({recorded!r}))
same = "-b" in args
prefill = get("-n") == "0"
record = next(r for r in records if (r["n_batch"] == 512) == same and (r["n_gen"] == 0) == prefill)
record.update(n_prompt=int(get("-p")), n_gen=int(get("-n")), n_depth=int(get("-d", 0)), n_threads=int(get("-t")),
              model_filename=get("-m"))
print(json.dumps([record], indent=2))
"""


def test_bench_stock_command_json_beside_a_stand_in_llama_bench(tmp_path) -> None:
    fake = tmp_path / "llama-bench"
    fake.write_text(FAKE_LLAMA_BENCH.format(python=sys.executable, recorded=str(RECORDED)))
    fake.chmod(0o755)
    r = runner.invoke(app, ["bench", "stock", "--llama-bench", str(fake), "-p", "16", "-n", "8", "-r", "1", "-t", "1",
                            "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)  # strict JSON: the default model is the default agent's q8_0
    assert result["mode"] == "stock" and result["llama_bench"] == str(fake) and result["llama_bench_from"] == "given"
    from edgeagent.variants import resolve_model

    assert Path(result["model"]) == resolve_model(None, "q8_0").path
    assert result["stock"]["same"]["prompt_tokens"] == 16 and result["stock"]["same"]["decode_depth"] == 16
    assert result["engine_settings"]["threads"] == 1 and len(result["rows"]) == 6
    assert all(row["ratio"] > 0 for row in result["rows"])
    assert all(row["engine_tokens_per_s"] > 0 for row in result["rows"] if row["test"] != "step")
    # At depth: both sides put 8 tokens in the cache first; the engine evaluates only the 16 after them.
    deep = runner.invoke(app, ["bench", "stock", "--llama-bench", str(fake), "-p", "16", "-n", "8", "-d", "8", "-r", "1",
                               "-t", "1", "--json"])
    assert deep.exit_code == 0, deep.output
    deep = json.loads(deep.stdout)
    assert deep["depth"] == 8 and deep["engine"]["depth"] == 8
    assert (deep["stock"]["same"]["prefill_depth"], deep["stock"]["same"]["decode_depth"]) == (8, 24)
    table = runner.invoke(app, ["bench", "stock", "--llama-bench", str(fake), "-p", "16", "-n", "8", "-r", "1", "-t", "1"])
    assert table.exit_code == 0 and "engine ÷ stock" in table.output and "tg8 @ d16" in table.output, table.output


def test_bench_stock_paired_decode_alternates_and_compares_each_pair(tmp_path) -> None:
    fake = tmp_path / "llama-bench"
    fake.write_text(FAKE_LLAMA_BENCH.format(python=sys.executable, recorded=str(RECORDED)))
    fake.chmod(0o755)
    r = runner.invoke(app, ["bench", "stock", "--llama-bench", str(fake), "-p", "16", "-n", "8", "-d", "4", "-t", "1",
                            "--paired", "3", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["mode"] == "paired-decode" and result["context_tokens"] == 20 and result["gen_tokens"] == 8
    # llama-bench decodes after the same context, one repetition, at its defaults (no -b, -fa)
    args = result["llama_bench_args"]
    assert args[args.index("-d") + 1] == "20" and args[args.index("-r") + 1] == "1" and "-b" not in args
    pairs = result["pairs"]
    assert [p["first"] for p in pairs] == ["stock", "engine", "stock"]
    for p in pairs:
        assert p["engine_tokens_per_s"] > 0 and p["ratio"] == pytest.approx(p["engine_tokens_per_s"] / p["stock_tokens_per_s"])
        # llama.cpp's decode timer covers less than the wall time between the first and last token
        assert p["engine_decode_timer_tokens_per_s"] > p["engine_tokens_per_s"] and p["engine_outside_decode_us_per_token"] > 0
        assert p["decode_timer_ratio"] == pytest.approx(p["engine_decode_timer_tokens_per_s"] / p["stock_tokens_per_s"])
    assert result["median_decode_timer_ratio"] > result["median_ratio"]
    low, high = result["decode_timer_ci95"]
    assert low <= result["mean_decode_timer_ratio"] <= high
    low, high = result["ci95"]
    assert low <= result["mean_ratio"] <= high and result["min_ratio"] <= result["median_ratio"] <= result["max_ratio"]
    assert result["verdict"].startswith(("the engine decodes faster", "the engine decodes slower", "the same speed"))
    one = runner.invoke(app, ["bench", "stock", "--llama-bench", str(fake), "--paired", "1"])
    assert one.exit_code == 2 and "at least 2 pairs" in one.output


# ---------------------------------------------------------------------------------------
# GGUF metadata side by side


def _summary(**kv) -> dict:
    base = {"general.architecture": "llama", "llama.embedding_length": 576, "llama.attention.head_count": 9,
            "tokenizer.ggml.model": "gpt2"}
    return {"kv": {**base, **kv}, "tensors": {"token_embd.weight": ((576, 49152), "F32")}}


def test_allowed_metadata_differences_need_their_condition() -> None:
    ours = _summary(**{"general.name": "a", "tokenizer.ggml.add_eos_token": False})
    theirs = _summary(**{"general.name": "b", "general.size_label": "135M", "llama.attention.key_length": 64})
    diffs = {d["what"]: d for d in compare_gguf(ours, theirs)}
    assert set(diffs) == {"kv general.name", "kv general.size_label", "kv tokenizer.ggml.add_eos_token",
                          "kv llama.attention.key_length"}
    assert all(d["allowed"] for d in diffs.values()), diffs
    # the same keys with values llama.cpp would read differently matter
    wrong = _summary(**{"tokenizer.ggml.add_eos_token": True, "llama.attention.key_length": 32})
    assert not any(d["allowed"] for d in compare_gguf(_summary(), wrong))


def test_differences_that_matter_are_never_allowed() -> None:
    theirs = _summary(**{"llama.rope.freq_base": 10000.0, "tokenizer.ggml.pre": "smollm"})
    theirs["tensors"]["output.weight"] = ((576, 49152), "F32")
    ours = _summary(**{"llama.rope.freq_base": 100000.0, "tokenizer.ggml.pre": "gpt-2"})
    ours["tensors"]["token_embd.weight"] = ((576, 49152), "F16")
    diffs = compare_gguf(ours, theirs)
    assert {d["what"] for d in diffs} == {"kv llama.rope.freq_base", "kv tokenizer.ggml.pre", "tensor output.weight",
                                          "tensor token_embd.weight"}
    assert not any(d["allowed"] for d in diffs) and all(d["reason"].startswith("matters") for d in diffs)
    explained = compare_gguf(ours, theirs, explained={"kv tokenizer.ggml.pre": "checked"})
    assert [d["what"] for d in explained if d["allowed"]] == ["kv tokenizer.ggml.pre"]
    assert compare_gguf(_summary(**{"llama.rope.freq_base": 1e5}), _summary(**{"llama.rope.freq_base": 1e5 + 1e-4})) == []


# ---------------------------------------------------------------------------------------
# slow: stock llama.cpp itself

PROBES = ["Set the alarm for 07:30 and pay $12.50", " 2024 3333333", "\n\n 123\n\t9", "héllo wörld 你好 🙂 1,000.00",
          "<|im_start|>user\nTurn Wi-Fi off<|im_end|>\n", "  Brightness  35 %", "(555) 123-4567"]


@pytest.fixture(scope="module")
def stock():
    missing = missing_toolchain()
    if missing:
        pytest.skip(f"no {missing}: stock llama.cpp cannot be built here")
    try:
        return build_stock(log=print)
    except StockError as e:
        if "pip download" in str(e):
            pytest.skip(f"no llama-cpp-python source: {e}")
        raise


def _engine_text(path: Path, prompt: str, n: int) -> str:
    from edgeagent.engine import Engine

    with Engine(path, n_ctx=256, n_threads=1) as engine:
        return engine.generate(prompt, max_tokens=n, temperature=0.0).text


def _builtin_variants(tmp: Path) -> dict[str, Path]:
    """Every kind of GGUF the project writes from the built-in model."""
    import numpy as np
    from safetensors.numpy import save_file

    from edgeagent.builtin import BUNDLE_QUANTS, builtin_bundle, builtin_gguf, builtin_model_dir
    from edgeagent.bundle import load_bundle
    from edgeagent.export.exit_pack import HEADS_FILE, HEADS_META, pack_exits
    from edgeagent.export.hf_to_gguf import QUANTS, export

    model = builtin_model_dir()
    files = {f"builtin {q} (demo)": builtin_gguf(q) for q in BUNDLE_QUANTS}
    files.update({f"builtin bundle {v.id}": v.path for v in load_bundle(builtin_bundle()).variants})
    for q in QUANTS:  # `edgeagent export` at every quantization it offers
        files[f"export builtin {q}"] = export(model, tmp / f"builtin-{q}.gguf", q).path
    for v in pack_exits(model, None, "3", ["q8_0"], tmp / "shared", name="builtin"):
        files[f"exit {v['id']} (shared head)"] = tmp / "shared" / v["path"]
    config = json.loads((model / "config.json").read_text())
    d, vocab = config["hidden_size"], config["vocab_size"]
    heads = tmp / "heads"
    heads.mkdir()
    rng = np.random.default_rng(0)
    save_file({"norm.2.weight": np.ones(d, np.float32),
               "head.2.weight": rng.normal(0, 0.02, (vocab, d)).astype(np.float32)}, str(heads / HEADS_FILE))
    (heads / HEADS_META).write_text(json.dumps({"kind": "dedicated", "exits": [2]}))
    for v in pack_exits(model, heads, "2", ["q4_k_m", "f16"], tmp / "dedicated", name="builtin"):
        files[f"exit {v['id']} (dedicated head)"] = tmp / "dedicated" / v["path"]
    return {k: Path(v) for k, v in files.items()}


def _agent_variants() -> dict[str, Path]:
    """The SmolLM2 agent's GGUFs (merged from the package's weights and the delta; cached)."""
    from edgeagent.agents import AgentUnavailable, shipped_agent

    try:
        agent = shipped_agent("smollm2")
        return {f"smollm2 agent {q}{f' L{k}' if k else ''}": agent.gguf(q, k, quiet=True)
                for q, k in (("f32", None), ("q8_0", None), ("q4_k_m", None), ("q8_0", 15))}
    except AgentUnavailable as e:
        print(f"smollm2 agent not checked: {e}")
        return {}


@pytest.mark.slow
def test_every_gguf_the_project_writes_loads_and_generates_in_stock_llama_cpp(stock, tmp_path) -> None:
    import gguf

    print(stock.describe())
    files = {**_builtin_variants(tmp_path), **_agent_variants()}
    failed = []
    for name, path in files.items():
        prompt = "The capital of France is" if "smollm2" in name else "Task: turn wifi off"
        result = generate(stock, path, prompt)
        line = f"{name}: {path.name}: {result['tool']} ok={result['ok']} output={result['output'][-40:]!r}"
        file_type = gguf.GGUFReader(path).fields["general.file_type"].contents()
        if file_type == 0:  # F32: llama-simple runs it with repacking on even where quantized files crash
            simple = generate(stock, path, prompt, repack=True)
            same = simple["output"].endswith(_engine_text(path, prompt, 8))
            line += f"; llama-simple ok={simple['ok']} tokens={simple['tokens']}, the engine's greedy text: {same}"
            result["ok"] = result["ok"] and simple["ok"]
        print(line)
        if not result["ok"]:
            failed.append(f"{line} (exit {result['returncode']}: {result['stderr'][-200:]})")
    assert not failed, "\n".join(failed)


def _convert_hf_to_gguf(stock, hf_dir: Path, out: Path, outtype: str) -> subprocess.CompletedProcess:
    """llama.cpp's own converter (vendored with the build), in a child: it imports torch."""
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    return subprocess.run([sys.executable, str(stock.convert_script), str(hf_dir), "--outfile", str(out),
                           "--outtype", outtype], capture_output=True, text=True, env=env, timeout=1800)


def _tokenizes_like_the_checkpoint(gguf_path: Path, hf_dir: Path) -> list[str]:
    """The probes whose token ids in ``gguf_path`` (llama.cpp) differ from the checkpoint's
    tokenizer.json (Hugging Face tokenizers)."""
    from tokenizers import Tokenizer

    from edgeagent.llama import load_llama

    hf = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    llm = load_llama(gguf_path, vocab_only=True)
    try:
        return [p for p in PROBES if llm.tokenize(p.encode(), add_bos=False, special=True)
                != hf.encode(p, add_special_tokens=False).ids]
    finally:
        llm.close()


PRE_TOKENIZER_REASON = (
    "tokenizer.ggml.pre: this exporter names the pre-tokenizer the checkpoint's tokenizer.json declares, "
    "llama.cpp's converter one whose hash of token ids on its test text matches; the file written here "
    "tokenizes every probe exactly as the checkpoint's own tokenizer does (checked)")


@pytest.mark.slow
def test_exporter_metadata_matches_llama_cpp_convert_hf_to_gguf(stock, tmp_path) -> None:
    """The SmolLM2 checkpoint (the package's GGUF as an HF directory, converters.sources) through
    `edgeagent export` and through llama.cpp's convert_hf_to_gguf.py, at F32 and F16: every
    metadata key and tensor compared; only the differences edgeagent.stock explains may remain.
    The built-in model does not apply: llama.cpp's converter refuses its own trained BPE
    vocabulary (it knows pre-tokenizers by the hash of known vocabularies' token ids)."""
    pytest.importorskip("torch")
    from converters.sources import ModelSourceError, resolve_source
    from edgeagent.builtin import builtin_model_dir
    from edgeagent.export.hf_to_gguf import export

    refused = _convert_hf_to_gguf(stock, builtin_model_dir(), tmp_path / "builtin.gguf", "f32")
    assert refused.returncode != 0 and "BPE pre-tokenizer was not recognized" in refused.stderr, refused.stderr[-500:]
    try:
        hf_dir = resolve_source("smollm2-135m-instruct")
    except ModelSourceError as e:
        pytest.skip(str(e))
    matters = []
    for outtype in ("f32", "f16"):
        ours = Path(export(hf_dir, tmp_path / f"ours-{outtype}.gguf", outtype).path)
        theirs = tmp_path / f"theirs-{outtype}.gguf"
        converted = _convert_hf_to_gguf(stock, hf_dir, theirs, outtype)
        assert converted.returncode == 0, converted.stderr[-800:]
        assert _tokenizes_like_the_checkpoint(ours, hf_dir) == []
        diffs = compare_gguf(ours, theirs, explained={"kv tokenizer.ggml.pre": PRE_TOKENIZER_REASON})
        for d in diffs:
            print(f"{outtype}: {d['what']}: ours {d['ours']!r}, llama.cpp's {d['theirs']!r}: "
                  f"{'allowed' if d['allowed'] else 'MATTERS'} ({d['reason']})")
        matters += [d for d in diffs if not d["allowed"]]
        for path in (ours, theirs):  # both load and generate in stock llama.cpp
            assert generate(stock, path, "The capital of France is")["ok"], path
    assert not matters, matters


@pytest.mark.slow
def test_bench_stock_real_run(stock) -> None:
    r = runner.invoke(app, ["bench", "stock", "--agent", "builtin", "-p", "32", "-n", "16", "-r", "1", "-t", "1",
                            "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["llama_bench_from"].startswith("stock build") and stock.info["source"]["commit"] in result["llama_bench_from"]
    assert result["stock"]["same"]["build_commit"] == stock.info["source"]["commit"]
    # prefill, decode and one call's step, with the engine's settings and with llama-bench's defaults
    assert [(row["settings"], row["test"]) for row in result["rows"]] == [
        (mode, test) for mode in ("same", "defaults") for test in ("prefill", "decode", "step")]
    assert all(row["ratio"] > 0 for row in result["rows"])
    # what llama-bench cannot be set to do is said
    assert ("only the engine's weights are on 2 MiB pages" in " ".join(stock_bench.notes(result))) is (
        result["engine_settings"]["huge_pages"] is True)
    print(json.dumps(result["rows"], indent=1))
