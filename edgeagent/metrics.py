"""Measuring helpers: process memory, llama.cpp's own timing counters, summary statistics.

Every figure here is *measured* on this machine; estimates live in ``edgeagent.estimate``.
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass
from typing import Sequence

import psutil

_PROCESS = psutil.Process()


def rss_mb() -> float:
    """Resident set size of this process now, in MiB."""
    return _PROCESS.memory_info().rss / 2**20


class PeakRSS:
    """The highest RSS of this process while the `with` block runs, in MiB.

    On Linux (and Android) the kernel keeps the peak itself: writing "5" to
    /proc/self/clear_refs resets it and VmHWM in /proc/self/status reads it, exact and with
    no cost while llama.cpp runs. Elsewhere a background thread samples RSS every
    `interval_s` (it misses peaks shorter than that).
    """

    def __init__(self, interval_s: float = 0.01):
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kernel = False

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __enter__(self) -> "PeakRSS":
        self.peak_mb = rss_mb()
        self._kernel = _reset_kernel_peak()
        if self._kernel:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        kernel_peak = _kernel_peak_mb() if self._kernel else 0.0
        self.peak_mb = max(self.peak_mb, kernel_peak, rss_mb())


def _reset_kernel_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
        return _kernel_peak_mb() > 0
    except OSError:
        return False


def _kernel_peak_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return 0.0


@dataclass(frozen=True)
class LlamaPerf:
    """A snapshot of llama.cpp's per-context counters (llama_perf_context).

    llama.cpp books a decode call with more than one token as prompt evaluation ("p_eval")
    and a one-token call as generation ("eval"); times are compute only, in ms.
    """

    p_eval_ms: float
    eval_ms: float
    n_p_eval: int
    n_eval: int

    @classmethod
    def read(cls, ctx) -> "LlamaPerf":
        import llama_cpp

        d = llama_cpp.llama_perf_context(ctx)
        # llama.cpp reports the counts as max(1, n) (to keep its own divisions safe), so a
        # count of 1 may mean none; the time is exactly 0 only when nothing ran.
        n_p_eval = d.n_p_eval if d.t_p_eval_ms > 0 else 0
        n_eval = d.n_eval if d.t_eval_ms > 0 else 0
        return cls(d.t_p_eval_ms, d.t_eval_ms, n_p_eval, n_eval)

    @staticmethod
    def reset(ctx) -> None:
        import llama_cpp

        llama_cpp.llama_perf_context_reset(ctx)

    @property
    def tokens(self) -> int:
        return self.n_p_eval + self.n_eval

    @property
    def ms(self) -> float:
        return self.p_eval_ms + self.eval_ms

    def __sub__(self, other: "LlamaPerf") -> "LlamaPerf":
        return LlamaPerf(
            self.p_eval_ms - other.p_eval_ms,
            self.eval_ms - other.eval_ms,
            self.n_p_eval - other.n_p_eval,
            self.n_eval - other.n_eval,
        )


def per_second(count: float, ms: float) -> float:
    return 1000.0 * count / ms if ms > 0 else 0.0


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return 0.0, 0.0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def median_std(values: Sequence[float]) -> tuple[float, float]:
    """Median and sample standard deviation: the median for the headline figure on a shared
    machine (one preempted repetition should not move it), the stddev to show the spread."""
    if not values:
        return 0.0, 0.0
    return statistics.median(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cpu_model() -> str:
    """What CPU this machine has, to say where a measurement was made ("AMD EPYC 9654 ...")."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation between order statistics (numpy's
    default), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
