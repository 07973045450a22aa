"""The execution gateway against the real API server, as the real ``wingman-gateway`` identity.

Each test builds what the operator would have made: an approved ApprovalRequest (status set
through the status subresource), an ExecutionGrant, a suspended Job (for a real Job UID), a
capability token signed by a fresh key whose public PEM sits in a ConfigMap-style keys
directory. The gateway then runs in-process with a real ServiceAccount token of
``wingman-gateway``, whose RBAC mirrors the chart's gateway Roles, and executes the real
``kubectl`` against a Deployment in a target namespace.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import jwt
import pytest
import yaml

from support.admission import refuse_updates, wait_refused
from support.apiproxy import FaultyApiProxy
from support.gateway import (
    POD,
    Env,
    Grant,
    _approved,
    _now_rfc3339,
    _set_approval_status,
    gateway_env,
    issue_on_claim,
    make_grant,
    make_rollback_grant,
    mint,
    set_grant_status,
    settings_for,
)
from wingman import audit, conditions
from wingman.capability import tokens
from wingman.dev.cluster import LocalCluster
from wingman.errors import ClusterError
from wingman.gateway import checks
from wingman.gateway import run as gateway_run
from wingman.gateway import status as gateway_status
from wingman.gateway.checks import RESULT_SECONDS
from wingman.gateway.identity import SERVICEACCOUNTS
from wingman.gateway.redaction import WITHHELD
from wingman.gateway.run import EXIT_OK, EXIT_REFUSED, EXIT_REPLAY, run_gateway
from wingman.kube import APPROVALS, GRANTS, JOBS, ApiError, Kube, transient
from wingman.model import names
from wingman.operator.context import Context
from wingman.operator.events import Events
from wingman.operator.handlers.grants import cover_deadline
from wingman.operator.metrics import Metrics
from wingman.settings import GatewaySettings, OperatorSettings


@pytest.fixture
def env(cluster: LocalCluster, crds: object, namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with gateway_env(cluster, namespace, tmp_path, monkeypatch) as made:
        yield made

def _condition(grant: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (grant.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def _events(env: Env) -> list[str]:
    return [r["event"] for r in env.audit_records()]


def _json_lines(err: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines, f"no JSON log lines on stderr: {err!r}"
    return lines


def _assert_never_leaked(env: Env, token: str, err: str) -> None:
    assert token not in err
    if env.audit_file.exists():
        assert token not in env.audit_file.read_text()
    for part in token.split("."):  # not even a segment of it
        assert part not in err


# ------------------------------------------------------------------------------ happy + replay


def test_executes_once_records_the_result_and_rejects_the_replay(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g)
    settings = settings_for(env, g, token)

    assert run_gateway(settings) == EXIT_OK
    err = capsys.readouterr().err
    assert env.replicas() == 2

    status = env.grant(g.name)["status"]
    assert status["phase"] == "Succeeded"
    assert status["exitCode"] == 0
    assert "deployment.apps/web scaled" in status["output"]
    assert status["outputSHA256"].startswith("sha256:") and len(status["outputSHA256"]) == 71
    assert status["outputTruncated"] is False
    assert status["startTime"] and status["completionTime"]
    assert status["reason"] == "CommandSucceeded"
    succeeded = _condition(env.grant(g.name), "Succeeded")
    assert succeeded is not None and succeeded["status"] == "True"

    records = env.audit_records()
    assert [r["event"] for r in records] == [
        "GatewayTokenBurned", "GatewayStarting", "GatewayExecuting", "GatewayExecuted"]
    assert status["auditRecordHash"] == f"sha256:{records[-1]['hash']}"
    assert all(r["actor"] == f"gateway/{POD}" for r in records)
    assert records[0]["subject"] == {"kind": "ExecutionGrant", "namespace": env.ns,
                                     "name": g.name, "uid": g.grant["metadata"]["uid"]}
    assert records[3]["data"]["exit_code"] == 0
    assert records[3]["data"]["output_sha256"] == status["outputSHA256"]
    assert all(r["data"]["token_sha256"] == tokens.token_sha256(token) for r in records)
    # the burn carries the digest of the jti that TokenMinted records (never the jti itself,
    # which names the burn marker), so the trail ties this burn to its mint
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert records[0]["data"]["jti_sha256"] == tokens.jti_sha256(jti)
    assert records[0]["data"]["jti_sha256"] == records[3]["data"]["jti_sha256"]

    [lease] = env.leases()
    assert lease["metadata"]["labels"]["wingman.dev/grant"] == g.name
    assert lease["metadata"]["annotations"]["wingman.dev/token-sha256"] == \
        tokens.token_sha256(token)
    assert lease["metadata"]["annotations"]["wingman.dev/pod"] == POD

    logs = _json_lines(err)
    assert {"GatewayTokenBurned", "GatewayExecuting", "GatewayExecuted"} <= {
        line["event"] for line in logs}
    assert all(line["grant"] == g.name for line in logs)
    assert logs[-1]["token_sha256"] == tokens.token_sha256(token)

    # The same token again (a restarted pod, a copied Secret): burnt, so nothing runs.
    env.cluster.kubectl("scale", "deployment/web", "--replicas=1", "-n", env.target)
    assert run_gateway(settings) == EXIT_REPLAY
    err += capsys.readouterr().err
    assert env.replicas() == 1, "the replayed token executed the command a second time"
    after = env.grant(g.name)
    assert after["status"]["phase"] == "Succeeded"
    assert after["status"]["exitCode"] == 0
    assert after["status"]["output"] == status["output"]
    replay = _condition(after, "ReplayDetected")
    assert replay is not None
    assert replay["status"] == "True" and replay["reason"] == "ReplayRejected"
    assert POD in replay["message"]
    assert _events(env) == ["GatewayTokenBurned", "GatewayStarting", "GatewayExecuting",
                            "GatewayExecuted", "GatewayReplayRejected"]
    assert any(line["event"] == "GatewayReplayRejected" for line in _json_lines(err))

    report = audit.verify(str(env.audit_file))
    assert report.ok, report.summary()
    _assert_never_leaked(env, token, err)


# ------------------------------------------------------------------------------ refusals


def test_a_template_printing_a_whole_object_is_withheld_and_one_of_scalar_leaves_is_kept(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    # an environment value under a name no rule recognises: a template printing the pod spec
    # prints it bare (custom-columns needs a server: here the real one)
    value = "Zq8mW3vX5tK9"
    env.cluster.kubectl("set", "env", "deployment/web", "-n", env.target, f"FOO={value}")
    whole = "custom-columns=NAME:.metadata.name,SPEC:.spec.template.spec"
    leaves = "custom-columns=NAME:.metadata.name,REPLICAS:.spec.replicas"
    assert value in env.cluster.kubectl("get", "deployment", "web", "-n", env.target,
                                        "-o", whole).stdout
    commands = [f"kubectl get deployment web -n {env.target} -o {output}"
                for output in (whole, leaves)]
    env.policy_file.write_text(yaml.safe_dump({"environment": "test", "allowlist": commands}))
    outputs = []
    for command in commands:
        g = make_grant(env, command)
        assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_OK
        status = env.grant(g.name)["status"]
        assert status["phase"] == "Succeeded"
        outputs.append(status["output"])
    capsys.readouterr()
    assert outputs[0] == WITHHELD
    assert outputs[1].split() == ["NAME", "REPLICAS", "web", "1"]


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] += 3000  # a longer life, keeping the original signature
    forged = base64.urlsafe_b64encode(
        json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _assert_refused(env: Env, g: Grant, token: str | None, reason: str,
                    capsys: pytest.CaptureFixture[str], *,
                    clock: Callable[[], float] = time.time) -> None:
    assert run_gateway(settings_for(env, g, token), clock=clock) == EXIT_REFUSED
    err = capsys.readouterr().err
    status = env.grant(g.name)["status"]
    assert status["phase"] == "Failed"
    assert status["reason"] == reason, status["message"]
    assert status["message"]
    assert "exitCode" not in status and "output" not in status
    failed = _condition(env.grant(g.name), "Succeeded")
    assert failed is not None and failed["status"] == "False" and failed["reason"] == reason
    assert env.leases() == [], "a refused token must stay unspent"
    assert env.replicas() == 1
    records = env.audit_records()
    assert [r["event"] for r in records] == ["GatewayRefused"]
    assert records[0]["data"]["reason"] == reason
    assert status["auditRecordHash"] == f"sha256:{records[0]['hash']}"
    assert audit.verify(str(env.audit_file)).ok
    refused = [line for line in _json_lines(err) if line["event"] == "GatewayRefused"]
    assert refused and refused[0]["reason"] == reason
    if token is not None:
        _assert_never_leaked(env, token, err)


def test_expired_token_is_refused(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    _assert_refused(env, g, mint(env, g, now=time.time() - 1000), "TokenExpired", capsys)


def test_token_for_another_environment_is_refused(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    _assert_refused(env, g, mint(env, g, audience="prd"), "WrongAudience", capsys)


def test_token_for_another_job_is_refused(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    _assert_refused(env, g, mint(env, g, job_uid=str(uuid.uuid4())), "BindingMismatch", capsys)


def test_tampered_token_is_refused(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    _assert_refused(env, g, _tamper(mint(env, g)), "BadSignature", capsys)


def test_approval_revoked_after_minting_is_refused(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g)
    _set_approval_status(env, g.approval["metadata"]["name"], [
        *_approved(),
        {"type": "Revoked", "status": "True", "reason": "RevokedByApprover",
         "message": "approval revoked: rejected by carol", "lastTransitionTime": _now_rfc3339()},
    ], "Rejected")
    _assert_refused(env, g, token, "ApprovalRevoked", capsys)


@pytest.mark.parametrize("when", ["before-the-run", "during-the-burn"])
def test_a_reject_in_the_spec_refuses_even_while_the_status_says_approved(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    # An approver appends a Reject, and the operator's bookkeeping misses it: the status still
    # says Approved. The gateway derives the revocation from spec.decisions itself.
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g)
    name = g.approval["metadata"]["name"]
    reject = [{"op": "add", "path": "/spec/decisions",
               "value": [{"verdict": "Reject", "by": "carol", "reason": "not during the sale"}]}]
    if when == "before-the-run":
        env.cluster.kubectl("patch", "approvalrequests", name, "-n", env.ns, "--type=json",
                            "-p", json.dumps(reject))
        _assert_refused(env, g, token, "ApprovalRevoked", capsys)
        assert env.replicas() != 2
        return
    # the Reject lands after the gateway read the approval, before it re-reads it after the burn
    import wingman.gateway.run as gateway_run

    original = checks.burn_marker

    def burn_then_reject(*args: Any, **kwargs: Any) -> Any:
        env.cluster.kubectl("patch", "approvalrequests", name, "-n", env.ns, "--type=json",
                            "-p", json.dumps(reject))
        return original(*args, **kwargs)

    monkeypatch.setattr(gateway_run, "burn_marker", burn_then_reject)
    assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
    assert env.replicas() != 2
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ApprovalRevoked"), status
    assert "GatewayExecuting" not in _events(env)


def test_a_command_the_approval_granted_to_another_grant_is_refused(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}",
                   holder=("someone-else", str(uuid.uuid4())))
    token = mint(env, g)
    _assert_refused(env, g, token, "CommandAlreadyGranted", capsys)


def test_missing_token_file_is_refused(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    _assert_refused(env, g, None, "NoToken", capsys)


def test_a_refusal_before_any_read_leaves_a_grant_created_again_under_the_name_alone(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """A gateway refused before it read its grant (here: no token) writes only to the grant its
    Job was made for: one deleted and created again under the name keeps its status."""
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    old = env.grant(g.name)
    env.cluster.kubectl("delete", "executiongrant", g.name, "-n", env.ns, "--wait=true")
    env.cluster.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": old["apiVersion"], "kind": old["kind"],
        "metadata": {"name": g.name, "namespace": env.ns}, "spec": old["spec"]}))
    # the new grant issued too, with a Job of the same name (Job names follow grant names)
    set_grant_status(env, g.name, {k: v for k, v in old["status"].items()
                                   if k != "conditions"})
    again = env.grant(g.name)
    assert again["metadata"]["uid"] != old["metadata"]["uid"]
    assert again["status"]["phase"] == "TokenIssued"
    assert run_gateway(settings_for(env, g, None)) == EXIT_REFUSED
    lines = _json_lines(capsys.readouterr().err)
    assert [line["reason"] for line in lines if line["event"] == "GatewayRefused"] == ["NoToken"]
    assert any(line["event"] == "StatusLeftAlone" for line in lines)
    assert env.grant(g.name)["status"]["phase"] == "TokenIssued"
    assert [r["event"] for r in env.audit_records()] == ["GatewayRefused"]


def test_command_outside_the_allowlist_is_refused(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_grant(env, f"kubectl delete deployment/web -n {env.target}")
    _assert_refused(env, g, mint(env, g), "ScopeViolation", capsys)
    assert "NotInAllowlist" in json.dumps(env.audit_records()[0]["data"])


@pytest.mark.parametrize("extra", ["--as=system:admin", "--as_group=system:masters",
                                   "-As 127.0.0.1:1"])
def test_a_command_that_sets_another_identity_or_server_is_refused(
    env: Env, capsys: pytest.CaptureFixture[str], extra: str
) -> None:
    # refused by the command rules whatever the allowlist says, before the token is spent
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target} {extra}")
    _assert_refused(env, g, mint(env, g), "ScopeViolation", capsys)
    assert "ConnectionFlag" in json.dumps(env.audit_records()[0]["data"])


def test_unavailable_audit_trail_refuses_before_the_token_is_spent(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    env.audit_file.parent.rmdir()  # the audit volume is missing
    assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_REFUSED
    status = env.grant(g.name)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "AuditUnavailable"
    assert env.leases() == [] and env.replicas() == 1
    assert any(line["reason"] == "AuditUnavailable" for line in
               _json_lines(capsys.readouterr().err) if line["event"] == "GatewayRefused")


def test_a_grant_no_longer_waiting_for_its_gateway_is_not_executed(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g)
    # the operator expired the grant after the gateway pod started
    env.cluster.kubectl("patch", "executiongrants", g.name, "-n", env.ns,
                        "--subresource=status", "--type=merge", "-p",
                        json.dumps({"status": {"phase": "Failed", "reason": "TokenExpired"}}))
    code = run_gateway(settings_for(env, g, token))
    assert code == EXIT_REFUSED
    scale = env.kubectl_json("get", "deployment", "web", "-n", env.target)
    assert scale["spec"]["replicas"] == 1, "nothing ran"
    assert env.grant(g.name)["status"]["reason"] == "TokenExpired", "the status is left alone"


def test_a_grant_cancelled_after_the_burn_is_not_executed(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An approver cancels a grant by deleting it (docs/runbook.md). A foreground deletion (or
    any finalizer) leaves it readable, with a deletionTimestamp, for a while: a gateway that
    had already burned the token must not run the command on it."""
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g)
    real = checks.check_granted

    def cancelled_meanwhile(*args: Any, **kwargs: Any) -> None:
        # after the burn: the approver deletes the grant; a finalizer keeps it readable
        env.cluster.kubectl("patch", "executiongrants", g.name, "-n", env.ns, "--type=merge",
                            "-p", json.dumps({"metadata": {"finalizers": ["test/keep"]}}))
        env.cluster.kubectl("delete", "executiongrants", g.name, "-n", env.ns, "--wait=false")
        real(*args, **kwargs)

    monkeypatch.setattr(gateway_run, "check_granted", cancelled_meanwhile)
    try:
        assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
        assert env.replicas() == 1, "the cancelled grant's command ran"
        grant = env.grant(g.name)
        assert grant["metadata"].get("deletionTimestamp")
        assert grant["status"]["phase"] == "Failed"
        assert grant["status"]["reason"] == "GrantDeleted"
        # the trail says it was about to start and was refused, never that it ran
        assert [r["event"] for r in env.audit_records()] == [
            "GatewayTokenBurned", "GatewayStarting", "GatewayRefused"]
        assert env.audit_records()[-1]["data"]["reason"] == "GrantDeleted"
    finally:
        env.cluster.kubectl("patch", "executiongrants", g.name, "-n", env.ns, "--type=merge",
                            "-p", json.dumps({"metadata": {"finalizers": None}}), check=False)


def test_a_grant_the_operator_ended_after_the_burn_leaves_no_claim_of_execution(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's write lands between the burn and the gateway's guarded ``Running``: the
    command does not run, the operator's ending stays, and the trail does not claim it ran."""
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g)
    real = checks.check_granted

    def expired_meanwhile(*args: Any, **kwargs: Any) -> None:
        set_grant_status(env, g.name, {"phase": "Expired", "reason": "TokenExpired"})
        real(*args, **kwargs)

    monkeypatch.setattr(gateway_run, "check_granted", expired_meanwhile)
    assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
    assert env.replicas() == 1, "the ended grant's command ran"
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Expired", "TokenExpired")
    records = env.audit_records()
    assert [r["event"] for r in records] == [
        "GatewayTokenBurned", "GatewayStarting", "GatewayRefused"]
    assert records[-1]["data"]["reason"] == "GrantNotIssued"
    assert records[1]["data"]["command"] == g.grant["spec"]["command"]


def test_a_claim_of_execution_that_cannot_be_recorded_closes_running_and_runs_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``GatewayExecuting`` is written after ``Running``: if it cannot be, nothing runs and the
    Running phase this run wrote is closed, not left for the operator to guess about."""
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g)
    real = gateway_status.running_status
    moved = env.audit_file.with_name("moved.jsonl")

    def then_the_audit_log_goes(*args: Any, **kwargs: Any) -> dict[str, Any]:
        env.audit_file.rename(moved)  # the open sink refuses a log removed or replaced
        return real(*args, **kwargs)

    monkeypatch.setattr(gateway_run, "running_status", then_the_audit_log_goes)
    assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
    assert env.replicas() == 1, "a command ran without its GatewayExecuting record"
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "AuditUnavailable"), status
    assert [json.loads(line)["event"] for line in moved.read_text().splitlines()] == [
        "GatewayTokenBurned", "GatewayStarting"]
    assert any(line.get("reason") == "AuditUnavailable" for line in
               _json_lines(capsys.readouterr().err) if line["event"] == "GatewayRefused")


@pytest.fixture
def sigterm_dropped() -> Iterator[None]:
    """SIGTERM as the gateway's container delivers it to its first process (the gateway) that
    does not handle it: not at all, the kernel drops it. The previous handler is put back."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_STOPPED_KUBECTL = """
import os, subprocess, sys, time
done = subprocess.run([{real!r}, *sys.argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
sys.stdout.buffer.write(done.stdout)
sys.stdout.flush()
os.kill(os.getppid(), 15)  # the kubelet stops the gateway's pod while the command runs
time.sleep(120)
"""


def test_a_command_running_when_the_pod_is_stopped_is_killed_and_recorded(
    env: Env, monkeypatch: pytest.MonkeyPatch, sigterm_dropped: None
) -> None:
    """SIGTERM (a cancel deletes the Job and its pod; the Job's deadline; a drained node) kills
    the command at once and the gateway records how it ended, instead of the command running on
    unseen until the kubelet's SIGKILL ends the pod with no result."""
    shim = env.tmp / "stopped-bin" / "kubectl"
    shim.parent.mkdir()
    real = str(env.cluster.tool("kubectl"))
    shim.write_text(f"#!{sys.executable}\n" + _STOPPED_KUBECTL.format(real=real))
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    settings = dataclasses.replace(settings_for(env, g, mint(env, g)), exec_timeout_seconds=20)
    started = time.monotonic()
    assert run_gateway(settings) == EXIT_OK
    assert time.monotonic() - started < 15, "the command ran on after the pod was stopped"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN, "the handler was not put back"
    assert env.replicas() == 2
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "CommandInterrupted"), status
    assert "deployment.apps/web scaled" in status["output"]
    assert "asked to stop (SIGTERM)" in status["output"]
    records = env.audit_records()
    assert [r["event"] for r in records] == [
        "GatewayTokenBurned", "GatewayStarting", "GatewayExecuting", "GatewayExecuted"]
    assert records[-1]["data"]["interrupted"] is True
    assert status["auditRecordHash"] == f"sha256:{records[-1]['hash']}"


_LEAVING_KUBECTL = """
import subprocess, sys
left = subprocess.Popen(["sleep", "120"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
with open({pidfile!r}, "w") as fh:
    fh.write(str(left.pid))
sys.exit(subprocess.run([{real!r}, *sys.argv[1:]]).returncode)
"""


def test_what_a_command_leaves_in_its_group_is_killed_before_the_command_is_reaped(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command's process group is killed by its number while the exited command is still
    an unreaped zombie, which keeps that number from any new group; the child it left there
    is killed, and the result recorded is the command's own."""
    shim = env.tmp / "leaving-bin" / "kubectl"
    shim.parent.mkdir()
    pidfile = env.tmp / "left.pid"
    shim.write_text(f"#!{sys.executable}\n" + _LEAVING_KUBECTL.format(
        real=str(env.cluster.tool("kubectl")), pidfile=str(pidfile)))
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    kills: list[str] = []
    killpg = os.killpg

    def spy(pgid: int, signum: int) -> None:
        try:  # the state of the group's leader (the command) at the kill; "gone": reaped
            kills.append(Path(f"/proc/{pgid}/stat").read_text().rsplit(")", 1)[1].split()[0])
        except FileNotFoundError:
            kills.append("gone")
        killpg(pgid, signum)

    monkeypatch.setattr(os, "killpg", spy)
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_OK
    monkeypatch.setattr(os, "killpg", killpg)
    assert kills == ["Z"], "the group was not killed while the command was an unreaped zombie"
    left = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(left) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(left), "the child the command left in its group outlived it"
    assert env.replicas() == 2
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["exitCode"]) == ("Succeeded", 0), status
    assert "deployment.apps/web scaled" in status["output"]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (neither reaped nor a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_pod_stopped_before_the_burn_refuses_and_leaves_the_token_unspent(
    env: Env, monkeypatch: pytest.MonkeyPatch, sigterm_dropped: None
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    real = checks.check_targets

    def and_the_pod_is_stopped(*args: Any, **kwargs: Any) -> list[str]:
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(gateway_run, "check_targets", and_the_pod_is_stopped)
    assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_REFUSED
    assert env.replicas() == 1
    assert env.leases() == [], "the token was spent by a pod that was being stopped"
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "GatewayTerminating"), status
    assert [r["event"] for r in env.audit_records()] == ["GatewayRefused"]


def test_a_pod_stopped_as_the_gateway_starts_refuses_and_leaves_the_token_unspent(
    env: Env, sigterm_dropped: None
) -> None:
    # the SIGTERM `wingman gateway` noted before run_gateway installed its handler
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    assert run_gateway(settings_for(env, g, mint(env, g)),
                       asked_to_stop=lambda: True) == EXIT_REFUSED
    assert env.replicas() == 1
    assert env.leases() == [], "the token was spent by a pod that was being stopped"
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "GatewayTerminating"), status
    assert [r["event"] for r in env.audit_records()] == ["GatewayRefused"]


class _OperatorWritesWhileTheGatewayWaits:
    """Stands in for ``time`` in ``wingman.gateway.run``: at the gateway's first pause while the
    grant is Pending, it notes the burn markers (none may exist yet) and applies ``patch`` to the
    grant's status, as the operator's write landing then would."""

    def __init__(self, env: Env, g: Grant, patch: dict[str, Any]) -> None:
        self.env, self.g, self.patch = env, g, patch
        self.pauses = 0
        self.burnt_before: list[int] = []
        self.monotonic = time.monotonic
        self.time = time.time

    def sleep(self, seconds: float) -> None:
        self.pauses += 1
        if self.pauses == 1:
            self.burnt_before.append(len(self.env.leases()))
            set_grant_status(self.env, self.g.name, self.patch)


def _pending(env: Env, g: Grant, patch: dict[str, Any], monkeypatch: pytest.MonkeyPatch
             ) -> tuple[_OperatorWritesWhileTheGatewayWaits, str]:
    # a hash the operator's write records is the first one (the CRD keeps a recorded one)
    token = mint(env, g, record="tokenSHA256" not in patch)
    set_grant_status(env, g.name, {"phase": "Pending"})
    operator = _OperatorWritesWhileTheGatewayWaits(env, g, patch)
    monkeypatch.setattr(gateway_run, "time", operator)
    return operator, token


def test_a_gateway_that_starts_before_the_status_says_token_issued_waits_for_it(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a grant whose claim records no token (named over 54 characters, or issued by an earlier
    # release): the operator writes TokenIssued and the token Secret at the same time, the
    # Secret may land first, and the pod start
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    operator, token = _pending(env, g, {"phase": "TokenIssued"}, monkeypatch)
    assert run_gateway(settings_for(env, g, token)) == EXIT_OK
    assert operator.pauses >= 1 and operator.burnt_before == [0], "nothing spent while Pending"
    assert env.replicas() == 2
    assert env.grant(g.name)["status"]["phase"] == "Succeeded"
    assert _events(env) == ["GatewayTokenBurned", "GatewayStarting", "GatewayExecuting",
                            "GatewayExecuted"]
    assert len(env.leases()) == 1


# ------------------------------------------------------------------ a token issued on the claim


def test_a_grant_whose_claim_records_its_token_runs_at_once_and_records_the_token(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator issues the token on the approval's claim and writes nothing to the grant:
    its stored phase stays Pending, and the gateway runs it without waiting, its executor token
    bound to the Secret the claim names; Running records the token's fields in the grant."""
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}",
                   on_claim=True)
    token = mint(env, g, record=False)
    issue_on_claim(env, g, token)
    assert env.grant(g.name)["status"]["phase"] == "Pending"
    operator = _OperatorWritesWhileTheGatewayWaits(env, g, {})
    monkeypatch.setattr(gateway_run, "time", operator)
    assert run_gateway(settings_for(env, g, token)) == EXIT_OK
    assert operator.pauses == 0, "the gateway waited for a token its claim recorded"
    assert not any(line["event"] == "GatewayWaiting"
                   for line in _json_lines(capsys.readouterr().err))
    assert env.replicas() == 2
    status = env.grant(g.name)["status"]
    assert status["phase"] == "Succeeded"
    [claim] = env.kubectl_json("get", "approvalrequests", g.approval["metadata"]["name"], "-n",
                               env.ns)["status"]["grants"]
    assert {k: status[k] for k in ("tokenSHA256", "tokenExpirationTime", "jobName",
                                   "tokenSecretName")} == {
        "tokenSHA256": tokens.token_sha256(token), "jobName": names.job_name(g.name),
        "tokenSecretName": g.secret, "tokenExpirationTime": claim["tokenExpirationTime"]}
    assert _events(env) == ["GatewayTokenBurned", "GatewayStarting", "GatewayExecuting",
                            "GatewayExecuted"]
    assert len(env.leases()) == 1


def test_a_claim_that_records_another_token_is_refused_before_the_burn(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}",
                   on_claim=True)
    token = mint(env, g, record=False)
    other = tokens.token_sha256("another token")
    issue_on_claim(env, g, token, sha256=other)
    assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
    assert env.leases() == [] and env.replicas() == 1, "the token stays unspent, nothing ran"
    assert [(r["event"], r["data"]["reason"]) for r in env.audit_records()] == [
        ("GatewayRefused", "BindingMismatch")]
    status = env.grant(g.name)["status"]
    # the grant was issued (on its claim): the refusal is recorded, with the claim's token
    assert (status["phase"], status["reason"]) == ("Failed", "BindingMismatch")
    assert status["tokenSHA256"] == other
    assert "records another token" in status["message"]
    _assert_never_leaked(env, token, capsys.readouterr().err)


def _rollback(env: Env) -> tuple[Grant, str, str]:
    """A rollback grant (scale web back to 2) of a forward grant that ran, Pending, its token
    minted: (grant, token, the forward command)."""
    forward = f"kubectl scale deployment/web --replicas=3 -n {env.target}"
    g, _ = make_rollback_grant(env, forward,
                               f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    return g, mint(env, g, record=False), forward


def test_a_rollback_grant_whose_claim_records_its_token_runs_once(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rollback grant issued on its claim (the entry records ``rollbackOf``, the command it
    undoes, and its token) runs its reviewed rollback at once; the same token again is a
    replay."""
    g, token, forward = _rollback(env)
    issue_on_claim(env, g, token, rollback_of=forward)
    settings = settings_for(env, g, token)
    assert run_gateway(settings) == EXIT_OK
    assert env.replicas() == 2
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["tokenSHA256"]) == ("Succeeded", tokens.token_sha256(token))
    executing = [r for r in env.audit_records() if r["event"] == "GatewayExecuting"]
    assert executing and executing[0]["data"]["rollbackOf"] == \
        g.grant["spec"]["rollbackOf"]["name"]
    env.cluster.kubectl("scale", "deployment/web", "--replicas=1", "-n", env.target)
    assert run_gateway(settings) == EXIT_REPLAY
    assert env.replicas() == 1, "the rollback ran a second time"
    assert len(env.leases()) == 1
    _assert_never_leaked(env, token, capsys.readouterr().err)


def test_a_rollback_grant_runs_after_its_request_expired(env: Env) -> None:
    """The request's expiry does not end its rollback window: the gateway's rollback rule, not
    the request's, judges a rollback grant."""
    g, token, forward = _rollback(env)
    issue_on_claim(env, g, token, rollback_of=forward)
    env.cluster.kubectl("patch", "approvalrequests", g.approval["metadata"]["name"], "-n",
                        env.ns, "--subresource=status", "--type=merge", "-p", json.dumps({
                            "status": {"phase": "Expired", "expirationTime": _now_rfc3339(-60),
                                       "conditions": [*_approved(), {
                                           "type": "Expired", "status": "True",
                                           "reason": "Expired", "message": "expired",
                                           "lastTransitionTime": _now_rfc3339()}]}}))
    assert run_gateway(settings_for(env, g, token)) == EXIT_OK
    assert env.replicas() == 2
    assert env.grant(g.name)["status"]["phase"] == "Succeeded"


@pytest.mark.parametrize("claim", ["another-token", "as-the-command"])
def test_a_rollback_grant_whose_claim_is_not_its_token_s_rollback_claim_is_refused(
    env: Env, capsys: pytest.CaptureFixture[str], claim: str
) -> None:
    """The rollback's claim records another token (``BindingMismatch``), or the entry claims
    the rollback command as a command of its own, not as the rollback of the forward command
    (no claim of the rollback: ``CommandNotGranted``): refused before the burn."""
    g, token, forward = _rollback(env)
    if claim == "another-token":
        issue_on_claim(env, g, token, sha256=tokens.token_sha256("another token"),
                       rollback_of=forward)
        reason = "BindingMismatch"
    else:
        issue_on_claim(env, g, token)
        reason = "CommandNotGranted"
    assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
    assert env.leases() == [] and env.replicas() == 1, "the token stays unspent, nothing ran"
    assert [(r["event"], r["data"]["reason"]) for r in env.audit_records()] == [
        ("GatewayRefused", reason)]
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", reason), status
    _assert_never_leaked(env, token, capsys.readouterr().err)


@pytest.mark.parametrize(("patch", "reason"), [
    ({"phase": "Denied", "reason": "ApprovalRevoked"}, "GrantDenied"),
    ({"phase": "Failed", "reason": "TokenMissing"}, "GrantNotIssued"),
    ({"phase": "TokenIssued", "tokenSHA256": tokens.token_sha256("another token")},
     "BindingMismatch"),
])
def test_what_ends_the_wait_other_than_this_token_issued_refuses_before_the_burn(
    env: Env, monkeypatch: pytest.MonkeyPatch, patch: dict[str, Any], reason: str
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    operator, token = _pending(env, g, patch, monkeypatch)
    assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
    assert operator.pauses >= 1
    assert env.leases() == [] and env.replicas() == 1, "the token stays unspent, nothing ran"
    assert [(r["event"], r["data"]["reason"]) for r in env.audit_records()] == [
        ("GatewayRefused", reason)]
    status = env.grant(g.name)["status"]
    if patch["phase"] != "TokenIssued":
        assert (status["phase"], status["reason"]) == (patch["phase"], patch["reason"]), \
            "the operator's ending stays"


def _refused_while_the_gateway_waits(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    waits_for: Callable[[Grant], _OperatorWritesWhileTheGatewayWaits],
) -> list[dict[str, Any]]:
    """Runs the gateway of a Pending grant whose token expires in 60 s while ``waits_for``
    ends its approval at the gateway's first pause: the wait ends at once, refused, nothing
    spent, the grant left Pending for the operator, the token never shown. The audit records."""
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g, now=time.time() - 300 + 60)
    set_grant_status(env, g.name, {"phase": "Pending"})
    waits = waits_for(g)
    monkeypatch.setattr(gateway_run, "time", waits)
    started = time.monotonic()
    assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
    assert time.monotonic() - started < 30, "waited for the token's expiry"
    assert waits.burnt_before == [0] and env.leases() == [] and env.replicas() == 1
    assert env.grant(g.name)["status"]["phase"] == "Pending", "the operator's to end"
    _assert_never_leaked(env, token, capsys.readouterr().err)
    return env.audit_records()


class _ApprovalDeletedWhileTheGatewayWaits(_OperatorWritesWhileTheGatewayWaits):
    """At the gateway's first pause while the grant is Pending, the grant's ApprovalRequest is
    deleted (a human deleting the request, its grant left waiting)."""

    def sleep(self, seconds: float) -> None:
        self.pauses += 1
        if self.pauses == 1:
            self.burnt_before.append(len(self.env.leases()))
            self.env.cluster.kubectl("delete", "approvalrequests",
                                     self.g.approval["metadata"]["name"], "-n", self.env.ns,
                                     "--wait=true")


def test_an_approval_deleted_while_its_gateway_waits_refuses_at_once_and_spends_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """While the grant is Pending the gateway reads its approval again with it, each time: one
    deleted meanwhile ends the wait at once (``ApprovalRequestNotFound``), not when the token
    expires (here in 60 s), and nothing is spent."""
    records = _refused_while_the_gateway_waits(
        env, monkeypatch, capsys, lambda g: _ApprovalDeletedWhileTheGatewayWaits(env, g, {}))
    assert [(r["event"], r["data"]["reason"]) for r in records] == [
        ("GatewayRefused", "ApprovalRequestNotFound")]
    assert "was deleted while the gateway of its grant waited" in records[0]["data"]["message"]


class _ApprovalEndedWhileTheGatewayWaits(_OperatorWritesWhileTheGatewayWaits):
    """At the gateway's first pause while the grant is Pending, the grant's ApprovalRequest
    ends: an approver appends a Reject (a revocation; the operator's bookkeeping may lag), or
    the operator marks it Expired."""

    def __init__(self, env: Env, g: Grant, how: str) -> None:
        super().__init__(env, g, {})
        self.how = how

    def sleep(self, seconds: float) -> None:
        self.pauses += 1
        if self.pauses != 1:
            return
        self.burnt_before.append(len(self.env.leases()))
        name = self.g.approval["metadata"]["name"]
        if self.how == "revoked":
            self.env.cluster.kubectl("patch", "approvalrequests", name, "-n", self.env.ns,
                                     "--type=json", "-p", json.dumps([{
                                         "op": "add", "path": "/spec/decisions", "value": [{
                                             "verdict": "Reject", "by": "carol",
                                             "reason": "not during the sale"}]}]))
        else:
            _set_approval_status(self.env, name, [
                *_approved(),
                {"type": "Expired", "status": "True", "reason": "ApprovalExpired",
                 "message": "expired", "lastTransitionTime": _now_rfc3339()}], "Expired")


@pytest.mark.parametrize(("how", "reason"), [("revoked", "ApprovalRevoked"),
                                             ("expired", "ApprovalExpired")])
def test_an_approval_ended_while_its_gateway_waits_refuses_at_once_and_spends_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    how: str, reason: str
) -> None:
    """An approval revoked or expired while the grant is Pending ends the wait at once, with
    the reason the approval check after it gives, not when the operator denies the grant or
    the token expires (here in 60 s); nothing is spent."""
    records = _refused_while_the_gateway_waits(
        env, monkeypatch, capsys, lambda g: _ApprovalEndedWhileTheGatewayWaits(env, g, how))
    assert [(r["event"], r["data"]["reason"]) for r in records] == [("GatewayRefused", reason)]
    assert "nothing was executed" in records[0]["data"]["message"]


def test_a_gateway_whose_token_another_pod_ran_while_it_waited_is_a_replay(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pods with one token, the first started while the grant was Pending (the Secret landed
    before the status): the other one ran the token meanwhile (its burn marker, the grant
    Succeeded). The waiting one is a replay, counted and marked as one, not a grant that was
    never issued."""
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    operator, token = _pending(env, g, {"phase": "Succeeded", "reason": "CommandSucceeded"},
                               monkeypatch)
    marker = names.burn_marker_name(jwt.decode(token, options={"verify_signature": False})["jti"])
    env.cluster.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": marker, "namespace": env.ns, "labels": {
            "wingman.dev/role": "burn-marker", names.GRANT_LABEL: g.name}}}))
    assert run_gateway(settings_for(env, g, token)) == EXIT_REPLAY
    assert operator.pauses >= 1
    assert env.replicas() == 1, "nothing ran a second time"
    assert [(r["event"], r["data"]["reason"]) for r in env.audit_records()] == [
        ("GatewayReplayRejected", "ReplayRejected")]
    status = env.grant(g.name)["status"]
    assert status["phase"] == "Succeeded", "the first run's result stays"
    assert {c["type"]: c["status"] for c in status["conditions"]}["ReplayDetected"] == "True"


@pytest.mark.parametrize("behind", [0, 30], ids=["correct-clock", "clock-behind"])
def test_a_grant_still_pending_when_its_token_expires_is_refused_and_the_token_unspent(
    env: Env, capsys: pytest.CaptureFixture[str], behind: int
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g, now=time.time() - 300 + 3)  # expires in 3 s
    set_grant_status(env, g.name, {"phase": "Pending"})
    settings = dataclasses.replace(settings_for(env, g, token), leeway_seconds=0)
    started = time.monotonic()
    # a gateway whose clock is behind waits no longer: the token expires on the API server's
    assert run_gateway(settings, clock=lambda: time.time() - behind) == EXIT_REFUSED
    assert time.monotonic() - started < 15
    err = capsys.readouterr().err
    # a Pending grant's status is the operator's: its Job watcher reports the failure
    assert env.grant(g.name)["status"]["phase"] == "Pending"
    assert env.leases() == [] and env.replicas() == 1
    records = env.audit_records()
    assert [(r["event"], r["data"]["reason"]) for r in records] == [
        ("GatewayRefused", "GrantNotIssued")]
    assert "still Pending when its token expired" in records[0]["data"]["message"]
    lines = _json_lines(err)
    assert any(line["event"] == "GatewayWaiting" for line in lines)
    assert any(line.get("reason") == "GrantNotIssued" for line in lines)
    _assert_never_leaked(env, token, err)


def test_a_grant_created_again_under_the_name_while_its_gateway_waits_is_left_alone(
    env: Env
) -> None:
    """The token is for the grant deleted: the new one is not this gateway's to run, nor to
    write a refusal on."""
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g)
    set_grant_status(env, g.name, {"phase": "Pending"})
    spec = env.grant(g.name)["spec"]

    def again() -> None:
        env.cluster.kubectl("delete", "executiongrants", g.name, "-n", env.ns, "--wait=true")
        env.cluster.kubectl("create", "-f", "-", input=json.dumps({
            "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
            "metadata": {"name": g.name, "namespace": env.ns}, "spec": spec}))

    recreated = threading.Timer(0.5, again)
    recreated.start()
    try:
        assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
    finally:
        recreated.join()
    assert env.leases() == [] and env.replicas() == 1
    fresh = env.grant(g.name)
    assert fresh["metadata"]["uid"] != g.grant["metadata"]["uid"]
    assert "phase" not in (fresh.get("status") or {}), fresh.get("status")
    assert [r["event"] for r in env.audit_records()] == ["GatewayRefused"]
    assert env.audit_records()[0]["data"]["reason"] in ("ExecutionGrantNotFound",
                                                        "BindingMismatch")


@pytest.mark.parametrize("recorded", [tokens.token_sha256("another token"), None])
def test_a_token_issued_grant_not_recording_this_token_is_refused_before_the_burn(
    env: Env, capsys: pytest.CaptureFixture[str], recorded: str | None
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g, record=False)  # the status records another token, or none
    set_grant_status(env, g.name, {"tokenSHA256": recorded})
    _assert_refused(env, g, token, "BindingMismatch", capsys)
    assert "does not record the token this pod holds" in env.grant(g.name)["status"]["message"]


def _record_preview(env: Env, g: Grant) -> dict[str, Any]:
    """What the operator records from the request's preview: the Deployment as it is now."""
    live = env.kubectl_json("get", "deployment", "web", "-n", env.target)
    meta = live["metadata"]
    target = {"group": "apps", "version": "v1", "resource": "deployments",
              "kind": "Deployment", "namespace": env.target, "name": "web", "uid": meta["uid"],
              "resourceVersion": meta["resourceVersion"], "generation": meta["generation"],
              "exists": True, "action": "Update"}
    env.cluster.kubectl("patch", "approvalrequests", g.approval["metadata"]["name"], "-n",
                        env.ns, "--subresource=status", "--type=merge", "-p", json.dumps(
                            {"status": {"preview": {"phase": "Completed", "commands": [{
                                "command": g.command, "executor": "kubernetes",
                                "outcome": "Previewed", "targets": [target]}]}}}))
    return live


def test_a_target_changed_since_the_preview_is_refused_and_the_token_stays_unspent(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    seen = _record_preview(env, g)
    env.cluster.kubectl("scale", "deployment/web", "--replicas=4", "-n", env.target)  # by hand
    assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_REFUSED
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "TargetChanged")
    generation = seen["metadata"]["generation"]
    assert (f"deployments.apps {env.target}/web changed since the preview (generation:"
            f"{generation} then, generation:{generation + 1} now)") in status["message"]
    assert "submit a new request" in status["message"]
    assert env.leases() == [], "the token stays unspent"
    assert env.replicas() == 4, "nothing ran"
    records = env.audit_records()
    assert [(r["event"], r["data"]["reason"]) for r in records] == [
        ("GatewayRefused", "TargetChanged")]
    assert any(line.get("reason") == "TargetChanged"
               for line in _json_lines(capsys.readouterr().err))


def test_with_drift_allowed_a_changed_target_runs_and_the_drift_is_audited(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    _record_preview(env, g)
    env.cluster.kubectl("scale", "deployment/web", "--replicas=4", "-n", env.target)
    policy = yaml.safe_load(env.policy_file.read_text())
    env.policy_file.write_text(yaml.safe_dump({**policy, "targetDrift": "Allow"}))
    assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_OK
    assert env.grant(g.name)["status"]["phase"] == "Succeeded"
    assert env.replicas() == 2
    executing = next(r for r in env.audit_records() if r["event"] == "GatewayExecuting")
    assert "changed since the preview" in executing["data"]["targetDrift"][0]


def test_a_preview_record_without_the_command_is_refused_and_the_token_stays_unspent(
    env: Env
) -> None:
    # a Completed preview always has an entry for each command; one that lacks it (rewritten,
    # or recorded for other commands) cannot say what the approval covers: fail closed, even
    # where drift is allowed
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    _record_preview(env, g)
    env.cluster.kubectl("patch", "approvalrequests", g.approval["metadata"]["name"], "-n",
                        env.ns, "--subresource=status", "--type=json", "-p", json.dumps(
                            [{"op": "replace", "path": "/status/preview/commands/0/command",
                              "value": f"kubectl get deployments -n {env.target}"}]))
    policy = yaml.safe_load(env.policy_file.read_text())
    env.policy_file.write_text(yaml.safe_dump({**policy, "targetDrift": "Allow"}))
    assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_REFUSED
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "PreviewUnusable")
    assert "no entry for this command" in status["message"]
    assert env.leases() == [], "the token stays unspent"
    assert env.replicas() == 1, "nothing ran"
    assert [(r["event"], r["data"]["reason"]) for r in env.audit_records()] == [
        ("GatewayRefused", "PreviewUnusable")]


def test_an_unchanged_target_runs(env: Env) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=3 -n {env.target}")
    _record_preview(env, g)
    assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_OK
    assert env.replicas() == 3
    assert "targetDrift" not in next(r for r in env.audit_records()
                                     if r["event"] == "GatewayExecuting")["data"]


# ------------------------------------------------------------------------------ the Job deadline

SCALE = "kubectl scale deployment/web --replicas=2 -n {target}"


def _start_job(env: Env, g: Grant, seconds: int) -> dict[str, Any]:
    """The grant's Job released with ``activeDeadlineSeconds``: the real Job controller records
    its start (its pod never runs here: the test runs the gateway itself)."""
    name = names.job_name(g.name)
    env.cluster.kubectl("patch", "job", name, "-n", env.ns, "--type=merge", "-p", json.dumps(
        {"spec": {"suspend": False, "activeDeadlineSeconds": seconds}}))
    for _ in range(100):
        job = env.kubectl_json("get", "job", name, "-n", env.ns)
        if (job.get("status") or {}).get("startTime"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"the Job controller did not start Job {name}")


def test_a_command_its_jobs_deadline_could_stop_half_way_is_refused_before_the_burn(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    # the command may take 60 s (settings_for) and its result 15 s more: 70 s do not fit
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 70)
    _assert_refused(env, g, mint(env, g), "DeadlineTooClose", capsys)
    message = env.grant(g.name)["status"]["message"]
    assert names.job_name(g.name) in message and "60 s" in message and "not spent" in message


def test_a_command_that_fits_before_its_jobs_deadline_runs(env: Env) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_OK
    assert env.replicas() == 2


def test_a_job_the_gateway_cannot_read_refuses_before_the_burn(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    role = env.kubectl_json("get", "role", "wingman-gateway", "-n", env.ns)
    role["rules"] = [r for r in role["rules"] if r.get("resources") != ["jobs"]]
    env.cluster.kubectl("replace", "-f", "-", input=json.dumps(role))
    user = f"system:serviceaccount:{env.ns}:wingman-gateway"
    for _ in range(50):  # the authorizer sees Role changes through an informer
        if env.cluster.kubectl("auth", "can-i", "get", "jobs.batch", "-n", env.ns, "--as",
                               user, check=False).stdout.strip() == "no":
            break
        time.sleep(0.1)
    _assert_refused(env, g, mint(env, g), "DeadlineUnknown", capsys)
    assert "get on jobs" in env.grant(g.name)["status"]["message"]


@pytest.fixture
def proxy(env: Env) -> Iterator[FaultyApiProxy]:
    directory = env.tmp / "proxy"
    directory.mkdir()
    with FaultyApiProxy(env.cluster.server, env.cluster.ca_file, directory) as made:
        yield made


def _through(env: Env, proxy: FaultyApiProxy, g: Grant, token: str) -> GatewaySettings:
    """The gateway's settings for ``g`` with every call (its own, kubectl's) through ``proxy``:
    its API server address, and a ServiceAccount directory whose ca.crt trusts the proxy."""
    sa_dir = env.tmp / "serviceaccount-proxied"
    sa_dir.mkdir(exist_ok=True)
    shutil.copy(env.sa_dir / "token", sa_dir / "token")
    shutil.copy(proxy.ca_file, sa_dir / "ca.crt")
    return dataclasses.replace(settings_for(env, g, token), api_server=proxy.url,
                               serviceaccount_dir=sa_dir)


def _job_path(env: Env, g: Grant) -> str:
    return f"/apis/batch/v1/namespaces/{env.ns}/jobs/{names.job_name(g.name)}"


@pytest.mark.parametrize("status", [503, 429, 500])
def test_a_job_read_that_fails_for_a_moment_is_tried_again_and_the_command_runs(
        env: Env, proxy: FaultyApiProxy, status: int) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.fail("GET", _job_path(env, g), times=3, status=status)
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_OK
    assert env.replicas() == 2
    assert proxy.count("GET", _job_path(env, g)) == 4
    assert env.grant(g.name)["status"]["phase"] == "Succeeded"


def test_a_job_read_told_to_retry_after_a_second_waits_that_long_and_the_command_runs(
        env: Env, proxy: FaultyApiProxy, capsys: pytest.CaptureFixture[str]) -> None:
    """A 429 with ``Retry-After`` (API Priority and Fairness shedding load) is asked again no
    sooner than it says, within the read's budget."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.fail("GET", _job_path(env, g), times=1, status=429, retry_after=1)
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_OK
    assert proxy.count("GET", _job_path(env, g)) == 2
    retried = [line for line in _json_lines(capsys.readouterr().err)
               if line.get("event") == "JobReadRetried"]
    assert len(retried) == 1 and "trying again in 1.00 s" in retried[0]["message"], retried
    assert env.grant(g.name)["status"]["phase"] == "Succeeded"


def test_a_job_read_told_to_retry_after_the_budget_refuses_without_asking_sooner(
        env: Env, proxy: FaultyApiProxy) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.fail("GET", _job_path(env, g), times=1000, status=429, retry_after=30)
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_REFUSED
    assert proxy.count("GET", _job_path(env, g)) == 1, "not asked again before it said"
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineUnknown")
    assert "429" in status["message"] and "not spent" in status["message"]
    assert env.leases() == [] and env.replicas() == 1


def test_a_read_told_to_retry_after_the_budget_refuses_without_asking_sooner(
        env: Env, proxy: FaultyApiProxy) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    approval_path = APPROVALS.path(env.ns, g.approval["metadata"]["name"])
    proxy.fail("GET", approval_path, times=1000, status=429, retry_after=60)
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_REFUSED
    assert proxy.count("GET", approval_path) == 1, "not asked again before it said"
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ApiUnavailable"), status
    assert env.leases() == [] and env.replicas() == 1


def test_a_job_read_that_keeps_failing_refuses_within_a_few_seconds_before_the_burn(
        env: Env, proxy: FaultyApiProxy, capsys: pytest.CaptureFixture[str]) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.fail("GET", _job_path(env, g), times=1000, status=503)
    token = mint(env, g)
    started = time.monotonic()
    assert run_gateway(_through(env, proxy, g, token)) == EXIT_REFUSED
    assert proxy.count("GET", _job_path(env, g)) > 1, "a 503 is tried again"
    assert time.monotonic() - started < gateway_run.JOB_READ_RETRY_SECONDS + 5
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineUnknown")
    assert "503" in status["message"] and "not spent" in status["message"]
    assert env.leases() == [] and env.replicas() == 1
    assert _events(env) == ["GatewayRefused"]
    _assert_never_leaked(env, token, capsys.readouterr().err)


def _job_read_given_up_is_tried_again(env: Env, proxy: FaultyApiProxy,
                                      slow: Callable[[str], object]) -> None:
    """``slow(path)`` makes the proxy keep the first read of the Job's path from being
    answered in time: the gateway gives that read up, reads again within the budget, and the
    command runs."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    slow(_job_path(env, g))
    started = time.monotonic()
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_OK
    assert time.monotonic() - started < gateway_run.JOB_READ_RETRY_SECONDS + 5
    assert proxy.count("GET", _job_path(env, g)) == 2
    assert env.replicas() == 2
    assert env.grant(g.name)["status"]["phase"] == "Succeeded"


def test_a_job_read_held_up_is_given_up_and_tried_again_within_the_budget(
        env: Env, proxy: FaultyApiProxy) -> None:
    """An API server that takes the read and never answers is a failure that may pass: the
    read is given up after a couple of seconds and tried again, not after the client's own
    30 s (and the HTTP library's silent retries of it)."""
    _job_read_given_up_is_tried_again(
        env, proxy, lambda path: proxy.hold("GET", path, seconds=45, times=1))


def test_a_job_read_that_is_always_held_up_refuses_within_the_budget(
        env: Env, proxy: FaultyApiProxy, capsys: pytest.CaptureFixture[str]) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.hold("GET", _job_path(env, g), seconds=45, times=1000)
    started = time.monotonic()
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_REFUSED
    assert time.monotonic() - started < gateway_run.JOB_READ_RETRY_SECONDS + 5
    assert proxy.count("GET", _job_path(env, g)) > 1, "a read held up is tried again"
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineUnknown")
    assert "not spent" in status["message"]
    assert env.leases() == [] and env.replicas() == 1
    assert "JobReadRetried" in capsys.readouterr().err


@pytest.mark.parametrize("from_body", [False, True], ids=["head", "body"])
def test_a_trickled_answer_ends_within_the_calls_bound_and_is_no_answer(
        env: Env, proxy: FaultyApiProxy, from_body: bool) -> None:
    """A server that sends its answer a byte at a time, never waiting long enough for one
    socket read to time out, still has the gateway's calls end within their bound (the whole
    call: connecting, sending, every byte of the answer), as a failure with no answer."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    settings = _through(env, proxy, g, mint(env, g))
    kube = Kube.from_service_account(settings.api_server, settings.serviceaccount_dir)
    kube.call_seconds = gateway_run.API_CALL_SECONDS
    grant_path = GRANTS.path(env.ns, g.name)
    bounded: list[tuple[str, float, Callable[[], object]]] = [
        (grant_path, gateway_run.API_CALL_SECONDS, lambda: kube.get(GRANTS, env.ns, g.name)),
        (_job_path(env, g), gateway_run.JOB_READ_CALL_SECONDS,
         lambda: kube.get_dated(JOBS, env.ns, names.job_name(g.name),
                                once=gateway_run.JOB_READ_CALL_SECONDS))]
    for path, bound, call in bounded:
        proxy.trickle("GET", path, every=0.5, count=60, times=1, from_body=from_body)
        started = time.monotonic()
        with pytest.raises(ClusterError) as raised:
            call()
        assert time.monotonic() - started < bound + 1.0, path
        assert not isinstance(raised.value, ApiError) and transient(raised.value)
        assert raised.value.reason == "Unreachable" and "timed out" in raised.value.message
        assert call() is not None  # the next call, answered at once, goes through
    kube.close()


def test_a_job_read_trickled_is_given_up_and_tried_again_within_the_budget(
        env: Env, proxy: FaultyApiProxy) -> None:
    _job_read_given_up_is_tried_again(
        env, proxy, lambda path: proxy.trickle("GET", path, every=0.5, count=60, times=1))


def test_a_read_always_trickled_refuses_within_its_budget_and_spends_nothing(
        env: Env, proxy: FaultyApiProxy) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    approval_path = APPROVALS.path(env.ns, g.approval["metadata"]["name"])
    proxy.trickle("GET", approval_path, every=0.5, count=60, times=1000)
    started = time.monotonic()
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_REFUSED
    assert time.monotonic() - started < (gateway_run.API_RETRY_SECONDS
                                         + gateway_run.API_CALL_SECONDS + 5)
    assert proxy.count("GET", approval_path) > 1
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ApiUnavailable"), status
    assert env.leases() == [] and env.replicas() == 1


def _status_path(env: Env, g: Grant) -> str:
    return GRANTS.path(env.ns, g.name, "status")


def test_a_result_write_held_up_is_made_again_within_the_result_budget(
        env: Env, proxy: FaultyApiProxy, capsys: pytest.CaptureFixture[str]) -> None:
    """An API server that takes the write of the result and never answers: the write is given
    up after a few seconds and made again, the result recorded well within the time the
    deadline left for it, not after the client's own 30 s."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.hold("PATCH", _status_path(env, g), seconds=60, times=1, after=1)  # Running passes
    started = time.monotonic()
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_OK
    assert time.monotonic() - started < RESULT_SECONDS + 10
    assert proxy.count("PATCH", _status_path(env, g)) == 3
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["exitCode"]) == ("Succeeded", 0)
    assert env.replicas() == 2
    assert "StatusWriteRetried" in capsys.readouterr().err


def test_a_result_write_that_landed_with_its_answer_lost_is_recorded_once(
        env: Env, proxy: FaultyApiProxy) -> None:
    """The write of the result reached the API server, its answer did not: made again, it
    finds the result there and writes the same, and the run ends as one that was answered."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.lose("PATCH", _status_path(env, g), times=1, after=1)  # Running passes
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_OK
    assert proxy.count("PATCH", _status_path(env, g)) == 3
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["exitCode"], status["reason"]) == (
        "Succeeded", 0, "CommandSucceeded")
    records = env.audit_records()
    assert [r["event"] for r in records] == [
        "GatewayTokenBurned", "GatewayStarting", "GatewayExecuting", "GatewayExecuted"]
    assert status["auditRecordHash"] == f"sha256:{records[-1]['hash']}"
    assert status["outputSHA256"] == records[-1]["data"]["output_sha256"]
    assert env.replicas() == 2


def test_a_result_write_always_held_up_ends_in_the_budget_and_the_audit_says_what_is_known(
        env: Env, proxy: FaultyApiProxy) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.hold("PATCH", _status_path(env, g), seconds=60, times=1000, after=1)
    started = time.monotonic()
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == gateway_run.EXIT_INTERNAL
    assert time.monotonic() - started < RESULT_SECONDS + 10
    assert proxy.count("PATCH", _status_path(env, g)) > 2, "a write held up is made again"
    assert env.replicas() == 2
    assert env.grant(g.name)["status"]["phase"] == "Running"  # no write landed
    records = env.audit_records()
    assert [r["event"] for r in records] == [
        "GatewayTokenBurned", "GatewayStarting", "GatewayExecuting", "GatewayExecuted",
        "GatewayResultUnrecorded"]
    data = records[-1]["data"]
    assert (data["exit_code"], data["reason"]) == (0, "StatusUnavailable")
    assert data["output_sha256"] == records[-2]["data"]["output_sha256"]
    assert "may hold the result or may still say Running" in data["message"]


def test_a_result_no_time_was_left_to_write_says_no_write_was_made(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """No time left of the result's budget once the command ended (as when the audit record
    after it took it all): no write is made, and the record says so, not that a write got no
    answer."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    monkeypatch.setattr(gateway_run, "_left", lambda ended: 0.0)
    assert run_gateway(settings_for(env, g, mint(env, g))) == gateway_run.EXIT_INTERNAL
    assert env.replicas() == 2
    assert env.grant(g.name)["status"]["phase"] == "Running"
    records = env.audit_records()
    assert records[-1]["event"] == "GatewayResultUnrecorded"
    message = records[-1]["data"]["message"]
    assert "no write of the result was made" in message, message
    assert "got no answer" not in message and "may hold the result" not in message, message


def test_a_result_write_told_to_retry_after_two_seconds_waits_that_long_and_records_it(
        env: Env, proxy: FaultyApiProxy, capsys: pytest.CaptureFixture[str]) -> None:
    """A 429 with ``Retry-After`` (API Priority and Fairness shedding load) to the write of
    the result is made again no sooner than it says, within the result's budget."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.fail("PATCH", _status_path(env, g), times=1, status=429, retry_after=2,
               after=1)  # Running passes
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_OK
    assert proxy.count("PATCH", _status_path(env, g)) == 3
    retried = [line for line in _json_lines(capsys.readouterr().err)
               if line.get("event") == "StatusWriteRetried"]
    assert len(retried) == 1 and "trying again in 2.00 s" in retried[0]["message"], retried
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["exitCode"]) == ("Succeeded", 0)


def test_a_result_write_told_to_retry_after_the_budget_is_not_made_again_sooner(
        env: Env, proxy: FaultyApiProxy) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.fail("PATCH", _status_path(env, g), times=1000, status=429, retry_after=60,
               after=1)  # Running passes
    started = time.monotonic()
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == gateway_run.EXIT_INTERNAL
    assert time.monotonic() - started < RESULT_SECONDS + 10
    assert proxy.count("PATCH", _status_path(env, g)) == 2, "not asked again before it said"
    assert env.replicas() == 2
    assert env.grant(g.name)["status"]["phase"] == "Running"  # the result was not written
    records = env.audit_records()
    assert records[-1]["event"] == "GatewayResultUnrecorded"
    assert records[-1]["data"]["reason"] == "StatusUnavailable"
    assert "429" in records[-1]["data"]["message"]


def _assert_stopped_before_running(env: Env, proxy: FaultyApiProxy, g: Grant) -> None:
    """The gateway, stopped while its write of Running waited, refuses ``GatewayTerminating``
    without writing Running again: nothing ran, and the refusal's own write closed the grant."""
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_REFUSED
    assert proxy.count("PATCH", _status_path(env, g)) == 2  # Running once, the refusal once
    assert env.replicas() == 1
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "GatewayTerminating"), status
    assert "recorded phase Running" in status["message"]
    assert _events(env) == ["GatewayTokenBurned", "GatewayStarting", "GatewayRefused"]


def test_a_pod_stopped_while_the_running_write_waits_out_a_retry_after_runs_nothing(
        env: Env, proxy: FaultyApiProxy, monkeypatch: pytest.MonkeyPatch,
        sigterm_dropped: None) -> None:
    """A SIGTERM while the write of Running waits as a 429's ``Retry-After`` asks: the write
    is not made again (nothing would run after it), the gateway refuses
    ``GatewayTerminating``, and the refusal's own write still closes the grant."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.fail("PATCH", _status_path(env, g), times=1, status=429, retry_after=5)
    real = gateway_status.running_status

    def and_the_pod_is_stopped(*args: Any, **kwargs: Any) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(gateway_run, "running_status", and_the_pod_is_stopped)
    _assert_stopped_before_running(env, proxy, g)


def test_a_pod_stopped_during_the_running_write_s_retry_after_pause_writes_no_running(
        env: Env, proxy: FaultyApiProxy, monkeypatch: pytest.MonkeyPatch,
        sigterm_dropped: None) -> None:
    """A SIGTERM that comes while the write of Running waits out a 429's ``Retry-After`` (the
    failure already judged, the pause begun) ends the pause: the write is not made again, so
    the grant never says ``Running`` for a command that will not start; the gateway refuses
    ``GatewayTerminating`` and the refusal's own write closes the grant."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.fail("PATCH", _status_path(env, g), times=1, status=429, retry_after=8)
    real = gateway_run._Run.log

    def and_the_pod_is_stopped(self: Any, event: str, **fields: Any) -> None:
        real(self, event, **fields)
        if event == "StatusWriteRetried":  # the pause about to begin
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(gateway_run._Run, "log", and_the_pod_is_stopped)
    _assert_stopped_before_running(env, proxy, g)


def test_a_running_write_held_up_is_made_again_and_the_command_runs(
        env: Env, proxy: FaultyApiProxy, capsys: pytest.CaptureFixture[str]) -> None:
    """No answer to the write of Running (it had not landed): made again, it lands, and the
    command runs once."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.hold("PATCH", _status_path(env, g), seconds=60, times=1)
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_OK
    assert env.replicas() == 2
    assert env.grant(g.name)["status"]["phase"] == "Succeeded"
    assert _events(env) == [
        "GatewayTokenBurned", "GatewayStarting", "GatewayExecuting", "GatewayExecuted"]
    assert "StatusWriteRetried" in capsys.readouterr().err


def test_a_running_write_that_landed_with_its_answer_lost_is_known_as_its_own(
        env: Env, proxy: FaultyApiProxy) -> None:
    """The write of Running landed and its answer was lost: made again, it finds its own
    Running (this token, this start) and goes on, instead of refusing a grant it owns."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.lose("PATCH", _status_path(env, g), times=1)
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_OK
    assert proxy.count("PATCH", _status_path(env, g)) == 2  # Running once, the result once
    assert env.replicas() == 2
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["exitCode"]) == ("Succeeded", 0), status
    assert _events(env) == [
        "GatewayTokenBurned", "GatewayStarting", "GatewayExecuting", "GatewayExecuted"]


def test_a_running_write_always_held_up_refuses_and_runs_nothing(
        env: Env, proxy: FaultyApiProxy) -> None:
    """No answer to any write of Running: nothing runs, and the refusal closes the grant,
    within the budget."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.hold("PATCH", _status_path(env, g), seconds=60, times=3)
    started = time.monotonic()
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_REFUSED
    assert time.monotonic() - started < gateway_run.API_RETRY_SECONDS + RESULT_SECONDS
    assert env.replicas() == 1
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "StatusUnavailable"), status
    assert "was not executed" in status["message"]
    assert _events(env) == ["GatewayTokenBurned", "GatewayStarting", "GatewayRefused"]


def test_an_executor_token_request_held_up_refuses_before_the_burn(
        env: Env, proxy: FaultyApiProxy) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    settings = _through(env, proxy, g, mint(env, g))
    path = SERVICEACCOUNTS.path(env.ns, settings.executor_service_account, "token")
    proxy.hold("POST", path, seconds=60, times=1000)
    started = time.monotonic()
    assert run_gateway(settings) == EXIT_REFUSED
    assert time.monotonic() - started < gateway_run.API_CALL_SECONDS + RESULT_SECONDS
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ExecutorTokenUnavailable")
    assert "timed out" in status["message"] and "not spent" in status["message"]
    assert env.leases() == [] and env.replicas() == 1


class _ClockJumps:
    """Stands in for ``time`` in ``wingman.gateway.run``: its monotonic clock runs ahead of the
    real one by ``ahead()`` seconds (what the checks of a slow API server would have taken,
    without waiting that long)."""

    def __init__(self, ahead: Callable[[], float]) -> None:
        self.ahead = ahead
        self.time = time.time
        self.sleep = time.sleep

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead()


@pytest.mark.parametrize("when", ["before-the-burn", "every-request", "after-the-burn"])
def test_an_executor_token_that_cannot_outlive_the_command_from_its_start_is_not_used(
        env: Env, proxy: FaultyApiProxy, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """The executor's token is asked for to outlive the command's timeout (60 s here, so the
    API's minimum, 600 s); 550 s of checks after the request leave it too little for the
    command. Before the burn it is asked for again, and the command runs with a token that
    covers it; when the new one is no better (an API server giving shorter tokens), nothing is
    spent; after the burn, the command is not started on it."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 1200)  # the Job's deadline is not what refuses
    settings = _through(env, proxy, g, mint(env, g))
    token_path = SERVICEACCOUNTS.path(env.ns, settings.executor_service_account, "token")
    burn_path = f"/apis/coordination.k8s.io/v1/namespaces/{env.ns}/leases"
    jump = 550.0
    ahead = {
        "before-the-burn": lambda: jump if proxy.count("POST", token_path) else 0.0,
        "every-request": lambda: jump * proxy.count("POST", token_path),
        "after-the-burn": lambda: jump if proxy.count("POST", burn_path) else 0.0,
    }[when]
    monkeypatch.setattr(gateway_run, "time", _ClockJumps(ahead))
    code = run_gateway(settings)
    status = env.grant(g.name)["status"]
    if when == "before-the-burn":
        assert code == EXIT_OK, status
        assert proxy.count("POST", token_path) == 2, "the token was not asked for again"
        assert env.replicas() == 2 and status["phase"] == "Succeeded"
        return
    assert code == EXIT_REFUSED
    assert env.replicas() == 1, "the command started on a token expiring before its timeout"
    assert (status["phase"], status["reason"]) == ("Failed", "ExecutorTokenUnavailable"), status
    assert "expires in" in status["message"] and "up to 60 s" in status["message"]
    if when == "every-request":
        assert proxy.count("POST", token_path) == 2
        assert "token was not spent" in status["message"]
        assert env.leases() == [] and _events(env) == ["GatewayRefused"]
    else:
        assert "token was spent" in status["message"]
        assert len(env.leases()) == 1
        assert _events(env) == ["GatewayTokenBurned", "GatewayStarting", "GatewayRefused"]


def test_a_token_that_expires_while_the_executor_s_token_is_asked_for_again_is_not_spent(
        env: Env, proxy: FaultyApiProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """The executor's token asked for again before the burn (what it had left no longer covers
    the command) takes time like any check before the burn: the capability token, expired
    meanwhile (the second TokenRequest held 4.5 s here), is refused unspent, never burnt."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 1200)
    token = mint(env, g, now=time.time() - 300 + 3)  # expires in 3 s
    settings = dataclasses.replace(_through(env, proxy, g, token), leeway_seconds=0)
    token_path = SERVICEACCOUNTS.path(env.ns, settings.executor_service_account, "token")
    proxy.hold("POST", token_path, seconds=gateway_run.API_CALL_SECONDS - 0.5, after=1)
    monkeypatch.setattr(gateway_run, "time", _ClockJumps(
        lambda: 550.0 if proxy.count("POST", token_path) else 0.0))
    assert run_gateway(settings) == EXIT_REFUSED
    assert proxy.count("POST", token_path) == 2, "the executor's token was not asked again"
    assert env.leases() == [], "a token that had expired was spent"
    assert env.replicas() == 1
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "TokenExpired"), status


def test_reads_and_the_executor_token_request_that_blip_are_made_again_and_the_command_runs(
        env: Env, proxy: FaultyApiProxy, capsys: pytest.CaptureFixture[str]) -> None:
    """A rolling restart of the API server, or API Priority and Fairness shedding load, does
    not use up an approved command: a read of the grant, of its approval (before and after the
    burn) and the executor's TokenRequest that get no answer, a 429 or a 503 are made again."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    settings = _through(env, proxy, g, mint(env, g))
    grant_path = GRANTS.path(env.ns, g.name)
    approval_path = APPROVALS.path(env.ns, g.approval["metadata"]["name"])
    token_path = SERVICEACCOUNTS.path(env.ns, settings.executor_service_account, "token")
    proxy.drop("GET", grant_path, times=1)
    proxy.fail("GET", approval_path, times=2, status=429)
    proxy.fail("GET", approval_path, times=1, status=503, after=1)  # the read after the burn
    proxy.fail("POST", token_path, times=1, status=503)
    proxy.drop("POST", token_path, times=1)
    assert run_gateway(settings) == EXIT_OK
    assert env.replicas() == 2
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["exitCode"]) == ("Succeeded", 0), status
    assert proxy.count("GET", approval_path) == 5
    assert proxy.count("POST", token_path) == 3
    retried = [r for r in _json_lines(capsys.readouterr().err) if r.get("event") ==
               "ApiCallRetried"]
    assert len(retried) == 6, retried


def test_a_read_that_keeps_failing_refuses_within_its_budget_and_spends_nothing(
        env: Env, proxy: FaultyApiProxy) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    approval_path = APPROVALS.path(env.ns, g.approval["metadata"]["name"])
    proxy.fail("GET", approval_path, times=1000, status=503)
    started = time.monotonic()
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_REFUSED
    assert time.monotonic() - started < gateway_run.API_RETRY_SECONDS + RESULT_SECONDS
    assert proxy.count("GET", approval_path) > 2
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ApiUnavailable"), status
    assert env.leases() == [] and env.replicas() == 1


def test_a_read_refused_as_forbidden_is_not_made_again(
        env: Env, proxy: FaultyApiProxy) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    approval_path = APPROVALS.path(env.ns, g.approval["metadata"]["name"])
    proxy.fail("GET", approval_path, times=1, status=403)
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_REFUSED
    assert proxy.count("GET", approval_path) == 1
    assert env.grant(g.name)["status"]["reason"] == "ApiUnavailable"
    assert env.leases() == [] and env.replicas() == 1


def test_a_refusal_quoting_an_api_server_answer_longer_than_the_status_holds_is_recorded_cut(
        env: Env, proxy: FaultyApiProxy) -> None:
    """A read refused with a Status message longer than the grant's ``status.message`` holds
    (the CRD's maxLength, 32768 characters: an admission webhook's or a proxy's long answer,
    in characters of several bytes): the refusal the gateway writes quotes it cut to the field,
    so the write lands (the API server refused the whole status before: the grant kept saying
    TokenIssued)."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    approval_path = APPROVALS.path(env.ns, g.approval["metadata"]["name"])
    proxy.fail("GET", approval_path, times=1, status=403, message="é" * 40000)
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_REFUSED
    status = env.grant(g.name)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "ApiUnavailable"
    assert "éééé" in status["message"]
    assert len(status["message"]) <= conditions.STATUS_MESSAGE_CHARS
    assert status["message"].endswith(conditions.CUT_MARK)
    assert env.leases() == [] and env.replicas() == 1


def test_a_job_read_refused_as_forbidden_is_not_tried_again(
        env: Env, proxy: FaultyApiProxy) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    proxy.fail("GET", _job_path(env, g), times=1, status=403)
    assert run_gateway(_through(env, proxy, g, mint(env, g))) == EXIT_REFUSED
    assert proxy.count("GET", _job_path(env, g)) == 1
    assert env.grant(g.name)["status"]["reason"] == "DeadlineUnknown"
    assert env.leases() == [] and env.replicas() == 1


@pytest.mark.parametrize(("status", "says"), [
    (403, "the token was not spent"),
    (503, "may have been stored and the token spent"),
])
def test_a_burn_marker_not_created_says_whether_the_token_may_be_spent(
        env: Env, proxy: FaultyApiProxy, status: int, says: str) -> None:
    """A refusal stored nothing; a 5xx is no definite answer (the API server may have stored
    the Lease, then failed): the message must not promise an unspent token then. Neither
    names the burn marker or the token's jti, not even where the API server's answer quotes
    them (whoever reads the grant or the trail could create an unspent token's marker first):
    the jti's SHA-256 says which token it was."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    token = mint(env, g)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    marker = names.burn_marker_name(jti)
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{env.ns}/leases"
    proxy.fail("POST", leases, times=1, status=status,  # as the API server words a refusal
               message=f'leases.coordination.k8s.io "{marker}" is forbidden: refused')
    assert run_gateway(_through(env, proxy, g, token)) == EXIT_REFUSED
    assert proxy.count("POST", leases) == 1
    status_ = env.grant(g.name)["status"]
    assert status_["reason"] == "BurnFailed", status_
    assert says in status_["message"], status_["message"]
    assert tokens.jti_sha256(jti) in status_["message"], status_["message"]
    assert jti not in json.dumps(status_), status_["message"]
    assert jti not in env.audit_file.read_text()
    assert env.replicas() == 1


def test_a_gateway_whose_clock_is_behind_measures_the_deadline_on_the_api_servers(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    # 70 s do not fit a command of 60 s and 15 s for its result; the gateway's clock, 60 s
    # behind the control plane's, would see 130 s
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 70)
    token = mint(env, g, now=time.time() - 60)  # valid on the gateway's clock
    _assert_refused(env, g, token, "DeadlineTooClose", capsys,
                    clock=lambda: time.time() - 60)


BEHIND = 600
"""How far behind the API server's clock the gateway's runs in the tests below (10 min)."""


def _behind() -> float:
    return time.time() - BEHIND


def test_a_gateway_whose_clock_is_behind_refuses_a_token_expired_on_the_api_servers(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    # issued 650 s ago, expired 350 s ago: still valid on a clock 10 min behind
    g = make_grant(env, SCALE.format(target=env.target))
    token = mint(env, g, now=time.time() - BEHIND - 50)
    _assert_refused(env, g, token, "TokenExpired", capsys, clock=_behind)


def test_a_gateway_whose_clock_is_behind_refuses_an_approval_expired_on_the_api_servers(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    # the token is valid on both clocks; the approval expired a minute ago, 9 min after the
    # gateway's clock
    g = make_grant(env, SCALE.format(target=env.target))
    token = mint(env, g, now=time.time() - BEHIND - 50, ttl_seconds=1800)
    env.cluster.kubectl("patch", "approvalrequests", g.approval["metadata"]["name"], "-n",
                        env.ns, "--subresource=status", "--type=merge", "-p", json.dumps(
                            {"status": {"expirationTime": _now_rfc3339(-60)}}))
    _assert_refused(env, g, token, "ApprovalExpired", capsys, clock=_behind)


@pytest.mark.parametrize("behind", [0, BEHIND], ids=["correct-clock", "clock-behind"])
def test_a_token_and_approval_valid_on_the_api_servers_clock_run(env: Env, behind: int) -> None:
    # a fresh token: on a clock 10 min behind it looked issued in the future
    g = make_grant(env, SCALE.format(target=env.target))
    token = mint(env, g)
    assert run_gateway(settings_for(env, g, token), clock=lambda: time.time() - behind) == EXIT_OK
    assert env.replicas() == 2
    assert env.grant(g.name)["status"]["phase"] == "Succeeded"


def test_checks_after_the_burn_that_outlast_the_margin_end_the_grant_before_the_command(
        env: Env, proxy: FaultyApiProxy, capsys: pytest.CaptureFixture[str]) -> None:
    # the first look sees about 80 s left, enough for 75 s; the burn and the write of Running
    # then take 9 s (each answered within API_CALL_SECONDS, so neither is given up)
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 8)
    slow = gateway_run.API_CALL_SECONDS - 0.5
    proxy.hold("POST", f"/apis/coordination.k8s.io/v1/namespaces/{env.ns}/leases", seconds=slow)
    proxy.hold("PATCH", _status_path(env, g), seconds=slow)
    token = mint(env, g)
    assert run_gateway(_through(env, proxy, g, token)) == EXIT_REFUSED
    assert env.replicas() == 1, "the command ran though its Job's deadline could cut it"
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineTooClose")
    assert "token was spent" in status["message"]
    assert "exitCode" not in status and "output" not in status
    assert len(env.leases()) == 1, "the token was burnt before the second look"
    assert _events(env) == ["GatewayTokenBurned", "GatewayStarting", "GatewayRefused"]
    assert audit.verify(str(env.audit_file)).ok
    _assert_never_leaked(env, token, capsys.readouterr().err)


def test_a_token_that_expires_during_the_checks_before_the_burn_is_refused_unspent(
        env: Env, proxy: FaultyApiProxy, capsys: pytest.CaptureFixture[str]) -> None:
    # valid when verified (expired a second or two ago, within the 5 s leeway); the executor's
    # TokenRequest and the Job read then take 6 s (each answered within its call's bound, so
    # neither is given up): by the burn the token has expired, and it is not spent
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    token = mint(env, g, now=time.time() - 301)
    settings = _through(env, proxy, g, token)
    proxy.hold("POST", SERVICEACCOUNTS.path(env.ns, settings.executor_service_account,
                                            "token"), seconds=gateway_run.API_CALL_SECONDS - 0.5)
    proxy.hold("GET", _job_path(env, g), seconds=gateway_run.JOB_READ_CALL_SECONDS - 0.5)
    assert run_gateway(settings) == EXIT_REFUSED
    assert env.replicas() == 1, "the command ran on a token that had expired"
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "TokenExpired"), status
    assert "not spent" in status["message"] and "new request" in status["message"]
    assert env.leases() == [], "an expired token was spent"
    assert _events(env) == ["GatewayRefused"]
    _assert_never_leaked(env, token, capsys.readouterr().err)


def test_a_token_that_expires_after_its_burn_still_runs_its_command(
        env: Env, proxy: FaultyApiProxy) -> None:
    """The token's expiry bounds the burn, not the start: burnt while valid, its command runs
    though the approval read again and the write of Running (each held 4.5 s here, answered
    within its call's bound) take the start past the expiry; refusing then would use up the
    approved command and protect nothing (the burn marker already stops a second use)."""
    g = make_grant(env, SCALE.format(target=env.target))
    _start_job(env, g, 60 + RESULT_SECONDS + 30)
    token = mint(env, g, now=time.time() - 300 + 5)  # expires in 5 s
    settings = dataclasses.replace(_through(env, proxy, g, token), leeway_seconds=0)
    held = gateway_run.API_CALL_SECONDS - 0.5
    proxy.hold("GET", APPROVALS.path(env.ns, g.approval["metadata"]["name"]), seconds=held,
               after=1)  # the read after the burn
    proxy.hold("PATCH", _status_path(env, g), seconds=held)  # Running
    assert run_gateway(settings) == EXIT_OK
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    executing = [r for r in env.audit_records() if r["event"] == "GatewayExecuting"]
    started = dt.datetime.fromisoformat(executing[0]["time"].replace("Z", "+00:00"))
    assert started.timestamp() > expires, "the command started before the token's expiry"
    assert env.replicas() == 2 and len(env.leases()) == 1
    assert env.grant(g.name)["status"]["phase"] == "Succeeded"


def _operator_kube(env: Env) -> Kube:
    """A client with what ``cover_deadline`` needs of the operator's rights: patch Jobs and
    post Events in the release namespace."""
    docs = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "wingman-operator", "namespace": env.ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "deadline", "namespace": env.ns},
         "rules": [{"apiGroups": ["batch"], "resources": ["jobs"],
                    "verbs": ["get", "patch"]},
                   {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "deadline", "namespace": env.ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "deadline"},
         "subjects": [{"kind": "ServiceAccount", "name": "wingman-operator",
                       "namespace": env.ns}]},
    ]
    env.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    return Kube.from_token(env.cluster.server, env.cluster.sa_token(env.ns, "wingman-operator"),
                           env.cluster.ca_file)


def _refuse_job_updates(env: Env) -> str:
    """A real admission policy refusing every update of a Job in the namespace (as the
    release's own policies refuse one made before an upgrade that changed the pinned image)."""
    name = f"no-job-updates-{env.ns}"
    refuse_updates(env.cluster, env.ns, name, group="batch", resources=["jobs"])
    return name


def _cover_late_claim(env: Env, g: Grant, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The operator's ``cover_deadline`` for a token claimed now (expiring in 300 s), long
    after a Job whose deadline is 70 s: the Events it posted on the grant."""
    kube = _operator_kube(env)
    settings = OperatorSettings.from_env({"WINGMAN_GATEWAY_TIMEOUT_SECONDS": "60"})
    grant = env.grant(g.name)

    async def cover() -> list[dict[str, Any]]:
        events = Events(kube, "test")
        events.start()
        ctx = Context(settings, kube, cast(Any, None), cast(Any, None), cast(Any, None),
                      cast(Any, None), Metrics(), events=events)
        try:
            await cover_deadline(ctx, grant, job, int(time.time()) + 300)
            for _ in range(50):  # the poster writes in the background
                found = [e for e in env.kubectl_json("get", "events", "-n", env.ns)["items"]
                         if e["involvedObject"].get("name") == g.name]
                if found:
                    return found
                await asyncio.sleep(0.1)
            return []
        finally:
            await events.stop()

    try:
        return asyncio.run(cover())
    finally:
        kube.close()


def test_a_deadline_admission_did_not_extend_refuses_the_late_command_before_the_burn(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    job = _start_job(env, g, 70)
    policy = _refuse_job_updates(env)
    try:
        wait_refused(env.cluster, "annotate", "job", names.job_name(g.name), "-n", env.ns,
                     "--dry-run=server", "wingman.dev/probe=1")
        events = _cover_late_claim(env, g, job)
    finally:
        env.cluster.kubectl("delete", "validatingadmissionpolicybinding,"
                            "validatingadmissionpolicy", policy, check=False)
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "DeadlineNotExtended")]
    assert "could not be extended" in events[0]["message"]
    live = env.kubectl_json("get", "job", names.job_name(g.name), "-n", env.ns)
    assert live["spec"]["activeDeadlineSeconds"] == 70, "admission refused the extension"
    _assert_refused(env, g, mint(env, g), "DeadlineTooClose", capsys)


def test_a_deadline_extended_for_a_late_claim_lets_the_command_run(env: Env) -> None:
    g = make_grant(env, SCALE.format(target=env.target))
    job = _start_job(env, g, 70)
    assert _cover_late_claim(env, g, job) == []
    live = env.kubectl_json("get", "job", names.job_name(g.name), "-n", env.ns)
    assert live["spec"]["activeDeadlineSeconds"] > 70 + 300
    assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_OK
    assert env.replicas() == 2
