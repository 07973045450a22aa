"""Keeping the operator's resident memory near what it holds: the allocator chosen and tuned at
start, and freed memory handed back to the OS after the sweep retired objects.

A burst of thousands of requests and grants makes Python allocate hundreds of thousands of
small objects at once, most of them for a few seconds. CPython's own small-object allocator
(pymalloc) keeps them in 1 MiB arenas and returns an arena to the OS only when every object in
it is gone: a few survivors scattered over the burst's arenas keep all of them resident, for
good (measured: 136 arenas after a burst of 1,000, 35 MiB of objects left in them). So the
``wingman operator`` process runs with ``PYTHONMALLOC=malloc`` on a C allocator that gives
freed pages back: ``use_malloc`` re-executes the command once with its environment set (unless
``PYTHONMALLOC`` is set already), as ``WINGMAN_ALLOCATOR`` says (``settings.ALLOCATORS``):

- ``auto`` (the default): jemalloc when the system has it (Debian's ``libjemalloc2``; the image
  installs it), else glibc's malloc.
- ``jemalloc``: jemalloc, preloaded (``LD_PRELOAD``) with ``JEMALLOC_CONF`` unless
  ``MALLOC_CONF`` is set: one arena, no per-thread caches, a background thread that returns
  freed pages after a second. Its size-class slabs leave far less free memory stranded between
  live chunks than glibc's heap does, and without caches no idle pool thread keeps freed
  memory. 1,000 burst: peak RSS 142-144 against 145-157 MiB with glibc, after retention 1.22-1.23
  against 1.34-1.42 times idle, operator CPU no higher. A start that asks for it where it is not
  installed is refused with a message saying so.
- ``glibc``: glibc's malloc with at most ``MALLOC_ARENAS`` arenas (``limit_arenas``, before the
  pool's threads start: freed memory is only reused by threads on the same arena), no
  per-thread cache of freed chunks (``GLIBC_TUNABLES`` ``glibc.malloc.tcache_count=0``, unless
  a tcache count is set already), and ``malloc_trim`` after retirements (``release``).
  After retention 1.34-1.42 times idle: free chunks smaller than a page stay resident between
  live ones, which no trim can return.
- ``python``: CPython's own allocator, no re-execution.

An ``LD_PRELOAD`` set by whoever started the operator is kept, after jemalloc. When it names
another allocator (a library with ``malloc`` in its file name: tcmalloc, mimalloc, a jemalloc
elsewhere), two allocators are interposed: the operator says so once it logs
(``warn_other_allocators``) and goes on.

Elsewhere (musl, macOS) without jemalloc, all of this is a no-op.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import re
import sys
import sysconfig
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wingman.errors import ConfigError

#: mallopt parameter: the most arenas the process may have (glibc malloc.h).
M_ARENA_MAX = -8
#: The arenas the operator runs with: the main one and one for all the pool's threads.
MALLOC_ARENAS = 2
#: glibc tunable of the re-executed process: no per-thread cache of freed chunks.
NO_TCACHE = "glibc.malloc.tcache_count=0"
#: jemalloc's options for the operator (``MALLOC_CONF`` unless set): one arena (most
#: allocations happen under the GIL), no per-thread caches (an idle thread's cache is never
#: given back), freed pages returned by a background thread after about a second.
JEMALLOC_CONF = ("background_thread:true,narenas:1,tcache:false,dirty_decay_ms:1000,"
                 "muzzy_decay_ms:0")
JEMALLOC = "libjemalloc.so.2"
#: mallctl: every arena (jemalloc's MALLCTL_ARENAS_ALL).
_ALL_ARENAS = 4096
#: How long ``release`` purges again while jemalloc's background thread has a purge under
#: way (jemalloc then returns at once without purging), and how little dirty memory is settled
#: (in bytes: jemalloc counts dirty pages of its own page size, 4 KiB on x86-64 but 16 or
#: 64 KiB on some arm64 builds).
RELEASE_WAIT_SECONDS = 1.0
_SETTLED_BYTES = 1 << 20

log = logging.getLogger("wingman.operator.memory")


def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


_LIBC = _glibc()


def find_jemalloc() -> str | None:
    """The system's jemalloc (absolute path), if installed where the system's libraries are."""
    multiarch = sysconfig.get_config_var("MULTIARCH")
    dirs = [f"/usr/lib/{multiarch}", f"/lib/{multiarch}"] if multiarch else []
    for d in (*dirs, "/usr/lib64", "/usr/lib"):
        path = Path(d) / JEMALLOC
        if path.is_file():
            return str(path)
    return None


def reexec_env(environ: Mapping[str, str], *, jemalloc: str | None, glibc: bool
               ) -> dict[str, str] | None:
    """The environment to re-execute the operator with for the allocator ``environ`` asks for,
    or None to go on as it is (pure). ``ConfigError`` when it asks for jemalloc and there is
    none; an invalid ``WINGMAN_ALLOCATOR`` is left to the settings to report."""
    # here, not at the top: the writer process imports this module, and the settings import
    # the review's modules (half a second and several MiB it does not need)
    from wingman.settings import allocator

    if "PYTHONMALLOC" in environ:  # chosen already: re-executed, or set by whoever started it
        return None
    try:
        choice = allocator(environ)
    except ConfigError:
        return None
    if choice == "python":
        return None
    if choice == "jemalloc" and jemalloc is None:
        raise ConfigError(f"WINGMAN_ALLOCATOR=jemalloc, but {JEMALLOC} is not installed: "
                          "install jemalloc (Debian and Ubuntu: libjemalloc2) or set "
                          "WINGMAN_ALLOCATOR=auto")
    env = {**environ, "PYTHONMALLOC": "malloc"}
    if jemalloc is not None and choice in ("auto", "jemalloc"):
        env["LD_PRELOAD"] = " ".join(p for p in (jemalloc, environ.get("LD_PRELOAD", "")) if p)
        env["MALLOC_CONF"] = environ.get("MALLOC_CONF") or JEMALLOC_CONF
        return env
    if not glibc:
        return None
    env["GLIBC_TUNABLES"] = tunables(environ.get("GLIBC_TUNABLES"))
    return env


def other_allocators(preload: str, jemalloc: str | None) -> list[str]:
    """The libraries of ``preload`` (an ``LD_PRELOAD``) that look like another allocator (a
    file name with ``malloc`` in it) when it preloads ``jemalloc`` too (pure)."""
    entries = [p for p in re.split(r"[\s:]+", preload) if p]
    if jemalloc is None or jemalloc not in entries:
        return []
    return [p for p in entries if p != jemalloc and "malloc" in Path(p).name.lower()]


def warn_other_allocators(environ: Mapping[str, str], jemalloc: str | None) -> None:
    """Log a warning when ``LD_PRELOAD`` interposes another allocator beside ``jemalloc``
    (``other_allocators``; call it once logging is set up)."""
    others = other_allocators(environ.get("LD_PRELOAD", ""), jemalloc)
    if others:
        log.warning(
            "two allocators are interposed: LD_PRELOAD names another allocator besides the "
            "jemalloc the operator preloads; unset LD_PRELOAD (or take the other allocator out "
            "of it) to run on jemalloc alone, or set WINGMAN_ALLOCATOR=glibc or "
            "WINGMAN_ALLOCATOR=python to leave jemalloc out",
            extra={"preloaded": others, "jemalloc": jemalloc})


def use_malloc() -> None:
    """Re-execute this process's command with the allocator ``WINGMAN_ALLOCATOR`` asks for
    (``reexec_env``): call it first thing, before any thread or file is opened. Returns only
    when nothing is to be done or the re-execution failed (the process then goes on as it is,
    said on stderr); the process image is replaced otherwise."""
    if not sys.orig_argv:
        return
    env = reexec_env(os.environ, jemalloc=find_jemalloc(), glibc=_LIBC is not None)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # the same argv, as argv (no shell): this very command again
        os.execve(sys.executable or "", sys.orig_argv, env)  # noqa: S606
    except OSError as exc:  # no interpreter to run again (embedded, removed, not permitted)
        print(f"wingman: running on Python's own allocator: cannot re-execute "
              f"{sys.executable or '(unknown interpreter)'} ({exc.strerror or exc})",
              file=sys.stderr)


def active() -> str:
    """The allocator this process runs on: ``jemalloc``, ``glibc`` or ``python``."""
    if _jemalloc_loaded():
        return "jemalloc"
    if os.environ.get("PYTHONMALLOC") == "malloc" and _LIBC is not None:
        return "glibc"
    return "python"


def refusal(choice: str, running: str, environ: Mapping[str, str]) -> str | None:
    """Why the operator must not start on ``running`` when ``choice`` was asked for, or None
    (pure): ``jemalloc`` is a promise, kept or refused, never silently dropped."""
    if choice != "jemalloc" or running == "jemalloc":
        return None
    why = f"WINGMAN_ALLOCATOR=jemalloc, but the operator runs on {running}: "
    if "PYTHONMALLOC" not in environ:
        return why + ("it could not re-execute itself (see the message above); run it with "
                      "the image's interpreter or set WINGMAN_ALLOCATOR=auto")
    if JEMALLOC in environ.get("LD_PRELOAD", ""):
        return why + (f"the dynamic loader did not preload {JEMALLOC} (see its message "
                      "above); reinstall jemalloc (Debian and Ubuntu: libjemalloc2) or set "
                      "WINGMAN_ALLOCATOR=auto")
    return why + ("PYTHONMALLOC was set by whoever started it, so the allocator was not "
                  "chosen; unset PYTHONMALLOC or set WINGMAN_ALLOCATOR=auto")


def _jemalloc_loaded() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "mallctl")
    except OSError:
        return False


def tunables(current: str | None) -> str:
    """``GLIBC_TUNABLES`` for the re-executed process: ``current`` with ``NO_TCACHE`` added,
    unless it sets a tcache count already (pure)."""
    if not current:
        return NO_TCACHE
    if "glibc.malloc.tcache_count=" in current:
        return current
    return f"{current}:{NO_TCACHE}"


def limit_arenas(arenas: int) -> bool:
    """Let at most ``arenas`` glibc malloc arenas exist (call before threads start); True if
    set (never under jemalloc, whose arenas ``JEMALLOC_CONF`` sets)."""
    if _LIBC is None or _jemalloc_loaded():
        return False
    return bool(_LIBC.mallopt(M_ARENA_MAX, ctypes.c_int(arenas)))


def release() -> bool:
    """Collect cyclic garbage, then return every arena's free pages to the OS; True if any
    memory was released (under jemalloc: True once every arena was purged, which can take up
    to ``RELEASE_WAIT_SECONDS`` while its background thread purges too: call it off the event
    loop)."""
    gc.collect()
    if _jemalloc_loaded():
        return _purge_jemalloc(ctypes.CDLL(None).mallctl)
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(ctypes.c_size_t(0)))


def _purge_jemalloc(mallctl: Any) -> bool:
    """Purge every arena until its freed pages are gone. While the background thread purges
    (its decay), jemalloc's ``purge`` returns at once having purged nothing, so the dirty
    pages are read back and the purge tried again, for up to ``RELEASE_WAIT_SECONDS``, while
    a purge left them as they were (``purged``); a purge that ran is not repeated, even when
    other threads dirty new pages meanwhile (a build without statistics: purged once)."""
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    page = _page_size(mallctl)
    while True:
        before = _dirty_pages(mallctl)
        if mallctl(f"arena.{_ALL_ARENAS}.purge".encode(), None, None, None,
                   ctypes.c_size_t(0)) != 0:
            return False
        after = _dirty_pages(mallctl)
        if (before is None or after is None or page is None or purged(before, after, page)
                or time.monotonic() >= deadline):
            return True
        time.sleep(0.005)


def purged(before: int, after: int, page: int) -> bool:
    """Whether a jemalloc purge ran, from the dirty pages (of ``page`` bytes) before and after
    it (pure): it did when at most ``_SETTLED_BYTES`` are left, or less than half of those
    before it (what other threads freed meanwhile is not the purge's to wait for); a purge
    skipped while the background thread purges leaves them as they were."""
    return after * page <= _SETTLED_BYTES or after < before / 2


def _page_size(mallctl: Any) -> int | None:
    """jemalloc's page size (``arenas.page``), in which it counts dirty pages; None unread."""
    page = ctypes.c_size_t(0)
    size = ctypes.c_size_t(ctypes.sizeof(page))
    if mallctl(b"arenas.page", ctypes.byref(page), ctypes.byref(size), None,
               ctypes.c_size_t(0)) != 0 or page.value <= 0:
        return None
    return page.value


def _dirty_pages(mallctl: Any) -> int | None:
    """jemalloc's freed pages not yet given back, over every arena; None without statistics."""
    epoch = ctypes.c_uint64(1)
    if mallctl(b"epoch", None, None, ctypes.byref(epoch),
               ctypes.c_size_t(ctypes.sizeof(epoch))) != 0:
        return None
    pages = ctypes.c_size_t(0)
    size = ctypes.c_size_t(ctypes.sizeof(pages))
    if mallctl(f"stats.arenas.{_ALL_ARENAS}.pdirty".encode(), ctypes.byref(pages),
               ctypes.byref(size), None, ctypes.c_size_t(0)) != 0:
        return None
    return pages.value


__all__ = ["JEMALLOC", "JEMALLOC_CONF", "MALLOC_ARENAS", "M_ARENA_MAX", "NO_TCACHE", "active",
           "find_jemalloc", "limit_arenas", "other_allocators", "purged", "reexec_env", "refusal",
           "release", "tunables", "use_malloc", "warn_other_allocators"]
