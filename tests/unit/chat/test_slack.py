"""The Slack channel's HTTP endpoints (aiohttp, slack_sdk's verifier) and its Web API calls
(slack_sdk against a local Web API server): a signed body is read whole however it arrives,
anything unsigned or malformed is a 401 (never a 500) audited at most once a minute, and a
message Slack refuses fails alone."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyotp
import pytest
from aiohttp import ClientSession, web

from support.fake_chat import FakeSlack, WebhookReceiver, serving, slack_signature
from support.localserver import QuietHandler
from support.localserver import serving as local_serving
from support.ports import connections_to
from wingman.chat import slack
from wingman.chat.guard import ReplayGuard, StepUp
from wingman.chat.run import health, http_runner
from wingman.chat.service import ChatService
from wingman.chat.slack import MAX_BODY, SlackChannel
from wingman.client import status as st
from wingman.model import limits
from wingman.settings import SlackConfig

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
    request,
    service,
)

TOKEN = "xoxb-unit-test"
SECRET = "slack-signing-unit-test-secret"
TEAM, CHANNEL = "T0WINGMAN", "C0APPROVE"


def run(tmp: Path, *objs: dict[str, Any],
        body: Callable[[str, FakeSlack, ChatService], Awaitable[None]],
        clock: Any = None, command: str = "/wingman",
        prepare: Callable[[ChatService], None] | None = None,
        after: Callable[[ChatService], None] | None = None) -> None:
    """``body(url, fake, service)`` with the channel's endpoints served at ``url``
    (``prepare(service)`` first; ``after(service)`` once the channel is made)."""
    async def main(fake: FakeSlack) -> None:
        svc = service(tmp, *objs, clock=clock)
        config = SlackConfig(team_id=TEAM, channel=CHANNEL, base_url=fake.base_url,
                             command=command)
        svc.config = replace(svc.config, slack=config)
        if prepare is not None:
            prepare(svc)
        channel = SlackChannel(config, TOKEN, SECRET, "prd", svc)
        channel.started = time.time() - 3600  # running for a while
        svc.channels = [channel]
        if after is not None:
            after(svc)
        async with served(channel) as url:
            await body(url, fake, svc)

    with serving(FakeSlack(TOKEN, TEAM, {"U0BOB": {"is_bot": False}})) as fake:
        asyncio.run(main(fake))


@asynccontextmanager
async def served(channel: SlackChannel) -> AsyncIterator[str]:
    """The URL at which ``channel``'s endpoints are served, with the process's limits."""
    app = web.Application()
    channel.routes(app)
    runner = http_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await channel.close()


def signed(body: bytes, ts: str | None = None) -> dict[str, str]:
    ts = ts or str(int(time.time()))
    return {"Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": slack_signature(SECRET, ts, body)}


def approve_press(ts: str, card: dict[str, Any], trigger: str = "trig-1") -> bytes:
    """The signed-ready form body of Bob pressing Approve on the card posted at ``ts``."""
    [actions] = [b for b in card["blocks"] if b["type"] == "actions"]
    press = {"type": "block_actions", "user": {"id": "U0BOB"}, "team": {"id": TEAM},
             "channel": {"id": CHANNEL}, "trigger_id": trigger,
             "container": {"type": "message", "message_ts": ts, "channel_id": CHANNEL},
             "actions": [{"action_id": "wingman_approve",
                          "value": actions["elements"][0]["value"]}]}
    return urlencode({"payload": json.dumps(press)}).encode()


def test_a_signed_body_that_arrives_in_pieces_is_read_whole(tmp_path: Path) -> None:
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        form = urlencode({"team_id": TEAM, "user_id": "U0BOB", "channel_id": CHANNEL,
                          "command": "/wingman", "text": "pending", "pad": "x" * 20000})
        data = form.encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in signed(data).items())
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((f"POST /slack/commands HTTP/1.1\r\nHost: x\r\n{head}"
                      f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
                     + data[:8000])
        await writer.drain()
        await asyncio.sleep(0.2)  # the rest in a second TCP segment, later
        writer.write(data[8000:])
        await writer.drain()
        answer = (await reader.read()).decode()
        writer.close()
        assert answer.startswith("HTTP/1.1 200"), answer[:300]
        assert "No request awaits a decision in prd" in answer
        assert audited(svc) == []

    run(tmp_path, body=body)


def test_a_body_over_the_cap_is_refused_with_413(tmp_path: Path) -> None:
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        big = b"payload=" + b"x" * (MAX_BODY + 10)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            for i in range(0, len(big), 32 * 1024):
                yield big[i:i + 32 * 1024]

        async with ClientSession() as http:
            for data in (big, chunks()):
                async with http.post(f"{url}/slack/interactive", data=data,
                                     headers=signed(big)) as resp:
                    assert resp.status == 413
                    assert f"larger than {MAX_BODY} bytes" in await resp.text()
        assert metric(svc, "wingman_chat_refusals_total", channel="slack",
                      reason="TooLarge") == 2

    run(tmp_path, body=body)


def test_unsigned_requests_are_401_and_audited_once_a_minute(tmp_path: Path) -> None:
    now = [NOW]

    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        fresh = str(int(time.time()))
        attempts: list[tuple[bytes, dict[str, str]]] = [
            (b"command=%2Fwingman", {}),  # no signature at all
            (b"command=%2Fwingman", {"X-Slack-Request-Timestamp": "abc",
                                     "X-Slack-Signature": "v0=00"}),
            (b"command=%2Fwingman", {"X-Slack-Request-Timestamp": "\uff11\uff12",
                                     "X-Slack-Signature": "v0=00"}),  # digits, not ASCII
            (b"\xff\xfe", {"X-Slack-Request-Timestamp": fresh,
                           "X-Slack-Signature": "v0=00"}),  # not UTF-8
            (b"command=%2Fwingman", {**signed(b"command=%2Fwingman"),
                                     "X-Slack-Signature": "v0=" + "0" * 64}),
        ]
        async with ClientSession() as http:
            for data, headers in attempts:
                for path in ("/slack/commands", "/slack/interactive"):
                    async with http.post(url + path, data=data, headers=headers) as resp:
                        assert resp.status == 401, (headers, await resp.text())
            assert [d.get("suppressed") for d in audited(svc)] == [None]
            now[0] += dt.timedelta(seconds=61)
            async with http.post(url + "/slack/commands", data=b"x") as resp:
                assert resp.status == 401
        (first, second) = audited(svc)
        assert first["reason"] == second["reason"] == "BadSignature"
        assert second["suppressed"] == 9
        assert metric(svc, "wingman_chat_refusals_total", channel="slack",
                      reason="BadSignature") == 11

    run(tmp_path, body=body, clock=lambda: now[0])


def test_a_message_slack_refuses_fails_alone(tmp_path: Path) -> None:
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        fake.refuse = lambda method, p: ("invalid_blocks" if method == "chat.postMessage"
                                         and "poison" in str(p.get("text")) else None)
        await svc.sync()
        await svc.sync()
        assert ["later" in str(m["text"]) for _, m in fake.cards(CHANNEL)] == [True]
        tries = [p for m, p in fake.requests if m == "chat.postMessage"
                 and "poison" in str(p.get("text"))]
        assert len(tries) == 2  # the card, then the short card; not again
        uid = svc.find(name="poison").uid
        assert svc.state["requests"][uid]["slack"]["refused"]["error"] == (
            "Slack refused chat.postMessage: invalid_blocks")
        assert metric(svc, "wingman_chat_messages_failed_total", channel="slack") == 1
        assert "refused" not in svc.state["requests"][svc.find(name="later").uid]["slack"]

    run(tmp_path, request("poison", 1), request("later", 2), body=body)


def test_a_card_slack_refuses_is_sent_as_the_short_card_with_its_buttons(
        tmp_path: Path) -> None:
    """Slack refuses a card for what it holds (here: any card with its commands): approvers
    are still notified, by the short card, whose buttons work; once the request changes, the
    message is updated the same way."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        fake.refuse = lambda method, p: (
            "invalid_blocks" if method in ("chat.postMessage", "chat.update")
            and "rich_text_preformatted" in str(p.get("blocks")) else None)
        await svc.sync()
        [(ts, card)] = fake.cards(CHANNEL)
        shown = json.dumps(card["blocks"])
        assert "kubectl wingman describe big" in shown and "Slack refused" in shown
        [actions] = [b for b in card["blocks"] if b["type"] == "actions"]
        assert [e["action_id"] for e in actions["elements"]] == ["wingman_approve",
                                                                 "wingman_reject"]
        uid = svc.find(name="big").uid
        assert "refused" not in svc.state["requests"][uid]["slack"]
        assert svc.card_ref(uid, "slack") == {"channel": CHANNEL, "ts": ts}
        svc.cluster.objs[0]["spec"]["decisions"] = [  # type: ignore[attr-defined]
            {"verdict": "Reject", "by": "carol", "reason": "no"}]
        await svc.sync()
        [(_, card)] = fake.cards(CHANNEL)
        assert card["edits"] == 1 and "Slack refused" in json.dumps(card["blocks"])
        assert "refused" not in svc.state["requests"][uid]["slack"]

    run(tmp_path, request("big", 1), body=body)


def test_a_modal_slack_refuses_is_opened_with_the_short_card(tmp_path: Path) -> None:
    """The short card's button opens the decision modal; should Slack refuse the modal with
    the full card (as it refused the card), it is opened with the short card: the approver
    can still decide, and is not left with a button that does nothing."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        fake.refuse = lambda method, p: (
            "invalid_blocks" if method in ("chat.postMessage", "views.open")
            and "rich_text_preformatted" in str(p.get("blocks") or p.get("view")) else None)
        await svc.sync()
        [(ts, card)] = fake.cards(CHANNEL)
        data = approve_press(ts, card)
        async with ClientSession() as http, http.post(
                f"{url}/slack/interactive", data=data, headers=signed(data)) as resp:
            assert resp.status == 200
        [opened] = fake.views
        shown = json.dumps(opened["view"]["blocks"])
        assert "kubectl wingman describe big" in shown
        assert opened["view"]["blocks"][-1]["block_id"] == "reason"

    run(tmp_path, request("big", 1), body=body)


def test_a_button_pressed_while_its_card_is_being_posted_is_taken_as_on_the_card(
        tmp_path: Path) -> None:
    """Slack shows a message, buttons and all, before the app has the answer with its ts (a
    slow network, a loaded machine): a press then is on the request's one card and opens the
    decision modal once the post ended, never refused as a stale button."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        fake.slow["chat.postMessage"] = 1.0
        posting = asyncio.create_task(svc.sync())
        for _ in range(200):
            if fake.cards(CHANNEL):
                break
            await asyncio.sleep(0.02)
        [(ts, card)] = fake.cards(CHANNEL)
        data = approve_press(ts, card)
        assert not posting.done(), "the press came after the post ended"
        async with ClientSession() as http, http.post(
                f"{url}/slack/interactive", data=data, headers=signed(data)) as resp:
            assert resp.status == 200
        await posting
        assert fake.ephemeral == []  # no refusal (StaleButton) told
        [opened] = fake.views
        assert opened["trigger_id"] == "trig-1"
        assert [t for t, _ in fake.cards(CHANNEL)] == [ts]  # one card

    run(tmp_path, request("pressed", 1), body=body)


def test_a_press_on_an_old_copy_of_a_card_retires_the_copy(tmp_path: Path) -> None:
    """A post given up on (no answer within 15 s) may have arrived all the same, and the card
    is then posted again: the copy's buttons are refused as stale, and the press makes the
    copy say that it is out of date, without buttons, linking to the current card, so that it
    never again looks like a live decision."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        await svc.refresh()
        v = svc.find(name="copied")
        channel = svc.channels[0]
        await channel.post_card(v)  # the post given up on, arrived all the same
        await svc.sync()  # the card the service knows
        current = svc.card_ref(v.uid, "slack")
        assert current is not None
        [(ts, card)] = [(t, c) for t, c in fake.cards(CHANNEL) if t != current["ts"]]
        data = approve_press(ts, card)
        async with ClientSession() as http, http.post(
                f"{url}/slack/interactive", data=data, headers=signed(data)) as resp:
            assert resp.status == 200
        assert fake.views == []  # no decision modal
        assert "StaleButton" in json.dumps(fake.ephemeral)
        retired = dict(fake.cards(CHANNEL))[ts]
        assert not [b for b in retired["blocks"] if b["type"] == "actions"]
        assert _texts(retired["blocks"])[:2] == [
            ("⚠️ Out of date: this is an old copy of the card of request ", None),
            ("copied", {"code": True})]
        [link] = [e for e in retired["blocks"][0]["elements"][0]["elements"]
                  if e["type"] == "link"]
        assert link["url"].endswith(f"/archives/{CHANNEL}/p{current['ts'].replace('.', '')}")
        now = dict(fake.cards(CHANNEL))[current["ts"]]
        assert [b for b in now["blocks"] if b["type"] == "actions"]  # the current card: live

    run(tmp_path, request("copied", 1), body=body)


def test_presses_on_an_old_copy_whose_edit_is_rate_limited_edit_it_once(
        tmp_path: Path) -> None:
    """Slack rate-limits the edit that would retire an old copy (429, ratelimited): further
    presses on that copy are refused as stale without editing it again, so that they do not
    spend the budget for chat.update that the current cards need."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        await svc.refresh()
        v = svc.find(name="copied")
        await svc.channels[0].post_card(v)  # the post given up on, arrived all the same
        await svc.sync()
        current = svc.card_ref(v.uid, "slack")
        assert current is not None
        [(ts, card)] = [(t, c) for t, c in fake.cards(CHANNEL) if t != current["ts"]]
        fake.glitch_paths = ("/chat.update",)
        fake.glitches = [(429, b'{"ok": false, "error": "ratelimited"}')] * 3
        async with ClientSession() as http:
            for n in range(3):
                data = approve_press(ts, card, f"trig-{n}")
                async with http.post(f"{url}/slack/interactive", data=data,
                                     headers=signed(data)) as resp:
                    assert resp.status == 200
        assert fake.views == []
        assert json.dumps(fake.ephemeral).count("StaleButton") == 3
        assert len(fake.glitches) == 2  # one edit tried, not one per press
        assert dict(fake.cards(CHANNEL))[ts] == card  # the copy as it was

    run(tmp_path, request("copied", 1), body=body)


def test_a_signed_payload_of_the_wrong_shape_is_refused_never_a_500(tmp_path: Path) -> None:
    # signed, so it passed the first check: every part of it is still only input
    bob = {"id": "U0BOB"}
    press = {"type": "block_actions", "user": bob, "team": {"id": TEAM},
             "channel": {"id": CHANNEL}}
    cases: list[tuple[Any, int, str]] = [
        ([], 400, "JSON object"), ("approve", 400, "JSON object"), (None, 400, "JSON object"),
        ({"type": "block_actions", "user": "U0BOB"}, 200, "ForeignWorkspace"),
        ({**press, "team": TEAM}, 200, "ForeignWorkspace"),
        ({**press, "actions": ["wingman_approve"]}, 200, "InvalidButton"),
        ({**press, "actions": {"0": {"value": "x"}}}, 200, "InvalidButton"),
        ({**press, "channel": CHANNEL, "container": "C0APPROVE",
          "actions": [{"value": "x"}]}, 200, "WrongChannel"),
        ({"type": "view_submission", "user": bob, "team": {"id": TEAM}, "view": "x"}, 200, ""),
        ({"type": "view_submission", "user": bob, "team": {"id": TEAM},
          "view": {"callback_id": "wingman_decide", "state": ["x"]}}, 200, "InvalidButton"),
        ({"type": "view_submission", "user": bob, "team": {"id": TEAM},
          "view": {"callback_id": "wingman_decide", "state": {"values": {"reason": "x"}}}},
         200, "InvalidButton")]

    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        await svc.sync()
        async with ClientSession() as http:
            for payload, status, says in cases:
                data = urlencode({"payload": json.dumps(payload)}).encode()
                async with http.post(f"{url}/slack/interactive", data=data,
                                     headers=signed(data)) as resp:
                    text = await resp.text()
                    assert resp.status == status, (payload, text[:300])
                    if status == 400:
                        assert says in text
        said = " ".join(str(p.get("blocks")) for m, p in fake.requests
                        if m == "chat.postEphemeral") + str(
            [d["reason"] for d in audited(svc)])
        for _, status, says in cases:
            assert status == 400 or says in said, says
        assert svc.cluster.objs[0]["spec"].get("decisions") is None  # type: ignore[attr-defined]

    run(tmp_path, request("shaped", 1), body=body)


@pytest.mark.parametrize(("retry_after", "backoff"), [("\u00b2", 1.0), ("7", 7.0),
                                                      ("9" * 400, 300.0)])
def test_a_rate_limit_with_a_retry_after_not_a_number_backs_off(
        tmp_path: Path, retry_after: str, backoff: float) -> None:
    # "\u00b2" (the superscript two): str.isdigit says yes, float says no; the reconciler
    # must back the channel off either way, not stop on a ValueError; a huge one (float says
    # infinity) waits the longest backoff, 5 minutes, not until a restart
    async def main() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)
            data = b'{"ok": false, "error": "ratelimited"}'
            writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: "
                         + retry_after.encode() + b"\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                         + data)
            await writer.drain()
            writer.close()

        api = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = api.sockets[0].getsockname()[1]
        svc = service(tmp_path, request("limited", 1))
        channel = SlackChannel(SlackConfig(team_id=TEAM, channel=CHANNEL,
                                           base_url=f"http://127.0.0.1:{port}/api/"),
                               TOKEN, SECRET, "prd", svc)
        svc.channels = [channel]
        try:
            await svc.sync()
        finally:
            await channel.close()
            api.close()
        assert metric(svc, "wingman_chat_messages_failed_total", channel="slack") == 1
        delay = svc._health["slack"].next_try - time.monotonic()
        assert delay == pytest.approx(backoff, abs=0.5)

    asyncio.run(main())


@pytest.mark.parametrize("command", ["/wingman", "/wm-prd"])
def test_slack_answers_name_slack_commands(tmp_path: Path, command: str) -> None:
    # "/reject" or "/confirm" is not a Slack command here: every hint names the app's slash
    # command and the verb
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        answers = {}
        async with ClientSession() as http:
            for text in ("frobnicate", "reject hinted", "exec hinted nope", "approve",
                         "status", "describe gone"):
                data = urlencode({"team_id": TEAM, "user_id": "U0BOB", "channel_id": CHANNEL,
                                  "command": command, "text": text}).encode()
                async with http.post(f"{url}/slack/commands", data=data,
                                     headers=signed(data)) as resp:
                    assert resp.status == 200
                    answers[text] = str((await resp.json())["blocks"])
        assert f"use {command} pending, {command} describe" in answers["frobnicate"]
        assert f"say why: {command} reject hinted <reason>" in answers["reject hinted"]
        assert f"{command} describe hinted shows them" in answers["exec hinted nope"]
        assert f"usage: {command} approve <request>" in answers["approve"]
        assert f"usage: {command} status <grant>" in answers["status"]
        assert f"{command} pending lists the open ones" in answers["describe gone"]
        assert [d["reason"] for d in audited(svc)] == [
            "UnknownCommand", "ReasonRequired", "NotACommandOfTheRequest", "Usage", "Usage",
            "NotFound"]

    run(tmp_path, request("hinted", 1), body=body, command=command)


def test_a_body_that_stalls_is_refused_with_408_not_held_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # anyone can reach these endpoints: a sender that announces a body and sends part of it
    # (or nothing) must not keep the connection, and the handler, for good
    monkeypatch.setattr(slack, "BODY_SECONDS", 1.0)

    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        port = int(url.rsplit(":", 1)[1])
        for sent in (b"payload=", b""):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /slack/interactive HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 1000\r\nConnection: close\r\n\r\n" + sent)
            await writer.drain()
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
            length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
            answer = head + (await reader.readexactly(length)).decode()
            writer.close()
            await writer.wait_closed()
            assert answer.startswith("HTTP/1.1 408"), answer[:200]
            assert "did not arrive whole within 1 seconds" in answer
        assert metric(svc, "wingman_chat_refusals_total", channel="slack",
                      reason="IncompleteBody") == 2

    run(tmp_path, body=body)


def test_exec_takes_the_command_as_typed_whatever_the_spacing_around_it(tmp_path: Path) -> None:
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        cluster = Granting(*svc.cluster.objs)  # type: ignore[attr-defined]
        svc.cluster = cluster

        async def command(http: ClientSession, text: str) -> str:
            data = urlencode({"team_id": TEAM, "user_id": "U0BOB", "channel_id": CHANNEL,
                              "command": "/wingman", "text": text}).encode()
            async with http.post(f"{url}/slack/commands", data=data,
                                 headers=signed(data)) as resp:
                assert resp.status == 200
                return str((await resp.json())["blocks"])

        async with ClientSession() as http:
            for verb in VERB_AS_TYPED:
                for after, expected in EXEC_AS_TYPED:
                    cluster.granted.clear()
                    answer = await command(http, "  " + verb + after)
                    assert cluster.granted == [("typed", expected)], (verb, after, answer)
            for after in EXEC_NOT_AS_TYPED:
                cluster.granted.clear()
                answer = await command(http, "exec " + after)
                assert cluster.granted == [], after
                assert "not one of typed's commands byte for byte" in answer, after

    run(tmp_path, request("typed", 1, commands=[TYPED_COMMAND]), body=body)


ESCAPED_COMMAND = "kubectl annotate deploy/web -n apps note='a<b & c>d &amp;'"


def test_exec_takes_the_command_as_typed_though_slack_escapes_its_control_characters(
        tmp_path: Path) -> None:
    # Slack sends what a person typed with &, < and > as &amp;, &lt; and &gt; (and an &amp;
    # typed as &amp;amp;): the command that reaches the grant is the one typed
    sent = ESCAPED_COMMAND.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        cluster = Granting(*svc.cluster.objs)  # type: ignore[attr-defined]
        svc.cluster = cluster
        data = urlencode({"team_id": TEAM, "user_id": "U0BOB", "channel_id": CHANNEL,
                          "command": "/wingman", "text": f"exec escaped {sent}"}).encode()
        async with ClientSession() as http, http.post(
                f"{url}/slack/commands", data=data, headers=signed(data)) as resp:
            assert resp.status == 200
            answer = str((await resp.json())["blocks"])
        assert cluster.granted == [("escaped", ESCAPED_COMMAND)], answer

    run(tmp_path, request("escaped", 1, commands=[ESCAPED_COMMAND]), body=body)


def test_signed_payloads_json_cannot_parse_sanely_are_400_never_a_500(tmp_path: Path) -> None:
    # signed (a leaked secret, or Slack misbehaving): a payload nested past what the parser
    # recurses into, or a number past what it converts, is still only a bad request
    payloads = ["[" * 20_000 + "]" * 20_000,
                '{"type": "block_actions", "x": ' + '{"x": ' * 5_000 + "1" + "}" * 5_001,
                '{"type": "block_actions", "n": ' + "9" * 5000 + "}"]

    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        async with ClientSession() as http:
            for payload in payloads:
                data = urlencode({"payload": payload}).encode()
                async with http.post(f"{url}/slack/interactive", data=data,
                                     headers=signed(data)) as resp:
                    text = await resp.text()
                    assert resp.status == 400, (payload[:40], resp.status, text[:300])
                    assert "JSON object" in text

    run(tmp_path, body=body)


def test_a_correct_signature_with_a_timestamp_outside_five_minutes_is_refused(
        tmp_path: Path) -> None:
    # a captured request replayed later (or one signed ahead of time) verifies, but its
    # timestamp is more than five minutes off: refused like a bad signature
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        now = int(time.time())
        data = urlencode({"team_id": TEAM, "user_id": "U0BOB", "channel_id": CHANNEL,
                          "command": "/wingman", "text": "pending"}).encode()
        async with ClientSession() as http:
            for ts, status in ((now - 400, 401), (now + 400, 401), (0, 401),
                               (999_999_999_999, 401), (now - 200, 200), (now + 200, 200)):
                async with http.post(f"{url}/slack/commands", data=data,
                                     headers=signed(data, str(ts))) as resp:
                    assert resp.status == status, (ts - now, await resp.text())
        assert [d["reason"] for d in audited(svc)] == ["BadSignature"]  # once a minute

    run(tmp_path, body=body)


def test_a_replay_at_the_edge_of_the_window_after_the_wall_clock_stepped_back_is_refused(
        tmp_path: Path) -> None:
    """Slack's signature check takes a timestamp up to five minutes either side of the wall
    clock, so a request signed five minutes ahead verifies for ten; the replay memory runs on
    the monotonic clock. With the wall clock stepped back 30 s, the request captured and
    replayed 630 s later (monotonic) still verifies: the memory must still hold it."""
    mono = [1000.0]
    wall = [float(int(time.time()))]

    class Wall:
        def now(self) -> float:
            return wall[0]

    def prepare(svc: ChatService) -> None:
        [channel] = svc.channels
        channel.verifier.clock = Wall()  # type: ignore[attr-defined]
        channel.replays = ReplayGuard(channel.replays.ttl,  # type: ignore[attr-defined]
                                      clock=lambda: mono[0])

    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        data = urlencode({"team_id": TEAM, "user_id": "U0BOB", "channel_id": CHANNEL,
                          "command": "/wingman", "text": "pending"}).encode()
        captured = signed(data, str(int(wall[0]) + 300))  # the latest timestamp Slack takes
        async with ClientSession() as http:
            async with http.post(f"{url}/slack/commands", data=data, headers=captured) as resp:
                assert resp.status == 200, await resp.text()
            mono[0] += 630
            wall[0] += 630 - 30  # the wall clock stepped back 30 s meanwhile
            async with http.post(f"{url}/slack/commands", data=data, headers=captured) as resp:
                text = await resp.text()
                assert resp.status == 409 and "already handled" in text, (resp.status, text)
        assert metric(svc, "wingman_chat_refusals_total", channel="slack",
                      reason="Replayed") == 1

    run(tmp_path, body=body, after=prepare)


def test_after_a_restart_a_request_signed_before_it_is_refused(tmp_path: Path) -> None:
    """Which signatures were handled is memory: a signed request captured before a restart
    (its five minutes not over) is refused by the restarted process, which cannot know it was
    handled; what Slack signs from the second the process started on is handled."""
    async def main(fake: FakeSlack) -> None:
        svc = service(tmp_path)
        config = SlackConfig(team_id=TEAM, channel=CHANNEL, base_url=fake.base_url)
        svc.config = replace(svc.config, slack=config)
        data = urlencode({"team_id": TEAM, "user_id": "U0BOB", "channel_id": CHANNEL,
                          "command": "/wingman", "text": "pending"}).encode()
        captured = signed(data, str(int(time.time()) - 10))

        async def send(http: ClientSession, url: str, headers: dict[str, str]
                       ) -> tuple[int, str]:
            async with http.post(f"{url}/slack/commands", data=data, headers=headers) as resp:
                return resp.status, await resp.text()

        before = SlackChannel(config, TOKEN, SECRET, "prd", svc)
        before.started = time.time() - 3600  # running for an hour
        async with served(before) as url, ClientSession() as http:
            status, text = await send(http, url, captured)
            assert status == 200 and "No request awaits a decision" in text, text
            assert (await send(http, url, captured))[0] == 409  # the same process remembers
        after = SlackChannel(config, TOKEN, SECRET, "prd", svc)  # the restart: started now
        async with served(after) as url, ClientSession() as http:
            status, text = await send(http, url, captured)
            assert status == 409, text
            assert "before Wingman's chat service started" in text and "send it again" in text
            # signed in the second the process started, but before: refused as well
            if int(after.started) < after.started:
                assert (await send(http, url, signed(data, str(int(after.started)))))[0] == 409
            await asyncio.sleep(max(0.0, math.ceil(after.started) - time.time()))
            status, text = await send(http, url, signed(data))  # signed anew: handled
            assert status == 200 and "No request awaits a decision" in text, text
        assert metric(svc, "wingman_chat_refusals_total", channel="slack",
                      reason="SignedBeforeStart") >= 1

    with serving(FakeSlack(TOKEN, TEAM, {"U0BOB": {"is_bot": False}})) as fake:
        asyncio.run(main(fake))


def test_a_slash_command_signed_before_its_request_existed_decides_nothing(
        tmp_path: Path) -> None:
    """A slash command carries no time of its own: when Slack signed it is when it was sent, at
    the latest. Signed before the request it names was created (the name taken again since),
    it was meant for the earlier request: refused (StaleMessage), nothing decided; signed
    after, it decides."""
    created = int(time.time()) + 120  # the request named: created two minutes from now

    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        cluster = Deciding(*svc.cluster.objs)  # type: ignore[attr-defined]
        svc.cluster = cluster
        data = urlencode({"team_id": TEAM, "user_id": "U0BOB", "channel_id": CHANNEL,
                          "command": "/wingman", "text": "approve again"}).encode()
        async with ClientSession() as http:
            async with http.post(f"{url}/slack/commands", data=data,
                                 headers=signed(data)) as resp:
                assert resp.status == 200
                answer = str((await resp.json())["blocks"])
            assert "StaleMessage" in answer and "/wingman approve again" in answer, answer
            assert "decisions" not in cluster.objs[0]["spec"]
            assert [r["reason"] for r in audited(svc)] == ["StaleMessage"]
            cluster.objs[0]["metadata"]["creationTimestamp"] = dt.datetime.fromtimestamp(
                created - 600, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            again = signed(data, str(int(time.time()) - 1))  # signed anew: not a replay
            async with http.post(f"{url}/slack/commands", data=data, headers=again) as resp:
                assert "Approve recorded" in str((await resp.json())["blocks"])
            assert [d["by"] for d in cluster.objs[0]["spec"]["decisions"]] == ["bob"]

    obj = request("again", 1)
    obj["metadata"]["creationTimestamp"] = dt.datetime.fromtimestamp(
        created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    run(tmp_path, obj, body=body)


def _texts(node: Any, style: Any = None) -> list[tuple[str, Any]]:
    """Every text a Block Kit structure shows, with how: ("mrkdwn" | "plain_text" | a rich
    text style | "preformatted")."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") in ("mrkdwn", "plain_text"):
            return [(str(node.get("text")), node["type"])]
        if node.get("type") == "text":
            return [(str(node.get("text")), style or node.get("style"))]
        inner = "preformatted" if node.get("type") == "rich_text_preformatted" else style
        for value in node.values():
            found += _texts(value, inner)
    elif isinstance(node, list):
        for value in node:
            found += _texts(value, style)
    return found


def test_text_written_by_others_is_only_ever_shown_as_code_and_never_floods_a_card(
        tmp_path: Path) -> None:
    """What a worker, a voter or an approver wrote is shown only as code (rich text that
    Slack parses for nothing), apart from Wingman's bold labels and plain words, so it cannot
    fake them, mention, alert a channel or link; it is cut to a few lines; and the same holds
    for the requester's notice and for replies (a request's name, a grant's output)."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        await svc.sync()
        reply = await svc.act("slack", "U0BOB", BOB, "pending")
        await svc.channels[0]._ephemeral(CHANNEL, "U0BOB", reply)  # type: ignore[attr-defined]
        shown = [m["blocks"] for _, m in fake.cards(CHANNEL)] + [
            e["blocks"] for e in fake.ephemeral]
        assert len(shown) == 5  # two cards, the notice, the pending reply
        for blocks in shown:
            for text, how in _texts(blocks):
                if any(f in text for f in ("EVIL", "alice", "evil.example", "channel")):
                    assert how in ({"code": True}, "preformatted"), (text, how)
            for text, _how in _texts(blocks):
                assert text.count("\n") <= 12, text  # no field floods the message
        notice = next(b for b in shown if "Request " in str(b) and len(b) == 1)
        assert all("\n" not in t for t, _ in _texts(notice))
        labels = [t for blocks in shown for t, how in _texts(blocks) if how == {"bold": True}]
        assert "Instruction: " in labels and "Status: " in labels
        for blocks in shown:  # each block within what a section's text may hold
            assert all(len("".join(t for t, _ in _texts(b))) <= 3000 for b in blocks)
        # the notification text is mrkdwn: the name in it is code, which Slack links not
        fallback = [str(p.get("text")) for m, p in fake.requests if m == "chat.postMessage"]
        assert "Wingman: approval request `approve.evil.example` (prd): Open" in fallback

    many = hostile("hostile-open", 1)
    many["status"]["consensus"]["votes"] = [  # 12 rationales of 300 characters shown
        {**vote, "rationale": "EVIL " + "x" * 400}
        for vote in many["status"]["consensus"]["votes"] * 12]
    run(tmp_path, many, hostile("hostile-rejected", 2, rejected=True),
        request("approve.evil.example", 3), body=body)


class _Granted(Granting):
    """The in-memory cluster whose client reads one grant: succeeded, its output forged."""

    command = "kubectl get cm -n apps"

    def client_as(self, person: Any, hints: Any) -> Any:
        command = self.command

        class Client:
            def grant_status(self, name: str) -> st.Status:
                return st.Status(state=st.State.SUCCEEDED, next="nothing more to do",
                                 kind="ExecutionGrant", name=name, exit_code=0,
                                 command=command,
                                 output="data\n" * 100 + "Next: ✅ Approved <!channel> "
                                        "<https://evil.example|approve here>")

        return Client()


def test_a_grant_s_output_is_shown_as_code_and_only_its_end(tmp_path: Path) -> None:
    """``status`` shows what the command printed as code (not as Wingman's own words, whose
    "Next:" it could fake), and only its last lines."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        svc.cluster = _Granted()
        reply = await svc.act("slack", "U0BOB", BOB, "status", name="web-0123456789")
        await svc.channels[0]._ephemeral(CHANNEL, "U0BOB", reply)  # type: ignore[attr-defined]
        (answer,) = fake.ephemeral
        shown = _texts(answer["blocks"])
        output = [t for t, how in shown if "evil.example" in t]
        assert output and all(how == {"code": True} for t, how in shown if t in output)
        assert output[0].count("\n") < 45  # its end: the last lines
        assert shown[-2:] == [("\nNext: ", None), ("nothing more to do", {"code": True})]

    run(tmp_path, body=body)


def test_status_shows_a_look_alike_in_a_grant_s_command_as_its_code_point(
        tmp_path: Path) -> None:
    """``status`` shows the grant's command as the card shows commands: a look-alike
    character (a Cyrillic e, U+0435, in ``web``) as its code point, flagged, never as the letter it
    imitates."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        cluster = _Granted()
        cluster.command = "kubectl delete pod w\u0435b -n apps"
        svc.cluster = cluster
        reply = await svc.act("slack", "U0BOB", BOB, "status", name="web-0123456789")
        shown = [(s.text, s.code) for s in reply.segments]
        assert ("kubectl delete pod w\\u{0435}b -n apps", True) in shown
        assert "\u0435" not in reply.plain and "non-ASCII" in reply.plain

    run(tmp_path, body=body)


def test_status_says_what_a_backslash_shown_as_its_code_point_is(tmp_path: Path) -> None:
    """A grant's command that spells out ``\\u{41}`` itself: ``status`` shows its backslash as
    ``\\u{005C}``, as the card does, and says so, as the card does, rather than leaving the
    person to believe the plain ASCII command holds other characters."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        cluster = _Granted()
        cluster.command = "kubectl exec web -n apps -- node -e 'console.log(\"\\u{41}\")'"
        svc.cluster = cluster
        reply = await svc.act("slack", "U0BOB", BOB, "status", name="web-0123456789")
        shown = [(s.text, s.code) for s in reply.segments]
        assert ("kubectl exec web -n apps -- node -e 'console.log(\"\\u{005C}u{41}\")'",
                True) in shown
        assert "a \\u{005C} is a backslash the command writes before u{" in reply.plain

    run(tmp_path, body=body)


def test_a_look_alike_character_in_a_command_is_shown_as_its_code_point(tmp_path: Path) -> None:
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        await svc.sync()
        ((_, card),) = fake.cards(CHANNEL)
        shown = _texts(card["blocks"])
        assert ("kubectl delete pod w\\u{0435}b -n apps", "preformatted") in shown
        assert any("non-ASCII (look-alike)" in t for t, _ in shown)

    run(tmp_path, request("lookalike", 1, commands=["kubectl delete pod w\u0435b -n apps"]),
        body=body)


def test_a_press_while_the_api_server_cannot_be_read_is_answered_never_a_500(
        tmp_path: Path) -> None:
    """The API server unreachable when an approver presses a button: the press is answered
    (ClusterUnavailable, ephemerally) and audited, not failed with an HTTP 500 and no word."""
    from .test_service import _UnreachableReads

    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        await svc.sync()
        [(ts, card)] = fake.cards(CHANNEL)
        svc.cluster = _UnreachableReads()
        data = approve_press(ts, card)
        async with ClientSession() as http, http.post(
                f"{url}/slack/interactive", data=data, headers=signed(data)) as resp:
            assert resp.status == 200
        assert fake.views == []
        assert "ClusterUnavailable" in json.dumps(fake.ephemeral)
        assert [(r["reason"], r["as"]) for r in audited(svc)] == [("ClusterUnavailable", "bob")]

    run(tmp_path, request("pressed", 1), body=body)


def test_after_the_signing_secret_changes_open_cards_get_buttons_signed_anew(
        tmp_path: Path) -> None:
    """The buttons are signed with a key derived from the signing secret: once it is rotated
    (in the Slack app and the Secret), every button of a card still awaiting a decision was
    refused (InvalidButton) until the request changed. The card is edited once with buttons
    the new key signs, and a press on it opens the decision modal."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        await svc.sync()
        config = svc.channels[0].config  # type: ignore[attr-defined]
        rotated = SlackChannel(config, TOKEN, "rotated-signing-secret", "prd", svc)
        rotated.started = time.time() - 3600
        svc.channels = [rotated]
        await svc.sync()
        [(ts, card)] = fake.cards(CHANNEL)
        assert card["edits"] == 1
        data = approve_press(ts, card)
        now = str(int(time.time()))
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "X-Slack-Request-Timestamp": now,
                   "X-Slack-Signature": slack_signature("rotated-signing-secret", now, data)}
        async with served(rotated) as rotated_url, ClientSession() as http, http.post(
                f"{rotated_url}/slack/interactive", data=data, headers=headers) as resp:
            assert resp.status == 200
        assert fake.ephemeral == [], fake.ephemeral  # no InvalidButton told
        [opened] = fake.views
        assert opened["trigger_id"] == "trig-1"

    run(tmp_path, request("pressed", 1), body=body)


TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
#: How long Slack waits for the answer to a button press, a modal's submission or a slash
#: command before it shows the person an error.
SLACK_WAITS = 3.0
#: Longer than Slack waits for an answer.
SLOW_SECONDS = 4.0


class _SlowDeciding(Deciding):
    """The in-memory cluster whose decisions take ``SLOW_SECONDS`` (an API server under
    load) unless ``go`` is set first; ``slow_reads``: reading the requests takes as long."""

    def __init__(self, *objs: dict[str, Any]) -> None:
        super().__init__(*objs)
        self.go = threading.Event()
        self.slow_reads = False

    def requests(self) -> list[dict[str, Any]]:
        if self.slow_reads:
            time.sleep(SLOW_SECONDS)
        return super().requests()

    def client_as(self, person: Any, hints: Any) -> Any:
        client = super().client_as(person, hints)
        go = self.go

        class Slow:
            def decide(self, name: str, verdict: str, reason: str, *, uid: str) -> None:
                go.wait(SLOW_SECONDS)
                client.decide(name, verdict, reason, uid=uid)

        return Slow()


def _slow_step_up(svc: ChatService) -> None:
    svc.cluster = _SlowDeciding(*svc.cluster.objs)  # type: ignore[attr-defined]
    svc.config = replace(svc.config, step_up=True)
    svc.step_up = StepUp({"bob": TOTP_SECRET}, started=time.time() - 600)


async def _post(http: ClientSession, url: str, payload: dict[str, Any]
                ) -> tuple[float, int, str]:
    """(seconds until answered, status, body) of the signed interactive ``payload``."""
    data = urlencode({"payload": json.dumps(payload)}).encode()
    began = time.monotonic()
    async with http.post(f"{url}/slack/interactive", data=data, headers=signed(data)) as resp:
        return time.monotonic() - began, resp.status, await resp.text()


def _submitted(view: dict[str, Any], reason: str, code: str, view_hash: str
               ) -> dict[str, Any]:
    """Bob submitting the decision modal ``view`` (each submission has its own hash)."""
    return {"type": "view_submission", "user": {"id": "U0BOB"}, "team": {"id": TEAM},
            "view": {"id": "V1", "hash": view_hash, "callback_id": view["callback_id"],
                     "private_metadata": view["private_metadata"],
                     "state": {"values": {"reason": {"reason": {"value": reason}},
                                          "code": {"code": {"value": code}}}}}}


async def _modal(http: ClientSession, url: str, fake: FakeSlack, svc: ChatService
                 ) -> dict[str, Any]:
    """Bob pressing Approve on the request's one card (posted by a sync): the decision modal
    it opened."""
    await svc.sync()
    [(ts, card)] = fake.cards(CHANNEL)
    data = approve_press(ts, card)
    async with http.post(f"{url}/slack/interactive", data=data, headers=signed(data)) as resp:
        assert resp.status == 200
    [opened] = fake.views
    view: dict[str, Any] = opened["view"]
    return view


def _saving(svc: ChatService, seconds: float, error: Exception | None = None) -> None:
    """The state ConfigMap's writes take ``seconds`` (under load), then fail with ``error``
    if given."""
    saving = svc.cluster.save_state

    def slow_save(state: dict[str, Any], **kwargs: Any) -> None:
        time.sleep(seconds)
        if error is not None:
            raise error
        saving(state, **kwargs)
    svc.cluster.save_state = slow_save  # type: ignore[method-assign]


def _wrong_code() -> str:
    right = pyotp.TOTP(TOTP_SECRET).now()
    return next(c for c in ("000000", "111111", "222222") if c != right)


async def _told(fake: FakeSlack, what: str = "", tries: int = 200) -> None:
    """Wait (at most ``tries`` times 50 ms) until an ephemeral message (holding ``what``) came."""
    for _ in range(tries):
        if fake.ephemeral and what in json.dumps(fake.ephemeral):
            return
        await asyncio.sleep(0.05)


async def _command_outlasting(http: ClientSession, url: str, text: str, response_url: str
                              ) -> None:
    """Bob's slash command ``text`` (its ``response_url`` given), answered in time (within
    Slack's 3 s) that it is under way."""
    form = urlencode({"team_id": TEAM, "user_id": "U0BOB", "channel_id": CHANNEL,
                      "command": "/wingman", "text": text,
                      "response_url": response_url}).encode()
    began = time.monotonic()
    async with http.post(f"{url}/slack/commands", data=form, headers=signed(form)) as resp:
        took = time.monotonic() - began
        assert resp.status == 200 and took < SLACK_WAITS, f"answered after {took:.1f} s"
        assert "Working on it" in await resp.text()


async def _told_in_the_channel_and_nothing_sent(url: str, fake: FakeSlack, svc: ChatService,
                                                text: str, aim: Callable[[str], str]) -> str:
    """After a sync, with step-up off, Bob's slash command ``text`` outlasting its answer,
    its response_url ``aim(inside)``, ``inside`` being the URL of a service inside the cluster:
    nothing reaches that service nor any response_url, and Bob is told in the channel that
    his Approve was recorded. Returns the inside service's URL."""
    await svc.sync()
    svc.config = replace(svc.config, step_up=False)
    with serving(WebhookReceiver()) as inside:
        response_url = aim(inside.url)
        async with ClientSession() as http:
            await _command_outlasting(http, url, text, response_url)
            await _told(fake)
        assert inside.deliveries == []
    assert fake.responses == []
    [told] = fake.ephemeral
    assert told["channel"] == CHANNEL and told["user"] == "U0BOB"
    assert "Approve recorded" in json.dumps(told["blocks"])
    return inside.url


def test_a_decision_slower_than_slacks_three_seconds_is_answered_in_time_and_made_once(
        tmp_path: Path) -> None:
    """Slack shows an error when a modal's submission is not answered within 3 s, though the
    decision goes on: a person who submits again sends the same one-time code, which would be
    refused as used (a wrong code, towards a lockout). A refusal known at once is still shown
    in the modal; a decision that takes longer is answered in time with the modal saying it
    is being recorded, its result follows as a message, and the same modal submitted again
    meanwhile is answered so, never taken as a wrong code; the decision is made once."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        async with ClientSession() as http:
            view = await _modal(http, url, fake, svc)
            # known at once: in the modal, as before
            took, status, text = await _post(http, url, _submitted(
                view, "r" * (limits.REASON + 1), "123456", "h1"))
            answer = json.loads(text)
            assert answer["response_action"] == "errors" and "reason" in answer["errors"]
            code = pyotp.TOTP(TOTP_SECRET).now()
            took, status, text = await _post(http, url, _submitted(view, "ok", code, "h2"))
            assert status == 200 and took < SLACK_WAITS, f"answered after {took:.1f} s"
            answer = json.loads(text)
            assert answer["response_action"] == "update", answer
            assert "is being recorded" in json.dumps(answer["view"])
            assert "submit" not in answer["view"]
            # submitted again while it is being recorded: not a wrong code
            took, status, text = await _post(http, url, _submitted(view, "ok", code, "h3"))
            assert status == 200 and took < SLACK_WAITS
            assert json.loads(text)["response_action"] == "update"
            svc.cluster.go.set()  # type: ignore[attr-defined]
            await _told(fake, "Approve recorded")
        told = json.dumps(fake.ephemeral)
        assert "Approve recorded" in told and "StepUp" not in told
        decisions = svc.cluster.objs[0]["spec"]["decisions"]  # type: ignore[attr-defined]
        assert decisions == [{"verdict": "Approve", "by": "bob", "reason": "ok"}]
        assert [d["reason"] for d in audited(svc)] == ["ReasonTooLong"]
        assert svc.step_up.stored() == {}  # no wrong code counted

    run(tmp_path, request("slow", 1), body=body, prepare=_slow_step_up)


def test_a_decision_refused_after_the_answer_is_told_as_a_message(tmp_path: Path) -> None:
    """A decision still running when the submission is answered and then refused (a wrong
    code, checked once the state is written) reaches the person as a message."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        async with ClientSession() as http:
            view = await _modal(http, url, fake, svc)
            _saving(svc, SLOW_SECONDS)  # the state ConfigMap write, under load
            took, status, text = await _post(http, url, _submitted(
                view, "ok", _wrong_code(), "h1"))
            assert status == 200 and took < SLACK_WAITS, f"answered after {took:.1f} s"
            assert json.loads(text)["response_action"] == "update"
            await _told(fake, tries=300)
        assert "StepUpFailed" in json.dumps(fake.ephemeral)
        assert "decisions" not in svc.cluster.objs[0]["spec"]  # type: ignore[attr-defined]

    run(tmp_path, request("refused", 1), body=body, prepare=_slow_step_up)


def test_a_press_whose_modal_is_not_ready_in_time_is_answered_and_told_to_press_again(
        tmp_path: Path) -> None:
    """A button's trigger_id opens a modal only within 3 s: a press whose request takes
    longer to read is answered in time, opens no modal with a spent trigger_id, and the
    person is told that nothing was decided and to press again."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        await svc.sync()
        [(ts, card)] = fake.cards(CHANNEL)
        svc.cluster.slow_reads = True  # type: ignore[attr-defined]
        data = approve_press(ts, card)
        async with ClientSession() as http:
            began = time.monotonic()
            async with http.post(f"{url}/slack/interactive", data=data,
                                 headers=signed(data)) as resp:
                took = time.monotonic() - began
                assert resp.status == 200 and took < SLACK_WAITS, f"answered after {took:.1f} s"
            await _told(fake)
        assert fake.views == []
        assert "press the button again" in json.dumps(fake.ephemeral)

    run(tmp_path, request("late", 1), body=body, prepare=_slow_step_up)


def test_a_slash_command_slower_than_slacks_three_seconds_is_answered_at_its_response_url(
        tmp_path: Path) -> None:
    """A slash command not answered within 3 s shows the person an error: one that takes
    longer (a decision, the API server under load) is answered in time that it is under way,
    and its result is sent to the command's response_url."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        await svc.sync()
        svc.config = replace(svc.config, step_up=False)
        async with ClientSession() as http:
            await _command_outlasting(http, url, "approve cmd fine", fake.response_url("cmd-1"))
            for _ in range(200):
                if fake.responses:
                    break
                await asyncio.sleep(0.05)
        [answer] = fake.responses
        assert answer["url"] == "/response/cmd-1" and answer["response_type"] == "ephemeral"
        assert "Approve recorded" in json.dumps(answer["blocks"])
        decisions = svc.cluster.objs[0]["spec"]["decisions"]  # type: ignore[attr-defined]
        assert decisions == [{"verdict": "Approve", "by": "bob", "reason": "fine"}]

    run(tmp_path, request("cmd", 1), body=body, prepare=_slow_step_up)


def test_a_modal_submitted_twice_in_a_moment_is_decided_once_and_its_result_told(
        tmp_path: Path) -> None:
    """A second submission of the modal while its decision is being made (a double click)
    is answered that it is being recorded, not checked as a used code; the result then
    reaches the person as a message even when the first answer showed it in the modal."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        async with ClientSession() as http:
            view = await _modal(http, url, fake, svc)
            _saving(svc, 0.4)  # the state ConfigMap write: a moment
            wrong = _wrong_code()
            first = asyncio.create_task(_post(http, url, _submitted(view, "ok", wrong, "h1")))
            await asyncio.sleep(0.2)
            _, status, again = await _post(http, url, _submitted(view, "ok", wrong, "h2"))
            assert status == 200 and json.loads(again)["response_action"] == "update"
            _, status, text = await first
            assert status == 200
            assert json.loads(text)["response_action"] == "errors"  # shown in the modal
            await _told(fake, tries=100)
        assert "StepUpFailed" in json.dumps(fake.ephemeral)  # and told, as promised
        assert [d["reason"] for d in audited(svc)] == ["StepUpFailed"]  # checked once
        assert svc.step_up.stored() == {"bob": {"failures": 1}}

    run(tmp_path, request("twice", 1), body=body, prepare=_slow_step_up)


def test_a_decision_that_fails_after_the_answer_is_told_and_close_waits_for_the_telling(
        tmp_path: Path) -> None:
    """A decision still running when its submission was answered ("being recorded... Wingman
    tells you the result") that then fails with an error nothing expected is told as such,
    saying it may have landed (it was told nothing); the channel's close, as a stopping
    service calls it, waits for the decision and that message."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        async with ClientSession() as http:
            view = await _modal(http, url, fake, svc)
            _saving(svc, SLOW_SECONDS, RuntimeError("a defect"))
            code = pyotp.TOTP(TOTP_SECRET).now()
            took, status, text = await _post(http, url, _submitted(view, "ok", code, "h1"))
            assert status == 200 and took < SLACK_WAITS, f"answered after {took:.1f} s"
            assert json.loads(text)["response_action"] == "update"
        [channel] = svc.channels
        assert isinstance(channel, SlackChannel)  # the one run() made
        await channel.close()  # what a stopping service does
        told = json.dumps(fake.ephemeral)
        assert "could not finish your decision" in told and "RuntimeError" in told, told
        assert "may or may not have been recorded" in told

    run(tmp_path, request("broken", 1), body=body, prepare=_slow_step_up)


def test_a_decision_that_fails_at_once_is_told_in_the_modal_never_a_500(tmp_path: Path) -> None:
    """A decision that fails within Slack's 3 s with an error nothing expected is answered as
    one that fails later is told: in the modal, saying it may have landed (a 500 would leave
    Slack showing only that something went wrong)."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        async with ClientSession() as http:
            view = await _modal(http, url, fake, svc)
            _saving(svc, 0, RuntimeError("a defect"))
            code = pyotp.TOTP(TOTP_SECRET).now()
            _, status, text = await _post(http, url, _submitted(view, "ok", code, "h1"))
            assert status == 200, (status, text)
            answer = json.loads(text)
            assert answer["response_action"] == "errors", answer
            shown = json.dumps(answer["errors"])
            assert "could not finish your decision" in shown and "RuntimeError" in shown
            assert "may or may not have been recorded" in shown

    run(tmp_path, request("broken", 1), body=body, prepare=_slow_step_up)


def test_a_slash_command_that_fails_at_once_is_answered_never_a_500(tmp_path: Path) -> None:
    """A slash command that fails within Slack's 3 s with an error nothing expected is
    answered saying so, as one that fails after its answer is told at its response_url."""
    def failing(svc: ChatService) -> None:
        async def act(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a defect")
        svc.act = act  # type: ignore[method-assign]

    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        async with ClientSession() as http:
            shown = await _command(http, url, "describe broken")
        assert "could not finish your command" in shown and "RuntimeError" in shown, shown

    run(tmp_path, request("broken", 1), body=body, prepare=failing)


@pytest.mark.parametrize("status", [307, 308, 302, 303])
def test_a_response_url_answering_with_a_redirect_is_not_followed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int) -> None:
    """Slack's response_url answering the later answer with a redirect elsewhere (a service
    inside the cluster): the HTTP client would follow it (a 307 or 308 posting the answer
    again there, a 302 or 303 as a GET); it is not followed, the log says why, and the
    person gets the result in the channel instead."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        def aim(inside: str) -> str:
            fake.redirects["/response/cmd-1"] = (status, inside + "?token=xoxb-secret")
            return fake.response_url("cmd-1")

        inside = await _told_in_the_channel_and_nothing_sent(url, fake, svc,
                                                             "approve moved fine", aim)
        [record] = [r for r in caplog.records if "redirect" in r.getMessage()]
        assert "not followed" in record.getMessage()
        assert record.__dict__["redirectTo"] == inside.removesuffix("/hook")
        assert record.__dict__["status"] == status

    run(tmp_path, request("moved", 1), body=body, prepare=_slow_step_up)


@pytest.mark.parametrize("aimed", ["inside", "https://[hooks.slack.com/commands/T/1/x"])
def test_a_response_url_that_is_not_slacks_gets_no_request_and_is_refused_audited(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, aimed: str) -> None:
    """A signed slash command (whoever holds the signing secret can sign one) whose
    response_url points elsewhere than Slack, such as a service inside the cluster, or is no
    URL at all: once the command outlasts its answer, nothing is sent there (no request the
    chat service can be aimed with); the refusal is logged and audited, and the person gets
    the result in the channel instead."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        await _told_in_the_channel_and_nothing_sent(
            url, fake, svc, "approve inside fine",
            lambda inside: inside if aimed == "inside" else aimed)
        [refusal] = audited(svc)
        assert refusal["reason"] == "ForeignResponseUrl" and refusal["as"] == "bob"
        assert ("http://127.0.0.1" if aimed == "inside" else "(?)") in refusal["message"]
        assert "/hook" not in refusal["message"] and "commands" not in refusal["message"]
        assert any("response_url is not Slack's" in r.getMessage() for r in caplog.records)

    run(tmp_path, request("inside", 1), body=body, prepare=_slow_step_up)


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://hooks.slack.com/commands/T0WINGMAN/123/AbC-x_9", True),
    ("https://hooks.slack.com:443/commands/T0WINGMAN/123/abc", True),
    ("https://hooks.slack-gov.com/commands/T0WINGMAN/123/abc", True),
    ("http://127.0.0.1:8099/response/cmd-1", True),  # the configured baseUrl's host
    ("http://hooks.slack.com/commands/T/1/abc", False),  # not https
    ("https://hooks.slack.com:8443/commands/T/1/abc", False),
    ("https://hooks.slack.com.evil.example/commands", False),
    ("https://hooks.slack.com@evil.example/commands", False),
    ("https://hooks.slack.com\\@evil.example/", False),
    ("https://hooks.slack.com#@evil.example/", False),
    ("https://hooks.slack.com\t.evil.example/", False),
    ("https://evil.example/?https://hooks.slack.com/", False),
    ("http://127.0.0.1:8098/response/cmd-1", False),  # another port of the same host
    ("http://127.0.0.1:8099.evil.example/response", False),
    ("http://169.254.169.254/latest/meta-data/", False),
    ("", False),
])
def test_only_slacks_response_urls_are_answered(url: str, allowed: bool) -> None:
    assert slack.response_url_allowed(url, "http://127.0.0.1:8099/api/") is allowed
    if "127.0.0.1" not in url:
        assert slack.response_url_allowed(url, "https://slack.com/api/") is allowed


async def _command(http: ClientSession, url: str, text: str) -> str:
    """Bob's slash command ``text`` in the Wingman channel (each signed anew: Slack's
    ``trigger_id`` differs): its answer (the blocks, as JSON)."""
    data = urlencode({"team_id": TEAM, "user_id": "U0BOB", "channel_id": CHANNEL,
                      "command": "/wingman", "text": text,
                      "trigger_id": f"trig-{time.monotonic_ns()}"}).encode()
    async with http.post(f"{url}/slack/commands", data=data, headers=signed(data)) as resp:
        assert resp.status == 200
        return json.dumps((await resp.json())["blocks"])


@pytest.mark.parametrize(("became", "reason"), [({"is_restricted": True}, "Guest"),
                                                 ({"deleted": True}, "Unmapped"),
                                                 ({"is_bot": True}, "Bot")])
def test_who_is_checked_afresh_for_every_decision_not_taken_from_minutes_before(
        tmp_path: Path, became: dict[str, Any], reason: str) -> None:
    """Whether a Slack user is a guest, deactivated or a bot was kept for five minutes: a
    person made a guest, deactivated or flagged as a bot went on deciding meanwhile. A
    decision (a command that changes a request, a modal's submission) asks Slack afresh; a
    read-only answer may use what was asked a moment before."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        svc.cluster = Deciding(*svc.cluster.objs)  # type: ignore[attr-defined]
        async with ClientSession() as http:
            assert "No request awaits" not in await _command(http, url, "describe changed")
            view = await _modal(http, url, fake, svc)  # pressed while still a member
            asked = sum(m == "users.info" for m, _ in fake.requests)
            fake.users["U0BOB"] = {"is_bot": False, **became}
            assert "changed" in await _command(http, url, "describe changed")  # read-only
            assert sum(m == "users.info" for m, _ in fake.requests) == asked
            refused = await _command(http, url, "approve changed now")
            _, status, text = await _post(http, url, _submitted(view, "ok", "", "h1"))
            assert status == 200
            answer = json.loads(text)
        assert "decisions" not in svc.cluster.objs[0]["spec"]
        assert reason in refused
        assert answer["response_action"] == "errors", answer
        assert metric(svc, "wingman_chat_refusals_total", channel="slack",
                      reason=reason) == 2

    run(tmp_path, request("changed", 1), body=body)


def test_a_decision_is_refused_when_slack_cannot_say_who_decides_now(tmp_path: Path) -> None:
    """A decision whose fresh check fails (Slack's users.info down) is refused
    (UserCheckUnavailable), whatever was known minutes before; a read-only command is
    answered from what was just known."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        svc.cluster = Deciding(*svc.cluster.objs)  # type: ignore[attr-defined]
        async with ClientSession() as http:
            await _command(http, url, "describe unsure")
            fake.refuse = lambda method, p: "ratelimited" if method == "users.info" else None
            assert "UserCheckUnavailable" not in await _command(http, url, "describe unsure")
            assert "UserCheckUnavailable" in await _command(http, url, "approve unsure ok")
        assert "decisions" not in svc.cluster.objs[0]["spec"]

    run(tmp_path, request("unsure", 1), body=body)


@pytest.mark.parametrize("status", [307, 308, 302])
def test_a_web_api_call_answered_with_a_redirect_is_not_followed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int) -> None:
    """The Web API (at baseUrl) answering with a redirect to another host: the HTTP client
    would follow it, a 307 or 308 posting the card (or the user asked about) there again. It
    is not followed: nothing reaches that host, the call fails as an outage would (retried
    with backoff; a decision's check of its sender refused), and the log says why, naming
    only the status and scheme://host:port."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        with serving(WebhookReceiver()) as inside:
            target = inside.url + "?token=xoxb-secret"
            fake.redirects["/api/chat.postMessage"] = (status, target)
            fake.redirects["/api/users.info"] = (status, target)
            await svc.sync()
            async with ClientSession() as http:
                refused = await _command(http, url, "approve moved ok")
            assert inside.deliveries == []
        assert fake.cards(CHANNEL) == []
        assert metric(svc, "wingman_chat_messages_failed_total", channel="slack") == 1
        assert "UserCheckUnavailable" in refused
        records = [r for r in caplog.records if "redirect" in r.getMessage()]
        assert {r.__dict__["method"] for r in records} == {"chat.postMessage", "users.info"}
        for record in records:
            assert "not followed" in record.getMessage()
            assert record.__dict__["redirectTo"] == inside.url.removesuffix("/hook")
            assert record.__dict__["status"] == status

    run(tmp_path, request("moved", 1), body=body)


class _StalledRedirect(QuietHandler):
    """A proxy at baseUrl answering every call with a redirect (``status``) whose page never
    comes whole: the headers and its first KiB, then nothing, the connection kept open until
    the client closes it (or 15 s)."""

    protocol_version = "HTTP/1.1"
    status = 307

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.status)
        self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        self.send_header("Content-Length", str(256 * 1024))
        self.end_headers()
        self.wfile.write(b"<html>moved</html>".ljust(1024))
        self.wfile.flush()
        self.connection.settimeout(15)
        try:
            self.rfile.read(1)  # until the client closes the connection
        except OSError:
            pass
        self.close_connection = True

    do_GET = do_POST  # users.info is a GET


@pytest.mark.parametrize("status", [302, 307])
def test_a_web_api_redirect_refused_leaves_no_connection_open(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int) -> None:
    """The Web API's answers that are redirects are refused inside the client's session
    (``_no_redirects``, raising in aiohttp's redirect hook, before the page is read): each
    such answer's connection is closed then, not held (until its page ends, or until garbage
    collection), so that a proxy at baseUrl redirecting every call and never finishing the
    page does not pile up open sockets in the chat pod, one per call."""
    handler = type("Redirect", (_StalledRedirect,), {"status": status})
    with local_serving(handler) as proxy:
        async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
            [channel] = svc.channels
            assert isinstance(channel, SlackChannel)
            channel.client.base_url = f"{proxy}/api/"
            gc.disable()  # what only the collector would close stays open
            try:
                async with ClientSession() as http:
                    for n in range(10):
                        said = await _command(http, url, f"approve moved{n} ok")
                        assert "UserCheckUnavailable" in said
                await asyncio.sleep(0.2)
                held = connections_to(os.getpid(), int(proxy.rsplit(":", 1)[1]))
            finally:
                gc.enable()
            refused = [r for r in caplog.records if "redirect" in r.getMessage()]
            assert len(refused) == 10 and refused[0].__dict__["status"] == status
            assert held == 0, f"{held} connections to the Web API left open"

        run(tmp_path, body=body)


def test_a_bot_token_slack_rejects_is_named_in_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong or revoked slack-bot-token failed every card and every person's check with
    only Slack's word for it (invalid_auth) in the delivery log, and nothing at all logged
    for the refused actions (UserCheckUnavailable, 'try again shortly'): both now say the
    token was rejected and which Secret key holds it, never the token."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        fake.token = "xoxb-revoked"  # Slack no longer takes the channel's token
        await svc.sync()
        async with ClientSession() as http:
            assert "UserCheckUnavailable" in await _command(http, url, "approve revoked ok")
        assert fake.cards(CHANNEL) == []
        [delivery] = [r for r in caplog.records if "delivery failed" in r.getMessage()]
        assert delivery.__dict__["reason"] == "BotTokenRejected"
        [check] = [r for r in caplog.records if "users.info" in r.getMessage()]
        for record in (delivery, check):
            error = record.__dict__["error"]
            assert "invalid_auth" in error and "slack-bot-token" in error, error
            assert TOKEN not in error

    run(tmp_path, request("revoked", 1), body=body)


async def _asked(fake: FakeSlack, method: str) -> None:
    """Until ``fake`` was asked ``method`` (10 s at most)."""
    for _ in range(200):
        if any(m == method for m, _ in fake.requests):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{method} never asked: {[m for m, _ in fake.requests]}")


async def _ended_unhealthy(watch: asyncio.Task[Any]) -> None:
    """The watch ends for the rejected token, and /healthz then fails naming it."""
    assert await asyncio.wait_for(watch, 10) == "BotTokenRejected"
    answer = await health([watch])
    assert (answer.status, answer.text) == (
        503, "not running: slack web api (BotTokenRejected)")


async def _logged(caplog: pytest.LogCaptureFixture, said: str, seconds: float = 10) -> None:
    """Wait until a log record says ``said`` (at most ``seconds``)."""
    for _ in range(int(seconds / 0.05)):
        if any(said in r.getMessage() for r in caplog.records):
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("error", sorted(slack.TOKEN_REJECTED))
def test_a_bot_token_slack_rejects_later_fails_healthz_naming_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, error: str) -> None:
    """Slack rejecting the bot token (revoked, the app uninstalled, the workspace gone) only
    made every delivery back off: /healthz stayed 200 for good while no approver could be
    reached, where Telegram's rejected token fails it. A rejection in any call (here a card)
    now ends the channel's watch, which /healthz names with its reason, counted for
    WingmanChatBotTokenRejected and logged naming the Secret key, never the token."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        [channel] = svc.channels
        assert isinstance(channel, SlackChannel)
        watch = asyncio.create_task(channel.watch(), name="slack web api")
        try:
            await _asked(fake, "auth.test")
            await asyncio.sleep(0.2)
            assert not watch.done() and (await health([watch])).status == 200  # token good
            fake.refuse = lambda _method, _params: error  # Slack no longer takes it
            await svc.sync()
            await _ended_unhealthy(watch)
        finally:
            watch.cancel()
        assert metric(svc, "wingman_chat_loop_failures_total", loop="slack-web-api",
                      kind="Unauthorized") == 1
        [ended] = [r for r in caplog.records if r.getMessage().startswith("slack ends")]
        assert ended.getMessage() == "slack ends: the bot token was rejected"
        assert ended.__dict__["reason"] == "BotTokenRejected"
        assert error in ended.__dict__["error"] and "slack-bot-token" in ended.__dict__["error"]
        assert TOKEN not in caplog.text

    run(tmp_path, request("revoked", 1), body=body)


def test_slack_unreachable_at_start_is_not_a_rejected_token(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The token check at start that cannot reach Slack (a 502, egress not open yet) says
    nothing of the token: the watch goes on, /healthz stays 200 and the log says the check
    failed; a rejection later still ends it."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        [channel] = svc.channels
        assert isinstance(channel, SlackChannel)
        fake.down = True
        watch = asyncio.create_task(channel.watch(), name="slack web api")
        try:
            await _logged(caplog, "checking the bot token failed")
            await asyncio.sleep(0.2)
            assert not watch.done() and (await health([watch])).status == 200
            fake.down = False
            fake.token = "xoxb-revoked"
            await svc.sync()
            assert await asyncio.wait_for(watch, 10) == "BotTokenRejected"
        finally:
            watch.cancel()
        [failed] = [r for r in caplog.records if "checking the bot token" in r.getMessage()]
        assert failed.__dict__["reason"] == "ChannelUnavailable"

    run(tmp_path, request("later", 1), body=body)


@pytest.mark.parametrize("outage", ["down", "rate limited"])
def test_a_token_revoked_while_its_check_at_start_got_no_answer_fails_healthz(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, outage: str) -> None:
    """The token check at start got no answer (Slack unreachable, or its rate limit), and the
    token was revoked before Slack answered again, on a pod that makes no other call (nothing
    to post): the check was made once, so the pod stayed healthy with a token Slack rejects
    until some later call failed. The check is made again with back-off until Slack answers:
    the rejection then ends the watch, and /healthz fails naming it."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        [channel] = svc.channels
        assert isinstance(channel, SlackChannel)
        if outage == "down":
            fake.down = True
        else:
            fake.glitches, fake.glitch_paths = [(429, b"<html>Too Many Requests</html>")], (
                "auth.test",)
        watch = asyncio.create_task(channel.watch(), name="slack web api")
        try:
            await _logged(caplog, "checking the bot token failed")
            assert not watch.done() and (await health([watch])).status == 200
            fake.token = "xoxb-revoked"
            fake.down = False
            await _ended_unhealthy(watch)
        finally:
            watch.cancel()
        assert TOKEN not in caplog.text

    run(tmp_path, request("idle", 1), body=body)


@pytest.mark.parametrize("answer", [
    (503, b"<html><body>503 Service Unavailable</body></html>"),  # an edge's error page
    (502, b'{"ok": false, "err'),  # a JSON answer cut short by a proxy
    (200, b'{"ok": tr'),
    (429, b"<html>Too Many Requests</html>"),
    (502, b'{"ok": false, "error": "\xff'),  # cut inside a character: no UTF-8
])
def test_an_answer_slack_s_client_cannot_read_at_start_is_not_a_rejected_token(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, answer: tuple[int, bytes]) -> None:
    """The token check at start answered with a page that is no JSON (an error page of
    Slack's edge or of a proxy, a body cut short) says nothing of the token either: the
    watch goes on and /healthz stays 200 (else the pod restarts in a loop for as long as
    Slack answers so), and the log says the check failed."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        [channel] = svc.channels
        assert isinstance(channel, SlackChannel)
        fake.glitches, fake.glitch_paths = [answer], ("auth.test",)
        watch = asyncio.create_task(channel.watch(), name="slack web api")
        try:
            for _ in range(200):
                if watch.done() or any("checking the bot token failed" in r.getMessage()
                                       for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            assert not watch.done() and (await health([watch])).status == 200, (
                (await health([watch])).text)
        finally:
            watch.cancel()
        [failed] = [r for r in caplog.records if "checking the bot token" in r.getMessage()]
        assert failed.__dict__["reason"] == "ChannelUnavailable"
        assert TOKEN not in caplog.text

    run(tmp_path, request("later", 1), body=body)


@pytest.mark.parametrize("answer", [b'{"ok": true}', b'{"ok": true, "user": "U0BOB"}',
                                    b'{"ok": true, "user": {"id": "U0SOMEONE"}}'])
def test_a_users_info_answer_that_says_nothing_of_the_sender_decides_nothing(
        tmp_path: Path, answer: bytes) -> None:
    """A users.info answer without the user asked about (a proxy's, or another user's) was
    read as a person with no flags: neither bot, guest nor deactivated. It says nothing of
    the sender, so the action is refused (UserCheckUnavailable)."""
    async def body(url: str, fake: FakeSlack, svc: ChatService) -> None:
        svc.cluster = Deciding(*svc.cluster.objs)  # type: ignore[attr-defined]
        fake.users["U0BOB"] = {"is_restricted": True}  # what Slack would have said
        fake.glitches, fake.glitch_paths = [(200, answer)], ("users.info",)
        async with ClientSession() as http:
            assert "UserCheckUnavailable" in await _command(http, url, "approve mute ok")
        assert "decisions" not in svc.cluster.objs[0]["spec"]

    run(tmp_path, request("mute", 1), body=body)
