"""The whole story on the real control plane, from ``kubectl apply`` of an ApprovalRequest.

The chart is installed for real (test values, the allowlist pointed at this module's target
namespace), the operator runs as its ServiceAccount, and the node harness runs gateway pods
created by the real Job controller as local processes with their real ServiceAccount tokens.
Where a test needs gateway runs no pod would make (many pods with one token, a token from
another environment, no token), it starts ``wingman gateway`` processes exactly as the pod
would run, with the gateway's real ServiceAccount token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.chart import (
    APPROVER,
    DEFAULT_GATEWAY_IMAGE,
    WORKER,
    approval_request,
    approver_groups,
    installed,
    worker_groups,
)
from support.operator import OperatorProcess, get, wait_for
from wingman.audit import verify, verify_main
from wingman.dev import tools as devtools
from wingman.dev.node import NodeHarness
from wingman.model import grants, names
from wingman.operator import manifests


class Story:
    """One release, its operator, its target Deployment, and every secret value seen."""

    def __init__(self, cluster: Any, ns: str, apps: str, op: OperatorProcess, work: Path) -> None:
        self.cluster, self.ns, self.apps, self.op, self.work = cluster, ns, apps, op, work
        self.restart = f"kubectl rollout restart deployment/web -n {apps}"
        self.secrets_seen: set[str] = set()
        self.logs: list[Path] = [op.log_path]

    # -- identities ---------------------------------------------------------------------
    def as_worker(self, *args: str, input: str | None = None) -> Any:
        return self.cluster.kubectl(*args, "-n", self.ns, input=input, user=WORKER,
                                    groups=worker_groups("test"))

    def as_approver(self, *args: str, input: str | None = None) -> Any:
        return self.cluster.kubectl(*args, "-n", self.ns, input=input, user=APPROVER,
                                    groups=approver_groups("test"))

    # -- the flow -----------------------------------------------------------------------
    def request(self, name: str, *commands: str) -> None:
        body = approval_request(name, requester=WORKER, environment="test",
                                commands=commands or (self.restart,))
        self.as_worker("apply", "-f", "-", input=json.dumps(body))

    def grant(self, name: str, approval: str, command: str, **spec: Any) -> None:
        body = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
                "metadata": {"name": name},
                "spec": {"approvalRef": {"name": approval}, "command": command,
                         "requester": WORKER, **spec}}
        self.as_worker("apply", "-f", "-", input=json.dumps(body))

    def decide(self, name: str, verdict: str) -> None:
        obj = get(self.cluster, "ar", self.ns, name) or {}
        entry = {"verdict": verdict, "by": APPROVER, "reason": "e2e"}
        patch = ([{"op": "add", "path": "/spec/decisions/-", "value": entry}]
                 if obj.get("spec", {}).get("decisions")
                 else [{"op": "add", "path": "/spec/decisions", "value": [entry]}])
        self.as_approver("patch", "ar", name, "--type=json", "-p", json.dumps(patch))

    def wait_phase(self, kind: str, name: str, *phases: str, timeout: float = 90
                   ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = get(self.cluster, kind, self.ns, name)
            return obj if obj and (obj.get("status") or {}).get("phase") in phases else None
        found: dict[str, Any] = wait_for(f"{kind}/{name} in {phases}", probe, timeout,
                                         on_timeout=self.op.log_tail)
        return found

    def issued(self, grant: str, timeout: float = 90) -> dict[str, Any]:
        """The grant once its token is issued, as the operator and the gateway judge it
        (``grants.view``): recorded in the claim on its approval (the grant's own status stays
        Pending until its gateway runs), or in its status (``TokenIssued``), or moved on."""
        def probe() -> dict[str, Any] | None:
            eg = get(self.cluster, "eg", self.ns, grant)
            if eg is None:
                return None
            ar = get(self.cluster, "ar", self.ns, eg["spec"]["approvalRef"]["name"])
            seen = dict(grants.view(eg, ar))
            return seen if grants.phase(seen) != "Pending" else None
        found: dict[str, Any] = wait_for(f"eg/{grant} issued", probe, timeout,
                                         on_timeout=self.op.log_tail)
        return found

    def token(self, grant: str) -> str:
        def stored() -> dict[str, Any] | None:
            name = (self.issued(grant).get("status") or {}).get("tokenSecretName")
            return get(self.cluster, "secret", self.ns, name) if name else None
        secret = wait_for("the token Secret", stored, 30)
        token = base64.b64decode(secret["data"]["token"]).decode()
        self.secrets_seen.add(token)
        return token

    def deployment(self) -> dict[str, Any]:
        obj = get(self.cluster, "deployment", self.apps, "web")
        assert obj is not None
        return obj

    def restarted_at(self) -> str | None:
        annotations = self.deployment()["spec"]["template"]["metadata"].get("annotations") or {}
        value = annotations.get("kubectl.kubernetes.io/restartedAt")
        return str(value) if value else None

    def node(self, name: str) -> NodeHarness:
        harness = NodeHarness(cluster=self.cluster, namespaces=[self.ns],
                              workdir=self.work / f"node-{name}",
                              gateway_image=DEFAULT_GATEWAY_IMAGE,
                              volume_dirs={"wingman-audit": self.op.audit_path.parent},
                              keep=True)
        return harness

    # -- a gateway process exactly as the pod runs it --------------------------------------
    def gateway_env(self, grant: str, token: str | None, *, environment: str = "test"
                    ) -> dict[str, str]:
        run = self.work / f"gw-{uuid.uuid4().hex[:8]}"
        (run / "token").mkdir(parents=True)
        (run / "keys").mkdir()
        (run / "sa").mkdir()
        (run / "tmp").mkdir()
        if token is not None:
            (run / "token" / "token").write_text(token)
        cm = get(self.cluster, "configmap", self.ns, "wingman-public-keys") or {}
        for key, pem in cm.get("data", {}).items():
            (run / "keys" / key).write_text(pem)
        pod = self.gateway_pod(grant)
        sa_token = self.cluster.sa_token(self.ns, "wingman-gateway",
                                         pod=(pod["metadata"]["name"], pod["metadata"]["uid"]))
        self.secrets_seen.add(sa_token)
        (run / "sa" / "token").write_text(sa_token)
        (run / "sa" / "ca.crt").write_bytes(Path(self.cluster.ca_file).read_bytes())
        (run / "sa" / "namespace").write_text(self.ns)
        policy = yaml.safe_load(self.op.policy_path.read_text())
        policy["environment"] = environment
        (run / "policy.yaml").write_text(yaml.safe_dump(policy))
        job = get(self.cluster, "job", self.ns, names.job_name(grant)) or {}
        host, port = self.cluster.server.rsplit("//", 1)[1].rsplit(":", 1)
        return {
            "PATH": f"{devtools.tool_path('kubectl').parent}:{Path(sys.executable).parent}:"
                    "/usr/bin:/bin",
            "HOME": str(run / "tmp"), "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port, "WINGMAN_NAMESPACE": self.ns,
            "WINGMAN_ENVIRONMENT": environment, "WINGMAN_GRANT_NAME": grant,
            "WINGMAN_JOB_UID": job.get("metadata", {}).get("uid", ""),
            "WINGMAN_POD_NAME": pod["metadata"]["name"],
            "WINGMAN_TOKEN_FILE": str(run / "token" / "token"),
            "WINGMAN_PUBLIC_KEYS_DIR": str(run / "keys"),
            "WINGMAN_SERVICEACCOUNT_DIR": str(run / "sa"),
            "WINGMAN_POLICY_FILE": str(run / "policy.yaml"),
            "WINGMAN_AUDIT_TARGET": str(self.op.audit_path), "WINGMAN_LOG_FORMAT": "json",
        }

    def gateway_pod(self, grant: str) -> dict[str, Any]:
        """The pod the Job controller made for the grant's Job (no node runs it here): the
        gateway processes of these tests act as that pod, with a token bound to it."""
        def probe() -> dict[str, Any] | None:
            pods = json.loads(self.cluster.kubectl(
                "get", "pods", "-n", self.ns, "-o", "json",
                "-l", f"job-name={names.job_name(grant)}").stdout)["items"]
            return dict(pods[0]) if pods else None
        pod: dict[str, Any] = wait_for(f"the gateway pod of {grant}", probe, 60)
        return pod

    def run_gateway(self, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        log = self.work / f"{env['WINGMAN_POD_NAME']}-{uuid.uuid4().hex[:5]}.log"
        proc = subprocess.run([sys.executable, "-m", "wingman.cli", "gateway"], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        log.write_text(proc.stdout + proc.stderr)
        self.logs.append(log)
        return proc

    def audit_events(self, grant: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.op.audit_events()
                if grant is None or r["subject"].get("name") == grant]


@pytest.fixture(scope="module")
def story(cluster: Any, crds: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    suffix = uuid.uuid4().hex[:6]
    ns, apps = f"wm-e2e-{suffix}", f"apps-{suffix}"
    work = tmp_path_factory.mktemp("e2e")
    values = {
        "operator.replicas": 0,
        "policy.allowlist": [f"kubectl rollout restart deployment/{{name}} -n {apps}",
                             f"kubectl scale deployment/{{name}} --replicas={{int:0..10}} "
                             f"-n {apps}"],
    }
    with installed(cluster, "test", namespace=ns, target_namespace=apps, values=values):
        cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": apps},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                         "containers": [{"name": "web",
                                         "image": "registry.k8s.io/pause:3.9"}]}}}}))
        op = OperatorProcess(cluster, ns, work / "operator",
                             extra_env={"WINGMAN_AUDIT_VOLUME_CLAIM": "wingman-audit",
                                        "WINGMAN_LEEWAY_SECONDS": "30"})
        op.start()
        try:
            yield Story(cluster, ns, apps, op, work)
        finally:
            op.stop()


@pytest.mark.nodeharness
def test_an_approved_restart_executes_once_and_shows_in_the_deployment(story: Story) -> None:
    assert story.restarted_at() is None
    story.request("restart-web")
    story.wait_phase("ar", "restart-web", "AutoApproved")
    with story.node("restart") as node:
        story.grant("restart-web-1", "restart-web", story.restart)
        eg = story.wait_phase("eg", "restart-web-1", "Succeeded", "Failed")
        node.wait_idle(60)
        story.logs += [p for r in node.runs for p in (r.stdout, r.stderr)]
    st = eg["status"]
    assert st["phase"] == "Succeeded", st
    assert st["exitCode"] == 0 and "restarted" in st["output"]
    assert st["outputSHA256"] == "sha256:" + hashlib.sha256(st["output"].encode()).hexdigest()
    assert st["auditRecordHash"].startswith("sha256:")
    assert story.restarted_at() is not None, "the Deployment was restarted"
    # the token is gone once the grant is final; its burn marker stays
    assert st["tokenSecretName"].startswith("restart-web-1-gw-token-")
    wait_for("token Secret deleted", lambda: get(story.cluster, "secret", story.ns,
                                                st["tokenSecretName"]) is None, 30)
    leases = json.loads(story.cluster.kubectl("get", "leases", "-n", story.ns, "-o", "json",
                                              "-l", "wingman.dev/role=burn-marker").stdout)
    assert [lease["metadata"]["labels"]["wingman.dev/grant"] for lease in leases["items"]] == \
        ["restart-web-1"]
    events = [r["event"] for r in story.audit_events()]
    for event in ("ApprovalReviewed", "ApprovalCommandGranted", "TokenMinted", "GrantAuthorized",
                  "GatewayTokenBurned", "GatewayExecuting", "GatewayExecuted"):
        assert event in events, event
    # the approval is used up: the same command never runs a second time under it
    before = story.restarted_at()
    story.grant("restart-web-2", "restart-web", story.restart)
    again = story.wait_phase("eg", "restart-web-2", "Denied")
    assert again["status"]["reason"] == "CommandAlreadyGranted"
    wait_for("the denied grant's Job removed", lambda: get(
        story.cluster, "job", story.ns, names.job_name("restart-web-2")) is None, 30)
    assert story.restarted_at() == before


@pytest.mark.nodeharness
def test_a_scale_approved_by_a_human_sets_the_replicas(story: Story) -> None:
    scale = f"kubectl scale deployment/web --replicas=3 -n {story.apps}"
    delete = f"kubectl delete deployment/web -n {story.apps}"
    story.request("resize-web", scale, delete)  # the delete makes it risky: a human decides
    story.wait_phase("ar", "resize-web", "AwaitingDecision")
    story.grant("resize-web-early", "resize-web", scale)
    early = story.wait_phase("eg", "resize-web-early", "Denied")
    assert early["status"]["reason"] == "ApprovalNotApproved", "no grant before approval"
    story.decide("resize-web", "Approve")
    story.wait_phase("ar", "resize-web", "Approved")
    with story.node("scale") as node:
        story.grant("resize-web-1", "resize-web", scale)
        eg = story.wait_phase("eg", "resize-web-1", "Succeeded", "Failed")
        node.wait_idle(60)
        story.logs += [p for r in node.runs for p in (r.stdout, r.stderr)]
    assert eg["status"]["phase"] == "Succeeded", eg["status"]
    assert story.deployment()["spec"]["replicas"] == 3
    story.grant("resize-web-2", "resize-web", delete)
    assert story.wait_phase("eg", "resize-web-2", "Denied")["status"]["reason"] == \
        "NotInAllowlist", "an approved command outside the allowlist never runs"
    assert get(story.cluster, "deployment", story.apps, "web") is not None


@pytest.mark.parametrize(("command", "reason"), [
    ("kubectl rollout restart deployment/api -n {apps}", "CommandNotApproved"),
    ("kubectl rollout restart deployment/web -n {apps} ", "CommandNotApproved"),
    ("kubectl rollout restart deployment/wab -n {apps}", "CommandNotApproved"),
])
def test_unapproved_and_edited_commands_are_blocked(story: Story, command: str, reason: str
                                                    ) -> None:
    name = f"edit-{uuid.uuid4().hex[:6]}"
    story.request(name)
    story.wait_phase("ar", name, "AutoApproved")
    story.grant(f"{name}-1", name, command.format(apps=story.apps))
    eg = story.wait_phase("eg", f"{name}-1", "Denied")
    assert eg["status"]["reason"] == reason
    assert get(story.cluster, "job", story.ns, names.job_name(f"{name}-1")) is None


def _issued(story: Story, name: str, **spec: Any) -> tuple[str, dict[str, Any]]:
    """An approved request and a grant whose Job waits (no node runs it): (token, grant)."""
    story.request(name)
    story.wait_phase("ar", name, "AutoApproved")
    story.grant(f"{name}-1", name, story.restart, **spec)
    eg = story.issued(f"{name}-1")
    assert grants.phase(get(story.cluster, "eg", story.ns, f"{name}-1") or {}) == "Pending", \
        "issued on the claim: the operator writes nothing to the grant"
    return story.token(f"{name}-1"), eg


def test_many_concurrent_gateways_with_one_token_execute_exactly_once(story: Story) -> None:
    token, _ = _issued(story, "replay")
    generation = story.deployment()["metadata"]["generation"]
    envs = [story.gateway_env("replay-1", token) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(story.run_gateway, envs))
    codes = sorted(r.returncode for r in results)
    assert codes == [0] + [4] * 7, [(r.returncode, r.stderr[-300:]) for r in results]
    assert story.deployment()["metadata"]["generation"] == generation + 1, "exactly one restart"
    eg = story.wait_phase("eg", "replay-1", "Succeeded")
    conds = {c["type"]: c for c in eg["status"]["conditions"]}
    assert conds["ReplayDetected"]["status"] == "True"
    # and once more later: a used token stays used
    again = story.run_gateway(story.gateway_env("replay-1", token))
    assert again.returncode == 4
    events = [r["event"] for r in story.audit_events("replay-1")]
    assert events.count("GatewayExecuted") == 1 and events.count("GatewayReplayRejected") == 8
    metrics = wait_for("the replay is counted", lambda: (m := story.op.metrics()) and
                       'reason="ReplayRejected"' in m and m, 20)
    assert 'stage="gateway"' in metrics


#: Where the operator is killed on its way to a grant's token: the claim recording the token
#: landed (nothing audited, no Secret), the records written (no Secret), the Secret created.
CLAIM_STEPS = ("command-claimed", "token-minted", "secret-created")


@pytest.mark.parametrize("step", CLAIM_STEPS)
def test_killed_while_the_token_is_issued_the_gateway_runs_once(
        story: Story, step: str) -> None:
    """The operator SIGKILLed on its way to a grant's token (after the claim recording the
    token landed, after its records were audited, after the Secret was created), then
    started again: the grant gets its one token, and two gateways given it run the command
    once: the first runs the command, the second is a replay. Where the kill left the Secret in
    place, the first starts while the operator is down, as the pod would: the claim records
    its token already, so it has nothing to wait for."""
    name, grant = f"cut-{step}", f"cut-{step}-1"
    story.request(name)
    story.wait_phase("ar", name, "AutoApproved")
    generation = story.deployment()["metadata"]["generation"]
    story.op.stop()
    story.op.extra_env["WINGMAN_FAULT_KILL_AT"] = step
    token, early = None, None
    with ThreadPoolExecutor(1) as pool:
        try:
            story.op.start()
            story.grant(grant, name, story.restart)
            wait_for("the SIGKILL", lambda: story.op.proc is not None and
                     story.op.proc.poll() is not None, 60, on_timeout=story.op.log_tail)
            assert story.op.proc is not None and story.op.proc.returncode == -9
            job = get(story.cluster, "job", story.ns, names.job_name(grant))
            assert job is not None
            left = get(story.cluster, "secret", story.ns, manifests.job_token_secret(job) or "")
            if left is not None:  # what the kubelet needs to start the pod
                token = base64.b64decode(left["data"]["token"]).decode()
                story.secrets_seen.add(token)
                early = pool.submit(story.run_gateway, story.gateway_env(grant, token))
                time.sleep(2)  # it has read the grant before the operator is back
        finally:
            del story.op.extra_env["WINGMAN_FAULT_KILL_AT"]
            story.op.stop()
            story.op.start()
        if token is None:
            token = story.token(grant)
        first = early.result() if early is not None else \
            story.run_gateway(story.gateway_env(grant, token))
    second = story.run_gateway(story.gateway_env(grant, token))
    assert (first.returncode, second.returncode) == (0, 4), \
        [(r.returncode, r.stderr[-300:]) for r in (first, second)]
    assert "GatewayWaiting" not in first.stdout + first.stderr
    assert story.deployment()["metadata"]["generation"] == generation + 1, "exactly one restart"
    eg = story.wait_phase("eg", grant, "Succeeded")
    assert eg["status"]["exitCode"] == 0
    leases = json.loads(story.cluster.kubectl("get", "leases", "-n", story.ns, "-o", "json",
                                              "-l", f"wingman.dev/grant={grant}").stdout)
    assert len(leases["items"]) == 1, "one burn marker"
    records = story.audit_events(grant)
    events = [r["event"] for r in records]
    for event, count in (("GatewayTokenBurned", 1), ("GatewayExecuting", 1),
                         ("GatewayExecuted", 1), ("GatewayReplayRejected", 1)):
        assert events.count(event) == count, (event, events)
    assert not {"GrantDenied", "GrantFailed", "GrantExpired", "GatewayRefused"} & set(events), \
        events
    assert {r["data"]["tokenSHA256"] for r in records
            if r["event"] in ("TokenMinted", "GrantAuthorized")} == {eg["status"]["tokenSHA256"]}
    claim = grants.claim_of(eg, get(story.cluster, "ar", story.ns, name))
    assert claim is not None and claim["tokenSHA256"] == eg["status"]["tokenSHA256"]
    assert events.index("GrantAuthorized") < events.index("GatewayTokenBurned")
    assert verify(str(story.op.audit_path)).ok


@pytest.mark.nodeharness
def test_a_token_is_rejected_when_expired_for_another_environment_revoked_missing_or_tampered(
        story: Story) -> None:
    generation = story.deployment()["metadata"]["generation"]

    # revoked after minting: the approver rejects the approved request, then the pod runs
    _issued(story, "revoke")
    story.decide("revoke", "Reject")
    story.wait_phase("ar", "revoke", "Rejected")
    with story.node("revoke") as node:
        eg = story.wait_phase("eg", "revoke-1", "Failed")
        node.wait_idle(60)
        story.logs += [p for r in node.runs for p in (r.stdout, r.stderr)]
    assert eg["status"]["reason"] == "ApprovalRevoked"

    # prd's gateway refuses a token minted for test (same keys even: the audience differs)
    token, _ = _issued(story, "wrongenv")
    prd = story.run_gateway(story.gateway_env("wrongenv-1", token, environment="prd"))
    assert prd.returncode == 3 and "WrongAudience" in prd.stderr

    # no token, and a tampered token: nothing runs
    missing = story.run_gateway(story.gateway_env("wrongenv-1", None))
    assert missing.returncode == 3 and "NoToken" in missing.stderr
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    tampered = story.run_gateway(story.gateway_env("wrongenv-1", f"{head}.{payload}.{flipped}"))
    assert tampered.returncode == 3 and "BadSignature" in tampered.stderr

    # expired: the shortest TTL, then the gateway runs too late (past its 5 s leeway; the
    # operator, configured with 30 s here, has not yet expired the grant itself)
    token, eg = _issued(story, "expire", ttlSeconds=30)
    wait_for("token expiry plus leeway", lambda: time.time() > json_time(
        eg["status"]["tokenExpirationTime"]) + 6, 60, interval=1)
    late = story.run_gateway(story.gateway_env("expire-1", token))
    assert late.returncode == 3 and "TokenExpired" in late.stderr, late.stderr[-500:]
    assert story.wait_phase("eg", "expire-1", "Failed")["status"]["reason"] == "TokenExpired"
    # a refused attempt ends the grant (fail closed): the first refusal is its reason
    assert story.wait_phase("eg", "wrongenv-1", "Failed")["status"]["reason"] == "WrongAudience"

    assert story.deployment()["metadata"]["generation"] == generation, "nothing ever ran"
    refused = [r["data"].get("reason") for r in story.audit_events() if r["event"] ==
               "GatewayRefused"]
    for reason in ("WrongAudience", "NoToken", "BadSignature", "ApprovalRevoked",
                   "TokenExpired"):
        assert reason in refused, (reason, refused)


def json_time(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_the_audit_trail_verifies_and_catches_tampering(story: Story, tmp_path: Path) -> None:
    report = verify(str(story.op.audit_path))
    assert report.ok and report.records > 10
    lines = story.op.audit_path.read_bytes().splitlines(keepends=True)
    middle = len(lines) // 2
    record = json.loads(lines[middle])
    record["actor"] = "someone-else"  # one edited field in one record in the middle
    lines[middle] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    copy = tmp_path / "tampered.jsonl"
    copy.write_bytes(b"".join(lines))
    assert copy.read_bytes() != story.op.audit_path.read_bytes()
    with open(os.devnull, "w") as sink:
        assert verify_main(str(copy), out=sink) != 0


def test_no_token_key_or_secret_value_appears_in_any_log(story: Story) -> None:
    signing = get(story.cluster, "secret", story.ns, "wingman-signing-key")
    assert signing is not None
    values = set(story.secrets_seen)
    for key, v in signing["data"].items():
        if not key.endswith(".pem"):
            continue  # "active" holds the key id, which is public (every token carries it)
        text = base64.b64decode(v).decode()
        values.update(line for line in text.splitlines() if len(line) > 20 and "-----" not in line)
    assert values, "the module saw tokens"
    logs = [p for p in story.logs if p.exists()]
    assert len(logs) >= 5
    audit_text = story.op.audit_path.read_text()
    for path in logs:
        text = path.read_text(errors="replace")
        for value in values:
            assert value not in text, f"a secret value appears in {path.name}"
    for value in values:
        assert value not in audit_text


def test_a_rollback_runs_once_and_only_after_the_forward_command(story: Story) -> None:
    scale = f"kubectl scale deployment/web --replicas=4 -n {story.apps}"
    undo = f"kubectl scale deployment/web --replicas=1 -n {story.apps}"
    story.cluster.kubectl("scale", "deployment/web", "--replicas=1", "-n", story.apps)
    body = approval_request("scale-undo", requester=WORKER, environment="test",
                            commands=(scale,), rollbacks=[{"command": scale, "rollback": undo}])
    story.as_worker("apply", "-f", "-", input=json.dumps(body))
    story.wait_phase("ar", "scale-undo", "AutoApproved", "AwaitingDecision")
    current = get(story.cluster, "ar", story.ns, "scale-undo")
    assert current is not None
    if current["status"]["phase"] != "AutoApproved":
        story.decide("scale-undo", "Approve")
        story.wait_phase("ar", "scale-undo", "Approved")

    # not before the forward command ran: the operator refuses a rollback grant made by hand
    story.grant("scale-undo-early", "scale-undo", undo, rollbackOf={"name": "scale-undo-1"})
    early = story.wait_phase("eg", "scale-undo-early", "Denied")
    assert early["status"]["reason"] == "ForwardGrantNotFound", early["status"]
    story.grant("scale-undo-1", "scale-undo", scale)
    story.issued("scale-undo-1")
    code, _, err = _cli(story, "rollback", "scale-undo-1")
    assert code != 0 and "has not run" in err, "the CLI says why before creating anything"

    with story.node("rollback") as node:
        assert story.wait_phase("eg", "scale-undo-1", "Succeeded", "Failed")["status"][
            "phase"] == "Succeeded"
        assert story.deployment()["spec"]["replicas"] == 4
        # without a new decision, as the worker, with the kubectl plugin's command
        code, out, err = _cli(story, "rollback", "scale-undo-1", "--wait", "--timeout", "90")
        assert code == 0, out + err
        rb = story.wait_phase("eg", names.rollback_grant_name("scale-undo-1"), "Succeeded")
        node.wait_idle(60)
        story.logs += [p for r in node.runs for p in (r.stdout, r.stderr)]
    assert rb["spec"]["rollbackOf"] == {"name": "scale-undo-1"} and rb["spec"]["command"] == undo
    assert story.deployment()["spec"]["replicas"] == 1
    ar = get(story.cluster, "ar", story.ns, "scale-undo")
    assert ar is not None
    assert {"command": undo, "rollbackOf": scale} in [
        {k: g[k] for k in ("command", "rollbackOf") if k in g} for g in ar["status"]["grants"]]
    # once: another grant for the same rollback is refused
    story.grant("scale-undo-again", "scale-undo", undo, rollbackOf={"name": "scale-undo-1"})
    again = story.wait_phase("eg", "scale-undo-again", "Denied")
    assert again["status"]["reason"] == "RollbackAlreadyGranted"
    assert story.deployment()["spec"]["replicas"] == 1
    executing = [r for r in story.audit_events(rb["metadata"]["name"])
                 if r["event"] == "GatewayExecuting"]
    assert executing and executing[0]["data"]["rollbackOf"] == "scale-undo-1"


def _cli(story: Story, *argv: str) -> tuple[int, str, str]:
    kubeconfig = str(story.cluster.kubeconfig_for(WORKER, worker_groups("test")))
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST",
                                                            "KUBECONFIG")}
    proc = subprocess.run([sys.executable, "-m", "wingman.cli", *argv, "-n", story.ns,
                           "--kubeconfig", kubeconfig], env=env, capture_output=True,
                          text=True, timeout=150, check=False)
    return proc.returncode, proc.stdout, proc.stderr
