"""Published on-device LLM measurements the estimator is fitted to and checked against.

Every row is a published measurement with its setup (device, runtime, model, quantization,
prompt and generated tokens, what the energy figure includes) and its citation. Rows marked
``held_out`` are never used by ``fit_phone_model``; ``compare_published`` sets the estimator
beside every row and summarises the held-out ratios per figure.

What a run costs (the model ``estimate.energy_estimate`` uses):

    energy per inference = P_prefill x t_prefill + P_decode x t_decode      (model resident)
    + for a published run that starts a process: the setup energy of that protocol
      (spin-up, process start, model load and page-in, exit), E0 + e_load x weight GB

The powers are above the idle baseline. ``t_prefill`` = FLOPs / sustained compute,
``t_decode`` per token = bytes read / (eta x bandwidth) + a fixed per-token overhead; all four
device numbers, the two powers and the setup terms are fitted here, on in-sample rows only.

Every row is estimated at the thread count its source ran. When those threads reach in-order
little cores (Cortex-A5xx), each step is paced by a little core's 1/n share of the work
(``estimate.little_core_s``, an empirical form); the two per-cycle constants of that term are fitted on exactly one
in-sample row (``fit_little_cores``), the Cortex-A510's own decode pace on one pair of runs of the same
GGUF (``fit_core_decode_pace``), and every other row of every source stays held out.
This module imports the standard library only (it runs on phones).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

EHSANI = {
    "id": "ehsani2026",
    "citation": "Ehsani, Giamattei, Malavolta, Pietrantuono, 'Sustainability Is Not Linear', arXiv:2603.26603 (2026); "
                "data: github.com/eziyoo/LLMs-on-Devices data/aggregated/final_results.csv (medians of 30 runs)",
    "url": "https://arxiv.org/abs/2603.26603",
    "device": "Samsung Galaxy S25 Ultra (Snapdragon 8 Elite)",
    "profile": "snapdragon-8-elite",
    "runtime": "llama-cli, CPU, 8 threads, -c 512, 100 tokens forced (--ignore-eos), greedy; fresh process per run",
    "energy_includes": "BatteryManager current x voltage every 100 ms (gauge refresh ~310 ms), 0.10 A idle current "
                       "subtracted, trapezoid; the window opens 2 s before llama-cli starts and closes after its "
                       "output is pulled: spin-up, process start, model load, prefill, decode, exit, adb",
    "time_is": "llama.cpp 'total time' (prompt eval + eval), from llama-cli's own timers",
    "memory_is": "llama.cpp memory breakdown (model + context + compute) at -c 512",
    # The llama.cpp the authors built (vendored in their repository's android-app/) repacks only Q4_0
    # and IQ4_NL on AArch64 (android-app/ggml/src/ggml-cpu/repack.cpp), so no Q4_K_M file's tied Q6_K
    # or Q8_0 head was held twice (estimate.memory_estimate).
    "repacked_types": {"Q4_0": 4, "IQ4_NL": 4},
}

GEERLING_Q6A = {
    "id": "geerling-q6a",
    "citation": "J. Geerling, 'Radxa Dragon Q6A' (QCS6490) review, llama-bench results, github.com/geerlingguy/sbc-reviews issue 85 (2025)",
    "url": "https://github.com/geerlingguy/sbc-reviews/issues/85",
    "device": "Radxa Dragon Q6A board (Qualcomm QCS6490, 8 GB)",
    "profile": "qualcomm-rb3-gen-2",
    "runtime": "llama-bench, CPU, 8 threads (the threads column of llama-bench's own table: all 4 Cortex-A78 "
               "and all 4 Cortex-A55), pp512 and tg128 measured separately",
    "energy_includes": "power at the wall during the run (board, regulators and the supply's loss; idle not "
                       "subtracted and not published): not comparable with power above idle, so no energy ratio",
    "time_is": "llama-bench throughputs only (no end-to-end run time)",
    "memory_is": "not published",
}

TUMMALAPALLI = {
    "id": "tummalapalli2026",
    "citation": "Tummalapalli, Arayakandy, Pal, Kundan, 'LLM Inference at the Edge: Mobile, NPU, and GPU Performance "
                "Efficiency Trade-offs Under Sustained Load', arXiv:2603.23640 (2026), Section 4.4 and Table 8 (Samsung "
                "Galaxy S24 Ultra); setup in Tables 1-2 and Sections 3.1-3.5; the PDF is in github.com/conscious-engines/"
                "TinyBench report/ (commit 84b95b10)",
    "url": "https://arxiv.org/abs/2603.23640",
    "device": "Samsung Galaxy S24 Ultra (Snapdragon 8 Gen 3, 12 GB LPDDR5X), Android 16",
    "profile": "snapdragon-8-gen-3",
    "runtime": "MLC-LLM 0.1.0 on the Adreno 750 GPU (OpenCL 3.0, TVM 0.14), Qwen2.5-1.5B-Instruct q4f16_2; model "
               "loaded once, one warm-up discarded, iterations 1 s apart; iterations 1-5 kept (at iteration 6 the "
               "thermal governor floored the GPU at 231 MHz); 250-token prompt (Section 3.3; the abstract says 258), "
               "EOS-terminated output, 504 decode tokens on average",
    "energy_includes": "nothing usable: the Battery Manager power readings were found unreliable under GPU load and "
                       "not reported; the state of charge fell 1 % (94 -> 93 %) over the 5 kept iterations, at 1 % "
                       "resolution, so no energy ratio",
    "time_is": "mean prefill time (prompt submission to first token) and mean decode time per iteration (Table 8); "
               "run_s here is their sum, model load excluded",
    "memory_is": "not published",
    # The estimator models llama.cpp on the CPU cores; this runtime is not that, so the row's ratios are
    # printed but kept out of the held-out medians and worst ratios (see _summary).
    "not_comparable": "MLC-LLM on the Adreno 750 GPU, not llama.cpp on the CPU cores the estimator models (their "
                      "bandwidth efficiency, compute and power); q4f16_2 also keeps the embedding and output layer "
                      "in fp16 (mlc_llm/quantization/quantization.py: quantize_embedding=False, "
                      "quantize_final_fc=False), so every token reads more bytes than the Q4_0 shape estimated here; "
                      "the 25 s prefill for 250 tokens is likely MLC's OpenCL compilation and dispatch (the "
                      "authors' reading, Section 4.4). "
                      "The ratios measure the runtime difference, not the estimator's error",
}

# Huang et al. (MNN-AECS): llama.cpp is one of their baselines. Read from a Markdown conversion of
# the paper's PDF in the stored GitHub index (its repository is not named by the index); Table 9's
# layout was lost in that conversion, so each baseline row is a run of numbers in the table's
# model order (Qwen2.5-1.5B, Qwen2.5-3B, Llama3.2-1B, Llama3.2-3B), three per model: decode speed
# (token/s), battery (uAh/token), energy (mJ/token). That order holds for the MNN-AECS Mate 40 Pro
# row against Table 4 (20.3 tok/s, 298.2 mJ/tok vs 20.6, 300), and every llama.cpp triple below
# has energy / battery near one battery voltage. One team, one protocol, two phones: two entries
# (one profile each), one independent source.
_HUANG_CITATION = ("Huang, Xue, Xin, Niu, Zhang, Jiang, Wang, Wang, Lv, Wu, Chen, 'MNN-AECS: Energy Optimization "
                   "for LLM Decoding on Mobile Devices via Adaptive Core Selection', arXiv:2506.19884 (2025), Table 9 "
                   "(dataset experiments, llama.cpp baseline rows), setup in Section 5.1, Table 2 (devices), Table 8 "
                   "(llama.cpp threads), Section 4.2 (energy profiling); testbed: github.com/huangzhengxiang/"
                   "LLM-Profiler (commit 028302ab), for the energy code, the quantization notes and the dataset samples")
_HUANG_RUNTIME = ("llama.cpp, CPU, 8 threads (Table 8), as a baseline in the authors' Android testbed app; Qwen and "
                  "Llama models 4-bit, Q4_1: the paper says only '4-bit', and the testbed's list of the models it "
                  "tested names llama.cpp's as *-q4_1.gguf (model-converter/description.md: llama3_2-1b/3b-instruct, "
                  "qwen2_5-1_5b/3b-instruct; its llama_cpp.md converts to Q4_1 or Q4_0 'to compare'); dataset "
                  "experiments: a random subset of MathQA, TruthfulQA, ShareGPT and RoleBench, figures "
                  "averaged over the 4 datasets (per-turn prompt means 32-83 tokens in the testbed's samples, "
                  "dataset/samples/sample_stats.json); unplugged, cooled below 40 C before each test, battery above 50 %")
_HUANG_ENERGY = ("BatteryManager current x voltage polled every 50 ms (the OS updates every 250 ms), mean power x "
                 "time; nothing subtracted: the whole phone's draw with the testbed app in the foreground (its layout "
                 "keeps the screen on, android:keepScreenOn in commit 028302ab; the paper does not say). Per token of "
                 "the decode phase (Section 5.1 lists mJ/token beside decode speed; Table 4, Mate 40 Pro: llama.cpp "
                 "8.8 W, 10.2 tok/s, 860 mJ/tok, i.e. decode power / decode speed). The estimate adds the profile's "
                 "idle_w (an assumption) to its decode power above idle, so both sides count the whole draw")

HUANG_8ELITE = {
    "id": "huang2025-8elite",
    "citation": _HUANG_CITATION,
    "url": "https://arxiv.org/abs/2506.19884",
    "device": "Xiaomi 15 Pro (Snapdragon 8 Elite, 2x Oryon 4.32 GHz + 6x Oryon 3.53 GHz, 16 GB), HyperOS 2.0.23",
    "profile": "snapdragon-8-elite",
    "runtime": _HUANG_RUNTIME,
    "energy_includes": _HUANG_ENERGY,
    "energy_idle_subtracted": False,
    "time_is": "decode speed only (token/s)",
    "memory_is": "not published",
}

HUANG_8GEN3 = dict(HUANG_8ELITE, **{
    "id": "huang2025-8gen3",
    "device": "Meizu 21 (Snapdragon 8 Gen 3, 1x X4 3.3 GHz + 3x A720 3.15 GHz + 2x A720 2.96 GHz + 2x A520 2.27 GHz, "
              "12 GB), FlymeOS 11.2.0",
    "profile": "snapdragon-8-gen-3",
    # Same runtime as the estimator models, so the rows stay in the held-out figures; what differs:
    "caveat": "llama.cpp ran 8 threads here, the 2 Cortex-A520 cores included (Xiao et al., arXiv:2410.03613, "
              "Section V-A1, found the two little cores slow llama.cpp on this SoC). The estimate runs 8 threads "
              "too, and each step lasts at least an A520's 1/8 share of the work (estimate.little_core_s: the "
              "form of an even split; llama.cpp's chunked matmuls do not split evenly, so the form is empirical) at the in-order little-core rate fitted on one "
              "other row (geerling-q6a TinyLlama-1.1B, Cortex-A55), never on these rows. Power is the profile's "
              "unfitted 6-thread figure shared among its cores by each core type's published single-core power "
              "(X4, A720, A520; device_profiles/snapdragon-8-gen-3.toml, estimate.phase_power_w) and summed over "
              "the 8 cores, fitted to nothing; energy per token is power / decode speed on both sides",
})

XIAO = {
    "id": "xiao2024",
    "citation": "Xiao, Huang, Chen, Tian, 'Understanding Large Language Models in Your Pockets: Performance Study on "
                "COTS Mobile Devices', arXiv:2410.03613 (IEEE Trans. Mobile Computing, 2026), Table II and Section "
                "IV-B; setup in Section III and Table I. Read from a Markdown conversion of the paper in the stored "
                "GitHub index (its repository is not named by the index)",
    "url": "https://arxiv.org/abs/2410.03613",
    "device": "vivo Pad3 Pro tablet (MediaTek Dimensity 9300, 16 GB, 10 GB available), Android 14",
    "profile": "dimensity-9300",
    "runtime": "llama.cpp, CPU, 6 threads, Llama-2-7B 4-bit (K-quant); 64-token prompt, 128 generated tokens; "
               "20 consecutive rounds",
    "energy_includes": "the OS settings' battery use of the app (the system's attribution to the app, not a gauge "
                       "reading of the whole device), per round over 20 consecutive rounds, in mAh",
    "time_is": "prefill and decode speed only (token/s)",
    "memory_is": "not published (Section IV-A: about 3.8 GB during llama.cpp inference across devices)",
}

# A developer's benchmark notes in a public repository (not a paper): llama.cpp's own tools'
# output, raw, on a Galaxy S25. Only the F16 runs are used: an F16 file is the same bytes whoever
# made it, and F16 matmuls need no int8 dot-product instructions, which these builds may lack.
LLMRS2_S25 = {
    "id": "llmrs2-s25",
    "citation": "hedone21/llm_rs2 (GitHub, commit 31a97d30), a developer's benchmark notes with the tools' raw "
                "output: .agent/research/2026-04-20_qwen15b_host_vs_device_bench/ (REPORT.md, "
                "llamacpp_f16_run1.log: llama-bench) and results/memory/memory_compare_both_20260319_114119.json "
                "(llama-cli's log)",
    "url": "https://github.com/hedone21/llm_rs2",
    "device": "Samsung Galaxy S25 (SM-S931N, Snapdragon 8 Elite; the logs name its Adreno 830)",
    "profile": "snapdragon-8-elite",
    "runtime": "llama.cpp on the CPU, F16 models: llama-bench (build 983df14, NDK r29), 6 threads, pp128 and tg128, "
               "-r 3, the CPU at or below 38 C before each run (65-72 C after); llama-cli (build 5827, 67d1ef23), "
               "8 threads, a 12-token prompt and 256 generated tokens, greedy",
    "energy_includes": "no energy or power published",
    "time_is": "throughputs only (llama-bench's t/s; llama-cli's eval rate)",
    "memory_is": "not published",
    "left_out": "the same notes' Q4_0 runs: the Qwen2.5-1.5B Q4_0 file held 1.12 GiB, 29 % more than llama-quantize's "
                "Q4_0 for that shape, and its prompt ran at 62 t/s against F16's 108 (llama-cli's Llama-3.2-1B Q4_0: "
                "9.4 t/s); that build's system_info lists NEON and ARM_FMA but no DOTPROD or MATMUL_INT8, "
                "so its int8 kernels are not the ones a phone build uses",
}

# A seventh source: a phone app's committed benchmark matrix (PocketPal), llama.cpp through
# llama.rn on the CPU, the same GGUF files at many types on each phone. Its Q8_0 / Q4_K_M pairs
# set the profiles' per-type decode rate (TYPE_RATE_ROWS below); its Galaxy S23 rows of models
# the estimator has a shape for are held out on the snapdragon-8-gen-2 profile, and its POCO X7
# Pro rows (an eighth source, below) test a fitted phone with no little cores.
POCKETPAL = {
    "citation": "PocketPal's committed benchmark matrix, github.com/a-ghorbani/pocketpal-ai commit f34c6bf8, "
                "e2e/baselines/benchmark/poco-myron.json and samsung-s23.json",
    "url": "https://github.com/a-ghorbani/pocketpal-ai/tree/f34c6bf8/e2e/baselines/benchmark",
    "runtime": "llama.rn 0.12.0-rc.9 (llama.cpp), CPU, 6 threads, flash attention on, repack on (CPU_REPACK in every "
               "cell's load log), use_mmap false, pp256 / tg64, 3 repetitions",
}

POCKETPAL_S23 = {
    "id": "pocketpal-s23",
    "citation": POCKETPAL["citation"],
    "url": POCKETPAL["url"],
    "device": "Samsung Galaxy S23 (Snapdragon 8 Gen 2: 1x X3, 2x A715, 2x A710, 3x A510)",
    "profile": "snapdragon-8-gen-2",
    "runtime": POCKETPAL["runtime"],
    "energy_includes": "no energy or power published",
    "time_is": "throughputs only (llama.rn's bench: pp and tg t/s, mean of 3)",
    "memory_is": "llama.cpp's own buffers from each cell's load log, summed (total_mib: weights + KV cache + "
                 "compute buffer at n_ctx 2048), the figure PocketPal calls its authoritative per-cell footprint "
                 "(pull request #722); its peak_memory_mb is device-wide RAM and is not used",
    "caveat": "6 threads on this SoC's 1 + 2 + 2 + 3 cores put one thread on a Cortex-A510 unless the scheduler "
              "moves it, so each step waits for an A510's 1/6 share. The A510's own decode pace (1.51 bytes/cycle, "
              "2.3x the A55 pace fitted on the QCS6490) comes from the same GGUF (Qwen3.5-2B Q4_K_M) on this SoC "
              "twice: 15.48 tok/s on the five big cores (llamacpp-s23u, which also sets the profile's 5-thread "
              "efficiency) and 12.99 tok/s here at 6 threads (this source's Qwen3.5-2B row, in-sample). These rows "
              "are held out and fitted by neither. The two runs differ in build and context depth. At the A55 pace "
              "the rows read 0.35-0.45. The A510's prefill pace (20.8 Q4_K-FLOPs a cycle, 6.3x the A55's) comes "
              "from the same in-sample row's prompt speed, its work from the file's block bytes; at the A55's "
              "pace the rows read 0.14-0.17. The Q8_0 cells are left out: their ratio to Q4_K_M set the profile's "
              "wide_weight_rate",
}

# The same matrix on a phone with no little cores: the Dimensity 8400's eight Cortex-A725s. Its
# Qwen2.5-1.5B rows set the profile's bandwidth efficiency (fit_decode_efficiency); every other
# model the estimator has a shape for is held out, so the rows test how the fitted phone carries
# over to other models, not whether an unmeasured phone is right.
POCKETPAL_KLEE = {
    "id": "pocketpal-klee",
    "citation": "PocketPal's committed benchmark matrix, github.com/a-ghorbani/pocketpal-ai commit f34c6bf8, "
                "e2e/baselines/benchmark/poco-x7-klee.json (the phone: SWEEP-PLAN.md, 'POCO X7 Pro Klee')",
    "url": POCKETPAL["url"],
    "device": "POCO X7 Pro (MediaTek Dimensity 8400, MT6899: 1x 3.25 + 3x 3.0 + 4x 2.1 GHz Cortex-A725, 8 GB)",
    "profile": "dimensity-8400",
    "runtime": POCKETPAL["runtime"],
    "energy_includes": "no energy or power published",
    "time_is": "throughputs only (llama.rn's bench: pp and tg t/s, mean of 3)",
    "memory_is": "llama.cpp's own buffers from each cell's load log, summed (total_mib: weights + KV cache + "
                 "compute buffer at n_ctx 2048), the figure PocketPal calls its authoritative per-cell footprint "
                 "(pull request #722); its peak_memory_mb is device-wide RAM and is not used",
    "caveat": "the profile's bandwidth efficiency is fitted on this source's Qwen2.5-1.5B Q4_0 and Q4_K_M decode "
              "(in-sample), and its compute on the same two rows' prefill (fit_prefill_compute, in Q4_K's FLOPs under "
              "the profile's prefill_type_rates); the other models are held out. The Q8_0 rows are left out: "
              "their ratio to Q4_K_M set the profile's wide_weight_rate. The unfitted 0.5 read this phone 1.2-1.5x "
              "too fast",
}

# A ninth source: the Snapdragon 8 Gen 2 with its decode threads pinned to its five big cores, the
# profile's own thread count and placement (a llama.cpp bug report with its command line). Its
# one row sets the snapdragon-8-gen-2 bandwidth efficiency; the model has no estimator shape,
# so the fit reads the file's bytes (fit_decode_efficiency).
LLAMACPP_S23U = {
    "id": "llamacpp-s23u",
    "citation": "tigrohvost, 'Performance regressions on Android arm64 CPU (Snapdragon 8 Gen 2)', llama.cpp "
                "issue #26957 (2026-08-12): the summary table (medians) and the Environment and Method sections",
    "url": "https://github.com/ggml-org/llama.cpp/issues/26957",
    "device": "Samsung Galaxy S23 Ultra (SM-S918B, Snapdragon 8 Gen 2), Android 16",
    "profile": "snapdragon-8-gen-2",
    "runtime": "official llama.cpp release binaries (llama-bXXXXX-bin-android-arm64, the armv9.2 CPU variant), "
               "CPU only, llama-server -c 10240 -t 5 -tb 8 -Cr 3-7 --cpu-strict 1 -Crb 0-7 --cpu-strict-batch 1: "
               "decode on 5 threads pinned to CPUs 3-7 (2x A715, 2x A710, the X3), prompts on all 8 cores; "
               "~2k-token prompts, 192-token generations",
    "energy_includes": "no energy or power published",
    "time_is": "medians of the decode and prompt tok/s llama-server reported, per build (b10092, b10333, b10369)",
    "memory_is": "not published (the GGUF is 1.30 GiB, 'fully resident, no swap activity')",
    "caveat": "in-sample: its decode at b10092 sets the snapdragon-8-gen-2 profile's bandwidth efficiency "
              "(fit_decode_efficiency). Qwen3.5-2B has no estimator shape, so the fit reads the file's 1.30 GiB as "
              "the bytes of a step, every byte at the 4-bit rate, with no cache or overhead term: the output head "
              "is the tied embedding, read whole, so a step reads about the file (PocketPal's load log for the same "
              "GGUF holds 325 MiB more than the file, the repacked copy of that table). Decode ran at ~2k tokens "
              "of context, whose cache and recurrent state the fit leaves out, so it reads the efficiency a little "
              "low. Later builds decode 0.921x and 0.899x as fast (the issue's regression); the prompt figure "
              "(72.7 t/s) ran on all 8 cores, A510s included, so it does not set the 5-thread compute",
}

# A tenth source: the Snapdragon 8 Elite under a 2026 llama.cpp release build (llama-bench, 6 threads), a
# developer's committed raw output. Held out: the 8 Elite profile is fitted on Ehsani's 2025 llama-cli rows
# at 8 threads, so these rows test how that fit carries to a newer build and fewer threads.
QMESH_S25U = {
    "id": "qmesh-s25u",
    "citation": "SatyamGaba/Qmesh-AI (GitHub, commit 6ad05d5c): results/energy/bench_local_cpu_pp128tg32.txt and "
                "bench_local_cpu_tg256.txt (llama-bench's raw tables), the conditions in results/RUNLOG.md "
                "('Controlled phone re-bench (unplugged, 90%, 28 C, screen on)'), the device and binary in STATUS.md",
    "url": "https://github.com/SatyamGaba/Qmesh-AI",
    "device": "Samsung Galaxy S25 Ultra (SM-S938U1, Snapdragon 8 Elite SM8750), Android 16",
    "profile": "snapdragon-8-elite",
    "runtime": "llama.cpp b10270 (071327508), the official android-arm64 prebuilt (its armv9.2 CPU variant), "
               "llama-bench on the CPU (-ngl 0), 6 threads, pp128 / tg32 (-r 3) and tg256, its defaults otherwise",
    "energy_includes": "no energy or power published in these runs",
    "time_is": "llama-bench's t/s (mean of the repetitions)",
    "memory_is": "not published (the GGUF: 2.21 GiB)",
    "caveat": "a 2026 build at 6 threads, while the profile's decode (efficiency 0.534 plus 10.4 ms a token) and "
              "compute are fitted on Ehsani's 2025 llama-cli rows at 8 threads, all of the SoC's cores. The same "
              "repository's earlier sweep (STATUS.md, a run it later calls a bad state: tg32 10.5 t/s at 4 threads, "
              "10.6 at 6, 8.0 at 8) has all 8 threads the slowest. Without the 10.4 ms per token these rows would "
              "read about 0.8 on decode (a one-off check, not a figure this command prints)",
}

SOURCES = {s["id"]: s for s in (EHSANI, GEERLING_Q6A, TUMMALAPALLI, HUANG_8ELITE, HUANG_8GEN3, XIAO, LLMRS2_S25,
                                POCKETPAL_S23, POCKETPAL_KLEE, LLAMACPP_S23U, QMESH_S25U)}


@dataclass(frozen=True)
class Anchor:
    """One published run. ``shape`` is an ``estimate.PUBLISHED_SHAPES`` key, or None when the
    estimator has no shape for the model (such a row can only be in-sample for the power and
    setup fits, through its published times and weight size)."""

    source: str
    model: str
    quant: str
    prompt_tokens: int
    gen_tokens: int
    held_out: bool
    shape: str | None = None
    params_b: float | None = None  # published parameter count, billions
    weights_mib: float | None = None  # llama.cpp's model buffer
    prefill_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None
    prefill_s: float | None = None
    decode_s: float | None = None
    run_s: float | None = None  # llama.cpp's total time: prefill + decode, no load
    average_power_w: float | None = None  # mean net power over the energy window
    joules_per_run: float | None = None  # the energy window (see the source's energy_includes)
    peak_memory_mb: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The llama.cpp quantization with the same bits per linear weight, when the published one
    # is another runtime's (None: ``quant`` itself)
    estimator_quant: str | None = None
    decode_mj_per_token: float | None = None  # energy per decoded token (see the source's energy_includes)
    mah_per_run: float | None = None  # battery charge per run, as published
    # llama.cpp threads of the run (required: the estimate is made at this count; where the
    # source does not state it, the notes say what was taken instead)
    threads: int = field(kw_only=True)

    @property
    def window_s(self) -> float | None:
        """The energy window's length: energy / mean power (samples are evenly spaced)."""
        if self.joules_per_run is None or not self.average_power_w:
            return None
        return self.joules_per_run / self.average_power_w


def _e(model: str, quant: str, prompt: int, params: float, weights: float, pp: float, tg: float, tp: float, td: float,
       total: float, power: float, joules: float, peak: float, held_out: bool, shape: str | None = None,
       notes: tuple[str, ...] = ()) -> Anchor:
    return Anchor("ehsani2026", model, quant, prompt, 100, held_out, shape, params, weights, pp, tg, tp, td, total,
                  power, joules, peak, notes, threads=8)


def _h(source: str, model: str, shape: str, tg: float, mj: float, uah: float) -> Anchor:
    """One llama.cpp baseline of Huang et al.'s Table 9: decode token/s, mJ and uAh per token."""
    return Anchor(source, model, "Q4_1 (4-bit)", _HUANG_PROMPT, _HUANG_GEN, True, shape,
                  decode_tokens_per_s=tg, decode_mj_per_token=mj, estimator_quant="q4_1", threads=8,
                  notes=(f"Table 9, llama.cpp row: {tg} token/s, {uah} uAh/token, {mj} mJ/token (averaged over 4 "
                         f"datasets)",
                         f"estimated at {_HUANG_PROMPT} prompt + {_HUANG_GEN} generated tokens (an evaluation point, "
                         f"not published: the dataset lengths vary; the paper's shortest fixed-length setting), as "
                         f"Q4_1, the type the authors' testbed lists for its llama.cpp models (the paper says "
                         f"'4-bit'; as Q4_0 every linear weight would read 10 % fewer bytes)"))


# Huang et al.'s Table 9 is per token over datasets of varying lengths: the estimate is taken at the
# paper's shortest fixed-length setting (Section 5.1). Per-token decode figures barely depend on it:
# the estimated tok/s moves under 1 % between 32 + 84 and 83 + 360 tokens on both profiles.
_HUANG_PROMPT, _HUANG_GEN = 64, 128


# Ehsani et al., final_results.csv, every dense model (OLMoE is a mixture of experts: a token
# reads ~1.3 B of its 6.9 B parameters, which this estimator does not model; left out).
# In-sample: every IQ4_XS row and the Q4_K_M rows of models without an estimator shape.
# Held out: the Q4_K_M rows the estimator can shape, so every estimated figure is checked.

# PocketPal's models, by the matrix's id: the name, the estimator's shape and the published
# parameter count (billions). Phi-3.5-mini has Phi-3-mini's config, so its shape.
POCKETPAL_MODELS = {"qwen2.5-1.5b": ("Qwen2.5-1.5B", "qwen2.5-1.5b", 1.54),
                    "smollm2-1.7b": ("SmolLM2-1.7B", "smollm2-1.7b", 1.71),
                    "qwen3-1.7b": ("Qwen3-1.7B", "qwen3-1.7b", 1.72),
                    "phi-3.5-mini": ("Phi-3.5-mini", "phi-3-mini", 3.82),
                    "phi-4-mini": ("Phi-4-mini", "phi-4-mini", 3.84)}
# Per GGUF, the same file and settings on every phone of the matrix, from its load log (MiB): the
# weights (the CPU + CPU_REPACK buffers) and llama.cpp's whole footprint (total_mib: weights + KV
# cache + compute buffer, at n_ctx 2048, n_ubatch 512, flash attention on).
POCKETPAL_BUFFERS_MIB = {("qwen2.5-1.5b", "Q4_0"): (1071.0, 1429.75), ("qwen2.5-1.5b", "Q4_K_M"): (1117.26, 1476.01),
                         ("smollm2-1.7b", "Q4_0"): (1024.88, 1512.88), ("smollm2-1.7b", "Q4_K_M"): (1083.75, 1571.75),
                         ("qwen3-1.7b", "Q4_0"): (1169.07, 1697.82), ("qwen3-1.7b", "Q4_K_M"): (1217.35, 1746.1),
                         ("phi-3.5-mini", "Q4_0"): (2080.66, 2939.3), ("phi-3.5-mini", "Q4_K_M"): (2281.66, 3140.3),
                         ("phi-4-mini", "Q4_0"): (2696.38, 3371.14), ("phi-4-mini", "Q4_K_M"): (2849.38, 3524.14)}


def _pocketpal_rows(source: str, file: str, in_sample: str | None,
                    cells: dict[tuple[str, str], tuple[float, float]]) -> tuple["Anchor", ...]:
    """One PocketPal phone's cells, {(matrix id, quant): (pp t/s, tg t/s)}, as rows at its 6
    threads and pp256 / tg64; the rows of matrix id ``in_sample`` are in-sample."""
    rows = []
    for (pid, quant), (pp, tg) in cells.items():
        model, shape, params = POCKETPAL_MODELS[pid]
        mib, total = POCKETPAL_BUFFERS_MIB[pid, quant]
        rows.append(Anchor(source, model, quant, 256, 64, pid != in_sample, shape, params, mib,
                           prefill_tokens_per_s=pp, decode_tokens_per_s=tg, peak_memory_mb=total, threads=6,
                           notes=(f"{file}, {pid} {quant.lower()}: pp256 {pp} t/s, tg64 {tg} t/s (mean of 3); "
                                  f"weights {mib} MiB in the load log's buffers (CPU + CPU_REPACK), llama.cpp's "
                                  f"whole footprint {total} MiB (total_mib)",)))
    return tuple(rows)


PUBLISHED: tuple[Anchor, ...] = (
    _e("Qwen2-0.5B", "Q4_K_M", 103, 0.49, 373, 189.24, 50.45, 0.54, 1.98, 2.53, 8.35, 43.95, 678, True, "qwen2.5-0.5b",
       ("Qwen2-0.5B has the same config as Qwen2.5-0.5B (24 x 896, 14/2 heads, ff 4864, tied)",)),
    _e("Qwen2.5-1.5B", "Q4_K_M", 113, 1.54, 1059, 93.00, 31.60, 1.22, 3.16, 4.37, 12.63, 92.87, 1373, True, "qwen2.5-1.5b"),
    _e("Qwen2.5-3B", "Q4_K_M", 113, 3.09, 2001, 45.19, 19.84, 2.50, 5.04, 7.54, 14.20, 151.54, 2320, True, "qwen2.5-3b"),
    _e("Llama-3.1-8B", "Q4_K_M", 119, 8.03, 4685, 18.27, 10.45, 6.51, 9.57, 16.13, 14.60, 291.69, 5007, True, "llama-3.1-8b"),
    _e("Phi-2", "Q4_K_M", 108, 2.78, 1704, 43.87, 21.37, 2.46, 4.68, 7.15, 14.40, 143.78, 1969, False),
    _e("Qwen2.5-7B", "Q4_K_M", 103, 7.62, 4460, 19.47, 10.50, 5.29, 9.52, 14.83, 13.42, 242.20, 4792, False),
    _e("Gemma-2-9B", "Q4_K_M", 93, 9.24, 5488, 14.69, 7.24, 6.33, 13.81, 20.15, 12.94, 316.32, 6163, False),
    _e("Qwen2-0.5B", "IQ4_XS", 103, 0.49, 327, 202.44, 56.17, 0.51, 1.78, 2.29, 7.22, 36.83, 632, False, "qwen2.5-0.5b"),
    _e("Qwen2.5-1.5B", "IQ4_XS", 113, 1.54, 848, 80.34, 31.26, 1.41, 3.20, 4.61, 12.33, 93.42, 1162, False, "qwen2.5-1.5b"),
    _e("Phi-2", "IQ4_XS", 105, 2.78, 1447, 41.49, 20.82, 2.53, 4.80, 7.35, 14.07, 141.96, 1712, False),
    _e("Qwen2.5-3B", "IQ4_XS", 113, 3.09, 1652, 39.29, 19.79, 2.88, 5.05, 7.94, 14.35, 157.80, 1971, False, "qwen2.5-3b"),
    _e("Qwen2.5-7B", "IQ4_XS", 113, 7.62, 4017, 16.63, 10.65, 6.79, 9.39, 16.26, 14.26, 251.54, 4349, False),
    _e("Llama-3.1-8B", "IQ4_XS", 119, 8.03, 4234, 15.53, 9.12, 7.66, 10.96, 18.68, 13.53, 302.50, 4556, False, "llama-3.1-8b"),
    _e("Gemma-2-9B", "IQ4_XS", 93, 9.24, 4937, 12.69, 6.81, 7.33, 14.68, 22.06, 12.65, 325.21, 5612, False),
    # A different SoC, a different person, a board at the wall. The TinyLlama row is the one
    # in-sample row of the little-core term (fit_little_cores); nothing else is fitted to it.
    Anchor("geerling-q6a", "TinyLlama-1.1B", "Q4_K_M", 512, 128, False, "tinyllama-1.1b", 1.10, 636.18,
           prefill_tokens_per_s=25.25, decode_tokens_per_s=15.23, average_power_w=7.8, threads=8,
           notes=("IN-SAMPLE: the one row the two little-core constants are fitted on (fit_little_cores: "
                  "decode bytes and prefill int8 ops per cycle of an in-order little core); its decode and "
                  "prefill ratios are ~1 by construction and count in no held-out figure",
                  "wall power 7.8 W during the run, idle not published: no power or energy ratio",
                  "llama-bench pp512 / tg128, 8 threads as its table's threads column says, one per core: "
                  "4 Cortex-A78 and 4 Cortex-A55, so each step waits for an A55")),
    Anchor("geerling-q6a", "Llama-3.2-3B", "Q4_K_M", 512, 128, True, "llama-3.2-3b", 3.21, 1.87 * 1024,
           prefill_tokens_per_s=8.76, threads=8,
           notes=("tg128 not in the stored copy of the thread",
                  "llama-bench pp512, 8 threads as its table's threads column says: 4 Cortex-A78 and 4 Cortex-A55")),
    # A third team, a phone, a GPU runtime: held out; printed with why it cannot be reconciled.
    Anchor("tummalapalli2026", "Qwen2.5-1.5B-Instruct", "q4f16_2", 250, 504, True, "qwen2.5-1.5b", 1.5,
           decode_tokens_per_s=9.93, prefill_s=25.128, decode_s=51.294, run_s=25.128 + 51.294,
           estimator_quant="q4_0", threads=6,
           notes=("Table 8 means over iterations 1-5: 504 decode tokens, decode 51,294 ms, 9.93 tok/s, prefill "
                  "25,128 ms; run_s = prefill + decode",
                  "estimated as Q4_0 (4.5 bits per linear weight, as q4f16_2's int4 groups of 32, float16 model "
                  "dtype) on the llama.cpp CPU profile",
                  "threads: MLC-LLM ran on the GPU, so the source has no CPU thread count; estimated at the "
                  "profile's default (runtime.threads = 6)")),
    # A fourth team (Huang et al., MNN-AECS), llama.cpp CPU on two phones: held out, fitted to nothing.
    *(_h(src, model, shape, tg, mj, uah) for src, rows in (
        ("huang2025-8elite", (("Qwen2.5-1.5B", "qwen2.5-1.5b", 33.5, 318.7, 21.2),
                              ("Qwen2.5-3B", "qwen2.5-3b", 14.1, 756.8, 50.2),
                              ("Llama3.2-1B", "llama-3.2-1b", 41.5, 267.8, 18.1),
                              ("Llama3.2-3B", "llama-3.2-3b", 15.1, 742.2, 50.1))),
        ("huang2025-8gen3", (("Qwen2.5-1.5B", "qwen2.5-1.5b", 11.3, 853.4, 56.9),
                             ("Qwen2.5-3B", "qwen2.5-3b", 7.8, 1179.0, 81.3),
                             ("Llama3.2-1B", "llama-3.2-1b", 18.2, 525.3, 36.6),
                             ("Llama3.2-3B", "llama-3.2-3b", 7.3, 1226.8, 83.2))),
    ) for model, shape, tg, mj, uah in rows),
    # A sixth source (a developer's notes, the tools' raw output), the 8 Elite, F16: held out.
    Anchor("llmrs2-s25", "Qwen2.5-1.5B", "F16", 128, 128, True, "qwen2.5-1.5b", 1.54, 2.88 * 1024,
           prefill_tokens_per_s=108.49, decode_tokens_per_s=19.76, threads=6,
           notes=("llama-bench, 6 threads: pp128 108.49 +- 3.63 t/s, tg128 19.76 +- 0.03 t/s; 2.88 GiB, the bytes "
                  "of the estimator's F16 shape",)),
    Anchor("llmrs2-s25", "Llama-3.2-1B", "F16", 12, 256, True, "llama-3.2-1b", 1.24, 2357.26,
           decode_tokens_per_s=19.31, threads=8,
           notes=("llama-cli, 8 threads, no layer offloaded: eval 13,204.86 ms / 255 runs (19.31 tokens per "
                  "second); the 12-token prompt's rate (74.35 t/s) is too short to compare as prefill",)),
    # A seventh source (PocketPal's matrix) on the Snapdragon 8 Gen 2 itself (all held out) and on the Dimensity 8400,
    # all big cores (Qwen2.5-1.5B in-sample: it sets that profile's bandwidth efficiency).
    *_pocketpal_rows("pocketpal-s23", "samsung-s23.json", None, {
        ("qwen2.5-1.5b", "Q4_0"): (119.81, 19.66), ("qwen2.5-1.5b", "Q4_K_M"): (85.9, 18.48),
        ("smollm2-1.7b", "Q4_0"): (106.51, 17.81), ("smollm2-1.7b", "Q4_K_M"): (72.08, 15.61),
        ("qwen3-1.7b", "Q4_0"): (103.89, 17.21), ("qwen3-1.7b", "Q4_K_M"): (79.64, 15.97),
        ("phi-3.5-mini", "Q4_0"): (43.12, 9.94), ("phi-3.5-mini", "Q4_K_M"): (28.62, 7.5),
        ("phi-4-mini", "Q4_0"): (46.5, 8.79), ("phi-4-mini", "Q4_K_M"): (38.15, 8.73)}),
    *_pocketpal_rows("pocketpal-klee", "poco-x7-klee.json", "qwen2.5-1.5b", {
        ("qwen2.5-1.5b", "Q4_0"): (160.07, 25.68), ("qwen2.5-1.5b", "Q4_K_M"): (102.19, 23.89),
        ("smollm2-1.7b", "Q4_0"): (128.02, 24.38), ("smollm2-1.7b", "Q4_K_M"): (83.51, 22.11),
        ("qwen3-1.7b", "Q4_0"): (155.79, 22.06), ("qwen3-1.7b", "Q4_K_M"): (102.56, 20.55),
        ("phi-3.5-mini", "Q4_0"): (57.88, 12.78), ("phi-3.5-mini", "Q4_K_M"): (34.39, 9.86),
        ("phi-4-mini", "Q4_0"): (65.96, 11.54), ("phi-4-mini", "Q4_K_M"): (40.77, 9.78)}),
    # The S23's cell of the same GGUF as the ninth source's row, at 6 unpinned threads: with that row it
    # measures what the sixth thread, on a Cortex-A510, costs (fit_core_decode_pace). In-sample; the
    # estimator has no shape for the model, so it carries no ratios.
    Anchor("pocketpal-s23", "Qwen3.5-2B", "Q4_K_M", 256, 64, False, None, None, 1655.56,
           prefill_tokens_per_s=65.36, decode_tokens_per_s=12.99, threads=6,
           notes=("samsung-s23.json, qwen3.5-2b q4_k_m: pp256 65.36 t/s, tg64 12.99 t/s (mean of 3); weights 1655.56 "
                  "MiB in the load log's buffers, the 1.30 GiB file plus the repacked copy of its tied embedding",
                  "in-sample: with llamacpp-s23u's run of the same GGUF on the 5 big cores it sets the Cortex-A510's "
                  "decode pace (estimate.CORE_DECODE_BYTES_PER_CYCLE)")),
    # A ninth source, the 8 Gen 2 on its five big cores: in-sample (sets that profile's efficiency).
    Anchor("llamacpp-s23u", "Qwen3.5-2B", "Q4_K_M", 2048, 192, False, None, None, 1.30 * 1024,
           decode_tokens_per_s=15.48, threads=5,
           notes=("issue #26957's summary table, median decode tok/s of 192-token generations: b10092 15.48, b10333 "
                  "14.26, b10369 13.92; prompt tok/s (~2k tokens, 8 threads on all cores) 72.7, 73.9, 64.5",
                  "PocketPal's S23 cell of the same model and type at 6 unpinned threads: tg64 12.99 t/s "
                  "(samsung-s23.json), 0.84x of this run's 5 pinned big cores")),
    # A tenth source, the 8 Elite under a 2026 release build at 6 threads: held out.
    Anchor("qmesh-s25u", "Qwen3-4B-Instruct-2507", "Q4_0", 128, 32, True, "qwen3-4b", 4.02, 2.21 * 1024,
           prefill_tokens_per_s=126.82, decode_tokens_per_s=24.53, threads=6,
           notes=("bench_local_cpu_pp128tg32.txt: pp128 126.82 +- 13.43, tg32 24.53 +- 0.37 t/s (2.21 GiB, 4.02 B); "
                  "Qwen3-4B-Instruct-2507 has Qwen3-4B's config",)),
    Anchor("qmesh-s25u", "Qwen3-4B-Instruct-2507", "Q4_0", 1, 256, True, "qwen3-4b", 4.02, 2.21 * 1024,
           decode_tokens_per_s=23.69, threads=6,
           notes=("bench_local_cpu_tg256.txt: tg256 23.69 +- 1.14 t/s, the same build and file",)),
    # A fifth team (Xiao et al.), llama.cpp CPU on a Dimensity 9300 tablet: held out. The estimator
    # has no Llama-2-7B shape, so the row is listed without ratios (with the reason).
    Anchor("xiao2024", "Llama-2-7B", "4-bit K-quant", 64, 128, True, None, 7.0, prefill_tokens_per_s=10.63,
           decode_tokens_per_s=8.22, mah_per_run=4.54, threads=6,
           notes=("no Llama-2-7B shape in shapes.PUBLISHED_SHAPES, so no estimate and no ratio",
                  "Table II, (prompt, generation) = (64, 128) tokens: power drain 4.54 mAh/round, prefill 10.63 "
                  "tok/s, decode 8.22 tok/s (Huawei MatePad 12.6 Pro, Kirin 9000E: 8.28 mAh, 6.67, 4.34; no profile "
                  "for that SoC, so not listed)",)),
)


# --- per-type decode rates -------------------------------------------------------------------

# Decode reads weights of 8 bits or more faster per byte than 4-bit-class types, whose kernels
# unpack every block (runtime.wide_weight_rate, estimate.decode_read_bytes). One source has the
# same models at Q8_0 and Q4_K_M on each of three phones: PocketPal's committed benchmark matrix.
# Per model: (Q4_K_M weights MiB, Q4_K_M tg t/s, Q8_0 weights MiB, Q8_0 tg t/s), the weights as
# the load log's model buffers (CPU + CPU_REPACK), the same files on every phone of the matrix.
# gemma-4-e2b is left out: its per-layer embeddings are in those buffers but not read per token.
TYPE_RATE_WEIGHTS_MIB: dict[str, tuple[float, float]] = {
    "deepseek-r1-distill-qwen-1.5b": (1059.88, 1801.10),
    "gemma-3-1b": (1068.49, 1319.54),
    "lfm2.5-1.2b-instruct": (799.77, 1322.25),
    "phi-3.5-mini": (2281.66, 3872.38),
    "phi-4-mini": (2849.38, 4510.28),
    "qwen2.5-1.5b": (1117.26, 1801.10),
    "qwen3-1.7b": (1217.35, 2059.07),
    "qwen3.5-0.8b": (719.65, 1023.09),
    "qwen3.5-2b": (1655.56, 2426.97),
    "smollm2-1.7b": (1083.75, 1836.38),
}


def _rate_rows(soc: str, speeds: dict[str, tuple[float, float]]) -> tuple[str, tuple[tuple[str, float, float, float, float], ...]]:
    """One phone's rows: per model (Q4_K_M MiB, Q4_K_M tg, Q8_0 MiB, Q8_0 tg) from its {model: (Q4_K_M tg,
    Q8_0 tg)} and the shared weights."""
    return soc, tuple((m, TYPE_RATE_WEIGHTS_MIB[m][0], q4_tg, TYPE_RATE_WEIGHTS_MIB[m][1], q8_tg)
                      for m, (q4_tg, q8_tg) in speeds.items())


TYPE_RATE_ROWS: dict[str, tuple[str, tuple[tuple[str, float, float, float, float], ...]]] = {
    "poco-myron": _rate_rows("Snapdragon 8 Elite Gen 5 (Oryon V3)", {
        "deepseek-r1-distill-qwen-1.5b": (38.15, 31.54),
        "gemma-3-1b": (46.79, 47.91),
        "lfm2.5-1.2b-instruct": (58.84, 44.02),
        "phi-3.5-mini": (15.40, 13.01),
        "phi-4-mini": (15.08, 12.46),
        "qwen2.5-1.5b": (40.75, 32.52),
        "qwen3-1.7b": (34.25, 28.16),
        "qwen3.5-0.8b": (55.88, 53.03),
        "qwen3.5-2b": (27.93, 24.86),
        "smollm2-1.7b": (36.37, 28.00),
    }),
    "samsung-s23": _rate_rows("Snapdragon 8 Gen 2 (Galaxy S23)", {
        "deepseek-r1-distill-qwen-1.5b": (18.47, 15.84),
        "gemma-3-1b": (20.75, 22.12),
        "lfm2.5-1.2b-instruct": (26.09, 20.73),
        "qwen2.5-1.5b": (18.48, 15.46),
        "qwen3-1.7b": (15.97, 13.44),
        "qwen3.5-0.8b": (23.93, 23.64),
        "qwen3.5-2b": (12.99, 12.88),
        "smollm2-1.7b": (15.61, 12.31),
    }),
    "poco-x7-klee": _rate_rows("Dimensity 8400 (POCO X7 Pro)", {
        "deepseek-r1-distill-qwen-1.5b": (23.61, 19.67),
        "gemma-3-1b": (30.04, 28.74),
        "lfm2.5-1.2b-instruct": (34.27, 27.90),
        "qwen2.5-1.5b": (23.89, 19.87),
        "qwen3-1.7b": (20.55, 17.64),
        "qwen3.5-0.8b": (32.12, 32.16),
        "qwen3.5-2b": (17.93, 16.84),
        "smollm2-1.7b": (22.11, 17.41),
    }),
}


def wide_weight_rate(device: str) -> float:
    """Median over the device's models of Q8_0's weight bytes read per second over Q4_K_M's
    (bytes x decode tok/s): what a profile's ``runtime.wide_weight_rate`` is set from."""
    _, rows = TYPE_RATE_ROWS[device]
    return statistics.median((q8_mib * q8_tg) / (q4_mib * q4_tg) for _, q4_mib, q4_tg, q8_mib, q8_tg in rows)


# --- per-type prefill rates ------------------------------------------------------------------

# Prompt processing is compute-bound, and each weight type has its own matmul kernel: on these
# phones a Q4_0 or Q8_0 file prefills ~1.4x as fast as the same model's Q4_K_M, and Q5_K_M or
# Q6_K ~0.75x (runtime.prefill_type_rates, estimate.prefill_work). The same matrix, pp256 t/s per
# model at (Q4_0, Q4_K_M, Q5_K_M, Q6_K, Q8_0), None where the phone has no cell; only the models
# with an estimator shape (the Q4_K_M file's Q6_K share comes from it): DeepSeek-R1-Distill-Qwen-
# 1.5B is Qwen2.5-1.5B's architecture, Phi-3.5-mini Phi-3-mini's.
PREFILL_RATE_SHAPES = {"deepseek-r1-distill-qwen-1.5b": "qwen2.5-1.5b", "phi-3.5-mini": "phi-3-mini",
                       "phi-4-mini": "phi-4-mini", "qwen2.5-1.5b": "qwen2.5-1.5b", "qwen3-1.7b": "qwen3-1.7b",
                       "smollm2-1.7b": "smollm2-1.7b"}
PREFILL_RATE_FILES = ("q4_0", "q4_k_m", "q5_k_m", "q6_k", "q8_0")
PREFILL_RATE_PP: dict[str, dict[str, tuple[float | None, ...]]] = {
    "poco-myron": {
        "deepseek-r1-distill-qwen-1.5b": (240.99, 168.23, 131.83, 125.83, 271.68),
        "phi-3.5-mini": (82.99, 55.48, 44.09, 40.86, 86.04),
        "phi-4-mini": (93.59, 64.5, 49.79, 45.65, 100.14),
        "qwen2.5-1.5b": (244.71, 173.42, 121.65, 111.91, 262.33),
        "qwen3-1.7b": (204.84, 175.86, 108.43, 111.63, 236.8),
        "smollm2-1.7b": (203.23, 131.2, 95.39, 98.16, 217.28),
    },
    "samsung-s23": {
        "deepseek-r1-distill-qwen-1.5b": (117.52, 81.22, 59.22, 57.69, 119.93),
        "phi-3.5-mini": (43.12, 28.62, 20.91, None, None),
        "phi-4-mini": (46.5, 38.15, None, None, None),
        "qwen2.5-1.5b": (119.81, 85.9, 62.54, 59.29, 124.6),
        "qwen3-1.7b": (103.89, 79.64, 61.77, 51.92, 107.46),
        "smollm2-1.7b": (106.51, 72.08, 46.36, 50.68, 89.22),
    },
    "poco-x7-klee": {
        "deepseek-r1-distill-qwen-1.5b": (158.92, 103.07, 78.09, 76.55, 150.21),
        "phi-3.5-mini": (57.88, 34.39, 27.1, 25.83, None),
        "phi-4-mini": (65.96, 40.77, 31.55, 28.16, None),
        "qwen2.5-1.5b": (160.07, 102.19, 78.4, 76.52, 155.49),
        "qwen3-1.7b": (155.79, 102.56, 78.99, 72.13, 140.06),
        "smollm2-1.7b": (128.02, 83.51, 63.77, 61.98, 121.15),
    },
}
# The phone the profiles' rates are fitted on: it is no profile's and none of its cells is a row
# of --compare-published, so the Galaxy S23's and the POCO X7 Pro's Q4_0 and Q4_K_M prefill rows
# stay held out from the rates as well as from every other fit; their own rates are a check.
PREFILL_RATE_DEVICE = "poco-myron"


def prefill_type_rates_by_model(device: str = PREFILL_RATE_DEVICE) -> dict[str, dict[str, float]]:
    """Per model with all five files on ``device``: each weight type's prefill rate against
    Q4_K's (FLOPs per second, the Q4_K_M file's Q4_K tensors = 1), from the whole-file rates.

    A file's prefill time per FLOP is its types' times weighted by their shares of the block
    matmul FLOPs (s: the Q4_K_M and Q5_K_M files' Q6_K share, from the estimator's shape; the
    other files hold one type). With r_q = pp(q) / pp(Q4_K_M):

        Q6_K:  r6 = ((1 - s) + s / R6) x R6       ->  R6 = (r6 - s) / (1 - s)
        T    = (1 - s) + s / R6                   (the Q4_K_M file's time, in Q4_K's units)
        Q4_0, Q8_0:  R = r / T                    (one type each)
        Q5_K:  T / r5 = (1 - s) / R5 + s / R6     ->  R5 = (1 - s) / (T / r5 - s / R6)
    """
    from edgeagent.shapes import shape_from_config

    out = {}
    for model, cells in PREFILL_RATE_PP[device].items():
        if any(c is None for c in cells):
            continue
        pp = dict(zip(PREFILL_RATE_FILES, cells))
        r = {q: pp[q] / pp["q4_k_m"] for q in PREFILL_RATE_FILES}
        by_type = shape_from_config(PREFILL_RATE_SHAPES[model], "q4_k_m").block_matmul_params_by_type
        s = by_type.get("Q6_K", 0) / sum(by_type.values())
        r6 = (r["q6_k"] - s) / (1 - s)
        t_ref = (1 - s) + s / r6
        out[model] = {"Q4_0": r["q4_0"] / t_ref, "Q8_0": r["q8_0"] / t_ref, "Q6_K": r6,
                      "Q5_K": (1 - s) / (t_ref / r["q5_k_m"] - s / r6)}
    return out


def prefill_type_rates(device: str = PREFILL_RATE_DEVICE) -> dict[str, float]:
    """The median over ``device``'s models of each type's rate (``prefill_type_rates_by_model``):
    what a phone profile's ``runtime.prefill_type_rates`` is set from."""
    per_model = prefill_type_rates_by_model(device)
    return {t: statistics.median(m[t] for m in per_model.values()) for t in ("Q4_0", "Q5_K", "Q6_K", "Q8_0")}


# --- fitting -------------------------------------------------------------------------------


def _least_squares(xs: list[list[float]], ys: list[float]) -> list[float]:
    """Ordinary least squares by the normal equations (Gaussian elimination; a handful of
    columns, so no numpy on phones)."""
    n = len(xs[0])
    a = [[sum(x[i] * x[j] for x in xs) for j in range(n)] + [sum(x[i] * y for x, y in zip(xs, ys))] for i in range(n)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(a[r][c]))
        a[c], a[p] = a[p], a[c]
        if abs(a[c][c]) < 1e-12:
            raise ValueError("the in-sample rows cannot determine the fit (singular system)")
        for r in range(n):
            if r != c:
                f = a[r][c] / a[c][c]
                a[r] = [v - f * w for v, w in zip(a[r], a[c])]
    return [a[i][n] / a[i][i] for i in range(n)]


@dataclass(frozen=True)
class PhoneFit:
    """What the in-sample rows of one source say about its phone and its protocol."""

    source: str
    rows: int
    bandwidth_efficiency: float  # eta, against the profile's theoretical bandwidth
    decode_overhead_ms: float  # fixed cost per decode step
    compute_gflops_sustained: float  # prefill FLOPs / prefill seconds
    prefill_w: float
    decode_w: float
    setup_j: float  # the protocol's fixed energy per run (spin-up, process start, load, exit)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fit_phone_model(source: str, bandwidth_theoretical_gbs: float, rows: tuple[Anchor, ...] = PUBLISHED,
                    prefill_type_rates: dict[str, float] | None = None) -> PhoneFit:
    """Fit decode (eta, per-token overhead), prefill compute, the two powers and the setup
    energy of ``source`` on its in-sample rows (``held_out`` rows are never read).

    decode:  1 / tok/s = weight bytes / (eta x bandwidth) + t0           (least squares)
    prefill: compute = sum of prefill FLOPs / sum of prefill seconds, FLOPs from the
             estimator's shape (rows without a shape are skipped here), in Q4_K's FLOPs by
             the profile's ``prefill_type_rates`` (estimate.prefill_work), as it estimates
    energy:  J = P_prefill t_prefill + P_decode t_decode + E0, on the published phase times (so
             the powers do not inherit the time model's error), least squares of the *relative*
             error: each row's equation is divided by its published joules, as the figures are
             judged by ratio; an absolute fit lets the longest runs set E0 (32 J, more than a
             0.5B model's whole 37 J window). No per-GB load term: the window outside llama.cpp's
             time is ~2.7-4.3 s on every model (energy / mean power) and the relative fit gives
             that term a negative value
    """
    from edgeagent.estimate import prefill_work
    from edgeagent.shapes import shape_from_config

    fit_rows = [r for r in rows if r.source == source and not r.held_out]
    if len(fit_rows) < 4:
        raise ValueError(f"{source}: {len(fit_rows)} in-sample rows; the fit needs at least 4")
    gb = [r.weights_mib * 2**20 / 1e9 for r in fit_rows]
    slope, t0 = _least_squares([[g, 1.0] for g in gb], [1.0 / r.decode_tokens_per_s for r in fit_rows])
    shaped = [r for r in fit_rows if r.shape]
    flops = sum(prefill_work(shape_from_config(r.shape, "q4_k_m"), r.prompt_tokens, prefill_type_rates)
                for r in shaped)
    compute = flops / sum(r.prefill_s for r in shaped) / 1e9
    pp, pd, e0 = _least_squares([[r.prefill_s / r.joules_per_run, r.decode_s / r.joules_per_run, 1.0 / r.joules_per_run]
                                 for r in fit_rows], [1.0] * len(fit_rows))
    return PhoneFit(source, len(fit_rows), 1.0 / (slope * bandwidth_theoretical_gbs), t0 * 1e3, compute, pp, pd, e0)


def fit_decode_efficiency(source: str, profile: Any, rows: tuple[Anchor, ...] = PUBLISHED) -> float:
    """The bandwidth efficiency at which the estimator reproduces the published decode of
    ``source``'s in-sample rows on ``profile`` (held-out rows are never read): per row, the
    eta whose estimated decode tok/s equals the published one (bisection: the estimate rises
    with eta), and their geometric mean. For a source without energy figures, whose phone has
    no fitted efficiency from elsewhere; the estimate is made as ``compare_row`` makes it, at
    the row's threads and lengths, so every other term (attention, per-type rate, cache) is
    the profile's own. A row without an estimator shape gives eta from its published weights
    instead: weight bytes x tok/s / the profile's theoretical bandwidth (every byte at the 4-bit
    rate, no cache, attention or overhead term; its source's caveat says what that leaves out)."""
    from edgeagent.estimate import latency_estimate
    from edgeagent.shapes import shape_from_config

    fit_rows = [r for r in rows if r.source == source and not r.held_out and r.decode_tokens_per_s
                and (r.shape or r.weights_mib)]
    if not fit_rows:
        raise ValueError(f"{source}: no in-sample row with a published decode speed and a shape or weight size")
    etas = []
    for r in fit_rows:
        if r.shape is None:
            etas.append(r.weights_mib * 2**20 * r.decode_tokens_per_s / (profile.bandwidth_theoretical_gbs * 1e9))
            continue
        shape = shape_from_config(r.shape, (r.estimator_quant or r.quant).lower())

        def decode(eta: float) -> float:
            p = profile.model_copy(update={"bandwidth_efficiency": eta})
            return latency_estimate(shape, p, r.prompt_tokens, r.gen_tokens, threads=r.threads)["tokens_per_s"]

        lo, hi = 0.01, 1.0
        if not decode(lo) <= r.decode_tokens_per_s <= decode(hi):
            raise ValueError(f"{source} {r.model} {r.quant}: no bandwidth efficiency in (0.01, 1] reproduces "
                             f"{r.decode_tokens_per_s} tok/s on {profile.name}")
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if decode(mid) < r.decode_tokens_per_s else (lo, mid)
        etas.append((lo + hi) / 2)
    return math.exp(sum(math.log(e) for e in etas) / len(etas))


def fit_prefill_compute(source: str, profile: Any, rows: tuple[Anchor, ...] = PUBLISHED) -> float:
    """The sustained compute (GFLOP/s, in Q4_K's FLOPs) at which the estimator reproduces the
    published prefill of ``source``'s in-sample rows with a shape on ``profile`` (held-out rows
    are never read): the sum of their ``estimate.prefill_work`` under the profile's
    ``prefill_type_rates`` over the sum of their published prefill seconds, as
    ``fit_phone_model`` fits it. For a source without energy figures whose runs do not reach a
    little core (where they do, the little-core term paces prefill instead)."""
    from edgeagent.estimate import prefill_work
    from edgeagent.shapes import shape_from_config

    fit_rows = [r for r in rows if r.source == source and not r.held_out and r.shape and r.prefill_tokens_per_s]
    if not fit_rows:
        raise ValueError(f"{source}: no in-sample row with a shape and a published prefill speed")
    for r in fit_rows:
        if profile.little_cluster_reached(r.threads):
            raise ValueError(f"{source} {r.model}: its {r.threads} threads reach a little core on {profile.name}")
    work = sum(prefill_work(shape_from_config(r.shape, (r.estimator_quant or r.quant).lower()), r.prompt_tokens,
                            profile.runtime.prefill_type_rates) for r in fit_rows)
    return work / sum(r.prompt_tokens / r.prefill_tokens_per_s for r in fit_rows) / 1e9


def fit_core_decode_pace(profile: Any, big: Anchor, with_little: Anchor) -> tuple[str, float]:
    """The decode pace (bytes per cycle) of the little core that ``with_little``'s extra thread
    reaches, from the same GGUF decoded on ``profile`` twice: ``big`` on big cores only, at a
    speed that sets the profile's efficiency, and ``with_little`` with one thread more.

    In the estimator the first is memory-bound and the second paced by the little core; both
    terms scale with the bytes a step reads, so no shape is needed. The step reads the file's
    bytes at ``big``'s speed (``fit_decode_efficiency`` reads the same bytes), and at the slower
    speed the little core holds 1/n of them:

        bytes per cycle = slower tok/s x the file's bytes / (n threads x the core's GHz x 1e9)

    Returns (core, bytes per cycle). The two runs are from different builds and context depths;
    their sources say so."""
    little = profile.little_cluster_reached(with_little.threads)
    if little is None or profile.little_cluster_reached(big.threads) is not None:
        raise ValueError(f"{with_little.source} at {with_little.threads} threads must reach a little core on "
                         f"{profile.name} and {big.source} at {big.threads} must not")
    if not with_little.decode_tokens_per_s < big.decode_tokens_per_s:
        raise ValueError("the run with a little core is not the slower one, so no little core paces it")
    step_bytes = big.weights_mib * 2**20
    return little.core, with_little.decode_tokens_per_s * step_bytes / (with_little.threads * little.ghz * 1e9)


def q4_k_m_work_per_byte(profile: Any) -> float:
    """Prefill work (``estimate.prefill_work``, Q4_K's FLOPs) per byte of a Q4_K_M file's block
    matmul weights under ``profile``'s type rates, the median over the estimator's shapes of the
    prefill-rate models. Q6_K is both wider and slower than Q4_K, so the figure barely moves with
    a file's Q4_K/Q6_K split (3.61-3.63 over those shapes): a file's block bytes give its work."""
    from edgeagent.estimate import block_work_per_token
    from edgeagent.shapes import shape_from_config

    per_byte = []
    for name in sorted(set(PREFILL_RATE_SHAPES.values())):
        shape = shape_from_config(name, "q4_k_m")
        block_bytes = sum(t.n_bytes for t in shape.block_tensors if len(t.shape) >= 2)
        per_byte.append(block_work_per_token(shape, profile.runtime.prefill_type_rates) / block_bytes)
    return statistics.median(per_byte)


def fit_core_prefill_pace(profile: Any, big: Anchor, with_little: Anchor) -> tuple[str, float]:
    """The prefill pace (Q4_K's FLOPs per cycle) of the little core ``with_little``'s extra thread
    reaches, from the pair ``fit_core_decode_pace`` reads: ``with_little``'s prompt speed is paced
    by that core's 1/n share of a token's work. Neither model has an estimator shape, so the work
    comes from bytes: ``big``'s file bytes, less the token embedding (the repacked copy of the tied
    head that ``with_little``'s load log holds beyond the file, the same table), are the blocks,
    at ``q4_k_m_work_per_byte``; the head runs for the last token only.

        ops per cycle = prompt tok/s x work per token / (n threads x the core's GHz x 1e9)
    """
    little = profile.little_cluster_reached(with_little.threads)
    if little is None or not with_little.prefill_tokens_per_s:
        raise ValueError(f"{with_little.source} at {with_little.threads} threads must reach a little core on "
                         f"{profile.name} and publish a prompt speed")
    head_bytes = (with_little.weights_mib - big.weights_mib) * 2**20
    block_bytes = big.weights_mib * 2**20 - head_bytes
    work = q4_k_m_work_per_byte(profile) * block_bytes
    return little.core, with_little.prefill_tokens_per_s * work / (with_little.threads * little.ghz * 1e9)


def a510_pace_rows(rows: tuple[Anchor, ...] = PUBLISHED) -> tuple[Anchor, Anchor]:
    """The pair that measures the Cortex-A510 (``fit_core_decode_pace``): the 8 Gen 2's run on its
    big cores and the Galaxy S23's cell of the same GGUF at 6 threads, both in-sample."""
    (big,) = [r for r in rows if r.source == "llamacpp-s23u" and not r.held_out]
    (slow,) = [r for r in rows if r.source == "pocketpal-s23" and r.model == big.model and r.quant == big.quant
               and not r.held_out]
    return big, slow


# The phones whose bandwidth efficiency is fitted on their own published runs; a phone profile
# without such runs takes the median of their effective efficiencies (``unfitted_efficiency``).
FITTED_PHONES = ("snapdragon-8-elite", "dimensity-8400", "snapdragon-8-gen-2")


def effective_efficiency(profile: Any) -> float:
    """The fraction of ``profile``'s theoretical bandwidth its estimate streams at one reference
    decode: Qwen2.5-1.5B Q4_K_M after a 113-token prompt, 100 tokens (Ehsani et al.'s protocol),
    at the profile's threads: bytes read per token (at the middle of the run) x tok/s / bus.
    It folds a profile's per-token overhead into one number, so fits of different forms (the 8
    Elite's efficiency plus 10.4 ms a token; the others' efficiency alone) compare."""
    from edgeagent.estimate import decode_bytes_per_token, latency_estimate
    from edgeagent.shapes import shape_from_config

    shape = shape_from_config("qwen2.5-1.5b", "q4_k_m")
    tokens_per_s = latency_estimate(shape, profile, 113, 100)["tokens_per_s"]
    step_bytes = decode_bytes_per_token(shape, 113 + 50, profile.runtime.kv_cache_type)
    return step_bytes * tokens_per_s / (profile.bandwidth_theoretical_gbs * 1e9)


def unfitted_efficiency(profiles: dict[str, Any] | None = None) -> float:
    """The bandwidth efficiency a phone profile with no published run of its own takes: the median
    effective efficiency of ``FITTED_PHONES`` (three SoCs, two vendors, three llama.cpp builds)."""
    from edgeagent.profiles import load_profile

    profiles = profiles or {}
    return statistics.median(effective_efficiency(profiles.get(n) or load_profile(n)) for n in FITTED_PHONES)


# int8 multiply-add operations (2 each) one core issues per cycle, by core type (the first word or
# two of a cluster's ``core``): 32 per 128-bit SDOT pipe (16 int8 MACs) x pipes: Cortex-X2/X3/X4/X925
# and Oryon 4, Cortex-A7xx 2. Little in-order cores are paced by their own fitted term instead.
CORE_INT8_OPS_PER_CYCLE = {"Cortex-X": 128, "Oryon": 128, "Cortex-A7": 64}


def int8_peak_gops(profile: Any, threads: int | None = None) -> float:
    """The int8 peak of the ``threads`` (default: the profile's) fastest cores, GOPS: the sum of
    ops per cycle x GHz, the figure the phone profiles' derived compute is a fraction of."""
    left = profile.runtime.threads if threads is None else threads
    peak = 0.0
    for cluster in sorted(profile.cpu_clusters, key=lambda c: -c.ghz):
        kind = next((k for k in CORE_INT8_OPS_PER_CYCLE if (cluster.core or "").startswith(k)), None)
        if kind is None:
            raise ValueError(f"{profile.name}: no int8 rate for core {cluster.core!r} (cluster {cluster.name})")
        used = min(left, cluster.cores)
        peak += used * CORE_INT8_OPS_PER_CYCLE[kind] * cluster.ghz
        left -= used
        if left == 0:
            return peak
    raise ValueError(f"{profile.name}: {threads} threads but fewer cores")


# The phones whose compute is fitted on published prefill of a 2026 llama.cpp build like the one
# the project vendors. The 8 Elite's is fitted too, on Ehsani's 2025 llama-cli rows (6 % of its
# peak), and a 2026 release build prefills ~3x faster on the same SoC (qmesh-s25u): it stands for
# that protocol, not for today's build, so it is not among them.
FITTED_COMPUTE_PHONES = ("dimensity-8400",)


def compute_utilization(profile: Any) -> float:
    """``compute_gflops_sustained`` as a fraction of ``int8_peak_gops`` (both in Q4_K's terms)."""
    return profile.compute_gflops_sustained / int8_peak_gops(profile)


def unfitted_compute_utilization(profiles: dict[str, Any] | None = None) -> float:
    """The fraction of its int8 peak a phone profile with no fitted compute takes: the median of
    ``FITTED_COMPUTE_PHONES``' (one phone today, so its own)."""
    from edgeagent.profiles import load_profile

    profiles = profiles or {}
    return statistics.median(compute_utilization(profiles.get(n) or load_profile(n)) for n in FITTED_COMPUTE_PHONES)


@dataclass(frozen=True)
class LittleCoreFit:
    """The in-order little-core constants (``estimate.LITTLE_CORE_*``) and the one row they come from."""

    source: str
    model: str
    threads: int
    core: str | None
    ghz: float
    bytes_per_cycle: float  # decode: bytes per token consumed per cycle by one little core
    int8_ops_per_cycle: float  # prefill: matmul FLOPs per cycle by one little core

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fit_little_cores(rows: tuple[Anchor, ...] = PUBLISHED, profiles: dict[str, Any] | None = None) -> LittleCoreFit:
    """Fit the two per-cycle constants of the little-core term on the ONE in-sample row whose
    threads reach in-order little cores on its profile (held-out rows are never read; zero or
    several such rows is an error, so adding one is a deliberate change).

    On such a row every step is paced by a little core doing 1/n of the work
    (``estimate.little_core_s``), so the published speed gives the constant directly:
        decode:  bytes/cycle = mean bytes per token / (n x GHz x (1 / tok/s - per-step extras))
        prefill: ops/cycle   = prompt FLOPs / (n x GHz x prompt tokens / (prompt tok/s))
    (the extras are the profile's calibrated attention and fixed per-step costs, if it has
    any; the RB3 Gen 2 profile has none). The fit then checks that the estimator, given these
    constants, does pace that row by its little cores and reproduces both published speeds.
    """
    from edgeagent.estimate import decode_attention_s, decode_bytes_per_token, latency_estimate, prefill_work
    from edgeagent.profiles import load_profile
    from edgeagent.shapes import shape_from_config

    loaded = dict(profiles or {})

    def profile_of(r: Anchor) -> Any:
        name = SOURCES[r.source]["profile"]
        if name not in loaded:
            loaded[name] = load_profile(name)
        return loaded[name]

    paced = [r for r in rows if not r.held_out and r.shape and profile_of(r).little_cluster_reached(r.threads)]
    if len(paced) != 1:
        named = "; ".join(f"{r.source} {r.model}" for r in paced) or "none"
        raise ValueError(f"the little-core constants are fitted on exactly one in-sample row whose threads reach "
                         f"in-order little cores; found {len(paced)} ({named})")
    (row,) = paced
    prof = profile_of(row)
    rt, little = prof.runtime, prof.little_cluster_reached(row.threads)
    shape = shape_from_config(row.shape, (row.estimator_quant or row.quant).lower())
    cycles_per_s = row.threads * little.ghz * 1e9  # summed over the n threads, each at the little clock

    n_kv = [row.prompt_tokens + 1 + i for i in range(max(row.gen_tokens - 1, 1))]  # as latency_estimate steps
    mean_bytes = sum(decode_bytes_per_token(shape, k, rt.kv_cache_type) for k in n_kv) / len(n_kv)
    attention_gflops = rt.attention_gflops(shape.head_dim)
    extras = [rt.decode_overhead_ms / 1e3 + (decode_attention_s(shape, k, attention_gflops)
                                             if attention_gflops else 0.0) for k in n_kv]
    bytes_per_cycle = mean_bytes / (cycles_per_s * (1 / row.decode_tokens_per_s - sum(extras) / len(extras)))
    prefill_s = row.prompt_tokens / row.prefill_tokens_per_s
    ops_per_cycle = prefill_work(shape, row.prompt_tokens, rt.prefill_type_rates) / (cycles_per_s * prefill_s)

    lat = latency_estimate(shape, prof, row.prompt_tokens, row.gen_tokens, row.threads,
                           little_bytes_per_cycle=bytes_per_cycle, little_int8_ops_per_cycle=ops_per_cycle)
    if lat["decode_bound"] != "little-core" or lat["prefill_bound"] != "little-core":
        raise ValueError(f"{row.source} {row.model}: the estimate is not paced by its little cores at the fitted "
                         f"constants (decode {lat['decode_bound']}-bound, prefill {lat['prefill_bound']}-bound), "
                         f"so the row cannot determine them")
    return LittleCoreFit(row.source, row.model, row.threads, little.core, little.ghz, bytes_per_cycle, ops_per_cycle)


# --- comparing -----------------------------------------------------------------------------


def _ratio(estimated: float | None, published: float | None) -> float | None:
    return None if estimated is None or not published else estimated / published


def _figure(estimated: float | None, published: float | None) -> dict[str, float | None]:
    return {"estimated": estimated, "published": published, "ratio": _ratio(estimated, published)}


FIGURES = ("decode_tokens_per_s", "prefill_tokens_per_s", "run_s", "joules_per_run", "peak_memory_mb")
# Per-token and battery figures some sources publish instead of a run's joules: in --json and in the
# summary (the human per-row table prints FIGURES only)
EXTRA_FIGURES = ("decode_mj_per_token", "mah_per_run")


def compare_row(row: Anchor, profile: Any, fit: PhoneFit | None) -> dict[str, Any]:
    """The estimator on ``profile`` beside one published row. The published energy window's
    setup energy comes from the source's in-sample fit (None: no energy estimate)."""
    from edgeagent.estimate import estimate
    from edgeagent.shapes import QUANTS, shape_from_config

    out: dict[str, Any] = {"source": row.source, "model": row.model, "quant": row.quant, "shape": row.shape,
                           "profile": profile.name, "held_out": row.held_out, "threads": row.threads,
                           "prompt_tokens": row.prompt_tokens, "gen_tokens": row.gen_tokens,
                           "notes": list(row.notes)}
    why_not = SOURCES[row.source].get("not_comparable")
    out["comparable"] = why_not is None
    if why_not:
        out["why_not_comparable"] = why_not
    quant = (row.estimator_quant or row.quant).lower()
    if row.shape is None or quant not in QUANTS:
        out["estimated"] = False
        out["why"] = "no estimator shape for this model" if row.shape is None else f"{row.quant} is not a quantization the estimator models"
        for key in FIGURES + EXTRA_FIGURES:
            out[key] = _figure(None, getattr(row, key))
        return out
    shape = shape_from_config(row.shape, quant)
    n_ctx = 512 if row.source == "ehsani2026" else 2048
    try:
        e = estimate(shape, profile, row.prompt_tokens, row.gen_tokens,
                     n_ctx=max(n_ctx, row.prompt_tokens + row.gen_tokens), threads=row.threads,
                     repacked_types=SOURCES[row.source].get("repacked_types"))
    except ValueError as exc:
        raise ValueError(f"{row.source} {row.model} on {profile.name}: {exc}") from None
    lat, en = e["latency"], e["energy"]
    run_s = lat["total_ms"] / 1e3
    joules = None
    if fit is not None and row.joules_per_run is not None:
        joules = en["joules_per_inference"] + fit.setup_j
    mj_per_token = None
    if row.decode_mj_per_token is not None:
        # decode power above idle at the row's threads x time per token; plus the idle draw when
        # the published figure keeps it
        watts = en["decode_w"] + (0.0 if SOURCES[row.source].get("energy_idle_subtracted", True)
                                  else profile.power.idle_w)
        mj_per_token = watts / lat["tokens_per_s"] * 1e3
    out.update({
        "estimated": True,
        "paced_by": {"decode": lat["decode_bound"], "prefill": lat["prefill_bound"], "little_core": lat["little_core"]},
        "decode_tokens_per_s": _figure(lat["tokens_per_s"], row.decode_tokens_per_s),
        "prefill_tokens_per_s": _figure(lat["prefill_tokens_per_s"], row.prefill_tokens_per_s),
        "run_s": _figure(run_s, row.run_s),
        "joules_per_run": _figure(joules, row.joules_per_run),
        "joules_per_inference": en["joules_per_inference"],
        "energy_window_s": {"published": row.window_s,
                            "why": "the published energy window (energy / mean power), longer than run_s by the "
                                   "protocol's spin-up, process start, load and exit" if row.window_s else None},
        "peak_memory_mb": _figure(e["memory"]["llama_cpp_buffers_mb"] if row.peak_memory_mb else None,
                                  row.peak_memory_mb),
        "decode_mj_per_token": _figure(mj_per_token, row.decode_mj_per_token),
        "mah_per_run": _figure(en["mah_per_inference"] if row.mah_per_run is not None else None, row.mah_per_run),
    })
    return out


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the held-out ratios of the rows whose setup the estimator models (median,
    worst, range), and under ``not_comparable`` every held-out ratio left out of them, each
    with the reason: shown, not fitted away and not averaged in."""
    out = {}
    for key in FIGURES + EXTRA_FIGURES:
        held = [r for r in rows if r["held_out"] and r[key]["ratio"] is not None]
        ratios = [r[key]["ratio"] for r in held if r["comparable"]]
        if ratios:
            worst = max(ratios, key=lambda x: abs(x - 1.0))
            out[key] = {"held_out_rows": len(ratios), "median_ratio": statistics.median(ratios), "worst_ratio": worst,
                        "min_ratio": min(ratios), "max_ratio": max(ratios)}
        else:
            out[key] = {"held_out_rows": 0, "median_ratio": None, "worst_ratio": None, "min_ratio": None, "max_ratio": None}
        out[key]["not_comparable"] = [{"source": r["source"], "model": r["model"], "ratio": r[key]["ratio"],
                                       "why": r["why_not_comparable"]} for r in held if not r["comparable"]]
    return out


# The tolerance on held-out ratios: a figure outside it gets the checks that may say why.
TOLERANCE = 0.25


def fit_residual(row: Anchor, fit: PhoneFit) -> float | None:
    """The source's energy fit on ``row``'s own published phase times, over its published
    joules: how well the fit's form describes that row, whatever the time model says."""
    if None in (row.prefill_s, row.decode_s, row.joules_per_run):
        return None
    return (fit.prefill_w * row.prefill_s + fit.decode_w * row.decode_s + fit.setup_j) / row.joules_per_run


def _held_out_ratios(rows: list[dict[str, Any]], profile: str, key: str) -> list[tuple[float, dict[str, Any]]]:
    return sorted(((r[key]["ratio"], r) for r in rows
                   if r["profile"] == profile and r["held_out"] and r["comparable"] and r.get("estimated")
                   and r[key]["ratio"] is not None), key=lambda x: x[0])


def profile_spread(rows: list[dict[str, Any]], profile: str, key: str) -> str | None:
    """One line when the held-out ratios of ``key`` on ``profile`` span more than a
    +-TOLERANCE band holds ((1 + T) / (1 - T), 1.67x at 25 %), else None.

    Every figure the estimator gives on one profile scales together with the profile's
    bandwidth, compute or power, so such a spread cannot be closed by a better profile: only a
    model that tells the two extreme rows apart can. The line names how they differ (source,
    threads, weight type, lengths), each a lever the estimator would need in-sample data on."""
    ranked = _held_out_ratios(rows, profile, key)
    if len(ranked) < 2:
        return None
    (lo, a), (hi, b) = ranked[0], ranked[-1]
    band = (1 + TOLERANCE) / (1 - TOLERANCE)
    if hi / lo <= band:
        return None
    differ = []
    if a["source"] != b["source"]:
        differ.append(f"source ({a['source']} vs {b['source']})")
    if a["threads"] != b["threads"]:
        differ.append(f"threads ({a['threads']} vs {b['threads']})")
    if a["quant"] != b["quant"]:
        differ.append(f"weight type ({a['quant']} vs {b['quant']})")
    if (a["prompt_tokens"], a["gen_tokens"]) != (b["prompt_tokens"], b["gen_tokens"]):
        differ.append(f"lengths ({a['prompt_tokens']}+{a['gen_tokens']} vs {b['prompt_tokens']}+{b['gen_tokens']} tokens)")
    return (f"the held-out rows on {profile} span {lo:.2f} ({a['source']} {a['model']}) to {hi:.2f} ({b['source']} "
            f"{b['model']}), {hi / lo:.2f}x, wider than the {band:.2f}x a +-{TOLERANCE:.0%} band holds: no one "
            f"speed-up or slow-down of the profile puts both inside; they differ in " + (", ".join(differ) or "nothing the rows record")
            + ", and no in-sample row separates those effects")


def per_token_energy_parts(r: dict[str, Any]) -> str | None:
    """Energy per decoded token is decode power / decode speed, so its ratio is the power's
    ratio over the speed's: one line with both, or None where the row lacks a figure."""
    mj, tps = r["decode_mj_per_token"], r["decode_tokens_per_s"]
    if None in (mj["estimated"], mj["published"], tps["estimated"], tps["published"]):
        return None
    watts_est, watts_pub = mj["estimated"] * tps["estimated"] / 1e3, mj["published"] * tps["published"] / 1e3
    return (f"energy per token is decode power / decode speed: the estimate decodes at {tps['ratio']:.2f} of the "
            f"published speed (each token {1 / tps['ratio']:.2f}x as long) and draws {watts_est / watts_pub:.2f}x its "
            f"power ({watts_est:.1f} against {watts_pub:.1f} W); {1 / tps['ratio']:.2f} x {watts_est / watts_pub:.2f} "
            f"= {mj['ratio']:.2f}")


def explain_misses(rows: list[dict[str, Any]], anchors: tuple[Anchor, ...], fits: dict[str, PhoneFit | None]) -> None:
    """For each held-out figure outside TOLERANCE, add to its row (``misses``) what the other
    published data says about it, changing no estimate:
    - another source's row of the same model shape on the same profile: if the estimator
      meets that one, the two publications disagree by the ratio of the ratios, after the
      estimator's own allowance for quantization, lengths and threads;
    - the same source's other rows on that profile, with their ratios;
    - for energy, the source's in-sample rows of the same model: the fit on their own
      published times, and each row's mean power beside the source's other models';
    - the profile's spread (``profile_spread``): where its held-out ratios of the figure span
      more than a +-TOLERANCE band can hold, no estimate that scales the profile as a whole
      (its bandwidth, compute or power) puts them all inside, and the line names what the
      two extreme rows differ in."""
    spreads = {}
    for r in rows:
        if not (r["held_out"] and r["comparable"] and r.get("estimated")):
            continue
        misses = []
        for key in FIGURES + EXTRA_FIGURES:
            ratio = r[key]["ratio"]
            if ratio is None or abs(ratio - 1.0) <= TOLERANCE:
                continue
            why = []
            for o in rows:
                if (o["source"] != r["source"] and o["profile"] == r["profile"] and o["shape"] == r["shape"]
                        and o.get("estimated") and o[key]["ratio"] is not None):
                    why.append(f"{o['source']} {o['model']} {o['quant']} (same shape, same profile) reads "
                               f"{o[key]['ratio']:.2f}: the two publications disagree by "
                               f"{ratio / o[key]['ratio']:.2f}x after the estimator's allowance for quantization, "
                               f"lengths and threads")
            own = sorted((o[key]["ratio"], o["model"]) for o in rows
                         if o is not r and o["source"] == r["source"] and o["profile"] == r["profile"]
                         and o.get("estimated") and o[key]["ratio"] is not None)
            if own:
                line = "the same source's other rows on this profile read " + ", ".join(f"{m} {x:.2f}" for x, m in own)
                if all(abs(x - 1.0) <= TOLERANCE for x, _ in own):
                    line += ", all within the tolerance: this row departs from its own source's level"
                why.append(line)
            if key == "decode_mj_per_token":
                line = per_token_energy_parts(r)
                if line is not None:
                    why.append(line)
            if (r["profile"], key) not in spreads:
                spreads[r["profile"], key] = profile_spread(rows, r["profile"], key)
            if spreads[r["profile"], key] is not None:
                why.append(spreads[r["profile"], key])
            fit = fits.get(r["source"])
            if key == "joules_per_run" and fit is not None:
                same = [a for a in anchors if a.source == r["source"] and a.model == r["model"] and not a.held_out]
                others = [a.average_power_w for a in anchors
                          if a.source == r["source"] and a.model != r["model"] and a.average_power_w]
                for a in same:
                    residual = fit_residual(a, fit)
                    if residual is None:
                        continue
                    line = (f"the energy fit, on the published phase times of the in-sample row {a.model} {a.quant}, "
                            f"reads {residual:.2f}")
                    if a.average_power_w and others:
                        line += (f"; that row's mean power is {a.average_power_w:g} W, the source's other models' "
                                 f"{min(others):g}-{max(others):g} W")
                        if not min(others) <= a.average_power_w <= max(others):
                            line += ", a draw the fit's one power per phase cannot follow"
                    why.append(line)
            misses.append({"figure": key, "ratio": ratio, "why": why or ["no other published row bears on it"]})
        if misses:
            r["misses"] = misses


def compare_published(profiles: dict[str, Any] | None = None, only_profile: str | None = None) -> dict[str, Any]:
    """Every published row beside the estimator on its own source's profile (``only_profile``:
    just the rows of that profile), the fits used, and per figure the median and worst
    estimated/published ratio over the held-out rows."""
    from edgeagent.profiles import load_profile

    profiles = dict(profiles or {})
    rows, fits = [], {}
    for src in SOURCES.values():
        if only_profile is not None and src["profile"] != only_profile:
            continue
        prof = profiles.get(src["profile"]) or load_profile(src["profile"])
        has_energy = any(r.joules_per_run is not None and not r.held_out for r in PUBLISHED if r.source == src["id"])
        fit = (fit_phone_model(src["id"], prof.bandwidth_theoretical_gbs,
                               prefill_type_rates=prof.runtime.prefill_type_rates) if has_energy else None)
        fits[src["id"]] = fit
        rows += [compare_row(r, prof, fit) for r in PUBLISHED if r.source == src["id"]]
    if not rows:
        raise ValueError(f"no published measurements for profile {only_profile!r}; "
                         f"profiles with some: {', '.join(sorted({s['profile'] for s in SOURCES.values()}))}")
    explain_misses(rows, PUBLISHED, fits)
    sources = [s for s in SOURCES.values() if only_profile is None or s["profile"] == only_profile]
    from edgeagent import estimate as est

    little = fit_little_cores(PUBLISHED, profiles)
    a510_rows = a510_pace_rows()
    gen2 = profiles.get("snapdragon-8-gen-2") or load_profile("snapdragon-8-gen-2")
    a510_core, a510_pace = fit_core_decode_pace(gen2, *a510_rows)
    _, a510_prefill = fit_core_prefill_pace(gen2, *a510_rows)
    return {
        "source": "estimated vs published",
        "sources": sources,
        "fits": {sid: fit.to_dict() if fit else None for sid, fit in fits.items()},
        "little_cores": {"fit": little.to_dict(), "used": {"bytes_per_cycle": est.LITTLE_CORE_BYTES_PER_CYCLE,
                                                           "int8_ops_per_cycle": est.LITTLE_CORE_INT8_OPS_PER_CYCLE},
                         "decode_per_core": {"used": dict(est.CORE_DECODE_BYTES_PER_CYCLE),
                                             "fit": {a510_core: a510_pace, "from": [f"{r.source} {r.model} {r.quant}, "
                                                                                    f"{r.threads} threads"
                                                                                    for r in a510_rows]}},
                         "prefill_per_core": {"used": dict(est.CORE_PREFILL_OPS_PER_CYCLE),
                                              "fit": {a510_core: a510_prefill,
                                                      "q4_k_m_work_per_byte": q4_k_m_work_per_byte(gen2)}}},
        "type_rates": {"source": POCKETPAL, "devices": {
            d: {"soc": soc, "wide_weight_rate": wide_weight_rate(d), "models": len(rs),
                "rows": [dict(zip(("model", "q4_k_m_mib", "q4_k_m_tg", "q8_0_mib", "q8_0_tg"), r)) for r in rs]}
            for d, (soc, rs) in TYPE_RATE_ROWS.items()}},
        "compute_utilization": {"fitted": {n: compute_utilization(profiles.get(n) or load_profile(n))
                                           for n in FITTED_COMPUTE_PHONES + ("snapdragon-8-elite",)},
                                "unfitted_phones_take": unfitted_compute_utilization(profiles),
                                "left_out": {"snapdragon-8-elite": "fitted on a 2025 llama-cli build; a 2026 build "
                                                                   "prefills ~3x faster on that SoC (qmesh-s25u)"}},
        "prefill_type_rates": {"fitted_on": PREFILL_RATE_DEVICE, "source": POCKETPAL, "devices": {
            d: {"rates": prefill_type_rates(d), "per_model": prefill_type_rates_by_model(d),
                "pp": {m: dict(zip(PREFILL_RATE_FILES, cells)) for m, cells in PREFILL_RATE_PP[d].items()}}
            for d in PREFILL_RATE_PP}},
        "rows": rows,
        "summary": _summary(rows),
        "notes": [
            "run_s is llama.cpp's prefill + decode time on both sides; the published energy covers a longer window "
            "(energy_window_s), so joules_per_run adds the source's fitted setup energy to the estimate's inference energy",
            "peak_memory_mb compares llama.cpp's own buffers (weights + KV + compute), the runtime's process "
            "overhead left out on the estimated side",
            "held_out rows were never read by a fit; in-sample rows the estimator cannot shape (IQ4_XS, Phi-2, "
            "Qwen2.5-7B, Gemma-2-9B; Qwen3.5-2B, which sets the snapdragon-8-gen-2 efficiency from its file's "
            "bytes) are listed in --json with the reason",
            "rows of a runtime the estimator does not model (comparable: false, why_not_comparable) keep their "
            "ratios in the rows and in each summary figure's not_comparable list, outside the held-out medians and "
            "worst ratios",
            "decode_mj_per_token (energy per decoded token) and mah_per_run (battery charge per run) are for sources "
            "that publish those instead of a run's joules; they are in --json rows and in the summary",
            f"every row is estimated at its source's llama.cpp threads; where they reach in-order little cores "
            f"(Cortex-A5xx) each step lasts at least a little core's 1/n share of the work (an empirical form: "
            f"llama.cpp's chunked matmuls let a slow core do less; estimate.little_core_s), at "
            f"{est.LITTLE_CORE_BYTES_PER_CYCLE:g} bytes/cycle (decode) and {est.LITTLE_CORE_INT8_OPS_PER_CYCLE:g} "
            f"int8 ops/cycle (prefill), fitted on the one in-sample row {little.source} {little.model} "
            f"({little.threads} threads, {little.core} @ {little.ghz:g} GHz), except where a core type's own "
            f"decode pace is measured ({', '.join(f'{c} {v:g}' for c, v in est.CORE_DECODE_BYTES_PER_CYCLE.items())} "
            f"bytes/cycle: the same GGUF on the Snapdragon 8 Gen 2's 5 big cores and at 6 threads, "
            f"anchors.fit_core_decode_pace) and its prefill pace "
            f"({', '.join(f'{c} {v:g}' for c, v in est.CORE_PREFILL_OPS_PER_CYCLE.items())} ops/cycle: the 6-thread "
            f"run's prompt speed, its work from the file's block bytes, anchors.fit_core_prefill_pace); power is the "
            f"profile's power for the "
            f"row's threads (estimate.phase_power_w: its busy cores' share by their published per-core power where "
            f"the profile gives it, else its W per busy thread x threads)",
            "decode reads Q8_0, F16, BF16 and F32 weights (and an F16 or Q8_0 cache) runtime.wide_weight_rate "
            "times faster per byte than the 4-to-6-bit types the profiles' bandwidth efficiency stands for: the "
            "median over the same models of Q8_0's bytes/s over Q4_K_M's, "
            + ", ".join(f"{d} ({soc}) {wide_weight_rate(d):.2f}" for d, (soc, _) in TYPE_RATE_ROWS.items())
            + f" ({POCKETPAL['citation']}; --json type_rates); it moves no 4-bit weight's read, only those types' "
            "and the cache's, so a 4-bit row here (pocketpal-s23's among them) moves only by its cache's share",
            "prefill runs each weight type at its own rate against Q4_K's (runtime.prefill_type_rates, "
            "estimate.prefill_work; Q4_K_M files hold Q6_K too): "
            + ", ".join(f"{t} {r:.2f}" for t, r in prefill_type_rates().items())
            + f", the median over {len(prefill_type_rates_by_model())} models of PocketPal's {PREFILL_RATE_DEVICE} "
            "(a phone with no profile and no row here; --json prefill_type_rates also has the S23's and the POCO "
            "X7 Pro's own, unused); the profiles' compute stands for Q4_K, so a row's prefill moves by its types' "
            "shares (a Q4_0 or Q8_0 file ~1.3-1.4x faster, Q5_K_M and Q6_K slower)",
            f"a held-out figure outside +-{TOLERANCE:.0%} carries misses: what other published rows say of it "
            f"(another source on the same profile and shape; the same source's other rows there; for energy, the "
            f"fit on the source's in-sample rows of the same model; for energy per token, its power and speed "
            f"parts; the profile's spread where no one change of the profile can bring its rows inside); nothing "
            f"in them changes an estimate",
        ] + [f"{s['id']} is not in the held-out summary: {s['not_comparable']}" for s in sources if s.get("not_comparable")]
        + [f"{s['id']}: {s['caveat']}" for s in sources if s.get("caveat")]
        + [f"{s['id']} leaves out {s['left_out']}" for s in sources if s.get("left_out")],
    }


def decode_misses(profile_name: str, cmp: dict[str, Any] | None = None) -> str | None:
    """One line on the held-out decode rows of ``profile_name`` outside the tolerance, or None:
    what an estimate on that profile should be read with (the mAh range carries energy-per-run
    error only)."""
    rows = [r for r in (cmp or compare_published())["rows"]
            if r["profile"] == profile_name and r["held_out"] and r["comparable"]
            and (r["decode_tokens_per_s"]["ratio"] is not None)
            and abs(r["decode_tokens_per_s"]["ratio"] - 1.0) > TOLERANCE]
    if not rows:
        return None
    ratios = sorted(r["decode_tokens_per_s"]["ratio"] for r in rows)
    sources = sorted({r["source"] for r in rows})
    spread = f"{ratios[0]:.2f}" if f"{ratios[0]:.2f}" == f"{ratios[-1]:.2f}" else f"{ratios[0]:.2f}-{ratios[-1]:.2f}"
    return (f"held-out published decode on {profile_name}, estimated at the source's threads / published: {spread} "
            f"({len(rows)} row{'s' if len(rows) != 1 else ''}, {', '.join(sources)}), outside +-{TOLERANCE:.0%}; the "
            f"mAh range carries energy-per-run error only (edgeagent estimate --compare-published)")


def energy_ratio_range(cmp: dict[str, Any] | None = None) -> tuple[float, float]:
    """(lowest, highest) held-out estimated/published energy-per-run ratio: the estimator's
    measured error, used to turn a point estimate into a range."""
    s = (cmp or compare_published())["summary"]["joules_per_run"]
    if not s["held_out_rows"]:
        raise ValueError("no held-out published energy rows to derive an uncertainty range from")
    return s["min_ratio"], s["max_ratio"]


def with_range(value: float, ratios: tuple[float, float]) -> dict[str, float]:
    """A point estimate with the range the held-out error allows: if the estimator ran r x
    the truth on held-out rows, the truth is value / r."""
    lo_r, hi_r = ratios
    return {"value": value, "low": value / max(hi_r, lo_r, 1.0), "high": value / min(lo_r, hi_r, 1.0)}
