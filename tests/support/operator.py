"""Run the real operator (``wingman operator``) as a process against the local control plane.

The process authenticates as the chart's ``wingman-operator`` ServiceAccount with a real
TokenRequest token, so every call it makes meets the chart's RBAC; it reads the policy the
chart rendered (ConfigMap ``wingman-policy``) and writes its audit trail to a file. Tests can
SIGKILL it and start it again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from support.chart import DEFAULT_GATEWAY_IMAGE
from support.ports import listening_ports
from support.processes import stop_process


def free_port() -> int:
    """A port free now, for a test that needs one nothing listens on; a server given it may
    find it taken (see ``OperatorProcess.start``): prefer a server that binds port 0 itself."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Starts of one ``OperatorProcess.start`` whose health port was taken since it was chosen.
PORT_ATTEMPTS = 5
#: What the operator says when its health port is in use: its own refusal, or (taken in the
#: moment between its check and kopf's bind) the system's error.
_IN_USE = ("(wingman_health_port) is in use", "address already in use")


class OperatorProcess:
    """One operator process at a time; ``kill()`` + ``start()`` simulate a crash."""

    def __init__(self, cluster: Any, namespace: str, workdir: Path, *,
                 environment: str = "test", extra_env: Mapping[str, str] | None = None,
                 preview: bool = False) -> None:
        """``preview``: run the chart's previews (only where a node harness runs the preview
        Jobs); off, the operator reviews at once, as with ``policy.preview.enabled: false``."""
        self.cluster = cluster
        self.namespace = namespace
        self.workdir = workdir
        self.environment = environment
        self.extra_env = dict(extra_env or {})
        self.audit_path = workdir / "audit.jsonl"
        self.log_path = workdir / "operator.log"
        #: the operator binds port 0 and logs the port it got (``operator starting``)
        self.metrics_port = 0
        #: kopf's liveness endpoint cannot bind port 0: a chosen port, another one at the next
        #: start if it was taken in between
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        workdir.mkdir(parents=True, exist_ok=True)
        policy = cluster.kubectl("get", "configmap", "wingman-policy", "-n", namespace, "-o",
                                 "jsonpath={.data.policy\\.yaml}").stdout
        self.policy_path = workdir / "policy.yaml"
        data = yaml.safe_load(policy) or {}
        if not preview:
            data["preview"] = {**(data.get("preview") or {}), "enabled": False}
        self.policy_path.write_text(yaml.safe_dump(data))
        token = cluster.sa_token(namespace, "wingman-operator", expiration_seconds=7200)
        self.kubeconfig = cluster.token_kubeconfig(token, f"operator-{namespace}")
        self.chart_env = _chart_env(cluster, namespace)

    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "KUBECONFIG": str(self.kubeconfig),
            "WINGMAN_NAMESPACE": self.namespace,
            "WINGMAN_ENVIRONMENT": self.environment,
            "WINGMAN_POLICY_FILE": str(self.policy_path),
            "WINGMAN_AUDIT_TARGET": str(self.audit_path),
            "WINGMAN_GATEWAY_IMAGE": DEFAULT_GATEWAY_IMAGE,
            "WINGMAN_LOG_FORMAT": "json",
            "WINGMAN_METRICS_PORT": "0",
            "WINGMAN_HEALTH_PORT": str(self.health_port),
            # the tests' operators on this machine only (every address is a pod's default)
            "WINGMAN_LISTEN_ADDRESS": "127.0.0.1",
            "WINGMAN_SWEEP_INTERVAL_SECONDS": "1",
            # stable across restarts, as a pod name is across container restarts
            "WINGMAN_POD_NAME": f"operator-{self.workdir.name}",
        }
        if os.environ.get("PYTHONPATH"):  # the tree under test, not whatever is installed
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        env.update(self.chart_env)
        # WINGMAN_TEST_WRITER_PROCESS=false (or true): every operator the tests start runs
        # without (with) its writer process (operator.writerProcess; on by default), to run a
        # tier in that mode
        if os.environ.get("WINGMAN_TEST_WRITER_PROCESS"):
            env["WINGMAN_WRITER_PROCESS"] = os.environ["WINGMAN_TEST_WRITER_PROCESS"]
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> None:
        """Start the operator and wait until it is healthy: its own process listens on the
        health port and ``/healthz`` answers there. A start whose health port was taken since
        it was chosen (another test's server) is started again on another."""
        assert self.proc is None or self.proc.poll() is not None, "operator already running"
        for _attempt in range(PORT_ATTEMPTS):
            if self._start_once(timeout):
                return
            self.health_port = free_port()
        raise AssertionError(f"operator's health port was taken at each of {PORT_ATTEMPTS} "
                             f"starts:\n{self.log_tail()}")

    def _start_once(self, timeout: float) -> bool:
        """False when the operator exited because its health port was in use."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "wingman.cli", "operator"],
                                         env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self.starts += 1
        self.metrics_port = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if any(said in self._log_since(offset).lower() for said in _IN_USE):
                    return False
                raise AssertionError(f"operator exited with {self.proc.returncode}:\n"
                                     f"{self.log_tail()}")
            if not self.metrics_port:
                self.metrics_port = _logged_metrics_port(self._log_since(offset))
            if self.metrics_port and self.health_port in listening_ports(self.proc.pid):
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                        if resp.status == 200:
                            return True
                except OSError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"operator not healthy within {timeout}s:\n{self.log_tail()}")

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc, timeout=20)

    def readiness(self) -> tuple[int, str]:
        """``/readyz``: (HTTP status, body)."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=5) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def metrics(self) -> str:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]


def _logged_metrics_port(log: str) -> int:
    """The port of the ``operator starting`` record in ``log`` (JSON lines), 0 before it."""
    for line in log.splitlines():
        if '"operator starting"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message") == "operator starting":
            return int(record["metrics_port"])
    return 0


#: What the chart tells the operator beyond where things are (the tests' own paths and ports).
CHART_SETTINGS = ("WINGMAN_OBJECT_LABELS", "WINGMAN_GATEWAY_POD", "WINGMAN_LOG_LEVEL")


def _chart_env(cluster: Any, namespace: str) -> dict[str, str]:
    """The chart-rendered values of ``CHART_SETTINGS`` from the installed Deployment."""
    res = cluster.kubectl("get", "deployment", "wingman-operator", "-n", namespace, "-o", "json",
                          check=False)
    if res.returncode != 0:
        return {}
    (container,) = json.loads(res.stdout)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container.get("env", [])
            if e["name"] in CHART_SETTINGS and "value" in e}


@contextmanager
def operator_running(cluster: Any, namespace: str, workdir: Path, **kwargs: Any
                     ) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster, namespace, workdir, **kwargs)
    op.start()
    try:
        yield op
    finally:
        op.stop()


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0,
             interval: float = 0.2, on_timeout: Callable[[], str] | None = None) -> Any:
    """Poll ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    extra = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}\n"
                         f"{extra}")


def get(cluster: Any, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    res = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if res.returncode != 0:
        return None
    obj: dict[str, Any] = json.loads(res.stdout)
    return obj


def phase_of(cluster: Any, kind: str, namespace: str, name: str) -> str | None:
    obj = get(cluster, kind, namespace, name)
    if obj is None:
        return None
    return (obj.get("status") or {}).get("phase")


__all__ = ["OperatorProcess", "free_port", "get", "operator_running", "phase_of", "wait_for"]
