"""The operator bench's ``--profile``: kube-apiserver's CPU profile, fetched from the real API
server in the background while a phase runs (tests/bench/bench_operator.py)."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import cast

import pytest

from bench import bench_operator as bench
from wingman.dev.cluster import LocalCluster


@pytest.fixture
def local(cluster: LocalCluster) -> LocalCluster:
    """The session's control plane when it is the local one (its API server is profiled)."""
    if not isinstance(cluster, LocalCluster):
        pytest.skip("profiles the local control plane's API server, not an existing cluster's")
    return cluster


def test_a_phase_s_profile_is_a_pprof_file_of_the_api_server(
        local: LocalCluster, tmp_path: Path) -> None:
    path = tmp_path / "profiles" / "ns-requests.pprof"
    profile = bench.api_profile(local, path, 1)
    local.kubectl("get", "namespaces")  # some work for the API server meanwhile
    profile.join()
    raw = gzip.decompress(path.read_bytes())  # pprof: a gzipped protocol buffer
    assert b"kube-apiserver" in raw or b"k8s.io/apiserver" in raw


def test_a_profile_that_cannot_be_fetched_is_reported_not_raised(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A profile is an aid: a failed fetch (here a control plane whose kubeconfig is gone)
    leaves no file, says why, and the bench goes on."""
    gone = tmp_path / "gone.kubeconfig"

    class Gone:
        kubeconfig = gone

        def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
            return {"KUBECONFIG": str(kubeconfig or gone), "PATH": "/usr/bin:/bin"}

    path = tmp_path / "profiles" / "ns-grants.pprof"
    profile = bench.api_profile(cast(LocalCluster, Gone()), path, 1)
    profile.join()
    assert not path.exists()
    err = capsys.readouterr().err
    assert "profile ns-grants.pprof not written: kubectl exited 1" in err
    assert "gone.kubeconfig" in err


def test_a_profile_is_stopped_at_once_when_the_bench_stops(
        local: LocalCluster, tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM mid-phase: the fetch of a long profile ends now, nothing is written."""
    path = tmp_path / "profiles" / "ns-requests.pprof"
    profile = bench.api_profile(local, path, 300)
    started = time.monotonic()
    profile.stop()
    assert time.monotonic() - started < 15 and not profile.thread.is_alive()
    assert profile.proc is not None and profile.proc.returncode is not None
    assert not path.exists()
