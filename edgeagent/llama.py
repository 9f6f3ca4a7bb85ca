"""One way into llama.cpp: loading a GGUF, the context settings, the C-API runner.

Every runtime path that runs a model goes through here:

- ``LlamaSettings``: the context set-up (context length, batch and physical batch, threads,
  KV cache type, flash attention) and the one table of KV cache types. ``llama_kwargs`` is
  what ``llama_cpp.Llama`` gets (``edgeagent.engine.Engine``, ``edgeagent.quality``'s
  perplexity and KV measurement, ``edgeagent.quantize``'s logits); ``context_params`` is the
  same set-up as llama.cpp's ``llama_context_params`` for the C API (``LlamaRunner``).
- ``load_llama``: ``llama_cpp.Llama`` with weight repacking set explicitly (``default_repack``),
  the weights on 2 MiB pages where the kernel gives them (``edgeagent.hugepages``), else mmap
  off where llama.cpp repacks (``use_mmap``), and llama.cpp's log routed through ``LLAMA_LOG``
  (one-line load errors, quiet unless verbose).
- ``LlamaRunner``: one model + context + batch through the C API with logits only where asked,
  what self-speculative decoding (``edgeagent.speculative``) and the early-exit bench build on.
- ``ThreadPool``: both attach one persistent ggml thread pool to their context, as llama-bench
  does, so a build without OpenMP does not start threads for every token.

``edgeagent.engine`` (the engine API the agent uses) sits on top of ``load_llama``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_BACKEND_LOCK = threading.Lock()
_BACKEND_READY = False

# The KV cache types a device profile may ask for (``profiles.Runtime.kv_cache_type``), by
# llama-cpp-python's name of the ggml type. llama.cpp's default is F16.
KV_TYPES = {"f32": "GGML_TYPE_F32", "f16": "GGML_TYPE_F16", "q8_0": "GGML_TYPE_Q8_0"}

# The attention set-up under which llama.cpp's output depends on the tokens alone, not on how
# they reached the KV cache (``LlamaSettings.exact``): flash attention with Q8_0 keys and F16
# values. llama.cpp's CPU flash attention (ggml-cpu ops.cpp, 0.3.36's llama.cpp) takes a tiled
# kernel for a batch of 64 or more rows and a split-over-the-cache kernel for one row at 512+
# cells, but only when K and V are both F16 (or both F32); each rounds differently from the
# per-row kernel the rest take. Mixed K/V types leave only the per-row kernel, which gives every
# row the same bits in any batch. Without flash attention the KQ and KQV products take
# llamafile's sgemm for two or more rows and a dot product for one, so one token evaluated
# alone differs too (the shipped SmolLM2 agent; not the built-in model). F32 does not help:
# llama.cpp converts an F32 cache to F16 before flash attention. ``calibrate.exactness`` checks
# all three set-ups on the machine it runs on.
EXACT_KV_TYPES = ("q8_0", "f16")
# The attention set-ups a user picks by name (``--attention``), as ``Engine`` /
# ``SelfSpeculativeEngine`` / ``measure_gguf`` keyword arguments: flash attention on (the
# default, llama.cpp's), off, and the exact set-up.
ATTENTION_SETUPS: dict[str, dict[str, bool]] = {"on": {"flash_attn": True}, "off": {"flash_attn": False},
                                                "exact": {"exact": True}}


def llama_lib():
    """llama-cpp-python's C bindings, with llama.cpp's backend initialised once."""
    import llama_cpp

    global _BACKEND_READY
    with _BACKEND_LOCK:
        if not _BACKEND_READY:
            llama_cpp.llama_backend_init()
            _BACKEND_READY = True
    return llama_cpp


class ThreadPool:
    """A persistent ggml thread pool attached to one llama.cpp context, as llama-bench and
    llama-cli attach theirs (``llama_attach_threadpool``). llama-cpp-python attaches none, and
    then ggml builds a pool for every graph it computes: in a build without OpenMP (llama.cpp's
    documented Android NDK build, Apple's clang) that starts and joins n - 1 threads for every
    decoded token. With OpenMP (this project's pip build) the workers are OpenMP's own either
    way, and the pool changes nothing measurable (docs/DESIGN.md, "Stock llama.cpp").

    The pool's parameters are ggml's defaults (``ggml_threadpool_params_init``: normal
    priority, the process's affinity, hybrid polling at 50, llama-bench's own), filled by ggml
    into a buffer larger than the struct, so no layout is copied here. ``attach`` returns None
    where the library does not export the calls; the context then runs as before."""

    _API: tuple | None = None
    _BUFFER_BYTES = 4096  # ggml_threadpool_params: 512 cpumask bytes and five small fields

    @classmethod
    def _api(cls):
        """(params_init, new, free, attach, detach) through ggml's CPU backend registry, as
        llama-bench finds them; () where something is missing."""
        if cls._API is not None:
            return cls._API
        try:
            import llama_cpp
            from llama_cpp._ggml import libggml

            ggml = ctypes.CDLL(libggml._name)  # own function objects: llama-cpp-python's stay as they are
            llama = ctypes.CDLL(llama_cpp.llama_cpp._lib._name)
            ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
            ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
            ggml.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
            ggml.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
            ggml.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            ggml.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
            ggml.ggml_threadpool_params_init.argtypes = [ctypes.c_void_p, ctypes.c_int]
            ggml.ggml_threadpool_params_init.restype = None
            device = ggml.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
            reg = ggml.ggml_backend_dev_backend_reg(device) if device else None
            new_at = ggml.ggml_backend_reg_get_proc_address(reg, b"ggml_threadpool_new") if reg else None
            free_at = ggml.ggml_backend_reg_get_proc_address(reg, b"ggml_threadpool_free") if reg else None
            if not (new_at and free_at):
                cls._API = ()
                return cls._API
            new = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(new_at)
            free = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(free_at)
            llama.llama_attach_threadpool.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
            llama.llama_attach_threadpool.restype = None
            llama.llama_detach_threadpool.argtypes = [ctypes.c_void_p]
            llama.llama_detach_threadpool.restype = None
            cls._API = (ggml.ggml_threadpool_params_init, new, free, llama.llama_attach_threadpool,
                        llama.llama_detach_threadpool)
        except (AttributeError, OSError, ImportError):
            cls._API = ()
        return cls._API

    @classmethod
    def available(cls) -> bool:
        """Whether the loaded llama.cpp exports the calls a pool needs."""
        return bool(cls._api())

    @classmethod
    def attach(cls, ctx, n_threads: int, share: "AttachedPool | None" = None) -> "AttachedPool | None":
        """A pool of ``n_threads`` attached to ``ctx`` for both single-token and batch graphs
        (they run with the same thread count here, which a pool must match exactly); None where
        the library offers no pool. ``share``: attach that pool instead of starting one, for a
        context that computes only in turn with its owner's (a speculative draft and its full
        model): two pools would each keep threads polling while the other computes."""
        api = cls._api()
        if not api or not ctx:
            return None
        params_init, new, free, attach, detach = api
        if share is not None and share.handle:
            attach(ctx, share.handle, share.handle)
            return AttachedPool(ctx, share.handle, None, detach)
        params = ctypes.create_string_buffer(cls._BUFFER_BYTES)
        params_init(params, int(n_threads))
        handle = new(params)
        if not handle:
            return None
        attach(ctx, handle, handle)
        return AttachedPool(ctx, handle, free, detach)


class AttachedPool:
    """A ``ThreadPool`` attached to a context: ``close`` detaches it, then frees its threads
    if this context owns it (``free`` None: a shared pool, its owner frees it). Before or after
    the context is freed: llama.cpp only holds the pointer."""

    def __init__(self, ctx, handle: int, free, detach) -> None:
        self.ctx, self.handle, self._free, self._detach = ctx, handle, free, detach

    def close(self, context_alive: bool = True) -> None:
        if self.handle:
            if context_alive and self.ctx:
                self._detach(self.ctx)
            if self._free is not None:
                self._free(self.handle)
            self.handle = None


class EngineError(RuntimeError):
    """The model cannot be loaded or the request cannot be served; says why."""


_LOAD_LOCK = threading.Lock()


def default_repack(cpuinfo: str | None = None) -> bool:
    """Whether llama.cpp should repack weights into CPU-specific layouts at load time, decided
    from `cpuinfo` (the text of ``/proc/cpuinfo``; read from this machine when None).

    On ARM (aarch64) repacking (Q4_0 -> interleaved 4x4/4x8/8x8 blocks for NEON/i8mm/SVE) is
    the main CPU speed-up: on. On x86 it is on too (the AVX2/AVX-512 repack buffers run fine,
    e.g. on this project's AMD EPYC host), unless the CPU has Intel AMX (``amx_tile`` in the
    flags): llama.cpp then also repacks into its AMX buffer, which segfaults on quantized
    models (ggml-org/llama.cpp#20824, "segfault in ggml_backend_amx_mul_mat"). An x86 machine
    whose cpuinfo cannot be read (not Linux) could have AMX, so it stays off there.
    """
    from edgeagent.doctor import has_amx, parse_cpuinfo

    if cpuinfo is None:
        machine = platform.machine().lower()
        if machine not in ("x86_64", "amd64", "i686", "i386", "x86"):
            return True
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    cpu = parse_cpuinfo(cpuinfo)
    return cpu.arch != "x86_64" or not has_amx(cpu)


def use_mmap(path: str | os.PathLike, repack: bool, machine: str | None = None) -> bool:
    """Whether to memory-map ``path``: yes, unless llama.cpp repacks some of its tensors here.

    With mmap on, the tensors llama.cpp repacks are copied out of the mapped file into its
    repack buffer, and the file's pages they were read from stay mapped and resident (the
    loader unmaps only the file's head and tail, llama-model-loader.cpp ``load_all_data``):
    the process holds those weights twice. Measured here (AMD EPYC, x86 repacks Q4_K): the
    SmolLM2 agent's Q4_K_M peaks 7.4 MB higher with mmap, the size of its x86-repacked tensors
    (7.6 MB); on an ARM phone, where Q8_0 repacks too, that is all of the agent's Q8_0 weights
    (136 MB). Without mmap llama.cpp reads each tensor into its buffer, repacked or not, and
    the process holds what llama.cpp allocated, which is what ``estimate`` counts. A file
    with nothing to repack keeps mmap (lazy, shared file pages); so does one whose header
    cannot be read here (llama.cpp's own load then says why). A tied output head that is
    repacked changes nothing here: the token embedding it is copied from is read from the
    file either way.
    """
    from edgeagent.shapes import REPACKED_TYPES, read_gguf_meta, repack_arch, repacked_bytes

    arch = repack_arch(machine or platform.machine())
    if not repack or arch is None:
        return True
    try:
        tensors = read_gguf_meta(path).tensors  # the header only: no gguf package in the runtime's memory
    except (ValueError, OSError):
        return True
    return repacked_bytes(tensors, REPACKED_TYPES[arch]) == 0


class LlamaLog:
    """Where llama.cpp's log goes.

    llama-cpp-python 0.3.36's own callback reads ggml's log levels in an older order (its
    ERROR is ggml's WARN, 3; ggml's ERROR, 4, it takes for DEBUG), so with ``verbose=False``
    it prints llama.cpp's warnings ("n_ctx_seq (2048) > n_ctx_train (1024)") and drops its
    errors; during a load it also silences stderr altogether, so a file it cannot load ends in
    "Failed to load model from file" with the reason lost. The engine routes the log through
    this callback instead: with ``verbose`` every line goes to stderr, as llama-cpp-python's
    verbose mode prints it; otherwise nothing is printed and the latest error messages are
    kept, for `load_llama` to name the cause in its one-line error. ``verbose`` is global to
    the process, as llama.cpp's log is: the last load sets it.
    """

    ERROR, CONT = 4, 5  # ggml.h's ggml_log_level: GGML_LOG_LEVEL_ERROR, GGML_LOG_LEVEL_CONT (continues the previous message)

    def __init__(self) -> None:
        self.verbose = False
        self.errors: deque[str] = deque(maxlen=16)
        self._level = 0
        self._callback = None  # the ctypes function llama.cpp calls; kept alive here

    def install(self, verbose: bool) -> None:
        import llama_cpp

        self.verbose = verbose
        if self._callback is None:
            self._callback = llama_cpp.llama_log_callback(self._record)
            llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _record(self, level: int, text: bytes, _user_data) -> None:
        message = text.decode("utf-8", errors="replace")
        if self.verbose:
            print(message, end="", file=sys.stderr, flush=True)
            return
        if level == self.CONT:
            if self._level == self.ERROR and self.errors:
                self.errors[-1] += message
            return
        self._level = level
        if level == self.ERROR:
            self.errors.append(message)

    def first_error(self) -> str | None:
        """The first error message kept (since `errors` was last cleared), on one line."""
        return " ".join(self.errors[0].split()) if self.errors else None


LLAMA_LOG = LlamaLog()


def load_llama(model_path: str | os.PathLike, *, repack: bool | None = None, huge_pages: bool | None = None,
               verbose: bool = False, **kwargs):
    """``llama_cpp.Llama(model_path, **kwargs)`` with weight repacking and huge pages set explicitly.

    ``huge_pages`` (None: where the kernel gives them, ``edgeagent.hugepages.available``) loads
    the weights without mmap into buffers marked for 2 MiB pages (``hugepages.LoadAdvice``);
    ``llm.edgeagent_huge_pages`` is that advice (None when off).

    llama-cpp-python 0.3.36 has no ``Llama(...)`` argument for ``llama_model_params.use_extra_bufts``
    and builds the params inside ``__init__`` from ``llama_model_default_params()``, so the
    only way to set it is to hand ``__init__`` a defaults function with the flag changed.
    The lock keeps that swap from leaking into a concurrent load.
    """
    import llama_cpp
    from llama_cpp import llama_cpp as llama_c

    path = Path(model_path)
    if not path.is_file():
        raise EngineError(f"{path}: model file not found")
    from edgeagent import hugepages

    repack = default_repack() if repack is None else repack
    advice = None
    hugepages.own_mappings_for_buffers()  # so no load reuses heap memory an earlier one faulted in
    if not kwargs.get("vocab_only"):
        if huge_pages is None:  # a caller who asks for mmap keeps it
            huge_pages = kwargs.get("use_mmap") is not True and hugepages.available()
        if huge_pages:  # llama.cpp's own buffers, marked before the first tensor is read
            if kwargs.get("use_mmap"):
                raise EngineError("huge pages need the weights read into llama.cpp's buffers: use_mmap must be off")
            kwargs["use_mmap"] = False
        elif not use_mmap(path, repack):
            kwargs.setdefault("use_mmap", False)
    with _LOAD_LOCK:
        LLAMA_LOG.install(verbose)
        LLAMA_LOG.errors.clear()
        defaults = llama_c.llama_model_default_params
        if huge_pages and not kwargs.get("vocab_only"):
            advice = hugepages.LoadAdvice()  # this process's memory before the load

        def model_params():
            params = defaults()
            params.use_extra_bufts = repack
            if advice is not None:
                params.progress_callback = advice.callback
            return params

        llama_c.llama_model_default_params = model_params
        try:
            llm = llama_cpp.Llama(model_path=str(path), verbose=verbose, **kwargs)
        except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
            reason = LLAMA_LOG.first_error() or str(e)
            raise EngineError(f"{path}: llama.cpp could not load it: {reason}") from None
        finally:
            llama_c.llama_model_default_params = defaults
    pool = None
    cp = llm.context_params
    if not kwargs.get("vocab_only") and cp.n_threads == cp.n_threads_batch:
        pool = ThreadPool.attach(llm.ctx, cp.n_threads)
        if pool is not None:  # closed before the context (the stack unwinds last in, first out)
            llm._stack.callback(pool.close)
    llm.edgeagent_threadpool = pool
    llm.edgeagent_huge_pages = advice
    return llm


def kv_type_id(name: str | None) -> int | None:
    """The ggml type id of a KV cache type name (None: llama.cpp's default, F16)."""
    if name is None:
        return None
    if name not in KV_TYPES:
        raise EngineError(f"KV cache type {name!r} is unknown (choose from {', '.join(KV_TYPES)})")
    import llama_cpp

    return int(getattr(llama_cpp, KV_TYPES[name]))


@dataclass(frozen=True)
class LlamaSettings:
    """A llama.cpp context's set-up, typed: what a device profile's ``[runtime]`` and the
    command line decide, resolved once (``from_runtime``) and handed to llama.cpp one of two
    ways (``llama_kwargs``, ``context_params``) that set the same fields."""

    n_ctx: int = 4096
    n_batch: int = 512
    n_ubatch: int | None = None  # None: n_batch
    n_threads: int | None = None  # None: every core (os.cpu_count())
    kv_type: str | None = None  # f16 | q8_0 | f32; None: llama.cpp's default (f16)
    flash_attn: bool = True  # llama.cpp's own default on a CPU (its "auto" turns it on)
    # Output that depends on the tokens alone (EXACT_KV_TYPES): flash attention on, Q8_0 keys,
    # F16 values, whatever flash_attn says; kv_type must be unset.
    exact: bool = False

    def __post_init__(self) -> None:
        kv_type_id(self.kv_type)  # an unknown name is an error here, before any load
        if self.exact and self.kv_type is not None:
            raise EngineError(f"exact attention sets the KV cache types itself ({'/'.join(EXACT_KV_TYPES)} for K/V); "
                              f"it cannot take kv_type {self.kv_type!r} too")

    @property
    def attention(self) -> tuple[bool, str, str]:
        """What llama.cpp gets: (flash attention, K cache type, V cache type)."""
        if self.exact:
            return True, *EXACT_KV_TYPES
        kv = self.kv_type or "f16"
        return self.flash_attn, kv, kv

    @classmethod
    def from_runtime(cls, runtime: Any | None = None, *, n_ctx: int = 4096, n_batch: int = 512,
                     n_ubatch: int | None = None, n_threads: int | None = None,
                     flash_attn: bool | None = None, exact: bool = False) -> LlamaSettings:
        """Explicit values first, then the device profile's ``runtime`` (a
        ``profiles.Runtime``), then the defaults. ``exact`` leaves the profile's KV type out."""
        if runtime is None:
            return cls(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch or n_batch, n_threads=n_threads,
                       flash_attn=cls.flash_attn if flash_attn is None else flash_attn, exact=exact)
        return cls(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch or runtime.n_ubatch or n_batch,
                   n_threads=n_threads or runtime.threads or None, kv_type=None if exact else runtime.kv_cache_type,
                   flash_attn=flash_attn if flash_attn is not None else runtime.flash_attn, exact=exact)

    @property
    def threads(self) -> int:
        return int(self.n_threads or os.cpu_count() or 1)

    @property
    def ubatch(self) -> int:
        return self.n_ubatch or self.n_batch

    def llama_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``llama_cpp.Llama`` (and ``load_llama``)."""
        flash, k, v = self.attention
        kwargs: dict[str, Any] = dict(n_ctx=self.n_ctx, n_batch=self.n_batch, n_ubatch=self.ubatch,
                                      n_threads=self.threads, n_threads_batch=self.threads, flash_attn=flash)
        if self.exact or self.kv_type is not None:
            kwargs.update(type_k=kv_type_id(k), type_v=kv_type_id(v))
        return kwargs

    def context_params(self):
        """The same set-up as llama.cpp's ``llama_context_params`` (for the C API): the fields
        ``llama_cpp.Llama`` sets from ``llama_kwargs``, one sequence."""
        lib = llama_lib()
        cp = lib.llama_context_default_params()
        cp.n_ctx = self.n_ctx
        cp.n_batch = self.n_batch
        cp.n_ubatch = self.ubatch
        cp.n_seq_max = 1
        cp.n_threads = cp.n_threads_batch = self.threads
        flash, k, v = self.attention
        cp.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.yarn_attn_factor, cp.yarn_beta_fast, cp.yarn_beta_slow = 1.0, 32.0, 1.0  # as llama_cpp.Llama sets them
        cp.no_perf = False
        if self.exact or self.kv_type is not None:
            cp.type_k, cp.type_v = kv_type_id(k), kv_type_id(v)
        return cp


# ---------------------------------------------------------------------------------------
# one GGUF in llama.cpp, logits only where asked


class LlamaRunner:
    """A model + context + batch through llama.cpp's C API, with the tokens held in its KV
    cache tracked in ``tokens`` (positions 0..len-1, sequence 0).

    The context is ``LlamaSettings.context_params``: the settings ``llama_cpp.Llama`` gets for
    ``edgeagent.engine.Engine`` (``LlamaSettings.llama_kwargs``: same n_batch/n_ubatch, KV
    cache types and flash attention, repacking as ``load_llama``), so the full model computes
    what the engine computes.
    """

    def __init__(self, model_path: str | os.PathLike, settings: LlamaSettings | None = None, *,
                 repack: bool | None = None, huge_pages: bool | None = None, verbose: bool = False,
                 share_pool: "LlamaRunner | None" = None, **context: Any):
        """``settings``, or ``LlamaSettings(**context)`` (``n_ctx``, ``n_batch``, ``n_threads``,
        ``kv_type``, ``exact``). ``share_pool``: a runner whose thread pool this one computes
        with, in turn (``ThreadPool.attach``). ``huge_pages`` as ``load_llama`` takes it."""
        from edgeagent import hugepages

        lib = llama_lib()
        settings = settings or LlamaSettings(**context)
        logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if verbose else logging.ERROR)
        path = Path(model_path)
        if not path.is_file():
            raise EngineError(f"{path}: model file not found")
        self.path = path
        self.n_threads = settings.threads
        self.repack = default_repack() if repack is None else bool(repack)
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers = 0
        hugepages.own_mappings_for_buffers()
        huge = hugepages.available() if huge_pages is None else huge_pages
        mmap = not huge and use_mmap(path, self.repack)
        mp.load_mode = lib.LLAMA_LOAD_MODE_MMAP if mmap else lib.LLAMA_LOAD_MODE_NONE
        # x86's AMX repack buffer crashes on quantized models here; see default_repack.
        mp.use_extra_bufts = self.repack
        self.huge_pages = hugepages.LoadAdvice() if huge else None
        if self.huge_pages is not None:
            mp.progress_callback = self.huge_pages.callback
        self.model = lib.llama_model_load_from_file(str(path).encode("utf-8"), mp)
        if not self.model:
            raise EngineError(f"{path}: llama.cpp could not load it")
        self.settings = settings
        self.kv_type = "/".join(settings.attention[1:]) if settings.exact else settings.kv_type or "f16"
        self.ctx = lib.llama_init_from_model(self.model, settings.context_params())
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise EngineError(f"{path}: llama.cpp could not create a context of {settings.n_ctx} tokens")
        self.threadpool = ThreadPool.attach(self.ctx, settings.threads,
                                            share=share_pool.threadpool if share_pool is not None else None)
        self.n_ctx = lib.llama_n_ctx(self.ctx)
        self.n_batch = n_batch = settings.n_batch
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_layer = lib.llama_model_n_layer(self.model)
        self.memory = lib.llama_get_memory(self.ctx)
        self.batch = lib.llama_batch_init(n_batch, 0, 1)
        self._token = np.ctypeslib.as_array(self.batch.token, shape=(n_batch,))
        self._pos = np.ctypeslib.as_array(self.batch.pos, shape=(n_batch,))
        self._wants_logits = np.ctypeslib.as_array(self.batch.logits, shape=(n_batch,))
        np.ctypeslib.as_array(self.batch.n_seq_id, shape=(n_batch,))[:] = 1
        for i in range(n_batch):
            self.batch.seq_id[i][0] = 0
        self.tokens: list[int] = []  # what the KV cache holds
        self._first_output = 0  # batch index of the first logits row of the last decode
        self._piece = ctypes.create_string_buffer(256)
        self._eog: dict[int, bool] = {}
        # measurements
        self.max_output_rows = 0  # most logits rows requested by one decode (memory rule)
        self.decode_calls = 0
        self.decoded_tokens = 0
        self.decode_s = 0.0

    # -- tokens -------------------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        lib = llama_lib()
        data = text.encode("utf-8")
        room = len(data) + 8
        buf = (lib.llama_token * room)()
        n = lib.llama_tokenize(self.vocab, data, len(data), buf, room, add_bos, True)
        if n < 0:
            room = -n
            buf = (lib.llama_token * room)()
            n = lib.llama_tokenize(self.vocab, data, len(data), buf, room, add_bos, True)
        if n < 0:
            raise EngineError(f"could not tokenize a text of {len(data)} bytes")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        lib = llama_lib()
        n = lib.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = lib.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            return bytes(buf[:n])
        return bytes(self._piece[:n])

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        """As ``llama_cpp.Llama.detokenize`` (special tokens not rendered)."""
        return b"".join(self.piece(t) for t in tokens)

    def is_eog(self, token: int) -> bool:
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = bool(llama_lib().llama_vocab_is_eog(self.vocab, token))
        return eog

    # -- the KV cache -------------------------------------------------------------------

    def truncate(self, n: int) -> None:
        """Forget every cached position from ``n`` on (the rollback after a rejected draft)."""
        if n < len(self.tokens):
            if not llama_lib().llama_memory_seq_rm(self.memory, 0, n, -1):
                raise EngineError(f"{self.path.name}: llama.cpp could not remove KV positions from {n}")
            del self.tokens[n:]

    def reset(self) -> None:
        self.truncate(0)

    def feed(self, seq: Sequence[int], n_outputs: int = 1) -> None:
        """Make the KV cache hold ``seq`` and leave logits for its last ``n_outputs`` positions.

        The cached prefix shared with ``seq`` is kept (prompt reuse across calls, accepted
        drafts within one); everything after it is removed, then the rest is decoded.
        """
        if not 1 <= n_outputs <= min(len(seq), self.n_batch):
            raise EngineError(f"need 1..{min(len(seq), self.n_batch)} output rows, asked for {n_outputs}")
        if len(seq) > self.n_ctx:
            raise EngineError(f"{len(seq)} tokens do not fit the context ({self.n_ctx})")
        keep = 0
        limit = min(len(self.tokens), len(seq) - n_outputs)
        while keep < limit and self.tokens[keep] == seq[keep]:
            keep += 1
        self.truncate(keep)
        self._decode(list(seq[keep:]), n_outputs)

    def _decode(self, tokens: list[int], n_outputs: int) -> None:
        lib = llama_lib()
        n = len(tokens)
        first_out = n - n_outputs
        start = 0
        t0 = time.perf_counter()
        while start < n:
            end = min(n, start + self.n_batch)
            if end < n and end > first_out:  # keep every output row in the last batch
                end = max(start + 1, first_out)
            m = end - start
            self._token[:m] = self._batch_ids(tokens[start:end])
            self._pos[:m] = np.arange(len(self.tokens), len(self.tokens) + m)
            self._wants_logits[:m] = np.arange(start, end) >= first_out
            self.batch.n_tokens = m
            rc = lib.llama_decode(self.ctx, self.batch)
            if rc != 0:
                raise EngineError(f"{self.path.name}: llama_decode failed with code {rc} ({m} tokens at {len(self.tokens)})")
            self.tokens.extend(tokens[start:end])
            self._first_output = max(0, first_out - start)
            start = end
        self.decode_s += time.perf_counter() - t0
        self.decode_calls += 1
        self.decoded_tokens += n
        self.max_output_rows = max(self.max_output_rows, n_outputs)

    def _batch_ids(self, tokens: list[int]) -> list[int]:
        """The ids a batch carries for ``tokens`` (a trimmed draft maps them to its own)."""
        return tokens

    def logits(self, row: int) -> np.ndarray:
        """Logits row ``row`` (0 = first of the last decode's outputs). A view into
        llama.cpp's buffer, valid until the next decode."""
        return self.logits_of(row, self.n_vocab)

    def logits_of(self, row: int, n_vocab: int) -> np.ndarray:
        ptr = llama_lib().llama_get_logits_ith(self.ctx, self._first_output + row)
        if not ptr:
            raise EngineError(f"{self.path.name}: no logits for output row {row}")
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,))

    def close(self) -> None:
        lib = llama_lib()
        if getattr(self, "threadpool", None) is not None:
            self.threadpool.close(context_alive=bool(getattr(self, "ctx", None)))
            self.threadpool = None
        if getattr(self, "ctx", None):
            lib.llama_batch_free(self.batch)
            lib.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            lib.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
