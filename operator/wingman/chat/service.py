"""The chat service: the reconciler that keeps messages in step with the objects, and the one
place where chat actions are checked, made as the person, audited and counted.

**Reconciler.** Every ``sync`` reads all ApprovalRequests and ExecutionGrants of the release
namespace and, for each enabled channel, makes the channel show them: a request without a
message gets one (with its buttons while a human decision is awaited), a message whose request
changed is edited in place (buttons removed once decided or expired), and the one-off notices
(the expiry warning for approvers, each terminal state for the requester's channel) are sent
once each. Which message shows which request, and which notices went out, is kept in the
ConfigMap ``wingman-chat-state`` (updated after every post), so a restarted component neither
loses nor repeats messages; what of it has the wrong shape (edited by hand) is dropped at start,
logged once and saved without (``readable_state``: a card shown twice, never one not shown),
but for the step-up wrong codes and lockouts, which fail closed (``_take_step_up``).
Requests never depend on chat: a channel that fails is retried
with exponential backoff (1 s doubling up to 5 min) and catches up from the objects when it
returns; the request meanwhile works by CLI as always. A message the chat service refuses for
what it is (``MessageRefused``: too long, invalid blocks) is not retried: the refusal is kept
in the request's state entry, logged and counted, the channel goes on with the next request,
and the card is tried again only once the request changes. Requests that were final before the
component first started are not posted.

**Actions.** ``act`` takes an action from a channel that has already authenticated the chat
user (signature, bot, guest, forwarded, replay checks are the channel's), maps the chat user to
a person, checks the chat-side preconditions, asks for the step-up code where the environment
wants one, records the intent in the audit trail (no record, no action), then decides or
grants **as the person** (impersonation) and audits the outcome. Every refusal is answered with
its reason and audited as ``ChatRefused``; refusals before a mapped person is known
(unsigned Slack requests, unmapped Telegram users) are audited at most once a minute per
channel, reason and chat user, the next record counting the ones left out (``suppressed``;
at most ``_MAX_REFUSAL_KEYS`` of those are remembered, and the count of the oldest, forgotten
to make room, goes into the record then written as ``suppressedOthers``).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from wingman.audit import AuditSink
from wingman.chat import render
from wingman.chat.cluster import ChatCluster, ChatHints
from wingman.chat.guard import (
    STEP_UP_MAX_FAILURES,
    PendingStepUp,
    Refusal,
    StepUp,
    check_decision,
    check_sent,
    refuse,
)
from wingman.chat.metrics import ChatMetrics
from wingman.chat.render import Notice, RequestView
from wingman.client import status as st
from wingman.client.api import check_reason, grants_by_request
from wingman.errors import (
    AuditUnavailable,
    ClientError,
    Forbidden,
    Invalid,
    NotFound,
    WingmanError,
)
from wingman.kube import RetryPolicy, call_retried_async
from wingman.logs import redact_tokens
from wingman.settings import ChatConfig, ChatPerson

log = logging.getLogger("wingman.chat")

MAX_BACKOFF_SECONDS = 300.0
#: Refusals of unidentified senders: one audit record per channel, reason and chat user in
#: this many seconds (the metric counts every one).
REFUSAL_AUDIT_WINDOW_SECONDS = 60.0
_MAX_REFUSAL_KEYS = 1000
#: Requests ``pending`` lists (those that expire first), at most; it says how many more wait.
PENDING_SHOWN = 30
#: Lines of a grant's output ``status`` shows (its end), as code.
OUTPUT_LINES = 40
#: How long one call on the state ConfigMap (a read, a write) may wait for the API server
#: (connecting, sending, the answer): one try (``Kube.request``'s ``once``, as the gateway's
#: ``API_CALL_SECONDS``), none of the HTTP library's silent retries, given up as a failure
#: with no answer; never past what is left of ``SAVE_BUDGET_SECONDS``, but at least
#: ``STATE_CALL_MIN_SECONDS``.
STATE_CALL_SECONDS = 5.0
STATE_CALL_MIN_SECONDS = 0.5
#: Tries of a write of the state (``_save``): made again only when it failed in a way that
#: may pass (no answer, a reset connection, 429, 5xx: ``wingman.kube.transient``) or met a
#: Conflict, the waits between them doubling from ``SAVE_RETRY_SECONDS`` (or as long as the
#: answer's ``Retry-After`` asks), and a new try only when its wait ends before
#: ``SAVE_BUDGET_SECONDS`` have passed since the first (``save_policy``): a person waiting for the
#: answer to a step-up code waits that long at most for a write, however the API server hangs.
SAVE_TRIES = 3
SAVE_RETRY_SECONDS = 0.2
SAVE_BUDGET_SECONDS = 10.0
#: How long a button pressed on a card still being posted waits for the post to end (the
#: chat shows a message before its sender has the answer with the message's id).
POSTING_WAIT_SECONDS = 10.0
#: An old copy of a card is turned into an out-of-date note at most once in this many
#: seconds, however often its buttons are pressed: a copy whose edit fails (the chat's rate
#: limit) is not edited again with every press, which would use up the chat's budget for
#: edits that the current cards need.
RETIRE_SECONDS = 60.0


def save_policy() -> RetryPolicy:
    """How a write of the state is made again (``wingman.kube.retry_pause``): ``SAVE_TRIES``
    tries within ``SAVE_BUDGET_SECONDS``, each call bounded by ``STATE_CALL_SECONDS``, made
    again after a failure that may pass or a Conflict (the write reads back what is stored:
    ``ChatCluster.save_state``), no sooner than the answer's ``Retry-After`` asks."""
    return RetryPolicy(budget=SAVE_BUDGET_SECONDS, first_delay=SAVE_RETRY_SECONDS,
                       call_seconds=STATE_CALL_SECONDS, call_min_seconds=STATE_CALL_MIN_SECONDS,
                       tries=SAVE_TRIES, conflicts=True)


def _save_retrying(exc: WingmanError, pause: float) -> None:
    log.info("writing the chat state failed in a way that may pass; trying again",
             extra={"reason": exc.reason, "error": str(exc)[:300],
                    "retry_in_seconds": round(pause, 2)})


class ChannelError(WingmanError):
    """A channel could not deliver (network, rate limit, server error): retried later.

    ``retry_after`` (the chat service's Retry-After) is capped at ``MAX_BACKOFF_SECONDS``:
    a huge one (hundreds of digits are infinity as a float) must not block the channel until
    a restart; one that is negative or not a number is ignored.
    """

    reason = "ChannelUnavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            retry_after = min(retry_after, MAX_BACKOFF_SECONDS) if retry_after >= 0 else None
        self.retry_after = retry_after


class CardGone(ChannelError):
    """The message to edit no longer exists in the chat: it is posted again."""

    reason = "MessageGone"


class MessageRefused(ChannelError):
    """The chat service refuses this one message for what it is (too long, invalid): sending
    it again cannot help, so the request's card fails and the channel goes on."""

    reason = "MessageRefused"


@dataclass(frozen=True)
class Segment:
    text: str
    code: bool = False  # untrusted text: channels show it literally (as code)


@dataclass(frozen=True)
class Reply:
    segments: tuple[Segment, ...] = ()
    ok: bool = True
    view: RequestView | None = None  # describe: the channel renders its card
    reason: str = ""

    @property
    def plain(self) -> str:
        return "".join(s.text for s in self.segments)


def T(text: str) -> Segment:
    return Segment(text)


def C(text: str, lines: int = render.MAX_LINES) -> Segment:
    """Untrusted text (or a name: ``x.example.com`` is one), shown as code, made visible and
    cut to 1500 characters and ``lines`` lines."""
    return Segment(render.clip(text, 1500, lines=lines), code=True)


class Channel(Protocol):
    name: str

    async def post_card(self, v: RequestView) -> dict[str, Any]: ...

    async def update_card(self, ref: dict[str, Any], v: RequestView) -> None: ...

    async def notify(self, v: RequestView, notice: Notice) -> None: ...


@dataclass
class _Health:
    failures: int = 0
    next_try: float = 0.0


@dataclass
class _Quiet:
    until: float
    suppressed: int = 0
    #: Left out for keys forgotten to make room for this one while no record was written
    #: (``left_out``): carried by its next record (``suppressedOthers``).
    others: int = 0


@dataclass
class ChatService:
    config: ChatConfig
    cluster: ChatCluster
    sink: AuditSink
    metrics: ChatMetrics
    step_up: StepUp
    channels: list[Channel] = field(default_factory=list)
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    state: dict[str, Any] = field(default_factory=dict)
    views: dict[str, RequestView] = field(default_factory=dict)
    _health: dict[str, _Health] = field(default_factory=dict)
    _quiet: dict[tuple[str, str, str], _Quiet] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _save_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: One step-up code at a time, each written before the next is taken.
    _step_up_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The cards being posted, by request uid and channel: set when the post ended.
    _posting: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.step_up.write_ahead = True  # every code is written ahead (``_verify_step_up``)

    @property
    def env(self) -> str:
        return self.config.environment

    # -- state -------------------------------------------------------------------------
    async def load(self) -> None:
        """Read the state ConfigMap. What of it has the wrong shape (someone edited it: only
        this component writes it) is dropped, logged once and the state saved without it,
        so that every sync does not fail on it (see ``readable_state``). Should that save
        fail, the warning says so and the service goes on with the state it read: the next
        save (after the next message) writes it, and the start is not retried, which would
        read and log the same data again. A new state that cannot be saved fails the start.

        The wrong step-up codes and lockouts are never dropped: when they cannot be read (the
        state not JSON, ``stepUp`` of the wrong shape) every code is refused until they are
        corrected (``_take_step_up``)."""
        raw = await asyncio.to_thread(partial(self.cluster.load_state,
                                              once=STATE_CALL_SECONDS))
        self.state, problems = readable_state(raw)
        self._take_step_up(raw)
        now = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        if str(self.state.get("horizon", "")) > now:  # it would keep final requests quiet
            problems.append("horizon: later than now: set to now")
            self.state["horizon"] = now
        fresh = "horizon" not in self.state
        if fresh:
            self.state["horizon"] = now
            self.state.setdefault("requests", {})
        if not (fresh or problems):
            return
        failed: WingmanError | OSError | None = None
        try:
            await self._save()
        except (WingmanError, OSError) as exc:
            if not problems:
                raise
            failed = exc
        if failed is None:
            log.warning(
                "chat state ConfigMap held data of the wrong shape; it was dropped and the "
                "state saved without it: the cards it named are posted again (the old cards' "
                "buttons are refused as stale) and their notices may be sent again. Nothing "
                "else to do; only the chat component should write this ConfigMap",
                extra={"configmap": getattr(self.cluster, "state_configmap", ""),
                       "problems": problems[:10], "problemCount": len(problems)})
        else:
            log.warning(
                "chat state ConfigMap held data of the wrong shape; it was dropped, but saving "
                "the state without it failed: it is saved with the next message the service "
                "posts or changes (until then, a restart drops it again). The cards it named "
                "are posted again (the old cards' buttons are refused as stale) and their "
                "notices may be sent again. Check that the chat ServiceAccount may patch this "
                "ConfigMap and that the API server is reachable; only the chat component "
                "should write it",
                extra={"configmap": getattr(self.cluster, "state_configmap", ""),
                       "problems": problems[:10], "problemCount": len(problems),
                       "saved": False, "reason": getattr(failed, "reason",
                                                         type(failed).__name__),
                       "error": str(failed)[:300]})

    def _take_step_up(self, raw: Any) -> None:
        """Restore the wrong step-up codes and lockouts of the state ``raw``; when they cannot
        be read, fail closed: ``StepUp.broken`` refuses every code (``StepUpUnavailable``),
        the state keeps ``stepUp`` as it was stored (or, when the whole state could not be
        read, a note saying so: of the wrong shape too), so that saving it does not forget it
        either, and the error says what to fix. Read again before every save and every code
        while broken (``_reread_step_up``): once corrected, codes are taken, no restart
        needed."""
        entries, why = stored_step_up(raw)
        if entries is not None:
            if self.step_up.broken:
                log.warning("chat state ConfigMap's stepUp can be read again: step-up codes "
                            "are taken again",
                            extra={"configmap": getattr(self.cluster, "state_configmap", "")})
            self.step_up.broken = ""
            if isinstance(raw, dict) and "stepUp" in raw:
                self.state["stepUp"] = raw["stepUp"]
            else:
                self.state.pop("stepUp", None)
            self.step_up.restore(entries)
            return
        kept = (raw["stepUp"] if isinstance(raw, dict) and "stepUp" in raw
                else f"unreadable ({why}): correct this to the wrong codes and lockouts, or "
                     "remove it to forget them")
        first = not self.step_up.broken
        self.step_up.broken = why
        self.step_up.restored = True
        self.state["stepUp"] = kept
        if first:
            log.error(
                "chat state ConfigMap's stepUp (the wrong one-time codes and lockouts) cannot "
                "be read, so every step-up code is refused (StepUpUnavailable) until it is "
                "fixed: correct stepUp in its state.json to {\"<user>\": {\"failures\": n}} or "
                "{\"<user>\": {\"lockedUntil\": <epoch seconds>}} entries, or remove it to "
                "forget them (only the chat component may write this ConfigMap: lift the "
                "chat-state admission policy's binding for the edit). Meanwhile decide with "
                "kubectl wingman",
                extra={"configmap": getattr(self.cluster, "state_configmap", ""),
                       "problem": why})

    async def _reread_step_up(self, once: float = STATE_CALL_SECONDS) -> None:
        """While ``stepUp`` cannot be read: read the stored state again (an administrator may
        have fixed it), waiting ``once`` seconds at most. Raises what reading raises."""
        if self.step_up.broken:
            self._take_step_up(await asyncio.to_thread(partial(self.cluster.load_state,
                                                               once=once)))

    async def _save(self) -> None:
        """Write the state, one save at a time, each with the state as it is then: up to
        ``SAVE_TRIES`` tries, a new one only after a failure that may pass or a Conflict, after
        a pause doubling from ``SAVE_RETRY_SECONDS`` (or as long as the answer's
        ``Retry-After`` asks) that ends before ``SAVE_BUDGET_SECONDS`` have passed, each call
        bounded (``STATE_CALL_SECONDS``); else the last error (``save_policy``)."""
        async with self._save_lock:
            await call_retried_async(save_policy(), self._save_once, retrying=_save_retrying)

    async def _save_once(self, once: float = STATE_CALL_SECONDS) -> None:
        """Write the state (``_save_lock`` held), each call waiting ``once`` seconds at most.
        While ``stepUp`` cannot be read it is read again first, and written only if the
        ConfigMap did not change since (else Conflict): an administrator's fix made meanwhile
        is never written over."""
        if self.step_up.broken:
            await self._reread_step_up(once)
        saving: dict[str, Any] | None = None
        if not self.step_up.broken and (self.step_up.changed or "stepUp" in self.state):
            saving = self.step_up.stored()
            self.state["stepUp"] = saving
            if not self.state["stepUp"]:
                del self.state["stepUp"]
        # ``changed`` stays set until the save succeeded (a code checked meanwhile must see
        # that the wrong codes are not written yet), and then only if none came since
        await asyncio.to_thread(partial(self.cluster.save_state, copy.deepcopy(self.state),
                                        unchanged=bool(self.step_up.broken), once=once))
        if saving is not None and saving == self.step_up.stored():
            self.step_up.changed = False

    async def _verify_step_up(self, user: str, code: str) -> bool:
        """The step-up check, written ahead: before a code is checked, the state ConfigMap is
        written with that code counted as wrong (``StepUp.begin``; the fifth in a row as a
        lockout), and only once that write succeeded is the code checked; its outcome is
        written after (a right code clears the count again, a wrong one stays as written). So
        a process that stops at any point (killed, out of memory, a rollout) between the check
        and the write has handed out no fresh try: after a restart, the code counts as wrong
        (a right one too, which fails closed). The write is made as ``_save`` makes it (up to
        ``SAVE_TRIES`` tries within ``SAVE_BUDGET_SECONDS``, again only after a failure that
        may pass or a Conflict); should it still fail, the code is refused unchecked
        (``StepUpUnavailable``), and so is every code until a save succeeds (tried again with
        each code and each sync). A failed write of the outcome changes no answer (a right
        code is not refused for it): the state then holds the stricter count until the next
        save, and False is returned (True once the outcome is written) so that the person is
        told. Codes sent at the same time are checked
        one after the other (``_step_up_lock``): none is taken while an earlier one is being
        written."""
        async with self._step_up_lock:
            if self.step_up.broken:
                try:
                    async with self._save_lock:  # not while a save reads and writes it
                        await self._reread_step_up()
                except (WingmanError, OSError):
                    pass  # still broken: refused below
            if self.step_up.counts(user):
                self.step_up.begin(user)
            if self.step_up.changed and not await self._save_step_up():
                self.step_up.end(user)  # nothing checked: the next code writes ahead again
                raise refuse("StepUpUnavailable", "Wingman's chat service could not write to "
                             "its state ConfigMap that a one-time code is being tried (nor the "
                             "wrong ones before), so it takes no code until it can: your code "
                             "was not checked and nothing was decided; try again shortly, or "
                             "decide with kubectl wingman")
            saved = False
            try:
                self.step_up.verify(user, code)
            finally:
                self.step_up.end(user)
                saved = not self.step_up.changed or await self._save_step_up()
            return saved

    async def _save_step_up(self) -> bool:
        """Save the state (the wrong codes: ``_save``, bounded by ``SAVE_BUDGET_SECONDS``, as
        a person waits for the answer); False, logged, when it failed."""
        try:
            await self._save()
            return True
        except (WingmanError, OSError) as exc:
            log.warning(
                "saving wrong one-time codes to the chat state ConfigMap failed; no "
                "step-up code is taken (StepUpUnavailable) until it is saved, which is "
                "tried again with the next code and the next sync. Check that the chat "
                "ServiceAccount may patch this ConfigMap and that the API server is "
                "reachable",
                extra={"configmap": getattr(self.cluster, "state_configmap", ""),
                       "saved": False, "reason": getattr(exc, "reason", type(exc).__name__),
                       "error": str(exc)[:300]})
        return False

    def card_ref(self, uid: str, channel: str) -> dict[str, Any] | None:
        entry = self.state.get("requests", {}).get(uid, {}).get(channel) or {}
        ref = entry.get("ref")
        return ref if isinstance(ref, dict) else None

    def request_name(self, uid: str) -> str:
        """The name of the request with ``uid``, as last seen ("" when unknown)."""
        v = next((v for v in self.views.values() if v.uid == uid), None)
        if v is not None:
            return v.name
        name = (self.state.get("requests", {}).get(uid) or {}).get("name")
        return name if isinstance(name, str) else ""

    async def current_ref(self, uid: str, channel: str, wait: float = POSTING_WAIT_SECONDS
                          ) -> dict[str, Any] | None:
        """The reference of the request's current card in ``channel``, as ``card_ref``, once a
        post of that card under way has ended (waiting at most ``wait`` seconds): the chat
        shows a message, buttons and all, before its sender has the answer with the message's
        id (a slow network, a loaded machine), and a button pressed on it then is a button of
        the request's one card, not a stale one."""
        posting = self._posting.get((uid, channel))
        if posting is not None:
            try:
                await asyncio.wait_for(posting.wait(), wait)
            except TimeoutError:
                pass  # still no answer: the card is not known yet (StaleButton)
        return self.card_ref(uid, channel)

    def poke(self) -> None:
        """Sync soon (after a decision, so the message changes at once)."""
        self._wake.set()

    # -- reconciler ----------------------------------------------------------------------
    async def refresh(self) -> dict[str, RequestView]:
        """Read the requests and grants (each of the shape the chat reads, ``ChatCluster``
        checks it: else ``UnusableAnswer``) and draw their views."""
        requests, grants = await asyncio.gather(asyncio.to_thread(self.cluster.requests),
                                                asyncio.to_thread(self.cluster.grants))
        now = self.clock()
        by_request = grants_by_request(grants)
        self.views = {str(r["metadata"]["uid"]): render.view(
            r, by_request.get(str(r["metadata"].get("name", "")), []), now) for r in requests}
        return self.views

    async def refreshed(self) -> dict[str, RequestView]:
        """``refresh`` for a person's action: the requests and grants as they are now, or a
        Refusal (``ClusterUnavailable``) when the API server cannot be read (unreachable,
        failing, a namespace past ``ListTooLarge``), so that the person is answered and the
        refusal audited instead of their command being dropped unanswered."""
        try:
            return await self.refresh()
        except (WingmanError, OSError) as exc:
            raise _unreadable(exc, "read the requests") from exc

    async def sync(self) -> None:
        async with self._lock:
            views = await self.refresh()
            now = self.clock()
            entries: dict[str, Any] = self.state.setdefault("requests", {})
            horizon = str(self.state.get("horizon", ""))
            ordered = sorted(views.values(), key=lambda v: (v.created, v.name))
            keyed = False  # a key recorded for a card sent before keys were: to be saved
            for ch in self.channels:
                key = _button_key(ch)
                health = self._health.setdefault(ch.name, _Health())
                due = 0
                blocked = time.monotonic() < health.next_try
                for v in ordered:
                    entry = entries.get(v.uid) or {}
                    if entry.get("done"):
                        continue  # settled long ago: nothing about it can change any more
                    mine = entry.get(ch.name) or {}
                    if not mine and v.state not in ("Open", "Reviewing") and v.created < horizon:
                        continue  # final before this component first ran: never posted
                    if key and "ref" in mine and "key" not in mine:
                        mine["key"] = key  # posted before keys were kept: by this key
                        keyed = True
                    work = self._due(v, mine, now, key)
                    if not work:
                        continue
                    due += len(work)
                    if blocked:
                        continue
                    try:
                        await self._deliver(ch, v, work, entries)
                        due -= len(work)
                    except ChannelError as exc:
                        self.metrics.messages_failed.labels(self.env, ch.name).inc()
                        health.failures += 1
                        delay = exc.retry_after or min(MAX_BACKOFF_SECONDS,
                                                       2.0 ** (health.failures - 1))
                        health.next_try = time.monotonic() + delay
                        blocked = True
                        log.warning("chat delivery failed; retrying with backoff",
                                    extra={"channel": ch.name, "reason": exc.reason,
                                           "error": exc.message[:300],
                                           "retry_in_seconds": round(delay, 1)})
                        continue
                    health.failures = 0
                self.metrics.backlog.labels(self.env, ch.name).set(due)
            gone = [uid for uid in entries if uid not in views]
            for uid in gone:
                del entries[uid]
            settled = [v for v in views.values() if v.uid in entries
                       and not entries[v.uid].get("done") and self._settled(v, entries[v.uid],
                                                                            now)]
            for v in settled:  # keep the state ConfigMap small: one marker per old request
                entries[v.uid] = {"name": v.name, "done": 1}
            if gone or settled or keyed:
                await self._save()

    def _settled(self, v: RequestView, entry: dict[str, Any], now: dt.datetime) -> bool:
        """Final for more than an hour, every grant final, every channel up to date."""
        expires = render.parse_time(v.expires)
        if (v.state not in ("Rejected", "Revoked", "Expired") or expires is None
                or now - expires < dt.timedelta(hours=1)
                or any(g.phase not in render.FINAL_GRANT for g in v.grants)):
            return False
        return all(entry.get(ch.name)
                   and not self._due(v, entry[ch.name], now, _button_key(ch))
                   for ch in self.channels)

    def _due(self, v: RequestView, mine: dict[str, Any], now: dt.datetime, key: str = ""
             ) -> list[tuple[str, Notice | None]]:
        """What ``mine`` (a channel's entry) lacks to show ``v``: its card posted, or edited
        when the request changed, or when it awaits a decision with buttons signed by another
        key than the channel's ``key`` (a rotated bot token or signing secret: those buttons
        are refused), and the notices not yet sent."""
        work: list[tuple[str, Notice | None]] = []
        refused = (mine.get("refused") or {}).get("hash") == v.fingerprint()
        resign = bool(key) and v.live and mine.get("key", key) != key
        if "ref" not in mine and not refused:
            work.append(("post", None))
        elif "ref" in mine and (mine.get("hash") != v.fingerprint() or resign) and not refused:
            work.append(("update", None))
        sent = set(mine.get("sent") or [])
        for n in render.notices(v, now, self.config.expiry_warning_minutes):
            if n.key not in sent:
                work.append(("notice", n))
        return work

    async def _deliver(self, ch: Channel, v: RequestView,
                       work: Sequence[tuple[str, Notice | None]], entries: dict[str, Any]
                       ) -> None:
        for kind, notice in work:
            mine = entries.setdefault(v.uid, {"name": v.name}).setdefault(ch.name, {})
            try:
                if kind == "post":
                    posted = self._posting[(v.uid, ch.name)] = asyncio.Event()
                    try:
                        mine["ref"] = await ch.post_card(v)
                    finally:  # the presses that waited for it see the reference, or none
                        del self._posting[(v.uid, ch.name)]
                        posted.set()
                    mine["hash"] = v.fingerprint()
                    mine.pop("refused", None)
                    _keep_key(mine, ch)
                elif kind == "update":
                    try:
                        await ch.update_card(mine["ref"], v)
                    except CardGone:
                        mine.pop("ref", None)  # deleted in the chat: posted again next time
                        mine.pop("hash", None)
                        await self._save()
                        continue
                    mine["hash"] = v.fingerprint()
                    mine.pop("refused", None)
                    _keep_key(mine, ch)
                elif notice is not None:
                    await ch.notify(v, notice)
                    mine.setdefault("sent", []).append(notice.key)
            except MessageRefused as exc:
                # Sending it again cannot help: this message fails, the channel goes on.
                self.metrics.messages_failed.labels(self.env, ch.name).inc()
                if notice is not None:
                    mine.setdefault("sent", []).append(notice.key)
                else:
                    mine["refused"] = {"hash": v.fingerprint(), "error": exc.message[:300]}
                log.error("chat message refused by the channel; not retried until the request "
                          "changes", extra={"channel": ch.name, "request": v.name,
                                            "what": notice.key if notice else kind,
                                            "error": exc.message[:300]})
                await self._save()
                continue
            self.metrics.messages_sent.labels(self.env, ch.name).inc()
            await self._save()

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        """Sync every ``interval`` seconds (or when poked) until ``stop`` is set.

        A failed sync never ends the loop: the cluster or audit trail being unreachable is
        retried at the next interval; anything else (a library's bug, an answer of a shape
        nobody expected) is logged as an error with its type and backs off (the interval,
        doubling up to ``MAX_BACKOFF_SECONDS``) until a sync succeeds again. Each failed sync
        is counted in ``wingman_chat_loop_failures_total{loop="reconciler"}`` (``Unavailable``
        or ``Unexpected``).
        """
        unexpected = 0
        while not stop.is_set():
            wait = interval
            try:
                await self.sync()
                unexpected = 0
            except (WingmanError, OSError) as exc:
                self.metrics.loop_failures.labels(self.env, "reconciler", "Unavailable").inc()
                log.warning("chat sync failed; retrying",
                            extra={"reason": getattr(exc, "reason", type(exc).__name__),
                                   "error": str(exc)[:300]})
            except Exception as exc:  # noqa: BLE001 - the loop outlives any one sync
                self.metrics.loop_failures.labels(self.env, "reconciler", "Unexpected").inc()
                unexpected += 1
                wait = min(MAX_BACKOFF_SECONDS, interval * 2.0 ** (unexpected - 1))
                log.error("chat sync failed unexpectedly; retrying with backoff",
                          extra={"reason": "Unexpected", "errorType": type(exc).__name__,
                                 "error": str(exc)[:300], "retry_in_seconds": round(wait, 1)})
            self._wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(
                self._wake.wait())]
            _done, pending = await asyncio.wait(waiters, timeout=wait,
                                                return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()

    # -- audit ---------------------------------------------------------------------------
    async def _audit(self, event: str, actor: str, subject: dict[str, Any],
                     data: dict[str, Any]) -> None:
        await asyncio.to_thread(self.sink.append, event, actor=actor, subject=subject,
                                data=data)

    async def refused(self, channel: str, chat_user: str, refusal: Refusal, *,
                      request: str = "", person: ChatPerson | None = None) -> Reply:
        """Count, audit and answer a refusal.

        Every refusal is counted; one of a sender not known as a person (no signature, not in
        ``chat.people``: anyone can send those) is audited at most once per
        ``REFUSAL_AUDIT_WINDOW_SECONDS`` per channel, reason and chat user, and the next record
        says how many were left out in between (``suppressed``). At most
        ``_MAX_REFUSAL_KEYS`` of those are remembered: a new one makes room by forgetting the
        oldest, and the left-out refusals it still held go into the record being written
        (``suppressedOthers``), so every refusal reaches the audit trail, alone or counted."""
        self.metrics.refusals.labels(self.env, channel, refusal.reason).inc()
        refusal = _redacted(refusal)
        data: dict[str, Any] = {"channel": channel, "chatUser": chat_user,
                                "as": person.user if person else None,
                                "reason": refusal.reason, "message": refusal.message[:500]}
        if person is None:
            quieted = self._quieted((channel, refusal.reason, chat_user))
            if quieted is None:
                return _refusal_reply(refusal)
            suppressed, others = quieted
            if suppressed:
                data["suppressed"] = suppressed
            if others:
                data["suppressedOthers"] = others
        # a name as typed may hold a lone surrogate (JSON's "\\ud800"), which the audit trail
        # cannot store: it is recorded escaped, so the refusal is still audited; and a token
        # (a JWT pasted as the name), which it never stores: it is recorded redacted
        request = redact_tokens(request.encode("utf-8", "backslashreplace").decode("utf-8"))
        log.info("chat action refused", extra={"channel": channel, "reason": refusal.reason,
                                               "request": request})
        try:
            await self._audit("ChatRefused", "chat", _subject(self.cluster.namespace, request),
                              data)
        except AuditUnavailable as exc:
            log.error("audit of a chat refusal failed", extra={"reason": exc.reason})
        return _refusal_reply(refusal)

    def _quieted(self, key: tuple[str, str, str]) -> tuple[int, int] | None:
        """None while ``key`` was audited less than a window ago (counted as suppressed); else
        how many were suppressed since its last record (the window starts again), and how many
        were suppressed and not yet recorded of the keys forgotten just now to keep at most
        ``_MAX_REFUSAL_KEYS`` (the oldest first)."""
        now = self.clock().timestamp()
        quiet = self._quiet.get(key)
        if quiet is not None and now < quiet.until:
            quiet.suppressed += 1
            return None
        old = self._quiet.pop(key, None)
        suppressed, others = (old.suppressed, old.others) if old is not None else (0, 0)
        others += self._make_room()
        self._quiet[key] = _Quiet(now + REFUSAL_AUDIT_WINDOW_SECONDS)
        return suppressed, others

    def _make_room(self) -> int:
        """Forget the oldest keys (in the order their windows started) until one more fits
        within ``_MAX_REFUSAL_KEYS``; how many refusals they left out, not yet recorded."""
        others = 0
        while len(self._quiet) >= _MAX_REFUSAL_KEYS:
            gone = self._quiet.pop(next(iter(self._quiet)))
            others += gone.suppressed + gone.others
        return others

    def left_out(self, channel: str, reason: str, chat_user: str) -> None:
        """Count a refusal of a sender not known as a person that was dropped before it was
        handled (a Telegram update screened out, see ``TelegramChannel._screened``): not
        audited by itself, it is carried, like one left out in a window, by the next record
        of its channel, reason and chat user (``suppressed``), or, once that key is forgotten,
        by the record then written (``suppressedOthers``): none is lost uncounted."""
        quiet = self._quiet.get((channel, reason, chat_user))
        if quiet is not None:  # a window open or ended: its next record carries it
            quiet.suppressed += 1
            return
        others = self._make_room()  # none yet: the next refusal of the key is recorded
        self._quiet[(channel, reason, chat_user)] = _Quiet(self.clock().timestamp(), 1, others)

    # -- actions -------------------------------------------------------------------------
    def find(self, *, name: str = "", uid: str = "", channel: str = "") -> RequestView:
        """The request named ``name`` (or with ``uid``); NotFound hints at ``channel``'s
        pending command."""
        for v in self.views.values():
            if (uid and v.uid == uid) or (name and v.name == name):
                return v
        what = name or uid
        raise refuse("NotFound", f"there is no approval request {what!r} in environment "
                     f"{self.env} (it may have been deleted): {self._prefix(channel)}pending "
                     "lists the open ones")

    async def act(self, channel: str, chat_user: str, person: ChatPerson | None, verb: str,
                  *, name: str = "", uid: str = "", reason: str = "", code: str | None = None,
                  command: str = "", sent_at: dt.datetime | None = None) -> Reply:
        """Carry out one chat action; every refusal is audited and answered.

        ``sent_at`` is when the chat service says the typed command was sent (Telegram's
        ``message.date``), None when it does not say (buttons, bound to the request's UID):
        a decision, confirmation or grant sent before the request it names was created is
        refused (``StaleMessage``, see ``guard.check_sent``)."""
        try:
            if person is None:
                raise refuse("Unmapped", "you are not mapped to a Kubernetes user for "
                             f"environment {self.env}: ask an administrator to add your chat "
                             "id to chat.people, or use kubectl wingman")
            return await self._act(channel, chat_user, person, verb, name=name, uid=uid,
                                   reason=reason, code=code, command=command,
                                   sent_at=sent_at)
        except Refusal as refusal:
            return await self.refused(channel, chat_user, refusal, request=name or uid,
                                      person=person)

    async def _act(self, channel: str, chat_user: str, person: ChatPerson, verb: str, *,
                   name: str, uid: str, reason: str, code: str | None, command: str,
                   sent_at: dt.datetime | None) -> Reply:
        if verb in ("pending", "describe", "status", "approve", "reject", "exec"):
            await self.refreshed()
        if verb == "pending":
            return self._pending()
        if verb == "describe":
            v = self.find(name=name, channel=channel)
            return Reply((T("Request "), C(v.name)), view=v)
        if verb == "status":
            return await self._status(channel, person, name)
        if verb == "confirm":
            await self.refreshed()  # first: refused so, the decision still waits for a code
            held = self.step_up.take(f"{channel}:{chat_user}")
            v = self.find(name=held.request, channel=channel)
            if v.uid != held.uid:
                raise refuse("StaleButton", f"{held.request} was replaced by a new request "
                             "since you started: decide the new one")
            check_sent(v, sent_at, f"{self._prefix(channel)}{held.verb} {v.name}")
            return await self._decide(channel, chat_user, person, held.verb, held.request,
                                      held.reason, code or "", stepped_up=False)
        if verb in ("approve", "reject"):
            v = self.find(name=name, uid=uid, channel=channel)
            check_sent(v, sent_at, f"{self._prefix(channel)}{verb} {v.name}"
                       + (" <reason>" if verb == "reject" else ""))
            if verb == "reject" and not reason.strip():
                raise refuse("ReasonRequired", f"say why: {self._prefix(channel)}reject "
                             f"{v.name} <reason>")
            check_decision(v, person, verb, self.clock())
            _check_reason(reason)
            if self.config.step_up and code is None:
                self.step_up.hold(f"{channel}:{chat_user}", PendingStepUp(
                    verb, v.name, v.uid, reason, self.step_up.deadline()))
                return Reply((T(f"Step-up required for {verb} on "), C(v.name),
                              T(f": send {self._prefix(channel)}confirm <6-digit code from your "
                                "authenticator> within "
                                f"{self.config.step_up_window_seconds} s")),
                             reason="StepUpRequired")
            return await self._decide(channel, chat_user, person, verb, v.name, reason,
                                      code or "", stepped_up=False)
        if verb == "exec":
            return await self._exec(channel, chat_user, person, name, command, sent_at)
        p = self._prefix(channel)
        raise refuse("UnknownCommand", f"unknown command {verb!r}: use {p}pending, "
                     f"{p}describe, {p}approve, {p}reject, {p}exec or {p}status")

    async def _decide(self, channel: str, chat_user: str, person: ChatPerson, verb: str,
                      name: str, reason: str, code: str, *, stepped_up: bool) -> Reply:
        v = self.find(name=name, channel=channel)
        check_decision(v, person, verb, self.clock())
        _check_reason(reason)
        unsaved = self.config.step_up and not await self._verify_step_up(person.user, code)
        verdict = "Approve" if verb == "approve" else "Reject"
        subject = _subject(self.cluster.namespace, v.name, v.uid)
        data = {"channel": channel, "chatUser": chat_user, "verdict": verdict,
                "stepUp": self.config.step_up, "reason": reason}
        try:
            await self._audit("ChatDecisionRequested", person.user, subject, data)
        except AuditUnavailable as exc:
            raise refuse("AuditUnavailable", "the audit trail is unavailable, so nothing was "
                         "decided; try again shortly or use kubectl wingman") from exc
        client = self.cluster.client_as(person, ChatHints(self._prefix(channel)))
        try:
            await asyncio.to_thread(partial(client.decide, uid=v.uid), v.name, verdict,
                                    reason)
        except ClientError as exc:
            if exc.reason == "AlreadyDecided":  # decided since the card was drawn: say how
                raise refuse("NotDecidable", exc.message) from exc
            raise refuse("NotAllowed" if isinstance(exc, Forbidden | Invalid) else "ApiError",
                         f"the API server refused your decision as {person.user}: "
                         f"{exc.message}") from exc
        await self._audit_quietly("ChatDecisionRecorded", person.user, subject, data)
        self.metrics.decisions.labels(self.env, channel, verdict).inc()
        self.poke()
        said: tuple[Segment, ...] = (T(f"{verdict} recorded on "), C(v.name), T(" as "),
                                     C(person.user))
        if unsaved:  # the state still counts the right code as a wrong one: say so
            said += (T(". Your one-time code was right, but Wingman's chat service could not "
                       "yet write that to its state ConfigMap: should it restart before it "
                       "can, that code counts as a wrong one (with wrong ones before it, a "
                       "lockout)"),)
        return Reply(said)

    async def _exec(self, channel: str, chat_user: str, person: ChatPerson, name: str,
                    command: str, sent_at: dt.datetime | None) -> Reply:
        v = self.find(name=name, channel=channel)
        check_sent(v, sent_at, f"{self._prefix(channel)}exec {v.name} <command>")
        command = self._command_of(v, command, channel)
        subject = _subject(self.cluster.namespace, v.name, v.uid)
        data = {"channel": channel, "chatUser": chat_user, "command": command}
        client = self.cluster.client_as(person, ChatHints(self._prefix(channel)))
        gname = st.grant_name(v.name, command)
        try:
            existed = await asyncio.to_thread(self.cluster.grant, gname) is not None
        except (WingmanError, OSError) as exc:
            raise _unreadable(exc, f"read the ExecutionGrant {gname}") from exc
        if not existed:
            try:
                await self._audit("ChatGrantRequested", person.user, subject, data)
            except AuditUnavailable as exc:
                raise refuse("AuditUnavailable", "the audit trail is unavailable, so no grant "
                             "was created; try again shortly") from exc
        try:
            status = await asyncio.to_thread(client.execute, v.name, command)
        except ClientError as exc:
            if exc.reason == "GrantNameTaken":  # the client's own check, not the API server's
                raise refuse("GrantNameTaken", exc.message) from exc
            raise refuse("NotAllowed" if isinstance(exc, Forbidden | Invalid) else "ApiError",
                         f"the API server refused the grant as {person.user}: "
                         f"{exc.message}") from exc
        if status.kind != "ExecutionGrant" or status.state is st.State.AWAITING_GRANT:
            raise refuse("NotAllowed", f"no grant was created as {person.user}: "
                         f"{status.message or status.state.value}; next: {status.next}")
        if not existed:
            await self._audit_quietly("ChatGrantCreated", person.user, subject,
                                      {**data, "grant": gname})
        self.poke()
        return Reply((T("ExecutionGrant "), C(gname),
                      T(f" ({'already existed, ' if existed else ''}{status.state.value}) as "),
                      C(person.user),
                      T("; next: "), C(status.next)))

    def _command_of(self, v: RequestView, typed: str, channel: str) -> str:
        """The request's command that ``typed`` names: the one equal to it byte for byte, else
        the only one equal to it once the spaces before and after it are removed (chat cannot
        carry whitespace around a command: ``command_args`` drops it). Only ASCII spaces: they
        leave the argv unchanged, where a no-break space would end up in a word. The stored
        command is what the grant is made for, byte for byte. Refusal when none matches, or
        when several differ only by those spaces (``AmbiguousCommand``)."""
        if typed in v.commands:
            return typed
        padded = [c for c in v.commands if c != typed and c.strip(" ") == typed]
        if len(padded) == 1:
            return padded[0]
        if padded:
            raise refuse("AmbiguousCommand", f"{len(padded)} of {v.name}'s commands differ from "
                         "that only by spaces before or after them, which chat cannot carry: "
                         f"use kubectl wingman exec {v.name} --command '<the exact command>'")
        raise refuse("NotACommandOfTheRequest", f"that is not one of {v.name}'s commands "
                     f"byte for byte: {self._prefix(channel)}describe {v.name} shows them")

    def _prefix(self, channel: str) -> str:
        """How a command starts in ``channel``: /wingman <verb> (the configured slash command)
        on Slack, /<verb> on Telegram."""
        if channel == "slack":
            return f"{self.config.slack.command if self.config.slack else '/wingman'} "
        return "/"

    async def _audit_quietly(self, event: str, actor: str, subject: dict[str, Any],
                             data: dict[str, Any]) -> None:
        try:
            await self._audit(event, actor, subject, data)
        except AuditUnavailable as exc:
            log.error("audit after a chat action failed (the action stands)",
                      extra={"event": event, "reason": exc.reason})

    def _pending(self) -> Reply:
        live = sorted((v for v in self.views.values() if v.live), key=lambda v: v.expires)
        if not live:
            return Reply((T(f"No request awaits a decision in {self.env}."),))
        parts: list[Segment] = [T(f"Awaiting a decision in {self.env}:\n")]
        for v in live[:PENDING_SHOWN]:
            parts += [T("• "), C(v.name), T(" by "), C(v.requester),
                      T(f", risk {v.risk}, {len(v.approved_by)} of {v.required}, expires "
                        f"{v.expires}\n")]
        if len(live) > PENDING_SHOWN:  # the first to expire are listed: say the rest wait
            parts += [T(f"… and {len(live) - PENDING_SHOWN} more awaiting a decision, "
                        "expiring later: "), C("kubectl wingman list"), T(" lists them all")]
        return Reply(tuple(parts))

    async def _status(self, channel: str, person: ChatPerson, name: str) -> Reply:
        client = self.cluster.client_as(person, ChatHints(self._prefix(channel)))
        try:
            status = await asyncio.to_thread(client.grant_status, name)
        except NotFound as exc:
            raise refuse("NotFound", f"there is no ExecutionGrant {name!r} in "
                         f"{self.env}") from exc
        except Invalid as exc:  # not a grant's name ("../x"): the client's own check
            raise refuse("Invalid", exc.message) from exc
        except Forbidden as exc:
            raise refuse("NotAllowed", f"you ({person.user}) may not read {name}: "
                         f"{exc.message}") from exc
        except ClientError as exc:
            raise refuse("ApiError", f"cannot read ExecutionGrant {name}: "
                         f"{exc.message}") from exc
        head = f": {status.state.value}"
        if status.exit_code is not None:
            head += f", exit code {status.exit_code}"
        parts = [T("Grant "), C(name), T(head)]
        if status.reason:
            parts += [T(" ("), C(status.reason), T(")")]
        # as the card shows commands: a look-alike (a Cyrillic e, U+0435) as its code point
        command, lookalike = render.visible(status.command or "", ascii_only=True)
        parts += [T("\nCommand: "), C(command)]
        if lookalike:
            parts += [T(" (⚠ invisible or non-ASCII characters shown as \\u{…}: the gateway "
                        "runs only plain ASCII commands; a \\u{005C} is a backslash the "
                        "command writes before u{)")]
        if status.output:
            tail = "\n".join(status.output[-1500:].split("\n")[-OUTPUT_LINES:])
            parts += [T("\nOutput (its end):\n"), C(tail, lines=OUTPUT_LINES)]
        parts += [T("\nNext: "), C(status.next)]  # names a grant: x.example.com is one
        return Reply(tuple(parts))


#: The fields of a card reference, by channel (any other channel's: a JSON object).
_REF_FIELDS: dict[str, dict[str, type]] = {"slack": {"channel": str, "ts": str},
                                           "telegram": {"chat": int, "message": int}}
_HORIZON = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def readable_state(raw: Any) -> tuple[dict[str, Any], list[str]]:
    """The chat state as the reconciler reads it, and what of ``raw`` was dropped for having
    the wrong shape (one line each, naming where).

    The state is ``{"horizon": "<RFC 3339 UTC>", "requests": {<uid>: {"name": str,
    "done": 1} or {"name": str, <channel>: {"ref": {...}, "hash": str, "sent": [str],
    "refused": {"hash": str, "error": str}, "key": str}}}, "stepUp": {<user>: {"failures":
    int} or {"lockedUntil": int}}}`` (``key``: which key signed the card's buttons, a card
    of another edited; ``stepUp``: ``StepUp.stored``, read by ``stored_step_up`` and
    kept here as it is, never dropped: see ``ChatService.load``). Dropping errs on the side of
    a message shown twice, never of one not shown: an unreadable card reference (or a channel's or a
    request's whole entry) means the card is posted again, an unreadable ``sent`` that the
    notices may be sent again; an unreadable horizon is set anew (requests final before it,
    without an entry, are not posted); a state that is not an object starts afresh. Fields this
    version does not know are kept."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        problems.append("the state is not JSON: started afresh" if raw is None else
                        f"the state is a JSON {type(raw).__name__}, not an object: started "
                        "afresh")
        return {}, problems
    state = dict(raw)
    if "horizon" in state and not (isinstance(state["horizon"], str)
                                   and _HORIZON.fullmatch(state["horizon"])):
        problems.append("horizon: not a time like 2026-01-31T12:00:00Z: set anew")
        del state["horizon"]
    requests = state.get("requests", {})
    if not isinstance(requests, dict):
        problems.append("requests: not an object: every card is posted again")
        requests = {}
    entries: dict[str, Any] = {}
    for uid, entry in requests.items():
        at = f"requests.{str(uid)[:64]}"  # as written by hand: any length
        if not isinstance(entry, dict):
            problems.append(f"{at}: not an object: its cards are posted again")
            continue
        kept: dict[str, Any] = {}
        for key, value in entry.items():
            if key == "name":
                if isinstance(value, str):
                    kept[key] = value
            elif key == "done":
                if _is(value, int) and value:
                    kept[key] = 1
                else:
                    problems.append(f"{at}.done: not 1: dropped")
            elif isinstance(value, dict):
                kept[key] = _channel_entry(f"{at}.{key[:64]}", key, value, problems)
            else:
                problems.append(f"{at}.{key[:64]}: not an object: its card is posted again")
        entries[str(uid)] = kept
    state["requests"] = entries
    return state, problems


def stored_step_up(raw: Any) -> tuple[dict[str, dict[str, int]] | None, str]:
    """The wrong step-up codes and lockouts kept in the state ``raw`` (``StepUp.stored``), and
    why they cannot be read (None then): they must fail closed, never be dropped, as a person
    whose wrong codes are forgotten gets fresh tries. No ``stepUp`` field: none kept."""
    if not isinstance(raw, dict):
        return None, ("the state is not a JSON object" if raw is not None
                      else "the state is not JSON")
    if "stepUp" not in raw:
        return {}, ""
    entries = raw["stepUp"]
    if not isinstance(entries, dict):
        return None, "stepUp is not a JSON object"
    out: dict[str, dict[str, int]] = {}
    bad: list[str] = []
    for user, entry in entries.items():
        kind, value = (next(iter(entry.items())) if isinstance(entry, dict) and len(entry) == 1
                       else ("", None))
        if not isinstance(value, int) or isinstance(value, bool):
            bad.append(str(user)[:64])
        elif kind == "failures" and 0 < value < STEP_UP_MAX_FAILURES:
            out[str(user)] = {"failures": value}
        elif kind == "lockedUntil":
            out[str(user)] = {"lockedUntil": value}
        else:  # a count below 1 or of a lockout (5 and more is written as one), another key
            bad.append(str(user)[:64])
    if bad:
        return None, (f"stepUp.{bad[0]}" + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
                      + f": not {{\"failures\": 1 to {STEP_UP_MAX_FAILURES - 1}}} nor "
                      "{\"lockedUntil\": <epoch seconds>}")
    return out, ""


def _channel_entry(where: str, channel: str, mine: dict[str, Any], problems: list[str]
                   ) -> dict[str, Any]:
    out = dict(mine)
    ref = mine.get("ref")
    fields = _REF_FIELDS.get(channel, {})
    if "ref" in mine and not (isinstance(ref, dict)
                              and all(_is(ref.get(k), t) for k, t in fields.items())):
        problems.append(f"{where}.ref: not a {channel} message reference: its card is posted "
                        "again")
        out.pop("ref", None)
        out.pop("hash", None)
    if "hash" in out and not isinstance(out["hash"], str):
        problems.append(f"{where}.hash: not a string: its card is updated")
        del out["hash"]
    sent = mine.get("sent")
    if "sent" in mine and not (isinstance(sent, list) and all(isinstance(n, str)
                                                              for n in sent)):
        problems.append(f"{where}.sent: not a list of strings: its notices may be sent again")
        out["sent"] = [n for n in sent if isinstance(n, str)] if isinstance(sent, list) else []
    refused = mine.get("refused")
    if "refused" in mine and not (isinstance(refused, dict)
                                  and isinstance(refused.get("hash"), str)):
        problems.append(f"{where}.refused: not a refusal: the card is tried again")
        del out["refused"]
    return out


#: Verbs that name a request (a grant for ``status``) as their first argument.
_NAMED = ("approve", "reject", "describe", "status", "exec")


def words(text: str) -> tuple[str, str]:
    """The first word of ``text`` and the rest, as chat users type them: surrounding
    whitespace, and the run of whitespace (spaces, tabs, no-break spaces, newlines) after the
    first word, do not count; the rest is otherwise kept exactly as typed."""
    parts = text.strip().split(None, 1)
    return (parts[0] if parts else "", parts[1] if len(parts) > 1 else "")


def command_args(verb: str, rest: str, usage: str) -> dict[str, Any]:
    """The keyword arguments of ``act`` for ``verb`` with the text ``rest`` after it (a
    Telegram ``/verb`` or a Slack slash command's text after its verb); ``usage`` starts the
    usage message (``/`` or ``/wingman ``). Refusal (``Usage``) when a name is missing.

    The command of ``exec <request> <command>`` is everything after the request's name and the
    whitespace that follows it, without the surrounding whitespace and otherwise exactly as
    typed: it must be one of the request's commands byte for byte, or the only one that is it
    with ASCII spaces before or after (``ChatService._command_of``)."""
    name, tail = words(rest)
    if verb in _NAMED and not name:
        what = "grant" if verb == "status" else "request"
        extra = {"reject": " <reason>", "exec": " <command>"}.get(verb, "")
        raise refuse("Usage", f"usage: {usage}{verb} <{what}>{extra}")
    if verb in ("approve", "reject"):
        return {"name": name, "reason": tail}
    if verb == "exec":
        return {"name": name, "command": tail}
    if verb in ("describe", "status"):
        return {"name": name}
    if verb == "confirm":
        return {"code": rest.strip()}
    return {}


def _redacted(refusal: Refusal) -> Refusal:
    """``refusal`` with the token-shaped text its message quotes (a request name typed as a
    JWT, say) redacted, so that it is neither echoed back nor stored, and the ChatRefused
    record, which the audit trail would refuse with the token in it, is written."""
    message = redact_tokens(refusal.message)
    return refusal if message == refusal.message else Refusal(message, reason=refusal.reason)


def _refusal_reply(refusal: Refusal) -> Reply:
    return Reply((T(f"Refused ({refusal.reason}): "), C(refusal.message)), ok=False,
                 reason=refusal.reason)




def _check_reason(reason: str) -> None:
    """Refuse a decision's reason the API server would refuse in ``spec.decisions``, saying
    what is wrong, before anything is audited as requested or held for a step-up code: the
    client's own check (``check_reason``: longer than the CRD holds, never cut short and
    recorded as a reason the approver did not give; or holding a character it refuses; or
    holding a token-shaped text, a JWT pasted in, which the audit trail never stores, so the
    record written before the decision could not be: ``TokenInReason``, never quoted)."""
    try:
        check_reason(reason)
    except Invalid as exc:
        if exc.reason == "TooLong":
            raise refuse("ReasonTooLong", exc.message) from None
        if exc.reason == "LooksLikeToken":
            raise refuse("TokenInReason", "the reason holds what looks like a token (a JWT, "
                         "eyJ<seg>.<seg>., or the base64 of one), which Wingman never "
                         "records: nothing was decided; remove it and decide again") from None
        raise refuse("ForbiddenCharacter", exc.message) from None


def _button_key(ch: Channel) -> str:
    """What names the key ``ch`` signs its buttons with (``ButtonSigner.key_id``); "" for a
    channel without buttons (the webhook)."""
    return str(getattr(ch, "button_key", "") or "")


def _keep_key(mine: dict[str, Any], ch: Channel) -> None:
    """Record in a channel's entry which key signed the buttons of the card just sent."""
    key = _button_key(ch)
    if key:
        mine["key"] = key


def _unreadable(exc: WingmanError | OSError, what: str) -> Refusal:
    """The refusal of an action whose read of the cluster (as the chat ServiceAccount) failed:
    nothing was done; the error is logged (its text names the API server, which the chat is
    not told)."""
    reason = getattr(exc, "reason", type(exc).__name__)
    log.warning("a chat action could not read the cluster; refused",
                extra={"reason": reason, "error": str(exc)[:300]})
    return refuse("ClusterUnavailable", f"Wingman's chat service could not {what} from the "
                  f"API server ({reason}), so nothing was done: try again shortly, or use "
                  "kubectl wingman")


def _subject(namespace: str, name: str, uid: str = "") -> dict[str, Any]:
    return {"kind": "ApprovalRequest", "namespace": namespace, "name": name, "uid": uid}


__all__ = ["C", "CardGone", "Channel", "ChannelError", "ChatService", "MessageRefused", "Reply",
           "Segment", "T", "command_args", "readable_state", "stored_step_up", "words"]
