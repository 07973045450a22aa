"""The gateway's pure checks that need no cluster (the run itself: tests/integration)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from wingman.audit import GENESIS_HASH, make_record
from wingman.capability import tokens
from wingman.errors import ClusterError, GrantDenied, TokenRejected
from wingman.gateway.checks import (
    MAX_TOKEN_FILE_BYTES,
    RESULT_SECONDS,
    JobDeadline,
    check_deadline,
    check_granted,
    check_not_run,
    check_startable,
    check_targets,
    check_unexpired,
    read_token,
    refusal_reason,
)
from wingman.model import grants as grant_rules
from wingman.model import preview as pv
from wingman.operator import grants as operator_grants

CMD = "kubectl rollout restart deployment/web -n apps"


def approval(*grants: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "req"}, "status": {"grants": list(grants)}}


def entry(command: str = CMD, grant: str = "g", uid: str = "g1") -> dict[str, str]:
    return {"command": command, "grant": grant, "grantUID": uid,
            "grantedAt": "2026-11-25T12:00:00Z"}


def test_the_grant_the_approval_records_may_run() -> None:
    check_granted(approval(entry("kubectl get pods"), entry()), CMD, "g1", "g")


@pytest.mark.parametrize(("recorded", "reason", "names"), [
    ((), "CommandNotGranted", "no grant"),
    ((entry(grant="first", uid="u0"),), "CommandAlreadyGranted", "'first'"),
    ((entry(command=CMD + " "),), "CommandNotGranted", "no grant"),
])
def test_any_other_record_refuses(recorded: tuple[dict[str, str], ...], reason: str,
                                  names: str) -> None:
    with pytest.raises(GrantDenied) as err:
        check_granted(approval(*recorded), CMD, "g1", "g")
    assert err.value.reason == reason
    assert names in err.value.message and "nothing was executed" in err.value.message


def test_a_grant_named_like_the_holder_but_with_another_uid_is_refused() -> None:
    with pytest.raises(GrantDenied):
        check_granted(approval(entry()), CMD, "another-uid", "g")


def test_a_claim_that_records_this_token_may_run() -> None:
    """The operator issues a token on the claim: the claim's tokenSHA256 is this token's."""
    ref = tokens.token_sha256("the token")
    check_granted(approval({**entry(), "tokenSHA256": ref}), CMD, "g1", "g", token_ref=ref)


@pytest.mark.parametrize("held", [tokens.token_sha256("another token"), None])
def test_a_claim_that_records_another_token_refuses_before_anything_is_spent(
        held: str | None) -> None:
    recorded = approval({**entry(), "tokenSHA256": tokens.token_sha256("the token")})
    with pytest.raises(GrantDenied) as err:
        check_granted(recorded, CMD, "g1", "g", token_ref=held)
    assert err.value.reason == "BindingMismatch"
    assert "another token" in err.value.message and "not spent" in err.value.message


# --------------------------------------------------------------------------- the token file


@pytest.mark.parametrize("size", [MAX_TOKEN_FILE_BYTES + 1, 64 * 1024, 64 * 1024 + 1,
                                  10 * 1024 * 1024])
def test_an_oversized_token_file_is_refused_not_cut_short(tmp_path: Path, size: int) -> None:
    path = tmp_path / "token"
    token = "eyJ" + "a" * 100 + ".b.c"
    path.write_bytes(token.encode() + b" " * (size - len(token)))
    with pytest.raises(GrantDenied) as err:
        read_token(path)
    assert err.value.reason == "TokenOversized"
    assert "nothing was executed" in err.value.message


def test_a_token_file_at_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token = "x" * tokens.MAX_TOKEN_BYTES
    path.write_bytes(token.encode() + b"\n" * (MAX_TOKEN_FILE_BYTES - len(token)))
    assert read_token(path) == token


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_an_empty_token_file_is_no_token(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(GrantDenied) as err:
        read_token(path)
    assert err.value.reason == "NoToken"
    with pytest.raises(GrantDenied) as err:
        read_token(tmp_path / "absent")
    assert err.value.reason == "NoToken"


def _previewed(*targets: pv.Target) -> dict[str, Any]:
    preview = pv.Preview("u", (pv.CommandPreview(CMD, "kubernetes", pv.Outcome.PREVIEWED, "",
                                                 targets),))
    return {"metadata": {"name": "req", "uid": "u"},
            "status": {"preview": pv.status(preview, job="j", started="t", completed="t")}}


WEB = pv.Target(group="apps", version="v1", resource="deployments", kind="Deployment",
                name="web", namespace="apps", uid="w", resource_version="7", generation=2)


def test_a_target_the_gateway_cannot_read_refuses_unless_drift_is_allowed() -> None:
    def unreadable(_: pv.Target) -> dict[str, Any]:
        raise ClusterError("API server answered 403 Forbidden", reason="Forbidden")

    with pytest.raises(GrantDenied) as err:
        check_targets(_previewed(WEB), CMD, allow_drift=False, read=unreadable)
    assert err.value.reason == "TargetUnreadable" and "403" in err.value.message
    assert check_targets(_previewed(WEB), CMD, allow_drift=True, read=unreadable) == [
        "unreadable deployments.apps apps/web: API server answered 403 Forbidden"]


def test_a_command_without_recorded_targets_binds_nothing() -> None:
    def never(_: pv.Target) -> dict[str, Any]:
        raise AssertionError("nothing to read")

    assert check_targets(_previewed(), CMD, allow_drift=False, read=never) == []
    assert check_targets({"metadata": {"name": "req"}}, CMD, allow_drift=False,
                         read=never) == []


def test_a_failed_preview_binds_nothing_its_reviewers_saw_the_finding() -> None:
    def never(_: pv.Target) -> dict[str, Any]:
        raise AssertionError("nothing to read")

    failed = {"metadata": {"name": "req", "uid": "u"},
              "status": {"preview": {"phase": "Failed", "message": "timed out"},
                         "conditions": [{"type": "Previewed", "status": "False"}]}}
    assert check_targets(failed, CMD, allow_drift=False, read=never) == []


def _tampered(case: str) -> dict[str, Any]:
    body = _previewed(WEB)
    body["status"]["conditions"] = [{"type": "Previewed", "status": "True",
                                     "reason": "PreviewSucceeded"}]
    if case == "removed":
        del body["status"]["preview"]
    elif case == "unfinished":
        body["status"]["preview"]["phase"] = "Running"
    elif case == "unreadable":
        body["status"]["preview"]["commands"][0]["targets"][0]["uid"] = "bad uid!"
    elif case == "other-command":
        body["status"]["preview"]["commands"][0]["command"] = "kubectl get pods -n apps"
    elif case == "no-commands":
        body["status"]["preview"]["commands"] = []
    return body


@pytest.mark.parametrize("case", ["removed", "unfinished", "unreadable", "other-command",
                                  "no-commands"])
@pytest.mark.parametrize("allow_drift", [False, True])
def test_a_preview_record_that_cannot_be_trusted_refuses_even_where_drift_is_allowed(
        case: str, allow_drift: bool) -> None:
    # a previewed request whose record is gone, unfinished, malformed or lacks the command
    # would otherwise bind nothing: the gateway fails closed instead
    def never(_: pv.Target) -> dict[str, Any]:
        raise AssertionError("nothing is read before the record is trusted")

    with pytest.raises(GrantDenied) as err:
        check_targets(_tampered(case), CMD, allow_drift=allow_drift, read=never)
    assert err.value.reason == "PreviewUnusable"
    assert "Nothing was executed" in err.value.message and "new request" in err.value.message


# --------------------------------------------------------------------------- the Running write

TOKEN_REF = tokens.token_sha256("the token")


def issued(**meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "g", "uid": "g1", **meta},
            "status": {"phase": "TokenIssued", "tokenSHA256": TOKEN_REF}}


def test_the_grant_waiting_for_this_token_may_start() -> None:
    check_startable(issued(), grant_uid="g1", token_ref=TOKEN_REF)


@pytest.mark.parametrize(("grant", "reason"), [
    # cancelled (kubectl delete --cascade=foreground, or any finalizer keeps it a while)
    (issued(deletionTimestamp="2026-11-25T12:00:00Z"), "GrantDeleted"),
    (issued(uid="another"), "BindingMismatch"),
    ({**issued(), "status": {"phase": "Failed", "tokenSHA256": TOKEN_REF}}, "GrantNotIssued"),
    ({**issued(), "status": {"phase": "TokenIssued", "tokenSHA256": "sha256:0"}},
     "GrantNotIssued"),
    ({**issued(), "status": {"phase": "TokenIssued"}}, "GrantNotIssued"),
])
def test_any_other_grant_does_not_start(grant: dict[str, Any], reason: str) -> None:
    with pytest.raises(GrantDenied) as err:
        check_startable(grant, grant_uid="g1", token_ref=TOKEN_REF)
    assert err.value.reason == reason
    assert "executed" in err.value.message


def test_a_pending_grant_whose_claim_records_this_token_may_start_as_judged() -> None:
    """The operator writes nothing to a grant it issues on the claim: the Running write is
    judged on ``grants.view`` of the grant read for it; the stored Pending phase alone does
    not start."""
    pending = {"metadata": {"name": "g", "uid": "g1"}, "status": {"phase": "Pending"}}
    claimed = approval({**entry(), "tokenSHA256": TOKEN_REF})
    check_startable(grant_rules.view(pending, claimed), grant_uid="g1", token_ref=TOKEN_REF)
    with pytest.raises(GrantDenied) as err:
        check_startable(pending, grant_uid="g1", token_ref=TOKEN_REF)
    assert err.value.reason == "GrantNotIssued"
    other = approval({**entry(), "tokenSHA256": "sha256:0"})
    with pytest.raises(GrantDenied):
        check_startable(grant_rules.view(pending, other), grant_uid="g1", token_ref=TOKEN_REF)


# ------------------------------------------------------------------------------ the Job deadline

START = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def job(seconds: object = 600, *, started: str | None = "2026-11-25T12:00:00Z",
        created: str | None = "2026-11-25T11:59:00Z") -> dict[str, Any]:
    return {"metadata": {"name": "g-gw", **({"creationTimestamp": created} if created else {})},
            "spec": {"activeDeadlineSeconds": seconds},
            "status": {"startTime": started} if started else {}}


def test_a_command_and_its_result_that_fit_before_the_deadline_may_start() -> None:
    # 600 s from the start: at 400 s, 120 s of command and the result's writes still fit
    check_deadline(job(), START + dt.timedelta(seconds=600 - 120 - RESULT_SECONDS), 120)
    check_deadline(job(seconds=None), START + dt.timedelta(days=1), 120)  # no deadline


@pytest.mark.parametrize(("the_job", "late"), [
    (job(), 600 - 120 - RESULT_SECONDS + 1),  # the result would not be written
    (job(), 600 - 60),  # the command could be stopped half-way
    (job(), 700),  # past the deadline already
    # no start recorded yet: counted from the creation, a minute earlier
    (job(started=None), 600 - 60 - 120 - RESULT_SECONDS + 1),
])
def test_a_command_the_deadline_could_stop_half_way_is_refused(the_job: dict[str, Any],
                                                               late: int) -> None:
    with pytest.raises(GrantDenied) as err:
        check_deadline(the_job, START + dt.timedelta(seconds=late), 120)
    assert err.value.reason == "DeadlineTooClose"
    assert "g-gw" in err.value.message and "120 s" in err.value.message
    assert "not spent" in err.value.message and "new request" in err.value.message


def test_after_the_burn_the_refusal_says_the_token_was_spent() -> None:
    with pytest.raises(GrantDenied) as err:
        check_deadline(job(), START + dt.timedelta(seconds=600 - 60), 120, spent=True)
    assert err.value.reason == "DeadlineTooClose"
    assert "token was spent" in err.value.message and "not spent" not in err.value.message


def test_a_token_that_expired_since_it_was_verified_is_not_spent() -> None:
    claims = tokens.CapabilityClaims(
        iss="wingman-operator", aud="test", sub="alice", jti="0" * 32, iat=1000, nbf=1000,
        exp=1300, approval_name="req", approval_uid="a1", grant_name="g", grant_uid="g1",
        namespace="wingman", command=CMD, command_sha256="0" * 64)
    at = dt.datetime.fromtimestamp
    check_unexpired(claims, at(1304.9, dt.UTC), 5, "sha256:t")  # within the leeway
    with pytest.raises(TokenRejected) as err:
        check_unexpired(claims, at(1305, dt.UTC), 5, "sha256:t")
    assert refusal_reason(err.value) == ("TokenExpired", "Expired")
    assert "sha256:t" in err.value.message and "not spent" in err.value.message


def _executing(seq: int, command_sha256: str, **data: Any) -> Any:
    return make_record(seq, GENESIS_HASH, "GatewayExecuting", actor="gateway/p",
                       subject={"kind": "ExecutionGrant", "name": f"g-{seq}", "uid": f"u{seq}"},
                       data={"approval_uid": "a1", "command_sha256": command_sha256, **data},
                       now=START)


def test_a_command_the_audit_trail_says_ran_is_not_run_again() -> None:
    """The cluster forgot (etcd restored from a backup); the trail did not: the same command
    of the request is refused whichever grant ran it; another command of the request is not,
    nor the same text as a rollback, nor the rollback of another command that shares its text
    (checked after the burn)."""
    claims = tokens.CapabilityClaims(
        iss="wingman-operator", aud="test", sub="alice", jti="0" * 32, iat=1000, nbf=1000,
        exp=1300, approval_name="req", approval_uid="a1", grant_name="g", grant_uid="g1",
        namespace="wingman", command=CMD, command_sha256="0" * 64)
    other = _executing(3, "sha256:" + "1" * 64)
    as_rollback = _executing(4, "sha256:" + "0" * 64, rollbackOf="g-0")
    check_not_run([], claims, rollback_of=None)
    check_not_run([other, as_rollback], claims, rollback_of=None)
    with pytest.raises(GrantDenied) as err:
        check_not_run([other, _executing(7, "sha256:" + "0" * 64)], claims, rollback_of=None)
    assert err.value.reason == "CommandAlreadyRan"
    assert "audit seq 7" in err.value.message and "'g-7'" in err.value.message
    assert "token is spent" in err.value.message and "new request" in err.value.message
    with pytest.raises(GrantDenied, match="started already"):
        check_not_run([as_rollback], claims, rollback_of="g-0")
    # two commands with one rollback text: undoing the second is its own rollback
    check_not_run([as_rollback, _executing(8, "sha256:" + "0" * 64)], claims,
                  rollback_of="g-5")


@pytest.mark.parametrize(("local", "server", "measured"), [
    (0, 30, 31),  # the gateway's clock behind: the API server's, plus its Date's second
    (30, 0, 30),  # ahead: its own (the earlier deadline of the two)
    (0, None, 0),  # no Date in the answer: the gateway's own
])
def test_the_deadline_is_measured_on_the_later_clock(local: int, server: int | None,
                                                     measured: int) -> None:
    at = JobDeadline.read(job(), START + dt.timedelta(seconds=local),
                          None if server is None else START + dt.timedelta(seconds=server),
                          100.0)
    assert at.now(100.0) == START + dt.timedelta(seconds=measured)
    # carried on by the monotonic clock, never backwards
    assert at.now(110.5) == START + dt.timedelta(seconds=measured + 10.5)
    assert at.now(90.0) == START + dt.timedelta(seconds=measured)


@pytest.mark.parametrize("the_job", [job(seconds="600"), job(seconds=True),
                                     job(started=None, created=None)])
def test_a_deadline_that_cannot_be_told_refuses(the_job: dict[str, Any]) -> None:
    with pytest.raises(GrantDenied) as err:
        check_deadline(the_job, START, 120)
    assert err.value.reason == "DeadlineUnknown"


def test_a_deadline_the_operator_left_as_it_was_fits_a_command_started_at_the_tokens_end() -> None:
    # the operator extends a Job's deadline only when it leaves less than SLACK_SECONDS after
    # the last command a token allows: what it leaves must never be refused here
    assert RESULT_SECONDS < operator_grants.SLACK_SECONDS
