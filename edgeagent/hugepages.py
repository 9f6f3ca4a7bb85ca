"""2 MiB pages under the weights: Linux transparent huge pages (THP) for llama.cpp's buffers.

Decoding one token reads every weight once, so a model's weights stream through the CPU's
TLB each token. With 4 KiB pages the agent's 136 MiB of Q8_0 weights are ~35,000 pages, and
the page walks show: on this project's AMD EPYC host the agent decodes 1.06-1.14x as fast with
its weights on 2 MiB pages as from the memory-mapped file (docs/DESIGN.md, "Huge pages under
the weights"). llama-bench and llama-cpp-python leave the weights in the mapped file's 4 KiB
page-cache pages.

How the engine gets them (``LoadAdvice``, which ``edgeagent.llama.load_llama`` and ``LlamaRunner``
use), with no change to llama.cpp:

1. the model is loaded without mmap, so llama.cpp reads each tensor into its own anonymous
   buffer (``ggml_aligned_malloc``; glibc maps each one of 4 MiB or more on its own,
   ``own_mappings_for_buffers``);
2. llama.cpp allocates every weight buffer before it reads the first tensor, and calls the
   load's progress callback before each tensor (``llama_model_loader::load_all_data``); at the
   first call this module marks the anonymous memory mapped since the load began
   ``MADV_HUGEPAGE``, before any weight is written;
3. the kernel then backs the buffers with 2 MiB pages as the reads fault them in (with the
   "madvise" setting of ``/sys/kernel/mm/transparent_hugepage/enabled``, the usual one, only
   memory marked so gets them; with "always", all anonymous memory would, but never the
   file's page cache a mapped model reads).

``huge_mapped_bytes`` reads back (``/proc/self/smaps``, ``AnonHugePages``) how much of those
ranges the kernel really backs with 2 MiB pages: the engine reports it (``Engine.info``) rather
than assuming it. Where THP is off ("never", or not Linux), nothing is advised and the engine
keeps its memory-mapped load (``available``).
"""

from __future__ import annotations

import ctypes
import functools
import re
import sys
from pathlib import Path

THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14  # linux/mman.h (the same on x86-64 and arm64)
THP_MODES_ON = ("always", "madvise")  # the settings under which marked memory gets 2 MiB pages
# New anonymous memory smaller than this is not worth marking: a weight buffer of a model this
# small is a page or two either way.
MIN_BUFFER = 4 << 20

_MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$")


def thp_mode(text: str | None = None) -> str | None:
    """The kernel's THP setting ("always", "madvise", "never") from the text of
    ``/sys/kernel/mm/transparent_hugepage/enabled`` (read here when None; None where it is
    absent or unreadable: not Linux, or a kernel without THP)."""
    if text is None:
        try:
            text = THP_ENABLED.read_text(encoding="ascii", errors="replace")
        except OSError:
            return None
    chosen = re.search(r"\[(\w+)\]", text)
    return chosen.group(1) if chosen else None


def available(mode: str | None = None) -> bool:
    """Whether the kernel gives 2 MiB pages to memory marked ``MADV_HUGEPAGE``."""
    mode = thp_mode() if mode is None else mode
    return sys.platform.startswith(("linux", "android")) and mode in THP_MODES_ON


def anonymous_ranges(maps: str | None = None) -> list[tuple[int, int]]:
    """The private anonymous mappings of this process ([start, end) addresses), from the text
    of ``/proc/self/maps`` (read here when None): writable, no file, no name such as [heap]."""
    if maps is None:
        maps = Path("/proc/self/maps").read_text(encoding="ascii", errors="replace")
    ranges = []
    for line in maps.splitlines():
        m = _MAPS_LINE.match(line)
        if m and m.group(4) == "0" and not m.group(5) and m.group(3).startswith("rw") and m.group(3).endswith("p"):
            ranges.append((int(m.group(1), 16), int(m.group(2), 16)))
    return ranges


def new_ranges(before: list[tuple[int, int]], after: list[tuple[int, int]],
               min_size: int = MIN_BUFFER) -> list[tuple[int, int]]:
    """The parts of ``after`` that no range of ``before`` covered, cut to whole 2 MiB pages,
    of at least ``min_size`` each. The kernel merges adjacent anonymous mappings, so a new
    buffer may share one range with older memory; only the new part is returned."""
    out = []
    for lo, hi in after:
        pieces = [(lo, hi)]
        for b_lo, b_hi in before:
            cut = []
            for p_lo, p_hi in pieces:
                if b_hi <= p_lo or b_lo >= p_hi:
                    cut.append((p_lo, p_hi))
                    continue
                if p_lo < b_lo:
                    cut.append((p_lo, b_lo))
                if b_hi < p_hi:
                    cut.append((b_hi, p_hi))
            pieces = cut
        for p_lo, p_hi in pieces:
            a = -(-p_lo // HUGE_PAGE) * HUGE_PAGE
            b = p_hi // HUGE_PAGE * HUGE_PAGE
            if b - a >= min_size:
                out.append((a, b))
    return out


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    """This process's C library, with the memory calls this module makes typed."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def advise(ranges: list[tuple[int, int]]) -> int:
    """``madvise(MADV_HUGEPAGE)`` each range; the bytes the kernel accepted."""
    madvise = _libc().madvise
    return sum(hi - lo for lo, hi in ranges if madvise(lo, hi - lo, MADV_HUGEPAGE) == 0)


def huge_mapped_bytes(ranges: list[tuple[int, int]], smaps: str | None = None) -> int:
    """How much of ``ranges`` the kernel backs with huge pages now: the ``AnonHugePages`` of
    every mapping that overlaps them, up to the overlap (``/proc/self/smaps``, read here when None)."""
    if not ranges:
        return 0
    if smaps is None:
        try:
            smaps = Path("/proc/self/smaps").read_text(encoding="ascii", errors="replace")
        except OSError:
            return 0
    total, overlap = 0, 0
    for line in smaps.splitlines():
        m = _MAPS_LINE.match(line)
        if m:  # the kernel may have merged a range with its neighbours: count the overlap at most
            lo, hi = int(m.group(1), 16), int(m.group(2), 16)
            overlap = sum(max(0, min(hi, r_hi) - max(lo, r_lo)) for r_lo, r_hi in ranges)
        elif overlap and line.startswith("AnonHugePages:"):
            fields = line.split()
            if len(fields) > 1 and fields[1].isdigit():
                total += min(overlap, int(fields[1]) << 10)
    return total


def probe(size: int = 2 * HUGE_PAGE) -> dict:
    """Whether this process really gets 2 MiB pages now: a fresh anonymous buffer of ``size``
    (whole 2 MiB pages, aligned), marked ``MADV_HUGEPAGE``, written, and read back from smaps.
    The kernel's setting can say "madvise" while a container's or process's THP switch, or
    memory too fragmented to compact, gives none; ``edgeagent doctor`` asks this."""
    libc = _libc()
    span = size + HUGE_PAGE  # room to align the buffer to a 2 MiB boundary
    base = libc.mmap(None, span, 0x1 | 0x2, 0x02 | 0x20, -1, 0)  # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
    if base in (None, ctypes.c_void_p(-1).value):
        return {"size_mb": size >> 20, "huge_mb": 0.0, "error": f"mmap failed (errno {ctypes.get_errno()})"}
    try:
        start = -(-base // HUGE_PAGE) * HUGE_PAGE
        if libc.madvise(start, size, MADV_HUGEPAGE) != 0:
            return {"size_mb": size >> 20, "huge_mb": 0.0, "error": f"madvise refused (errno {ctypes.get_errno()})"}
        ctypes.memset(start, 1, size)
        return {"size_mb": size >> 20, "huge_mb": huge_mapped_bytes([(start, start + size)]) / (1 << 20)}
    finally:
        libc.munmap(base, span)


_THRESHOLD_SET = False


def own_mappings_for_buffers(threshold: int = MIN_BUFFER) -> bool:
    """Make glibc give every allocation of ``threshold`` bytes or more a mapping of its own, once
    per process (``mallopt(M_MMAP_THRESHOLD)``). glibc's threshold is otherwise dynamic: after
    a large block is freed it rises (up to 32 MiB) and the next model's weight buffer may reuse
    heap memory already faulted in 4 KiB pages, which no advice changes. A fixed threshold is
    within glibc's own range and also stops that adjustment. Elsewhere (Android's allocators map
    large blocks on their own) this does nothing; False where mallopt is absent."""
    global _THRESHOLD_SET
    if _THRESHOLD_SET:
        return True
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _THRESHOLD_SET = bool(mallopt(-3, threshold))  # M_MMAP_THRESHOLD (malloc.h); 1 on success
    return _THRESHOLD_SET


class LoadAdvice:
    """One load's huge-page advice: ``callback`` is the ``llama_progress_callback`` to give
    llama.cpp's model params; the snapshot of this process's anonymous memory is taken here,
    before the load. ``ranges`` holds what was advised (empty until the first call)."""

    def __init__(self) -> None:
        import llama_cpp

        own_mappings_for_buffers()  # load_llama has set it already; a direct user may not have
        self.before = anonymous_ranges()
        self.ranges: list[tuple[int, int]] = []
        self.advised_bytes = 0
        self._called = False
        # kept here: llama.cpp holds only the function pointer
        self.callback = llama_cpp.llama_progress_callback(self._progress)

    def _progress(self, progress: float, _user_data) -> bool:
        if not self._called:
            self._called = True
            try:
                self.ranges = new_ranges(self.before, anonymous_ranges())
                self.advised_bytes = advise(self.ranges)
            except Exception:  # noqa: BLE001 - no /proc, no libc: the load goes on with 4 KiB pages
                self.ranges = []
        return True  # go on loading

    def huge_mapped_mb(self) -> float:
        return huge_mapped_bytes(self.ranges) / (1 << 20)


def huge_pages_info(advice: LoadAdvice | None) -> dict:
    """What a load got, for ``Engine.info`` and the bench: whether huge pages were asked for,
    the MiB advised and the MiB the kernel backs with 2 MiB pages now."""
    if advice is None:
        return {"on": False}
    return {"on": True, "advised_mb": round(advice.advised_bytes / (1 << 20), 1),
            "huge_mb": round(advice.huge_mapped_mb(), 1)}


def huge_pages_text(info: dict) -> str:
    """``huge_pages_info`` in words: "134 of 140 MiB", or "off (4 KiB pages)"."""
    if not info.get("on"):
        return "off (4 KiB pages)"
    return f"{info['huge_mb']:.0f} of {info['advised_mb']:.0f} MiB"
