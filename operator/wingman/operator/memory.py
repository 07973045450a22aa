"""Keeping the operator's resident memory near what it holds: the allocator chosen and tuned at
start, and freed memory handed back to the OS after the sweep retired objects.

A burst of thousands of requests and grants makes Python allocate hundreds of thousands of
small objects at once, most of them for a few seconds. CPython's own small-object allocator
(pymalloc) keeps them in 1 MiB arenas and returns an arena to the OS only when every object in
it is gone: a few survivors scattered over the burst's arenas keep all of them resident, for
good (measured: 136 arenas after a burst of 1,000, 35 MiB of objects left in them). So, on
glibc, the ``wingman operator`` process runs with ``PYTHONMALLOC=malloc`` (``use_malloc``
re-executes the command once with it set, unless ``PYTHONMALLOC`` is set already): glibc's
allocator can give back every free page, wherever it lies (``release``, after the sweep
retired objects, with the cyclic garbage collected first).

glibc also gives every thread that allocates its own arena (up to eight per core), and memory
freed in one arena is only reused by the threads on that arena: the operator's pool of API
threads (``WINGMAN_API_CONCURRENCY``) would spread a burst over many arenas. ``limit_arenas``
caps them before any of those threads exists (most allocations happen under the GIL anyway,
so the threads hardly contend for the arenas' locks). The re-executed process also runs
without glibc's per-thread cache of freed chunks (``GLIBC_TUNABLES``
``glibc.malloc.tcache_count=0``, unless a tcache count is set already): each of the pool's
threads would keep up to about 230 KiB of freed chunks (seven of each size up to 1 KiB)
scattered over the heap, and every page one of them sits on stays resident after the burst
(1,000 burst: after retention 1.52-1.59 → 1.34-1.42 times idle over several runs, the peak a
few MiB lower, for 3 to 6 % more operator CPU). Elsewhere (musl, macOS) all of this is a no-op.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from typing import Any

#: mallopt parameter: the most arenas the process may have (glibc malloc.h).
M_ARENA_MAX = -8
#: The arenas the operator runs with: the main one and one for all the pool's threads.
MALLOC_ARENAS = 2
#: glibc tunable of the re-executed process: no per-thread cache of freed chunks.
NO_TCACHE = "glibc.malloc.tcache_count=0"


def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


_LIBC = _glibc()


def use_malloc() -> None:
    """Re-execute this process's command with ``PYTHONMALLOC=malloc`` (glibc only), unless
    ``PYTHONMALLOC`` is set: call it first thing, before any thread or file is opened. Returns
    only when nothing is to be done or the re-execution failed (the process then goes on as it
    is, said on stderr); the process image is replaced otherwise."""
    if _LIBC is None or "PYTHONMALLOC" in os.environ or not sys.orig_argv:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # the same argv, as argv (no shell): this very command again
        os.execve(sys.executable, sys.orig_argv,  # noqa: S606
                  {**os.environ, "PYTHONMALLOC": "malloc",
                   "GLIBC_TUNABLES": tunables(os.environ.get("GLIBC_TUNABLES"))})
    except OSError as exc:  # no interpreter to run again (embedded, removed, not permitted)
        print(f"wingman: running on Python's own allocator: cannot re-execute "
              f"{sys.executable or '(unknown interpreter)'} ({exc.strerror or exc})",
              file=sys.stderr)


def tunables(current: str | None) -> str:
    """``GLIBC_TUNABLES`` for the re-executed process: ``current`` with ``NO_TCACHE`` added,
    unless it sets a tcache count already (pure)."""
    if not current:
        return NO_TCACHE
    if "glibc.malloc.tcache_count=" in current:
        return current
    return f"{current}:{NO_TCACHE}"


def limit_arenas(arenas: int) -> bool:
    """Let at most ``arenas`` malloc arenas exist (call before threads start); True if set."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(M_ARENA_MAX, ctypes.c_int(arenas)))


def release() -> bool:
    """Collect cyclic garbage, then return every arena's free pages to the OS; True if any
    memory was released."""
    gc.collect()
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(ctypes.c_size_t(0)))


__all__ = ["MALLOC_ARENAS", "M_ARENA_MAX", "NO_TCACHE", "limit_arenas", "release", "tunables",
           "use_malloc"]
