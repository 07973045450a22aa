"""Who may do what from chat, before anything reaches the API server. Pure.

- ``ButtonSigner``: button payloads are ``<verb><environment>.<uid><mac>`` (at most 64 bytes,
  Telegram's limit), the MAC an HMAC-SHA256 keyed per channel and environment. A payload is
  honoured only if it verifies, names this environment and a request that still exists with
  that UID; anything else is refused (``InvalidButton``, ``ForeignEnvironment``).
- ``Refusal``: every refusal has a reason (the metric label and the audit field) and a message
  for the person, saying what to do instead.
- ``check_decision``: the chat-side preconditions (mapped, not the requester, not decided yet,
  the request still decidable and not holding as many decisions as the CRD allows). They only
  give a clear answer early: the API server decides, with the same admission policy as
  ``kubectl wingman approve``, on the impersonated person.
- ``StepUp``: TOTP (pyotp, RFC 6238, 30 s steps, one step of clock drift either side), each
  code accepted once per person; a decision waiting for its code expires after the window.
  Which codes were used is memory, so a restarted process (``started``) accepts no code that
  the one before it could have accepted: only codes of time steps that no process accepts
  before ``started`` (a step's code is accepted from one step before it begins, the drift),
  refusing the others as ``StepUpBeforeStart`` with the time from which the authenticator
  shows one it takes. That is at most about a minute after a start, and costs no write.
  Wrong codes are throttled (RFC 6238 section 5.2): after ``STEP_UP_MAX_FAILURES`` in a row a
  person's codes are refused (``StepUpLocked``, even the right one) for
  ``STEP_UP_LOCKOUT_SECONDS``, so whoever holds a person's chat session cannot guess the six
  digits by trying. The wrong codes in a row and the lockouts outlive a restart: ``stored()``
  is what the service keeps in its state ConfigMap (``changed`` says when it must be written:
  at the ``begin`` and the ``end`` of each check, and after a wrong code or a lockout). Each
  code is written ahead as wrong before it is checked (``begin``, then ``end`` once the
  outcome is known), so
  a process that stops between the check and the write has handed out no fresh try: the
  count fails closed. ``restore()`` reads it back
  at start (a lockout that has ended is dropped, one further ahead than a lockout lasts is
  cut to a whole lockout from now). A ``StepUp`` made with ``restored=False`` refuses every
  code (``StepUpUnavailable``) until ``restore()``, and so does one whose kept state could not
  be read (``broken`` says why and what to fix): a process that cannot read its state does not
  hand out fresh tries.
- ``ReplayGuard``: remembers what was already handled (Telegram callback ids, Slack signatures)
  for longer than the channels' replay windows. Memory only: what Telegram delivers again to a
  restarted process (a batch left unconfirmed) changes nothing twice, as a decision is made
  once per approver and a grant once per command (docs/chat.md).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pyotp

from wingman.chat.render import RequestView
from wingman.errors import WingmanError
from wingman.model import limits
from wingman.model.approvals import parse_time
from wingman.settings import ChatPerson

VERBS = {"a": "approve", "r": "reject"}
#: Wrong step-up codes in a row that lock a person's step-up for ``STEP_UP_LOCKOUT_SECONDS``.
STEP_UP_MAX_FAILURES = 5
STEP_UP_LOCKOUT_SECONDS = 300
_MAC_CHARS = 8  # 6 bytes, base64url
_UID_CHARS = 22  # 16 bytes, base64url


class Refusal(WingmanError):
    """A chat action that is refused before (or by) the API server; reason is the label."""

    reason = "Refused"


def refuse(reason: str, message: str) -> Refusal:
    return Refusal(message, reason=reason)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Button:
    verb: str  # approve | reject
    environment: str
    uid: str


class ButtonSigner:
    """Signs and checks button payloads for one channel of one environment."""

    def __init__(self, secret: str, channel: str, environment: str) -> None:
        self._key = hashlib.sha256(
            f"wingman-chat-button\0{channel}\0{environment}\0{secret}".encode()).digest()
        self.environment = environment
        #: Names the key (a MAC of a constant: it says nothing of the key or the secret), so
        #: that the buttons a rotated secret no longer verifies are signed anew.
        self.key_id = _b64(hmac.new(self._key, b"key-id", hashlib.sha256).digest()[:9])

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:6])

    def sign(self, verb: str, uid: str) -> str:
        code = next(k for k, v in VERBS.items() if v == verb)
        raw = uid.replace("-", "")
        body = f"{code}{self.environment}.{_b64(bytes.fromhex(raw))}"
        return body + self._mac(body)

    def check(self, data: str) -> Button:
        """The button, or Refusal(InvalidButton | ForeignEnvironment)."""
        invalid = refuse("InvalidButton", "this button is not one Wingman posted (or it was "
                         "changed); use the buttons of the current message")
        # ASCII only, as signed: compare_digest refuses (TypeError) to compare anything else
        if (not isinstance(data, str) or not data.isascii()
                or len(data) < 2 + _UID_CHARS + _MAC_CHARS + 1):
            raise invalid
        code, body_end = data[0], len(data) - _MAC_CHARS
        env = data[1: body_end - _UID_CHARS - 1]
        if code not in VERBS or data[body_end - _UID_CHARS - 1] != ".":
            raise invalid
        if env != self.environment:
            raise refuse("ForeignEnvironment", f"this button belongs to environment {env!r}, "
                         f"not {self.environment!r}: decide it where it was posted")
        if not hmac.compare_digest(self._mac(data[:body_end]), data[body_end:]):
            raise invalid
        try:
            raw = _unb64(data[body_end - _UID_CHARS: body_end]).hex()
        except (ValueError, TypeError):
            raise invalid from None
        uid = f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
        return Button(VERBS[code], env, uid)


def check_decision(view: RequestView, person: ChatPerson, verb: str, now: dt.datetime) -> None:
    """Refusal unless ``person`` could make this decision now (the API server re-checks)."""
    if person.user == view.requester:
        raise refuse("OwnRequest", f"{view.name} is your own request: someone else must decide "
                     "it")
    if any(d.by == person.user for d in view.decisions):
        raise refuse("AlreadyDecided", f"you ({person.user}) already decided {view.name}; each "
                     "approver decides once")
    if verb == "approve" and not view.live:
        raise refuse("NotDecidable", f"{view.name} can no longer be approved: {view.state} "
                     f"({view.state_reason})")
    if verb == "reject" and view.state not in ("Open", "Approved", "AutoApproved", "Reviewing"):
        raise refuse("NotDecidable", f"{view.name} can no longer be rejected: {view.state} "
                     f"({view.state_reason})")
    if len(view.decisions) >= limits.DECISIONS:  # spec.decisions' maxItems: the CRD's bound
        raise refuse("TooManyDecisions", f"{view.name} holds {limits.DECISIONS} decisions, as "
                     "many as a request holds: no further decision can be recorded on it (nor "
                     "with kubectl wingman); a new request can be decided anew")


#: How far the chat service's clock (when a message was sent) and the API server's (when a
#: request was created) may differ before a message counts as sent before its request existed.
CLOCK_ALLOWANCE = dt.timedelta(seconds=5)


def check_sent(view: RequestView, sent_at: dt.datetime | None, command: str) -> None:
    """Refusal (``StaleMessage``) when a command naming a request by its name was sent (as the
    chat service says: ``sent_at``) before that request was created, by more than
    ``CLOCK_ALLOWANCE``: it was typed for an earlier request of that name (deleted since, and
    the name taken again), whose approver never saw this one. Telegram delivers a message again
    when the bot restarted before confirming it. ``command`` is how to send it again. Nothing
    to check when the channel does not say when it was sent (None); a request whose creation
    time cannot be read is refused (fail closed)."""
    if sent_at is None:
        return
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=dt.UTC)
    created = parse_time(view.created)
    if created is None:
        raise refuse("StaleMessage", f"the creation time of {view.name} cannot be read, so "
                     "Wingman cannot tell whether your message was meant for it; nothing was "
                     "done: use kubectl wingman")
    if sent_at < created - CLOCK_ALLOWANCE:
        raise refuse("StaleMessage", f"your message was sent at "
                     f"{sent_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, before this "
                     f"request {view.name} existed (created "
                     f"{created.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC), so it was meant for "
                     "an earlier request of that name; nothing was done. To act on this one, "
                     f"send the command again: {command}")


@dataclass
class PendingStepUp:
    verb: str
    request: str
    uid: str
    reason: str
    deadline: float


@dataclass
class StepUp:
    """TOTP step-up: codes from each person's enrolled authenticator, each accepted once."""

    secrets: Mapping[str, str]  # Kubernetes user -> base32 TOTP secret
    window_seconds: int = 120
    clock: Callable[[], float] | None = None
    #: When this process started (epoch seconds; the clock's now by default): codes another
    #: process could have accepted before then are refused, as their use is not remembered.
    started: float | None = None
    #: The steps whose codes each user has used, of those still within the drift (a code is
    #: taken from one step before its own to one after): each step's code is taken once.
    _used_steps: dict[str, set[int]] = field(default_factory=dict)
    _pending: dict[tuple[str, str], PendingStepUp] = field(default_factory=dict)
    #: False until ``restore()`` has read the wrong codes and lockouts kept before a restart:
    #: until then every code is refused (``StepUpUnavailable``).
    restored: bool = True
    #: True when the wrong codes or lockouts changed since ``stored()`` was last saved.
    changed: bool = False
    #: Why the wrong codes and lockouts kept in the state ConfigMap cannot be read (its
    #: ``stepUp`` of the wrong shape), what to fix: while set, every code is refused
    #: (``StepUpUnavailable``), as they are unknown.
    broken: str = ""
    _failures: dict[str, int] = field(default_factory=dict)  # wrong codes in a row, by user
    _locked_until: dict[str, float] = field(default_factory=dict)
    #: Users whose code is being checked (``begin`` to ``end``): ``stored()`` counts that code
    #: as wrong, so that it is written ahead of the check and a process that stops before the
    #: outcome is written has not handed out a fresh try.
    _checking: set[str] = field(default_factory=set)
    #: Check no code that was not written ahead (``begin``): set by the chat service, which
    #: writes every code ahead; a code whose lockout ended after ``counts`` said it would not
    #: be checked (while the state was being written) is refused (``StepUpUnavailable``).
    write_ahead: bool = False

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self._now()

    def _now(self) -> float:
        return time.time() if self.clock is None else self.clock()

    def _before_start(self, totp: pyotp.TOTP, step: int) -> Refusal | None:
        """StepUpBeforeStart if a process before this one could have accepted ``step``'s code:
        it is accepted from one step before the step begins (the drift allowed), and a
        process stopped before ``started``."""
        started = float(self.started or 0.0)
        if (step - 1) * totp.interval >= started:
            return None
        first = (math.ceil(started / totp.interval) + 1) * totp.interval  # the first such step
        at = dt.datetime.fromtimestamp(first, dt.UTC).strftime("%H:%M:%S")
        since = dt.datetime.fromtimestamp(started, dt.UTC).strftime("%H:%M:%S")
        return refuse("StepUpBeforeStart", f"Wingman's chat service restarted at {since} UTC "
                      "and cannot know whether one-time codes shown before then were used "
                      f"already: wait for the code your authenticator shows from {at} UTC on "
                      "and send that one")

    def verify(self, user: str, code: str) -> None:
        """Refusal(StepUpFailed) unless ``code`` is ``user``'s current, unused TOTP code;
        Refusal(StepUpLocked) while ``user`` is locked out after too many wrong codes;
        Refusal(StepUpBeforeStart) for a right code another process could have accepted."""
        secret = self.secrets.get(user)
        if not secret:
            raise refuse("StepUpNotEnrolled", f"{user} has no enrolled authenticator: ask an "
                         "administrator to add a TOTP secret for you to the chat Secret")
        if not self.restored:
            raise refuse("StepUpUnavailable", "Wingman's chat service has not yet read which "
                         "one-time codes were wrong before it started (its state ConfigMap), so "
                         "it takes none: nothing was decided; try again shortly, or decide with "
                         "kubectl wingman")
        if self.broken:
            raise refuse("StepUpUnavailable", "Wingman's chat service cannot read the wrong "
                         f"one-time codes and lockouts kept in its state ConfigMap ({self.broken}),"
                         " so it takes no code: nothing was decided; decide with kubectl "
                         "wingman, and ask an administrator to correct or remove the stepUp "
                         "field of that ConfigMap (see the chat component's log)")
        now = self._now()
        locked_until = self._locked_until.get(user, 0.0)
        if now < locked_until:
            raise refuse("StepUpLocked", f"too many wrong one-time codes for {user}: step-up is "
                         f"locked for {int(locked_until - now) + 1} more seconds; then use the "
                         "current code (or decide with kubectl wingman)")
        if self.write_ahead and user not in self._checking:
            raise refuse("StepUpUnavailable", "Wingman's chat service took your code while "
                         f"{user}'s step-up lockout was ending, before it wrote that a code is "
                         "being tried: it was not checked and nothing was decided; send the "
                         "current code again")
        code = code.strip().replace(" ", "")
        if not (code.isascii() and code.isdigit()) or len(code) != 6:
            raise self._failed(user, now, refuse(
                "StepUpFailed", "the one-time code must be the 6 digits (0-9) your authenticator "
                "shows"))
        totp = pyotp.TOTP(secret)
        current = totp.timecode(dt.datetime.fromtimestamp(now, dt.UTC))
        # which steps were used is kept per step, not as the latest one: a code taken a step
        # early (a device's clock 30 s ahead) must not make the current step's, unused, count
        # as used; the steps that have left the drift are forgotten (no code of theirs is taken)
        used = self._used_steps.setdefault(user, set())
        used.intersection_update(range(current - 1, current + 2))
        early: Refusal | None = None
        replayed = False
        for drift in (0, -1, 1):
            at = now + drift * totp.interval
            step = totp.timecode(dt.datetime.fromtimestamp(at, dt.UTC))
            if hmac.compare_digest(totp.at(at), code):
                too_early = self._before_start(totp, step)
                if too_early is not None:
                    early = early or too_early
                    continue
                if step in used:
                    replayed = True
                    continue
                used.add(step)
                if self._failures.pop(user, None) is not None:
                    self.changed = True
                return
        if replayed:
            raise self._failed(user, now, refuse(
                "StepUpReplayed", "that one-time code was used already: wait for the next one"))
        if early is not None:  # a right code, not a guess: not counted as a failure
            raise early
        raise self._failed(user, now, refuse(
            "StepUpFailed", "the one-time code is wrong or too old: try the current one (is "
            "your device's clock right?)"))

    def counts(self, user: str) -> bool:
        """Whether ``verify`` would check ``user``'s code now (and so might count it as
        wrong): enrolled, the kept wrong codes read, not locked out."""
        return (bool(self.secrets.get(user)) and self.restored and not self.broken
                and self._now() >= self._locked_until.get(user, 0.0))

    def begin(self, user: str) -> None:
        """A code of ``user``'s is about to be checked: until ``end``, ``stored()`` counts it
        as a wrong code (the one that reaches ``STEP_UP_MAX_FAILURES`` as a lockout from now),
        to be written before the check (write-ahead)."""
        self._checking.add(user)
        self.changed = True

    def end(self, user: str) -> None:
        """The check ``begin`` announced is over (``verify`` counted it, or not): ``stored()``
        is what memory holds again, to be written (``changed``) to confirm the outcome."""
        if user in self._checking:
            self._checking.discard(user)
            self.changed = True

    def _failed(self, user: str, now: float, refusal: Refusal) -> Refusal:
        """Count a wrong code; the ``STEP_UP_MAX_FAILURES``-th in a row locks ``user`` out."""
        failures = self._failures.get(user, 0) + 1
        self.changed = True
        if failures >= STEP_UP_MAX_FAILURES:
            self._failures.pop(user, None)
            self._locked_until[user] = now + STEP_UP_LOCKOUT_SECONDS
            return refuse("StepUpLocked", f"wrong one-time code, the {STEP_UP_MAX_FAILURES}th in "
                          f"a row: step-up for {user} is locked for {STEP_UP_LOCKOUT_SECONDS} "
                          "seconds; then use the current code (or decide with kubectl "
                          "wingman)")
        self._failures[user] = failures
        return refusal

    def stored(self) -> dict[str, dict[str, int]]:
        """The wrong codes in a row and the running lockouts, by user, as kept in the state
        ConfigMap: ``{<user>: {"failures": n}}`` or ``{<user>: {"lockedUntil": <epoch s>}}``
        (rounded up: a lockout is never shortened). Lockouts that have ended are left out. A
        code being checked (``begin``) is counted as wrong: the count written ahead."""
        now = self._now()
        out: dict[str, dict[str, int]] = {u: {"failures": n} for u, n in self._failures.items()}
        for user, until in self._locked_until.items():
            if until > now:
                out[user] = {"lockedUntil": math.ceil(until)}
        for user in self._checking:
            if "lockedUntil" in out.get(user, {}):
                continue
            failures = self._failures.get(user, 0) + 1
            out[user] = ({"failures": failures} if failures < STEP_UP_MAX_FAILURES
                         else {"lockedUntil": math.ceil(now + STEP_UP_LOCKOUT_SECONDS)})
        return out

    def restore(self, stored: Mapping[str, Mapping[str, int]]) -> None:
        """Take the wrong codes and lockouts kept before a restart (``stored()``'s shape, as
        checked by the service); a lockout that has ended is dropped, and one that would end
        later than a lockout started now (written by hand, or the clock set back) ends a whole
        lockout from now: never sooner, never unlocked. Codes are taken from now on."""
        now = self._now()
        for user, entry in stored.items():
            until = entry.get("lockedUntil")
            failures = entry.get("failures")
            if until is not None and until > now:
                ends = min(float(until), now + STEP_UP_LOCKOUT_SECONDS)
                self._locked_until[user] = max(ends, self._locked_until.get(user, 0.0))
            elif failures is not None and 0 < failures < STEP_UP_MAX_FAILURES:
                self._failures[user] = max(failures, self._failures.get(user, 0))
        self.restored = True

    def hold(self, channel_user: str, pending: PendingStepUp) -> None:
        self._pending[(channel_user, "")] = pending

    def take(self, channel_user: str) -> PendingStepUp:
        pending = self._pending.pop((channel_user, ""), None)
        if pending is None or pending.deadline < self._now():
            raise refuse("StepUpExpired", "no decision is waiting for a code (or it waited too "
                         "long): start the decision again")
        return pending

    def deadline(self) -> float:
        return self._now() + self.window_seconds


class ReplayGuard:
    """Keys seen within ``ttl`` seconds; ``seen(key)`` is True the second time.

    The keys are kept in the order they were seen, which is the order their windows end
    (``clock`` only goes forward, ``ttl`` is one for all): each check forgets, from the front,
    those whose window has ended, so it costs about the same however many are kept, and the
    memory holds only keys a replay could still be refused for."""

    def __init__(self, ttl: float = 900.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: str) -> bool:
        now = self._clock()
        while self._seen:
            first = next(iter(self._seen.values()))
            if now - first < self.ttl:
                break
            self._seen.popitem(last=False)
        if key in self._seen:
            return True
        self._seen[key] = now
        return False


__all__ = ["STEP_UP_LOCKOUT_SECONDS", "STEP_UP_MAX_FAILURES", "VERBS", "Button", "ButtonSigner",
           "PendingStepUp", "Refusal", "ReplayGuard", "StepUp", "check_decision", "refuse"]
