"""What the operator remembers between events: what each object still needs, retirement."""

from __future__ import annotations

import datetime as dt
from typing import Any

from wingman.operator import state

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def approval(name: str = "req", *conds: tuple[str, str, str], **status: Any) -> dict[str, Any]:
    return {"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}",
                         "resourceVersion": "7", "creationTimestamp": "2026-11-25T11:00:00Z"},
            "spec": {"requester": "alice", "commands": ["c"]},
            "status": {**status, "conditions": [
                {"type": t, "status": s, "lastTransitionTime": at} for t, s, at in conds]}}


def grant(name: str = "g", phase: str | None = None, **status: Any) -> dict[str, Any]:
    st = {**status, **({"phase": phase} if phase else {})}
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}",
                         "creationTimestamp": "2026-11-25T11:00:00Z"},
            "spec": {"approvalRef": {"name": "req"}}, "status": st}


REVIEWED = ("Reviewed", "True", "2026-11-25T11:00:01Z")


def test_an_unreviewed_request_needs_a_review_and_says_since_when() -> None:
    t = state.Tracker()
    e = t.observe_approval(approval(), False, NOW)
    assert e.needs == "review" and e.needs_since == NOW
    later = NOW + dt.timedelta(seconds=30)
    t.observe_approval(approval(), False, later)
    assert e.needs_since == NOW, "the wait counts from when it started"
    assert t.oldest_unsettled("approval", later) == 30.0
    t.observe_approval(approval("req", REVIEWED, phase="AwaitingDecision"), False, later)
    assert e.needs is None and t.oldest_unsettled("approval", later) == 0.0


def test_decisions_and_expiry_are_work_but_a_final_request_needs_nothing() -> None:
    t = state.Tracker()
    assert t.observe_approval(approval("req", REVIEWED), True, NOW).needs == "decisions"
    past = approval("req", REVIEWED, expirationTime="2026-11-25T11:59:00Z")
    assert t.observe_approval(past, False, NOW).needs == "expiry"
    final = approval("req", REVIEWED, ("Rejected", "True", "2026-11-25T11:30:00Z"),
                     expirationTime="2026-11-25T11:59:00Z")
    e = t.observe_approval(final, False, NOW)
    assert e.needs is None
    # a decision added to it after all: the operator reports it ignored (DecisionIgnored)
    assert t.observe_approval(final, True, NOW).needs == "decisions"
    assert e.final_at == dt.datetime(2026, 11, 25, 11, 30, tzinfo=dt.UTC)
    assert e.body is None, "no copy of final requests is kept"


def test_the_copy_kept_for_grants_leaves_out_the_panels_votes() -> None:
    body = approval("req", REVIEWED, consensus={"votes": ["x" * 1000]}, grants=[{"c": 1}])
    e = state.Tracker().observe_approval(body, False, NOW)
    assert e.body is not None
    assert "consensus" not in e.body["status"] and e.body["status"]["grants"] == [{"c": 1}]
    assert e.body["metadata"]["resourceVersion"] == "7"


def test_grants_need_issuing_releasing_and_cleaning_up_until_done() -> None:
    t = state.Tracker()
    e = t.observe_grant(grant(), NOW)
    assert e.needs == "issue"
    assert t.observe_grant(grant(phase="TokenIssued"), NOW).needs == "release"
    e.released = True
    assert t.observe_grant(grant(phase="TokenIssued"), NOW).needs is None
    assert t.observe_grant(grant(phase="Running"), NOW).needs is None
    e.job_done = ("Failed", "DeadlineExceeded")
    assert t.observe_grant(grant(phase="Running"), NOW).needs == "result"
    done = t.observe_grant(grant(phase="Succeeded", completionTime="2026-11-25T11:10:00Z"), NOW)
    assert done.needs == "cleanup" and done.final_at == dt.datetime(2026, 11, 25, 11, 10,
                                                                    tzinfo=dt.UTC)
    e.cleaned = True
    assert t.observe_grant(grant(phase="Succeeded"), NOW).needs is None


ISSUED = {"command": "c", "grant": "g", "grantUID": "u-g", "grantedAt": "2026-11-25T11:59:00Z",
          "tokenSHA256": "ab" * 32, "tokenExpirationTime": "2026-11-25T12:09:00Z",
          "jobName": "g-gw", "tokenSecretName": "g-gw-token-0123456789abcdef"}
ISSUED_EXPIRY = dt.datetime(2026, 11, 25, 12, 9, tzinfo=dt.UTC)


def test_a_grant_issued_on_its_claim_is_token_issued_whichever_the_watches_deliver_first() -> None:
    """Its stored phase stays Pending; the claim that records its token makes it TokenIssued,
    with the claim's expiry, so it needs releasing and its expiry is watched; a raw Pending
    grant seen again (its own watch event) does not forget it."""
    claimed = approval("req", REVIEWED, phase="Approved", grants=[ISSUED])
    grant_first, approval_first = state.Tracker(), state.Tracker()
    e = grant_first.observe_grant(grant(), NOW)
    assert (e.phase, e.needs) == ("Pending", "issue")
    grant_first.observe_approval(claimed, False, NOW)
    approval_first.observe_approval(claimed, False, NOW)
    f = approval_first.observe_grant(grant(), NOW)
    for t, entry in ((grant_first, e), (approval_first, f)):
        assert (entry.phase, entry.needs, entry.expires_at) == (
            "TokenIssued", "release", ISSUED_EXPIRY)
        entry.released = True
        t.settle(entry, None, NOW)
        t.observe_grant(grant(), NOW)  # the raw grant again: still TokenIssued, released
        assert (entry.phase, entry.needs, entry.expires_at) == (
            "TokenIssued", None, ISSUED_EXPIRY)
        assert t.view(grant())["status"] == {
            "phase": "TokenIssued", **{k: ISSUED[k] for k in (
                "tokenSHA256", "tokenExpirationTime", "jobName", "tokenSecretName")}}
        later = ISSUED_EXPIRY + dt.timedelta(seconds=31)
        assert state.expiry_due(entry, later, 1.0, dt.timedelta(seconds=30), 30.0)
        # the gateway writes Running: the grant's own phase from then on
        assert t.observe_grant(grant("g", "Running"), NOW).phase == "Running"
        t.forget("grant", "u-g")
        assert t.claims == {}


def test_a_claim_without_a_token_or_of_a_final_grant_changes_nothing() -> None:
    """A claim of an earlier release (or of a grant named over 54 characters) records no token:
    the grant is judged by its own status; a final grant stays final."""
    t = state.Tracker()
    plain = {k: ISSUED[k] for k in ("command", "grant", "grantUID", "grantedAt")}
    t.observe_approval(approval("req", REVIEWED, phase="Approved", grants=[plain]), False, NOW)
    assert t.observe_grant(grant(), NOW).phase == "Pending" and t.claims == {}
    t.observe_approval(approval("req", REVIEWED, phase="Approved", grants=[ISSUED]), False, NOW)
    e = t.observe_grant(grant("g", "Expired", completionTime="2026-11-25T12:10:00Z"), NOW)
    assert (e.phase, e.needs) == ("Expired", "cleanup")


def test_retirement_waits_for_the_retention_and_a_request_outlives_its_grants() -> None:
    t = state.Tracker()
    rejected = approval("req", REVIEWED, ("Rejected", "True", "2026-11-24T10:00:00Z"))
    t.observe_approval(rejected, False, NOW)
    running = t.observe_grant(grant("g1", phase="Running"), NOW)
    day = dt.timedelta(days=1)
    assert state.due_for_retirement(t, day, NOW) == [], "a grant of it is still running"
    done = grant("g1", phase="Failed", completionTime="2026-11-25T11:00:00Z")
    t.observe_grant(done, NOW)
    running.cleaned = True
    t.observe_grant(done, NOW)
    assert state.due_for_retirement(t, day, NOW) == [], "its grant is not due yet"
    later = NOW + dt.timedelta(hours=23)
    assert [e.name for e in state.due_for_retirement(t, day, later)] == ["g1", "req"]
    assert state.due_for_retirement(t, dt.timedelta(days=30), later) == []


def test_grants_of_requests_with_rollbacks_stay_for_the_rollback_window() -> None:
    t = state.Tracker()
    body = approval("req", REVIEWED, ("Expired", "True", "2026-11-25T11:00:00Z"))
    body["spec"]["rollbacks"] = [{"command": "c", "rollback": "undo"}]
    assert t.observe_approval(body, False, NOW).rollbacks
    g = t.observe_grant(grant("g1", phase="Succeeded", completionTime="2026-11-25T11:00:00Z"),
                        NOW)
    g.cleaned = True
    t.observe_grant(grant("g1", phase="Succeeded", completionTime="2026-11-25T11:00:00Z"), NOW)
    hour, window = dt.timedelta(hours=1), dt.timedelta(hours=6)
    soon = NOW + dt.timedelta(hours=2)
    assert state.due_for_retirement(t, hour, soon, rollback_window=window) == []
    late = NOW + dt.timedelta(hours=6)
    assert [e.name for e in state.due_for_retirement(t, hour, late, rollback_window=window)] \
        == ["g1", "req"]


def test_the_warning_before_a_pending_request_expires_is_work_once_due() -> None:
    t = state.Tracker()
    body = approval("req", REVIEWED, expirationTime="2026-11-25T13:00:00Z")
    warn = dt.datetime(2026, 11, 25, 12, 30, tzinfo=dt.UTC)
    assert t.observe_approval(body, False, NOW, warn_at=warn).needs is None
    assert t.observe_approval(body, False, warn, warn_at=warn).needs == "warning"


def test_forgetting_a_request_forgets_its_name() -> None:
    t = state.Tracker()
    t.observe_approval(approval(), False, NOW)
    assert t.approval("req") is not None
    t.forget("approval", "u-req")
    assert t.approval("req") is None and not t.approvals


def released_grant() -> state.Entry:
    """A released grant whose token expires at 11:59:00."""
    e = state.Tracker().observe_grant(grant(phase="TokenIssued",
                                            tokenExpirationTime="2026-11-25T11:59:00Z"), NOW)
    e.released = True
    return e


def test_an_expired_token_is_looked_at_once_then_only_every_resync_interval() -> None:
    leeway, resync = dt.timedelta(seconds=5), 30.0
    e = released_grant()
    expired = dt.datetime(2026, 11, 25, 11, 59, 5, tzinfo=dt.UTC)
    assert e.expires_at == dt.datetime(2026, 11, 25, 11, 59, tzinfo=dt.UTC)
    # not yet past expiry + leeway: nothing to do
    assert not state.expiry_due(e, expired - dt.timedelta(seconds=1), 1000.0, leeway, resync)
    # past it and never looked at (or last looked at before it): look now
    assert state.expiry_due(e, NOW, 1000.0, leeway, resync)
    e.attempted = 900.0  # 100 s ago, i.e. before the token expired
    assert state.expiry_due(e, NOW, 1000.0, leeway, resync)
    # looked at after it expired (a gateway pod was running): its Job's end settles it; the
    # sweep looks again only once the resync interval has passed
    e.attempted = 990.0
    assert not state.expiry_due(e, NOW, 1000.0, leeway, resync)
    assert state.expiry_due(e, NOW + dt.timedelta(seconds=30), 1030.0, leeway, resync)
    # a final grant, or one that is not TokenIssued, never
    e.final_at = NOW
    assert not state.expiry_due(e, NOW, 2000.0, leeway, resync)


def test_a_grant_whose_job_is_active_is_looked_at_again_only_after_the_jobs_deadline() -> None:
    leeway, resync = dt.timedelta(seconds=5), 30.0
    e = released_grant()
    job = {"spec": {"activeDeadlineSeconds": 600},
           "status": {"active": 1, "startTime": "2026-11-25T11:58:30Z"}}
    e.job_deadline = state.job_deadline(job)
    assert e.job_deadline == dt.datetime(2026, 11, 25, 12, 8, 30, tzinfo=dt.UTC)
    e.attempted = 990.0  # looked at 10 s ago, after the token expired: its Job was active
    # the Job's end (a watch event) settles it before its deadline: no re-reads meanwhile
    for minutes in (1, 3, 8):
        at = NOW + dt.timedelta(minutes=minutes)
        assert not state.expiry_due(e, at, 990.0 + 60 * minutes + 10, leeway, resync)
    # the event was lost: once the deadline is resync seconds past, it is looked at again
    deadline = e.job_deadline

    def due_at(seconds_past_deadline: float) -> bool:
        at = deadline + dt.timedelta(seconds=seconds_past_deadline)
        return state.expiry_due(e, at, 1000.0 + (at - NOW).total_seconds(), leeway, resync)

    def looked(seconds_past_deadline: float) -> None:
        e.attempted = 1000.0 + (deadline - NOW).total_seconds() + seconds_past_deadline
    assert not due_at(29) and due_at(30)
    looked(30)
    # its Job is still active (its controller is late): the looks grow apart, each after as
    # long as the last one was past the deadline
    assert not due_at(59) and due_at(60)
    looked(60)
    assert not due_at(119) and due_at(120)
    looked(120)
    assert not due_at(239) and due_at(240)
    # a grant whose Job's deadline is unknown: every resync interval
    e.job_deadline = None
    assert not due_at(130) and due_at(150)


def test_a_grant_whose_job_the_watch_shows_active_is_not_read_at_the_tokens_expiry() -> None:
    """The Jobs watch said the gateway Job is active: at the token's expiry the sweep reads
    neither the grant nor its Job (the Job's end, a watch event, settles it), and looks only
    once the Job's deadline is resync seconds past, in case that event was lost."""
    leeway, resync = dt.timedelta(seconds=5), 30.0
    e = released_grant()
    e.attempted = 900.0  # reconciled when issued, before the token expired
    e.job_deadline = dt.datetime(2026, 11, 25, 12, 8, 30, tzinfo=dt.UTC)
    assert not state.expiry_due(e, NOW, 1000.0, leeway, resync)
    at = e.job_deadline + dt.timedelta(seconds=29)
    assert not state.expiry_due(e, at, 1000.0 + (at - NOW).total_seconds(), leeway, resync)
    at = e.job_deadline + dt.timedelta(seconds=30)
    assert state.expiry_due(e, at, 1000.0 + (at - NOW).total_seconds(), leeway, resync)
    # its Job gone (or never known to be active): looked at once the token expired
    e.job_deadline = None
    assert state.expiry_due(e, NOW, 1000.0, leeway, resync)


def test_a_jobs_deadline_needs_its_start_time_and_its_deadline() -> None:
    start = "2026-11-25T11:58:30Z"
    assert state.job_deadline({"spec": {"activeDeadlineSeconds": 90},
                               "status": {"startTime": start}}) \
        == dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    assert state.job_deadline({"spec": {"activeDeadlineSeconds": 90}, "status": {}}) is None
    assert state.job_deadline({"spec": {}, "status": {"startTime": start}}) is None
    assert state.job_deadline({"spec": {"activeDeadlineSeconds": "90"},
                               "status": {"startTime": start}}) is None
    assert state.job_deadline({}) is None


def test_grants_are_found_by_the_request_they_name_until_forgotten() -> None:
    t = state.Tracker()
    t.observe_grant(grant("g1"), NOW)
    t.observe_grant(grant("g2"), NOW)
    other = grant("g3")
    other["spec"]["approvalRef"]["name"] = "other"
    t.observe_grant(other, NOW)
    t.observe_grant(grant("g1", phase="TokenIssued"), NOW)  # seen again: still one entry
    assert sorted(g.name for g in t.grants_of("req")) == ["g1", "g2"]
    assert [g.name for g in t.grants_of("other")] == ["g3"]
    t.forget("grant", "u-g1")
    t.forget("grant", "u-g1")  # a second DELETED event, or the sweep after it
    assert [g.name for g in t.grants_of("req")] == ["g2"]
    t.forget("grant", "u-g2")
    assert t.grants_of("req") == [] and "req" not in t.grants_by_approval


def test_an_expired_request_is_due_at_every_sweep_until_final() -> None:
    t = state.Tracker()
    e = t.observe_approval(approval("req", REVIEWED, phase="AwaitingDecision",
                                    expirationTime="2026-11-25T11:30:00Z"), False, NOW)
    e.attempted = 999.0
    assert state.expiry_due(e, NOW, 1000.0, dt.timedelta(seconds=5), 30.0)
    assert not state.expiry_due(e, dt.datetime(2026, 11, 25, 11, 29, tzinfo=dt.UTC), 1000.0,
                                dt.timedelta(seconds=5), 30.0)


def test_the_copy_kept_for_grants_follows_each_new_version_of_the_request() -> None:
    t = state.Tracker()
    e = t.observe_approval(approval(), False, NOW)
    assert e.body is not None and e.body["status"].get("phase") is None
    newer = approval("req", REVIEWED, phase="AutoApproved")
    newer["metadata"]["resourceVersion"] = "8"
    t.observe_approval(newer, False, NOW)
    assert e.body is not None and e.body["status"]["phase"] == "AutoApproved"
    assert e.body["metadata"]["resourceVersion"] == "8"
    packed = e.packed
    t.observe_approval(newer, False, NOW)  # the same version again: the copy is kept
    assert e.packed is packed
    unversioned = approval("req", REVIEWED, phase="Rejected")
    del unversioned["metadata"]["resourceVersion"]
    t.observe_approval(unversioned, False, NOW)  # no version to compare: copied again
    assert e.body is not None and e.body["status"]["phase"] == "Rejected"


def test_the_claims_of_deleted_grants_are_forgotten_with_their_request() -> None:
    """A grant deleted while its request lives is forgotten, and the request's next version
    lists its claim again; once the request is forgotten too, nothing of that claim stays in
    memory (the operator's memory follows the objects that exist). A grant still known keeps
    its claim: it stays TokenIssued, never judged Pending (and Denied) for want of it."""
    t = state.Tracker()
    other = {**ISSUED, "command": "d", "grant": "h", "grantUID": "u-h"}
    claimed = approval("req", REVIEWED, phase="Approved", grants=[ISSUED, other])
    t.observe_approval(claimed, False, NOW)
    t.observe_grant(grant(), NOW)
    t.observe_grant(grant("h"), NOW)
    t.forget("grant", "u-h")  # deleted
    again = approval("req", REVIEWED, phase="Approved", grants=[ISSUED, other])
    again["metadata"]["resourceVersion"] = "8"
    t.observe_approval(again, False, NOW)  # the request's next version lists h's claim again
    t.forget("approval", "u-req")
    assert set(t.claims) == {"u-g"}
    assert t.observe_grant(grant(), NOW).phase == "TokenIssued"
    t.forget("grant", "u-g")
    assert t.claims == {}


def test_resource_versions_are_compared_as_numbers_only_when_both_are() -> None:
    assert state.older("9", "10") and not state.older("10", "9")
    assert not state.older("10", "10")
    assert state.older("999999999999999999998", "999999999999999999999")
    # not decimal integers (another store's, or none yet): nothing is known
    for a, b in (("", "5"), ("5", ""), ("a5", "6"), ("5", "6x"), ("-1", "3"), ("\u0661", "\u0662")):
        assert not state.older(a, b), (a, b)


def versioned(body: dict[str, Any], version: str) -> dict[str, Any]:
    return {**body, "metadata": {**body["metadata"], "resourceVersion": version}}


def test_a_copy_older_than_one_seen_leaves_the_request_s_entry_as_it_is() -> None:
    """A re-list's copy from before the operator's own write (or anyone's) changes nothing the
    tracker knows: not its phase, nor what it needs, nor the copy kept for grants."""
    t = state.Tracker()
    written = versioned(approval("req", REVIEWED, phase="AwaitingDecision",
                                 grants=[{"grantUID": "u-g", "tokenSHA256": "sha256:x"}]), "12")
    e = t.observe_approval(written, False, NOW)
    assert (e.needs, e.phase, e.newest) == (None, "AwaitingDecision", "12")
    before = versioned(approval(), "9")  # not reviewed yet, as it was before the write
    assert t.stale("approval", before)
    assert t.observe_approval(before, False, NOW) is e
    assert (e.needs, e.phase, e.newest, e.packed_version) == (None, "AwaitingDecision", "12",
                                                               "12")
    newer = versioned(approval("req", REVIEWED, phase="AwaitingDecision"), "13")
    assert not t.stale("approval", newer)
    t.observe_approval(newer, True, NOW)
    assert (e.needs, e.newest) == ("decisions", "13")
    assert not t.stale("approval", versioned(approval(), "13")), "the same version is not older"
    assert not t.stale("approval", versioned(approval("other"), "1")), "another object"


def test_a_stale_pending_copy_of_an_issued_grant_does_not_ask_for_its_token_again() -> None:
    """A long name's grant: the operator wrote TokenIssued and stored its token; a re-listed
    copy from before that write must not make it a grant to issue again (a second claim record,
    a false denial once its Job has ended)."""
    t = state.Tracker()
    e = t.observe_grant(versioned(grant("g", "Pending"), "20"), NOW)
    assert e.needs == "issue"
    t.observe_grant(versioned(grant("g", "TokenIssued", tokenExpirationTime="2026-11-25T12:05:00Z"),
                              "21"), NOW)
    e.released = True
    t.settle(e, None, NOW)
    stale = versioned(grant("g", "Pending"), "20")
    assert t.stale("grant", stale)
    t.observe_grant(stale, NOW)
    # mypy still holds e.needs to be "issue", as asserted above: the tracker changed it
    assert (e.phase, e.released, e.needs) == ("TokenIssued", True, None)  # type: ignore[comparison-overlap]
    # a status reset to Pending written since (a newer version) is a grant to issue again
    t.observe_grant(versioned(grant("g", "Pending"), "30"), NOW)
    assert (e.phase, e.released, e.needs) == ("Pending", False, "issue")
