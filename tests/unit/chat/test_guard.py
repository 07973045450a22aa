"""Chat-side guards: signed buttons, the step-up code, the decision preconditions."""

from __future__ import annotations

import datetime as dt
import time

import pyotp
import pytest

from wingman.chat import render
from wingman.chat.guard import (
    STEP_UP_LOCKOUT_SECONDS,
    STEP_UP_MAX_FAILURES,
    ButtonSigner,
    Refusal,
    ReplayGuard,
    StepUp,
    check_decision,
    check_sent,
)
from wingman.settings import ChatPerson

from .test_render import NOW, request

UID = "0f8fad5b-d9cb-469f-a165-70867728950e"
#: When the step-up's process started, in the tests that are not about its start: long before.
STARTED = 1_800_000_000.0


def test_buttons_verify_only_unchanged_and_only_in_their_environment() -> None:
    prd = ButtonSigner("secret", "telegram", "prd")
    data = prd.sign("approve", UID)
    assert len(data.encode()) <= 64
    button = prd.check(data)
    assert (button.verb, button.uid, button.environment) == ("approve", UID, "prd")
    with pytest.raises(Refusal) as exc:
        prd.check("r" + data[1:])  # approve turned into reject
    assert exc.value.reason == "InvalidButton"
    with pytest.raises(Refusal) as exc:
        prd.check(ButtonSigner("secret", "telegram", "test").sign("approve", UID))
    assert exc.value.reason == "ForeignEnvironment"
    with pytest.raises(Refusal) as exc:
        ButtonSigner("other", "telegram", "prd").check(data)
    assert exc.value.reason == "InvalidButton"
    long_env = ButtonSigner("s", "telegram", "a" * 31)
    assert len(long_env.sign("reject", UID).encode()) <= 64


def test_step_up_accepts_each_current_code_once() -> None:
    secret = pyotp.random_base32()
    now = [1_900_000_000.0]
    step = StepUp({"bob": secret}, clock=lambda: now[0], started=STARTED)
    code = pyotp.TOTP(secret).at(now[0])
    step.verify("bob", code)
    with pytest.raises(Refusal) as exc:
        step.verify("bob", code)
    assert exc.value.reason == "StepUpReplayed"
    with pytest.raises(Refusal) as exc:
        step.verify("bob", "000000" if code != "000000" else "111111")
    assert exc.value.reason == "StepUpFailed"
    with pytest.raises(Refusal) as exc:
        step.verify("carol", code)
    assert exc.value.reason == "StepUpNotEnrolled"
    now[0] += 30
    step.verify("bob", pyotp.TOTP(secret).at(now[0]))


def test_a_code_taken_a_step_early_leaves_the_current_steps_code_its_one_use() -> None:
    """A device 30 s ahead sends the next step's code, taken (the drift allowed): the current
    step's code, sent in the same 30 s (a second decision, from a device whose clock is
    right), is still taken once, not refused as used nor counted as wrong; each code used
    again is refused as replayed, also once the steps have moved on."""
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # fixed: the codes of these steps all differ
    totp = pyotp.TOTP(secret)
    now = [1_900_000_005.0]
    step = StepUp({"bob": secret}, clock=lambda: now[0], started=STARTED)
    early, current = totp.at(now[0] + 30), totp.at(now[0])
    assert len({early, current, totp.at(now[0] + 60)}) == 3
    step.verify("bob", early)
    step.verify("bob", current)
    assert step.stored() == {}
    for used in (early, current):
        with pytest.raises(Refusal) as exc:
            step.verify("bob", used)
        assert exc.value.reason == "StepUpReplayed"
    now[0] += 30  # the early code's own step: both codes are still within the drift
    for used in (early, current):
        with pytest.raises(Refusal) as exc:
            step.verify("bob", used)
        assert exc.value.reason == "StepUpReplayed"
    step.verify("bob", totp.at(now[0] + 30))

def test_after_a_restart_a_code_the_process_before_could_have_accepted_is_refused() -> None:
    """Used codes are memory: bob's code, accepted (and shown in the chat) just before a
    restart, is refused by the restarted process, which cannot know it was used; so is every
    code a process before the start could have accepted (the next step's too: one step of
    drift), with the time from which the authenticator shows one that is taken."""
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    now = [STARTED]
    before = StepUp({"bob": secret}, clock=lambda: now[0])  # started long ago
    now[0] = 1_900_000_010.0  # 20 s into a 30 s step
    used = totp.at(now[0])
    before.verify("bob", used)
    now[0] += 5  # the restart: a fresh guard, which started now
    after = StepUp({"bob": secret}, clock=lambda: now[0])
    for code in (used, totp.at(now[0] + 30)):  # the used one; the next (drift) one
        with pytest.raises(Refusal) as exc:
            after.verify("bob", code)
        assert exc.value.reason == "StepUpBeforeStart"
        assert "restarted at" in exc.value.message and "wait for the code" in exc.value.message
    # the first step no earlier process could accept begins a step after the start's next
    first = (int(now[0]) // 30 + 2) * 30
    assert dt.datetime.fromtimestamp(first, dt.UTC).strftime("%H:%M:%S UTC on") in \
        exc.value.message
    # refusals of right codes are no guesses: they do not lock bob out
    for _ in range(STEP_UP_MAX_FAILURES):
        with pytest.raises(Refusal) as exc:
            after.verify("bob", used)
        assert exc.value.reason == "StepUpBeforeStart"
    now[0] = first - 30  # one step early, the device ahead: taken (drift), then only once
    fresh = totp.at(first)
    after.verify("bob", fresh)
    with pytest.raises(Refusal) as exc:
        after.verify("bob", fresh)
    assert exc.value.reason == "StepUpReplayed"
    now[0] = first + 30
    after.verify("bob", totp.at(now[0]))


def test_a_process_started_on_a_step_boundary_takes_the_step_after_next() -> None:
    # started at the very start of a step: that step's code was accepted (drift) before it
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    start = 1_900_000_020.0  # a multiple of 30
    now = [start]
    step = StepUp({"bob": secret}, clock=lambda: now[0])
    with pytest.raises(Refusal) as exc:
        step.verify("bob", totp.at(start))
    assert exc.value.reason == "StepUpBeforeStart"
    assert dt.datetime.fromtimestamp(start + 30, dt.UTC).strftime("%H:%M:%S UTC on") in \
        exc.value.message
    step.verify("bob", totp.at(start + 30))  # its step begins a step after the start


def _fail_until_locked(step: StepUp, person: str, code: str) -> list[str]:
    """The refusal reasons of as many wrong codes in a row as lock a person out."""
    reasons = []
    for _ in range(STEP_UP_MAX_FAILURES):
        with pytest.raises(Refusal) as exc:
            step.verify(person, code)
        reasons.append(exc.value.reason)
    return reasons


@pytest.mark.parametrize("code", ["\uff11\uff12\uff13\uff14\uff15\uff16",  # fullwidth
                                  "\u00b2\u00b3\u2074\u2075\u2076\u2077",  # superscript
                                  "\u0661\u0662\u0663\u0664\u0665\u0666"])  # Arabic-Indic
def test_step_up_digits_that_are_not_ascii_are_a_wrong_code(code: str) -> None:
    # what a phone keyboard or a paste may send: refused and counted like any wrong code,
    # never an exception that leaves the person without an answer
    secret = pyotp.random_base32()
    step = StepUp({"bob": secret}, clock=lambda: 1_900_000_000.0, started=STARTED)
    assert _fail_until_locked(step, "bob", code) == \
        ["StepUpFailed"] * (STEP_UP_MAX_FAILURES - 1) + ["StepUpLocked"]
    with pytest.raises(Refusal) as exc:
        StepUp({"bob": secret}).verify("bob", code)
    assert "6 digits (0-9)" in exc.value.message


def test_step_up_locks_out_guessing() -> None:
    """Whoever holds a person's chat session must not be able to guess the code: after a few
    wrong codes in a row even the right one is refused until the lockout ends; another person
    is not affected, and a right code resets the count."""
    secret, other = pyotp.random_base32(), pyotp.random_base32()
    now = [1_900_000_000.0]
    step = StepUp({"bob": secret, "carol": other}, clock=lambda: now[0], started=STARTED)
    right = pyotp.TOTP(secret).at(now[0])
    wrong = "000000" if right != "000000" else "111111"
    assert _fail_until_locked(step, "bob", wrong) == \
        ["StepUpFailed"] * (STEP_UP_MAX_FAILURES - 1) + ["StepUpLocked"]
    with pytest.raises(Refusal) as exc:
        step.verify("bob", right)  # the right code, but locked
    assert exc.value.reason == "StepUpLocked"
    assert "locked" in exc.value.message
    step.verify("carol", pyotp.TOTP(other).at(now[0]))  # only bob is locked
    now[0] += STEP_UP_LOCKOUT_SECONDS - 31
    with pytest.raises(Refusal) as exc:
        step.verify("bob", pyotp.TOTP(secret).at(now[0]))
    assert exc.value.reason == "StepUpLocked"
    now[0] += 31
    step.verify("bob", pyotp.TOTP(secret).at(now[0]))
    # a right code resets the count: the next wrong ones start from zero again
    for _ in range(STEP_UP_MAX_FAILURES - 1):
        with pytest.raises(Refusal) as exc:
            step.verify("bob", "12345")  # not even six digits: still a wrong guess
        assert exc.value.reason == "StepUpFailed"
    now[0] += 30
    step.verify("bob", pyotp.TOTP(secret).at(now[0]))
    for _ in range(STEP_UP_MAX_FAILURES - 1):
        with pytest.raises(Refusal) as exc:
            step.verify("bob", wrong)
        assert exc.value.reason == "StepUpFailed"


def test_decision_preconditions() -> None:
    v = render.view(request(spec_decisions=None), [], NOW)
    bob = ChatPerson("bob", telegram_id=1)
    check_decision(v, bob, "approve", NOW)
    with pytest.raises(Refusal) as exc:
        check_decision(v, ChatPerson("<@U123> @channel", telegram_id=2), "approve", NOW)
    assert exc.value.reason == "OwnRequest"
    decided = request()
    decided["spec"]["decisions"] = [{"verdict": "Approve", "by": "bob"}]
    with pytest.raises(Refusal) as exc:
        check_decision(render.view(decided, [], NOW), bob, "approve", NOW)
    assert exc.value.reason == "AlreadyDecided"
    late = render.view(request(), [], NOW + dt.timedelta(hours=3))
    with pytest.raises(Refusal) as exc:
        check_decision(late, bob, "approve", NOW)
    assert exc.value.reason == "NotDecidable"


def test_a_message_sent_before_its_request_was_created_is_stale() -> None:
    """Created at 11:00:00 by the API server's clock: a message the chat service dates more
    than five seconds earlier was typed for an earlier request of that name."""
    v = render.view(request(), [], NOW)
    at = dt.datetime(2030, 1, 1, 11, 0, tzinfo=dt.UTC)
    for fine in (None, at, at - dt.timedelta(seconds=5), at + dt.timedelta(hours=1),
                 dt.datetime(2030, 1, 1, 10, 59, 56)):  # without a zone: UTC
        check_sent(v, fine, "/approve req-1")
    for stale in (at - dt.timedelta(seconds=6), at - dt.timedelta(days=1),
                  dt.datetime(2030, 1, 1, 10, 59, 54),
                  dt.datetime(2030, 1, 1, 12, 59, 54, tzinfo=dt.timezone(dt.timedelta(hours=2)))):
        with pytest.raises(Refusal) as exc:
            check_sent(v, stale, "/approve req-1")
        assert exc.value.reason == "StaleMessage"
        assert "before this request req-1 existed" in exc.value.message
        assert exc.value.message.endswith("send the command again: /approve req-1")
    unknown = request()
    unknown["metadata"]["creationTimestamp"] = "not a time"
    with pytest.raises(Refusal) as exc:  # cannot tell: fail closed
        check_sent(render.view(unknown, [], NOW), at, "/approve req-1")
    assert exc.value.reason == "StaleMessage"
    check_sent(render.view(unknown, [], NOW), None, "/approve req-1")  # a button: bound by UID


def test_replay_guard() -> None:
    guard = ReplayGuard()
    assert not guard.seen("a") and guard.seen("a") and not guard.seen("b")


def test_replay_guard_under_a_flood_takes_linear_time_and_refuses_every_replay() -> None:
    """Beyond 10,000 keys seen within the window (signed Slack requests, Telegram callbacks,
    say, 30,000 in ten minutes), every check copied the whole memory: a flood's checks took
    time growing with the square of its size (minutes), holding up the event loop. Each check
    now costs about the same, and every replay inside the window is still refused."""
    guard = ReplayGuard(ttl=600)
    began = time.monotonic()
    assert not any(guard.seen(f"sig:{i}") for i in range(30_000))
    took = time.monotonic() - began
    assert took < 3.0, f"30,000 checks took {took:.1f} s"
    assert all(guard.seen(f"sig:{i}") for i in (0, 1, 9_999, 10_000, 29_999))


def test_replay_guard_forgets_only_what_has_left_the_window() -> None:
    """Each check forgets the keys seen longer ago than the window (the memory holds what a
    replay could still be refused for, no more), and never one still inside it: a key seen
    again after its window is remembered from then on."""
    now = [1000.0]
    guard = ReplayGuard(ttl=10, clock=lambda: now[0])
    for i in range(20_000):
        assert not guard.seen(f"k{i}")
    assert not guard.seen("again")
    assert len(guard) == 20_001
    now[0] = 1005.0
    assert not guard.seen("late")
    assert guard.seen("k0") and guard.seen("k19999") and guard.seen("again")
    now[0] = 1010.0  # the first 20,001 have left the window; "late" has not
    assert not guard.seen("again")  # its window starts anew
    assert len(guard) == 2
    now[0] = 1014.5
    assert guard.seen("late") and guard.seen("again")
    now[0] = 1015.0  # "late" leaves its window; "again" is inside its second one
    assert not guard.seen("late")
    assert guard.seen("again")
    assert not guard.seen("k0")
    now[0] = 1020.0  # "again" leaves its second window
    assert not guard.seen("again")
    assert len(guard) == 3  # "late" (1015), "k0" (1015), "again" (1020)
