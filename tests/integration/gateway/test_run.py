"""The execution gateway against the real API server, as the real ``wingman-gateway`` identity.

Each test builds what the operator would have made: an approved ApprovalRequest (status set
through the status subresource), an ExecutionGrant, a suspended Job (for a real Job UID), a
capability token signed by a fresh key whose public PEM sits in a ConfigMap-style keys
directory. The gateway then runs in-process with a real ServiceAccount token of
``wingman-gateway``, whose RBAC mirrors the chart's gateway Roles, and executes the real
``kubectl`` against a Deployment in a target namespace.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from wingman import audit
from wingman.capability import keys, tokens
from wingman.dev import tools as devtools
from wingman.dev.cluster import LocalCluster
from wingman.gateway.run import EXIT_OK, EXIT_REFUSED, EXIT_REPLAY, run_gateway
from wingman.model import names
from wingman.settings import GatewaySettings

POD = "grant-gw-abcde"


def _rbac(ns: str, target: str) -> str:
    """The chart's gateway Role (release namespace) and default target Role, as plain YAML."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "wingman-gateway", "namespace": ns},
         "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "wingman-gateway", "namespace": ns},
         "rules": [
             {"apiGroups": ["wingman.dev"], "resources": ["approvalrequests", "executiongrants"],
              "verbs": ["get"]},
             {"apiGroups": ["wingman.dev"], "resources": ["executiongrants/status"],
              "verbs": ["get", "patch", "update"]},
             {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
              "verbs": ["create", "get"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "wingman-gateway", "namespace": target},
         "rules": [
             {"apiGroups": ["apps"], "resources": ["deployments"],
              "verbs": ["get", "list", "patch"]},
             {"apiGroups": ["apps"], "resources": ["deployments/scale"],
              "verbs": ["get", "patch", "update"]},
             {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list"]},
         ]},
    ]
    for where in (ns, target):
        docs.append({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "wingman-gateway", "namespace": where},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "wingman-gateway"},
            "subjects": [{"kind": "ServiceAccount", "name": "wingman-gateway", "namespace": ns}],
        })
    return yaml.safe_dump_all(docs)


def _deployment(target: str) -> dict[str, Any]:
    labels = {"app": "web"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": target},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "web", "image": "registry.k8s.io/pause:3.9"}]}}}}


@dataclass
class Env:
    cluster: LocalCluster
    ns: str
    target: str
    tmp: Path
    key: keys.SigningKey
    keys_dir: Path
    sa_dir: Path
    policy_file: Path
    audit_file: Path

    def kubectl_json(self, *args: str) -> dict[str, Any]:
        out = self.cluster.kubectl(*args, "-o", "json").stdout
        data = json.loads(out)
        assert isinstance(data, dict)
        return data

    def grant(self, name: str) -> dict[str, Any]:
        return self.kubectl_json("get", "executiongrants", name, "-n", self.ns)

    def replicas(self) -> int:
        dep = self.kubectl_json("get", "deployment", "web", "-n", self.target)
        return int(dep["spec"]["replicas"])

    def leases(self) -> list[dict[str, Any]]:
        items = self.kubectl_json("get", "leases", "-n", self.ns,
                                  "-l", "wingman.dev/role=burn-marker")["items"]
        return list(items)

    def audit_records(self) -> list[dict[str, Any]]:
        if not self.audit_file.exists():
            return []
        return [json.loads(line) for line in self.audit_file.read_text().splitlines()]


@pytest.fixture
def env(cluster: LocalCluster, crds: object, namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    target = f"{namespace}-apps"
    cluster.kubectl("create", "namespace", target)
    try:
        cluster.kubectl("apply", "-f", "-", input=_rbac(namespace, target))
        cluster.kubectl("apply", "-f", "-", input=json.dumps(_deployment(target)))
        sa_dir = tmp_path / "serviceaccount"
        sa_dir.mkdir()
        (sa_dir / "token").write_text(cluster.sa_token(namespace, "wingman-gateway"))
        shutil.copy(cluster.ca_file, sa_dir / "ca.crt")
        key = keys.generate_signing_key()
        keys_dir = tmp_path / "keys"
        # What a ConfigMap volume looks like: ..data / timestamped dir, symlinked keys.
        data_dir = keys_dir / "..2024_01_01_00_00_00.000000001"
        data_dir.mkdir(parents=True)
        (data_dir / f"{key.kid}.pem").write_bytes(key.public_pem())
        (keys_dir / "..data").symlink_to(data_dir.name)
        (keys_dir / f"{key.kid}.pem").symlink_to(f"..data/{key.kid}.pem")
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(yaml.safe_dump({"environment": "test", "allowlist": [
            "kubectl scale deployment/{name} --replicas={int:0..10} -n " + target,
            "kubectl rollout restart deployment/{name} -n " + target,
        ]}))
        kubectl_dir = devtools.tool_path("kubectl").parent
        monkeypatch.setenv("PATH", f"{kubectl_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        (tmp_path / "audit").mkdir()
        yield Env(cluster, namespace, target, tmp_path, key, keys_dir, sa_dir, policy_file,
                  tmp_path / "audit" / "audit.jsonl")
    finally:
        cluster.kubectl("delete", "namespace", target, "--wait=false", check=False)


@dataclass
class Grant:
    name: str
    approval: dict[str, Any]
    grant: dict[str, Any]
    job_uid: str
    command: str


def _now_rfc3339(offset: float = 0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _set_approval_status(env: Env, name: str, conditions: list[dict[str, Any]],
                         phase: str) -> None:
    env.cluster.kubectl("patch", "approvalrequests", name, "-n", env.ns, "--subresource=status",
                        "--type=merge", "-p", json.dumps({"status": {
                            "phase": phase, "expirationTime": _now_rfc3339(3600),
                            "conditions": conditions}}))


def _record_grant(env: Env, approval: str, command: str, grant: str, uid: str) -> None:
    env.cluster.kubectl("patch", "approvalrequests", approval, "-n", env.ns,
                        "--subresource=status", "--type=merge", "-p", json.dumps({"status": {
                            "grants": [{"command": command, "grant": grant, "grantUID": uid,
                                        "grantedAt": _now_rfc3339()}]}}))


def _approved() -> list[dict[str, Any]]:
    return [{"type": "Approved", "status": "True", "reason": "HumanApproved",
             "message": "approved by bob", "lastTransitionTime": _now_rfc3339()}]


def make_grant(env: Env, command: str, *, approved: list[str] | None = None,
               holder: tuple[str, str] | None = None) -> Grant:
    """An approved request and a TokenIssued grant for ``command``, as the operator leaves them;
    ``holder`` (name, uid) records another grant as the command's holder instead."""
    suffix = uuid.uuid4().hex[:6]
    ar_name, eg_name = f"req-{suffix}", f"grant-{suffix}"
    env.cluster.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
        "metadata": {"name": ar_name, "namespace": env.ns},
        "spec": {"requester": "alice", "environment": "test",
                 "instruction": "scale web for the sale", "commands": approved or [command]},
    }))
    _set_approval_status(env, ar_name, _approved(), "Approved")
    env.cluster.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
        "metadata": {"name": eg_name, "namespace": env.ns},
        "spec": {"approvalRef": {"name": ar_name}, "command": command},
    }))
    # what the operator writes before it releases the gateway Job: the approval records the
    # grant as its command's holder, and the grant is TokenIssued
    _record_grant(env, ar_name, command,
                  *(holder or (eg_name, env.grant(eg_name)["metadata"]["uid"])))
    env.cluster.kubectl("patch", "executiongrants", eg_name, "-n", env.ns,
                        "--subresource=status", "--type=merge", "-p",
                        json.dumps({"status": {"phase": "TokenIssued"}}))
    env.cluster.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": names.job_name(eg_name), "namespace": env.ns},
        "spec": {"suspend": True, "backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "gateway", "image": "ghcr.io/wingman-dev/wingman:0.1.0",
                            "command": ["wingman", "gateway"]}]}}},
    }))
    job = env.kubectl_json("get", "job", names.job_name(eg_name), "-n", env.ns)
    return Grant(eg_name, env.kubectl_json("get", "approvalrequests", ar_name, "-n", env.ns),
                 env.grant(eg_name), job["metadata"]["uid"], command)


def mint(env: Env, g: Grant, *, audience: str = "test", now: float | None = None,
         job_uid: str | None = None) -> str:
    token, _claims = tokens.mint(
        env.key, issuer="wingman-operator", audience=audience, subject="alice",
        namespace=env.ns, approval_name=g.approval["metadata"]["name"],
        approval_uid=g.approval["metadata"]["uid"], grant_name=g.name,
        grant_uid=g.grant["metadata"]["uid"], command=g.command,
        job_uid=job_uid or g.job_uid, ttl_seconds=300,
        now=time.time() if now is None else now)
    return token


def settings_for(env: Env, g: Grant, token: str | None) -> GatewaySettings:
    token_file = env.tmp / f"token-{g.name}" / "token"
    if token is not None:
        token_file.parent.mkdir(exist_ok=True)
        token_file.write_text(token)
    host, port = env.cluster.server.removeprefix("https://").rsplit(":", 1)
    return GatewaySettings.from_env({
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "WINGMAN_NAMESPACE": env.ns,
        "WINGMAN_ENVIRONMENT": "test",
        "WINGMAN_GRANT_NAME": g.name,
        "WINGMAN_JOB_UID": g.job_uid,
        "WINGMAN_POD_NAME": POD,
        "WINGMAN_TOKEN_FILE": str(token_file),
        "WINGMAN_PUBLIC_KEYS_DIR": str(env.keys_dir),
        "WINGMAN_SERVICEACCOUNT_DIR": str(env.sa_dir),
        "WINGMAN_POLICY_FILE": str(env.policy_file),
        "WINGMAN_AUDIT_TARGET": str(env.audit_file),
        "WINGMAN_LOG_FORMAT": "json",
        "WINGMAN_EXEC_TIMEOUT_SECONDS": "60",
    })


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
        "GatewayTokenBurned", "GatewayExecuting", "GatewayExecuted"]
    assert status["auditRecordHash"] == f"sha256:{records[-1]['hash']}"
    assert all(r["actor"] == f"gateway/{POD}" for r in records)
    assert records[0]["subject"] == {"kind": "ExecutionGrant", "namespace": env.ns,
                                     "name": g.name, "uid": g.grant["metadata"]["uid"]}
    assert records[2]["data"]["exit_code"] == 0
    assert records[2]["data"]["output_sha256"] == status["outputSHA256"]
    assert all(r["data"]["token_sha256"] == tokens.token_sha256(token) for r in records)

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
    assert _events(env) == ["GatewayTokenBurned", "GatewayExecuting", "GatewayExecuted",
                            "GatewayReplayRejected"]
    assert any(line["event"] == "GatewayReplayRejected" for line in _json_lines(err))

    report = audit.verify(str(env.audit_file))
    assert report.ok, report.summary()
    _assert_never_leaked(env, token, err)


# ------------------------------------------------------------------------------ refusals


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] += 3000  # a longer life, keeping the original signature
    forged = base64.urlsafe_b64encode(
        json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _assert_refused(env: Env, g: Grant, token: str | None, reason: str,
                    capsys: pytest.CaptureFixture[str]) -> None:
    assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
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


def test_command_outside_the_allowlist_is_refused(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_grant(env, f"kubectl delete deployment/web -n {env.target}")
    _assert_refused(env, g, mint(env, g), "ScopeViolation", capsys)
    assert "NotInAllowlist" in json.dumps(env.audit_records()[0]["data"])


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
