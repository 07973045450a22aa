"""Grant authorization as a pure function: every denial reason, in order, and the happy path;
the gateway Job's deadline a late claim needs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from wingman.operator import grants, manifests
from wingman.review.policy import EnvironmentPolicy
from wingman.scope import Allowlist
from wingman.settings import OperatorSettings

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
CMD = "kubectl rollout restart deployment/web -n apps"
POLICY = EnvironmentPolicy.from_dict({
    "environment": "test", "allowlist": ["kubectl rollout restart deployment/{name} -n apps"],
    "tokenTTLSeconds": 300, "maxTokenTTLSeconds": 600})
ALLOW = Allowlist.from_patterns(POLICY.allowlist)


def approval(*conds: tuple[str, str], env: str = "test", commands: tuple[str, ...] = (CMD,),
             expires: str = "2026-11-26T00:00:00Z") -> dict[str, Any]:
    return {"metadata": {"name": "req", "uid": "a1"},
            "spec": {"environment": env, "commands": list(commands), "requester": "alice"},
            "status": {"expirationTime": expires, "phase": "x",
                       "conditions": [{"type": t, "status": s} for t, s in conds]}}


def grant(command: str = CMD, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "g", "namespace": "ns", "uid": "g1", "generation": 1},
            "spec": {"approvalRef": {"name": "req"}, "command": command, **spec}}


APPROVED = ("Approved", "True")


@pytest.mark.parametrize(("g", "a", "reason"), [
    (grant(), None, "ApprovalNotFound"),
    (grant(), approval(APPROVED, env="prd"), "EnvironmentMismatch"),
    (grant(requester="mallory"), approval(APPROVED), "RequesterMismatch"),
    (grant(requester="mallory"), approval(("Rejected", "True")), "RequesterMismatch"),
    (grant(), approval(("Reviewed", "True")), "ApprovalNotApproved"),
    (grant(), approval(("Rejected", "True")), "ApprovalRejected"),
    (grant(), approval(APPROVED, ("Revoked", "True")), "ApprovalRevoked"),
    (grant(), approval(APPROVED, ("Expired", "True")), "ApprovalExpired"),
    (grant(), approval(APPROVED, expires="2026-11-25T11:59:59Z"), "ApprovalExpired"),
    (grant(CMD + " "), approval(APPROVED), "CommandNotApproved"),
    (grant(CMD.replace("web", "wab")), approval(APPROVED), "CommandNotApproved"),
    (grant("kubectl delete ns apps"), approval(APPROVED, commands=("kubectl delete ns apps",)),
     "NotInAllowlist"),
    (grant(ttlSeconds=601), approval(APPROVED), "TTLAboveCap"),
    (grant(CMD + " --as=system:admin"),
     approval(APPROVED, commands=(CMD + " --as=system:admin",)), "ConnectionFlag"),
    (grant(CMD + " -n"), approval(APPROVED, commands=(CMD + " -n",)), "MissingFlagValue"),
])
def test_denials(g: dict[str, Any], a: dict[str, Any] | None, reason: str) -> None:
    auth = grants.authorize(g, a, POLICY, ALLOW, NOW)
    assert not auth.ok and auth.reason == reason and auth.message
    status = grants.denied_status(g, auth, NOW)
    assert status["phase"] == "Denied" and status["reason"] == reason
    assert status["conditions"][0]["status"] == "False"


def test_authorized_with_default_and_explicit_ttl() -> None:
    auth = grants.authorize(grant(), approval(APPROVED), POLICY, ALLOW, NOW)
    assert auth.ok and auth.ttl_seconds == 300 and auth.argv[:3] == ("kubectl", "rollout",
                                                                     "restart")
    assert grants.authorize(grant(ttlSeconds=600), approval(APPROVED), POLICY, ALLOW,
                            NOW).ttl_seconds == 600


@pytest.mark.parametrize("requester", [{}, {"requester": "alice"}])
def test_a_grant_in_the_requesters_name_or_naming_nobody_is_authorized(
        requester: dict[str, str]) -> None:
    assert grants.authorize(grant(**requester), approval(APPROVED), POLICY, ALLOW, NOW).ok


def test_a_command_carrying_a_token_is_denied_before_anything_is_recorded() -> None:
    jwt_like = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"
    command = f"kubectl rollout restart deployment/web -n apps --selector={jwt_like}"
    auth = grants.authorize(grant(command), approval(APPROVED, commands=(command,)),
                            EnvironmentPolicy.from_dict({
                                "environment": "test",
                                "allowlist": ["kubectl rollout restart deployment/{name} -n apps "
                                              "--selector=*"]}),
                            Allowlist.from_patterns(["kubectl rollout restart deployment/{name} "
                                                     "-n apps --selector=*"]), NOW)
    assert not auth.ok and auth.reason == "CommandLooksLikeToken"
    assert jwt_like not in auth.message


OTHER = "kubectl rollout restart deployment/api -n apps"


def test_the_first_grant_for_a_command_claims_it_and_keeps_what_is_already_recorded() -> None:
    a = approval(APPROVED, commands=(CMD, OTHER))
    a["status"]["grants"] = [{"command": OTHER, "grant": "api-1", "grantUID": "x",
                              "grantedAt": "2026-11-25T11:00:00Z"}]
    taken = grants.claim(grant(), a, NOW)
    assert taken.denial is None
    assert taken.grants == [
        {"command": OTHER, "grant": "api-1", "grantUID": "x", "grantedAt": "2026-11-25T11:00:00Z"},
        {"command": CMD, "grant": "g", "grantUID": "g1", "grantedAt": "2026-11-25T12:00:00Z"}]
    assert a["status"]["grants"][0] == taken.grants[0] and len(a["status"]["grants"]) == 1


def test_the_holder_claims_again_without_a_write_after_a_restart() -> None:
    a = approval(APPROVED)
    a["status"]["grants"] = grants.claim(grant(), a, NOW).grants
    again = grants.claim(grant(), a, NOW)
    assert again.denial is None and again.grants is None


def test_a_claim_that_issues_the_token_records_its_fields_and_nothing_else() -> None:
    """The token fields go into the new entry, named as in a grant's status; anything else
    given is not recorded, and the entries already there are kept as they are."""
    token = {"tokenSHA256": "ab" * 32, "tokenExpirationTime": "2026-11-25T12:10:00Z",
             "jobName": "g-gw", "tokenSecretName": "g-gw-token-0123456789abcdef",
             "token": "never recorded"}
    taken = grants.claim(grant(), approval(APPROVED), NOW, token=token)
    assert taken.denial is None and taken.grants is not None
    (entry,) = taken.grants
    assert entry == {"command": CMD, "grant": "g", "grantUID": "g1",
                     "grantedAt": "2026-11-25T12:00:00Z",
                     **{k: v for k, v in token.items() if k != "token"}}


def test_a_second_grant_for_a_granted_command_is_denied_naming_the_holder() -> None:
    a = approval(APPROVED)
    a["status"]["grants"] = grants.claim(grant(), a, NOW).grants
    second = grant()
    second["metadata"].update(name="g2", uid="g2-uid")
    taken = grants.claim(second, a, NOW)
    assert taken.grants is None and taken.denial is not None
    assert taken.denial.reason == "CommandAlreadyGranted"
    assert "'g'" in taken.denial.message and "new ApprovalRequest" in taken.denial.message


def test_a_claim_is_per_command_byte_for_byte() -> None:
    a = approval(APPROVED, commands=(CMD, OTHER))
    a["status"]["grants"] = grants.claim(grant(), a, NOW).grants
    other = grant(OTHER)
    other["metadata"].update(name="g2", uid="g2-uid")
    taken = grants.claim(other, a, NOW)
    assert taken.denial is None and taken.grants is not None and len(taken.grants) == 2


def test_a_denied_grant_is_not_ready_and_says_why() -> None:
    auth = grants.authorize(grant(ttlSeconds=601), approval(APPROVED), POLICY, ALLOW, NOW)
    status = grants.denied_status(grant(ttlSeconds=601), auth, NOW)
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "Denied")
    assert ready["message"] == auth.message


# --------------------------------------------------------------------------- rollbacks

UNDO = "kubectl rollout undo deployment/web -n apps"
RB_POLICY = EnvironmentPolicy.from_dict({
    "environment": "test", "rollbackWindowSeconds": 600,
    "allowlist": ["kubectl rollout restart deployment/{name} -n apps",
                  "kubectl rollout undo deployment/{name} -n apps"]})
RB_ALLOW = Allowlist.from_patterns(RB_POLICY.allowlist)


def _reviewed(*conds: tuple[str, str], expires: str = "2026-11-26T00:00:00Z",
              rollback: str = UNDO) -> dict[str, Any]:
    a = approval(*conds, expires=expires)
    a["spec"]["rollbacks"] = [{"command": CMD, "rollback": rollback}]
    a["status"]["grants"] = [{"command": CMD, "grant": "fwd", "grantUID": "f1",
                              "grantedAt": "2026-11-25T11:00:00Z"}]
    return a


def _forward(phase: str = "Succeeded", finished: str = "2026-11-25T11:55:00Z",
             **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "fwd", "namespace": "ns", "uid": "f1"},
            "spec": {"approvalRef": {"name": "req"}, "command": CMD},
            "status": {"phase": phase, "completionTime": finished, **status}}


def _rb(command: str = UNDO) -> dict[str, Any]:
    return grant(command, rollbackOf={"name": "fwd"})


def test_a_reviewed_rollback_is_granted_without_a_new_decision_even_after_expiry() -> None:
    # the request itself expired at 11:58; the rollback window (10 min from 11:55) is open
    auth = grants.authorize(_rb(), _reviewed(APPROVED, ("Expired", "True"),
                                             expires="2026-11-25T11:58:00Z"),
                            RB_POLICY, RB_ALLOW, NOW, forward=_forward())
    assert auth.ok, auth.message
    assert "reviewed rollback of ExecutionGrant fwd" in auth.message
    # a command that ran and failed ran all the same
    assert grants.authorize(_rb(), _reviewed(APPROVED), RB_POLICY, RB_ALLOW, NOW,
                            forward=_forward("Failed", exitCode=1)).ok


@pytest.mark.parametrize(("a", "forward", "command", "reason"), [
    (_reviewed(APPROVED), _forward("TokenIssued"), UNDO, "ForwardNotRun"),
    (_reviewed(APPROVED), _forward("Failed", reason="TargetChanged"), UNDO, "ForwardNotRun"),
    (_reviewed(APPROVED), _forward(finished="2026-11-25T11:50:00Z"), UNDO,
     "RollbackWindowClosed"),
    (_reviewed(APPROVED), None, UNDO, "ForwardGrantNotFound"),
    (_reviewed(APPROVED, ("Revoked", "True")), _forward(), UNDO, "ApprovalRevoked"),
    (_reviewed(("Reviewed", "True")), _forward(), UNDO, "ApprovalNotApproved"),
    (_reviewed(APPROVED), _forward(), CMD, "RollbackNotReviewed"),
    (_reviewed(APPROVED, rollback="kubectl delete deployment/web -n apps"), _forward(),
     "kubectl delete deployment/web -n apps", "NotInAllowlist"),
])
def test_a_rollback_only_after_the_command_ran_within_the_window(
        a: dict[str, Any], forward: dict[str, Any] | None, command: str, reason: str) -> None:
    auth = grants.authorize(_rb(command), a, RB_POLICY, RB_ALLOW, NOW, forward=forward)
    assert (auth.ok, auth.reason) == (False, reason), auth.message


def test_a_forward_grant_that_is_not_the_commands_holder_cannot_be_rolled_back() -> None:
    other = _forward()
    other["metadata"]["uid"] = "someone-else"
    auth = grants.authorize(_rb(), _reviewed(APPROVED), RB_POLICY, RB_ALLOW, NOW, forward=other)
    assert auth.reason == "ForwardGrantMismatch"
    off = EnvironmentPolicy.from_dict({"environment": "test", "rollbackWindowSeconds": 0,
                                       "allowlist": list(RB_POLICY.allowlist)})
    assert grants.authorize(_rb(), _reviewed(APPROVED), off, RB_ALLOW, NOW,
                            forward=_forward()).reason == "RollbackDisabled"


def test_each_rollback_is_claimed_once_apart_from_its_command() -> None:
    a = _reviewed(APPROVED)
    assert grants.undoes(_rb(), a) == CMD and grants.undoes(grant(), a) is None
    first = grants.claim(_rb(), a, NOW, undoes=CMD)
    assert first.denial is None and first.grants is not None
    assert first.grants[-1] == {"command": UNDO, "grant": "g", "grantUID": "g1",
                                "grantedAt": "2026-11-25T12:00:00Z", "rollbackOf": CMD}
    claimed = {**a, "status": {**a["status"], "grants": first.grants}}
    assert grants.claim(_rb(), claimed, NOW, undoes=CMD).grants is None  # already this one's
    again = grant(UNDO, rollbackOf={"name": "fwd"})
    again["metadata"]["uid"] = "g2"
    denied = grants.claim(again, claimed, NOW, undoes=CMD).denial
    assert denied is not None and denied.reason == "RollbackAlreadyGranted"
    # the rollback's entry never counts as the command's own grant (and the other way round)
    assert grants.claim(grant(UNDO), claimed, NOW).denial is None


def test_a_rollback_undoes_the_command_of_the_grant_now_under_the_forward_name() -> None:
    # "fwd" ran CMD and was deleted; a grant created again as "fwd" ran the request's other
    # command: a rollback of "fwd" is the rollback of that one, claimed under its command (the
    # gateway looks the claim up under the command of the grant it reads as "fwd")
    other = "kubectl rollout restart deployment/api -n apps"
    a = _reviewed(APPROVED)
    a["spec"]["commands"].append(other)
    a["spec"]["rollbacks"].append({"command": other,
                                   "rollback": "kubectl rollout undo deployment/api -n apps"})
    a["status"]["grants"].append({"command": other, "grant": "fwd", "grantUID": "f2",
                                  "grantedAt": "2026-11-25T11:30:00Z"})
    rollback = _rb("kubectl rollout undo deployment/api -n apps")
    forward = {**_forward(), "metadata": {"name": "fwd", "namespace": "ns", "uid": "f2"},
               "spec": {"approvalRef": {"name": "req"}, "command": other}}
    assert grants.authorize(rollback, a, RB_POLICY, RB_ALLOW, NOW, forward=forward).ok
    assert grants.undoes(rollback, a) == other
    taken = grants.claim(rollback, a, NOW, undoes=grants.undoes(rollback, a))
    assert taken.grants is not None and taken.grants[-1]["rollbackOf"] == other


# --------------------------------------------------------------------------- Job deadline

CREATED = "2026-11-25T12:00:00Z"


def gateway_job(ttl: int = 300, **env: str) -> dict[str, Any]:
    """The gateway Job as the operator makes it (its deadline by the manifest's formula)."""
    settings = OperatorSettings.from_env({"WINGMAN_GATEWAY_TIMEOUT_SECONDS": "120",
                                          "WINGMAN_LEEWAY_SECONDS": "5", **env})
    job = manifests.gateway_job(grant(), settings, max(ttl, 30))
    job["metadata"]["creationTimestamp"] = CREATED
    return job


def needed(job: dict[str, Any], claimed_after: int, ttl: int = 300) -> int | None:
    """What ``deadline_for`` asks of ``job`` for a token claimed ``claimed_after`` seconds after
    the Job was made, with the leeway and timeout the Job gives its gateway."""
    expires = int(NOW.timestamp()) + claimed_after + ttl
    return grants.deadline_for(
        job, expires, leeway=manifests.job_gateway_seconds(job, "WINGMAN_LEEWAY_SECONDS") or 0,
        exec_timeout=manifests.job_gateway_seconds(job, "WINGMAN_EXEC_TIMEOUT_SECONDS") or 0,
        start_seconds=manifests.START_SECONDS)


@pytest.mark.parametrize("ttl", [10, 30, 300, 3600])
def test_a_claim_within_30_s_of_the_job_needs_no_longer_deadline(ttl: int) -> None:
    job = gateway_job(ttl)
    assert manifests.job_gateway_seconds(job, "WINGMAN_LEEWAY_SECONDS") == 5
    assert manifests.job_gateway_seconds(job, "WINGMAN_EXEC_TIMEOUT_SECONDS") == 120
    for after in (0, 1, 30):
        assert needed(job, after, ttl) is None, after


def test_a_late_claim_gets_a_deadline_a_job_made_at_the_claim_would_have() -> None:
    job = gateway_job()
    assert job["spec"]["activeDeadlineSeconds"] == 300 + 5 + 120 + 60
    assert needed(job, 31) == 31 + 300 + 5 + 120 + 60
    assert needed(job, 3600) == 3600 + 300 + 5 + 120 + 60
    # a token expiring at the Job's deadline or after it (the operator away that long)
    assert needed(job, 500) == 500 + 485


def test_the_deadline_counts_the_leeway_and_timeout_the_job_gives_its_gateway() -> None:
    job = gateway_job(WINGMAN_GATEWAY_TIMEOUT_SECONDS="600", WINGMAN_LEEWAY_SECONDS="0")
    assert needed(job, 30) is None
    assert needed(job, 31) == 31 + 300 + 0 + 600 + 60


@pytest.mark.parametrize("change", [
    lambda j: j["spec"].pop("activeDeadlineSeconds"),
    lambda j: j["metadata"].pop("creationTimestamp"),
    lambda j: j["metadata"].update(creationTimestamp="not a time"),
    lambda j: j["spec"].update(suspend=True),
    lambda j: j["spec"].update(activeDeadlineSeconds=True),
], ids=["no-deadline", "no-creation", "garbled-creation", "suspended", "bool-deadline"])
def test_a_job_without_a_deadline_counted_from_its_creation_is_left_alone(
        change: Any) -> None:
    # an earlier release's suspended Job counts its deadline from its release
    job = gateway_job()
    change(job)
    assert needed(job, 3600) is None


def test_the_gateway_s_seconds_are_read_from_its_own_container_only() -> None:
    job = gateway_job()
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "WINGMAN_LEEWAY_SECONDS", "value": "-5"},
                        {"name": "WINGMAN_EXEC_TIMEOUT_SECONDS", "valueFrom": {}}]
    assert manifests.job_gateway_seconds(job, "WINGMAN_LEEWAY_SECONDS") is None
    assert manifests.job_gateway_seconds(job, "WINGMAN_EXEC_TIMEOUT_SECONDS") is None
    container["name"] = "sidecar"
    container["env"] = [{"name": "WINGMAN_LEEWAY_SECONDS", "value": "7"}]
    assert manifests.job_gateway_seconds(job, "WINGMAN_LEEWAY_SECONDS") is None


def _deleting(body: dict[str, Any]) -> dict[str, Any]:
    body["metadata"]["deletionTimestamp"] = "2026-11-25T11:59:00Z"
    return body


def test_nothing_is_granted_under_an_approval_being_deleted() -> None:
    auth = grants.authorize(grant(), _deleting(approval(APPROVED)), POLICY, ALLOW, NOW)
    assert (auth.ok, auth.reason) == (False, "ApprovalDeleted")
    assert "being deleted" in auth.message and "new request" in auth.message
    rollback = grants.authorize(_rb(), _deleting(_reviewed(APPROVED)), RB_POLICY, RB_ALLOW, NOW,
                                forward=_forward())
    assert (rollback.ok, rollback.reason) == (False, "ApprovalDeleted")


GATEWAY_JOB_GRANT = {"metadata": {"name": "web-restart-1", "namespace": "apps"},
                     "status": {"phase": "Running", "jobName": "web-restart-1-gw"}}


@pytest.mark.parametrize(("reason", "why"), [("BackoffLimitExceeded", "GatewayFailed"),
                                             ("", "GatewayFailed"),
                                             ("DeadlineExceeded", "DeadlineExceeded")])
def test_a_gateway_job_that_failed_without_a_result_says_the_command_may_have_run(
        reason: str, why: str) -> None:
    """A gateway that exits 1 after the command ran (its result could not be written) and one
    that failed before it look the same from the Job: the message says so, and where to tell
    which (the audit's records for the grant, the Job's log), never that nothing ran."""
    got, message = grants.job_ended_without_result(GATEWAY_JOB_GRANT, "web-restart-1-gw",
                                                   "Failed", reason)
    assert got == why
    assert "before recording" not in message
    assert "may or may not have run" in message
    assert "GatewayResultUnrecorded" in message and "GatewayExecuting" in message
    assert "--subject web-restart-1 -n apps" in message
    assert "kubectl logs job/web-restart-1-gw -n apps" in message
    assert (reason or "no reason") in message


@pytest.mark.parametrize(("kind", "reason", "why"), [
    ("Failed", "BackoffLimitExceeded", "GatewayFailed"),
    ("Failed", "DeadlineExceeded", "DeadlineExceeded"),
    ("Complete", "", "GatewayNoResult")])
def test_a_gateway_job_that_ended_before_any_gateway_ran_says_the_command_did_not_run(
        kind: str, reason: str, why: str) -> None:
    """A grant whose stored status never became Running (a gateway writes it, with the token's
    hash, before any command starts): nothing ran, and the message says so plainly."""
    grant = {"metadata": {"name": "g" * 253, "namespace": "n" * 63}}
    got, message = grants.job_ended_without_result(grant, "j" * 63, kind, reason,
                                                   ran_nothing=True)
    assert got == why
    assert "so the command did not run" in message and "may or may not" not in message
    assert f"kubectl logs job/{'j' * 63} -n {'n' * 63}" in message
    assert message.endswith("submit a new request to run it")
    assert len(message) <= grants.MESSAGE_CHARS


@pytest.mark.parametrize(("status", "known"), [
    (None, True),
    ({"phase": "Pending"}, True),
    # a gateway's Running copies the token's hash, which nobody can remove: a reset shows
    ({"phase": "Pending", "tokenSHA256": "sha256:" + "a" * 64}, False),
    ({"phase": "TokenIssued", "tokenSHA256": "sha256:" + "a" * 64}, False),
    ({"phase": "Running"}, False)])
def test_only_a_grant_no_gateway_can_have_written_running_on_is_known_to_have_run_nothing(
        status: dict[str, Any] | None, known: bool) -> None:
    grant: dict[str, Any] = {"metadata": {"name": "g"}}
    if status is not None:
        grant["status"] = status
    assert grants.never_running(grant) is known


def test_a_gateway_job_that_completed_without_a_result_is_no_result() -> None:
    got, message = grants.job_ended_without_result(GATEWAY_JOB_GRANT, "web-restart-1-gw",
                                                   "Complete", "")
    assert got == "GatewayNoResult"
    assert "completed without recording a result" in message
    assert "kubectl logs job/web-restart-1-gw -n apps" in message


def test_a_gateway_job_s_message_keeps_its_advice_with_the_longest_names() -> None:
    """Names at their longest (a grant's 253 characters, a namespace's 63) and a Job reason
    written by someone else than the Job controller: the message still fits what the grant's
    condition and audit record keep, down to its last advice."""
    grant = {"metadata": {"name": "g" * 253, "namespace": "n" * 63}}
    _, message = grants.job_ended_without_result(grant, "j" * 63, "Failed", "R" * 5000)
    assert len(message) <= grants.MESSAGE_CHARS
    assert message.endswith("Check the target before running the command again")
