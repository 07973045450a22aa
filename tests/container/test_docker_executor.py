"""The gateway's docker executor against the real Docker Engine.

Real containers (from the locally made Debian base image) are restarted, stopped and started
through whole gateway runs: a minted token, the burn, the Docker SDK call on the engine's unix
socket, the grant's status and the audit record. Verbs other than restart/start/stop and other
engines stay refused even when the allowlist would let them through, and a stopped engine is a
clear, audited failure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.gateway import Env, gateway_env, make_grant, mint, settings_for
from wingman.dev.cluster import LocalCluster
from wingman.dev.engine import DockerEngine
from wingman.errors import ConfigError, ExecutionFailed
from wingman.gateway import executors
from wingman.gateway.executors import Credentials
from wingman.gateway.run import EXIT_INTERNAL, EXIT_OK, EXIT_REFUSED, run_gateway
from wingman.model.preview import Outcome
from wingman.preview.runner import _Run as PreviewRun
from wingman.settings import GatewaySettings, PreviewSettings


@pytest.fixture
def env(cluster: LocalCluster, crds: object, namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with gateway_env(cluster, namespace, tmp_path, monkeypatch) as made:
        # docker verbs the executor must still refuse are allowlisted on purpose: the
        # executor's own check is what is under test
        made.policy_file.write_text(yaml.safe_dump({"environment": "test", "allowlist": [
            "docker restart *", "docker stop *", "docker start *", "docker rm *",
            "docker kill *", "docker exec * *"]}))
        yield made


@pytest.fixture
def web(engine: DockerEngine, base_image: str) -> Iterator[str]:
    """A real running container and its name (the tests read it in the grant's output)."""
    name = f"web-{uuid.uuid4().hex[:8]}"
    engine.docker("run", "-d", "--name", name, "--network", "none", "--init", base_image,
                  "sleep", "infinity")
    try:
        yield name
    finally:
        engine.docker("rm", "-f", name, check=False)


def _state(engine: DockerEngine, name: str) -> dict[str, Any]:
    out = engine.docker("inspect", name, check=False)
    if out.returncode != 0:
        return {}
    state: dict[str, Any] = json.loads(out.stdout)[0]["State"]
    return state


def _settings(env: Env, command: str, host: str) -> tuple[GatewaySettings, str]:
    grant = make_grant(env, command)
    base = settings_for(env, grant, mint(env, grant))
    return dataclasses.replace(base, docker_enabled=True, docker_host=host), grant.name


def test_restart_stop_and_start_real_containers_through_the_gateway(
        env: Env, engine: DockerEngine, web: str) -> None:
    before = _state(engine, web)
    assert before["Running"] is True

    settings, grant = _settings(env, f"docker restart {web}", engine.host)
    assert run_gateway(settings) == EXIT_OK
    after = _state(engine, web)
    assert after["Running"] is True and after["StartedAt"] != before["StartedAt"]
    status = env.grant(grant)["status"]
    assert status["phase"] == "Succeeded" and status["exitCode"] == 0
    assert status["output"] == f"{web}\n"

    settings, grant = _settings(env, f"docker stop {web}", engine.host)
    assert run_gateway(settings) == EXIT_OK
    stopped = _state(engine, web)
    assert stopped["Running"] is False and stopped["Status"] == "exited"
    assert env.grant(grant)["status"]["phase"] == "Succeeded"

    settings, grant = _settings(env, f"docker start {web}", engine.host)
    assert run_gateway(settings) == EXIT_OK
    assert _state(engine, web)["Running"] is True

    executed = [r for r in env.audit_records() if r["event"] == "GatewayExecuted"]
    assert [r["data"]["exit_code"] for r in executed] == [0, 0, 0]
    executing = [r["data"]["command"] for r in env.audit_records()
                 if r["event"] == "GatewayExecuting"]
    assert executing == [f"docker restart {web}", f"docker stop {web}", f"docker start {web}"]
    assert {r["data"]["executor"] for r in env.audit_records()
            if r["event"] == "GatewayExecuting"} == {"docker"}


def test_a_gateway_asked_to_stop_does_not_ask_the_engine_to_act(
        env: Env, engine: DockerEngine, web: str, tmp_path: Path) -> None:
    """SIGTERM (a cancelled grant's pod) before the engine is asked: the container is left as it
    is, and the failure says why, as kubectl's executor does."""
    before = _state(engine, web)
    settings, _ = _settings(env, f"docker stop {web}", engine.host)
    (tmp_path / "ca.crt").write_text("unused")
    credentials = Credentials(server="https://127.0.0.1:6443", ca_file=tmp_path / "ca.crt",
                              token="unused", secrets=())
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    restore = executors.TERMINATION.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(ExecutionFailed) as exc:
            executors.execute(["docker", "stop", web], settings=settings,
                              credentials=credentials)
    finally:
        restore()
        signal.signal(signal.SIGTERM, previous)
    assert exc.value.reason == "GatewayTerminating"
    assert "not asked to stop the container" in str(exc.value)
    after = _state(engine, web)
    assert after["Running"] is True and after["StartedAt"] == before["StartedAt"]


def test_a_sigterm_during_a_docker_call_stops_the_wait_and_records_an_unknown_outcome(
        env: Env, engine: DockerEngine, base_image: str) -> None:
    """The engine takes the stop of a container that ignores SIGTERM through its full stop
    timeout (10 s); a SIGTERM to the gateway meanwhile ends its wait at once (the kubelet's
    grace period is 30 s), and the record says the engine may still complete the operation."""
    stubborn = f"stubborn-{uuid.uuid4().hex[:8]}"  # no --init: its PID 1 ignores SIGTERM
    engine.docker("run", "-d", "--name", stubborn, "--network", "none", base_image,
                  "sleep", "infinity")
    try:
        settings, grant = _settings(env, f"docker stop {stubborn}", engine.host)
        sent: list[float] = []

        since = str(int(time.time()) - 1)

        def stopping() -> bool:
            # the engine has sent the container its SIGTERM: it now waits out the stop timeout
            res = engine.docker("events", "--since", since, "--until", str(int(time.time()) + 1),
                                "--filter", f"container={stubborn}", "--filter", "event=kill",
                                "--format", "{{.Action}}", check=False, timeout=20)
            return res.returncode == 0 and "kill" in res.stdout

        def terminate_once_executing() -> None:
            for _ in range(600):
                if any(r["event"] == "GatewayExecuting" for r in env.audit_records()) \
                        and stopping():
                    sent.append(time.monotonic())
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=terminate_once_executing, daemon=True)
        killer.start()
        assert run_gateway(settings) == EXIT_OK  # ran and recorded, as an interrupted run
        ended = time.monotonic()
        killer.join(timeout=5)
        assert sent, "the gateway never audited GatewayExecuting"
        assert ended - sent[0] < 3, "the gateway waited for the engine after the SIGTERM"
        status = env.grant(grant)["status"]
        assert (status["phase"], status["reason"]) == ("Failed", "CommandInterrupted"), status
        assert "may still have completed the operation" in status["message"]
        (executed,) = [r for r in env.audit_records() if r["event"] == "GatewayExecuted"]
        assert executed["data"]["interrupted"] is True
        assert "may still have completed the operation" in executed["data"]["message"]
        assert status["outputSHA256"] == executed["data"]["output_sha256"]
        # the engine carried the stop through all the same: the outcome was indeed unknown
        for _ in range(200):
            if _state(engine, stubborn).get("Running") is False:
                break
            time.sleep(0.1)
        assert _state(engine, stubborn)["Running"] is False
    finally:
        engine.docker("rm", "-f", stubborn, check=False)


def test_a_missing_container_is_the_engines_real_answer_on_record(
        env: Env, engine: DockerEngine) -> None:
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    settings, grant = _settings(env, f"docker restart {ghost}", engine.host)
    assert run_gateway(settings) == EXIT_OK  # ran and recorded; the command itself failed
    status = env.grant(grant)["status"]
    assert status["phase"] == "Failed" and status["exitCode"] == 1
    assert "No such container" in status["output"] and ghost in status["output"]
    (executed,) = [r for r in env.audit_records() if r["event"] == "GatewayExecuted"]
    assert executed["data"]["exit_code"] == 1
    assert status["outputSHA256"] == executed["data"]["output_sha256"]


def test_a_name_no_container_has_never_reaches_a_container_whose_id_starts_with_it(
        env: Env, engine: DockerEngine, web: str) -> None:
    """The engine takes a name no container has as the start of a container's ID: an approved
    ``docker restart db`` (or ``cafe``), once no container is called so, would restart another
    container. The gateway acts only on the container named exactly, or by 12+ ID digits."""
    before = _state(engine, web)
    full_id = engine.docker("inspect", "--format", "{{.Id}}", web).stdout.strip()
    settings, grant = _settings(env, f"docker restart {full_id[:8]}", engine.host)
    assert run_gateway(settings) == EXIT_OK  # ran and recorded; the engine found no such one
    assert _state(engine, web)["StartedAt"] == before["StartedAt"], "another container restarted"
    status = env.grant(grant)["status"]
    assert status["phase"] == "Failed" and status["exitCode"] == 1
    assert f"No such container: {full_id[:8]}" in status["output"]
    assert web in status["output"], "the message names the container it would have reached"

    settings, grant = _settings(env, f"docker restart {full_id[:12]}", engine.host)
    assert run_gateway(settings) == EXIT_OK
    assert env.grant(grant)["status"]["phase"] == "Succeeded"
    assert _state(engine, web)["StartedAt"] != before["StartedAt"]


def test_the_preview_reports_such_a_name_missing_instead_of_the_container_it_would_reach(
        env: Env, engine: DockerEngine, web: str) -> None:
    """Reviewers see what the gateway would act on: for a name no container has, nothing
    (``TargetMissing``), not the container whose ID starts with it."""
    full_id = engine.docker("inspect", "--format", "{{.Id}}", web).stdout.strip()
    policy = settings_for(env, make_grant(env, f"docker restart {web}"), None).policy
    preview = PreviewRun(PreviewSettings(
        namespace=env.ns, environment="test", policy=policy, log_format="json",
        approval_name="a", approval_uid="u", pod_name="p", serviceaccount_dir=env.sa_dir,
        api_server="https://127.0.0.1:1", timeout_seconds=60, command_timeout_seconds=30,
        termination_log=env.tmp / "termination-log", docker_enabled=True,
        docker_host=engine.host), time.time)
    short = preview.docker(f"docker restart {full_id[:8]}", ["docker", "restart", full_id[:8]])
    assert short.outcome == Outcome.TARGET_MISSING, short
    assert short.targets == ()
    named = preview.docker(f"docker restart {web}", ["docker", "restart", web])
    assert named.outcome == Outcome.PREVIEWED
    assert [t.uid for t in named.targets] == [full_id]


@pytest.mark.parametrize("command", ["docker rm {web}", "docker kill {web}",
                                     "docker exec {web} sh"])
def test_other_verbs_stay_refused_even_when_allowlisted(
        env: Env, engine: DockerEngine, web: str, command: str) -> None:
    before = _state(engine, web)
    settings, grant = _settings(env, command.format(web=web), engine.host)
    assert run_gateway(settings) == EXIT_REFUSED
    status = env.grant(grant)["status"]
    assert status["reason"] == "ExecutorNotAllowed", status
    assert env.leases() == [], "refused before the token was burned"
    assert _state(engine, web) == before, "the container was not touched"


def test_other_engines_are_refused(env: Env, engine: DockerEngine, web: str) -> None:
    for host in ("tcp://127.0.0.1:2375", "ssh://root@elsewhere", "unix://"):
        with pytest.raises(ConfigError, match="local socket"):
            GatewaySettings.from_env({"KUBERNETES_SERVICE_HOST": "127.0.0.1",
                                      "WINGMAN_GRANT_NAME": "g", "WINGMAN_DOCKER_HOST": host})
    # a command naming another engine is refused by the executor, even when allowlisted
    before = _state(engine, web)
    others = [f"docker {flag} {host} restart {web}" for flag in ("-H", "--host")
              for host in ("tcp://127.0.0.1:2375", f"unix://{engine.socket}")]
    policy = yaml.safe_load(env.policy_file.read_text())
    policy["allowlist"] += [f"'{c.split()[0]}' '{c.split()[1]}' '{c.split()[2]}' "
                            f"'{c.split()[3]}' '{c.split()[4]}'" for c in others]
    env.policy_file.write_text(yaml.safe_dump(policy))
    for command in others:
        settings, grant = _settings(env, command, engine.host)
        assert run_gateway(settings) == EXIT_REFUSED
        assert env.grant(grant)["status"]["reason"] == "ExecutorNotAllowed"
    assert env.leases() == []
    assert _state(engine, web) == before


def test_a_stopped_engine_is_a_clear_audited_failure(env: Env, web: str) -> None:
    stopped = DockerEngine.start()
    host = stopped.host
    stopped.stop()
    settings, grant = _settings(env, f"docker restart {web}", host)
    assert run_gateway(settings) == EXIT_INTERNAL
    status = env.grant(grant)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "DockerUnavailable"
    assert "cannot reach the Docker engine" in status["message"] and host in status["message"]
    (executed,) = [r for r in env.audit_records() if r["event"] == "GatewayExecuted"]
    assert executed["data"]["exit_code"] is None
    assert executed["data"]["reason"] == "DockerUnavailable"


def test_a_docker_preview_reads_the_container_and_a_restart_since_is_target_changed(
        env: Env, engine: DockerEngine, web: str) -> None:
    import time

    from wingman.model import preview as pv
    from wingman.preview.runner import _Run
    from wingman.settings import PreviewSettings

    command = f"docker restart {web}"
    preview_settings = dataclasses.replace(PreviewSettings.from_env({
        "KUBERNETES_SERVICE_HOST": "127.0.0.1", "WINGMAN_APPROVAL_NAME": "r",
        "WINGMAN_APPROVAL_UID": "u", "WINGMAN_POLICY_FILE": str(env.policy_file)}),
        docker_enabled=True, docker_host=engine.host)
    seen = _Run(preview_settings, time.time).docker(command, command.split())
    assert seen.outcome is pv.Outcome.PREVIEWED, seen.message
    (target,) = seen.targets
    state = _state(engine, web)
    assert target.uid == json.loads(engine.docker("inspect", web).stdout)[0]["Id"]
    assert target.resource_version.startswith(state["StartedAt"][:19])
    assert "running" in seen.diff and "would be stopped and started again" in seen.message
    missing = _Run(preview_settings, time.time).docker("docker restart ghost-x",
                                                       ["docker", "restart", "ghost-x"])
    assert missing.outcome is pv.Outcome.TARGET_MISSING

    # the approval binds the container as the preview saw it; restarted by hand since, the
    # gateway refuses before it spends the token
    settings, grant = _settings(env, command, engine.host)
    approval = env.grant(grant)["spec"]["approvalRef"]["name"]
    env.cluster.kubectl("patch", "approvalrequests", approval, "-n", env.ns,
                        "--subresource=status", "--type=merge", "-p", json.dumps({"status": {
                            "preview": pv.status(pv.Preview("u", (seen,)), job="j",
                                                 started="2030-01-01T00:00:00Z",
                                                 completed="2030-01-01T00:00:01Z")}}))
    engine.docker("restart", "-t", "1", web)
    restarted = _state(engine, web)["StartedAt"]
    assert run_gateway(settings) == EXIT_REFUSED
    status = env.grant(grant)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "TargetChanged")
    assert f"containers.docker {web} changed since the preview" in status["message"]
    assert _state(engine, web)["StartedAt"] == restarted, "not restarted again"
