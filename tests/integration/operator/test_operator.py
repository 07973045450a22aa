"""The operator, running for real as the chart's ServiceAccount, on the real API server.

Requests and grants are created with kubectl as the chart's worker and approver identities;
the operator reviews, decides, authorizes, mints and launches; the tests read what it wrote.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from support.chart import (
    APPROVER,
    WORKER,
    approval_request,
    approver_groups,
    installed,
    kubectl_as_sa,
    worker_groups,
)
from support.operator import OperatorProcess, get, phase_of, wait_for
from support.ports import listening_addresses, listening_ports, refused_port
from wingman.audit import verify
from wingman.capability.keys import KeySet
from wingman.capability.tokens import CapabilityClaims, Expected, jti_sha256, token_sha256
from wingman.capability.tokens import verify as verify_token
from wingman.model import grants as grant_rules
from wingman.model import names
from wingman.operator import manifests, memory
from wingman.operator.handlers.grants import STEPS

RESTART = "kubectl rollout restart deployment/frontend -n apps"
SCALE = "kubectl scale deployment/checkout --replicas=3 -n apps"


class Env:
    """A chart installed in a fresh namespace, with the operator running against it."""

    def __init__(self, cluster: Any, ns: str, op: OperatorProcess) -> None:
        self.cluster, self.ns, self.op = cluster, ns, op

    def as_worker(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cluster.kubectl(*args, "-n", self.ns, input=input, check=check,
                                    user=WORKER, groups=worker_groups("test"))

    def as_approver(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cluster.kubectl(*args, "-n", self.ns, input=input, check=check,
                                    user=APPROVER, groups=approver_groups("test"))

    def request(self, name: str, commands: tuple[str, ...] = (RESTART,), **spec: Any) -> None:
        body = approval_request(name, requester=WORKER, environment="test",
                                commands=commands, **spec)
        self.as_worker("apply", "-f", "-", input=json.dumps(body))

    def grant(self, name: str, approval: str, command: str, **spec: Any) -> None:
        body = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
                "metadata": {"name": name},
                "spec": {"approvalRef": {"name": approval}, "command": command, **spec}}
        self.as_approver("apply", "-f", "-", input=json.dumps(body))

    def approve(self, name: str, reason: str = "looks right") -> None:
        patch: list[dict[str, Any]] = [{"op": "add", "path": "/spec/decisions/-", "value": {
            "verdict": "Approve", "by": APPROVER, "reason": reason}}]
        obj = get(self.cluster, "ar", self.ns, name)
        assert obj is not None
        if not obj["spec"].get("decisions"):
            patch = [{"op": "add", "path": "/spec/decisions", "value": [patch[0]["value"]]}]
        self.as_approver("patch", "ar", name, "--type=json", "-p", json.dumps(patch))

    def reject(self, name: str) -> None:
        obj = get(self.cluster, "ar", self.ns, name)
        assert obj is not None
        entry = {"verdict": "Reject", "by": APPROVER, "reason": "not now"}
        patch = ([{"op": "add", "path": "/spec/decisions/-", "value": entry}]
                 if obj["spec"].get("decisions")
                 else [{"op": "add", "path": "/spec/decisions", "value": [entry]}])
        self.as_approver("patch", "ar", name, "--type=json", "-p", json.dumps(patch))

    def view(self, grant: str) -> dict[str, Any] | None:
        """The grant as the operator and the gateway judge it (``grants.view``): a grant whose
        claim on its request records its token is TokenIssued (its stored phase Pending)."""
        eg = get(self.cluster, "eg", self.ns, grant)
        if eg is None:
            return None
        ar = get(self.cluster, "ar", self.ns, eg["spec"]["approvalRef"]["name"])
        return dict(grant_rules.view(eg, ar))

    def grant_phase(self, grant: str) -> str | None:
        """The phase of the grant's view (None: no such grant)."""
        eg = self.view(grant)
        return None if eg is None else grant_rules.phase(eg)

    def wait_phase(self, kind: str, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
        """The object once its phase is one of ``phases``; for a grant, its view (``view``)."""
        def probe() -> dict[str, Any] | None:
            obj = self.view(name) if kind == "eg" else get(self.cluster, kind, self.ns, name)
            phase = (obj or {}).get("status", {}).get("phase")
            if phase == "TokenIssued" and kind == "eg" and self.secret(name) is None:
                return None  # written at the same time as the token Secret: wait for both
            return obj if obj and phase in phases else None
        result: dict[str, Any] = wait_for(f"{kind}/{name} in {phases}", probe, timeout,
                                          on_timeout=self.op.log_tail)
        return result

    def _secret_name(self, grant: str) -> str | None:
        job = self.job(grant)
        name = manifests.job_token_secret(job) if job is not None else None
        recorded = ((self.view(grant) or {}).get("status") or {}).get("tokenSecretName")
        return name or (str(recorded) if recorded else None)

    def secret_name(self, grant: str) -> str:
        """The token Secret the grant's Job mounts (else the one its status records)."""
        name = self._secret_name(grant)
        assert name, f"grant {grant} has neither a Job nor a recorded token Secret"
        return name

    def secret(self, grant: str) -> dict[str, Any] | None:
        name = self._secret_name(grant)
        return get(self.cluster, "secret", self.ns, name) if name else None

    def job(self, grant: str) -> dict[str, Any] | None:
        return get(self.cluster, "job", self.ns, names.job_name(grant))

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.cluster.kubectl("get", "events", "-n", self.ns, "-o", "json",
                                   "--field-selector", f"involvedObject.name={name}").stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items


@contextmanager
def operator_env(cluster: Any, tmp_path: Path, prefix: str, **extra_env: str) -> Iterator[Env]:
    """The chart installed in a new namespace (``PREFIX-<8 hex>``, its target namespace
    ``<namespace>-apps``) with no operator replica, and the operator run as a process for it
    (files under ``tmp_path/operator``; ``extra_env`` on top of its environment), stopped
    when the block ends."""
    ns = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with installed(cluster, "test", namespace=ns, target_namespace=f"{ns}-apps",
                   values={"operator.replicas": 0}):
        op = OperatorProcess(cluster, ns, tmp_path / "operator", extra_env=extra_env)
        op.start()
        try:
            yield Env(cluster, ns, op)
        finally:
            op.stop()


@pytest.fixture
def env(cluster: Any, crds: Path, tmp_path: Path) -> Iterator[Env]:
    with operator_env(cluster, tmp_path, "wm-op") as made:
        yield made


def test_low_risk_request_is_auto_approved_with_every_vote_recorded(env: Env) -> None:
    env.request("restart-frontend")
    ar = env.wait_phase("ar", "restart-frontend", "AutoApproved")
    status = ar["status"]
    votes = status["consensus"]["votes"]
    assert {v["voter"] for v in votes} == {"destructive", "blast-radius", "allowlist",
                                          "prompt-injection"}
    assert all(v["verdict"] == "approve" for v in votes)
    assert status["consensus"]["outcome"] == "Approve"
    assert status["consensus"]["risk"] in ("low", "medium")
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Reviewed"]["status"] == "True"
    assert conds["Approved"]["status"] == "True" and conds["Approved"]["reason"] == "AutoApproved"
    assert all(c["observedGeneration"] == ar["metadata"]["generation"] for c in conds.values())
    assert status["expirationTime"]
    assert status["auditHead"].startswith("sha256:")
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "AutoApproved"
    events = env.events("restart-frontend")
    assert "AutoApproved" in {e["reason"] for e in events}
    # reported by the operator, under its own name, not the framework's
    assert {(e["reportingComponent"], e["source"]["component"]) for e in events} == {
        ("wingman-operator", "wingman-operator")}
    mine = env.cluster.kubectl("get", "events", "-n", env.ns, "-o", "name", "--field-selector",
                               "reportingComponent=wingman-operator").stdout.split()
    assert len(mine) >= len(events)
    assert [r["event"] for r in env.op.audit_events()].count("ApprovalReviewed") == 1
    assert verify(str(env.op.audit_path)).ok
    # the worker sees the outcome in the printer columns
    table = env.as_worker("get", "ar", "restart-frontend").stdout
    assert "AutoApproved" in table and "test" in table


def test_an_approval_added_to_an_auto_approved_request_is_reported_ignored(env: Env) -> None:
    """An approver who approves a request the policy already approved (with kubectl, not the
    client, which refuses first) is told by a Warning Event, and the trail says it counted
    for nothing."""
    env.request("late-approve")
    env.wait_phase("ar", "late-approve", "AutoApproved")
    env.approve("late-approve")

    def ignored() -> list[dict[str, Any]] | None:
        found = [r for r in env.op.audit_events() if r["event"] == "DecisionIgnored"]
        return found or None

    [record] = wait_for("DecisionIgnored", ignored, 30, on_timeout=env.op.log_tail)
    assert record["subject"]["name"] == "late-approve"
    assert record["data"]["ignored"] == [{"by": APPROVER, "verdict": "Approve"}]
    assert "automatically" in record["data"]["already"]
    [event] = wait_for("the Warning Event", lambda: [
        e for e in env.events("late-approve") if e["reason"] == "DecisionIgnored"] or None, 30)
    assert event["type"] == "Warning" and f"Approve by {APPROVER} ignored" in event["message"]
    ar = get(env.cluster, "ar", env.ns, "late-approve")
    assert ar is not None and ar["status"]["phase"] == "AutoApproved"
    assert ar["status"]["decision"]["approvedBy"] == [], "it was not counted"
    assert ar["status"]["observedGeneration"] == ar["metadata"]["generation"]
    assert ar["status"]["auditHead"] == f"sha256:{record['hash']}"
    env.cluster.kubectl("label", "ar", "late-approve", "touched=yes", "-n", env.ns)  # no report
    time.sleep(2)
    assert [r["event"] for r in env.op.audit_events()].count("DecisionIgnored") == 1
    assert verify(str(env.op.audit_path)).ok


def test_risky_request_waits_for_a_human_then_a_grant_launches_the_gateway(env: Env) -> None:
    delete = "kubectl delete deployment/legacy -n apps"
    env.request("remove-legacy", commands=(delete, RESTART))
    ar = env.wait_phase("ar", "remove-legacy", "AwaitingDecision")
    assert "Destructive" in ar["status"]["consensus"]["flags"]
    assert ar["status"]["consensus"]["dissent"], "the dissenting votes are kept"
    assert ar["status"]["decision"]["requiredApprovals"] == 1

    env.approve("remove-legacy")
    ar = env.wait_phase("ar", "remove-legacy", "Approved")
    assert ar["status"]["decision"]["approvedBy"] == [APPROVER]

    env.grant("remove-legacy-1", "remove-legacy", RESTART)
    eg = env.wait_phase("eg", "remove-legacy-1", "TokenIssued")
    st = eg["status"]
    secret = env.secret("remove-legacy-1")
    job = env.job("remove-legacy-1")
    assert secret is not None and job is not None
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert st["tokenSHA256"] == token_sha256(token)
    assert token not in json.dumps(eg), "the token never appears in the grant"
    assert secret["type"] == names.SECRET_TYPE
    assert secret["metadata"]["ownerReferences"][0]["uid"] == eg["metadata"]["uid"]
    # what the operator makes carries the release's labels (WINGMAN_OBJECT_LABELS from the chart)
    for made in (secret, job, job["spec"]["template"]):
        labels = made["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "wingman"
        assert labels["app.kubernetes.io/name"] == "wingman"
        assert labels["wingman.dev/environment"] == "test"
        assert labels["app.kubernetes.io/managed-by"] == "wingman-operator"
    # issued on its claim: the operator wrote nothing to the grant, which stays Pending (with
    # no condition) until its gateway writes Running; the approval's claim records the token
    stored = get(env.cluster, "eg", env.ns, "remove-legacy-1")
    assert stored is not None
    assert "status" not in stored, stored.get("status")

    # the token is bound to this grant, its approval and this Job, and verifies with the
    # public keys the operator published for the gateway
    claims = _verified(env, token, ar, eg, job, RESTART)
    assert claims.sub == WORKER

    # the Job: released, gateway identity, pinned image, no privileges, token mounted read-only
    wait_for("job released", lambda: not (env.job("remove-legacy-1") or {}).get(
        "spec", {}).get("suspend", True), 20)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "wingman-gateway"
    # no automounted token (the API server extends its life to a year): one of its own
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/wingman-dev/wingman:0.1.0"
    assert container["command"] == ["/usr/bin/tini", "--", "wingman", "gateway"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["token"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    # the token Secret's name has a random part: nobody could have planted a Secret under it
    assert volumes["token"]["secret"]["secretName"] == eg["status"]["tokenSecretName"]
    assert eg["status"]["tokenSecretName"].startswith("remove-legacy-1-gw-token-")
    assert not any("hostPath" in v for v in pod["volumes"])
    # the approval records which grant its command went to, before the token was minted
    recorded = get(env.cluster, "ar", env.ns, "remove-legacy")
    assert recorded is not None
    (granted,) = recorded["status"]["grants"]
    assert granted["command"] == RESTART and granted["grant"] == "remove-legacy-1"
    assert granted["grantUID"] == eg["metadata"]["uid"] and granted["grantedAt"]
    assert (granted["tokenSHA256"], granted["tokenSecretName"], granted["jobName"]) == (
        token_sha256(token), secret["metadata"]["name"], job["metadata"]["name"])
    assert granted["tokenExpirationTime"] == st["tokenExpirationTime"]
    assert dt.datetime.fromisoformat(granted["tokenExpirationTime"]).timestamp() == \
        claims.exp == int(secret["metadata"]["annotations"][names.EXPIRES_ANNOTATION])
    assert dt.datetime.fromisoformat(granted["grantedAt"]).timestamp() == claims.iat
    events = [r["event"] for r in env.op.audit_events()]
    assert events.count("TokenMinted") == 1 and "GrantAuthorized" in events
    assert events.index("ApprovalCommandGranted") < events.index("TokenMinted") \
        < events.index("GrantAuthorized")
    assert token not in env.op.audit_path.read_text()
    assert token not in env.op.log_path.read_text()


def _verified(env: Env, token: str, ar: dict[str, Any], eg: dict[str, Any],
              job: dict[str, Any], command: str) -> CapabilityClaims:
    """``token``'s claims as the gateway verifies them: signed with a key the operator published
    for it, and bound to this approval, grant, Job, namespace and ``command`` (raises if not)."""
    cm = get(env.cluster, "configmap", env.ns, "wingman-public-keys")
    assert cm is not None
    return verify_token(token, KeySet.from_mapping(cm["data"]), issuer="wingman-operator",
                        audience="test", now=time.time(), expected=Expected(
                            approval_uid=ar["metadata"]["uid"], grant_uid=eg["metadata"]["uid"],
                            job_uid=job["metadata"]["uid"], namespace=env.ns, command=command))


def _writes(env: Env) -> Counter[tuple[str, str]]:
    """The operator's writes to grants, Jobs, Secrets and approvals' status so far (its
    ``wingman_api_requests_total``), by (verb, resource)."""
    out: Counter[tuple[str, str]] = Counter()
    for line in env.op.metrics().splitlines():
        if not line.startswith("wingman_api_requests_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels["verb"] in ("create", "patch", "update", "delete") and labels["resource"] in (
                "jobs", "secrets", "executiongrants", "executiongrants/status",
                "approvalrequests/status"):
            out[(labels["verb"], labels["resource"])] += int(float(line.rsplit(" ", 1)[1]))
    return out


def test_a_grant_costs_the_operator_three_writes_and_none_to_the_grant(env: Env) -> None:
    """The Job, the claim that issues the token (on the approval), the Secret: the operator
    writes nothing to the grant, which the gateway finds TokenIssued by its claim."""
    env.request("req")
    env.wait_phase("ar", "req", "AutoApproved")
    before = _writes(env)
    env.grant("g", "req", RESTART)
    eg = env.wait_phase("eg", "g", "TokenIssued")
    wait_for("the grant settled", lambda: 'wingman_tokens_minted_total{environment="test"} 1.0'
             in env.op.metrics(), 30, on_timeout=env.op.log_tail)
    after = _writes(env)
    assert after - before == Counter({("create", "jobs"): 1, ("patch",
                                      "approvalrequests/status"): 1, ("create", "secrets"): 1})
    stored = get(env.cluster, "eg", env.ns, "g")
    assert stored is not None and grant_rules.phase(stored) == "Pending"
    secret = env.secret("g")
    assert secret is not None
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert eg["status"]["tokenSHA256"] == token_sha256(token)


def test_a_grant_named_over_54_characters_gets_its_token_issued_in_its_status(env: Env) -> None:
    """Admission cannot derive such a grant's Job from its name (it is shortened), so its token
    is issued as before the claim recorded tokens: the claim records none, and the grant's
    status says TokenIssued with the token fields, next to its Secret."""
    env.request("req")
    env.wait_phase("ar", "req", "AutoApproved")
    env.grant(LONG, "req", RESTART)
    eg = wait_for("TokenIssued in the status", lambda: (o := get(
        env.cluster, "eg", env.ns, LONG)) and (o.get("status") or {}).get("phase")
        == "TokenIssued" and env.secret(LONG) is not None and o, 60,
        on_timeout=env.op.log_tail)
    job, secret = env.job(LONG), env.secret(LONG)
    assert job is not None and secret is not None
    assert job["metadata"]["name"] != LONG + "-gw"
    token = base64.b64decode(secret["data"]["token"]).decode()
    st = eg["status"]
    assert (st["tokenSHA256"], st["jobName"], st["tokenSecretName"]) == (
        token_sha256(token), job["metadata"]["name"], secret["metadata"]["name"])
    ar = get(env.cluster, "ar", env.ns, "req")
    assert ar is not None
    (granted,) = ar["status"]["grants"]
    assert granted["grant"] == LONG and "tokenSHA256" not in granted


def test_a_pending_request_is_warned_before_it_expires_and_an_approval_lasts_from_the_decision(
        env: Env) -> None:
    # 2 minutes to wait for a decision; the policy warns an hour ahead, so at once
    env.request("expiring", commands=("kubectl delete deployment/legacy -n apps",),
                expiresAfterSeconds=120)
    ar = wait_for("the ExpiringSoon warning", lambda: (o := get(env.cluster, "ar", env.ns,
                                                                "expiring"))
                  and any(c["type"] == "ExpiringSoon" and c["status"] == "True"
                          for c in (o.get("status") or {}).get("conditions") or []) and o, 30,
                  on_timeout=env.op.log_tail)
    created = ar["metadata"]["creationTimestamp"]
    pending_until = ar["status"]["expirationTime"]
    assert _seconds(pending_until) - _seconds(created) == 120
    assert ar["status"]["phase"] == "AwaitingDecision"
    warning = [e for e in env.events("expiring") if e["reason"] == "ExpiringSoon"]
    assert len(warning) == 1 and warning[0]["type"] == "Warning"
    assert "expiring" in {r["subject"]["name"] for r in env.op.audit_events()
                          if r["event"] == "ApprovalExpiringSoon"}
    assert 'wingman_expiry_warnings_total{environment="test"} 1.0' in env.op.metrics()

    env.approve("expiring")
    ar = env.wait_phase("ar", "expiring", "Approved")
    st = ar["status"]
    # valid for approvalTTLSeconds (3600 in test) from the decision, not until the 2 minutes end
    assert _seconds(st["expirationTime"]) - _seconds(st["approvedAt"]) == 3600
    assert _seconds(st["expirationTime"]) > _seconds(pending_until)
    assert "ExpiringSoon" not in {c["type"] for c in st["conditions"]}


def _seconds(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("case", ["not-found", "awaiting", "rejected", "revoked", "expired",
                                  "edited-command", "not-allowlisted", "ttl-above-cap",
                                  "already-granted"])
def test_every_denial_has_its_reason(env: Env, case: str) -> None:
    expected = {"not-found": "ApprovalNotFound", "awaiting": "ApprovalNotApproved",
                "rejected": "ApprovalRejected", "revoked": "ApprovalRevoked",
                "expired": "ApprovalExpired", "edited-command": "CommandNotApproved",
                "not-allowlisted": "NotInAllowlist", "ttl-above-cap": "TTLAboveCap",
                "already-granted": "CommandAlreadyGranted"}[case]
    command = RESTART
    approval = "req"
    if case == "not-found":
        approval = "no-such-request"
    elif case in ("awaiting", "rejected"):
        env.request("req", commands=("kubectl delete deployment/legacy -n apps",))
        command = "kubectl delete deployment/legacy -n apps"
        env.wait_phase("ar", "req", "AwaitingDecision")
        if case == "rejected":
            env.reject("req")
            env.wait_phase("ar", "req", "Rejected")
    elif case == "revoked":
        env.request("req")
        env.wait_phase("ar", "req", "AutoApproved")
        env.reject("req")
        ar = env.wait_phase("ar", "req", "Rejected")
        conds = {c["type"]: c["status"] for c in ar["status"]["conditions"]}
        assert conds["Approved"] == "True" and conds["Revoked"] == "True"
    elif case == "expired":
        env.request("req")
        env.wait_phase("ar", "req", "AutoApproved")
        env.cluster.kubectl("patch", "ar", "req", "-n", env.ns, "--subresource=status",
                            "--type=merge", "-p",
                            json.dumps({"status": {"expirationTime": "2020-01-01T00:00:00Z"}}))
        env.wait_phase("ar", "req", "Expired")
    elif case == "edited-command":
        env.request("req")
        env.wait_phase("ar", "req", "AutoApproved")
        command = RESTART + " "
    elif case == "not-allowlisted":
        outside = "kubectl rollout restart deployment/frontend -n kube-system"
        env.request("req", commands=(outside,))
        env.wait_phase("ar", "req", "AwaitingDecision")
        env.approve("req")
        env.wait_phase("ar", "req", "Approved")
        command = outside
    elif case == "ttl-above-cap":
        env.request("req")
        env.wait_phase("ar", "req", "AutoApproved")
    elif case == "already-granted":
        env.request("req")
        env.wait_phase("ar", "req", "AutoApproved")
        env.grant("first", "req", RESTART)
        env.wait_phase("eg", "first", "TokenIssued")
    extra = {"ttlSeconds": 1000} if case == "ttl-above-cap" else {}
    env.grant("g", approval, command, **extra)
    eg = env.wait_phase("eg", "g", "Denied")
    assert eg["status"]["reason"] == expected, eg["status"]
    assert eg["status"]["message"]
    assert env.secret("g") is None and env.job("g") is None
    assert any(e["reason"] == expected for e in env.events("g"))
    denied = [r for r in env.op.audit_events() if r["event"] == "GrantDenied"]
    assert [r["data"]["reason"] for r in denied] == [expected]
    metrics = env.op.metrics()
    assert f'reason="{expected}"' in metrics and "wingman_denials_total" in metrics


def test_racing_grants_for_one_approved_command_get_exactly_one_token(env: Env) -> None:
    env.request("req", commands=(RESTART, SCALE))
    env.wait_phase("ar", "req", "AutoApproved")
    racers = [f"race-{i}" for i in range(5)]
    body = "\n---\n".join(json.dumps({
        "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant", "metadata": {"name": g},
        "spec": {"approvalRef": {"name": "req"}, "command": RESTART}}) for g in racers)
    env.as_approver("apply", "-f", "-", input=body)  # all five at once
    env.grant("scale-1", "req", SCALE)
    done = {g: env.wait_phase("eg", g, "TokenIssued", "Denied") for g in racers}
    winners = [g for g, eg in done.items() if eg["status"]["phase"] == "TokenIssued"]
    assert len(winners) == 1, {g: eg["status"].get("reason") for g, eg in done.items()}
    for g, eg in done.items():
        if g not in winners:
            assert eg["status"]["reason"] == "CommandAlreadyGranted"
            assert repr(winners[0]) in eg["status"]["message"]
    env.wait_phase("eg", "scale-1", "TokenIssued")  # the other approved command is its own
    _assert_one_token_and_one_job_each(env, [winners[0], "scale-1"])
    for g in racers:
        if g not in winners:
            wait_for(f"the Job of {g} removed", _job_gone(env, g), 30)
            assert env.secret(g) is None
    ar = get(env.cluster, "ar", env.ns, "req")
    assert ar is not None
    assert {e["grant"]: e["command"] for e in ar["status"]["grants"]} == {
        winners[0]: RESTART, "scale-1": SCALE}
    minted = [r["subject"]["name"] for r in env.op.audit_events() if r["event"] == "TokenMinted"]
    assert sorted(minted) == sorted([winners[0], "scale-1"])


def test_prd_needs_two_distinct_approvers(cluster: Any, crds: Path, tmp_path: Path) -> None:
    ns = f"wm-prd-{uuid.uuid4().hex[:8]}"
    with installed(cluster, "prd", namespace=ns, target_namespace=f"{ns}-apps",
                   values={"operator.replicas": 0, "audit.type": "file"}):
        op = OperatorProcess(cluster, ns, tmp_path / "op", environment="prd")
        op.start()
        try:
            from support.chart import SECOND_APPROVER

            def kubectl(user: str, groups: list[str], *args: str, input: str | None = None
                        ) -> Any:
                return cluster.kubectl(*args, "-n", ns, user=user, groups=groups, input=input)

            body = approval_request("scale", requester=WORKER, environment="prd",
                                    commands=(SCALE,))
            kubectl(WORKER, worker_groups("prd"), "apply", "-f", "-", input=json.dumps(body))
            wait_for("awaiting", lambda: phase_of(cluster, "ar", ns, "scale") == "AwaitingDecision",
                     60, on_timeout=op.log_tail)
            first = [{"op": "add", "path": "/spec/decisions", "value": [
                {"verdict": "Approve", "by": APPROVER}]}]
            kubectl(APPROVER, approver_groups("prd"), "patch", "ar", "scale", "--type=json",
                    "-p", json.dumps(first))
            wait_for("one approval counted", lambda: ((get(cluster, "ar", ns, "scale") or {})
                     .get("status", {}).get("decision", {}).get("approvedBy")) == [APPROVER], 30)
            assert phase_of(cluster, "ar", ns, "scale") == "AwaitingDecision"
            second = [{"op": "add", "path": "/spec/decisions/-",
                       "value": {"verdict": "Approve", "by": SECOND_APPROVER}}]
            kubectl(SECOND_APPROVER, approver_groups("prd"), "patch", "ar", "scale",
                    "--type=json", "-p", json.dumps(second))
            wait_for("approved", lambda: phase_of(cluster, "ar", ns, "scale") == "Approved", 30)
        finally:
            op.stop()


def test_signing_key_is_generated_once_and_published(env: Env) -> None:
    secret = get(env.cluster, "secret", env.ns, "wingman-signing-key")
    cm = get(env.cluster, "configmap", env.ns, "wingman-public-keys")
    assert secret is not None and cm is not None
    active = base64.b64decode(secret["data"]["active"]).decode()
    assert set(cm["data"]) == {f"{active}.pem"}
    assert "PRIVATE" not in json.dumps(cm)
    env.op.stop()
    env.op.start()
    again = get(env.cluster, "secret", env.ns, "wingman-signing-key")
    assert again is not None and again["data"] == secret["data"], "restart reuses the key"


def test_metrics_and_health(env: Env) -> None:
    env.request("restart-frontend")
    env.wait_phase("ar", "restart-frontend", "AutoApproved")
    text = wait_for("gauges", lambda: (m := env.op.metrics()) and
                    'wingman_approval_requests{environment="test",phase="AutoApproved"} 1.0' in m
                    and m, 20)
    for series in ("wingman_votes_total", "wingman_consensus_duration_seconds_bucket",
                   "wingman_decisions_total", "wingman_pending_approvals",
                   "wingman_oldest_pending_approval_age_seconds", "wingman_operator_ready 1.0",
                   "wingman_audit_head_sequence"):
        assert series in text, series
    assert 'wingman_decisions_total{decision="AutoApproved",environment="test"} 1.0' in text


def test_the_operator_measures_where_a_reconcile_s_time_goes(env: Env) -> None:
    """The step metrics a platform team reads when objects settle late (runbook: "where the
    operator's time goes"): after one real request, its reconcile, its status write by verb,
    resource and status, its audit wait and write, and the event loop's lag are all there."""
    from prometheus_client.parser import text_string_to_metric_families

    env.request("measured")
    env.wait_phase("ar", "measured", "AutoApproved")

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(env.op.metrics())
                for s in family.samples}
    got = wait_for("step metrics", lambda: (m := samples()) and m.get(
        ("wingman_event_loop_lag_seconds_count", ())) and m, 20)
    assert got[("wingman_api_requests_total", (("code", "200"),
                                               ("resource", "approvalrequests/status"),
                                               ("verb", "patch")))] >= 1
    assert got[("wingman_api_request_duration_seconds_count",
                (("resource", "approvalrequests/status"), ("verb", "patch")))] >= 1
    assert got[("wingman_reconcile_duration_seconds_count",
                (("resource", "approvalrequests"),))] >= 1
    assert got[("wingman_reconcile_wait_seconds_count", (("resource", "approvalrequests"),))] >= 1
    assert got[("wingman_audit_append_seconds_count", ())] >= 1
    assert got[("wingman_audit_write_records_sum", ())] >= got[
        ("wingman_audit_write_seconds_count", ())] >= 1
    assert got[("wingman_call_wait_seconds_count", ())] >= 1


def test_the_operator_runs_on_the_allocator_it_chose(env: Env) -> None:
    """``auto``: jemalloc where it is installed (bash .ci/setup installs it; the image has
    it), preloaded into the operator process itself; glibc's malloc otherwise."""
    starting = next(json.loads(line) for line in env.op.log_path.read_text().splitlines()
                    if '"operator starting"' in line)
    assert env.op.proc is not None
    maps = Path(f"/proc/{env.op.proc.pid}/maps").read_text()
    if memory.find_jemalloc() is not None:
        assert starting["allocator"] == "jemalloc" and memory.JEMALLOC in maps
    else:
        assert starting["allocator"] == "glibc" and memory.JEMALLOC not in maps


def _converged(env: Env, grants: list[str]) -> bool:
    for g in grants:
        eg = env.view(g)
        job = env.job(g)
        if not eg or eg.get("status", {}).get("phase") != "TokenIssued" or not job \
                or job["spec"].get("suspend") or env.secret(g) is None:
            return False
    return True


def _job_gone(env: Env, grant: str) -> Callable[[], bool]:
    """A probe of whether ``grant``'s Job is gone (bound to that grant, for a wait inside a
    loop)."""
    return lambda: env.job(grant) is None


def _secret_gone(env: Env, grant: str) -> Callable[[], bool]:
    """A probe of whether ``grant``'s token Secret is gone (bound to that grant)."""
    return lambda: env.secret(grant) is None


def _assert_one_token_and_one_job_each(env: Env, grants: list[str]) -> None:
    jobs = json.loads(env.cluster.kubectl("get", "jobs", "-n", env.ns, "-o", "json").stdout)
    secrets = json.loads(env.cluster.kubectl(
        "get", "secrets", "-n", env.ns, "-o", "json",
        "--field-selector", f"type={names.SECRET_TYPE}").stdout)
    for g in grants:
        mine = [j for j in jobs["items"]
                if j["metadata"]["labels"].get(names.GRANT_LABEL) == g]
        tokens = [s for s in secrets["items"]
                  if (s["metadata"].get("labels") or {}).get(names.GRANT_LABEL) == g]
        assert len(mine) == 1 and len(tokens) == 1, (g, len(mine), len(tokens))
        eg = env.view(g)
        assert eg is not None
        token = base64.b64decode(tokens[0]["data"]["token"]).decode()
        assert eg["status"]["tokenSHA256"] == token_sha256(token)
        assert tokens[0]["metadata"]["annotations"][names.JOB_UID_ANNOTATION] == \
            mine[0]["metadata"]["uid"]


#: What each kill leaves (the phase of the grant's view, whether its token Secret exists), and
#: how many ``TokenMinted`` and ``GrantAuthorized`` records the grant has once the restarted
#: operator has converged, for a grant whose claim issues its token (a name of at most 54
#: characters; its stored phase stays Pending): the claim records the token before any record,
#: so a run that finds the claim and no Secret writes the claim's records again (``TokenMinted``
#: ``again``) before it stores the Secret; a Secret in place is adopted without a record. Last,
#: whether the restarted operator counts the token in ``wingman_tokens_minted_total`` and
#: observes the grant's ``wingman_grant_to_job_seconds``: the process that makes the claim
#: does, when it stores the Secret (a later one storing that token is not counted again).
LEFT_BY_KILL = {
    "job-created": ("Pending", False, 1, 1, True),
    "command-claimed": ("TokenIssued", False, 1, 1, False),  # the claim, no record
    "token-minted": ("TokenIssued", False, 2, 2, False),  # the records, no Secret
    "secret-created": ("TokenIssued", True, 1, 1, False),
    "token-stored": ("TokenIssued", True, 1, 1, False),
}
#: The same for a grant named over 54 characters (its Job's name is not ``<grant>-gw``), whose
#: token is issued as before the claim recorded tokens: the claim, then its ``TokenIssued``
#: status and its Secret together (the phase is the stored one): a token is minted again only
#: where the killed process's token never reached the API server, or only its status did (then
#: the same token is stored under a second ``TokenMinted``, ``again``, alone);
#: ``GrantAuthorized`` is written with its ``TokenMinted`` (one unit, before the kill at
#: ``token-minted``) and again when a Secret in place is adopted. The process that writes its
#: ``TokenIssued`` counts the token (the killed one did, when it wrote it).
LEFT_BY_KILL_LONG = {
    "job-created": ("Pending", False, 1, 1, True),
    "command-claimed": ("Pending", False, 1, 1, True),
    "token-minted": ("Pending", False, 2, 2, True),
    "status-written": ("TokenIssued", False, 2, 1, False),  # the status without the Secret
    "secret-created": ("Pending", True, 1, 2, True),  # the Secret without the status: adopted
    "token-stored": ("TokenIssued", True, 1, 1, False),
    # the same halves, cut while the two writes were under way together (as they always are
    # without fault injection)
    "status-landed": ("TokenIssued", False, 2, 1, False),
    "secret-landed": ("Pending", True, 1, 2, True),
    "both-landed": ("TokenIssued", True, 1, 1, False),
}
#: A grant name of 60 characters: its Job's name is shortened, so its token is not issued on
#: its claim.
LONG = "g" * 60


def _assert_issued_once(env: Env, grant: str) -> None:
    """What a kill may never break, on top of one Job and one token: the status records the
    Secret the Job mounts and the token in it; the approval names this grant, once, as its
    command's holder; the token is one the gateway accepts, and every token ever minted for the
    grant is that token (one ``jti``: one burn marker, so the gateway runs once); and the audit
    trail verifies, tells one story (the claim before the token, every record of the same token,
    the status's record among them) and contradicts nothing (no denial, failure or expiry)."""
    eg, job, secret = env.view(grant), env.job(grant), env.secret(grant)
    stored = get(env.cluster, "eg", env.ns, grant)
    assert eg is not None and job is not None and secret is not None and stored is not None
    st = eg["status"]
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert st["phase"] == "TokenIssued" and st["tokenSHA256"] == token_sha256(token)
    assert st["tokenSecretName"] == secret["metadata"]["name"] == \
        manifests.job_token_secret(job)
    assert st["jobName"] == job["metadata"]["name"]
    expires = int(secret["metadata"]["annotations"][names.EXPIRES_ANNOTATION])
    assert dt.datetime.fromisoformat(st["tokenExpirationTime"].replace("Z", "+00:00")) \
        .timestamp() == expires
    ar = get(env.cluster, "ar", env.ns, eg["spec"]["approvalRef"]["name"])
    assert ar is not None
    holders = [e for e in ar["status"]["grants"] if e["command"] == eg["spec"]["command"]]
    assert [(e["grant"], e["grantUID"]) for e in holders] == [(grant, eg["metadata"]["uid"])]
    if names.job_name(grant) == grant + "-gw":
        # issued on its claim: the claim records the token in the Secret, the grant nothing
        assert holders[0]["tokenSHA256"] == token_sha256(token)
        assert holders[0]["tokenSecretName"] == secret["metadata"]["name"]
        assert grant_rules.phase(stored) == "Pending", stored.get("status")
    else:
        assert stored["status"]["phase"] == "TokenIssued"
        assert "tokenSHA256" not in holders[0]
    claims = _verified(env, token, ar, eg, job, eg["spec"]["command"])
    assert verify(str(env.op.audit_path)).ok
    records = [r for r in env.op.audit_events() if r["subject"]["name"] == grant]
    events = [r["event"] for r in records]
    assert not {"GrantDenied", "GrantFailed", "GrantExpired"} & set(events), events
    minted = [r for r in records if r["event"] == "TokenMinted"]
    authorized = [r for r in records if r["event"] == "GrantAuthorized"]
    assert minted and authorized, events
    assert {(r["data"]["tokenSHA256"], r["data"]["jtiSHA256"], r["data"]["jobUID"])
            for r in minted} == {(st["tokenSHA256"], jti_sha256(claims.jti),
                                  job["metadata"]["uid"])}
    # the jti names the token's burn marker: whoever reads the trail (a gateway pod, with the
    # file sink) must not learn it before the token is spent, or it could create that marker
    # first and have the token refused as a replay
    assert claims.jti not in env.op.audit_path.read_text()
    assert {(r["data"]["tokenSHA256"], r["data"]["jobUID"]) for r in authorized} == \
        {(st["tokenSHA256"], job["metadata"]["uid"])}
    if "auditRecordHash" in st:  # a TokenIssued status the operator wrote (a long name)
        assert st["auditRecordHash"] in {f"sha256:{r['hash']}" for r in authorized}
    claimed = [r for r in env.op.audit_events() if r["event"] == "ApprovalCommandGranted"
               and r["data"]["grant"] == grant]
    assert claimed and {r["data"]["grantUID"] for r in claimed} == {eg["metadata"]["uid"]}
    assert claimed[0]["seq"] < minted[0]["seq"] < authorized[0]["seq"]


@pytest.mark.parametrize(("grant", "step"), [
    *(("g", step) for step in LEFT_BY_KILL), *((LONG, step) for step in STEPS)],
    ids=lambda v: "long" if v == LONG else v)
def test_killed_at_each_write_of_the_grant_flow_converges_to_one_job_and_one_token(
        env: Env, grant: str, step: str) -> None:
    table = LEFT_BY_KILL if grant == "g" else LEFT_BY_KILL_LONG
    phase, stored, minted, authorized, counted = table[step]
    env.request("req")
    env.wait_phase("ar", "req", "AutoApproved")
    env.op.stop()
    env.op.extra_env["WINGMAN_FAULT_KILL_AT"] = step
    env.op.start()
    env.grant(grant, "req", RESTART)
    assert env.op.proc is not None
    wait_for("the SIGKILL", lambda: env.op.proc is not None and env.op.proc.poll() is not None,
             60, on_timeout=env.op.log_tail)
    assert env.op.proc.returncode == -9
    left = env.view(grant)
    assert left is not None
    assert (grant_rules.phase(left), env.secret(grant) is not None) \
        == (phase, stored), f"the kill at {step} left {left.get('status')}"
    del env.op.extra_env["WINGMAN_FAULT_KILL_AT"]
    env.op.start()
    wait_for("convergence", lambda: _converged(env, [grant]), 60, on_timeout=env.op.log_tail)
    _assert_one_token_and_one_job_each(env, [grant])
    _assert_issued_once(env, grant)
    records = [r for r in env.op.audit_events() if r["subject"]["name"] == grant]
    assert [r["event"] for r in records].count("TokenMinted") == minted, records
    assert [r["event"] for r in records].count("GrantAuthorized") == authorized, records
    assert len({r["data"]["tokenSHA256"] for r in records if r["event"] == "TokenMinted"}) == 1
    metrics = env.op.metrics()
    assert ('wingman_tokens_minted_total{environment="test"} 1.0' in metrics) == counted, metrics
    assert ('wingman_grant_to_job_seconds_count{environment="test"} 1.0' in metrics) \
        == counted, metrics


def test_a_token_stored_just_before_a_key_rotation_is_adopted(env: Env) -> None:
    """The operator killed after the token Secret landed and before the status, and the signing
    key rotated before it restarts: the token in place is the one the operator made (with the
    key it names, still in the ring and still verified by the gateway), so it is adopted as it
    is, never refused for the rotation, and no other token is made."""
    from wingman.cli.main import main as cli

    env.request("req")
    env.wait_phase("ar", "req", "AutoApproved")
    env.op.stop()
    env.op.extra_env["WINGMAN_FAULT_KILL_AT"] = "secret-created"
    env.op.start()
    env.grant("g", "req", RESTART)
    wait_for("the SIGKILL", lambda: env.op.proc is not None and env.op.proc.poll() is not None,
             60, on_timeout=env.op.log_tail)
    secret = env.secret("g")
    assert secret is not None and env.grant_phase("g") == "TokenIssued"  # on its claim
    del env.op.extra_env["WINGMAN_FAULT_KILL_AT"]
    assert cli(["keys", "rotate", "-n", env.ns, "--kubeconfig", str(env.cluster.kubeconfig)]) == 0
    env.op.start()
    eg = env.wait_phase("eg", "g", "TokenIssued")
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert eg["status"]["tokenSHA256"] == token_sha256(token)
    kept = env.secret("g")
    assert kept is not None and kept["metadata"]["uid"] == secret["metadata"]["uid"]
    assert [r["event"] for r in env.op.audit_events()].count("TokenMinted") == 1
    keys = get(env.cluster, "secret", env.ns, "wingman-signing-key")
    assert keys is not None
    active = base64.b64decode(keys["data"]["active"]).decode()
    assert jwt.get_unverified_header(token)["kid"] != active, "signed before the rotation"


def test_long_dotted_grant_names_get_their_job_and_token(env: Env) -> None:
    """Names cut to fit (the Job's, the token Secret's) are names the API server takes: a cut
    that left "-." or ".-" would fail only at the Secret's create, after the command's claim."""
    dotted = ["a" * 30 + "." + "b" * 32, "g." * 31 + "h"]
    for i in range(len(dotted)):
        env.request(f"dotted-{i}")
    for i, g in enumerate(dotted):
        env.wait_phase("ar", f"dotted-{i}", "AutoApproved")
        env.grant(g, f"dotted-{i}", RESTART)
    wait_for("both issued", lambda: _converged(env, dotted), 60, on_timeout=env.op.log_tail)
    _assert_one_token_and_one_job_each(env, dotted)
    for g in dotted:
        job, secret = env.job(g), env.secret(g)
        assert job is not None and secret is not None
        # a Job name fits a pod name with its 6-character suffix; the Secret's is the Job's
        # with "-token-<16 hex>" (admission relates it to the gateway pod), up to 80 of the
        # 253 characters a Secret's name may have
        assert len(job["metadata"]["name"]) <= 57
        assert re.fullmatch(re.escape(job["metadata"]["name"]) + "-token-[0-9a-f]{16}",
                            secret["metadata"]["name"])


def test_killed_at_random_points_over_many_grants_converges(env: Env) -> None:
    import random

    rng = random.Random(4242)
    requests = [f"r{i}" for i in range(12)]
    for r in requests:
        env.request(r)
    for r in requests:
        env.wait_phase("ar", r, "AutoApproved")
    # two grants race for each approved command: exactly one of each pair may get a token
    pairs = [(f"{r}-a", f"{r}-b", r) for r in requests]
    pending = list(pairs)
    kills = 0
    while pending:
        batch, pending = pending[:3], pending[3:]
        for a, b, r in batch:
            env.grant(a, r, RESTART)
            env.grant(b, r, RESTART)
        time.sleep(rng.uniform(0.05, 1.5))
        env.op.kill()
        kills += 1
        env.op.start()

    def settled() -> list[str] | None:
        winners = []
        for a, b, _ in pairs:
            phases = {g: env.grant_phase(g) or "Pending" for g in (a, b)}
            if sorted(phases.values()) != ["Denied", "TokenIssued"]:
                return None
            winners.append(a if phases[a] == "TokenIssued" else b)
        return winners if _converged(env, winners) else None
    winners = wait_for("every pair settles on one token", settled, 120,
                       on_timeout=env.op.log_tail)
    _assert_one_token_and_one_job_each(env, winners)
    for g in winners:
        _assert_issued_once(env, g)
    for a, b, r in pairs:
        loser = b if a in winners else a
        eg = get(env.cluster, "eg", env.ns, loser)
        assert eg is not None and eg["status"]["reason"] == "CommandAlreadyGranted"
        assert env.secret(loser) is None
        wait_for(f"the Job of {loser} removed", _job_gone(env, loser), 30)
        ar = get(env.cluster, "ar", env.ns, r)
        assert ar is not None
        assert [e["grant"] for e in ar["status"]["grants"]] == [a if a in winners else b]
    assert kills == 4
    assert verify(str(env.op.audit_path)).ok


def test_policy_file_is_the_rendered_chart_policy(env: Env) -> None:
    policy = yaml.safe_load(env.op.policy_path.read_text())
    assert policy["environment"] == "test" and policy["autoApprove"] is True


def test_key_rotation_keeps_issued_tokens_valid_and_signs_new_ones_with_the_new_key(
        env: Env) -> None:
    from wingman.cli.main import main as cli

    env.request("req")
    env.request("req2")
    env.wait_phase("ar", "req", "AutoApproved")
    env.wait_phase("ar", "req2", "AutoApproved")
    env.grant("before", "req", RESTART)
    env.wait_phase("eg", "before", "TokenIssued")
    kubeconfig = str(env.cluster.kubeconfig)
    assert cli(["keys", "rotate", "-n", env.ns, "--kubeconfig", kubeconfig]) == 0

    def published() -> dict[str, str] | None:
        cm = get(env.cluster, "configmap", env.ns, "wingman-public-keys")
        return cm["data"] if cm and len(cm["data"]) == 2 else None
    keyset = KeySet.from_mapping(wait_for("both public keys published", published, 30))
    time.sleep(6)  # the operator reloads the Secret every few seconds
    env.grant("after", "req2", RESTART)
    env.wait_phase("eg", "after", "TokenIssued")
    kids = set()
    for g in ("before", "after"):
        secret = env.secret(g)
        assert secret is not None
        token = base64.b64decode(secret["data"]["token"]).decode()
        assert verify_token(token, keyset, issuer="wingman-operator", audience="test",
                            now=time.time()).grant_name == g
        kids.add(jwt.get_unverified_header(token)["kid"])
    assert len(kids) == 2, "the new grant is signed with the rotated key"
    assert cli(["keys", "prune", "-n", env.ns, "--kubeconfig", kubeconfig]) == 0
    wait_for("pruned", lambda: len((get(env.cluster, "configmap", env.ns,
                                        "wingman-public-keys") or {}).get("data", {})) == 1, 30)


def test_an_operator_whose_health_port_was_taken_starts_again_on_another(
        env: Env, tmp_path: Path) -> None:
    """The suite's servers run in parallel: a health port chosen free can be taken before the
    operator binds it. The start then fails on it ('port N (WINGMAN_HEALTH_PORT) is in use')
    and is made again on another port; the metrics port is the one the operator bound itself
    (port 0)."""
    second = OperatorProcess(env.cluster, env.ns, tmp_path / "second")
    with socket.socket() as taken:
        # every address: it holds the port on the operator's 127.0.0.1 too
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - every address, the loopback included
        taken.listen()
        held = taken.getsockname()[1]
        second.health_port = held
        try:
            second.start()
            assert second.health_port != held
            assert second.starts == 2, "the first start met the taken port"
            assert (f"cannot start: port {held} (WINGMAN_HEALTH_PORT) is in use"
                    in second.log_tail(400)), second.log_tail(400)
            assert second.proc is not None
            assert {second.health_port, second.metrics_port} <= listening_ports(
                second.proc.pid)
            assert held not in listening_ports(second.proc.pid)
            # its own metrics server: a standby replica, the first one leads
            code, body = second.readiness()
            assert code == 503 and "standing by" in body, body
        finally:
            second.stop()


def test_the_health_and_metrics_ports_listen_on_the_address_set(env: Env) -> None:
    """``WINGMAN_LISTEN_ADDRESS`` (the suite's operators: 127.0.0.1): both ports there alone,
    kopf's liveness endpoint included, and both answer."""
    assert env.op.proc is not None
    bound = listening_addresses(env.op.proc.pid)
    assert {("127.0.0.1", env.op.health_port), ("127.0.0.1", env.op.metrics_port)} <= bound
    assert {address for address, _ in bound} == {"127.0.0.1"}, bound
    with urllib.request.urlopen(f"http://127.0.0.1:{env.op.health_port}/healthz",
                                timeout=5) as resp:
        assert resp.status == 200
    assert env.op.readiness()[0] == 200


@pytest.mark.parametrize("setting", ["WINGMAN_HEALTH_PORT", "WINGMAN_METRICS_PORT"])
def test_a_port_in_use_is_named_and_the_operator_exits_2_without_a_traceback(
        env: Env, tmp_path: Path, setting: str) -> None:
    """Another process listens on the health or the metrics port (another operator on the
    host, outside the chart; a sidecar): the start says which port of which setting and what
    to do, on stderr as every other start-up refusal, not a traceback, and exits 2."""
    second = OperatorProcess(env.cluster, env.ns, tmp_path / "second")
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - every address, the loopback included
        taken.listen()
        held = int(taken.getsockname()[1])
        done = subprocess.run([sys.executable, "-m", "wingman.cli", "operator"],
                              env={**second.env(), setting: str(held)}, capture_output=True,
                              text=True, timeout=120, check=False)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert (f"wingman operator: cannot start: port {held} ({setting}) is in use: another "
            "process listens on it") in done.stderr, said
    assert "Traceback" not in said, said
    assert "operator starting" not in said, said


def test_an_address_the_host_does_not_have_is_named_and_the_operator_exits_2(
        env: Env, tmp_path: Path) -> None:
    """``WINGMAN_LISTEN_ADDRESS`` set to an address no interface here has (TEST-NET-3): the
    start names that setting and the chart's value, not a port's, without a traceback."""
    away = "203.0.113.9"
    with socket.socket() as probe:
        try:
            probe.bind((away, 0))
        except OSError:
            pass
        else:
            pytest.skip(f"this host can bind {away} (its address, or ip_nonlocal_bind)")
    second = OperatorProcess(env.cluster, env.ns, tmp_path / "second")
    done = subprocess.run([sys.executable, "-m", "wingman.cli", "operator"],
                          env={**second.env(), "WINGMAN_LISTEN_ADDRESS": away},
                          capture_output=True, text=True, timeout=120, check=False)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert (f"wingman operator: cannot start: cannot listen on {away} (WINGMAN_LISTEN_ADDRESS): "
            in done.stderr), said
    assert "operator.listenAddress" in done.stderr, said
    assert "Traceback" not in said and "operator starting" not in said, said


def test_two_replicas_never_both_act(env: Env, tmp_path: Path) -> None:
    second = OperatorProcess(env.cluster, env.ns, tmp_path / "second")
    second.start()
    try:
        time.sleep(3)  # the second replica stands by: the first holds the leader Lease
        # readiness tells them apart: exactly one replica is ready (the one that acts)
        verdicts = wait_for("one ready replica", lambda: (v := sorted(
            (op.readiness() for op in (env.op, second)), key=lambda r: r[0])) and
            [code for code, _ in v] == [200, 503] and v, 30)
        assert "standing by" in verdicts[1][1], verdicts
        grants = [f"p{i}" for i in range(6)]
        for g in grants:
            env.request(f"req-{g}")
        for g in grants:
            env.wait_phase("ar", f"req-{g}", "AutoApproved")
        for g in grants:
            env.grant(g, f"req-{g}", RESTART)
        for g in grants:
            env.wait_phase("eg", g, "TokenIssued")
        records = env.op.audit_events() + second.audit_events()
        minted = [r["subject"]["name"] for r in records if r["event"] == "TokenMinted"]
        assert sorted(minted) == grants, "one token per grant, minted by one replica"
        reviewed = [r for r in records if r["event"] == "ApprovalReviewed"]
        assert len(reviewed) == len(grants)
        actors = {("first" if r in env.op.audit_events() else "second") for r in records
                  if r["event"] in ("TokenMinted", "ApprovalReviewed")}
        assert len(actors) == 1, "only the active replica acted"
        _assert_one_token_and_one_job_each(env, grants)
    finally:
        second.stop()


def _plant(env: Env, name: str) -> dict[str, Any]:
    """A Secret no grant owns, shaped like a token Secret. A name ending in
    ``-token-<16 hex digits>`` only the operator's own ServiceAccount may create (admission,
    the ``...-service-account-tokens`` policy): planted as it, as a replica racing another
    would."""
    body = json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": names.SECRET_TYPE,
        "metadata": {"name": name}, "stringData": {"token": "planted.not.signed"}})
    if re.fullmatch(r".+-token-[0-9a-f]{16}", name):
        made = kubectl_as_sa(env.cluster, env.ns, "wingman-operator", "create", "-n", env.ns,
                             "-f", "-", input=body)
        assert made.returncode == 0, made.stderr
    else:
        env.cluster.kubectl("create", "-n", env.ns, "-f", "-", input=body)
    planted = get(env.cluster, "secret", env.ns, name)
    assert planted is not None
    return planted


def test_a_secret_planted_for_a_grant_is_never_its_token(env: Env) -> None:
    """A token Secret's name is unknown until its Job exists. A Secret planted under the Job's
    name after the Job exists (here while the operator is down) is refused, never used, and the
    grant's Job goes. A Secret planted under the name a grant would once have had
    (``<grant>-token``, or the truncated form a longer grant's name shares) is simply not the
    grant's: the grant issues its token beside it and touches nothing of it."""
    env.request("req")
    env.wait_phase("ar", "req", "AutoApproved")
    long_name = "a" * 63
    env.op.stop()
    env.op.extra_env["WINGMAN_FAULT_KILL_AT"] = "job-created"
    env.op.start()
    env.grant(long_name, "req", RESTART)
    wait_for("the SIGKILL", lambda: env.op.proc is not None and env.op.proc.poll() is not None,
             60, on_timeout=env.op.log_tail)
    del env.op.extra_env["WINGMAN_FAULT_KILL_AT"]
    job = env.job(long_name)
    assert job is not None
    target = manifests.job_token_secret(job)
    assert target is not None and target.startswith("a" * 31)
    raced = _plant(env, target)
    env.op.start()
    eg = env.wait_phase("eg", long_name, "Failed")  # its status said TokenIssued a moment
    assert eg["status"]["reason"] == "SecretConflict", eg["status"]
    wait_for("the grant's Job removed", lambda: env.job(long_name) is None, 30)
    still = get(env.cluster, "secret", env.ns, target)
    assert still is not None and still["metadata"]["uid"] == raced["metadata"]["uid"]
    assert still["data"] == raced["data"]

    env.request("req2")
    env.wait_phase("ar", "req2", "AutoApproved")
    planted = [_plant(env, names.legacy_secret_name(g)) for g in ("g", long_name)]
    env.grant("g", "req2", RESTART)
    env.wait_phase("eg", "g", "TokenIssued")
    mine = env.secret("g")
    assert mine is not None and mine["metadata"]["name"] != names.legacy_secret_name("g")
    assert mine["metadata"]["ownerReferences"][0]["name"] == "g"
    for secret in planted:
        kept = get(env.cluster, "secret", env.ns, secret["metadata"]["name"])
        assert kept is not None and kept["metadata"]["uid"] == secret["metadata"]["uid"]
        assert kept["data"] == secret["data"]
    _assert_one_token_and_one_job_each(env, ["g"])


def _token(env: Env, grant: str) -> str:
    secret = env.secret(grant)
    assert secret is not None
    return base64.b64decode(secret["data"]["token"]).decode()


def _issued(env: Env, request: str, grant: str) -> str:
    """An approved request and its grant, TokenIssued with the token stored: the token."""
    env.request(request)
    env.wait_phase("ar", request, "AutoApproved")
    env.grant(grant, request, RESTART)
    env.wait_phase("eg", grant, "TokenIssued")
    return _token(env, grant)


def _issued_for_30_s_then_stopped(env: Env) -> tuple[dict[str, Any], dict[str, Any]]:
    """Request ``req`` auto-approved and the long name's grant issued a token for 30 s, its
    Secret stored; then the operator stopped. Returns the grant (TokenIssued) and the
    Secret."""
    env.request("req")
    env.wait_phase("ar", "req", "AutoApproved")
    env.grant(LONG, "req", RESTART, ttlSeconds=30)
    eg = env.wait_phase("eg", LONG, "TokenIssued")
    secret = env.secret(LONG)
    assert secret is not None
    env.op.stop()
    return eg, secret


def _start_after_the_token_expired(env: Env, grant: dict[str, Any]) -> None:
    """Wait until a second after the token ``grant``'s status records has expired
    (tokenExpirationTime), then start the operator."""
    expires = dt.datetime.fromisoformat(grant["status"]["tokenExpirationTime"])
    time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 1)
    env.op.start()


def test_a_grant_reset_to_pending_after_its_token_was_minted_never_gets_a_second_token(
        env: Env) -> None:
    """What a compromised gateway could do with its status rights, plus a lost Secret: the
    operator makes the token again, and it is the same token, byte for byte (same jti, same
    burn marker), never a second one."""
    first = _issued(env, "req", "g")
    reset = json.dumps([{"op": "replace", "path": "/status", "value": {
        "phase": "Pending", "tokenSHA256": token_sha256(first)}}])
    # the Secret still in place: it is adopted as it is, nothing is minted
    env.op.stop()
    secret = env.secret("g")
    assert secret is not None
    env.cluster.kubectl("patch", "eg", "g", "-n", env.ns, "--subresource=status",
                        "--type=json", "-p", reset)
    env.op.start()
    eg = env.wait_phase("eg", "g", "TokenIssued")
    assert eg["status"]["tokenSHA256"] == token_sha256(first)
    assert eg["status"]["tokenSecretName"] == secret["metadata"]["name"]
    kept = env.secret("g")
    assert kept is not None and kept["metadata"]["uid"] == secret["metadata"]["uid"]
    assert [r["event"] for r in env.op.audit_events()].count("TokenMinted") == 1
    # and with the Secret gone too
    env.op.stop()
    env.cluster.kubectl("delete", "secret", env.secret_name("g"), "-n", env.ns)
    env.cluster.kubectl("patch", "eg", "g", "-n", env.ns, "--subresource=status",
                        "--type=json", "-p", reset)
    env.op.start()
    eg = env.wait_phase("eg", "g", "TokenIssued")
    wait_for("the Secret stored again", lambda: env.secret("g") is not None, 30)
    assert _token(env, "g") == first
    assert eg["status"]["tokenSHA256"] == token_sha256(first)
    minted = [r for r in env.op.audit_events() if r["event"] == "TokenMinted"]
    assert {(r["data"]["tokenSHA256"], r["data"]["jtiSHA256"]) for r in minted} == \
        {(token_sha256(first), minted[0]["data"]["jtiSHA256"])} and len(minted) == 2
    _assert_one_token_and_one_job_each(env, ["g"])


def _fail_the_job(env: Env, grant: str) -> dict[str, Any]:
    """Delete the grant's gateway pod (an eviction, say): the Job fails (backoffLimit 0)."""
    first = env.job(grant)
    assert first is not None
    selector = f"batch.kubernetes.io/controller-uid={first['metadata']['uid']}"
    wait_for("the Job's pod", lambda: json.loads(env.cluster.kubectl(
        "get", "pods", "-n", env.ns, "-l", selector, "-o", "json").stdout)["items"], 30)
    env.cluster.kubectl("delete", "pods", "-n", env.ns, "-l", selector, "--wait=true")

    def failed() -> bool:
        job = env.job(grant) or {}
        return any(c.get("type") == "Failed" and c.get("status") == "True"
                   for c in (job.get("status") or {}).get("conditions") or [])
    wait_for("the Job failed", failed, 60)
    return first


def _reset_to_pending(env: Env, grant: str) -> None:
    """What someone with the grant's status rights could do: make it look never issued (all but
    its token's hash, which the CRD keeps once recorded). Only a grant whose status records its
    token can be reset so (one named over 54 characters, ``LONG``): one issued on its claim is
    Pending already, and its claim, which only the operator writes, keeps it TokenIssued."""
    eg = get(env.cluster, "eg", env.ns, grant)
    assert eg is not None
    env.cluster.kubectl("patch", "eg", grant, "-n", env.ns, "--subresource=status",
                        "--type=json", "-p", json.dumps([
                            {"op": "replace", "path": "/status", "value": {
                                "phase": "Pending",
                                "tokenSHA256": eg["status"]["tokenSHA256"]}}]))


def test_a_grant_reset_to_pending_after_a_key_rotation_gets_that_very_token_again(
        env: Env) -> None:
    """Burn markers do not span a key rotation: a token made again under the new key has
    another jti, so a second token would burn a marker of its own and could run the command a
    second time. A grant whose status was reset to Pending after its token was issued gets that
    very token again (made with the ring's retired key that signed it: the same jti, the same
    burn marker), as a lost token of a TokenIssued grant is, never another."""
    from wingman.cli.main import main as cli

    first = _issued(env, "req", LONG)
    signed_by = jwt.get_unverified_header(first)["kid"]
    secret = env.secret(LONG)
    assert secret is not None
    env.op.stop()
    assert cli(["keys", "rotate", "-n", env.ns, "--kubeconfig", str(env.cluster.kubeconfig)]) == 0
    # the first run over: its Secret gone, and the status reset
    env.cluster.kubectl("delete", "secret", secret["metadata"]["name"], "-n", env.ns)
    _reset_to_pending(env, LONG)
    env.op.start()
    eg = env.wait_phase("eg", LONG, "TokenIssued")
    assert eg["status"]["tokenSHA256"] == token_sha256(first)
    wait_for("the Secret stored again", lambda: env.secret(LONG) is not None, 30,
             on_timeout=env.op.log_tail)
    assert _token(env, LONG) == first
    minted = [r for r in env.op.audit_events() if r["event"] == "TokenMinted"]
    assert [(r["data"]["tokenSHA256"], r["data"]["kid"]) for r in minted] == \
        [(token_sha256(first), signed_by)] * 2, minted
    assert len({r["data"]["jtiSHA256"] for r in minted}) == 1
    _assert_one_token_and_one_job_each(env, [LONG])


def test_a_lost_token_secret_is_not_stored_again_once_its_token_expired(env: Env) -> None:
    """A long name's grant (its status records its token) whose token Secret was lost while
    the operator was away, back after the token's lifetime but within the leeway (the sweep
    does not expire it yet): the token is not stored again for a gateway to start a command
    on late. The grant ends Expired, as a token issued on its claim and never stored does,
    with its Job, and no second TokenMinted."""
    env.op.stop()
    env.op.extra_env["WINGMAN_LEEWAY_SECONDS"] = "60"
    env.op.start()
    eg, secret = _issued_for_30_s_then_stopped(env)
    env.cluster.kubectl("delete", "secret", secret["metadata"]["name"], "-n", env.ns)
    _start_after_the_token_expired(env, eg)
    st = env.wait_phase("eg", LONG, "Expired")["status"]
    assert st["reason"] == "TokenExpired", st
    assert "expired before it could be stored again" in st["message"], st["message"]
    assert st["tokenSHA256"] == eg["status"]["tokenSHA256"]
    wait_for("the grant's Job removed", lambda: env.job(LONG) is None, 20,
             on_timeout=env.op.log_tail)
    assert get(env.cluster, "secret", env.ns, secret["metadata"]["name"]) is None
    assert [r["event"] for r in env.op.audit_events()].count("TokenMinted") == 1


def test_a_grant_reset_to_pending_after_its_key_was_pruned_never_gets_a_second_token(
        env: Env) -> None:
    """The key that signed the recorded token rotated out and pruned: no key makes that token
    again, and the active key's would be a second one. Refused, nothing stored, no second
    TokenMinted."""
    from wingman.cli.main import main as cli

    first = _issued(env, "req", LONG)
    secret = env.secret(LONG)
    assert secret is not None
    env.op.stop()
    kubeconfig = str(env.cluster.kubeconfig)
    assert cli(["keys", "rotate", "-n", env.ns, "--kubeconfig", kubeconfig]) == 0
    assert cli(["keys", "prune", "-n", env.ns, "--kubeconfig", kubeconfig]) == 0
    env.cluster.kubectl("delete", "secret", secret["metadata"]["name"], "-n", env.ns)
    _reset_to_pending(env, LONG)
    env.op.start()
    eg = _refused_without_a_second_token(env, LONG)
    assert "no signing key in the ring makes that token again" in eg["status"]["message"]
    assert "submit a new request" in eg["status"]["message"], eg["status"]
    assert eg["status"]["tokenSHA256"] == token_sha256(first)


def _refused_without_a_second_token(env: Env, grant: str) -> dict[str, Any]:
    """The grant is Denied TokenBindingMismatch, its Job and token Secrets are removed, and
    only the first token was ever minted."""
    eg = env.wait_phase("eg", grant, "Denied")
    assert eg["status"]["reason"] == "TokenBindingMismatch", eg["status"]
    wait_for("the grant's Job and Secrets removed", lambda: env.job(grant) is None and not (
        json.loads(env.cluster.kubectl("get", "secrets", "-n", env.ns, "-o", "json", "-l",
                                       f"{names.GRANT_LABEL}={grant}").stdout)["items"]), 30,
             on_timeout=lambda: f"job: {env.job(grant)}\nsecrets: " + env.cluster.kubectl(
                 "get", "secrets", "-n", env.ns, "-o", "yaml").stdout)
    assert [r["event"] for r in env.op.audit_events()].count("TokenMinted") == 1
    return eg


def test_a_grant_reset_to_pending_after_its_job_ended_gets_no_new_job(env: Env) -> None:
    """The Job that had the grant's token ended (its pod went) and the status was reset to
    Pending meanwhile: a Pending grant's ended Job is normally replaced, but not one a token
    was stored for. The grant is refused; no second Job, no second token."""
    _issued(env, "req", LONG)
    env.op.stop()
    _fail_the_job(env, LONG)
    _reset_to_pending(env, LONG)
    env.op.start()
    _refused_without_a_second_token(env, LONG)


def test_a_gateway_job_that_ended_before_any_gateway_ran_says_the_command_did_not_run(
        env: Env) -> None:
    """The operator was killed once the claim recorded the token, before the Secret was stored,
    and the gateway Job failed while it was away (its pod, waiting for the Secret, deleted):
    nothing could have run, since no gateway ever wrote Running (which it does, with the
    token's hash, before any command), and the grant's message says so plainly. A grant whose
    status records its token (a long name) cannot tell a status reset from a gateway that
    never started: its message still says the command may or may not have run."""
    env.request("req")
    env.wait_phase("ar", "req", "AutoApproved")
    env.op.stop()
    env.op.extra_env["WINGMAN_FAULT_KILL_AT"] = "command-claimed"
    env.op.start()
    env.grant("g", "req", RESTART)
    wait_for("the SIGKILL", lambda: env.op.proc is not None and env.op.proc.poll() is not None,
             60, on_timeout=env.op.log_tail)
    del env.op.extra_env["WINGMAN_FAULT_KILL_AT"]
    assert env.secret("g") is None, "the kill came before the token was stored"
    _fail_the_job(env, "g")
    env.op.start()
    st = env.wait_phase("eg", "g", "Failed")["status"]
    assert st["reason"] == "GatewayFailed", st
    assert "so the command did not run" in st["message"], st["message"]
    assert "may or may not" not in st["message"]
    [failed] = [r for r in env.op.audit_events()
                if r["event"] == "GrantFailed" and r["subject"]["name"] == "g"]
    assert "did not run" in failed["data"]["message"]

    _issued(env, "req2", LONG)
    env.op.stop()
    _fail_the_job(env, LONG)
    env.op.start()
    st = env.wait_phase("eg", LONG, "Failed")["status"]
    assert st["reason"] == "GatewayFailed", st
    assert "may or may not have run" in st["message"], st["message"]


def test_a_token_issued_on_its_claim_and_not_stored_within_its_lifetime_is_never_stored(
        env: Env) -> None:
    """The operator was killed once the claim recorded the token, before anything was audited
    or stored, and came back after the token's lifetime (within the leeway, when the sweep
    does not expire it yet): the token is born expired, as on the earlier flow. The grant ends
    Expired with its Job, and no Secret, TokenMinted or GrantAuthorized is made for a token
    nobody could use."""
    env.request("req")
    env.wait_phase("ar", "req", "AutoApproved")
    env.op.stop()
    env.op.extra_env["WINGMAN_FAULT_KILL_AT"] = "command-claimed"
    env.op.extra_env["WINGMAN_LEEWAY_SECONDS"] = "60"
    env.op.start()
    env.grant("g", "req", RESTART, ttlSeconds=30)
    wait_for("the SIGKILL", lambda: env.op.proc is not None and env.op.proc.poll() is not None,
             60, on_timeout=env.op.log_tail)
    del env.op.extra_env["WINGMAN_FAULT_KILL_AT"]
    left = env.view("g")
    assert left is not None and grant_rules.phase(left) == "TokenIssued"
    assert env.secret("g") is None
    _start_after_the_token_expired(env, left)
    st = env.wait_phase("eg", "g", "Expired")["status"]
    assert st["reason"] == "TokenExpired", st
    assert "expired before it could be stored" in st["message"], st["message"]
    assert st["tokenSHA256"] == left["status"]["tokenSHA256"]
    wait_for("the grant's Job removed", lambda: env.job("g") is None, 20,
             on_timeout=env.op.log_tail)
    assert get(env.cluster, "secret", env.ns, left["status"]["tokenSecretName"]) is None
    events = [r["event"] for r in env.op.audit_events() if r["subject"]["name"] == "g"]
    assert "TokenMinted" not in events and "GrantAuthorized" not in events, events
    assert events[-1] == "GrantExpired", events


def test_a_token_that_cannot_be_minted_before_its_claim_leaves_the_command_unused(
        env: Env) -> None:
    """A command the scope check takes whose token would be too long for the gateway (its
    quotes doubled by JSON's escaping): a token issued on its claim is minted before the
    command is claimed, so the refusal says the command is not used up, and it is not: the
    approval records no claim, and another grant for the command is refused for the same
    reason, not CommandAlreadyGranted."""
    long_command = "kubectl rollout restart deployment/frontend" + '""' * 1970 + " -n apps"
    env.request("req", commands=(long_command,))
    if env.wait_phase("ar", "req", "AutoApproved", "AwaitingDecision")["status"]["phase"] \
            == "AwaitingDecision":
        env.approve("req")
        env.wait_phase("ar", "req", "Approved")
    env.grant("g", "req", long_command)
    st = env.wait_phase("eg", "g", "Denied")["status"]
    assert st["reason"] == "TokenNotMintable", st
    assert "too long to be carried in a token" in st["message"], st["message"]
    assert "not used up" in st["message"] and "CommandAlreadyGranted" not in st["message"]
    ar = get(env.cluster, "ar", env.ns, "req")
    assert ar is not None
    assert not (ar.get("status") or {}).get("grants"), ar.get("status")
    env.grant("g2", "req", long_command)
    assert env.wait_phase("eg", "g2", "Denied")["status"]["reason"] == "TokenNotMintable"


def test_a_grant_created_again_under_a_deleted_ones_name_clears_its_orphaned_job(
        env: Env) -> None:
    """A grant deleted with propagation Orphan leaves its gateway Job without an owner; a grant
    created again under its name before the sweep removed it (the sweep waits its interval
    here) is not refused JobConflict for good: the operator removes the orphan as the sweep
    would (GrantOrphansRemoved first, its Secret and Job) and issues the new grant's token to a
    Job of its own."""
    env.op.stop()
    env.op.extra_env["WINGMAN_SWEEP_INTERVAL_SECONDS"] = "3600"
    env.op.start()
    env.request("req")
    env.wait_phase("ar", "req", "AutoApproved")
    env.grant("g", "req", RESTART)
    env.wait_phase("eg", "g", "TokenIssued")
    old = get(env.cluster, "eg", env.ns, "g")
    old_job = env.job("g")
    assert old is not None and old_job is not None
    env.as_approver("delete", "eg", "g", "--cascade=orphan")
    wait_for("the grant deleted", lambda: get(env.cluster, "eg", env.ns, "g") is None, 60)
    left = env.job("g")
    assert left is not None and left["metadata"]["uid"] == old_job["metadata"]["uid"]
    assert not left["metadata"].get("ownerReferences"), "orphaned, not deleted"
    env.request("req2")
    env.wait_phase("ar", "req2", "AutoApproved")
    env.grant("g", "req2", RESTART)
    eg = env.wait_phase("eg", "g", "TokenIssued", "Denied")
    assert eg["status"]["phase"] == "TokenIssued", eg["status"]
    job = env.job("g")
    assert job is not None and job["metadata"]["uid"] != old_job["metadata"]["uid"]
    assert [o["uid"] for o in job["metadata"]["ownerReferences"]] == [eg["metadata"]["uid"]]
    [removed] = [r for r in env.op.audit_events() if r["event"] == "GrantOrphansRemoved"]
    assert removed["subject"]["uid"] == old["metadata"]["uid"]
    assert removed["data"]["jobs"] == ["g-gw"] and len(removed["data"]["secrets"]) == 1
    assert verify(str(env.op.audit_path)).ok


def test_a_pending_grant_whose_job_ended_after_its_token_expired_is_expired(env: Env) -> None:
    """The token Secret was stored, the grant's status never recorded it within the token's
    lifetime, and the gateway, which waits for TokenIssued until its token expires, gave up:
    the grant ends Expired (not a binding mismatch), with everything it owned removed."""
    _issued(env, "req", LONG)
    secret = env.secret(LONG)
    assert secret is not None
    env.op.stop()
    _fail_the_job(env, LONG)
    _reset_to_pending(env, LONG)
    # (only the operator's identity may change a token Secret: admission)
    aged = kubectl_as_sa(env.cluster, env.ns, "wingman-operator", "annotate", "secret",
                         secret["metadata"]["name"], "-n", env.ns, "--overwrite",
                         f"{names.EXPIRES_ANNOTATION}={int(time.time()) - 1}")
    assert aged.returncode == 0, aged.stderr
    env.op.start()
    eg = env.wait_phase("eg", LONG, "Expired")
    assert eg["status"]["reason"] == "TokenExpired", eg["status"]
    assert "expired before the grant's status recorded it" in eg["status"]["message"]
    wait_for("the grant's Job and Secret removed",
             lambda: env.job(LONG) is None and get(env.cluster, "secret", env.ns,
                                                  secret["metadata"]["name"]) is None, 30)
    assert [r["event"] for r in env.op.audit_events()].count("TokenMinted") == 1


def test_a_token_secret_adopted_after_its_token_expired_is_not_issued(env: Env) -> None:
    """A run cut short after the token Secret was stored and before the status recorded it
    (here: the status reset to Pending), and the operator away for longer than the token's
    lifetime: the Secret in place is not adopted into a TokenIssued status (the gateway would
    only refuse the token late). The grant ends Expired, as a token minted now would be, with
    no second GrantAuthorized, and its Job and Secret are removed."""
    eg, secret = _issued_for_30_s_then_stopped(env)
    _reset_to_pending(env, LONG)
    _start_after_the_token_expired(env, eg)
    eg = env.wait_phase("eg", LONG, "Expired")
    assert eg["status"]["reason"] == "TokenExpired", eg["status"]
    assert "expired before it could be issued" in eg["status"]["message"]
    wait_for("the grant's Job and Secret removed",
             lambda: env.job(LONG) is None and get(env.cluster, "secret", env.ns,
                                                  secret["metadata"]["name"]) is None, 30)
    events = [r["event"] for r in env.op.audit_events()]
    assert events.count("TokenMinted") == 1 and events.count("GrantAuthorized") == 1, events
    assert 'outcome="TokenIssued"} 1.0' not in env.op.metrics()


def test_a_grant_reset_to_pending_after_its_job_was_deleted_gets_no_second_token(
        env: Env) -> None:
    """The grant's Job is gone, its token Secret is still there, and the status was reset to
    Pending: a new Job would mount a Secret of another name, so the operator looks for any token
    Secret the grant owns before it stores one. It refuses the grant and removes that Secret and
    the new Job: no second Job while a token exists, no second token."""
    _issued(env, "req", LONG)
    first = env.secret(LONG)
    assert first is not None
    env.op.stop()
    env.cluster.kubectl("delete", "job", names.job_name(LONG), "-n", env.ns, "--wait=true")
    _reset_to_pending(env, LONG)
    env.op.start()
    eg = _refused_without_a_second_token(env, LONG)
    assert first["metadata"]["name"] in eg["status"]["message"]


def test_a_job_that_does_not_run_as_the_gateway_is_never_given_a_token(env: Env) -> None:
    """Someone who can create Jobs made one under the grant's Job name, claiming the grant as its
    owner, running as another ServiceAccount (admission stops anyone but the operator from
    making Jobs that run as the gateway): the operator does not adopt it."""
    env.request("req")
    env.wait_phase("ar", "req", "AutoApproved")
    env.op.stop()
    env.grant("g", "req", RESTART)
    eg = get(env.cluster, "eg", env.ns, "g")
    assert eg is not None
    env.cluster.kubectl("create", "-n", env.ns, "-f", "-", input=json.dumps({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": names.job_name("g"), "ownerReferences": [
            {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant", "name": "g",
             "uid": eg["metadata"]["uid"]}]},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "serviceAccountName": "default",
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9",
                            "volumeMounts": [{"name": "token", "mountPath": "/t"}]}],
            "volumes": [{"name": "token", "secret": {"secretName": "g-token-mine"}}]}}}}))
    env.op.start()
    eg = env.wait_phase("eg", "g", "Denied")
    assert eg["status"]["reason"] == "JobConflict", eg["status"]
    assert "does not run as the gateway" in eg["status"]["message"]
    assert "create a new grant" in eg["status"]["message"], eg["status"]  # nothing claimed
    assert get(env.cluster, "secret", env.ns, "g-token-mine") is None
    ar = get(env.cluster, "ar", env.ns, "req")
    assert ar is not None and not (ar.get("status") or {}).get("grants")
    assert "TokenMinted" not in [r["event"] for r in env.op.audit_events()]


@pytest.mark.parametrize("grant", ["g", LONG], ids=["claim", "long"])
def test_a_job_not_of_the_grant_found_after_its_claim_says_to_submit_a_new_request(
        env: Env, grant: str) -> None:
    """An earlier run claimed the command and stopped; the grant's Job was replaced by one
    that is not the grant's since. The approval still grants its command to it: another grant
    would be refused (CommandAlreadyGranted), so the message names a new request. A grant
    whose claim recorded its token (issued on the claim) is never Denied: it ends Failed; a
    grant whose Job is not named after it was claimed before its token, so it is Denied (still
    Pending)."""
    _killed_after_the_job(env, at="command-claimed", grant=grant)
    job = names.job_name(grant)
    env.cluster.kubectl("delete", "job", job, "-n", env.ns, "--wait=true")
    env.cluster.kubectl("create", "-n", env.ns, "-f", "-", input=json.dumps({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "serviceAccountName": "default",
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9"}]}}}}))
    env.op.start()
    ended = "Failed" if grant == "g" else "Denied"
    wait_for(f"eg/{grant} {ended}", lambda: (get(env.cluster, "eg", env.ns, grant) or {}).get(
        "status", {}).get("phase") == ended, 60, on_timeout=env.op.log_tail)
    eg = get(env.cluster, "eg", env.ns, grant)
    assert eg is not None
    assert eg["status"]["reason"] == "JobConflict", eg["status"]
    assert "does not belong to this grant" in eg["status"]["message"], eg["status"]
    assert "submit a new request" in eg["status"]["message"], eg["status"]  # command used up
    ar = get(env.cluster, "ar", env.ns, "req")
    assert ar is not None
    assert [e["grant"] for e in ar["status"]["grants"]] == [grant], ar["status"]


def test_a_lost_token_is_stored_again_only_when_it_is_the_one_recorded(env: Env) -> None:
    """TokenIssued, Secret gone: the same token goes back into the Secret. When no key the
    operator holds makes the token the status records again (here: the key that signed it was
    rotated out and pruned; the record itself can no longer change), the grant fails closed
    and no token is stored."""
    from wingman.cli.main import main as cli

    first = _issued(env, "req", "g1")
    env.op.stop()
    env.cluster.kubectl("delete", "secret", env.secret_name("g1"), "-n", env.ns)
    env.op.start()
    wait_for("the Secret stored again", lambda: env.secret("g1") is not None, 30,
             on_timeout=env.op.log_tail)
    assert _token(env, "g1") == first
    assert env.grant_phase("g1") == "TokenIssued"
    # the same token stored again is not another token minted
    assert 'wingman_tokens_minted_total{environment="test"} 1.0' not in env.op.metrics()

    _issued(env, "req2", "g2")
    env.op.stop()
    env.cluster.kubectl("delete", "secret", env.secret_name("g2"), "-n", env.ns)
    kubeconfig = str(env.cluster.kubeconfig)
    assert cli(["keys", "rotate", "-n", env.ns, "--kubeconfig", kubeconfig]) == 0
    assert cli(["keys", "prune", "-n", env.ns, "--kubeconfig", kubeconfig]) == 0
    env.op.start()
    eg = env.wait_phase("eg", "g2", "Failed")  # once TokenIssued, never Denied
    assert eg["status"]["reason"] == "TokenMissing"
    assert "cannot be made again" in eg["status"]["message"]
    assert "was pruned" in eg["status"]["message"], eg["status"]["message"]
    # the approval holds the command for g2: the way on is a new request, not a new grant
    assert "submit a new request" in eg["status"]["message"], eg["status"]["message"]
    assert "new grant" not in eg["status"]["message"]
    assert env.secret("g2") is None
    wait_for("the Job of g2 removed", lambda: env.job("g2") is None, 30)
    minted = [r for r in env.op.audit_events() if r["event"] == "TokenMinted"
              and r["subject"]["name"] == "g2"]
    assert len(minted) == 1, "no token made with the active key is ever stored or audited"


def test_a_token_lost_after_a_key_rotation_is_stored_again_with_the_key_that_signed_it(
        env: Env) -> None:
    """TokenIssued, the signing key rotated since, then the Secret deleted: the status records
    the token's hash, not its key, so the operator makes the token again with each key still in
    the ring and stores the one that hashes to the record: the very token (same jti, same burn
    marker), which the gateway still verifies with the retired key's public half. Audited as a
    TokenMinted ``again`` that names the retired key; nothing counted as minted."""
    from wingman.cli.main import main as cli

    first = _issued(env, "req", "g")
    signed_by = jwt.get_unverified_header(first)["kid"]
    secret = env.secret("g")
    assert secret is not None
    env.op.stop()
    assert cli(["keys", "rotate", "-n", env.ns, "--kubeconfig", str(env.cluster.kubeconfig)]) == 0
    env.cluster.kubectl("delete", "secret", secret["metadata"]["name"], "-n", env.ns)
    env.op.start()
    wait_for("the Secret stored again", lambda: env.secret("g") is not None, 30,
             on_timeout=env.op.log_tail)
    assert _token(env, "g") == first
    stored = env.secret("g")
    assert stored is not None and stored["metadata"]["name"] == secret["metadata"]["name"]
    assert stored["metadata"]["uid"] != secret["metadata"]["uid"], "a new Secret, same token"
    keys = get(env.cluster, "secret", env.ns, "wingman-signing-key")
    assert keys is not None
    assert base64.b64decode(keys["data"]["active"]).decode() != signed_by, "rotated"
    _assert_issued_once(env, "g")  # verifies with the published keys; one jti, one story
    minted = [r for r in env.op.audit_events() if r["event"] == "TokenMinted"
              and r["subject"]["name"] == "g"]
    assert [(r["data"].get("again"), r["data"]["kid"]) for r in minted] == \
        [(None, signed_by), (True, signed_by)], minted
    assert 'wingman_tokens_minted_total{environment="test"} 1.0' not in env.op.metrics()
    _assert_one_token_and_one_job_each(env, ["g"])


def test_a_token_secret_that_does_not_hold_the_recorded_token_is_refused(env: Env) -> None:
    _issued(env, "req", "g")
    env.op.stop()
    # only the operator's identity may change a token Secret (admission): as if it had
    changed = kubectl_as_sa(env.cluster, env.ns, "wingman-operator", "patch", "secret",
                            env.secret_name("g"), "-n", env.ns, "--type=merge", "-p",
                            json.dumps({"stringData": {"token": "x.y.z"}}))
    assert changed.returncode == 0, changed.stderr
    env.op.start()
    eg = env.wait_phase("eg", "g", "Failed")
    assert eg["status"]["reason"] == "TokenBindingMismatch", eg["status"]
    assert "does not hold the token recorded" in eg["status"]["message"]
    assert "submit a new request" in eg["status"]["message"], eg["status"]
    wait_for("the grant's Job and Secret removed",
             lambda: env.job("g") is None and env.secret("g") is None, 30)


def test_a_grant_whose_job_is_gone_before_the_gateway_ran_fails_without_a_new_job(
        env: Env) -> None:
    """No new Job for an issued token: it is bound to the Job that is gone."""
    _issued(env, "req", "g")
    env.op.stop()
    env.cluster.kubectl("delete", "job", names.job_name("g"), "-n", env.ns, "--wait=true")
    env.op.start()
    eg = env.wait_phase("eg", "g", "Failed")
    assert eg["status"]["reason"] == "JobMissing", eg["status"]
    assert "submit a new request" in eg["status"]["message"], eg["status"]  # command used up
    wait_for("the token Secret removed", lambda: env.secret("g") is None, 30)
    assert env.job("g") is None


def _killed_after_the_job(env: Env, at: str = "job-created", grant: str = "g") -> None:
    """Grant ``grant`` of an approved ``req``, the operator killed (SIGKILL) right after it
    created the grant's Job (or at the crash point ``at``), and not started again."""
    env.request("req")
    env.wait_phase("ar", "req", "AutoApproved")
    env.op.stop()
    env.op.extra_env["WINGMAN_FAULT_KILL_AT"] = at
    env.op.start()
    env.grant(grant, "req", RESTART)
    wait_for("the SIGKILL", lambda: env.op.proc is not None and env.op.proc.poll() is not None,
             60, on_timeout=env.op.log_tail)
    del env.op.extra_env["WINGMAN_FAULT_KILL_AT"]


def test_a_pending_grants_job_that_ended_before_its_token_is_replaced(env: Env) -> None:
    """Killed right after the Job was created; while the operator is down the Job's waiting
    pod goes (an eviction) and the Job fails (backoffLimit 0). The restarted operator must not
    claim the command for a Job that can never run: it makes a new Job, then the token."""
    _killed_after_the_job(env)
    first = _fail_the_job(env, "g")
    env.op.start()
    env.wait_phase("eg", "g", "TokenIssued")
    job = env.job("g")
    assert job is not None and job["metadata"]["uid"] != first["metadata"]["uid"]
    _assert_one_token_and_one_job_each(env, ["g"])


def test_a_claim_long_after_the_job_extends_the_job_s_deadline_before_the_token(
        env: Env) -> None:
    """Killed right after the Job was created and back more than 30 s later: the Job's
    deadline (counted from its start, a moment after its creation) would stop a command the
    token lets the gateway start late in its life. The restarted operator claims the command,
    extends the deadline by a guarded patch before the token exists, and the token keeps its
    whole lifetime."""
    _killed_after_the_job(env)
    first = env.job("g")
    assert first is not None
    made = dt.datetime.fromisoformat(first["metadata"]["creationTimestamp"].replace(
        "Z", "+00:00")).timestamp()
    time.sleep(max(0.0, made + 32 - time.time()))  # the operator away for over 30 s
    env.op.start()
    env.wait_phase("eg", "g", "TokenIssued")
    job = env.job("g")
    assert job is not None and job["metadata"]["uid"] == first["metadata"]["uid"]
    secret = env.secret("g")
    assert secret is not None
    claims = jwt.decode(base64.b64decode(secret["data"]["token"]).decode(),
                        options={"verify_signature": False})
    gateway_env = {e["name"]: e.get("value") for e in
                   job["spec"]["template"]["spec"]["containers"][0]["env"]}
    leeway = int(gateway_env["WINGMAN_LEEWAY_SECONDS"])
    timeout = int(gateway_env["WINGMAN_EXEC_TIMEOUT_SECONDS"])
    ttl = int(first["spec"]["activeDeadlineSeconds"]) - leeway - timeout - 60
    assert int(claims["exp"]) - int(claims["iat"]) == ttl  # the whole lifetime
    assert int(claims["iat"]) >= made + 32
    # the command's latest end (expiry + leeway + timeout) and 60 s, from the Job's creation
    assert job["spec"]["activeDeadlineSeconds"] == \
        int(claims["exp"]) + leeway + timeout + 60 - int(made)
    assert '"gateway Job deadline extended for a late claim"' in env.op.log_path.read_text()
    _assert_one_token_and_one_job_each(env, ["g"])


def test_operator_state_is_never_taken_from_metadata_others_can_write(env: Env) -> None:
    """Issue 10, defect 9: the operator's bookkeeping must not live where workers and approvers
    write. Admission refuses the operator's annotation domains to them; and even without that
    policy, such annotations (an approver's Reject patched together with kopf's last-handled
    configuration, a worker's request created with it) change nothing the operator does."""
    key = "wingman.dev/last-handled-configuration"
    env.request("req")
    ar = env.wait_phase("ar", "req", "AutoApproved")
    reject = {"verdict": "Reject", "by": APPROVER, "reason": "not now"}
    spec_after = {**ar["spec"], "decisions": [reject]}
    attack = json.dumps([{"op": "add", "path": "/spec/decisions", "value": [reject]},
                         {"op": "add", "path": "/metadata/annotations",
                          "value": {key: json.dumps({"spec": spec_after})}}])
    refused = env.as_approver("patch", "ar", "req", "--type=json", "-p", attack, check=False)
    assert refused.returncode != 0
    assert f"reserved for the Wingman operator on ApprovalRequests; remove '{key}'" in \
        " ".join(refused.stderr.split())
    marked = approval_request("pre-marked", requester=WORKER, environment="test",
                              commands=(RESTART,))
    marked["metadata"]["annotations"] = {key: json.dumps({"spec": marked["spec"]})}
    refused = env.as_worker("create", "-f", "-", input=json.dumps(marked), check=False)
    assert refused.returncode != 0 and "reserved for the Wingman operator" in refused.stderr

    binding = f"wingman-{env.ns}-metadata"
    saved = json.loads(env.cluster.kubectl("get", "validatingadmissionpolicybinding", binding,
                                           "-o", "json").stdout)
    env.cluster.kubectl("delete", "validatingadmissionpolicybinding", binding)
    try:
        def lets_through() -> bool:
            probe = env.as_worker("create", "--dry-run=server", "-f", "-",
                                  input=json.dumps(marked), check=False)
            through: bool = probe.returncode == 0
            return through
        wait_for("the metadata policy to be gone", lets_through, 30)
        env.as_approver("patch", "ar", "req", "--type=json", "-p", attack)
        ar = env.wait_phase("ar", "req", "Rejected")
        conds = {c["type"]: c["status"] for c in ar["status"]["conditions"]}
        assert conds["Revoked"] == "True"
        env.grant("after", "req", RESTART)
        eg = env.wait_phase("eg", "after", "Denied")
        assert eg["status"]["reason"] == "ApprovalRevoked"
        assert env.secret("after") is None
        env.as_worker("create", "-f", "-", input=json.dumps(marked))
        env.wait_phase("ar", "pre-marked", "AutoApproved")
    finally:
        meta = saved["metadata"]
        for k in ("resourceVersion", "uid", "creationTimestamp", "generation",
                  "managedFields"):
            meta.pop(k, None)
        env.cluster.kubectl("create", "-f", "-", input=json.dumps(saved))


def test_a_token_no_gateway_could_use_expires_and_its_secret_is_removed(env: Env) -> None:
    """The gateway pod is never created (here the cluster's own admission policy refuses pods
    in the namespace): once the token has expired (plus the leeway), the shared sweep settles
    the grant as Expired/TokenExpired and deletes the token Secret, and nothing of the grant is
    made again afterwards."""
    env.request("no-room")
    env.wait_phase("ar", "no-room", "AutoApproved")
    policy = f"{env.ns}-no-pods"
    env.cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "admissionregistration.k8s.io/v1",
             "kind": "ValidatingAdmissionPolicy", "metadata": {"name": policy},
             "spec": {"failurePolicy": "Fail",
                      "matchConstraints": {"resourceRules": [
                          {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"]}]},
                      "validations": [{"expression": "false", "message": "no pods here"}]}},
            {"apiVersion": "admissionregistration.k8s.io/v1",
             "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": policy},
             "spec": {"policyName": policy, "validationActions": ["Deny"],
                      "matchResources": {"namespaceSelector": {"matchLabels": {
                          "kubernetes.io/metadata.name": env.ns}}}}}]}))
    try:
        # the API server loads a new policy within a second or so: wait until it refuses
        wait_for("the policy enforced", lambda: "no pods here" in env.cluster.kubectl(
            "run", "probe", "--image=registry.k8s.io/pause:3.9", "--dry-run=server", "-n",
            env.ns, check=False).stderr, 30)
        env.grant("no-room-1", "no-room", RESTART, ttlSeconds=30)
        issued = env.wait_phase("eg", "no-room-1", "TokenIssued")
        assert env.secret("no-room-1") is not None
        expires = dt.datetime.fromisoformat(issued["status"]["tokenExpirationTime"])
        eg = env.wait_phase("eg", "no-room-1", "Expired", timeout=90)
        job = env.job("no-room-1")
        assert job is not None and not (job.get("status") or {}).get("active"), job
    finally:
        env.cluster.kubectl("delete", "validatingadmissionpolicybinding,"
                            "validatingadmissionpolicy", policy, "--ignore-not-found")
    st = eg["status"]
    assert st["reason"] == "TokenExpired" and "submit a new request" in st["message"]
    assert "new grant" not in st["message"]  # the approval holds the command for this grant
    # not before the token expired plus the leeway (5 s in the test environment)
    assert dt.datetime.fromisoformat(st["completionTime"]) >= expires + dt.timedelta(seconds=5)
    ready = {c["type"]: c for c in st["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "Expired")
    wait_for("the token Secret deleted", lambda: env.secret("no-room-1") is None, 20,
             on_timeout=env.op.log_tail)
    assert "TokenExpired" in {e["reason"] for e in env.events("no-room-1")}
    records = [r for r in env.op.audit_events() if r["subject"].get("name") == "no-room-1"]
    assert [r["event"] for r in records].count("GrantExpired") == 1
    assert st["auditRecordHash"] == f"sha256:{records[-1]['hash']}"
    # the sweeps after it find the grant final: no second token, no Secret made again
    time.sleep(3)
    assert env.secret("no-room-1") is None
    assert [r["event"] for r in env.op.audit_events()].count("TokenMinted") == 1
    assert "Traceback" not in env.op.log_path.read_text()
    assert verify(str(env.op.audit_path)).ok


def _api_requests(env: Env) -> dict[str, float]:
    """The operator's API requests so far, by ``verb resource`` (its own count of every call,
    ``wingman_api_requests_total``)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(env.op.metrics()):
        for s in family.samples:
            if s.name == "wingman_api_requests_total":
                key = f"{s.labels['verb']} {s.labels['resource']}"
                out[key] = out.get(key, 0.0) + s.value
    return out


def _api_requests_settled(env: Env, quiet: float = 3.0, timeout: float = 60.0
                          ) -> dict[str, float]:
    """``_api_requests`` once the counts have not changed for ``quiet`` seconds (the operator
    has acted on what its watches delivered, several sweeps ran), within ``timeout``. The
    leader Lease's renewals, on a timer of their own, are left out of what must settle."""
    def acting() -> tuple[dict[str, float], dict[str, float]]:
        counts = _api_requests(env)
        return counts, {k: v for k, v in counts.items() if not k.endswith(" leases")}

    deadline = time.monotonic() + timeout
    (_, last), since = acting(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        counts, now = acting()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return counts
    raise AssertionError(f"the operator's API requests did not settle for {quiet} s within "
                         f"{timeout} s; last: {last}\n{env.op.log_tail()}")


def test_an_expired_token_whose_gateway_waits_costs_one_read_of_the_grant_and_of_its_job(
        env: Env) -> None:
    """Grants whose gateway pods wait for a node past their token's expiry (the operator
    bench's retention phase, at scale): the Jobs watch already says each gateway Job is active,
    so the sweep reads nothing at the expiry and waits for the Job's end; when the Jobs fail
    (their pods deleted) each grant is read once and its Job once, before the one status write
    that ends it, and its token Secret is deleted. One Warning Event per grant, none for the
    rest."""
    count = 3
    grants = [f"slow-{i}" for i in range(count)]
    for g in grants:
        env.request(g)
    for g in grants:
        env.wait_phase("ar", g, "AutoApproved")
        env.grant(f"{g}-1", g, RESTART, ttlSeconds=30)
    issued = [env.wait_phase("eg", f"{g}-1", "TokenIssued") for g in grants]
    # no node runs the pods: each Job stays active (its pod Pending) past the token's expiry
    wait_for("the gateway Jobs active", lambda: all(
        ((env.job(f"{g}-1") or {}).get("status") or {}).get("active") for g in grants), 30)
    before = _api_requests_settled(env)  # the operator has acted on the Jobs' watch events
    expires = max(dt.datetime.fromisoformat(i["status"]["tokenExpirationTime"])
                  for i in issued)
    # past the expiry plus the leeway (5 s), and several sweeps (every second here)
    time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 5 + 4)
    assert all(env.grant_phase(f"{g}-1") == "TokenIssued" for g in grants)
    for g in grants:
        _fail_the_job(env, f"{g}-1")
    for g in grants:
        st = env.wait_phase("eg", f"{g}-1", "Failed")["status"]
        assert st["reason"] == "GatewayFailed", st
        wait_for("the token Secret deleted", _secret_gone(env, f"{g}-1"), 20,
                 on_timeout=env.op.log_tail)
    after = _api_requests_settled(env)  # a few sweeps more: nothing is read again
    spent = {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}
    assert spent.get("get executiongrants") == count, spent
    assert spent.get("get jobs") == count, spent
    assert spent.get("patch executiongrants/status") == count, spent
    assert spent.get("delete secrets") == count, spent
    assert spent.get("create events") == count, spent
    for g in grants:
        assert [e["reason"] for e in env.events(f"{g}-1")] == ["GatewayFailed"]


def test_a_failed_voter_leaves_an_auto_approvable_request_to_a_human(
        cluster: Any, crds: Path, tmp_path: Path) -> None:
    """An LLM reviewer that cannot be reached abstains; the four built-in voters still approve
    (3 of 5), but a request one reviewer could not judge is not auto-approved: it waits for a
    human, says why, and a human's approval moves it on."""
    ns = f"wm-op-{uuid.uuid4().hex[:8]}"
    # nothing listens on it, nor can start to while it is held: the voter fails with
    # ConnectionFailed
    with refused_port() as refusing, installed(
            cluster, "test", namespace=ns, target_namespace=f"{ns}-apps",
            values={"operator.replicas": 0, "operator.votersSecret": "wm-llm-keys"}):
        cluster.kubectl("create", "secret", "generic", "wm-llm-keys", "-n", ns,
                        "--from-literal=openai=sk-test-not-a-real-key")
        op = OperatorProcess(cluster, ns, tmp_path / "operator",
                             extra_env={"WINGMAN_VOTERS_SECRET": "wm-llm-keys"})
        policy = yaml.safe_load(op.policy_path.read_text())
        policy["panel"]["voters"].append(
            {"type": "openai", "name": "gpt-reviewer", "model": "gpt-4o-mini",
             "apiKeySecretKey": "openai", "baseURL": f"http://127.0.0.1:{refusing}/v1",
             "timeoutSeconds": 5})
        op.policy_path.write_text(yaml.safe_dump(policy))
        op.start()
        try:
            env = Env(cluster, ns, op)
            env.request("restart-frontend")
            ar = env.wait_phase("ar", "restart-frontend", "AwaitingDecision", "AutoApproved")
            status = ar["status"]
            assert status["phase"] == "AwaitingDecision", status["conditions"]
            votes = {v["voter"]: v for v in status["consensus"]["votes"]}
            assert votes["gpt-reviewer"]["verdict"] == "abstain"
            assert votes["gpt-reviewer"]["error"]
            assert status["consensus"]["outcome"] == "Approve", "the others still approved"
            conds = {c["type"]: c for c in status["conditions"]}
            assert "Approved" not in conds or conds["Approved"]["status"] != "True"
            message = conds["Reviewed"]["message"]
            assert "voter gpt-reviewer failed" in message
            assert "auto-approval needs every voter's vote, so a human decides" in message
            records = [json.loads(line) for line in op.audit_path.read_text().splitlines()]
            (reviewed,) = [r for r in records if r.get("event") == "ApprovalReviewed"
                           and "restart-frontend" in json.dumps(r)]
            assert "VoterFailed" in json.dumps(reviewed)
            assert "voter gpt-reviewer failed" in json.dumps(reviewed)
            env.approve("restart-frontend")
            env.wait_phase("ar", "restart-frontend", "Approved")
        finally:
            op.stop()


def test_an_allowlist_reject_is_never_auto_approved_at_the_high_risk_limit(
        cluster: Any, crds: Path, tmp_path: Path) -> None:
    """autoApproveMaxRisk: high. A routine restart outside the allowlist (another namespace):
    destructive, blast-radius and prompt-injection approve, the allowlist voter rejects at risk
    high, so the panel approves 3 of 4 within the limit; every grant of the command would be
    refused (NotInAllowlist), so it waits for a human, the Reviewed condition and the audit
    record saying why. The allowlisted restart is still auto-approved at that limit."""
    ns = f"wm-op-{uuid.uuid4().hex[:8]}"
    outside = "kubectl rollout restart deployment/frontend -n shop"
    with installed(cluster, "test", namespace=ns, target_namespace=f"{ns}-apps",
                   values={"operator.replicas": 0, "policy.autoApproveMaxRisk": "high"}):
        op = OperatorProcess(cluster, ns, tmp_path / "operator")
        op.start()
        try:
            env = Env(cluster, ns, op)
            env.request("inside")
            env.request("outside", commands=(outside,))
            env.wait_phase("ar", "inside", "AutoApproved")
            ar = env.wait_phase("ar", "outside", "AwaitingDecision", "AutoApproved")
            status = ar["status"]
            assert status["phase"] == "AwaitingDecision", status["conditions"]
            consensus = status["consensus"]
            assert (consensus["outcome"], consensus["approvals"], consensus["risk"]) == (
                "Approve", 3, "high")
            assert [v["voter"] for v in consensus["dissent"]] == ["allowlist"]
            conds = {c["type"]: c for c in status["conditions"]}
            assert "Approved" not in conds
            message = conds["Reviewed"]["message"]
            assert "command 1 of the request is outside the allowlist of environment test" \
                in message
            assert "voter allowlist: 1 of 1 commands are outside" in message
            (reviewed,) = [r for r in op.audit_events() if r["event"] == "ApprovalReviewed"
                           and (r.get("subject") or {}).get("name") == "outside"]
            assert reviewed["data"]["reason"] == "OutsideAllowlist", reviewed
        finally:
            op.stop()


# ------------------------------------------------------------------ rollbacks on the claim path

UNDO_SCALE = "kubectl scale deployment/checkout --replicas=1 -n apps"


def _rollback_request(env: Env, name: str) -> None:
    """An approved request for SCALE naming UNDO_SCALE as its reviewed rollback."""
    env.request(name, commands=(SCALE,), rollbacks=[{"command": SCALE, "rollback": UNDO_SCALE}])
    ar = env.wait_phase("ar", name, "AutoApproved", "AwaitingDecision")
    if ar["status"]["phase"] == "AwaitingDecision":
        env.approve(name)
        env.wait_phase("ar", name, "Approved")


def _ran(env: Env, grant: str, *, finished: dt.datetime | None = None) -> None:
    """What the gateway writes once the grant's command ran: Succeeded, exit code 0."""
    when = finished or dt.datetime.now(dt.UTC)
    env.cluster.kubectl("patch", "eg", grant, "-n", env.ns, "--subresource=status",
                        "--type=merge", "-p", json.dumps({"status": {
                            "phase": "Succeeded", "reason": "CommandSucceeded", "exitCode": 0,
                            "startTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "completionTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")}}))


def _denied_without_a_claim(env: Env, request: str, grant: str, reason: str) -> None:
    eg = env.wait_phase("eg", grant, "Denied")
    assert eg["status"]["reason"] == reason, eg["status"]
    assert env.secret(grant) is None and env.job(grant) is None
    ar = get(env.cluster, "ar", env.ns, request)
    assert ar is not None
    assert grant not in [e["grant"] for e in ar["status"].get("grants") or []], \
        "a refused rollback claims nothing"


def test_a_rollback_grant_is_issued_on_its_claim_once_and_only_after_its_command_ran(
        env: Env) -> None:
    """A rollback grant takes the claim path of any grant: its claim on the request records
    its token (with ``rollbackOf``, the command it undoes), the operator writes nothing to the
    grant, the Secret holds that very token, and the audit records name the rollback command.
    Refused before the forward command ran, and a second time."""
    _rollback_request(env, "req")
    env.grant("fwd", "req", SCALE)
    env.wait_phase("eg", "fwd", "TokenIssued")
    # issued, but its gateway never ran the command: nothing to undo yet
    env.grant("rb-early", "req", UNDO_SCALE, rollbackOf={"name": "fwd"})
    _denied_without_a_claim(env, "req", "rb-early", "ForwardNotRun")

    _ran(env, "fwd")
    env.grant("rb", "req", UNDO_SCALE, rollbackOf={"name": "fwd"})
    eg = env.wait_phase("eg", "rb", "TokenIssued")
    st = eg["status"]
    # issued on its claim: no TokenIssued (nor any) status written to the grant
    stored = get(env.cluster, "eg", env.ns, "rb")
    assert stored is not None
    assert "status" not in stored, stored.get("status")
    secret, job = env.secret("rb"), env.job("rb")
    assert secret is not None and job is not None
    token = base64.b64decode(secret["data"]["token"]).decode()
    ar = get(env.cluster, "ar", env.ns, "req")
    assert ar is not None
    forward, rollback = ar["status"]["grants"]
    assert (forward["grant"], forward["command"], forward.get("rollbackOf")) == \
        ("fwd", SCALE, None)
    assert (rollback["grant"], rollback["grantUID"], rollback["command"],
            rollback["rollbackOf"]) == ("rb", eg["metadata"]["uid"], UNDO_SCALE, SCALE)
    assert {k: rollback[k] for k in grant_rules.ISSUED_FIELDS} == {
        "tokenSHA256": token_sha256(token), "jobName": job["metadata"]["name"],
        "tokenSecretName": secret["metadata"]["name"],
        "tokenExpirationTime": st["tokenExpirationTime"]}
    assert st["tokenSHA256"] == token_sha256(token)
    claims = _verified(env, token, ar, eg, job, UNDO_SCALE)
    assert dt.datetime.fromisoformat(rollback["tokenExpirationTime"]).timestamp() == claims.exp
    assert dt.datetime.fromisoformat(rollback["grantedAt"]).timestamp() == claims.iat

    def of_rb(event: str) -> list[dict[str, Any]]:
        return [r for r in env.op.audit_events() if r["event"] == event and (
            r["subject"]["name"] == "rb" or r["data"].get("grant") == "rb")]
    wait_for("the rollback's records", lambda: of_rb("GrantAuthorized"), 30)
    (granted,) = of_rb("ApprovalCommandGranted")
    assert (granted["data"]["command"], granted["data"]["rollbackOf"],
            granted["data"]["grantUID"]) == (UNDO_SCALE, SCALE, eg["metadata"]["uid"])
    (minted,) = of_rb("TokenMinted")
    assert (minted["data"]["command"], minted["data"]["tokenSHA256"], minted["data"]["jobUID"]) \
        == (UNDO_SCALE, token_sha256(token), job["metadata"]["uid"])
    (authorized,) = of_rb("GrantAuthorized")
    assert (authorized["subject"]["uid"], authorized["data"]["tokenSHA256"],
            authorized["data"]["jobUID"]) == (eg["metadata"]["uid"], token_sha256(token),
                                              job["metadata"]["uid"])
    events = [r["event"] for r in env.op.audit_events() if r in (granted, minted, authorized)]
    assert events == ["ApprovalCommandGranted", "TokenMinted", "GrantAuthorized"]
    assert token not in env.op.audit_path.read_text()
    assert token not in env.op.log_path.read_text()

    # each reviewed rollback is claimed once; a rollback is not rolled back
    env.grant("rb-again", "req", UNDO_SCALE, rollbackOf={"name": "fwd"})
    _denied_without_a_claim(env, "req", "rb-again", "RollbackAlreadyGranted")
    _ran(env, "rb")
    env.grant("rb-of-rb", "req", SCALE, rollbackOf={"name": "rb"})
    _denied_without_a_claim(env, "req", "rb-of-rb", "ForwardGrantMismatch")
    # the rollback's claim is not the command's: the command stays used up by its grant
    env.grant("fwd-again", "req", SCALE)
    _denied_without_a_claim(env, "req", "fwd-again", "CommandAlreadyGranted")


@pytest.mark.parametrize("case", ["refused", "window-closed", "other-request", "revoked"])
def test_a_rollback_of_a_command_that_did_not_run_in_its_window_claims_nothing(
        env: Env, case: str) -> None:
    """The forward grant's gateway refused it (Failed without an exit code: the command never
    ran), it ran longer ago than the rollback window, or it is another request's grant."""
    _rollback_request(env, "req")
    env.grant("fwd", "req", SCALE)
    env.wait_phase("eg", "fwd", "TokenIssued")
    reason = {"refused": "ForwardNotRun", "window-closed": "RollbackWindowClosed",
              "other-request": "ForwardGrantMismatch", "revoked": "ApprovalRevoked"}[case]
    request = "req"
    if case == "refused":
        env.cluster.kubectl("patch", "eg", "fwd", "-n", env.ns, "--subresource=status",
                            "--type=merge", "-p", json.dumps({"status": {
                                "phase": "Failed", "reason": "TargetChanged",
                                "completionTime": dt.datetime.now(dt.UTC).strftime(
                                    "%Y-%m-%dT%H:%M:%SZ")}}))
    elif case == "window-closed":
        window = int(yaml.safe_load(env.op.policy_path.read_text())["rollbackWindowSeconds"])
        _ran(env, "fwd", finished=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=window + 60))
    elif case == "other-request":
        _ran(env, "fwd")
        _rollback_request(env, "other")
        request = "other"
    else:  # a Reject after the command ran revokes the approval, and its rollbacks with it
        _ran(env, "fwd")
        env.reject("req")
        env.wait_phase("ar", "req", "Rejected")
    env.grant("rb", request, UNDO_SCALE, rollbackOf={"name": "fwd"})
    _denied_without_a_claim(env, request, "rb", reason)
    denied = [r for r in env.op.audit_events() if r["event"] == "GrantDenied"]
    assert [r["data"]["reason"] for r in denied] == [reason]


def test_a_rollback_is_issued_on_its_claim_after_its_request_expired(env: Env) -> None:
    """The request's own expiry does not end its rollback's window: a rollback grant of a
    command that ran is issued on its claim after the request expired."""
    _rollback_request(env, "req")
    env.grant("fwd", "req", SCALE)
    env.wait_phase("eg", "fwd", "TokenIssued")
    _ran(env, "fwd")
    env.cluster.kubectl("patch", "ar", "req", "-n", env.ns, "--subresource=status",
                        "--type=merge", "-p",
                        json.dumps({"status": {"expirationTime": "2020-01-01T00:00:00Z"}}))
    env.wait_phase("ar", "req", "Expired")
    env.grant("rb", "req", UNDO_SCALE, rollbackOf={"name": "fwd"})
    eg = env.wait_phase("eg", "rb", "TokenIssued")
    ar = get(env.cluster, "ar", env.ns, "req")
    assert ar is not None and ar["status"]["phase"] == "Expired"
    (claim,) = [e for e in ar["status"]["grants"] if e["grant"] == "rb"]
    assert (claim["rollbackOf"], claim["tokenSHA256"]) == (SCALE, token_sha256(_token(env, "rb")))
    assert eg["status"]["tokenSHA256"] == claim["tokenSHA256"]


@pytest.mark.parametrize("step", list(LEFT_BY_KILL))
def test_a_rollback_grant_killed_at_each_write_converges_to_one_job_and_one_token(
        env: Env, step: str) -> None:
    """The crash table of a grant issued on its claim holds for a rollback grant: the restarted
    operator finds the rollback's claim (``rollbackOf``) and stores that very token, once."""
    phase, stored, minted, authorized, _ = LEFT_BY_KILL[step]
    _rollback_request(env, "req")
    env.grant("fwd", "req", SCALE)
    env.wait_phase("eg", "fwd", "TokenIssued")
    _ran(env, "fwd")
    wait_for("the forward grant's Secret removed", lambda: env.secret("fwd") is None, 30,
             on_timeout=env.op.log_tail)
    env.op.stop()
    env.op.extra_env["WINGMAN_FAULT_KILL_AT"] = step
    env.op.start()
    env.grant("rb", "req", UNDO_SCALE, rollbackOf={"name": "fwd"})
    assert env.op.proc is not None
    wait_for("the SIGKILL", lambda: env.op.proc is not None and env.op.proc.poll() is not None,
             60, on_timeout=env.op.log_tail)
    assert env.op.proc.returncode == -9
    left = env.view("rb")
    assert left is not None
    assert (grant_rules.phase(left), env.secret("rb") is not None) \
        == (phase, stored), f"the kill at {step} left {left.get('status')}"
    del env.op.extra_env["WINGMAN_FAULT_KILL_AT"]
    env.op.start()
    wait_for("convergence", lambda: _converged(env, ["rb"]), 60, on_timeout=env.op.log_tail)
    _assert_one_token_and_one_job_each(env, ["rb"])
    _assert_issued_once(env, "rb")
    records = [r for r in env.op.audit_events() if r["subject"]["name"] == "rb"]
    assert [r["event"] for r in records].count("TokenMinted") == minted, records
    assert [r["event"] for r in records].count("GrantAuthorized") == authorized, records
    ar = get(env.cluster, "ar", env.ns, "req")
    assert ar is not None
    assert [(e["grant"], e.get("rollbackOf")) for e in ar["status"]["grants"]] == [
        ("fwd", None), ("rb", SCALE)]
    assert {r["data"].get("rollbackOf") for r in env.op.audit_events()
            if r["event"] == "ApprovalCommandGranted" and r["data"]["grant"] == "rb"} == {SCALE}
