"""The reconciler's bookkeeping: what is due for a message, and when a request is settled
(its state entry shrinks to a marker, so the state ConfigMap stays small); the bounded memory
of unidentified senders' refusals."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import pyotp
import pytest
from kubernetes import client as k8s

from wingman.audit import open_sink
from wingman.chat import render
from wingman.chat import service as service_module
from wingman.chat.cluster import ChatCluster
from wingman.chat.guard import STEP_UP_MAX_FAILURES, PendingStepUp, Refusal, StepUp, refuse
from wingman.chat.metrics import ChatMetrics
from wingman.chat.service import ChatService
from wingman.errors import ClusterError, Unavailable
from wingman.kube import ApiError, Kube
from wingman.logs import looks_like_token
from wingman.settings import ChatConfig

from . import world
from .test_render import NOW, request


@dataclass
class Named:
    name: str


def service() -> Any:
    svc = ChatService(config=ChatConfig(environment="prd", expiry_warning_minutes=15),
                      cluster=None, sink=None, metrics=ChatMetrics(),  # type: ignore[arg-type]
                      step_up=StepUp({}))
    svc.channels = [Named("telegram"), Named("slack")]  # type: ignore[list-item]
    return svc


def test_a_new_request_needs_its_card_and_a_changed_one_an_edit() -> None:
    svc = service()
    v = render.view(request(), [], NOW)
    assert svc._due(v, {}, NOW) == [("post", None)]
    assert svc._due(v, {"ref": {}, "hash": "old"}, NOW) == [("update", None)]
    assert svc._due(v, {"ref": {}, "hash": v.fingerprint()}, NOW) == []


def test_a_card_awaiting_a_decision_whose_buttons_another_key_signed_is_edited() -> None:
    """A rotated bot token or signing secret: the buttons of an open card no longer verify.
    A card recorded without its key (sent by an earlier version) counts as signed by the
    current one, which the next sync records (and saves); a decided card has no buttons."""
    svc = service()
    v = render.view(request(), [], NOW)
    mine = {"ref": {}, "hash": v.fingerprint()}
    assert svc._due(v, {**mine, "key": "old"}, NOW, "new") == [("update", None)]
    assert svc._due(v, {**mine, "key": "new"}, NOW, "new") == []
    assert svc._due(v, mine, NOW, "new") == []
    assert svc._due(v, {**mine, "key": "old"}, NOW, "") == []  # a channel without buttons
    expired = request()
    expired["status"]["conditions"] = [{"type": "Expired", "status": "True"}]
    done = render.view(expired, [], NOW)
    assert svc._due(done, {"ref": {}, "hash": done.fingerprint(), "key": "old",
                           "sent": ["final:Expired"]}, NOW, "new") == []


def test_a_card_sent_before_keys_were_recorded_gets_the_current_key_saved(
        tmp_path: Path) -> None:
    svc = world.service(tmp_path, world.request("web", 1))
    uid = "0f8fad5b-d9cb-469f-a165-000000000001"
    v = render.view(world.request("web", 1), [], world.NOW)

    @dataclass
    class Keyed:
        name: str = "telegram"
        button_key: str = "current"

    svc.channels = [Keyed()]  # type: ignore[list-item]
    svc.state["requests"] = {uid: {"name": "web", "telegram": {
        "ref": {"chat": -1, "message": 1}, "hash": v.fingerprint()}}}
    asyncio.run(svc.sync())
    assert svc.cluster.saved["requests"][uid]["telegram"]["key"] == "current"  # type: ignore[attr-defined]


def test_only_long_final_requests_with_everything_delivered_are_settled() -> None:
    svc = service()
    expired = request()
    expired["status"]["conditions"] = [{"type": "Expired", "status": "True"}]
    late = NOW + dt.timedelta(hours=3)
    v = render.view(expired, [], late)
    done = {"ref": {}, "hash": v.fingerprint(), "sent": ["final:Expired"]}
    assert svc._settled(v, {"telegram": done, "slack": done}, late)
    # a channel still behind, or too recent, or a grant still running: not settled
    assert not svc._settled(v, {"telegram": done}, late)
    assert not svc._settled(v, {"telegram": done, "slack": {**done, "sent": []}}, late)
    assert not svc._settled(v, {"telegram": done, "slack": done},
                            NOW + dt.timedelta(hours=1, minutes=30))
    running = {"metadata": {"name": "g"}, "spec": {"approvalRef": {"name": "req-1"},
                                                   "command": "x"},
               "status": {"phase": "Running"}}
    busy = render.view(expired, [running], late)
    assert not svc._settled(busy, {"telegram": done, "slack": done}, late)
    open_request = render.view(request(), [], NOW)
    assert not svc._settled(open_request, {"telegram": done, "slack": done}, late)


def test_remembered_refusals_stay_bounded_and_every_one_is_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More unidentified senders in one window than are remembered: the map never grows past
    its bound, the metric counts every refusal, and every refusal is in the audit trail, as a
    record or in a count (``suppressed``, ``suppressedOthers`` for the forgotten), or is still
    held for the next record."""
    cap = 20
    monkeypatch.setattr(service_module, "_MAX_REFUSAL_KEYS", cap)
    now = [world.NOW]
    svc = world.service(tmp_path, clock=lambda: now[0])
    unmapped = refuse("Unmapped", "not mapped")
    sizes = []

    async def flood() -> int:
        sent = 0
        for sender in [f"hot{i}" for i in range(10)] * 5 + [f"x{i}" for i in range(100)] \
                + [f"hot{i}" for i in range(10)] * 2:
            await svc.refused("telegram", sender, unmapped)
            sent += 1
            sizes.append(len(svc._quiet))
            now[0] += dt.timedelta(milliseconds=100)  # all inside one window
        return sent

    sent = asyncio.run(flood())
    assert max(sizes) == cap
    assert world.metric(svc, "wingman_chat_refusals_total", channel="telegram",
                        reason="Unmapped") == sent
    records = world.audited(svc)
    # the hot senders' left-out refusals (4 each) were handed over when they were forgotten
    assert sum(r.get("suppressedOthers", 0) for r in records) == 40
    held = sum(q.suppressed for q in svc._quiet.values())
    assert sum(1 + r.get("suppressed", 0) + r.get("suppressedOthers", 0)
               for r in records) + held == sent  # each one once



def test_refusals_left_out_before_handling_stay_bounded_and_are_each_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusals dropped before they were handled (``left_out``: Telegram's screening), mixed
    with refusals handled, of more senders than are remembered: the map stays bounded, and
    every one is in the audit trail, as a record or in a count, or still held."""
    cap = 20
    monkeypatch.setattr(service_module, "_MAX_REFUSAL_KEYS", cap)
    now = [world.NOW]
    svc = world.service(tmp_path, clock=lambda: now[0])
    unmapped = refuse("Unmapped", "not mapped")
    sizes = []

    async def flood() -> int:
        sent = 0
        for i, sender in enumerate([f"s{i % 30}" for i in range(300)]):
            if i % 7 == 0:
                await svc.refused("telegram", sender, unmapped)
            else:
                svc.left_out("telegram", "Unmapped", sender)
            sent += 1
            sizes.append(len(svc._quiet))
            now[0] += dt.timedelta(seconds=1)
        return sent

    sent = asyncio.run(flood())
    assert max(sizes) == cap
    records = world.audited(svc)
    held = sum(q.suppressed + q.others for q in svc._quiet.values())
    assert sum(1 + r.get("suppressed", 0) + r.get("suppressedOthers", 0)
               for r in records) + held == sent  # each one once


class _DecidingCluster(world.Cluster):
    """The in-memory cluster with the client's own rule for a decision (one that would change
    nothing is refused before anything is written: ``WingmanClient.decide``), and a change that
    lands just after the chat read the requests (``after_read``, once)."""

    after_read: Any = None

    def requests(self) -> list[dict[str, Any]]:
        read = super().requests()
        if self.after_read is not None:
            self.after_read(self.objs[0])
            self.after_read = None
        return read

    def client_as(self, person: Any, hints: Any) -> Any:
        cluster = self

        class Client:
            def decide(self, name: str, verdict: str, reason: str = "", *,
                       uid: str | None = None) -> None:
                from wingman.client import status as st
                from wingman.errors import Invalid

                obj = next(o for o in cluster.objs if o["metadata"]["name"] == name)
                late = st.late_decision(obj, verdict, now=dt.datetime.now(dt.UTC))
                if late is not None:
                    raise Invalid(late, reason="AlreadyDecided")
                obj["spec"].setdefault("decisions", []).append(
                    {"verdict": verdict, "by": person.user, "reason": reason})

        return Client()


def _rejected_by_carol(obj: dict[str, Any]) -> None:
    obj["spec"]["decisions"] = [{"verdict": "Reject", "by": "carol", "reason": "freeze"}]
    obj["status"] = {**obj["status"], "phase": "Rejected",
                     "decision": {"approvedBy": [], "rejectedBy": "carol"},
                     "conditions": [{"type": "Rejected", "status": "True",
                                     "reason": "RejectedByApprover"}]}


def test_a_request_decided_while_an_approval_is_relayed_says_how_and_records_nothing(
        tmp_path: Path) -> None:
    """Carol's Reject lands between the chat's read (the request awaits a decision) and its
    write of bob's Approve: bob is told it was decided, by whom, and that his changes nothing."""
    cluster = _DecidingCluster(world.request("late", 1))
    svc = world.service(tmp_path)
    svc.cluster = cluster
    cluster.after_read = _rejected_by_carol
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "approve", name="late"))
    assert not reply.ok and reply.reason == "NotDecidable"
    assert "already rejected by carol (freeze)" in reply.plain
    assert "your Approve was not recorded" in reply.plain
    assert "API server refused" not in reply.plain
    assert [d["by"] for d in cluster.objs[0]["spec"]["decisions"]] == ["carol"]
    assert [r["reason"] for r in world.audited(svc)] == ["NotDecidable"]
    assert world.audited(svc, "ChatDecisionRecorded") == []


@pytest.mark.parametrize("reason", ["ok \u202e)kcab-llor(", "ok \u200bfine",
                                    "ok \U000e0061\U000e0070\U000e0070", "ok \udc00 lone"])
def test_a_reason_with_a_control_character_is_refused_as_such_and_nothing_is_written(
        tmp_path: Path, reason: str) -> None:
    """The reason goes into spec.decisions, whose text the CRD refuses with control characters,
    bidi overrides and invisible characters (a zero-width space, tags): the person is told what
    is wrong with their reason, not that the API server refused them, and nothing is decided."""
    cluster = _DecidingCluster(world.request("bidi", 1))
    svc = world.service(tmp_path)
    svc.cluster = cluster
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "approve", name="bidi",
                                reason=reason))
    assert not reply.ok and reply.reason == "ForbiddenCharacter"
    assert "the reason" in reply.plain and f"U+{ord(reason[3]):04X}" in reply.plain, reply.plain
    assert "API server refused" not in reply.plain
    assert cluster.objs[0]["spec"].get("decisions", []) == []
    assert world.audited(svc, "ChatDecisionRequested") == []
    assert [r["reason"] for r in world.audited(svc)] == ["ForbiddenCharacter"]


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_a_reason_holding_a_token_is_refused_saying_so_and_nothing_is_recorded(
        tmp_path: Path, verb: str) -> None:
    """The audit trail never stores a token-shaped text (a JWT), and the record written before
    a decision holds its reason: a reason holding one is refused saying what is wrong and to
    remove it (not that the audit trail is unavailable, to try again or use kubectl wingman,
    which would put the token in spec.decisions), nothing decided, the token nowhere."""
    cluster = _DecidingCluster(world.request("pasted", 1))
    svc = world.service(tmp_path)
    svc.cluster = cluster
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, verb, name="pasted",
                                reason=TOKEN_REASON))
    assert not reply.ok and reply.reason == "TokenInReason", reply.plain
    assert "looks like a token" in reply.plain and "remove it" in reply.plain
    assert "eyJhbGci" not in reply.plain and "try again shortly" not in reply.plain
    assert cluster.objs[0]["spec"].get("decisions", []) == []
    assert world.audited(svc, "ChatDecisionRequested") == []
    assert [r["reason"] for r in world.audited(svc)] == ["TokenInReason"]


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_a_reason_too_long_for_the_crd_is_refused_saying_so_never_cut(
        tmp_path: Path, verb: str) -> None:
    """spec.decisions[].reason holds 1,000 characters (code points): a longer reason is refused
    with its length and the limit, nothing decided or audited as requested, rather than cut
    short and recorded as a reason the approver did not give."""
    cluster = _DecidingCluster(world.request("long", 1))
    svc = world.service(tmp_path)
    svc.cluster = cluster
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, verb, name="long",
                                reason="é" * 1001))
    assert not reply.ok and reply.reason == "ReasonTooLong"
    assert "the reason is 1,001 characters; the limit is 1,000: shorten it" in reply.plain
    assert cluster.objs[0]["spec"].get("decisions", []) == []
    assert world.audited(svc, "ChatDecisionRequested") == []


@pytest.mark.parametrize(("spec", "refused"), [
    ({"requester": "bob"}, "OwnRequest"),
    ({"decisions": [{"verdict": "Approve", "by": "bob", "reason": "ok"}]}, "AlreadyDecided")])
def test_who_may_decide_is_judged_before_the_reason_s_length(
        tmp_path: Path, spec: dict[str, Any], refused: str) -> None:
    """A person who may not make this decision at all (the requester approving their own
    request, an approver deciding twice) is told so, and the ChatRefused record says so, even
    with a reason too long: not told to shorten a reason that could never be recorded, nor
    audited as if the length were all that was wrong."""
    cluster = _DecidingCluster(world.request("mine", 1, **spec))
    svc = world.service(tmp_path)
    svc.cluster = cluster
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "reject", name="mine",
                                reason="x" * 1001))
    assert not reply.ok and reply.reason == refused, reply.plain
    assert [r["reason"] for r in world.audited(svc)] == [refused]
    assert world.audited(svc, "ChatDecisionRequested") == []


def test_a_multibyte_reason_of_exactly_the_limit_is_recorded_whole(tmp_path: Path) -> None:
    reason = "🙂" * 1000  # 4,000 bytes of UTF-8, 1,000 code points: what the CRD counts
    cluster = _DecidingCluster(world.request("whole", 1))
    svc = world.service(tmp_path)
    svc.cluster = cluster
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "approve", name="whole",
                                reason=reason))
    assert reply.ok, reply.plain
    assert cluster.objs[0]["spec"]["decisions"] == [
        {"verdict": "Approve", "by": world.BOB.user, "reason": reason}]


#: A reason an approver pasted a token into (a JWT: eyJ<header>.eyJ<claims>.<signature>).
TOKEN_REASON = "ok, see eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJl"


@pytest.mark.parametrize(("reason", "refused"), [("ok \u202e)kcab-llor(", "ForbiddenCharacter"),
                                              ("x" * 1001, "ReasonTooLong"),
                                              (TOKEN_REASON, "TokenInReason")])
def test_with_step_up_a_reason_that_cannot_be_recorded_is_refused_before_a_code_is_asked(
        tmp_path: Path, reason: str, refused: str) -> None:
    """Step-up on: a reason the API server would refuse is refused when the decision is sent,
    not held for a one-time code that the person would type only to be refused then."""
    cluster = _DecidingCluster(world.request("held", 1))
    svc = world.service(tmp_path)
    svc.cluster = cluster
    svc.config = ChatConfig(environment="prd", people=(world.BOB,), step_up=True)
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "approve", name="held",
                                reason=reason))
    assert not reply.ok and reply.reason == refused, reply.plain
    assert "confirm" not in reply.plain
    assert [r["reason"] for r in world.audited(svc)] == [refused]
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "confirm", code="123456"))
    assert not reply.ok and reply.reason == "StepUpExpired"  # nothing was held
    assert cluster.objs[0]["spec"].get("decisions", []) == []


@pytest.mark.parametrize("step_up", [False, True])
def test_a_decision_on_a_request_holding_as_many_as_the_crd_allows_is_refused_first(
        tmp_path: Path, step_up: bool) -> None:
    """spec.decisions holds at most 10: an eleventh (here bob revoking an approval that ten
    approvers gave) is refused saying so, before it is audited as requested, held for a
    step-up code or sent, not answered as the API server's refusal after the code was spent."""
    from wingman.model import limits

    full = [{"verdict": "Approve", "by": f"approver-{i}"} for i in range(limits.DECISIONS)]
    obj = world.request("full", 1, decisions=full)
    obj["status"] = {**obj["status"], "phase": "Approved",
                     "conditions": [{"type": "Approved", "status": "True",
                                     "reason": "HumanApproved"}]}
    cluster = _DecidingCluster(obj)
    svc = world.service(tmp_path)
    svc.cluster = cluster
    svc.config = ChatConfig(environment="prd", people=(world.BOB,), step_up=step_up)
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "reject", name="full",
                                reason="the sale was called off"))
    assert not reply.ok and reply.reason == "TooManyDecisions", reply.plain
    assert "holds 10 decisions" in reply.plain and "API server" not in reply.plain
    assert [r["reason"] for r in world.audited(svc)] == ["TooManyDecisions"]
    assert world.audited(svc, "ChatDecisionRequested") == []
    assert len(cluster.objs[0]["spec"]["decisions"]) == limits.DECISIONS


def test_a_refusal_of_a_name_holding_a_lone_surrogate_is_still_audited(tmp_path: Path) -> None:
    svc = world.service(tmp_path, world.request("web", 1))
    asyncio.run(svc.refresh())
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "approve", name="web\ud800"))
    assert not reply.ok and reply.reason == "NotFound" and "'web\\ud800'" in reply.plain
    assert [r["reason"] for r in world.audited(svc)] == ["NotFound"]
    subjects = [r.subject for r in svc.sink.records() if r.event == "ChatRefused"]
    assert subjects[0]["name"] == "web\\ud800"


#: A request name as typed that is a token (a JWT pasted instead of a name), and one that is
#: the base64 of text holding one (how a Secret's data carries a token).
_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJl"
_ENCODED_JWT = base64.b64encode(f"token: {_JWT}".encode()).decode()


@pytest.mark.parametrize("typed", [_JWT, f"web-{_JWT}", _ENCODED_JWT])
def test_a_refusal_quoting_a_token_shaped_name_is_audited_and_answered_redacted(
        tmp_path: Path, typed: str) -> None:
    """A NotFound quotes the name as typed: a token there is redacted in the reply and in the
    ChatRefused record (the audit trail stores no token-shaped text), so the refusal is still
    audited and the token is neither echoed back nor stored."""
    svc = world.service(tmp_path, world.request("web", 1))
    asyncio.run(svc.refresh())
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "approve", name=typed))
    assert not reply.ok and reply.reason == "NotFound", reply.plain
    assert "[REDACTED]" in reply.plain and typed not in reply.plain
    assert not looks_like_token(reply.plain)
    records = [r for r in svc.sink.records() if r.event == "ChatRefused"]
    assert [r.data["reason"] for r in records] == ["NotFound"]
    assert "[REDACTED]" in records[0].data["message"]
    assert "[REDACTED]" in records[0].subject["name"]
    trail = (tmp_path / "audit.log").read_text()
    assert typed not in trail and not looks_like_token(trail)


class _Flaky(world.Cluster):
    """A cluster whose first listing fails the way no one planned for (a library's bug)."""

    def __init__(self, *objs: dict[str, Any]) -> None:
        super().__init__(*objs)
        self.listings = 0

    def requests(self) -> list[dict[str, Any]]:
        self.listings += 1
        if self.listings == 1:
            raise KeyError("items")
        return super().requests()


def _sync_twice(svc: ChatService, cluster: Any) -> None:
    """Run the reconciler until it has listed requests twice (its first listing fails), then
    stop it: it ends because it was stopped, not by the error."""
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(svc.run(stop, 0.01))
        for _ in range(500):
            if cluster.listings >= 2 or loop.done():
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(loop, 5)

    asyncio.run(main())
    assert cluster.listings >= 2


def test_an_unexpected_sync_failure_is_logged_and_the_reconciler_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    svc = world.service(tmp_path, world.request("web", 1))
    cluster = _Flaky(*svc.cluster.objs)  # type: ignore[attr-defined]
    svc.cluster = cluster

    _sync_twice(svc, cluster)
    failed = [r for r in caplog.records if r.getMessage().startswith(
        "chat sync failed unexpectedly")]
    assert failed and failed[0].levelname == "ERROR"
    assert vars(failed[0])["errorType"] == "KeyError"
    assert world.metric(svc, "wingman_chat_loop_failures_total", loop="reconciler",
                        kind="Unexpected") == 1


class _Unreachable(world.Cluster):
    """A cluster whose API server cannot be reached at the first listing."""

    listings = 0

    def requests(self) -> list[dict[str, Any]]:
        self.listings += 1
        if self.listings == 1:
            raise Unavailable("the API server could not be reached: connection refused")
        return super().requests()


def test_a_sync_that_cannot_reach_the_cluster_is_counted_and_retried(tmp_path: Path) -> None:
    svc = world.service(tmp_path, world.request("web", 1))
    cluster = _Unreachable(*svc.cluster.objs)  # type: ignore[attr-defined]
    svc.cluster = cluster

    _sync_twice(svc, cluster)
    assert world.metric(svc, "wingman_chat_loop_failures_total", loop="reconciler",
                        kind="Unavailable") == 1
    assert world.metric(svc, "wingman_chat_loop_failures_total", loop="reconciler",
                        kind="Unexpected") == 0


class _UnreachableReads(world.Cluster):
    """The in-memory cluster, read through the chat's real ``ChatCluster`` over an API server
    that is not there (connection refused): every listing and read fails as it does then."""

    def __init__(self, *objs: dict[str, Any]) -> None:
        super().__init__(*objs)
        kube = Kube(k8s.ApiClient(k8s.Configuration(host="https://127.0.0.1:1")))
        self.real = ChatCluster(kube, self.namespace, "wingman-chat-state")

    def requests(self) -> list[dict[str, Any]]:
        return self.real.requests()

    def grants(self) -> list[dict[str, Any]]:
        return self.real.grants()

    def grant(self, name: str) -> dict[str, Any] | None:
        return self.real.grant(name)


class _ActOperands(TypedDict, total=False):
    """The keyword arguments of ``ChatService.act`` a chat command carries besides the
    request's name (by row)."""

    reason: str
    command: str
    code: str


class _ActArgs(_ActOperands, total=False):
    name: str


@pytest.mark.parametrize(("verb", "args"), [
    ("approve", {"name": "web"}), ("reject", {"name": "web", "reason": "no"}),
    ("describe", {"name": "web"}), ("pending", {}),
    ("exec", {"name": "web", "command": "kubectl rollout restart deployment/web -n apps"}),
    ("confirm", {"code": "123456"})])
def test_a_command_while_the_api_server_cannot_be_read_is_answered_and_audited(
        tmp_path: Path, verb: str, args: _ActArgs) -> None:
    """The API server unreachable when a person sends a command: they are answered that
    nothing was done and to try again (ClusterUnavailable), and the refusal is audited, never
    a command dropped unanswered (Telegram: no reply at all; Slack: an HTTP 500)."""
    svc = world.service(tmp_path, world.request("web", 1))
    svc.views = {"0f8fad5b-d9cb-469f-a165-000000000001": render.view(
        world.request("web", 1), [], world.NOW)}  # as read by an earlier sync
    svc.cluster = _UnreachableReads(world.request("web", 1))
    svc.step_up.hold("telegram:111", PendingStepUp(
        "approve", "web", "0f8fad5b-d9cb-469f-a165-000000000001", "", svc.step_up.deadline()))
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, verb, **args))
    assert not reply.ok and reply.reason == "ClusterUnavailable", reply
    assert "nothing was done: try again shortly" in reply.plain
    assert "127.0.0.1" not in reply.plain  # the API server's address is not the chat's
    assert [(r["reason"], r["as"]) for r in world.audited(svc)] == [
        ("ClusterUnavailable", "bob")]
    assert world.audited(svc, "ChatDecisionRequested") == []
    assert world.audited(svc, "ChatGrantRequested") == []


def test_a_confirm_while_the_api_server_cannot_be_read_keeps_its_decision_waiting(
        tmp_path: Path) -> None:
    """Told to try again shortly, the person sends the code again: it finds the decision it
    was meant for still waiting (not StepUpExpired, which would have them start anew)."""
    svc = world.service(tmp_path, world.request("web", 1))
    svc.cluster = _UnreachableReads(world.request("web", 1))
    uid = "0f8fad5b-d9cb-469f-a165-000000000001"
    svc.step_up.hold("telegram:111", PendingStepUp("approve", "web", uid, "",
                                                   svc.step_up.deadline()))
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "confirm", code="123456"))
    assert reply.reason == "ClusterUnavailable", reply
    assert svc.step_up.take("telegram:111").uid == uid


class _ImpersonatingCluster(world.Cluster):
    """The in-memory cluster, with the chat's real client as the person (over an API server
    that is not there: what the client checks itself is all these tests reach)."""

    def client_as(self, person: Any, hints: Any) -> Any:
        kube = Kube(k8s.ApiClient(k8s.Configuration(host="https://127.0.0.1:1")))
        return ChatCluster(kube, self.namespace, "wingman-chat-state").client_as(person, hints)


@pytest.mark.parametrize("grant", ["../x", "a/b", "."])
def test_status_of_what_cannot_be_a_grant_name_is_refused_as_invalid(
        tmp_path: Path, grant: str) -> None:
    svc = world.service(tmp_path)
    svc.cluster = _ImpersonatingCluster()
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "status", name=grant))
    assert not reply.ok and reply.reason == "Invalid", reply
    assert f"{grant!r} is not a valid ExecutionGrant name" in reply.plain
    assert "may not read" not in reply.plain
    assert [r["reason"] for r in world.audited(svc)] == ["Invalid"]


@pytest.mark.parametrize(("verb", "args"), [
    ("approve", {"reason": ""}), ("reject", {"reason": "no"}),
    ("exec", {"command": "kubectl rollout restart deployment/web -n apps"})])
def test_a_command_sent_before_its_request_existed_is_refused_and_changes_nothing(
        tmp_path: Path, verb: str, args: _ActOperands) -> None:
    """A command found by name and sent before that request was created was meant for an
    earlier request of the name: refused (StaleMessage), audited, nothing decided or granted;
    sent after, it acts."""
    obj = world.request("again", 1)  # created 59 minutes before NOW
    cluster = world.Granting(obj) if verb == "exec" else world.Deciding(obj)
    svc = world.service(tmp_path)
    svc.cluster = cluster
    created = world.NOW - dt.timedelta(minutes=59)
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, verb, name="again",
                                sent_at=created - dt.timedelta(minutes=1), **args))
    assert not reply.ok and reply.reason == "StaleMessage", reply
    assert "before this request again existed" in reply.plain
    assert "send the command again: /" + verb + " again" in reply.plain
    assert "decisions" not in cluster.objs[0]["spec"]
    assert getattr(cluster, "granted", []) == []
    assert [(r["reason"], r["as"]) for r in world.audited(svc)] == [("StaleMessage", "bob")]
    assert world.audited(svc, "ChatDecisionRequested") == []
    assert world.audited(svc, "ChatGrantRequested") == []
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, verb, name="again",
                                sent_at=created + dt.timedelta(seconds=1), **args))
    assert reply.ok, reply
    assert (getattr(cluster, "granted", []) if verb == "exec"
            else cluster.objs[0]["spec"]["decisions"])


def test_a_confirmation_sent_before_its_request_existed_is_refused(tmp_path: Path) -> None:
    """``/confirm`` is checked like the decision it completes: sent before the request it
    was held for was created, it decides nothing (and takes no code)."""
    obj = world.request("again", 1)
    cluster = world.Deciding(obj)
    svc = world.service(tmp_path)
    svc.cluster = cluster
    svc.step_up.hold("telegram:111", PendingStepUp("approve", "again", obj["metadata"]["uid"],
                                                   "", svc.step_up.deadline()))
    created = world.NOW - dt.timedelta(minutes=59)
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "confirm", code="123456",
                                sent_at=created - dt.timedelta(seconds=30)))
    assert not reply.ok and reply.reason == "StaleMessage", reply
    assert "send the command again: /approve again" in reply.plain
    assert "decisions" not in cluster.objs[0]["spec"]
    assert [r["reason"] for r in world.audited(svc)] == ["StaleMessage"]


def test_a_request_not_found_hints_at_the_channel_s_pending_command(tmp_path: Path) -> None:
    svc = world.service(tmp_path)
    telegram = asyncio.run(svc.act("telegram", "111", world.BOB, "describe", name="gone"))
    slack = asyncio.run(svc.act("slack", "U0BOB", world.BOB, "describe", name="gone"))
    assert telegram.reason == slack.reason == "NotFound"
    assert telegram.plain.endswith(": /pending lists the open ones")
    assert slack.plain.endswith(": /wingman pending lists the open ones")


def test_exec_names_a_command_stored_with_whitespace_around_it_when_only_one_fits(
        tmp_path: Path) -> None:
    """Chat cannot carry whitespace around a command (it is dropped with the spacing after the
    request's name): a request's command stored with spaces around it is named without them,
    and the grant is made for the command as stored, byte for byte. Where two commands differ
    only by that whitespace, the chat cannot say which: refused, pointing to the CLI."""
    padded = "  kubectl get pods -n apps "
    cluster = world.Granting(world.request("pad", 1, commands=[padded, "kubectl get ns"]),
                             world.request("two", 2, commands=["kubectl get ns ",
                                                               " kubectl get ns"]),
                             world.request("nbsp", 3, commands=["kubectl get ns\u00a0"]))
    svc = world.service(tmp_path)
    svc.cluster = cluster

    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "exec", name="pad",
                                command="kubectl get pods -n apps"))
    assert reply.ok, reply.plain
    assert cluster.granted == [("pad", padded)]
    assert [r["command"] for r in world.audited(svc, "ChatGrantRequested")] == [padded]

    cluster.granted.clear()
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "exec", name="two",
                                command="kubectl get ns"))
    assert not reply.ok and reply.reason == "AmbiguousCommand", reply.plain
    assert "kubectl wingman exec two --command" in reply.plain
    assert cluster.granted == []
    # inside the command, spacing still counts
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "exec", name="pad",
                                command="kubectl get  pods -n apps"))
    assert reply.reason == "NotACommandOfTheRequest" and cluster.granted == []
    # a no-break space is part of the last word (argv "ns\u00a0"): never matched without it
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "exec", name="nbsp",
                                command="kubectl get ns"))
    assert reply.reason == "NotACommandOfTheRequest" and cluster.granted == []


class _Posting:
    """A channel that records what it posts, updates and notifies."""

    name = "telegram"

    def __init__(self) -> None:
        self.posted: list[str] = []
        self.updated: list[str] = []

    async def post_card(self, v: Any) -> dict[str, Any]:
        self.posted.append(v.name)
        return {"chat": -100, "message": 100 + len(self.posted)}

    async def update_card(self, ref: dict[str, Any], v: Any) -> None:
        self.updated.append(v.name)

    async def notify(self, v: Any, notice: Any) -> None:
        pass


@pytest.mark.parametrize("stored, problem", [
    (["a list"], "the state is a JSON list, not an object"),
    ({"horizon": 5, "requests": []}, "requests: not an object"),
    ({"requests": {"X": "posted"}}, "requests.X: not an object"),
    ({"requests": {"X": {"telegram": ["posted"]}}}, "requests.X.telegram: not an object"),
    ({"requests": {"X": {"telegram": {"ref": {"chat": "-100", "message": 7}}}}},
     "requests.X.telegram.ref: not a telegram message reference"),
    ({"requests": {"X": {"telegram": {"ref": {"chat": -100, "message": 7}, "hash": 3,
                                      "sent": "final", "refused": "yes"}}}},
     "requests.X.telegram.hash: not a string"),
], ids=["list", "requests-list", "entry-string", "channel-list", "ref-types", "field-types"])
def test_a_state_of_the_wrong_shape_is_dropped_once_and_what_is_readable_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, stored: Any, problem: str) -> None:
    """The state ConfigMap holds valid JSON of the wrong shape (edited by hand): the service
    says once what it dropped and what that means, saves the state without it, and syncs; a
    card it can no longer find is posted again, a card it still knows is not."""
    kept = world.request("kept", 1)
    lost = world.request("lost", 2)
    cluster = world.Cluster(kept, lost)
    svc = world.service(tmp_path)
    svc.cluster = cluster

    def uid(obj: dict[str, Any]) -> str:
        return str(obj["metadata"]["uid"])

    svc.state = {}
    problem = problem.replace(".X.", f".{uid(lost)}.").replace(".X:", f".{uid(lost)}:")
    if isinstance(stored, dict):
        stored = json.loads(json.dumps(stored).replace('"X"', json.dumps(uid(lost))))
        stored.setdefault("horizon", (world.NOW - dt.timedelta(days=1)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"))
        if isinstance(stored.get("requests"), dict):
            fine = render.view(kept, [], world.NOW)
            stored["requests"][uid(kept)] = {"name": "kept", "telegram": {
                "ref": {"chat": -100, "message": 1}, "hash": fine.fingerprint()}}
    cluster.saved = stored
    channel = _Posting()
    svc.channels = [channel]

    async def main() -> None:
        await svc.load()
        await svc.sync()
        await svc.sync()

    asyncio.run(main())
    warned = [r for r in caplog.records if "wrong shape" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    assert any(p.startswith(problem) for p in vars(warned[0])["problems"]), vars(warned[0])
    assert "posted again" in warned[0].getMessage()
    lost_ref = cluster.saved["requests"][uid(lost)]["telegram"]["ref"]
    if problem.endswith("hash: not a string"):  # the card is still known: edited, not posted
        assert (channel.posted, channel.updated) == ([], ["lost"])
        assert lost_ref == {"chat": -100, "message": 7}
    elif isinstance(stored, dict) and isinstance(stored.get("requests"), dict):
        assert channel.posted == ["lost"]  # only the card the state can no longer name
        assert "kept" not in channel.updated
        assert lost_ref == {"chat": -100, "message": 101}
    else:
        assert sorted(channel.posted) == ["kept", "lost"]
    assert world.metric(svc, "wingman_chat_messages_failed_total", channel="telegram") == 0
    # the state as saved reads without a problem: nothing is logged at the next start
    assert service_module.readable_state(cluster.saved)[1] == []


# --------------------------------------------------------------------------- step-up state

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
T0 = 1_800_000_000.0  # on a 30 s step
HORIZON = "2026-01-01T00:00:00Z"


class _FailingSaves(world.Cluster):
    """The in-memory cluster whose saves fail while ``failing`` (> 0: that many more)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = 0
        self.error: ClusterError = ClusterError("the API server did not answer",
                                                reason="Unreachable")

    def save_state(self, state: dict[str, Any], *, unchanged: bool = False,
                   once: float | None = None) -> None:
        if self.failing:
            self.failing -= 1
            raise self.error
        super().save_state(state)


def _started(tmp: Path, cluster: world.Cluster, at: list[float]) -> ChatService:
    """A chat service as a new process starts it (step-up on), its state read."""
    svc = ChatService(config=ChatConfig(environment="prd", step_up=True), cluster=cluster,
                      sink=open_sink(str(tmp / "audit.log")), metrics=ChatMetrics(),
                      step_up=StepUp({"bob": SECRET}, clock=lambda: at[0], started=T0 - 600,
                                     restored=False))
    asyncio.run(svc.load())
    return svc


def _try(svc: ChatService, code: str) -> str:
    try:
        asyncio.run(svc._verify_step_up("bob", code))
    except Refusal as refusal:
        return refusal.reason
    return "accepted"


def _right(at: float) -> str:
    return str(pyotp.TOTP(SECRET).at(at))


def _wrong(at: float) -> str:
    return next(c for c in ("000000", "111111", "222222")
                if all(_right(at + d * 30) != c for d in (-1, 0, 1)))


@pytest.mark.parametrize("step_up", [
    "bob: 3", ["bob"], {"bob": {"failures": "3"}}, {"bob": {"failures": -2}},
    {"bob": {"failures": 0}}, {"bob": {"failures": 9}}, {"bob": {"failures": True}},
    {"bob": {"lockedUntil": 1.8e9}}, {"bob": {"failures": 2, "lockedUntil": 1_900_000_000}},
    {"bob": {"tries": 2}}, {"alice": {"failures": 1}, "bob": 4},
], ids=["string", "list", "count-string", "negative", "zero", "past-lockout", "bool", "float",
        "both", "other-key", "one-of-two"])
def test_step_up_state_of_the_wrong_shape_fails_closed_until_it_is_fixed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, step_up: Any) -> None:
    """Wrong codes and lockouts that cannot be read are not forgotten (which would give
    whoever guesses fresh tries): every code is refused, saying what to fix, the stored field
    is kept as it is through every save and restart, and once it is fixed codes are taken
    again without a restart."""
    cluster = world.Cluster()
    cluster.saved = {"horizon": HORIZON, "requests": {}, "stepUp": step_up}
    at = [T0]
    svc = _started(tmp_path, cluster, at)
    assert _try(svc, _right(at[0])) == "StepUpUnavailable"
    with pytest.raises(Refusal) as exc:
        svc.step_up.verify("bob", _right(at[0]))
    assert "stepUp" in exc.value.message and "kubectl wingman" in exc.value.message
    errors = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelname == "ERROR"
    assert "correct stepUp" in errors[0].getMessage() and vars(errors[0])["problem"]
    asyncio.run(svc._save())  # the reconciler saving: the field is kept, not dropped
    assert cluster.saved["stepUp"] == step_up
    again = _started(tmp_path, cluster, at)  # and a restart refuses as well
    assert _try(again, _right(at[0])) == "StepUpUnavailable"
    # an administrator removes it (the lockouts are forgotten): taken, no restart needed
    del cluster.saved["stepUp"]
    at[0] += 30
    assert _try(svc, _right(at[0])) == "accepted"
    assert _try(svc, _wrong(at[0])) == "StepUpFailed"
    assert cluster.saved["stepUp"] == {"bob": {"failures": 1}}


def test_a_state_that_is_not_json_refuses_step_up_codes_also_after_a_restart(
        tmp_path: Path) -> None:
    """The whole state unreadable: the cards start afresh, but the wrong codes and lockouts
    it held are unknown, so codes are refused, and the state saved says so (a restart must not
    read it as "none kept")."""
    cluster = world.Cluster()
    cluster.saved = None  # type: ignore[assignment]  # what load_state answers for not JSON
    at = [T0]
    svc = _started(tmp_path, cluster, at)
    assert _try(svc, _right(at[0])) == "StepUpUnavailable"
    assert cluster.saved["requests"] == {}
    assert "unreadable (the state is not JSON)" in cluster.saved["stepUp"]
    restarted = _started(tmp_path, cluster, at)
    assert _try(restarted, _right(at[0])) == "StepUpUnavailable"


def test_a_lockout_stored_far_ahead_lasts_one_lockout_from_the_start(tmp_path: Path) -> None:
    """A lockout ending later than one started now (the clock set back, or written by hand)
    locks, but not for ever: one whole lockout from now."""
    cluster = world.Cluster()
    cluster.saved = {"horizon": HORIZON, "requests": {},
                     "stepUp": {"bob": {"lockedUntil": 4_102_444_800}}}
    at = [T0]
    svc = _started(tmp_path, cluster, at)
    assert _try(svc, _right(at[0])) == "StepUpLocked"
    at[0] = T0 + 299
    assert _try(svc, _right(at[0])) == "StepUpLocked"
    at[0] = T0 + 330
    assert _try(svc, _right(at[0])) == "accepted"


def test_a_code_is_written_ahead_as_wrong_or_not_checked(tmp_path: Path) -> None:
    """Before a code is checked, the state says it was a wrong one (write-ahead, tried
    ``SAVE_TRIES`` times); should every try fail, the code is not checked at all, the right one
    neither, and nothing is counted that the state does not hold."""
    cluster = _FailingSaves()
    cluster.saved = {"horizon": HORIZON, "requests": {}}
    at = [T0]
    svc = _started(tmp_path, cluster, at)
    cluster.failing = service_module.SAVE_TRIES - 1  # fails, then succeeds on the last try
    assert _try(svc, _wrong(at[0])) == "StepUpFailed"
    assert cluster.saved["stepUp"] == {"bob": {"failures": 1}}
    cluster.failing = service_module.SAVE_TRIES  # every try of the write-ahead fails
    assert _try(svc, _wrong(at[0])) == "StepUpUnavailable"  # not checked
    assert cluster.saved["stepUp"] == {"bob": {"failures": 1}}
    at[0] += 30
    cluster.failing = 10 * service_module.SAVE_TRIES
    assert _try(svc, _right(at[0])) == "StepUpUnavailable"  # not even the right code
    assert svc.step_up.stored() == {"bob": {"failures": 1}}  # no guess counted unsaved
    cluster.failing = 0
    assert _try(svc, _wrong(at[0])) == "StepUpFailed"  # written ahead, then checked
    assert cluster.saved["stepUp"] == {"bob": {"failures": 2}}
    assert _try(svc, _right(at[0])) == "accepted"  # the count cleared once it is known
    assert "stepUp" not in cluster.saved


def test_a_write_the_api_server_asks_for_only_after_the_budget_is_not_made_again(
        tmp_path: Path) -> None:
    """API Priority and Fairness sheds the write ahead with a 429 whose ``Retry-After`` is past
    the ``SAVE_BUDGET_SECONDS`` a write may take: it is not made again sooner than asked (more
    load on an API server shedding it), nor later than the budget: the code is refused at
    once, not checked."""
    cluster = _FailingSaves()
    cluster.saved = {"horizon": HORIZON, "requests": {}}
    at = [T0]
    svc = _started(tmp_path, cluster, at)
    cluster.error = ApiError(429, "TooManyRequests", "too many requests",
                             retry_after=service_module.SAVE_BUDGET_SECONDS + 50)
    cluster.failing = service_module.SAVE_TRIES
    assert _try(svc, _wrong(at[0])) == "StepUpUnavailable"
    assert cluster.failing == service_module.SAVE_TRIES - 1, "tried once, not again"
    assert "stepUp" not in cluster.saved


class _DecidingFailingSaves(_DecidingCluster):
    """The deciding cluster whose saves fail while ``failing`` (> 0: that many more)."""

    failing = 0

    def save_state(self, state: dict[str, Any], *, unchanged: bool = False,
                   once: float | None = None) -> None:
        if self.failing:
            self.failing -= 1
            raise ClusterError("the API server did not answer", reason="Unreachable")
        super().save_state(state)


def test_a_right_code_whose_outcome_cannot_be_written_decides_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write-ahead landed, the code is right, but writing that it was right fails: the
    decision stands, the state keeps the code as a wrong one, and the person is told so (a
    restart before the next save counts it, which may lock them out), not left to wonder."""
    monkeypatch.setattr(service_module, "SAVE_RETRY_SECONDS", 0.0)
    cluster = _DecidingFailingSaves(world.request("web", 1))
    cluster.saved = {"horizon": HORIZON, "requests": {}}
    svc = world.service(tmp_path)
    svc.cluster = cluster
    svc.config = ChatConfig(environment="prd", people=(world.BOB,), step_up=True)
    at = [T0]
    svc.step_up = StepUp({"bob": SECRET}, clock=lambda: at[0], started=T0 - 600)
    svc.step_up.write_ahead = True
    verify = svc.step_up.verify

    def then_saves_fail(user: str, code: str) -> None:
        assert cluster.saved["stepUp"] == {"bob": {"failures": 1}}  # written ahead
        cluster.failing = service_module.SAVE_TRIES  # the outcome is not written
        verify(user, code)
    svc.step_up.verify = then_saves_fail  # type: ignore[method-assign]
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "approve", name="web",
                                code=_right(at[0])))
    assert reply.ok, reply.plain
    assert [d["by"] for d in cluster.objs[0]["spec"]["decisions"]] == ["bob"]
    assert "Approve recorded" in reply.plain
    assert "could not yet write" in reply.plain and "counts as a wrong one" in reply.plain
    assert cluster.saved["stepUp"] == {"bob": {"failures": 1}}  # the stricter count kept
    assert svc.step_up.stored() == {}  # memory knows it was right: the next save clears it


class _Stopped(BaseException):
    """The process stops (killed, out of memory, a rollout): nothing after it runs."""


class _StopsAtSave(world.Cluster):
    """The in-memory cluster at whose first save once ``stop_if()`` holds the process stops
    (the save never happens)."""

    def __init__(self) -> None:
        super().__init__()
        self.stop_if: Any = None

    def save_state(self, state: dict[str, Any], *, unchanged: bool = False,
                   once: float | None = None) -> None:
        if self.stop_if is not None and self.stop_if():
            self.stop_if = None
            raise _Stopped()
        super().save_state(state)


def _stops_once(tmp: Path, cluster: _StopsAtSave, at: list[float], code: str,
                after_check: bool) -> bool:
    """A new process takes ``code`` and stops at its first save (``after_check``: its first
    save once the code was checked); whether the code was checked."""
    svc = _started(tmp, cluster, at)
    checked = [False]
    verify = svc.step_up.verify

    def checking(user: str, code: str) -> None:
        checked[0] = True
        verify(user, code)
    svc.step_up.verify = checking  # type: ignore[method-assign]
    cluster.stop_if = (lambda: checked[0]) if after_check else (lambda: True)
    with pytest.raises(_Stopped):
        asyncio.run(svc._verify_step_up("bob", code))
    return checked[0]


@pytest.mark.parametrize("after_check", [False, True], ids=["at-first-save", "after-check"])
def test_a_process_that_stops_around_a_wrong_code_gives_no_fresh_try(
        tmp_path: Path, after_check: bool) -> None:
    """Whether the process stops at its first write (then the code was not checked either)
    or between the check and writing its outcome, the restarted process counts every wrong
    code that was checked: restarting the chat service after each guess buys no tries."""
    cluster = _StopsAtSave()
    cluster.saved = {"horizon": HORIZON, "requests": {}}
    at = [T0]
    checked = sum(_stops_once(tmp_path, cluster, at, _wrong(at[0]), after_check)
                  for _ in range(STEP_UP_MAX_FAILURES))
    restarted = _started(tmp_path, cluster, at)
    if checked:  # wrong codes checked, each by a process that then stopped: all counted
        assert checked == STEP_UP_MAX_FAILURES
        assert cluster.saved["stepUp"] == {"bob": {"lockedUntil": int(T0) + 300}}
        assert _try(restarted, _right(at[0])) == "StepUpLocked"
    else:  # none was checked: none counted
        assert not after_check
        assert _try(restarted, _right(at[0])) == "accepted"


def test_a_process_that_stops_after_a_right_code_fails_closed(tmp_path: Path) -> None:
    """A right code whose outcome was never written counts as wrong after the restart: after
    four wrong ones, it locks out (fail closed), never hands out a try."""
    cluster = _StopsAtSave()
    cluster.saved = {"horizon": HORIZON, "requests": {},
                     "stepUp": {"bob": {"failures": STEP_UP_MAX_FAILURES - 1}}}
    at = [T0]
    assert _stops_once(tmp_path, cluster, at, _right(at[0]), after_check=True)
    restarted = _started(tmp_path, cluster, at)
    at[0] += 30
    assert _try(restarted, _right(at[0])) == "StepUpLocked"


def test_a_code_taken_as_a_lockout_ends_is_not_checked_unwritten(tmp_path: Path) -> None:
    """A code sent while a lockout is running is not written ahead (it is not checked); should
    the lockout end while the state is being written (an earlier write pending), the code is
    still not checked, as nothing says it was tried."""
    cluster = _FailingSaves()
    cluster.saved = {"horizon": HORIZON, "requests": {},
                     "stepUp": {"bob": {"failures": STEP_UP_MAX_FAILURES - 1}}}
    at = [T0]
    svc = _started(tmp_path, cluster, at)
    verify = svc.step_up.verify

    def then_saves_fail(user: str, code: str) -> None:
        cluster.failing = service_module.SAVE_TRIES  # written ahead, the outcome not
        verify(user, code)
    svc.step_up.verify = then_saves_fail  # type: ignore[method-assign]
    assert _try(svc, _wrong(at[0])) == "StepUpLocked"
    svc.step_up.verify = verify  # type: ignore[method-assign]
    assert svc.step_up.changed  # the lockout's write pending
    save_state = cluster.save_state

    def slow(state: dict[str, Any], *, unchanged: bool = False,
             once: float | None = None) -> None:
        at[0] = T0 + 330  # the lockout ends while the state is written
        save_state(state)
    cluster.save_state = slow  # type: ignore[method-assign]
    at[0] = T0 + 299
    assert _try(svc, _right(T0 + 330)) == "StepUpUnavailable"  # not checked unwritten
    assert "stepUp" not in cluster.saved  # the lockout ended: nothing counted
    cluster.save_state = save_state  # type: ignore[method-assign]
    assert _try(svc, _right(T0 + 330)) == "accepted"  # the next code: written ahead, checked


def test_codes_sent_together_while_saves_fail_are_not_checked(tmp_path: Path) -> None:
    """Codes sent at the same time (several chat sessions of one person, or of several) are
    taken one after the other, each written ahead before it is checked: while the writes
    fail, none is checked (StepUpUnavailable), so none is a try the state does not hold."""
    cluster = _FailingSaves()
    cluster.saved = {"horizon": HORIZON, "requests": {}}
    at = [T0]
    svc = _started(tmp_path, cluster, at)
    cluster.failing = 100

    async def together() -> list[str]:
        async def one() -> str:
            try:
                await svc._verify_step_up("bob", _wrong(at[0]))
            except Refusal as refusal:
                return refusal.reason
            return "accepted"
        return list(await asyncio.gather(*(one() for _ in range(5))))

    answers = asyncio.run(together())
    assert answers == ["StepUpUnavailable"] * 5
    assert svc.step_up.stored() == {}  # no code checked
    cluster.failing = 0
    assert _try(svc, _wrong(at[0])) == "StepUpFailed"
    assert cluster.saved["stepUp"] == {"bob": {"failures": 1}}


def test_a_code_sent_while_the_reconciler_saves_waits_for_that_save(tmp_path: Path) -> None:
    """A wrong code whose save failed is still unsaved while the reconciler's own save (which
    carries it) is under way: a code sent meanwhile is not taken unless that save succeeded."""
    cluster = _FailingSaves()
    cluster.saved = {"horizon": HORIZON, "requests": {}}
    at = [T0]
    svc = _started(tmp_path, cluster, at)
    cluster.failing = service_module.SAVE_TRIES
    assert _try(svc, _wrong(at[0])) == "StepUpUnavailable"  # not written ahead: not checked
    gate = threading.Event()
    save_state = cluster.save_state

    def slow(state: dict[str, Any], *, unchanged: bool = False,
             once: float | None = None) -> None:
        gate.wait(10)
        save_state(state)
    cluster.save_state = slow  # type: ignore[method-assign]

    async def main() -> str:
        cluster.failing = 1  # every try of the reconciler's save fails, the code's too
        syncing = asyncio.ensure_future(svc._save())
        await asyncio.sleep(0.05)  # the reconciler's save under way
        cluster.failing = 2 * service_module.SAVE_TRIES
        code = asyncio.ensure_future(svc._verify_step_up("bob", _wrong(at[0])))
        await asyncio.sleep(0.05)
        gate.set()
        with pytest.raises(ClusterError):
            await syncing
        try:
            await code
        except Refusal as refusal:
            return refusal.reason
        return "accepted"

    assert asyncio.run(main()) == "StepUpUnavailable"
    assert svc.step_up.stored() == {}


def test_a_horizon_in_the_future_is_set_to_now(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """The horizon says which requests were final before the component first ran (never
    posted): one in the future would keep every final request's card and notice unsent."""
    cluster = world.Cluster()
    cluster.saved = {"horizon": "2999-01-01T00:00:00Z", "requests": {}}
    svc = world.service(tmp_path)
    svc.cluster = cluster
    asyncio.run(svc.load())
    now = svc.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert cluster.saved["horizon"] <= now and svc.state["horizon"] <= now
    (warned,) = [r for r in caplog.records if "wrong shape" in r.getMessage()]
    assert "horizon: later than now: set to now" in vars(warned)["problems"]


def test_pending_says_how_many_requests_it_does_not_list(tmp_path: Path) -> None:
    """/pending lists the 30 that expire first; an approver is told that more wait (and where
    to see them all), not left to think those 30 are all."""
    svc = world.service(tmp_path, *(world.request(f"r{n:02d}", n) for n in range(1, 33)))
    reply = asyncio.run(svc.act("telegram", "111", world.BOB, "pending"))
    assert reply.ok, reply
    assert reply.plain.count("• ") == 30
    assert "and 2 more awaiting a decision" in reply.plain
    assert "kubectl wingman list" in reply.plain
    few = world.service(tmp_path, world.request("r01", 1))
    assert "more" not in asyncio.run(few.act("telegram", "111", world.BOB, "pending")).plain


def _odd_cases() -> list[Any]:
    from support.oddapi import GRANTS, REQUESTS, grant, listing, request

    meta = {"name": "req-1", "namespace": "wm", "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z"}
    return [
        pytest.param({REQUESTS: listing(request(metadata=meta))}, "metadata.uid is missing",
                     id="request-without-uid"),
        pytest.param({REQUESTS: listing(request(metadata="req-1"))},
                     "metadata is text, not an object", id="request-metadata-text"),
        pytest.param({REQUESTS: listing(request(spec="restart web"))},
                     "spec is text, not an object", id="request-spec-text"),
        pytest.param({REQUESTS: listing(request(status={"consensus": {"votes": "all"}}))},
                     "status.consensus.votes is text, not a list", id="votes-text"),
        pytest.param({GRANTS: listing(grant(metadata=["req-1-0a1b2c3d"]))},
                     "metadata is a list, not an object", id="grant-metadata-list"),
        pytest.param({GRANTS: listing(grant(spec={"approvalRef": "req-1"}))},
                     "spec.approvalRef is text, not an object", id="grant-ref-text"),
    ]


@pytest.mark.parametrize(("odd", "says"), _odd_cases())
def test_an_object_of_a_shape_no_api_server_answers_is_refused_never_a_crash(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, odd: dict[str, Any], says: str
        ) -> None:
    """What answers at the API server's address (a proxy, another service, CRDs changed by
    hand) gives a request or a grant the chat cannot read: a person's command is answered
    that nothing was done (ClusterUnavailable, naming UnusableAnswer) and audited, the log
    says which field is wrong, and the reconciler's sync fails as the cluster being unusable
    (retried), never with a KeyError or a TypeError that drops the command unanswered."""
    from support.oddapi import GRANTS, REQUESTS, grant, listing, odd_api, request

    answers = {REQUESTS: listing(request()), GRANTS: listing(grant()), **odd}
    svc = world.service(tmp_path)
    with odd_api(answers) as url:
        kube = Kube(k8s.ApiClient(k8s.Configuration(host=url)))
        svc.cluster = ChatCluster(kube, "wm", "wingman-chat-state")
        reply = asyncio.run(svc.act("telegram", "111", world.BOB, "pending"))
        with pytest.raises(ClusterError) as raised:
            asyncio.run(svc.refresh())
    assert not reply.ok and reply.reason == "ClusterUnavailable", reply
    assert "(UnusableAnswer), so nothing was done" in reply.plain, reply.plain
    assert [(r["reason"], r["as"]) for r in world.audited(svc)] == [
        ("ClusterUnavailable", "bob")]
    assert raised.value.reason == "UnusableAnswer" and says in raised.value.message
    assert any(says in str(getattr(r, "error", "")) for r in caplog.records), says
