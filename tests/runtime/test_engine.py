"""The runtime engine on a GGUF exported in the test: grammar, seeds, stop strings,
streaming, prompt-prefix reuse, measurements, and the bench command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")

from edgeagent.export.hf_to_gguf import export  # noqa: E402
from converters.tiny import TinyConfig, make_tiny_model  # noqa: E402
from edgeagent.engine import Engine, EngineError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

PROMPT = (
    "You are an assistant that operates an Android phone. The screen shows the Settings app "
    "with Network, Bluetooth, Display and Battery. The user asked: lower the brightness."
)
ACTION_SCHEMA = {
    "type": "object",
    "properties": {
        "action": {"enum": ["tap", "back", "home", "done"]},
        "confirm": {"type": "boolean"},
    },
    "required": ["action", "confirm"],
}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("engine")
    model_dir = make_tiny_model(root / "hf", TinyConfig(arch="llama", num_kv_heads=2, seed=11))
    # Quantized, so loading goes through the weight-repack choice that matters on x86.
    return Path(export(model_dir, root / "model-q8_0.gguf", "q8_0").path)


# One thread: on a shared 2-core machine two llama.cpp threads that must meet at a barrier
# for every graph node slow down by 10-100x whenever another job holds a core.
@pytest.fixture(scope="module")
def engine(model_path):
    with Engine(model_path, n_ctx=512, n_threads=1) as e:
        yield e


@pytest.fixture(scope="module")
def exact_engine(model_path):
    """The exact attention set-up: output that depends on the tokens alone, so a reused
    prefix must give a fresh engine's bits (the default agrees to llama.cpp's rounding)."""
    with Engine(model_path, n_ctx=512, n_threads=1, exact=True) as e:
        yield e


def test_json_schema_output_always_parses(engine):
    for seed in range(8):
        gen = engine.generate("Next action:", max_tokens=64, temperature=1.0, seed=seed, json_schema=ACTION_SCHEMA)
        action = json.loads(gen.text)
        assert action["action"] in ACTION_SCHEMA["properties"]["action"]["enum"]
        assert isinstance(action["confirm"], bool)
        assert gen.metrics.stop_reason == "eos"  # the grammar allows nothing after the object


def test_gbnf_grammar_constrains_output(engine):
    grammar = 'root ::= ("yes" | "no") "."'
    texts = {engine.generate(PROMPT, max_tokens=8, temperature=1.0, seed=s, grammar=grammar).text for s in range(6)}
    assert texts <= {"yes.", "no."}


def test_seed_reproduces_sampling(exact_engine, model_path):
    engine = exact_engine
    first = engine.generate(PROMPT, max_tokens=24, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    again = engine.generate(PROMPT, max_tokens=24, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    assert first.tokens == again.tokens
    with Engine(model_path, n_ctx=512, n_threads=1, exact=True) as fresh:
        other = fresh.generate(PROMPT, max_tokens=24, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    assert other.tokens == first.tokens
    others = [
        engine.generate(PROMPT, max_tokens=24, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=s).tokens
        for s in (8, 9)
    ]
    assert any(tokens != first.tokens for tokens in others)


def test_stop_string_ends_generation_and_is_not_returned(engine):
    full = engine.generate(PROMPT, max_tokens=40, ignore_eos=True)
    # A stop string taken from the middle of the greedy output: an ASCII piece of a token.
    pieces = [engine.detokenize([t]) for t in full.tokens]
    stop = next(p for p in pieces[4:] if p.strip() and p.isascii() and p.isprintable())
    streamed: list[str] = []
    gen = engine.generate(PROMPT, max_tokens=40, ignore_eos=True, stop=[stop], stream=streamed.append)
    assert gen.metrics.stop_reason == "stop"
    assert gen.text == full.text[: full.text.index(stop)]
    assert stop not in gen.text
    assert "".join(streamed) == gen.text  # streamed text never shows the held-back stop


def test_streaming_delivers_the_whole_text(engine):
    streamed: list[str] = []
    gen = engine.generate(PROMPT, max_tokens=24, ignore_eos=True, stream=streamed.append)
    assert len(streamed) > 1 and "".join(streamed) == gen.text


def _llama_cpp_python_greedy(engine: Engine, prompt: list[int], n: int, grammar: str | None) -> list[int]:
    """Greedy tokens from llama-cpp-python's own ``Llama.generate`` and sampler chain."""
    from llama_cpp import LlamaGrammar

    engine.reset()
    out: list[int] = []
    tokens = engine.llm.generate(prompt, temp=0.0, grammar=LlamaGrammar.from_string(grammar) if grammar else None)
    for token in tokens:
        if engine._is_eog(token) or len(out) == n:
            break
        out.append(token)
    tokens.close()
    return out


def test_greedy_decoding_gives_llama_cpp_pythons_tokens_with_and_without_a_grammar(exact_engine):
    """The engine decodes greedily on llama.cpp's C API (argmax in place, one grammar check per
    token); its tokens must be those of llama-cpp-python's sampler chain, including where the
    grammar rejects the model's own choice and the whole vocabulary is checked."""
    engine = exact_engine
    prompt = engine.tokenize(PROMPT)
    free = engine.generate(prompt, max_tokens=12, ignore_eos=True)
    assert free.tokens == _llama_cpp_python_greedy(engine, prompt, 12, None)

    grammar = 'root ::= "{\\"n\\": " [0-9] [0-9]? ", \\"word\\": \\"" [a-z]+ "\\"}"'
    engine.reset()
    constrained = engine.generate(prompt, max_tokens=24, grammar=grammar)
    assert constrained.tokens == _llama_cpp_python_greedy(engine, prompt, 24, grammar)
    assert constrained.text.startswith('{"n": ') and not free.text.startswith('{"n"')  # the grammar overrode

    # From a reused prefix (the agent's next step), against llama-cpp-python from scratch.
    longer = prompt + constrained.tokens[:4]
    again = engine.generate(longer, max_tokens=8, ignore_eos=True)
    assert again.metrics.reused_prompt_tokens == len(longer) - 1
    assert again.tokens == _llama_cpp_python_greedy(engine, longer, 8, None)


def test_a_grammar_that_does_not_parse_is_an_engine_error(engine):
    with pytest.raises(EngineError, match="grammar"):
        engine.generate(PROMPT, max_tokens=4, grammar='root ::= ( "a" ')


def test_prefix_reuse_evaluates_only_the_suffix_and_matches_a_fresh_engine(exact_engine, model_path, capsys):
    engine = exact_engine
    engine.reset()
    turn1 = engine.tokenize(PROMPT)
    first = engine.generate(turn1, max_tokens=16, ignore_eos=True)
    assert first.metrics.reused_prompt_tokens == 0
    assert first.metrics.evaluated_prompt_tokens == len(turn1)

    # The next agent step: everything so far plus a new observation.
    turn2 = turn1 + first.tokens + engine.tokenize(" Screen: Display settings, slider at 80%.", add_bos=False)
    second = engine.generate(turn2, max_tokens=16)
    with Engine(model_path, n_ctx=512, n_threads=1, exact=True) as fresh:
        fresh.generate("warm-up", max_tokens=1)  # first decode of a context allocates its graph
        fresh.reset()
        cold = fresh.generate(turn2, max_tokens=16)

    m, c = second.metrics, cold.metrics
    assert m.prompt_tokens == c.prompt_tokens == len(turn2)
    # Everything but the new observation (and the last sampled token, never evaluated) is cached.
    assert m.reused_prompt_tokens >= len(turn1) + len(first.tokens) - 1
    assert m.evaluated_prompt_tokens == len(turn2) - m.reused_prompt_tokens
    assert c.reused_prompt_tokens == 0 and c.evaluated_prompt_tokens == len(turn2)
    assert second.tokens == cold.tokens  # greedy output identical to starting from scratch

    # A text prompt that extends the previous prompt text reuses its tokens too.
    third = engine.generate(PROMPT + " Then go home.", max_tokens=4)
    assert third.metrics.reused_prompt_tokens >= len(turn1) - 2

    with capsys.disabled():
        print(
            f"\n\nprefix reuse: {m.prompt_tokens}-token prompt, {m.reused_prompt_tokens} reused, "
            f"{m.evaluated_prompt_tokens} evaluated; prefill {m.prefill_ms:.2f} ms vs {c.prefill_ms:.2f} ms cold, "
            f"TTFT {m.ttft_ms:.2f} ms vs {c.ttft_ms:.2f} ms cold (measured, same run)"
        )


def test_metrics_are_measured(engine):
    engine.reset()
    gen = engine.generate(PROMPT, max_tokens=12, ignore_eos=True)
    m = gen.metrics
    assert m.prompt_tokens == len(engine.tokenize(PROMPT))
    assert m.generated_tokens == len(gen.tokens) == 12
    assert m.stop_reason == "length"
    assert m.ttft_ms > 0 and m.total_ms >= m.ttft_ms
    assert m.prefill_ms > 0 and m.prefill_tokens_per_s > 0
    assert m.decode_ms > 0 and m.tpot_ms > 0 and m.tokens_per_s > 0 and m.wall_tokens_per_s > 0
    assert 0 < m.tpot_p50_ms <= m.tpot_p90_ms
    assert m.rss_mb > 10 and m.peak_rss_mb >= 0.5 * m.rss_mb
    assert len(gen.token_times_ms) == 12
    assert json.loads(json.dumps(gen.to_dict()))["metrics"]["generated_tokens"] == 12


def test_context_overflow_is_an_error(engine):
    with pytest.raises(EngineError, match="does not fit the context"):
        engine.generate(list(range(3, 3 + engine.n_ctx)), max_tokens=4)


def test_missing_model_file_is_an_error(tmp_path):
    with pytest.raises(EngineError, match="model file not found"):
        Engine(tmp_path / "nope.gguf")


def _profile_with_runtime(**runtime):
    from edgeagent.profiles import load_profile

    profile = load_profile("snapdragon-8-gen-2")
    return profile.model_copy(update={"runtime": profile.runtime.model_copy(update=runtime)})


def test_profile_runtime_settings_are_used(model_path):
    import llama_cpp

    profile = _profile_with_runtime(threads=1, weight_repack=False, flash_attn=False, kv_cache_type="f32", n_ubatch=64)
    with Engine(model_path, n_ctx=128, profile=profile) as e:
        assert e.n_threads == 1 and e.repack is False
        cp = e.llm.context_params
        assert (cp.n_ubatch, cp.n_threads, cp.type_k, cp.type_v) == (64, 1, llama_cpp.GGML_TYPE_F32, llama_cpp.GGML_TYPE_F32)
        assert e.generate("hi", max_tokens=2, ignore_eos=True).metrics.generated_tokens == 2


def test_one_context_set_up_for_the_llama_object_and_the_c_api(model_path):
    """``LlamaSettings`` gives ``llama_cpp.Llama`` (Engine, quality) and the C API (LlamaRunner,
    speculative decoding) the same context: every field either path sets is equal."""
    from edgeagent.llama import LlamaRunner, LlamaSettings

    fields = ("n_ctx", "n_batch", "n_ubatch", "n_seq_max", "n_threads", "n_threads_batch", "type_k", "type_v",
              "flash_attn_type", "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow", "no_perf")
    for kv_type, exact in ((None, False), ("f32", False), (None, True)):
        settings = LlamaSettings.from_runtime(_profile_with_runtime(threads=1, kv_cache_type=kv_type or "f16").runtime
                                              if kv_type else None, n_ctx=512, n_threads=1, exact=exact)
        with Engine(model_path, settings=settings) as e:
            via_llama = e.llm.context_params
            direct = settings.context_params()
            assert {f: getattr(via_llama, f) for f in fields} == {f: getattr(direct, f) for f in fields}
    runner = LlamaRunner(model_path, n_ctx=512, n_threads=1, kv_type="f32")
    try:
        assert runner.kv_type == "f32" and runner.n_threads == 1
    finally:
        runner.close()
    with pytest.raises(EngineError, match="KV cache type 'q4' is unknown"):
        LlamaSettings(kv_type="q4")


def test_a_persistent_thread_pool_is_attached_and_changes_no_token(model_path):
    """Engine and LlamaRunner attach one ggml thread pool to their context, as llama-bench does
    (without it ggml builds one per graph); greedy tokens are the same with and without it,
    and closing frees it."""
    from edgeagent.llama import LlamaRunner

    with Engine(model_path, n_ctx=512, n_threads=2) as e:
        pool = e.llm.edgeagent_threadpool
        assert pool is not None and pool.handle
        prompt = e.tokenize("Open the settings and")
        pooled = list(e.generate(prompt, max_tokens=24, ignore_eos=True).tokens)
        pool.close()  # detached: ggml builds a pool for each graph, as for any llama-cpp-python context
        assert pool.handle is None
        e.reset()
        assert list(e.generate(prompt, max_tokens=24, ignore_eos=True).tokens) == pooled
    runner = LlamaRunner(model_path, n_ctx=512, n_threads=2)
    draft = LlamaRunner(model_path, n_ctx=512, n_threads=2, share_pool=runner)  # as a speculative draft
    try:
        assert runner.threadpool is not None and runner.threadpool.handle
        assert draft.threadpool.handle == runner.threadpool.handle  # one pool, computing in turn
        held = runner.threadpool
        draft.close()  # detaches only: the owner's pool still runs
        assert held.handle
        runner.feed(runner.tokenize("Open the settings"))
    finally:
        runner.close()
    assert held.handle is None and runner.threadpool is None

def test_default_and_exact_attention_set_ups(model_path):
    """The default is llama.cpp's own on a CPU (flash attention, F16 cache); the exact set-up is
    flash attention with Q8_0 keys and F16 values, whatever else asks otherwise."""
    import llama_cpp

    from edgeagent.llama import LlamaRunner, LlamaSettings

    assert LlamaSettings().attention == (True, "f16", "f16")
    assert LlamaSettings(flash_attn=False, exact=True).attention == (True, "q8_0", "f16")
    # a profile's KV type gives way to the exact set-up; given outright, the two clash
    profile = _profile_with_runtime(kv_cache_type="f32", flash_attn=False)
    assert LlamaSettings.from_runtime(profile.runtime, exact=True).attention == (True, "q8_0", "f16")
    with pytest.raises(EngineError, match="cannot take kv_type 'f32' too"):
        LlamaSettings(kv_type="f32", exact=True)
    with Engine(model_path, n_ctx=128, n_threads=1, exact=True) as e:
        cp = e.llm.context_params
        assert (cp.type_k, cp.type_v, cp.flash_attn_type) == (
            llama_cpp.GGML_TYPE_Q8_0, llama_cpp.GGML_TYPE_F16, llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED)
    runner = LlamaRunner(model_path, n_ctx=128, n_threads=1, exact=True)
    try:
        assert runner.kv_type == "q8_0/f16"
    finally:
        runner.close()


def test_bench_cli_json_reports_engine_baseline_and_prefill(model_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edgeagent.cli", "bench", "--model", str(model_path), "--threads", "1",
         "--prompt-tokens", "32", "--gen-tokens", "32", "--reps", "4", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["measured"] is True and r["threads"] == 1 and r["model"] == str(model_path)
    for key in ("engine_tokens_per_s", "baseline_tokens_per_s", "prefill_tokens_per_s"):
        assert r[key] > 0 and f"{key}_std" in r
    assert len(r["runs"]) == 4
    # Ratios within one run, not absolute speeds. Prefill batches tokens, decode does one at
    # a time: the least-disturbed prefill beats decode even on a busy machine. The engine is
    # not grossly slower than the library it wraps (the real figure is overhead_pct).
    best_prefill = max(run["engine"]["prefill_tokens_per_s"] for run in r["runs"])
    assert best_prefill > r["engine_tokens_per_s"]
    assert r["engine_tokens_per_s"] > 0.5 * r["baseline_tokens_per_s"]


def test_bench_cli_missing_model_fails_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edgeagent.cli", "bench", "--model", str(tmp_path / "x.gguf"), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


# --- mmap where llama.cpp repacks ----------------------------------------------------------


def test_repacked_bytes_and_the_mmap_choice_per_architecture() -> None:
    """The built-in model's Q4_K_M holds Q4_K block weights (repacked on x86 and AArch64), its
    Q8_0 only Q8_0 (repacked on AArch64 alone), its F32 nothing a CPU repacks."""
    from edgeagent.builtin import builtin_gguf
    from edgeagent.llama import use_mmap
    from edgeagent.shapes import REPACKED_TYPES, repack_arch, shape_from_gguf

    q4, q8, f32 = (builtin_gguf(q) for q in ("q4_k_m", "q8_0", "f32"))
    x86, arm = REPACKED_TYPES["x86_64"], REPACKED_TYPES["aarch64"]
    s4 = shape_from_gguf(q4)
    q4_k = sum(t.n_bytes for t in s4.block_tensors if t.ggml_type == "Q4_K")
    assert 0 < q4_k == s4.repacked_bytes(x86) < s4.weights_bytes  # the token embedding is not repacked
    assert shape_from_gguf(q8).repacked_bytes(x86) == 0 < shape_from_gguf(q8).repacked_bytes(arm)
    assert shape_from_gguf(f32).repacked_bytes(arm) == 0
    assert [repack_arch(m) for m in ("x86_64", "AMD64", "aarch64", "arm64", "riscv64")] == [
        "x86_64", "x86_64", "aarch64", "aarch64", None]
    assert use_mmap(q4, True, "x86_64") is False and use_mmap(q4, False, "x86_64") is True
    assert use_mmap(q8, True, "x86_64") is True and use_mmap(q8, True, "aarch64") is False
    assert use_mmap(f32, True, "aarch64") is True
    assert use_mmap(q4, True, "riscv64") is True  # an architecture whose repacking is not known here


def test_an_unreadable_header_keeps_mmap_and_llama_cpp_names_the_fault(tmp_path: Path) -> None:
    from edgeagent.llama import use_mmap

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 40)
    assert use_mmap(bad, True, "x86_64") is True
    with pytest.raises(EngineError, match="bad.gguf"):
        Engine(bad)


def test_the_tensor_table_reads_without_the_gguf_package() -> None:
    """The mmap choice reads every tensor's type at each load, and a model's shape (its file
    type's name too) is read for every estimate; gguf-py's modules would add
    ~4.6 MB to a runtime process that does not otherwise need it."""
    from edgeagent.builtin import builtin_gguf

    code = ("import sys; from edgeagent.gguf_meta import read_gguf_meta; from edgeagent.shapes import shape_from_gguf; "
            "assert 'gguf' not in sys.modules; assert read_gguf_meta(sys.argv[1]).tensors; "
            "assert shape_from_gguf(sys.argv[1]).quant == 'Q4_K_M'; assert 'gguf' not in sys.modules, 'gguf imported'")
    subprocess.run([sys.executable, "-c", code, str(builtin_gguf("q4_k_m"))], check=True, cwd=REPO)


def test_a_repacked_model_is_held_once() -> None:
    """With mmap on, llama.cpp copies the tensors it repacks out of the mapped file and the
    file's pages stay mapped: its load log's model buffers were the file plus the repacked
    tensors again (5.07 MiB for the built-in Q4_K_M's 2.97). Loaded as the engine loads it,
    the model buffers are the file's weights once, and the peak RSS is lower than with mmap
    forced on, by about the repacked bytes (both fresh processes, one run)."""
    from edgeagent.builtin import builtin_gguf
    from edgeagent.engine import default_repack
    from edgeagent.measure import measure_gguf
    from edgeagent.shapes import REPACKED_TYPES, repack_arch, shape_from_gguf
    import platform

    arch = repack_arch(platform.machine())
    if arch is None or not default_repack():
        pytest.skip("llama.cpp repacks nothing on this CPU (or its repacking is not known here)")
    path = builtin_gguf("q4_k_m")
    shape = shape_from_gguf(path)
    repacked = shape.repacked_bytes(REPACKED_TYPES[arch]) / 2**20
    m = measure_gguf(path, prompt_tokens=16, gen_tokens=4, n_ctx=256, threads=1, reps=1)
    assert m["llama_cpp_buffers_mb"]["model"] == pytest.approx(shape.weights_bytes / 2**20, rel=0.01)
    code = ("import json, sys, llama_cpp; from edgeagent.llama import load_llama; from edgeagent.measure import _vm_hwm_mb; "
            f"llm = load_llama({str(path)!r}, use_mmap=sys.argv[1] == '1', n_ctx=256, n_threads=1); "
            "llm.eval(llm.tokenize(b'hello world')); print(json.dumps(_vm_hwm_mb()))")
    peak = {mm: json.loads(subprocess.run([sys.executable, "-c", code, mm], check=True, cwd=REPO, capture_output=True,
                                          text=True).stdout) for mm in ("1", "0")}
    assert peak["1"] - peak["0"] == pytest.approx(repacked, abs=max(0.5, 0.3 * repacked))


# --- huge pages under the weights ------------------------------------------------------------


def test_huge_page_advice_reads_the_kernel_and_marks_only_new_memory() -> None:
    from edgeagent.hugepages import HUGE_PAGE, anonymous_ranges, available, huge_mapped_bytes, new_ranges, thp_mode

    assert thp_mode("always [madvise] never\n") == "madvise"
    assert thp_mode("[never] madvise always") == "never" and thp_mode("garbage") is None
    assert available("madvise") == available("always") == sys.platform.startswith(("linux", "android"))
    assert not available("never")
    maps = ("7f0000000000-7f0000a00000 rw-p 00000000 00:00 0 \n"
            "7f0000a00000-7f0000b00000 r--p 00000000 08:01 1234   /usr/lib/libc.so.6\n"
            "55d000000000-55d000100000 rw-p 00000000 00:00 0      [heap]\n"
            "7f0001000000-7f0001400000 r--p 00000000 00:00 0 \n")
    assert anonymous_ranges(maps) == [(0x7F0000000000, 0x7F0000A00000)]  # no file, no name, writable
    mb = 1 << 20
    older = [(0, 3 * mb)]
    # a new buffer merged into the older mapping: only its own part, cut to whole 2 MiB pages
    assert new_ranges(older, [(0, 13 * mb)], min_size=2 * mb) == [(4 * mb, 12 * mb)]
    assert new_ranges(older, [(0, 3 * mb)], min_size=HUGE_PAGE) == []
    assert new_ranges([], [(20 * mb, 22 * mb)]) == []  # smaller than a weight buffer
    smaps = ("7f0000000000-7f0000a00000 rw-p 00000000 00:00 0 \nRss: 10240 kB\nAnonHugePages: 8192 kB\n"
             "7f0000a00000-7f0000b00000 r--p 00000000 08:01 1234 /usr/lib/libc.so.6\nAnonHugePages: 0 kB\n")
    assert huge_mapped_bytes([(0x7F0000000000, 0x7F0000A00000)], smaps) == 8 * mb
    assert huge_mapped_bytes([(0x7F0000000000, 0x7F0000200000)], smaps) == 2 * mb  # at most the overlap


def test_weights_on_huge_pages_change_no_token_and_say_what_the_kernel_gave() -> None:
    """Where the kernel gives transparent huge pages, the engine loads the weights without mmap
    into buffers it marks for them before llama.cpp writes the first tensor, and reports how much
    the kernel backs with 2 MiB pages; the greedy tokens are those of a memory-mapped load. In a
    fresh process, as a command loads a model; a later load in the same process gets its own
    mapping too (``own_mappings_for_buffers``), as the second and third loads here show."""
    from edgeagent.builtin import builtin_gguf
    from edgeagent.hugepages import available
    from edgeagent.llama import load_llama
    from edgeagent.shapes import shape_from_gguf

    path = builtin_gguf("f32")  # 20 MB of weights: whole 2 MiB pages
    weights_mb = shape_from_gguf(path).weights_bytes / 2**20
    code = """if True:
        import json, sys
        from edgeagent.engine import Engine
        from edgeagent.llama import LlamaRunner
        out = {}
        with Engine(sys.argv[1], n_ctx=256, n_threads=1, huge_pages=False) as e:
            prompt = e.tokenize("open the settings app and")
            out["off"] = e.info()["huge_pages"], e.generate(prompt, max_tokens=16, ignore_eos=True).tokens
        with Engine(sys.argv[1], n_ctx=256, n_threads=1) as e:
            out["default"] = e.info()["huge_pages"], e.generate(prompt, max_tokens=16, ignore_eos=True).tokens
        runner = LlamaRunner(sys.argv[1], n_ctx=256, n_threads=1)
        out["runner_huge_mb"] = runner.huge_pages.huge_mapped_mb() if runner.huge_pages else 0.0
        runner.close()
        print(json.dumps(out))
    """
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["off"][0] == {"on": False}
    if not available():
        assert out["default"][0] == {"on": False}
        pytest.skip("this kernel gives no transparent huge pages")
    info = out["default"][0]
    assert info["on"] and weights_mb - 2 <= info["advised_mb"] <= weights_mb + 8
    assert 0 < info["huge_mb"] <= info["advised_mb"]
    assert out["default"][1] == out["off"][1]
    assert out["runner_huge_mb"] > 0
    llm = load_llama(path, use_mmap=True, n_ctx=64, n_threads=1)  # asking for mmap keeps it
    assert llm.edgeagent_huge_pages is None
    llm.close()
    with pytest.raises(EngineError, match="use_mmap must be off"):
        load_llama(path, huge_pages=True, use_mmap=True, n_ctx=64)
