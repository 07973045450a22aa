"""The Argo CD and Flux health checks docs/api.md documents, run with the engines those tools
use (gopher-lua, cel-go: .ci/tools/healthcheck) over resources in every state the operator and
the gateway write, built by the real transition functions."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from wingman import conditions
from wingman.dev import tools as devtools
from wingman.gateway import status as gateway_status
from wingman.gateway.executors import ExecResult
from wingman.operator import approvals, grants
from wingman.review.consensus import Risk, Verdict, Vote, decide
from wingman.review.policy import EnvironmentPolicy

REPO = Path(__file__).resolve().parents[3]
CHECKS = REPO / "docs" / "health-checks"
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
# these requests carry no preview: a policy that does not preview
POLICY = EnvironmentPolicy.from_dict({"environment": "test", "autoApprove": True,
                                      "autoApproveMaxRisk": "medium",
                                      "allowlist": ["kubectl rollout restart deployment/{name} "
                                                    "-n apps"],
                                      "preview": {"enabled": False}})


def _request(name: str, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": name, "namespace": "wm", "uid": f"u-{name}", "generation": 1,
                         "creationTimestamp": "2026-11-25T11:00:00Z"},
            "spec": {"requester": "alice", "environment": "test", "instruction": "x",
                     "commands": ["kubectl rollout restart deployment/web -n apps"]},
            "status": status}


def _with(body: dict[str, Any], t: approvals.Transition | None) -> dict[str, Any]:
    assert t is not None
    return {**body, "status": {**body["status"], **t.status}}


def _panel(risk: Risk) -> Any:
    return decide([Vote(n, Verdict.APPROVE, risk, "r") for n in ("a", "b", "c")], 3, 3)


def approval_requests() -> dict[str, dict[str, Any]]:
    """One request per state, keyed by the state's name."""
    new = _request("new")
    new.pop("status")
    auto = _with(_request("auto"), approvals.reviewed(_request("auto"), _panel(Risk.LOW),
                                                      POLICY, NOW))
    waiting = _with(_request("waiting"), approvals.reviewed(_request("waiting"),
                                                            _panel(Risk.HIGH), POLICY, NOW))
    approved = {**waiting, "metadata": {**waiting["metadata"], "name": "approved"},
                "spec": {**waiting["spec"], "decisions": [{"verdict": "Approve", "by": "bob"}]}}
    approved = _with(approved, approvals.decided(approved, POLICY, NOW))
    rejected = {**waiting, "metadata": {**waiting["metadata"], "name": "rejected"},
                "spec": {**waiting["spec"], "decisions": [{"verdict": "Reject", "by": "bob"}]}}
    rejected = _with(rejected, approvals.decided(rejected, POLICY, NOW))
    expired = {**auto, "metadata": {**auto["metadata"], "name": "expired"}}
    expired = _with(expired, approvals.expired(expired, NOW + dt.timedelta(days=2)))
    return {"new": new, "AwaitingDecision": waiting, "AutoApproved": auto,
            "Approved": approved, "Rejected": rejected, "Expired": expired}


def execution_grants() -> dict[str, dict[str, Any]]:
    def grant(name: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
                                "metadata": {"name": name, "uid": f"g-{name}", "generation": 1},
                                "spec": {"approvalRef": {"name": "r"}, "command": "x"}}
        if status is not None:
            body["status"] = status
        return body

    issued_conds = conditions.grant_ready([], "TokenIssued", "token issued", 1, NOW)
    issued = grant("issued", {"phase": "TokenIssued", "conditions": issued_conds})
    running = grant("running", {**issued["status"], **gateway_status.running_status(issued, NOW)})
    done = ExecResult(exit_code=0, output="", truncated=False, output_sha256="0" * 64,
                      started=NOW, finished=NOW)
    failed = ExecResult(exit_code=1, output="", truncated=False, output_sha256="0" * 64,
                        started=NOW, finished=NOW)
    denial = grants.Authorization(False, "TTLAboveCap", "too long")
    expired_conds = conditions.grant_ready(issued_conds, "Expired", "token expired", 1, NOW)
    return {
        "new": grant("new"),
        "TokenIssued": issued,
        "Running": running,
        "Succeeded": grant("succeeded", gateway_status.final_status(running, done, None, NOW)),
        "Failed": grant("failed", gateway_status.final_status(running, failed, None, NOW)),
        "Denied": grant("denied", grants.denied_status(grant("denied"), denial, NOW)),
        "Expired": grant("expired", {"phase": "Expired", "conditions": expired_conds}),
    }


def _run(mode: str, check: Path, objects: list[dict[str, Any]]) -> dict[str, str]:
    tool = devtools.find_tool("healthcheck")
    if tool is None:
        pytest.skip("healthcheck is not provisioned; run `bash .ci/provision-tools.sh`")
    stream = "".join(f"---\n{yaml.safe_dump(o)}" for o in objects)
    result = subprocess.run([str(tool), mode, str(check)], input=stream, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return {v["name"]: v["status"] for v in map(json.loads, result.stdout.splitlines())}


ARGO_REQUESTS = {"new": "Progressing", "AwaitingDecision": "Suspended",
                 "AutoApproved": "Healthy", "Approved": "Healthy", "Rejected": "Degraded",
                 "Expired": "Degraded"}
ARGO_GRANTS = {"new": "Progressing", "TokenIssued": "Progressing", "Running": "Progressing",
               "Succeeded": "Healthy", "Failed": "Degraded", "Denied": "Degraded",
               "Expired": "Degraded"}
FLUX = {"Progressing": "InProgress", "Suspended": "InProgress", "Healthy": "Current",
        "Degraded": "Failed"}


def _by_state(objects: dict[str, dict[str, Any]], verdicts: dict[str, str]) -> dict[str, str]:
    return {state: verdicts[obj["metadata"]["name"]] for state, obj in objects.items()}


def test_argo_cd_sees_each_request_and_grant_state() -> None:
    requests, grant_objs = approval_requests(), execution_grants()
    assert requests["AwaitingDecision"]["status"]["phase"] == "AwaitingDecision"
    assert grant_objs["Succeeded"]["status"]["phase"] == "Succeeded"
    assert _by_state(requests, _run("lua", CHECKS / "argocd-approvalrequest.lua",
                                    list(requests.values()))) == ARGO_REQUESTS
    assert _by_state(grant_objs, _run("lua", CHECKS / "argocd-executiongrant.lua",
                                      list(grant_objs.values()))) == ARGO_GRANTS


def test_flux_sees_each_request_and_grant_state() -> None:
    requests, grant_objs = approval_requests(), execution_grants()
    checks = CHECKS / "flux-healthcheckexprs.yaml"
    assert _by_state(requests, _run("cel", checks, list(requests.values()))) == {
        s: FLUX[h] for s, h in ARGO_REQUESTS.items()}
    assert _by_state(grant_objs, _run("cel", checks, list(grant_objs.values()))) == {
        s: FLUX[h] for s, h in ARGO_GRANTS.items()}


@pytest.mark.parametrize("name", ["argocd-approvalrequest.lua", "argocd-executiongrant.lua",
                                  "flux-healthcheckexprs.yaml"])
def test_the_api_reference_shows_the_tested_checks(name: str) -> None:
    text = (REPO / "docs" / "api.md").read_text()
    indented = "\n".join(("    " + line) if line else "" for line in
                         (CHECKS / name).read_text().splitlines())
    assert indented in text, f"docs/api.md differs from docs/health-checks/{name}"
