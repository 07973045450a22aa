"""``wingman preview``: the preview Job's entrypoint.

The operator starts one preview Job per ApprovalRequest, before the panel votes, from the
gateway image and as the ``wingman-preview`` ServiceAccount (which admission allows nothing but
dry runs). The run:

1. reads the ApprovalRequest it was started for (its uid must match: a request deleted and
   recreated under the same name is not previewed with the old one's Job);
2. for each command, in order and within the Job's time budget: the command must parse under
   the command rules and match the environment's allowlist (otherwise it is not run: a finding);
   ``kubectl`` commands are planned (:mod:`wingman.preview.commands`) and run as argv, never
   through a shell, against the recording proxy (:mod:`wingman.preview.proxy`), which makes
   every write a server-side dry run; ``docker`` commands read the container's current state
   (``docker inspect``) when the docker executor is enabled;
3. writes the result, compressed to fit, to the pod's termination message
   (``/dev/termination-log``), where the kubelet hands it to the operator, and exits 0.

kubectl runs with a private HOME and a kubeconfig that points at the proxy with a random
per-run token; it never sees the ServiceAccount token. Its stdout is discarded unread (an output
format such as ``-o jsonpath`` could print a Secret's data); its stderr is bounded, redacted and
only summarised. Logs are JSON lines on stderr; they name commands by hash, never by text.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from wingman import scope
from wingman.errors import ScopeViolation, WingmanError
from wingman.kube import APPROVALS, Kube, TokenFile
from wingman.model import preview as model
from wingman.preview import commands as plans
from wingman.preview import report
from wingman.preview.proxy import DryRunProxy
from wingman.settings import PreviewSettings

EXIT_OK = 0
EXIT_FAILED = 1
MAX_OUTPUT_BYTES = 16384
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_CONTAINER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_DOCKER_VERBS = ("restart", "start", "stop")


def _log(settings: PreviewSettings, event: str, **fields: Any) -> None:
    record = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
              "level": fields.pop("level", "info"), "event": event,
              "approval": settings.approval_name, "namespace": settings.namespace,
              "pod": settings.pod_name, **fields}
    if settings.log_format == "json":
        line = json.dumps(record, default=str)
    else:
        line = f"wingman-preview {event} " + " ".join(
            f"{k}={v}" for k, v in record.items() if k not in ("time", "event"))
    print(line, file=sys.stderr, flush=True)


def collect(argv: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float,
            limit: int = MAX_OUTPUT_BYTES) -> tuple[int | None, str, bool]:
    """Run argv (no shell) to its end or the deadline: (exit code, bounded stderr, timed out).

    Only the child's stderr (kubectl's errors and warnings) is kept; its stdout is discarded
    unread: a command's output format is the requester's to choose (``-o yaml``,
    ``-o jsonpath=...``), and what kubectl prints of an object (a Secret's data among it) must
    never reach the preview everyone reads. What would change is shown by the diff, which the
    preview builds itself. The child runs in its own process group, which is killed at the
    deadline."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, cwd=cwd, close_fds=True,
                            start_new_session=True)
    assert proc.stderr is not None
    kept = bytearray()
    deadline = time.monotonic() + timeout
    timed_out = False
    fd = proc.stderr.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if not sel.select(remaining):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            kept += chunk[: max(0, limit - len(kept))]
    if not timed_out:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    if timed_out:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait()
    proc.stderr.close()
    return (None if timed_out else proc.returncode), kept.decode("utf-8", "replace"), timed_out


def _kubeconfig(directory: Path, proxy: DryRunProxy) -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "preview", "cluster": {
            "server": proxy.url,
            "certificate-authority-data": base64.b64encode(proxy.certificate).decode()}}],
        "users": [{"name": "preview", "user": {"token": proxy.nonce}}],
        "contexts": [{"name": "preview", "context": {"cluster": "preview", "user": "preview"}}],
        "current-context": "preview", "preferences": {},
    }
    path = directory / "kubeconfig"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(yaml.safe_dump(config))
    return path


class _Run:
    def __init__(self, settings: PreviewSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self.deadline = clock() + settings.timeout_seconds - 3  # leave time to report
        self.allowlist = scope.Allowlist.from_patterns(settings.policy.allowlist)
        self.secrets: list[str] = []

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def redacted(self, proxy: DryRunProxy) -> list[str]:
        """What is redacted from a command's report: the run's secrets and every
        ServiceAccount token the proxy has held, renewed ones included."""
        return [*self.secrets, *proxy.tokens()]

    def kubectl(self, command: str, argv: Sequence[str], proxy: DryRunProxy, home: Path,
                kubeconfig: Path) -> model.CommandPreview:
        planned = plans.plan(argv)
        if planned.mode is plans.Mode.READ_ONLY:
            return report.not_run(command, "kubernetes", model.Outcome.READ_ONLY,
                                  f"not run: {planned.reason}")
        if planned.mode is plans.Mode.REFUSED:
            return report.not_run(command, "kubernetes", model.Outcome.NOT_PREVIEWABLE,
                                  f"not previewed: {planned.reason}")
        binary = shutil.which("kubectl")
        if binary is None:
            return report.not_run(command, "kubernetes", model.Outcome.FAILED,
                                  "the kubectl binary is not on PATH in this image")
        budget = min(float(self.settings.command_timeout_seconds), self.remaining())
        if budget < 1:
            return report.not_run(command, "kubernetes", model.Outcome.TIMED_OUT,
                                  "the preview ran out of time before this command")
        env = {"KUBECONFIG": str(kubeconfig), "HOME": str(home),
               "PATH": f"{Path(binary).parent}:{_SAFE_PATH}"}
        proxy.begin()
        code, output, timed_out = collect([binary, *planned.argv[1:]], env=env, cwd=home,
                                          timeout=budget)
        note = "kubectl has no --dry-run for this verb; every write was made a dry run" \
            if planned.mode is plans.Mode.PROXY else ""
        return report.kubectl_preview(command, proxy.exchanges(), exit_code=code,
                                      output=output, timed_out=timed_out,
                                      secrets=self.redacted(proxy), note=note)

    def docker(self, command: str, argv: Sequence[str]) -> model.CommandPreview:
        if len(argv) != 3 or argv[1] not in _DOCKER_VERBS or not _CONTAINER.fullmatch(argv[2]):
            return report.not_run(command, "docker", model.Outcome.NOT_PREVIEWABLE,
                                  "not previewed: only docker restart|start|stop <container> "
                                  "is supported")
        if not self.settings.docker_enabled:
            return report.not_run(command, "docker", model.Outcome.NOT_PREVIEWABLE,
                                  "not previewed: the docker executor is not enabled in this "
                                  "environment (gateway.docker.enabled)")
        import docker
        import requests

        verb, container = argv[1], argv[2]
        try:
            client: Any = docker.DockerClient(base_url=self.settings.docker_host,
                                              timeout=max(1, int(min(10, self.remaining()))))
        except docker.errors.DockerException as exc:
            return report.docker_preview(command, verb, container, None,
                                         error=f"cannot reach the Docker engine: "
                                               f"{type(exc).__name__}")
        try:
            state = client.api.inspect_container(container)
            if not model.container_named(state, container):
                state = None  # another container, whose ID starts with the name: not this one
        except docker.errors.NotFound:
            state = None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            return report.docker_preview(command, verb, container, None,
                                         error=f"the Docker engine failed: {type(exc).__name__}")
        finally:
            client.close()
        return report.docker_preview(command, verb, container, state)

    def one(self, command: str, proxy: DryRunProxy, home: Path, kubeconfig: Path
            ) -> model.CommandPreview:
        try:
            argv = scope.parse(command)
            executor = scope.executor_for(argv)
        except ScopeViolation as exc:
            return report.not_run(command, "", model.Outcome.NOT_PREVIEWABLE,
                                  f"not previewed: {exc.message} ({exc.reason})")
        if not self.allowlist.matches(argv):
            return report.not_run(command, executor, model.Outcome.NOT_PREVIEWABLE,
                                  "not previewed: the command is outside the environment's "
                                  "allowlist, so it could never run")
        if executor == "docker":
            return self.docker(command, argv)
        return self.kubectl(command, argv, proxy, home, kubeconfig)


def _read_approval(settings: PreviewSettings, kube: Kube) -> tuple[list[str], str]:
    """(the request's commands, '' or why they cannot be previewed)."""
    try:
        approval = kube.get(APPROVALS, settings.namespace, settings.approval_name)
    except WingmanError as exc:  # refused, unreachable, or an answer no API server gives
        return [], f"cannot read ApprovalRequest {settings.approval_name}: {exc.message}"
    if (approval.get("metadata") or {}).get("uid") != settings.approval_uid:
        return [], (f"ApprovalRequest {settings.approval_name} is not the one this preview was "
                    "started for (another uid)")
    commands = (approval.get("spec") or {}).get("commands") or []
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        return [], "the request's spec.commands is not a list of strings"
    return list(commands)[: model.MAX_COMMANDS], ""


def run_preview(settings: PreviewSettings, *, clock: Callable[[], float] = time.time) -> int:
    """The preview process: 0 when a result was written to the termination message."""
    run = _Run(settings, clock)
    sa_dir = settings.serviceaccount_dir
    # the proxy's token: read again when the kubelet renews it (a preview may outlive one)
    token = TokenFile(sa_dir / "token")
    try:
        token.read()
        kube = Kube.from_service_account(settings.api_server, sa_dir)
    except (OSError, WingmanError) as exc:
        _log(settings, "PreviewFailed", level="error", reason="NoCredentials",
             message=str(exc)[:300])
        return EXIT_FAILED
    work = Path(tempfile.mkdtemp(prefix="wingman-preview-"))
    try:
        cmds, problem = _read_approval(settings, kube)
        results: list[model.CommandPreview] = []
        if not problem:
            with DryRunProxy(settings.api_server, sa_dir / "ca.crt", token, work) as proxy:
                run.secrets.append(proxy.nonce)
                kubeconfig = _kubeconfig(work, proxy)
                for command in cmds:
                    result = run.one(command, proxy, work, kubeconfig)
                    results.append(result)
                    _log(settings, "CommandPreviewed",
                         command_sha256=_ref(command), outcome=result.outcome.value,
                         targets=len(result.targets))
        result_preview = model.Preview(settings.approval_uid, tuple(results), problem)
        fitted, encoded = model.fit(result_preview)
        try:
            settings.termination_log.write_text(encoded)
        except OSError as exc:
            _log(settings, "PreviewFailed", level="error", reason="NoTerminationLog",
                 message=f"cannot write {settings.termination_log}: {exc.strerror}")
            return EXIT_FAILED
        summary = fitted.summary()
        _log(settings, "PreviewRecorded", commands=len(fitted.commands),
             objects=summary.objects, findings=summary.findings, bytes=len(encoded),
             message=problem or None)
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the last line: log it, report no result
        _log(settings, "PreviewFailed", level="error", reason="PreviewInternalError",
             message=type(exc).__name__)
        return EXIT_FAILED
    finally:
        shutil.rmtree(work, ignore_errors=True)
        kube.close()


def _ref(command: str) -> str:
    try:
        return "sha256:" + scope.command_sha256(command)
    except ScopeViolation:
        return "sha256:?"


__all__ = ["EXIT_FAILED", "EXIT_OK", "collect", "run_preview"]
