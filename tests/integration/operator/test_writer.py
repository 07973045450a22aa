"""The operator's writer process (``wingman.operator.writer``) in the real operator, on the real
API server: it makes the operator's API calls, it ends with the operator however the operator
ends, and the operator does not outlive it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from integration.operator.test_operator import operator_env
from support.operator import OperatorProcess
from support.ports import connections_to
from support.processes import children_of, running


def _writer(op: OperatorProcess) -> int:
    assert op.proc is not None
    children = children_of(op.proc.pid)
    assert len(children) == 1, children
    return children[0]


def _gone(pid: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not running(pid)


def _api_port(cluster: Any) -> int:
    port: int | None = urlparse(cluster.server).port
    assert port is not None
    return port


def test_the_writer_makes_the_operators_calls_and_its_loss_stops_the_operator(
        cluster: Any, crds: Path, tmp_path: Path) -> None:
    with operator_env(cluster, tmp_path, "wm-wr", WINGMAN_WRITER_PROCESS="true") as env:
        writer = _writer(env.op)
        env.request("r1")
        env.wait_phase("ar", "r1", "AutoApproved")
        assert connections_to(writer, _api_port(cluster)) >= 1
        metrics = env.op.metrics()  # observed from the writer's answers, as before
        assert 'wingman_api_requests_total{code="200",resource="approvalrequests/status",' \
               'verb="patch"}' in metrics
        # the sweeps' lists run on the operator's threads by design, uncounted; every other
        # call went to the writer
        local = [line for line in metrics.splitlines()
                 if line.startswith("wingman_writer_local_calls_total{")]
        assert local == [], local
        assert 'wingman_api_requests_total{code="200",resource="jobs",verb="list"}' in metrics
        assert env.op.proc is not None
        os.kill(writer, signal.SIGKILL)
        assert env.op.proc.wait(timeout=30) == 1
        log = env.op.log_tail(200)
        assert "wingman operator: stopped: the writer process is gone (it ended (signal 9))" \
            in log


def test_the_writer_ends_with_the_operator_however_it_ends(
        cluster: Any, crds: Path, tmp_path: Path) -> None:
    with operator_env(cluster, tmp_path, "wm-wr", WINGMAN_WRITER_PROCESS="true") as env:
        first = _writer(env.op)
        env.op.kill()  # SIGKILL: no clean-up of its own
        assert _gone(first)
        for how in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            env.op.start()
            writer = _writer(env.op)
            assert env.op.proc is not None
            env.op.proc.send_signal(how)
            assert env.op.proc.wait(timeout=30) == 0
            assert _gone(writer), how


@pytest.mark.skipif(bool(os.environ.get("WINGMAN_TEST_WRITER_PROCESS")),
                    reason="WINGMAN_TEST_WRITER_PROCESS sets the mode of every operator")
def test_by_default_the_operator_runs_its_writer(
        cluster: Any, crds: Path, tmp_path: Path) -> None:
    with operator_env(cluster, tmp_path, "wm-wr") as env:
        writer = _writer(env.op)
        env.request("r1")
        env.wait_phase("ar", "r1", "AutoApproved")
        assert connections_to(writer, _api_port(cluster)) >= 1


def test_with_writer_process_false_the_operator_runs_in_one_process(
        cluster: Any, crds: Path, tmp_path: Path) -> None:
    with operator_env(cluster, tmp_path, "wm-wr", WINGMAN_WRITER_PROCESS="false") as env:
        env.request("r1")
        env.wait_phase("ar", "r1", "AutoApproved")
        assert env.op.proc is not None
        assert children_of(env.op.proc.pid) == []

