"""The operator's allocator tuning: capped malloc arenas, freed memory handed back to the OS.

Each case runs in a fresh interpreter (its heap is its own) and reads its RSS from /proc.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wingman.errors import ConfigError
from wingman.operator import memory
from wingman.settings import OperatorSettings

glibc = pytest.mark.skipif(memory._LIBC is None, reason="glibc's allocator only")


def run(code: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=120, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


PRELUDE = """
    import ctypes, json, os, tempfile, threading
    from wingman.operator import memory

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

    def heaps():
        # glibc's malloc_info lists one <heap> per arena
        libc = ctypes.CDLL(None)
        libc.fopen.restype = ctypes.c_void_p
        with tempfile.NamedTemporaryFile() as tmp:
            fp = libc.fopen(tmp.name.encode(), b"w")
            libc.malloc_info(0, ctypes.c_void_p(fp))
            libc.fclose(ctypes.c_void_p(fp))
            return open(tmp.name).read().count("<heap nr=")

    def burst():
        # what a thread of the API pool does in a burst: allocations that outlive the call
        kept = [bytearray(2048) for _ in range(2000)]
        return kept
"""


@glibc
def test_release_returns_freed_memory_to_the_os() -> None:
    """Most of a burst's freed memory (with a few survivors scattered through it) leaves the
    process's RSS after ``release``; without it, it stays."""
    result = run(PRELUDE + """
    blocks = [bytearray(4096) for _ in range(20000)]  # ~80 MiB
    survivors = blocks[::16]
    del blocks
    before = rss()
    released = memory.release()
    print(json.dumps({"before": before, "after": rss(), "released": released,
                      "survivors": len(survivors)}))
    """)
    assert result["released"]
    assert result["before"] - result["after"] > 40, result


@glibc
def test_limit_arenas_keeps_threads_to_the_cap() -> None:
    """Threads share the capped number of arenas instead of getting one each."""
    code = PRELUDE + """
    import sys
    if sys.argv[-1] == "capped":
        assert memory.limit_arenas(2)
    kept = []
    together = threading.Barrier(8)  # all alive at once, as the pool's threads are

    def work():
        kept.append(burst())
        together.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"heaps": heaps()}))
    """
    capped = subprocess.run([sys.executable, "-c", textwrap.dedent(code), "capped"],
                            capture_output=True, text=True, timeout=120, check=True)
    free = subprocess.run([sys.executable, "-c", textwrap.dedent(code), "free"],
                          capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(capped.stdout)["heaps"] <= 2
    assert json.loads(free.stdout)["heaps"] > 2, "without the cap each thread gets an arena"


def test_without_glibc_both_are_harmless(monkeypatch: pytest.MonkeyPatch) -> None:
    """musl or macOS: nothing to tune, nothing fails."""
    monkeypatch.setattr(memory, "_LIBC", None)
    monkeypatch.setattr(memory, "_jemalloc_loaded", lambda: False)
    assert memory.limit_arenas(2) is False
    assert memory.release() is False


SHOW = """
import json, os, sys
from wingman.operator import memory
print(json.dumps([os.getpid(), os.environ.get("PYTHONMALLOC")]), file=sys.stderr, flush=True)
memory.use_malloc()
print(json.dumps([os.getpid(), os.environ.get("PYTHONMALLOC")]))
"""

TCACHE = """
import ctypes, json
# a chunk in the per-thread cache still counts as in use in its arena; without the cache, free
# hands it back to the arena at once
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
chunk = libc.malloc(1000)
guard = libc.malloc(1000)  # keeps the freed chunk from merging with the heap's top
used = libc.mallinfo2().uordblks
libc.free(chunk)
print(json.dumps(libc.mallinfo2().uordblks < used))
"""


def _env(**extra: str) -> dict[str, str]:
    """This environment without an allocator chosen, on glibc's malloc unless ``extra`` says
    otherwise."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONMALLOC", "GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_CONF",
                        "WINGMAN_ALLOCATOR")}
    return {**env, "WINGMAN_ALLOCATOR": "glibc", **extra}


@glibc
def test_use_malloc_reexecutes_the_command_once_with_glibc_malloc() -> None:
    """The same process (pid) runs the same command again, on glibc's allocator."""
    out = subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True,
                         timeout=60, check=True, env=_env())
    first, second = (json.loads(line) for line in out.stderr.splitlines())
    assert first[1] is None and second == [first[0], "malloc"]
    assert json.loads(out.stdout) == [first[0], "malloc"]


@glibc
def test_use_malloc_runs_the_operator_without_glibcs_per_thread_cache() -> None:
    """The re-executed process has no tcache (a freed chunk does not wait in a per-thread
    cache for the next allocation of its size); a tcache count set explicitly is kept."""
    out = subprocess.run([sys.executable, "-c", SHOW.replace(
        'os.environ.get("PYTHONMALLOC")]))', 'os.environ.get("GLIBC_TUNABLES")]))')],
        capture_output=True, text=True, timeout=60, check=True, env=_env())
    assert json.loads(out.stdout)[1] == memory.NO_TCACHE
    plain = subprocess.run([sys.executable, "-c", TCACHE], capture_output=True, text=True,
                           timeout=60, check=True, env=_env())
    tuned = subprocess.run([sys.executable, "-c", TCACHE], capture_output=True, text=True,
                           timeout=60, check=True, env=_env(GLIBC_TUNABLES=memory.NO_TCACHE))
    assert json.loads(plain.stdout) is False and json.loads(tuned.stdout) is True
    assert memory.tunables("glibc.malloc.tcache_count=3") == "glibc.malloc.tcache_count=3"
    assert memory.tunables("glibc.malloc.arena_max=4") == \
        f"glibc.malloc.arena_max=4:{memory.NO_TCACHE}"


def test_use_malloc_keeps_an_allocator_chosen_explicitly() -> None:
    """PYTHONMALLOC set by whoever runs the operator (e.g. ``debug``) is left alone."""
    out = subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True,
                         timeout=60, check=True, env=_env(PYTHONMALLOC="pymalloc"))
    assert len(out.stderr.splitlines()) == 1
    assert json.loads(out.stdout)[1] == "pymalloc"


def test_use_malloc_goes_on_when_the_interpreter_cannot_be_run_again(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """No interpreter to execute (embedded, removed, execve refused): the operator still
    starts, on Python's own allocator, and says so."""
    monkeypatch.setattr(memory, "_LIBC", object())
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    monkeypatch.setenv("WINGMAN_ALLOCATOR", "glibc")
    monkeypatch.setattr(sys, "executable", "")

    def refused(path: str, argv: list[str], env: dict[str, str]) -> None:
        raise FileNotFoundError(2, "No such file or directory")
    monkeypatch.setattr(os, "execve", refused)
    memory.use_malloc()
    assert "cannot re-execute" in capsys.readouterr().err


# --------------------------------------------------------------------------- the choice


def test_auto_preloads_jemalloc_when_the_system_has_it() -> None:
    env = memory.reexec_env({"PATH": "/bin"}, jemalloc="/usr/lib/x/libjemalloc.so.2",
                            glibc=True)
    assert env == {"PATH": "/bin", "PYTHONMALLOC": "malloc",
                   "LD_PRELOAD": "/usr/lib/x/libjemalloc.so.2",
                   "MALLOC_CONF": memory.JEMALLOC_CONF}
    # what whoever starts the operator set is kept: their preloads after it, their options
    env = memory.reexec_env({"LD_PRELOAD": "/lib/other.so", "MALLOC_CONF": "narenas:4"},
                            jemalloc="/j.so", glibc=True)
    assert env is not None
    assert env["LD_PRELOAD"] == "/j.so /lib/other.so" and env["MALLOC_CONF"] == "narenas:4"


def test_another_allocator_kept_in_ld_preload_is_warned_about_with_what_to_do(
        caplog: pytest.LogCaptureFixture) -> None:
    jemalloc = "/usr/lib/x/libjemalloc.so.2"
    preload = "/opt/lib/libtcmalloc_minimal.so.4:/lib/other.so /opt/jemalloc/libjemalloc.so"
    env = memory.reexec_env({"LD_PRELOAD": preload}, jemalloc=jemalloc, glibc=True)
    assert env is not None and env["LD_PRELOAD"] == f"{jemalloc} {preload}"  # kept, as before
    with caplog.at_level("WARNING", logger="wingman.operator.memory"):
        memory.warn_other_allocators(env, jemalloc)
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert "two allocators are interposed" in record.getMessage()
    assert "unset LD_PRELOAD" in record.getMessage()
    assert "WINGMAN_ALLOCATOR=glibc" in record.getMessage()
    assert getattr(record, "preloaded") == [  # noqa: B009 - an extra field
        "/opt/lib/libtcmalloc_minimal.so.4", "/opt/jemalloc/libjemalloc.so"]
    assert getattr(record, "jemalloc") == jemalloc  # noqa: B009


def test_no_warning_without_another_allocator_or_without_jemalloc_preloaded(
        caplog: pytest.LogCaptureFixture) -> None:
    j = "/usr/lib/x/libjemalloc.so.2"
    with caplog.at_level("WARNING", logger="wingman.operator.memory"):
        memory.warn_other_allocators({"LD_PRELOAD": f"{j} /lib/other.so"}, j)
        memory.warn_other_allocators({"LD_PRELOAD": f"{j} {j}"}, j)  # the same library twice
        memory.warn_other_allocators({}, j)
        # jemalloc not preloaded (WINGMAN_ALLOCATOR=glibc or python): one allocator
        memory.warn_other_allocators({"LD_PRELOAD": "/opt/lib/libmimalloc.so"}, j)
        memory.warn_other_allocators({"LD_PRELOAD": "/opt/lib/libmimalloc.so"}, None)
    assert caplog.records == []


def test_auto_without_jemalloc_is_glibc_malloc_without_its_thread_caches() -> None:
    assert memory.reexec_env({}, jemalloc=None, glibc=True) == {
        "PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": memory.NO_TCACHE}
    assert memory.reexec_env({}, jemalloc=None, glibc=False) is None  # musl, macOS
    # glibc asked for explicitly: jemalloc is not used even when installed
    env = memory.reexec_env({"WINGMAN_ALLOCATOR": "glibc"}, jemalloc="/j.so", glibc=True)
    assert env is not None and "LD_PRELOAD" not in env and env["PYTHONMALLOC"] == "malloc"


def test_an_allocator_chosen_already_or_pythons_own_means_no_reexecution() -> None:
    assert memory.reexec_env({"PYTHONMALLOC": "debug"}, jemalloc="/j.so", glibc=True) is None
    assert memory.reexec_env({"WINGMAN_ALLOCATOR": "python"}, jemalloc="/j.so",
                             glibc=True) is None


def test_jemalloc_asked_for_but_missing_is_refused_with_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"libjemalloc2.*WINGMAN_ALLOCATOR=auto"):
        memory.reexec_env({"WINGMAN_ALLOCATOR": "jemalloc"}, jemalloc=None, glibc=True)


def test_an_unknown_allocator_is_refused_by_the_settings() -> None:
    # the re-execution leaves it alone; the settings name what is wrong and the choices
    assert memory.reexec_env({"WINGMAN_ALLOCATOR": "tcmalloc"}, jemalloc="/j.so",
                             glibc=True) is None
    with pytest.raises(ConfigError, match="WINGMAN_ALLOCATOR='tcmalloc' must be one of auto, "
                                          "jemalloc, glibc, python"):
        OperatorSettings.from_env({"WINGMAN_ALLOCATOR": "tcmalloc"})


needs_jemalloc = pytest.mark.skipif(
    memory.find_jemalloc() is None,
    reason=f"{memory.JEMALLOC} is not installed (bash .ci/setup installs libjemalloc2)")

ON_JEMALLOC = PRELUDE + """
    memory.use_malloc()
    freed, released, kept = [], [], []
    for _ in range(12):  # a burst freed wakes jemalloc's background thread to purge
        blocks = [bytearray(4096) for _ in range(20000)]  # ~80 MiB
        kept.append(blocks[::16])
        peak = rss()
        del blocks
        released.append(memory.release())
        freed.append(peak - rss())
        kept.pop()
    print(json.dumps({"active": memory.active(), "freed": freed, "released": released,
                      "arenas": memory.limit_arenas(2), "conf": os.environ.get("MALLOC_CONF")}))
"""


@needs_jemalloc
def test_the_operator_runs_on_jemalloc_and_gives_freed_memory_back() -> None:
    """``auto`` with jemalloc installed: the re-executed process runs on it, with the
    operator's options, and a burst's freed memory leaves the RSS once purged."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(ON_JEMALLOC)],
                         capture_output=True, text=True, timeout=120, check=True,
                         env=_env(WINGMAN_ALLOCATOR="auto"))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["active"] == "jemalloc" and result["conf"] == memory.JEMALLOC_CONF
    assert result["released"] == [True] * 12 and result["arenas"] is False
    # every time: while the background thread purges, jemalloc's own purge returns at once
    # having purged nothing (about one burst in four), so ``release`` purges again
    assert min(result["freed"]) > 40, result


def test_the_allocator_in_use_is_named() -> None:
    out = subprocess.run([sys.executable, "-c", SHOW.replace(
        'os.environ.get("PYTHONMALLOC")]))', 'memory.active()]))')],
        capture_output=True, text=True, timeout=60, check=True, env=_env())
    assert json.loads(out.stdout)[1] == ("glibc" if memory._LIBC is not None else "python")


def test_jemalloc_asked_for_is_kept_or_the_operator_refuses_to_start() -> None:
    """A start on another allocator than the jemalloc asked for says why and what to do."""
    ok = memory.refusal("jemalloc", "jemalloc", {"PYTHONMALLOC": "malloc"})
    assert ok is None and memory.refusal("auto", "glibc", {}) is None
    why = memory.refusal("jemalloc", "glibc", {})
    assert why is not None and "could not re-execute itself" in why
    why = memory.refusal("jemalloc", "glibc", {"PYTHONMALLOC": "malloc",
                                               "LD_PRELOAD": "/usr/lib/x/libjemalloc.so.2"})
    assert why is not None and "did not preload" in why and "WINGMAN_ALLOCATOR=auto" in why
    why = memory.refusal("jemalloc", "python", {"PYTHONMALLOC": "pymalloc"})
    assert why is not None and "unset PYTHONMALLOC" in why


def test_the_operator_refuses_to_start_without_the_jemalloc_asked_for(tmp_path: Path) -> None:
    """End to end: ``wingman operator`` with WINGMAN_ALLOCATOR=jemalloc and PYTHONMALLOC set
    by whoever started it exits 2 before it connects anywhere, saying so."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("environment: test\n")
    out = subprocess.run([sys.executable, "-m", "wingman.cli", "operator"],
                         capture_output=True, text=True, timeout=60,
                         env=_env(WINGMAN_ALLOCATOR="jemalloc", PYTHONMALLOC="pymalloc",
                                  WINGMAN_POLICY_FILE=str(policy)))
    assert out.returncode == 2, out.stderr
    assert "cannot start: WINGMAN_ALLOCATOR=jemalloc, but the operator runs on python" in \
        out.stderr


def test_a_purge_that_ran_is_not_repeated_while_other_threads_dirty_new_pages() -> None:
    """``release`` purges jemalloc again only while a purge was skipped (its background
    thread purging), not for a second on end because the operator's threads free memory
    meanwhile; how much is left is judged in bytes, not in jemalloc's pages."""
    kib = 1024
    # skipped: the burst's dirty pages are all still there (or nearly)
    assert not memory.purged(20_000, 20_000, 4 * kib)
    assert not memory.purged(20_000, 19_000, 4 * kib)
    # ran: little left, whatever was dirty before
    assert memory.purged(20_000, 100, 4 * kib)
    # ran, while other threads freed 2 MiB meanwhile: not purged again
    assert memory.purged(20_000, 512, 4 * kib)
    # 256 pages of 64 KiB (arm64 builds) are 16 MiB: a skipped purge, not a settled one
    assert not memory.purged(300, 256, 64 * kib)
    assert memory.purged(300, 16, 64 * kib)
