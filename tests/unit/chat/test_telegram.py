"""The Telegram channel with python-telegram-bot against a local Bot API server that checks
messages as Telegram does (HTML that parses, at most 4096 characters): every card and reply
fits, one request Telegram refuses never holds up the others, and unidentified senders cannot
flood the audit trail."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pyotp
import pytest

from support.fake_chat import FakeTelegram, serving, telegram_html_error
from wingman.chat import render
from wingman.chat.guard import StepUp
from wingman.chat.render import Notice
from wingman.chat.run import RedactSecrets, health
from wingman.chat.service import C, ChatService, Reply, T
from wingman.chat.telegram import (
    _CHAT_WIDE,
    MAX_PENDING_PER_SENDER,
    MAX_TEXT,
    TelegramChannel,
    _shown_length,
    segments_html,
)
from wingman.settings import ChatConfig, ChatPerson, TelegramConfig

from .world import (
    BOB,
    EXEC_AS_TYPED,
    EXEC_NOT_AS_TYPED,
    NOW,
    TYPED_COMMAND,
    VERB_AS_TYPED,
    Deciding,
    Granting,
    audited,
    hostile,
    metric,
    oversized,
    request,
    service,
)

TOKEN = "7000001:AAH-unit-test-token"
CHAT = -1001


def run(tmp: Path, *objs: dict[str, Any],
        body: Callable[[FakeTelegram, TelegramChannel, ChatService], Awaitable[None]],
        clock: Any = None) -> None:
    async def main(fake: FakeTelegram) -> None:
        svc = service(tmp, *objs, clock=clock)
        channel = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url), TOKEN,
                                  "prd", svc)
        svc.channels = [channel]
        try:
            await body(fake, channel, svc)
        finally:
            await channel.close()

    with serving(FakeTelegram(TOKEN)) as fake:
        asyncio.run(main(fake))


def cards(fake: FakeTelegram) -> dict[str, dict[str, Any]]:
    """The messages in the approvers' chat by request name."""
    out = {}
    for m in fake.sent_to(CHAT):
        first = m["plain"].split("\n")[0]
        out[first.rsplit(" ", 1)[-1]] = m
    return out


def sends(fake: FakeTelegram, name: str) -> int:
    return sum(1 for method, p in fake.requests
               if method in ("sendMessage", "editMessageText") and name in str(p.get("text")))


def test_a_card_too_long_even_abridged_goes_out_short_with_its_buttons(tmp_path: Path) -> None:
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await svc.sync()
        shown = cards(fake)
        assert set(shown) == {"huge", "later"}  # the later request is not held up
        short = shown["huge"]["plain"]
        assert "too long for a chat message" in short
        assert "kubectl wingman describe huge" in short and "Commands: 10" in short
        assert len(fake.buttons(CHAT, shown["huge"]["id"])) == 2  # still decidable
        assert "kubectl rollout restart deployment/web" in shown["later"]["plain"]
        assert metric(svc, "wingman_chat_backlog", channel="telegram") == 0

    run(tmp_path, oversized("huge", 1), request("later", 2), body=body)


def test_a_card_of_more_entities_than_telegram_formats_goes_out_short(tmp_path: Path) -> None:
    """Telegram formats the first 100 entities of a message and shows the text of the others
    plain: a card of many short fields (ten commands, the sources, a dozen votes, ten
    decisions, each its own code) would show what others wrote after the 100th as if Wingman
    wrote it. It goes out as a card of at most 100 entities, with its buttons."""
    many = request("many", 1, commands=[f"kubectl get pods -n ns{i}" for i in range(10)],
                   source={"reference": "T-1", "agent": "a", "model": "m", "excerpt": "e",
                           "inputTrust": "Untrusted"},
                   decisions=[{"verdict": "Approve", "by": f"u{i}", "reason": "ok"}
                              for i in range(10)])
    many["status"]["consensus"] = {"risk": "low", "outcome": "Approve", "votes": [
        {"voter": f"v{i}", "verdict": "Approve", "risk": "low", "rationale": "fine",
         "error": "late"} for i in range(12)]}

    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await svc.sync()
        (card,) = fake.sent_to(CHAT)
        text = next(str(p["text"]) for m, p in fake.requests if m == "sendMessage")
        tags = len(re.findall(r"<(?:b|code|pre)>", text))
        assert tags + text.count(" /approve ") + text.count(" /reject ") <= 100, tags
        assert _shown_length(text) <= MAX_TEXT
        assert len(fake.buttons(CHAT, card["id"])) == 2

    run(tmp_path, many, body=body)


def test_an_edited_card_that_grew_too_long_becomes_the_short_card(tmp_path: Path) -> None:
    # fits at first; ten approvals with long reasons later it does not, even abridged
    grows = request("grows", 1, instruction="i" * 600,
                    commands=[f"kubectl get pods -n ns{i} " + "x" * 200 for i in range(10)])

    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await svc.sync()
        (card,) = fake.sent_to(CHAT)
        assert "too long" not in card["plain"] and "ns9" in card["plain"]
        svc.cluster.objs[0]["spec"]["decisions"] = [  # type: ignore[attr-defined]
            {"verdict": "Approve", "by": f"approver-{i}-" + "p" * 100, "reason": "r" * 200}
            for i in range(10)]
        await svc.sync()
        (card,) = fake.sent_to(CHAT)
        assert card["edits"] == 1 and "too long for a chat message" in card["plain"]
        assert fake.buttons(CHAT, card["id"])
        assert metric(svc, "wingman_chat_messages_failed_total", channel="telegram") == 0

    run(tmp_path, grows, body=body)


def test_a_card_telegram_refuses_fails_alone_and_waits_for_a_change(tmp_path: Path) -> None:
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        fake.refuse = lambda method, p: ("Bad Request: BUTTON_DATA_INVALID"
                                         if "poison" in str(p.get("text")) else None)
        for _ in range(3):
            await svc.sync()
        assert set(cards(fake)) == {"later"}  # posted at the first sync, not held up
        assert sends(fake, "poison") == 2  # the card, then the short card; not again
        entry = svc.state["requests"][svc.find(name="poison").uid]["telegram"]
        assert entry["refused"]["error"].lower() == ("telegram refused sendmessage: "
                                                     "button_data_invalid")
        assert svc.cluster.saved["requests"][  # type: ignore[attr-defined]
            svc.find(name="poison").uid]["telegram"]["refused"]
        assert metric(svc, "wingman_chat_messages_failed_total", channel="telegram") == 1
        assert metric(svc, "wingman_chat_backlog", channel="telegram") == 0
        # once the request changes, its card is tried again
        fake.refuse = None
        svc.cluster.objs[0]["spec"]["decisions"] = [  # type: ignore[attr-defined]
            {"verdict": "Approve", "by": "carol", "reason": "ok"}]
        await svc.sync()
        assert set(cards(fake)) == {"poison", "later"}
        assert "refused" not in svc.state["requests"][svc.find(name="poison").uid]["telegram"]

    run(tmp_path, request("poison", 1), request("later", 2), body=body)


#: Bad Requests about the chat, its topic or the bot's rights, as Telegram words them
CHAT_WIDE = ["chat not found", "TOPIC_CLOSED", "TOPIC_DELETED", "message thread not found",
             "CHAT_WRITE_FORBIDDEN", "not enough rights to send text messages to the chat",
             "need administrator rights in the channel chat", "have no rights to send a message",
             "group chat was upgraded to a supergroup chat",
             "bot was kicked from the supergroup chat", "CHANNEL_PRIVATE", "PEER_ID_INVALID",
             "CHAT_ADMIN_REQUIRED", "CHAT_RESTRICTED", "USER_IS_BLOCKED",
             "bot is not a member of the channel chat", "CHAT_SEND_PLAIN_FORBIDDEN"]
#: ... and about the message alone
MESSAGE = ["can't parse entities: can't find end tag corresponding to start tag \"code\"",
           "message is too long", "BUTTON_DATA_INVALID", "message text is empty",
           "message can't be edited", "MESSAGE_ID_INVALID", "reply markup is too long",
           "query is too old and response timeout expired or query id is invalid",
           "can't parse inline keyboard button: text buttons are unallowed in the inline "
           "keyboard", "ENTITIES_TOO_LONG", "text must be non-empty"]


def test_bad_requests_about_the_chat_are_told_from_those_about_a_message() -> None:
    # as python-telegram-bot hands them over: without "Bad Request: ", capitalized
    assert [t for t in CHAT_WIDE if not _CHAT_WIDE.search(t.capitalize())] == []
    assert [t for t in MESSAGE if _CHAT_WIDE.search(t.capitalize())] == []


@pytest.mark.parametrize("error", ["chat not found", "TOPIC_CLOSED", "TOPIC_DELETED",
                                   "need administrator rights in the channel chat"])
def test_an_outage_still_backs_the_channel_off(tmp_path: Path, error: str) -> None:
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        fake.refuse = lambda method, p: f"Bad Request: {error}"
        await svc.sync()
        await svc.sync()  # backing off: not even tried
        assert sends(fake, "alpha") == 1 and sends(fake, "bravo") == 0
        assert "refused" not in (svc.state["requests"].get(svc.find(name="alpha").uid) or {}
                                 ).get("telegram", {})
        assert metric(svc, "wingman_chat_backlog", channel="telegram") == 2

    run(tmp_path, request("alpha", 1), request("bravo", 2), body=body)


def test_replies_are_shortened_before_escaping_and_always_parse(tmp_path: Path) -> None:
    out = json.dumps([{"k": "v", "a": "b&c"} for _ in range(400)])
    status = Reply((T("Grant g: Succeeded\nCommand: "), C("kubectl get cm -o json"),
                    T("\nOutput:\n"), C(out[-1500:]), T("\n" + "<&>" * 1500),
                    T("\nNext: x")))
    text = segments_html(status)
    assert telegram_html_error(text) is None and _shown_length(text) <= MAX_TEXT
    assert text.endswith("…")
    labels = json.dumps({chr(65 + j): chr(97 + j) for j in range(24)})
    quoted = [f"kubectl annotate cm c{i} -n shop a='{labels}'" for i in range(10)]
    many = render.view(request("quoted", 1, instruction="\"web\" & 'api'" * 100,
                               commands=quoted), [], NOW)
    long_notice = Notice("grant:g:Failed", "requester", "grant.failed",
                         (("Grant g: Failed. Command: ", False), ("x" * 5000, True)))

    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await channel.say(CHAT, status)
        await channel.say(CHAT, Reply((T("Request quoted"),), view=many))
        await channel.notify(many, long_notice)
        sent = sorted(fake.sent_to(CHAT), key=lambda m: m["id"])
        assert [m["plain"][:9] for m in sent] == ["Grant g: ", "⏳ Wingman", "📣 Grant g"]
        assert "Next: x" not in sent[0]["plain"]  # shortened at the end, visibly
        assert sent[2]["plain"].endswith("…")

    run(tmp_path, body=body)


def test_unmapped_senders_are_audited_once_a_minute_and_counted_always(tmp_path: Path) -> None:
    now = [NOW]

    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        async def dm(user: int, times: int) -> None:
            for _ in range(times):
                fake.say(FakeTelegram.user(user), user, "/pending")
            for update in await channel.bot.get_updates(timeout=0):
                await channel.handle(update)
            await channel.bot.get_updates(offset=update.update_id + 1, timeout=0)

        await dm(999, 5)
        await dm(998, 1)  # another sender has a record of its own
        assert [(d["chatUser"], d.get("suppressed")) for d in audited(svc)] == [
            ("999", None), ("998", None)]
        now[0] += dt.timedelta(seconds=61)
        await dm(999, 2)
        assert [(d["chatUser"], d.get("suppressed")) for d in audited(svc)][2:] == [
            ("999", 4)]
        assert metric(svc, "wingman_chat_refusals_total", channel="telegram",
                      reason="Unmapped") == 8
        # every sender was answered
        assert sum("Unmapped" in m["plain"] for c in (999, 998)
                   for m in fake.sent_to(c)) == 8
        # a mapped person's refusals are each audited
        for _ in range(2):
            fake.say(FakeTelegram.user(111), CHAT, "/describe nothing")
        for update in await channel.bot.get_updates(timeout=0):
            await channel.handle(update)
        assert [d["reason"] for d in audited(svc) if d["as"] == "bob"] == ["NotFound"] * 2

    run(tmp_path, body=body, clock=lambda: now[0])


def test_a_forged_button_with_any_characters_is_refused_and_answered(tmp_path: Path) -> None:
    # callback data is whatever a client sends: non-ASCII where the MAC is must be an
    # InvalidButton like any other forgery, answered, never an exception left unanswered
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await svc.sync()
        (card,) = fake.sent_to(CHAT)
        approve = fake.buttons(CHAT, card["id"])[0]
        forged = [approve[:-1] + "\u00e9", approve[:-8] + "\u00e9" * 8, approve + "\u00e9"]
        ids = [fake.press(FakeTelegram.user(111), CHAT, card["id"], data) for data in forged]
        for update in await channel.bot.get_updates(timeout=0):
            await channel.handle(update)
        for cid in ids:
            assert "InvalidButton" in fake.answers[cid]["text"], fake.answers.get(cid)
        assert [d["reason"] for d in audited(svc)] == ["InvalidButton"] * 3
        assert svc.cluster.objs[0]["spec"].get("decisions") is None  # type: ignore[attr-defined]

    run(tmp_path, request("forged", 1), body=body)


def test_a_button_pressed_while_its_card_is_being_posted_is_taken_as_on_the_card(
        tmp_path: Path) -> None:
    """Telegram shows a message, buttons and all, before the bot has the answer with its id
    (a slow network, a loaded machine): a press then is on the request's one card and is
    handled as such once the post ended, never refused as a stale button."""
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        fake.slow["sendMessage"] = 1.5
        posting = asyncio.create_task(svc.sync())
        await _until(lambda: bool(fake.sent_to(CHAT)))
        (card,) = fake.sent_to(CHAT)
        cid = fake.press(FakeTelegram.user(999), CHAT, card["id"],
                         fake.buttons(CHAT, card["id"])[0])
        updates = await channel.bot.get_updates(timeout=0)
        assert not posting.done(), "the press came after the post ended"
        for update in updates:
            await channel.handle(update)
        await posting
        assert "Unmapped" in fake.answers[cid]["text"], fake.answers[cid]
        assert [d["reason"] for d in audited(svc)] == ["Unmapped"]
        assert [m["id"] for m in fake.sent_to(CHAT)] == [card["id"]]  # one card
        assert svc.card_ref(request("pressed", 1)["metadata"]["uid"], "telegram") == {
            "chat": CHAT, "message": card["id"]}

    run(tmp_path, request("pressed", 1), body=body)


def test_a_press_on_an_old_copy_of_a_card_retires_the_copy(tmp_path: Path) -> None:
    """A post given up on (no answer within 15 s) may have arrived all the same, and the card
    is then posted again: the copy's buttons are refused as stale, and the press makes the
    copy say that it is out of date, without buttons, and where the current card is, so that
    it never again looks like a live decision."""
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await svc.refresh()
        v = svc.find(name="copied")
        await channel.post_card(v)  # the post given up on, arrived all the same
        await svc.sync()  # the card the service knows
        current = svc.card_ref(v.uid, "telegram")
        assert current is not None
        (copy,) = [m for m in fake.sent_to(CHAT) if m["id"] != current["message"]]
        cid = fake.press(FakeTelegram.user(111), CHAT, copy["id"],
                         fake.buttons(CHAT, copy["id"])[0])
        for update in await channel.bot.get_updates(timeout=0):
            await channel.handle(update)
        assert "StaleButton" in fake.answers[cid]["text"]
        retired = fake.messages[(CHAT, copy["id"])]
        assert fake.buttons(CHAT, copy["id"]) == [] and retired["markup"] is None
        assert "Out of date" in retired["plain"] and "<code>copied</code>" in retired["html"]
        assert f'href="https://t.me/c/1/{current["message"]}"' in retired["html"]
        assert len(fake.buttons(CHAT, current["message"])) == 2  # the current card untouched
        assert [d["reason"] for d in audited(svc)] == ["StaleButton"]

    run(tmp_path, request("copied", 1), body=body)


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
def test_presses_on_an_old_copy_whose_edit_is_rate_limited_edit_it_once(
        tmp_path: Path) -> None:
    """Telegram rate-limits the edit that would retire an old copy (429, retry_after): further
    presses on that copy are refused as stale without editing it again, so that they do not
    spend the chat's budget for edits (and prolong the wait) that the current cards need."""
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await svc.refresh()
        v = svc.find(name="copied")
        await channel.post_card(v)  # the post given up on, arrived all the same
        await svc.sync()
        current = svc.card_ref(v.uid, "telegram")
        assert current is not None
        (copy,) = [m for m in fake.sent_to(CHAT) if m["id"] != current["message"]]
        limited = json.dumps({"ok": False, "error_code": 429, "description": "Too Many "
                              "Requests: retry after 30", "parameters": {"retry_after": 30}}
                             ).encode()
        fake.glitch_paths = ("/editMessageText",)
        fake.glitches = [(429, limited)] * 3
        data = fake.buttons(CHAT, copy["id"])[0]
        presses = [fake.press(FakeTelegram.user(111), CHAT, copy["id"], data) for _ in range(3)]
        for update in await channel.bot.get_updates(timeout=0):
            await channel.handle(update)
        assert all("StaleButton" in fake.answers[cid]["text"] for cid in presses)
        assert len(fake.glitches) == 2  # one edit tried, not one per press
        assert fake.buttons(CHAT, copy["id"])[0] == data  # the copy as it was

    run(tmp_path, request("copied", 1), body=body)


def test_a_card_telegram_answers_slowly_is_posted_once(tmp_path: Path) -> None:
    """A card Telegram takes longer than the library's default 5 s to confirm has been posted
    all the same: the channel waits for the answer (as long as Slack's client), where giving up
    would post it again, leaving a second card whose buttons are refused as stale."""
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        fake.slow["sendMessage"] = 6.0
        await svc.sync()
        fake.slow.clear()
        await asyncio.sleep(1.1)  # past a failed delivery's first backoff
        await svc.sync()
        (card,) = fake.sent_to(CHAT)
        assert svc.card_ref(request("slow", 1)["metadata"]["uid"], "telegram") == {
            "chat": CHAT, "message": card["id"]}

    run(tmp_path, request("slow", 1), body=body)


def test_a_button_answer_fits_however_wide_its_characters(tmp_path: Path) -> None:
    # the answer quotes the rejection's reason: 190 emoji are 380 UTF-16 code units, over
    # Telegram's 200, and an answer Telegram refuses leaves the approver with nothing
    rejected = request("wide", 1, decisions=[
        {"verdict": "Reject", "by": "carol", "reason": "\U0001f645" * 300}])
    rejected["status"]["conditions"] = [{"type": "Rejected", "status": "True",
                                         "reason": "RejectedByApprover"}]

    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await svc.sync()
        card = cards(fake)["wide"]
        data = channel.signer.sign("approve", svc.find(name="wide").uid)
        cid = fake.press(FakeTelegram.user(111), CHAT, card["id"], data)
        for update in await channel.bot.get_updates(timeout=0):
            await channel.handle(update)
        answer = fake.answers[cid]["text"]
        assert answer.startswith("Refused (NotDecidable): wide can no longer be approved")
        assert len(answer.encode("utf-16-le")) // 2 <= 200 and answer.endswith("…")

    run(tmp_path, rejected, body=body)


def test_a_rejected_bot_token_is_never_repeated_in_the_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # python-telegram-bot quotes a rejected token in its error: the channel's error (and so
    # the log) must not; it says which Secret key to check instead
    wrong = "7000002:AAH-wrong-unit-test-token"

    async def main(fake: FakeTelegram) -> None:
        svc = service(tmp_path, request("tokened", 1))
        channel = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url), wrong,
                                  "prd", svc)
        svc.channels = [channel]
        try:
            with caplog.at_level(logging.DEBUG):
                await svc.sync()
        finally:
            await channel.close()

    with serving(FakeTelegram(TOKEN)) as fake:
        asyncio.run(main(fake))
    (failed,) = [r for r in caplog.records if r.getMessage().startswith("chat delivery failed")]
    assert "telegram-token" in failed.__dict__["error"], failed.__dict__["error"]
    # the bot token's reason, not the capability token's TokenRejected (WingmanTokenRejected)
    assert failed.__dict__["reason"] == "BotTokenRejected"
    # (httpx logs the URL, token and all, at INFO: the component sets it to WARNING)
    assert not [r for r in caplog.records if r.name.startswith("wingman")
                and "wrong-unit-test-token" in str(r.__dict__)]


def test_exec_takes_the_command_as_typed_whatever_the_spacing_around_it(tmp_path: Path) -> None:
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        cluster = Granting(*svc.cluster.objs)  # type: ignore[attr-defined]
        svc.cluster = cluster
        offset = 0

        async def command(text: str) -> str:
            nonlocal offset
            fake.say(FakeTelegram.user(111), CHAT, text)
            for update in await channel.bot.get_updates(offset=offset, timeout=0):
                offset = update.update_id + 1
                await channel.handle(update)
            return str(fake.requests[-1][1].get("text"))

        for verb in VERB_AS_TYPED:
            for after, expected in EXEC_AS_TYPED:
                cluster.granted.clear()
                answer = await command("  /" + verb + after)
                assert cluster.granted == [("typed", expected)], (verb, after, answer)
        for after in EXEC_NOT_AS_TYPED:
            cluster.granted.clear()
            answer = await command("/exec " + after)
            assert cluster.granted == [], after
            assert "not one of typed&#x27;s commands byte for byte" in answer, (after, answer)

    run(tmp_path, request("typed", 1, commands=[TYPED_COMMAND]), body=body)


async def _until(check: Callable[[], bool], seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)


def _polling_failures(svc: ChatService, kind: str) -> float:
    return metric(svc, "wingman_chat_loop_failures_total", loop="telegram-polling", kind=kind)


# python-telegram-bot itself warns (deprecated: an int) when it builds its RetryAfter
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
def test_polling_outlives_transient_failures_and_delivers_the_next_update(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        fake.glitch_paths = ("/getUpdates",)
        fake.glitches = [
            (502, b"<html><body>502 Bad Gateway</body></html>"),  # a proxy in front
            (0, b""),  # the connection reset
            (500, b'{"ok": false, "error_code": 500, "description": "Internal Server Error"}'),
            (200, b"<html>captive portal</html>"),  # not JSON
            (200, b'{"ok": true}'),  # JSON without a result: the library cannot read it,
            (200, b'{"ok": true}'),  # nor the updates one by one
            (429, b'{"ok": false, "error_code": 429, "description": "Too Many Requests: retry '
                  b'after 1", "parameters": {"retry_after": 1}}'),
        ]
        fake.say(FakeTelegram.user(111), CHAT, "/pending")
        stop = asyncio.Event()
        polling = asyncio.create_task(channel.poll(stop, timeout=1, backoff=0.01))
        await _until(lambda: polling.done() or any(
            "No request awaits" in m["plain"] for m in fake.sent_to(CHAT)))
        running = not polling.done()
        stop.set()
        await asyncio.wait_for(polling, 10)
        assert running, "polling ended"
        assert any("No request awaits" in m["plain"] for m in fake.sent_to(CHAT))
        assert not fake.glitches
        assert _polling_failures(svc, "Unavailable") == 4
        assert _polling_failures(svc, "Unexpected") == 1
        assert _polling_failures(svc, "RateLimited") == 1
        assert _polling_failures(svc, "Unauthorized") == 0

    with caplog.at_level(logging.WARNING, logger="wingman.chat.telegram"):
        run(tmp_path, body=body)
    unexpected = [r for r in caplog.records
                  if r.getMessage().startswith("telegram polling failed unexpectedly")]
    assert [vars(r)["errorType"] for r in unexpected] == ["KeyError"]


def test_a_rejected_bot_token_ends_polling_and_is_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "7000001:AAH-a-token-telegram-does-not-know"

    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        rejected = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url), wrong,
                                   "prd", svc)
        polling = asyncio.create_task(rejected.poll(asyncio.Event(), timeout=1, backoff=0.01),
                                      name="telegram polling")
        try:
            await asyncio.wait_for(asyncio.shield(polling), 10)
        finally:
            polling.cancel()
            await rejected.close()
        # /healthz names the loop and why it ended
        answer = await health([polling])
        assert (answer.status, answer.text) == (
            503, "not running: telegram polling (BotTokenRejected)")
        assert _polling_failures(svc, "Unauthorized") == 1
        assert _polling_failures(svc, "Unavailable") == 0

    with caplog.at_level(logging.INFO):
        run(tmp_path, body=body)
    ended = [r for r in caplog.records if r.getMessage().startswith("telegram polling ends")]
    assert len(ended) == 1 and ended[0].levelname == "ERROR"
    assert "telegram-token" in vars(ended[0])["error"]
    assert not any(wrong in r.getMessage() or wrong in str(vars(r)) for r in caplog.records
                   if r.name.startswith("wingman"))


def test_an_update_the_library_cannot_read_is_skipped_and_the_next_delivered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # python-telegram-bot fails the whole batch on one update of a shape it does not know;
    # asked again, it would fail again, and polling would deliver nothing ever after
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        fake.say(FakeTelegram.user(111), CHAT, "/pending")
        with fake.lock:
            fake.updates.insert(0, {"update_id": 50, "message": "not an object"})
        stop = asyncio.Event()
        polling = asyncio.create_task(channel.poll(stop, timeout=1, backoff=0.01))
        await _until(lambda: polling.done() or any(
            "No request awaits" in m["plain"] for m in fake.sent_to(CHAT)))
        stop.set()
        await asyncio.wait_for(polling, 10)
        assert any("No request awaits" in m["plain"] for m in fake.sent_to(CHAT))
        assert _polling_failures(svc, "UpdateFailed") == 1
        assert _polling_failures(svc, "Unexpected") == 0

    with caplog.at_level(logging.WARNING, logger="wingman.chat.telegram"):
        run(tmp_path, body=body)
    skipped = [r for r in caplog.records
               if r.getMessage() == "telegram update unreadable; skipped"]
    assert [vars(r)["updateId"] for r in skipped] == [50]


def test_an_update_delivered_again_after_a_restart_decides_nothing_twice(tmp_path: Path) -> None:
    """A process that stops while handling a batch of updates leaves it unconfirmed (the next
    getUpdates, with the offset past it, never came), and Telegram delivers it again to the
    next process, whose replay memory is new. Nothing is done twice: a decision is made once
    per approver (the API server's admission, checked first from the request), so the
    redelivered button press and command are refused (AlreadyDecided) and audited as such;
    no state is kept for it."""
    cluster = Deciding(request("again", 1))

    def process() -> ChatService:  # a new process over the same cluster and state
        svc = service(tmp_path)
        svc.cluster = cluster
        return svc

    async def main(fake: FakeTelegram) -> None:
        for n in (1, 2):
            svc = process()
            channel = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url),
                                      TOKEN, "prd", svc)
            svc.channels = [channel]
            try:
                if n == 1:
                    await svc.sync()  # the card, with its reference in the state
                else:
                    await svc.load()
                if n == 1:
                    (card,) = fake.sent_to(CHAT)
                    fake.press(FakeTelegram.user(111), CHAT, card["id"],
                               fake.buttons(CHAT, card["id"])[0], callback_id="cb-again")
                    fake.say(FakeTelegram.user(111), CHAT, "/approve again")
                # no offset: the batch is not confirmed, as when the process stopped in it
                updates = await channel.bot.get_updates(timeout=0)
                assert len(updates) == 2
                for update in updates:
                    await channel.handle(update)
                # one audit trail for both: the first process refused the command only
                assert [d["reason"] for d in audited(svc)] == ["AlreadyDecided"] * (2 * n - 1)
                assert len(audited(svc, "ChatDecisionRecorded")) == 1
            finally:
                await channel.close()

    with serving(FakeTelegram(TOKEN)) as fake:
        asyncio.run(main(fake))
    assert [d["by"] for d in cluster.objs[0]["spec"]["decisions"]] == ["bob"]


def test_a_command_delivered_again_after_its_request_was_replaced_decides_nothing(
        tmp_path: Path) -> None:
    """Was the request deleted and created anew under the same name before Telegram delivered
    a command again (the bot restarted before confirming it), the command was typed for the
    old request: the new one, which its sender never saw, is not decided (StaleMessage, by
    the message's date against the request's creation); the sender is told to send it again."""
    cluster = Deciding(request("again", 1))

    async def main(fake: FakeTelegram) -> None:
        svc = service(tmp_path)
        svc.cluster = cluster
        channel = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url),
                                  TOKEN, "prd", svc)
        svc.channels = [channel]
        try:
            fake.say(FakeTelegram.user(111), CHAT, "/approve again")
            # created two minutes after the message was sent (by the real clock: NOW is read
            # once at import, and a long run reaches it later)
            replaced = request("again", 62)
            replaced["metadata"]["creationTimestamp"] = (
                dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
            cluster.objs = [replaced]
            (update,) = await channel.bot.get_updates(timeout=0)
            await channel.handle(update)
            assert [d["reason"] for d in audited(svc)] == ["StaleMessage"]
            assert audited(svc, "ChatDecisionRequested") == []
        finally:
            await channel.close()

    with serving(FakeTelegram(TOKEN)) as fake:
        asyncio.run(main(fake))
        (reply,) = fake.sent_to(CHAT)
    assert "StaleMessage" in reply["plain"] and "send the command again: /approve again" in \
        reply["plain"]
    assert "decisions" not in cluster.objs[0]["spec"]


_CODE = re.compile(r"<code>.*?</code>|<pre>.*?</pre>", re.DOTALL)


def test_text_written_by_others_is_only_ever_shown_as_code_and_never_floods_a_card(
        tmp_path: Path) -> None:
    """What a worker, a voter or an approver wrote cannot close the code it is shown in, fake
    Wingman's own lines, mention, link, or push the commands and the state out of view, in
    the card, in the requester's notice and in replies naming a request (a Kubernetes name
    like approve.evil.example is a link in Telegram's plain text)."""
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await svc.sync()
        reply = await svc.act("telegram", "111", BOB, "pending")
        await channel.say(CHAT, reply)
        sent = sorted(fake.sent_to(CHAT), key=lambda m: m["id"])
        assert len(sent) == 5  # two cards, the notice, the pending reply, and the link one
        for m in sent:
            outside = _CODE.sub("", m["html"])
            for forged in ("EVIL", "alice", "evil.example", "channel", "Approved by"):
                assert forged not in outside, (forged, m["html"])
        card = next(m["plain"] for m in sent if "hostile-open" in m["plain"].split("\n")[0])
        lines = card.split("\n")
        commands = next(i for i, line in enumerate(lines) if line.startswith("Commands (1,"))
        assert commands < 40, card  # the instruction and justification cut to a few lines
        assert "more lines)" in card and "\\u{202E}" in card
        assert lines[commands + 1] == "kubectl rollout restart deployment/web -n apps"
        assert "Approve\\n✅ EVIL/low" in card  # a verdict stays on its vote's line
        notice = next(m["plain"] for m in sent if m["plain"].startswith("📣"))
        assert "\n" not in notice and "\\n" in notice  # one line: it fakes no other line
        pending = next(m for m in sent if m["plain"].startswith("Awaiting a decision"))
        assert "<code>approve.evil.example</code>" in pending["html"]

    run(tmp_path, hostile("hostile-open", 1), hostile("hostile-rejected", 2, rejected=True),
        request("approve.evil.example", 3), body=body)


def test_a_look_alike_character_in_a_command_is_shown_as_its_code_point(tmp_path: Path) -> None:
    """kubectl with a Cyrillic e looks like kubectl: the card shows the code point and says
    so (the gateway runs only plain ASCII commands), so no approver takes it for another."""
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await svc.sync()
        (card,) = fake.sent_to(CHAT)
        assert "<pre>kubectl delete pod w\\u{0435}b -n apps</pre>" in card["html"]
        assert "non-ASCII (look-alike)" in card["plain"]

    run(tmp_path, request("lookalike", 1, commands=["kubectl delete pod w\u0435b -n apps"]),
        body=body)


ALICE = ChatPerson(user="alice", groups=("approvers",), telegram_id=222)


def test_while_a_press_waits_for_its_card_another_approvers_command_is_answered(
        tmp_path: Path) -> None:
    """A press on a card whose post has not yet been answered waits for that answer (up to
    ``POSTING_WAIT_SECONDS``): meanwhile polling goes on, and another approver's command is
    answered at once, not after it. The press is then taken as on the card, once: the
    decision is made, a second press on the same card by the same approver waits its turn
    and is refused as already decided."""
    cluster = Deciding(request("web", 1))

    async def main(fake: FakeTelegram) -> None:
        svc = service(tmp_path, people=(BOB, ALICE))
        svc.cluster = cluster
        channel = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url),
                                  TOKEN, "prd", svc)
        svc.channels = [channel]
        stop = asyncio.Event()
        polling = asyncio.create_task(channel.poll(stop, timeout=1, backoff=0.01))
        released = threading.Event()
        try:
            fake.held["sendMessage"] = released
            posting = asyncio.create_task(svc.sync())  # its answer held up
            await _until(lambda: bool(fake.sent_to(CHAT)))
            (card,) = fake.sent_to(CHAT)
            approve = fake.buttons(CHAT, card["id"])[0]
            first = fake.press(FakeTelegram.user(111), CHAT, card["id"], approve)
            second = fake.press(FakeTelegram.user(111), CHAT, card["id"], approve)
            fake.say(FakeTelegram.user(222), CHAT, "/describe web")
            await _until(lambda: len(fake.sent_to(CHAT)) > 1)  # alice's answer, in the chat
            assert first not in fake.answers and second not in fake.answers
            assert not posting.done(), "the command was answered after the post ended"
            assert "web" in fake.sent_to(CHAT)[-1]["plain"]
            released.set()
            await posting
            await _until(lambda: first in fake.answers and second in fake.answers)
        finally:
            released.set()
            stop.set()
            await asyncio.wait_for(polling, 20)
            await channel.close()
        assert "Approve recorded" in fake.answers[first]["text"], fake.answers[first]
        assert "already decided" in fake.answers[second]["text"], fake.answers[second]
        assert [d["reason"] for d in audited(svc)] == ["AlreadyDecided"]

    with serving(FakeTelegram(TOKEN)) as fake:
        asyncio.run(main(fake))
    assert [d["by"] for d in cluster.objs[0]["spec"]["decisions"]] == ["bob"]


def test_one_persons_commands_are_handled_in_the_order_they_were_sent(tmp_path: Path) -> None:
    """Updates are handled concurrently, but one person's in order: an ``/approve`` and its
    ``/confirm`` fetched together decide (the confirm finds the decision the approve held),
    never the confirm first (``StepUpExpired``)."""
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    cluster = Deciding(request("web", 1))

    async def main(fake: FakeTelegram) -> None:
        svc = service(tmp_path)
        svc.cluster = cluster
        svc.config = ChatConfig(environment="prd", people=(BOB,), step_up=True)
        svc.step_up = StepUp({"bob": secret}, started=time.time() - 600)
        svc.step_up.write_ahead = True
        channel = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url),
                                  TOKEN, "prd", svc)
        svc.channels = [channel]
        await svc.sync()
        fake.say(FakeTelegram.user(111), CHAT, "/approve web")
        fake.say(FakeTelegram.user(111), CHAT, f"/confirm {pyotp.TOTP(secret).now()}")
        stop = asyncio.Event()
        polling = asyncio.create_task(channel.poll(stop, timeout=1, backoff=0.01))
        try:
            await _until(lambda: any("recorded" in m["plain"] or "Refused" in m["plain"]
                                     for m in fake.sent_to(CHAT)))
        finally:
            stop.set()
            await asyncio.wait_for(polling, 20)
            await channel.close()
        replies = [m["plain"] for m in fake.sent_to(CHAT)][1:]
        assert "Step-up required" in replies[0] and "Approve recorded" in replies[1], replies

    with serving(FakeTelegram(TOKEN)) as fake:
        asyncio.run(main(fake))
    assert [d["by"] for d in cluster.objs[0]["spec"]["decisions"]] == ["bob"]


class _SlowDeciding(Deciding):
    """``Deciding`` whose decisions reach the API server only once ``go`` is set
    (``reached`` says one is on its way): an API server slow to answer."""

    def __init__(self, *objs: dict[str, Any]) -> None:
        super().__init__(*objs)
        self.reached = threading.Event()
        self.go = threading.Event()

    def client_as(self, person: Any, hints: Any) -> Any:
        inner, cluster = super().client_as(person, hints), self

        class Client:
            def decide(self, name: str, verdict: str, reason: str, *, uid: str) -> None:
                cluster.reached.set()
                cluster.go.wait(30)
                inner.decide(name, verdict, reason, uid=uid)

        return Client()


def test_a_decision_under_way_when_the_process_stops_is_audited_and_answered(
        tmp_path: Path) -> None:
    """Stopping (the polling task cancelled, as on SIGTERM) lets the updates being handled end
    (within ``DRAIN_SECONDS``): a press whose decision is on its way to the API server is not
    cut off after it, so the decision made is audited as recorded and the approver told, never
    a decision in the request that the audit trail shows only as requested."""
    cluster = _SlowDeciding(request("web", 1))

    async def main(fake: FakeTelegram) -> None:
        svc = service(tmp_path)
        svc.cluster = cluster
        channel = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url),
                                  TOKEN, "prd", svc)
        svc.channels = [channel]
        await svc.sync()
        (card,) = fake.sent_to(CHAT)
        pressed = fake.press(FakeTelegram.user(111), CHAT, card["id"],
                             fake.buttons(CHAT, card["id"])[0])
        polling = asyncio.create_task(channel.poll(asyncio.Event(), timeout=1, backoff=0.01))
        try:
            await _until(cluster.reached.is_set)
            polling.cancel()  # the process stops
            await asyncio.wait({polling}, timeout=1)  # cut off by now unless it waits
            cluster.go.set()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(polling, 20)
        finally:
            cluster.go.set()
            polling.cancel()
            await channel.close()
        assert [d["verdict"] for d in audited(svc, "ChatDecisionRecorded")] == ["Approve"]
        assert "Approve recorded" in fake.answers[pressed]["text"], fake.answers

    with serving(FakeTelegram(TOKEN)) as fake:
        asyncio.run(main(fake))
    assert [d["by"] for d in cluster.objs[0]["spec"]["decisions"]] == ["bob"]


def test_a_flood_from_someone_not_in_chat_people_does_not_delay_an_approver(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Anyone can write to the bot: 500 private commands from a Telegram user no
    ``chat.people`` entry maps, and 50 from a group the bot was added to, are counted and
    dropped before they take a pending slot, so an approver's command sent after them is
    answered before any but the first of them is handled. The flooder still gets the
    refusal a single message gets, once; each sender is logged once, not once a message."""
    async def main(fake: FakeTelegram) -> None:
        svc = service(tmp_path)
        channel = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url),
                                  TOKEN, "prd", svc)
        svc.channels = [channel]
        for _ in range(500):
            fake.say(FakeTelegram.user(999), 999, "/pending")
        for _ in range(50):
            fake.say(FakeTelegram.user(998), -2002, "/pending")  # a group not configured
        fake.say(FakeTelegram.user(111), CHAT, "/pending")  # bob, an approver
        stop = asyncio.Event()
        polling = asyncio.create_task(channel.poll(stop, timeout=1, backoff=0.01))
        try:
            await _until(lambda: any("No request awaits" in m["plain"]
                                     for m in fake.sent_to(CHAT)))
            flood_answered = len(fake.sent_to(999))
            await _until(lambda: len(fake.sent_to(999)) >= 1)
        finally:
            stop.set()
            await asyncio.wait_for(polling, 20)
            await channel.close()
        assert any("No request awaits" in m["plain"] for m in fake.sent_to(CHAT))
        assert flood_answered <= 1, f"{flood_answered} of the flood handled before bob"
        answers = fake.sent_to(999)
        assert len(answers) == 1 and "not mapped" in answers[0]["plain"], answers
        assert len(fake.sent_to(-2002)) == 1, fake.sent_to(-2002)
        assert metric(svc, "wingman_chat_updates_refused_total", channel="telegram",
                      reason="Unmapped") == 500
        assert metric(svc, "wingman_chat_updates_refused_total", channel="telegram",
                      reason="WrongChat") == 50
        assert [(d["chatUser"], d["reason"]) for d in audited(svc)] == [
            ("999", "Unmapped"), ("998", "WrongChat")]

    with caplog.at_level(logging.INFO, logger="wingman"):
        with serving(FakeTelegram(TOKEN)) as fake:
            asyncio.run(main(fake))
    dropped = [vars(r)["sender"] for r in caplog.records
               if r.getMessage().startswith("telegram updates refused")]
    assert sorted(dropped) == ["user:998", "user:999"]
    assert len(caplog.records) < 20, [r.getMessage() for r in caplog.records]


def test_one_approvers_flood_does_not_take_every_pending_slot(tmp_path: Path) -> None:
    """A mapped person's updates beyond ``MAX_PENDING_PER_SENDER`` not yet handled are
    dropped (``SenderBusy``) rather than filling the pending slots: another approver's
    command sent after 300 of them is answered before the rest of them."""
    async def main(fake: FakeTelegram) -> None:
        svc = service(tmp_path, people=(BOB, ALICE))
        channel = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url),
                                  TOKEN, "prd", svc)
        svc.channels = [channel]
        for _ in range(300):
            fake.say(FakeTelegram.user(111), 111, "/pending")  # bob, in a private chat
        fake.say(FakeTelegram.user(222), CHAT, "/pending")  # alice
        stop = asyncio.Event()
        polling = asyncio.create_task(channel.poll(stop, timeout=1, backoff=0.01))
        try:
            await _until(lambda: bool(fake.sent_to(CHAT)))
            before = len(fake.sent_to(111))
            await _until(lambda: len(fake.sent_to(111)) >= MAX_PENDING_PER_SENDER)
        finally:
            stop.set()
            await asyncio.wait_for(polling, 20)
            await channel.close()
        assert fake.sent_to(CHAT) and before <= MAX_PENDING_PER_SENDER, before
        assert len(fake.sent_to(111)) == MAX_PENDING_PER_SENDER
        assert metric(svc, "wingman_chat_updates_refused_total", channel="telegram",
                      reason="SenderBusy") == 300 - MAX_PENDING_PER_SENDER

    with serving(FakeTelegram(TOKEN)) as fake:
        asyncio.run(main(fake))


def test_a_persons_commands_in_a_chat_not_configured_are_each_refused_and_audited(
        tmp_path: Path) -> None:
    """A mapped person's refusals are each audited (with ``as``): their commands in a group
    that is not configured are not dropped before they are handled, each is answered and
    audited as before (only ``MAX_PENDING_PER_SENDER`` bounds them)."""
    async def main(fake: FakeTelegram) -> None:
        svc = service(tmp_path)
        channel = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url),
                                  TOKEN, "prd", svc)
        svc.channels = [channel]
        for _ in range(3):
            fake.say(FakeTelegram.user(111), -2002, "/pending")  # bob, a group not configured
        fake.say(FakeTelegram.user(111), -2002, "/help")
        stop = asyncio.Event()
        polling = asyncio.create_task(channel.poll(stop, timeout=1, backoff=0.01))
        try:
            await _until(lambda: len(fake.sent_to(-2002)) >= 4)
        finally:
            stop.set()
            await asyncio.wait_for(polling, 20)
            await channel.close()
        answers = [m["plain"] for m in fake.sent_to(-2002)]
        assert len(answers) == 4 and "Wingman commands" in answers[-1], answers
        assert [(d["as"], d["reason"]) for d in audited(svc)] == [("bob", "WrongChat")] * 3
        assert metric(svc, "wingman_chat_updates_refused_total", channel="telegram",
                      reason="WrongChat") == 0

    with serving(FakeTelegram(TOKEN)) as fake:
        asyncio.run(main(fake))


def test_refusals_dropped_before_they_are_handled_still_reach_the_audit_trail(
        tmp_path: Path) -> None:
    """Every refusal reaches the audit trail, alone or counted: of 500 private commands from
    a user no ``chat.people`` entry maps, dropped before they are handled but the first, the
    records written (the first, and the next one a minute later) count all 501."""
    now = [NOW]

    async def main(fake: FakeTelegram) -> None:
        svc = service(tmp_path, clock=lambda: now[0])
        channel = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url),
                                  TOKEN, "prd", svc)
        svc.channels = [channel]
        for _ in range(500):
            fake.say(FakeTelegram.user(999), 999, "/pending")
        stop = asyncio.Event()
        polling = asyncio.create_task(channel.poll(stop, timeout=1, backoff=0.01))
        try:
            await _until(lambda: len(fake.sent_to(999)) >= 1 and metric(
                svc, "wingman_chat_updates_refused_total", channel="telegram",
                reason="Unmapped") == 500)
            now[0] += dt.timedelta(seconds=61)
            fake.say(FakeTelegram.user(999), 999, "/pending")
            await _until(lambda: len(fake.sent_to(999)) >= 2)
        finally:
            stop.set()
            await asyncio.wait_for(polling, 20)
            await channel.close()
        records = audited(svc)
        assert [(d["chatUser"], d["reason"]) for d in records] == [("999", "Unmapped")] * 2
        assert sum(1 + d.get("suppressed", 0) + d.get("suppressedOthers", 0)
                   for d in records) == 501, records

    with serving(FakeTelegram(TOKEN)) as fake:
        asyncio.run(main(fake))


def test_after_the_bot_token_changes_open_cards_get_buttons_signed_anew(tmp_path: Path) -> None:
    """The buttons are signed with a key derived from the bot token: once it is rotated (at
    BotFather, then in the Secret: the runbook's steps), the buttons of a card still awaiting
    a decision would all be refused (InvalidButton) until the request changed. The card is
    edited once with buttons the new key signs; a decided one is left alone."""
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await svc.sync()
        fake.token = "7000001:AAH-rotated-unit-test-token"
        rotated = TelegramChannel(TelegramConfig(chat_id=CHAT, base_url=fake.base_url),
                                  fake.token, "prd", svc)
        svc.channels = [rotated]
        try:
            edits = len([m for m, _ in fake.requests if m == "editMessageText"])
            await svc.sync()
            await svc.sync()  # once: the second sync finds nothing to do
            assert len([m for m, _ in fake.requests if m == "editMessageText"]) == edits + 1
            markup = cards(fake)["open"]["markup"]
            for row in markup["inline_keyboard"]:
                for button in row:
                    assert rotated.signer.check(button["callback_data"]).environment == "prd"
            assert cards(fake)["decided"]["markup"] is None
        finally:
            await rotated.close()

    decided = request("decided", 2)
    decided["status"]["conditions"] = [{"type": "Expired", "status": "True"}]
    run(tmp_path, request("open", 1), decided, body=body)


def test_an_answer_that_repeats_the_bot_token_never_reaches_the_state_or_a_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The bot token is part of every Bot API URL. An answer that is not Telegram's JSON (a
    proxy's or a local Bot API server's error page naming the URL it was asked for) is quoted
    by python-telegram-bot in its error: the token must not go on from there into the state
    ConfigMap (a refused card's ``error``, which no log filter reaches) or a log line, where
    it is cut to 300 characters: a token cut in two escapes the filter (installed here as
    the process installs it), which looks for it whole."""
    secret = TOKEN.split(":", 1)[1]
    # pytest's capture handler is one for the whole session: the filter goes with this test
    redact = RedactSecrets([TOKEN])
    caplog.handler.addFilter(redact)
    lead = ("Telegram refused sendMessage: Bad Request (400). Parsing the server response "
            "b'<html>")
    page = f"<html>{'x' * (284 - len(lead) - len('/bot'))}/bot{TOKEN}/sendMessage</html>"
    assert (lead + page[6:])[284:300] == TOKEN[:16]  # the token cut at 300, in two

    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await channel._call("getMe", channel.bot.get_me)  # initialized: its calls are sends
        fake.glitch_paths = ("/sendMessage",)
        fake.glitches = [(400, page.encode())] * 2  # the card, then the short card
        with caplog.at_level(logging.INFO):
            await svc.sync()
            entry = svc.state["requests"][svc.find(name="web").uid]["telegram"]
            assert "Parsing the server response" in entry["refused"]["error"]
            fake.glitches = [(502, page.replace("x", "y").encode())]
            svc.cluster.objs[0]["spec"]["decisions"] = [  # type: ignore[attr-defined]
                {"verdict": "Approve", "by": "carol", "reason": "ok"}]
            await svc.sync()
        saved = json.dumps(svc.cluster.saved)  # type: ignore[attr-defined]
        assert "yyyy" not in saved and "xxxx" in saved
        assert secret[:6] not in saved, saved
        logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
        assert "yyyy" in logged and secret[:6] not in logged, logged

    try:
        run(tmp_path, request("web", 1), body=body)
    finally:
        caplog.handler.removeFilter(redact)


def test_a_command_sent_through_another_bots_inline_mode_decides_nothing(
        tmp_path: Path) -> None:
    """An inline bot's result (``via @bot``) is sent as the person who picked it, with the
    text the other bot chose: a result that shows a picture can send ``/approve <request>``.
    Not typed by the person, it is refused as a forwarded command is; typed, it decides."""
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        cluster = Deciding(*svc.cluster.objs)  # type: ignore[attr-defined]
        svc.cluster = cluster
        offset = 0

        async def command(text: str, *, via_bot: bool = False) -> str:
            nonlocal offset
            fake.say(FakeTelegram.user(111), CHAT, text, via_bot=via_bot)
            for update in await channel.bot.get_updates(offset=offset, timeout=0):
                offset = update.update_id + 1
                await channel.handle(update)
            return str(fake.requests[-1][1].get("text"))

        answer = await command("/approve web looks fine", via_bot=True)
        assert "ViaBot" in answer, answer
        assert "decisions" not in cluster.objs[0]["spec"]
        assert [(r["reason"], r["as"]) for r in audited(svc)] == [("ViaBot", "bob")]
        answer = await command("/approve web looks fine")
        assert "Approve recorded" in answer, answer

    run(tmp_path, request("web", 1), body=body)


def test_reject_pressed_before_the_first_sync_after_a_start_says_how_to_reject(
        tmp_path: Path) -> None:
    """After a restart the cards are known from the state ConfigMap before the first sync has
    read the requests: Reject pressed then is answered with the /reject to send, not refused
    as a request that does not exist (named by its UID)."""
    async def body(fake: FakeTelegram, channel: TelegramChannel, svc: ChatService) -> None:
        await svc.sync()
        (card,) = fake.sent_to(CHAT)
        svc.views = {}  # a new process: the state read, no sync yet
        reject = fake.buttons(CHAT, card["id"])[1]
        cid = fake.press(FakeTelegram.user(111), CHAT, card["id"], reject)
        for update in await channel.bot.get_updates(timeout=0):
            await channel.handle(update)
        assert fake.answers[cid]["text"] == "To reject, send: /reject web <reason>", \
            fake.answers[cid]
        assert audited(svc) == []

    run(tmp_path, request("web", 1), body=body)
