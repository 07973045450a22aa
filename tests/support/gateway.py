"""The gateway's world as the operator leaves it, for tests that run ``wingman gateway``.

Builds what the operator would have made: an approved ApprovalRequest (status set through the
status subresource), an ExecutionGrant, a Job (for a real Job UID; kept suspended on purpose: the
tests run the gateway themselves, not through the Job's pod), a capability token
signed by a fresh key whose public PEM sits in a ConfigMap-style keys directory, and the
gateway's settings with a real ServiceAccount token of ``wingman-gateway``, whose RBAC mirrors
the chart's gateway Role; its commands run as ``wingman-executor``, which holds the chart's
default target rules and nothing in the release namespace. Used by tests/integration/gateway/
and tests/container/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from wingman.capability import keys, tokens
from wingman.dev import tools as devtools
from wingman.dev.cluster import LocalCluster
from wingman.model import names
from wingman.settings import GatewaySettings

POD = "grant-gw-abcde"
EXECUTOR = "wingman-executor"


def _rbac(ns: str, target: str) -> str:
    """The chart's gateway Role (release namespace) and default target Role (bound to the
    executor account), as plain YAML."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "wingman-gateway", "namespace": ns},
         "automountServiceAccountToken": False},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": EXECUTOR, "namespace": ns},
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
             {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
             {"apiGroups": [""], "resources": ["serviceaccounts/token"],
              "resourceNames": [EXECUTOR], "verbs": ["create"]},
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
    for where, account in ((ns, "wingman-gateway"), (target, EXECUTOR)):
        docs.append({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "wingman-gateway", "namespace": where},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "wingman-gateway"},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
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


@contextmanager
def gateway_env(cluster: LocalCluster, namespace: str, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """The gateway's world in ``namespace``: its RBAC, a target namespace with Deployment
    ``web``, a real ServiceAccount token, a signing key and its public keys directory, an
    allowlist and an audit file; the target namespace is deleted afterwards."""
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
    secret: str = ""
    """The token Secret's name (``<job>-token-<16 hex digits>``)."""


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


def set_grant_status(env: Env, name: str, status: dict[str, Any]) -> None:
    """Merge ``status`` into the grant's status (the status subresource, as its writers do)."""
    env.cluster.kubectl("patch", "executiongrants", name, "-n", env.ns, "--subresource=status",
                        "--type=merge", "-p", json.dumps({"status": status}))


def make_grant(env: Env, command: str, *, approved: list[str] | None = None,
               holder: tuple[str, str] | None = None, on_claim: bool = False) -> Grant:
    """An approved request and a TokenIssued grant for ``command``, as the operator leaves them
    for a grant whose token it records in the grant's status (a name over 54 characters, or an
    earlier release); ``holder`` (name, uid) records another grant as the command's holder
    instead. ``on_claim``: the grant stays ``Pending`` and the approval records no claim yet:
    :func:`issue_on_claim` writes the claim with the token, as the operator issues a token."""
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
    # what the operator writes with the token Secret: the approval records the grant as its
    # command's holder (before the token exists), and the grant is TokenIssued
    if not on_claim:
        _record_grant(env, ar_name, command,
                      *(holder or (eg_name, env.grant(eg_name)["metadata"]["uid"])))
    # the token Secret the operator stores (the executor's token is bound to it); the gateway
    # reads its capability token from its own file here, so the Secret holds none
    secret = names.token_secret_name(names.job_name(eg_name), uuid.uuid4().hex[:16])
    env.cluster.kubectl("create", "secret", "generic", secret, "-n", env.ns)
    set_grant_status(env, eg_name, {"phase": "Pending"} if on_claim else
                     {"phase": "TokenIssued", "tokenSecretName": secret})
    job_uid = _suspended_job(env, eg_name)
    return Grant(eg_name, env.kubectl_json("get", "approvalrequests", ar_name, "-n", env.ns),
                 env.grant(eg_name), job_uid, command, secret)


def _suspended_job(env: Env, eg_name: str) -> str:
    """The grant's gateway Job as the operator names it, suspended (the test runs the gateway
    in-process): its uid."""
    env.cluster.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": names.job_name(eg_name), "namespace": env.ns},
        "spec": {"suspend": True, "backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "gateway", "image": "ghcr.io/wingman-dev/wingman:0.1.0",
                            "command": ["/usr/bin/tini", "--", "wingman", "gateway"]}]}}},
    }))
    return str(env.kubectl_json("get", "job", names.job_name(eg_name), "-n", env.ns)
               ["metadata"]["uid"])


def make_rollback_grant(env: Env, command: str, rollback: str) -> tuple[Grant, str]:
    """A request for ``command`` naming ``rollback`` as its reviewed rollback, its forward
    grant, which ran ``command`` (Succeeded, claimed), and a ``Pending`` rollback grant of it,
    with its Job and Secret, as ``make_grant(..., on_claim=True)`` leaves a grant: issue its
    token with ``issue_on_claim(..., rollback_of=command)``. Returns (the rollback grant, the
    forward grant's name)."""
    suffix = uuid.uuid4().hex[:6]
    ar_name, fwd_name, eg_name = f"req-{suffix}", f"grant-{suffix}", f"grant-{suffix}-undo"
    env.cluster.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
        "metadata": {"name": ar_name, "namespace": env.ns},
        "spec": {"requester": "alice", "environment": "test",
                 "instruction": "scale web for the sale", "commands": [command],
                 "rollbacks": [{"command": command, "rollback": rollback}]},
    }))
    _set_approval_status(env, ar_name, _approved(), "Approved")
    for name, spec in ((fwd_name, {"command": command}),
                       (eg_name, {"command": rollback, "rollbackOf": {"name": fwd_name}})):
        env.cluster.kubectl("create", "-f", "-", input=json.dumps({
            "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
            "metadata": {"name": name, "namespace": env.ns},
            "spec": {"approvalRef": {"name": ar_name}, **spec}}))
    # the forward grant's claim, and its gateway's result: the command ran
    _record_grant(env, ar_name, command, fwd_name, env.grant(fwd_name)["metadata"]["uid"])
    set_grant_status(env, fwd_name, {"phase": "Succeeded", "reason": "CommandSucceeded",
                                     "exitCode": 0, "startTime": _now_rfc3339(),
                                     "completionTime": _now_rfc3339()})
    secret = names.token_secret_name(names.job_name(eg_name), uuid.uuid4().hex[:16])
    env.cluster.kubectl("create", "secret", "generic", secret, "-n", env.ns)
    set_grant_status(env, eg_name, {"phase": "Pending"})
    job_uid = _suspended_job(env, eg_name)
    return Grant(eg_name, env.kubectl_json("get", "approvalrequests", ar_name, "-n", env.ns),
                 env.grant(eg_name), job_uid, rollback, secret), fwd_name


def issue_on_claim(env: Env, g: Grant, token: str, *, sha256: str | None = None,
                   rollback_of: str | None = None) -> None:
    """Issue ``token`` on ``g``'s claim, as the operator does: one write of the approval's
    ``status.grants`` adds the entry that claims the command for the grant with the token's
    fields (``sha256``: another hash instead; the entries are append-only; ``rollback_of``:
    the command a rollback grant undoes), and nothing is written to the grant (made
    ``make_grant(..., on_claim=True)`` or ``make_rollback_grant``)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    name = g.approval["metadata"]["name"]
    approval = env.kubectl_json("get", "approvalrequests", name, "-n", env.ns)
    entries = list((approval.get("status") or {}).get("grants") or [])
    entries.append({
        "command": g.command, "grant": g.name, "grantUID": g.grant["metadata"]["uid"],
        "grantedAt": _now_rfc3339(), "tokenSHA256": sha256 or tokens.token_sha256(token),
        "tokenExpirationTime": dt.datetime.fromtimestamp(
            claims["exp"], dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "jobName": names.job_name(g.name), "tokenSecretName": g.secret,
        **({"rollbackOf": rollback_of} if rollback_of is not None else {})})
    env.cluster.kubectl("patch", "approvalrequests", name, "-n", env.ns,
                        "--subresource=status", "--type=merge", "-p",
                        json.dumps({"status": {"grants": entries}}))


def mint(env: Env, g: Grant, *, audience: str = "test", now: float | None = None,
         job_uid: str | None = None, record: bool = True, ttl_seconds: int = 300) -> str:
    """The operator's token for ``g``, its SHA-256 recorded in the grant's status as the
    operator records it (``status.tokenSHA256``, which the gateway checks; unless not
    ``record``: the CRD lets a recorded hash neither change nor go)."""
    token, _claims = tokens.mint(
        env.key, issuer="wingman-operator", audience=audience, subject="alice",
        namespace=env.ns, approval_name=g.approval["metadata"]["name"],
        approval_uid=g.approval["metadata"]["uid"], grant_name=g.name,
        grant_uid=g.grant["metadata"]["uid"], command=g.command,
        job_uid=job_uid or g.job_uid, ttl_seconds=ttl_seconds,
        now=time.time() if now is None else now)
    if record:
        set_grant_status(env, g.name, {"tokenSHA256": tokens.token_sha256(token)})
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
        "WINGMAN_GRANT_UID": str(g.grant["metadata"]["uid"]),
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
