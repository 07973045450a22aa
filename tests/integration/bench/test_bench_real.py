"""The operator bench's real operator gets an environment of its own: the test harness's and
the bench's settings, with --operator-env on top, never a WINGMAN_* variable of the caller's shell
(tests/bench/bench_operator.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bench import bench_operator as bench
from support.chart import installed
from wingman.dev.cluster import LocalCluster

pytestmark = pytest.mark.integration


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


def test_the_real_operator_takes_no_setting_from_the_callers_environment(
        cluster: LocalCluster, crds: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINGMAN_API_CONCURRENCY", "7")
    monkeypatch.setenv("WINGMAN_SWEEP_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("WINGMAN_PROBE_FROM_THE_SHELL", "1")
    ns = f"bench-env-{uuid.uuid4().hex[:8]}"
    with installed(cluster, "test", namespace=ns, target_namespace=f"{ns}-apps",
                   values=bench.BENCH_VALUES):
        op = bench.start_real(cluster, ns, tmp_path)
        try:
            env = _environ(op.pid)
        finally:
            op.stop()
        assert "WINGMAN_API_CONCURRENCY" not in env, "the operator's default, not the shell's"
        assert env["WINGMAN_SWEEP_INTERVAL_SECONDS"] == "10", "the bench's setting"
        assert "WINGMAN_PROBE_FROM_THE_SHELL" not in env
        op = bench.start_real(cluster, ns, tmp_path,
                              extra_env={"WINGMAN_API_CONCURRENCY": "5"})  # --operator-env
        try:
            assert _environ(op.pid)["WINGMAN_API_CONCURRENCY"] == "5"
        finally:
            op.stop()
