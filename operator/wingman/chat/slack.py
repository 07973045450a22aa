"""The Slack channel, with Slack's own SDK (``slack_sdk``: the async Web API client and the
request signature verifier; ``baseUrl`` points the client elsewhere).

Requests are posted to ``chat.slack.channel`` as Block Kit messages with Approve and Reject
buttons and updated in place (``chat.update``); notices for requesters go to
``requesterChannel`` (default: the same channel). Slack calls back on two endpoints of the chat
Service, which the Slack app's *Interactivity* and *Slash command* request URLs name:

- ``POST /slack/interactive``: a button press opens a modal (``views.open``) that shows the
  request again and asks for the reason (required to reject) and, where the environment asks
  for step-up, the one-time code; its submission (``view_submission``) is the decision.
- ``POST /slack/commands``: ``/wingman pending | describe <request> | approve <request>
  [reason] | reject <request> <reason> | exec <request> <command> | status <grant> |
  confirm <code>``, answered ephemerally.

Slack waits 3 seconds for the answer to a button press, a modal's submission and a slash
command: each is answered within ``ANSWER_SECONDS``, and what is still running then goes on to
its end (``_keep``; ``close`` lets it end): a decision's result then comes as an ephemeral
message (the modal says it is being recorded; the same person's further submissions meanwhile
are not taken, as they would reuse the one-time code), a command's to its ``response_url``
when that is Slack's (``response_url_allowed``; another is refused, ``ForeignResponseUrl``,
and nothing is sent to it: the answer is an ephemeral message instead).

Every inbound request must carry a valid Slack signature (v0: ``X-Slack-Signature`` is
``v0=`` + HMAC-SHA256 of ``v0:<X-Slack-Request-Timestamp>:<body>`` with the app's signing
secret, and the timestamp must be within five minutes; a missing or malformed timestamp or
signature is a bad signature, 401) and is handled once: the same signature again is a replay
(refused, 409; remembered for ``REPLAY_SECONDS``, longer than the ten minutes a signature
verifies in, so that a wall clock stepped back does not open a gap). Which signatures were
seen is memory, so a request signed before the process
started (``started``; the timestamp is in whole seconds) is refused too
(``SignedBeforeStart``, 409): an earlier process may have handled it. Slack does not retry
slash commands and interactive requests (only the Events API, which Wingman does not use),
so nothing Slack sends again is lost: the person who sent it in the moment of a restart sees
Slack's error and does it again, signed anew.
The body is read in full before it is verified, up to 256 KiB (larger: 413)
within 10 seconds (else, or when the sender hangs up first: 408);
a signed interactive payload that is not a JSON object (or not one the parser can read: nested
too deeply, a number too long) is a 400.
Refused with an answer and an audit record: another workspace, bots, guests (multi- and
single-channel guests, as ``users.info`` says, asked afresh for each decision; when Slack
cannot say, the action is refused),
other channels, buttons that do not verify or belong to another environment, and buttons on a
message that is not the request's current message. A card Slack refuses for what it holds
(``msg_too_long``, ``invalid_blocks``, ...) is sent again as the short card
(``render.slack_summary``, with the same buttons), so that approvers are notified all the same;
messages Slack refuses even so fail alone (``MessageRefused``): the service records it and goes
on with the other requests.
The bot token is checked at start (``auth.test``, tried again with back-off until Slack accepts
or rejects it);
Slack rejecting it then or in any later call (``TOKEN_REJECTED``) ends ``watch``, so that
/healthz fails naming it and the restarted pod reads the Secret again, as Telegram's polling
does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urljoin, urlsplit

from aiohttp import (
    ClientError,
    ClientSession,
    ClientTimeout,
    TraceConfig,
    TraceRequestRedirectParams,
    web,
)
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from wingman.chat import render
from wingman.chat.guard import Refusal, ReplayGuard, refuse
from wingman.chat.render import Notice, RequestView
from wingman.chat.service import (
    RETIRE_SECONDS,
    C,
    CardGone,
    ChannelError,
    ChatService,
    MessageRefused,
    Reply,
    T,
    command_args,
    words,
)
from wingman.model import limits
from wingman.settings import ChatPerson, SlackConfig

log = logging.getLogger("wingman.chat.slack")
MAX_BODY = 256 * 1024
#: Seconds a request body has to arrive whole (Slack sends it at once).
BODY_SECONDS = 10.0
DECIDE_VIEW = "wingman_decide"
#: How long a button pressed on a card still being posted waits for the post to end: its
#: modal must open within the 3 seconds the press's trigger_id is valid.
POSTING_WAIT_SECONDS = 1.5
#: Slack shows the person an error when a button press, a modal's submission or a slash
#: command is not answered within 3 seconds. What is still running after this many seconds
#: goes on, and its result is sent as a message (the modal's: ephemeral; the command's: to its
#: ``response_url``) instead of in the answer.
ANSWER_SECONDS = 2.0
#: A button's ``trigger_id`` opens a modal only within 3 seconds of the press: a modal not
#: ready this many seconds after the press arrived is not opened with it (the person is told
#: to press again).
TRIGGER_SECONDS = 2.5
#: Seconds the decisions and answers still running get to end when the process stops.
CLOSE_SECONDS = 10.0
#: Web API errors about the message itself: sending it again cannot help.
REFUSED_MESSAGE = frozenset({
    "msg_too_long", "no_text", "invalid_blocks", "invalid_blocks_format",
    "too_many_attachments", "invalid_attachments", "invalid_arguments",
    "markdown_text_conflict", "invalid_metadata_format", "invalid_metadata_schema",
    "metadata_too_large"})
#: Web API errors saying the bot token is not (or no longer) valid.
TOKEN_REJECTED = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked",
                            "token_expired"})
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
#: Seconds either side of the wall clock a request's timestamp may be (slack_sdk's
#: ``SignatureVerifier``, as Slack documents): a captured request verifies for twice as long.
SIGNATURE_WINDOW_SECONDS = 300
#: Seconds the signatures handled are remembered (on the monotonic clock): the span a
#: signature verifies in, and a minute more, so that a replay is refused even should the wall
#: clock be stepped back meanwhile (an NTP correction) by up to that minute.
REPLAY_SECONDS = SIGNATURE_WINDOW_SECONDS * 2 + 60
#: Seconds a Web API call may take (connecting, sending, the answer).
WEB_API_SECONDS = 15.0
#: Seconds before the bot token's check at start (``auth.test``) is tried again after it got
#: no answer (Slack unreachable, a 5xx, the rate limit, an answer that cannot be read):
#: doubling up to ``AUTH_CHECK_MAX_SECONDS``, or Slack's Retry-After when longer.
AUTH_CHECK_FIRST_SECONDS = 1.0
AUTH_CHECK_MAX_SECONDS = 60.0
#: Seconds what ``users.info`` said of a person (bot, guest, deactivated) is kept for
#: read-only answers; a decision asks Slack afresh.
USER_CHECK_SECONDS = 300.0
#: Command verbs that change a request (or create its grant): their sender is checked afresh.
CHANGING = frozenset({"approve", "reject", "exec", "confirm"})
#: Where Slack's ``response_url`` points (``https://hooks.slack.com/commands/...``; GovSlack's
#: hooks host): a later answer is posted only there, or to ``baseUrl``'s scheme, host and port.
RESPONSE_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
#: What may follow the host of a response URL: a path (and query) of plain URL characters,
#: none that parsers read differently (``@``, a backslash, ``#``, whitespace, ``:``).
_RESPONSE_REST = re.compile(r"/[A-Za-z0-9/_.~%+=&?-]*")
_R = TypeVar("_R")


def reply_blocks(reply: Reply) -> list[dict[str, Any]]:
    """A reply's blocks: its card, or its text with what was not Wingman's own (names,
    commands, command output, refusal details) as code (``render.slack_rich``)."""
    if reply.view is not None:
        return render.slack_card(reply.view)
    return [render.slack_rich([(s.text, render.THEIRS if s.code else render.OWN)
                               for s in reply.segments])]


class SlackChannel:
    name = "slack"

    def __init__(self, config: SlackConfig, token: str, signing_secret: str,
                 environment: str, service: ChatService, *, started: float | None = None
                 ) -> None:
        from wingman.chat.guard import ButtonSigner

        self.config = config
        self.client = AsyncWebClient(token=token, base_url=config.base_url,
                                     timeout=int(WEB_API_SECONDS))
        self.verifier = SignatureVerifier(signing_secret)
        self.signer = ButtonSigner(signing_secret, self.name, environment)
        self.button_key = self.signer.key_id  # cards whose buttons it did not sign: edited
        self.environment = environment
        self.service = service
        self.replays = ReplayGuard(ttl=REPLAY_SECONDS)
        self.retired = ReplayGuard(ttl=RETIRE_SECONDS)  # old copies edited, by message
        #: when this process started (epoch seconds): requests signed before are refused
        self.started = time.time() if started is None else started
        self._users: dict[str, tuple[float, dict[str, Any]]] = {}
        #: the decision submitted in a modal still being made, by Slack user
        self._deciding: dict[str, _Deciding] = {}
        #: work that goes on after Slack was answered (kept until done: never dropped)
        self._later: set[asyncio.Task[Any]] = set()
        #: set once Slack rejects the bot token, in any call (``watch`` then ends)
        self._rejected = asyncio.Event()
        self._rejection = ""

    # -- Web API -------------------------------------------------------------------------
    async def _call(self, what: str, method: Any, **kwargs: Any) -> Any:
        if self.client.session is None or self.client.session.closed:
            # slack_sdk's client follows redirects (aiohttp's default, which it does not
            # change): its session is one of our own, which refuses them (``_no_redirects``)
            self.client.session = ClientSession(timeout=ClientTimeout(total=WEB_API_SECONDS),
                                                 trace_configs=[_no_redirects()])
        try:
            return await method(**kwargs)
        except _Redirected as exc:
            log.warning("slack: the Web API answered with a redirect, which is not followed "
                        "(a call goes to baseUrl only); the call failed",
                        extra={"method": what, "status": exc.status, "redirectTo": exc.where})
            raise ChannelError(f"Slack {what} failed: answered with a redirect "
                               f"({exc.status}), which is not followed") from None
        except SlackApiError as exc:
            # an answer slack_sdk could not read (a JSON body cut short, a proxy's page) comes
            # with aiohttp's response, not a SlackResponse: no error of Slack's, only a status
            answer = exc.response
            data = answer.data if isinstance(answer, AsyncSlackResponse) else None
            error = str(data.get("error") or "") if isinstance(data, dict) else ""
            status = getattr(answer, "status_code", None) or getattr(answer, "status", None)
            if error in ("message_not_found", "cant_update_message"):
                raise CardGone(f"Slack {what}: {error}") from None
            if error in REFUSED_MESSAGE:
                raise MessageRefused(f"Slack refused {what}: {error}") from None
            if error in TOKEN_REJECTED:
                self._rejection = (f"Slack {what} failed: {error}: Slack rejected the bot "
                                   "token; put the app's current Bot User OAuth Token in the "
                                   "chat Secret's key slack-bot-token")
                self._rejected.set()
                raise TokenRejected(self._rejection) from None
            retry = None
            if status == 429:
                header = str(answer.headers.get("Retry-After", ""))
                retry = float(header) if header.isascii() and header.isdigit() else None
            raise ChannelError(f"Slack {what} failed: {error or status or 'no answer'}",
                               retry_after=retry) from None
        except (ClientError, OSError, TimeoutError) as exc:
            raise ChannelError(f"Slack {what} failed: {type(exc).__name__}") from None
        except UnicodeDecodeError:  # a JSON answer that is no UTF-8 (aiohttp reads it)
            raise ChannelError(f"Slack {what} failed: an answer that is no UTF-8") from None

    async def watch(self) -> str:
        """Check the bot token (``auth.test``) until Slack answers, then wait until Slack
        rejects it, in that check or in any later call (a card, a notice, a person asked
        about): then count it (``wingman_chat_loop_failures_total``, ``loop="slack-web-api"``,
        ``kind="Unauthorized"``), log it and end with its reason, so that /healthz fails
        naming it and the restarted pod reads the Secret again, as Telegram's polling does
        (``run.health``). A check that gets no answer (Slack unreachable, a 5xx, the rate
        limit, an answer that cannot be read) says nothing of the token: it is logged and tried
        again with back-off (``AUTH_CHECK_FIRST_SECONDS`` doubling to
        ``AUTH_CHECK_MAX_SECONDS``, or Slack's Retry-After), so that a token revoked meanwhile
        ends the watch even on a pod that makes no other call."""
        delay = AUTH_CHECK_FIRST_SECONDS
        while not self._rejected.is_set():
            wait = delay
            try:
                await self._call("auth.test", self.client.auth_test)
                break  # Slack took the token
            except TokenRejected:
                break  # ``_rejected`` is set
            except ChannelError as exc:
                wait = max(delay, exc.retry_after or 0.0)
                log.warning("slack: checking the bot token failed; checking it again", extra={
                    "reason": exc.reason, "error": exc.message[:300], "retryInSeconds": wait})
            except Exception as exc:  # noqa: BLE001 - only a rejected token ends the watch
                log.warning("slack: checking the bot token failed; checking it again", extra={
                    "reason": "Unexpected", "errorType": type(exc).__name__,
                    "retryInSeconds": wait})
            try:  # a rejection in another call meanwhile ends the wait
                await asyncio.wait_for(self._rejected.wait(), wait)
            except TimeoutError:
                pass
            delay = min(delay * 2.0, AUTH_CHECK_MAX_SECONDS)
        await self._rejected.wait()
        self.service.metrics.loop_failures.labels(self.service.env, "slack-web-api",
                                                  "Unauthorized").inc()
        log.error("slack ends: the bot token was rejected",
                  extra={"reason": TokenRejected.reason, "error": self._rejection[:300]})
        return TokenRejected.reason

    def _buttons(self, v: RequestView) -> list[tuple[str, str, str]]:
        return [("wingman_approve", "Approve", self.signer.sign("approve", v.uid)),
                ("wingman_reject", "Reject", self.signer.sign("reject", v.uid))]

    async def _card(self, what: str, method: Any, v: RequestView, **kwargs: Any) -> Any:
        """Send the card; if Slack refuses it, the short card (``render.slack_summary``, with
        the same buttons), so that approvers are notified all the same; should Slack refuse
        that too, the refusal stands."""
        buttons = self._buttons(v)
        try:
            return await self._call(what, method, text=render.slack_fallback(v),
                                    blocks=render.slack_card(v, buttons), **kwargs)
        except MessageRefused as exc:
            log.warning("slack refused a card; sending the short card",
                        extra={"request": v.name, "error": exc.message[:200]})
            return await self._call(what, method, text=render.slack_fallback(v),
                                    blocks=render.slack_summary(v, buttons), **kwargs)

    async def post_card(self, v: RequestView) -> dict[str, Any]:
        resp = await self._card("chat.postMessage", self.client.chat_postMessage, v,
                                channel=self.config.channel, unfurl_links=False,
                                unfurl_media=False)
        return {"channel": str(resp["channel"]), "ts": str(resp["ts"])}

    async def update_card(self, ref: dict[str, Any], v: RequestView) -> None:
        await self._card("chat.update", self.client.chat_update, v, channel=ref["channel"],
                         ts=ref["ts"])

    async def notify(self, v: RequestView, notice: Notice) -> None:
        channel = (self.config.requester_channel or self.config.channel
                   if notice.audience == "requester" else self.config.channel)
        await self._call("chat.postMessage", self.client.chat_postMessage, channel=channel,
                         text=render.slack_fallback(v),
                         blocks=[render.slack_rich([(t, render.THEIRS if theirs else render.OWN)
                                                    for t, theirs in notice.parts])],
                         unfurl_links=False, unfurl_media=False)

    async def close(self) -> None:
        """Let the decisions and answers still running end (``CLOSE_SECONDS`` at most), then
        close the client's session."""
        if self._later:
            _done, running = await asyncio.wait(set(self._later), timeout=CLOSE_SECONDS)
            if running:
                log.warning("slack: work still running when the chat service stopped",
                            extra={"tasks": len(running)})
        session = getattr(self.client, "session", None)
        if session is not None:
            await session.close()

    # -- inbound -------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        app.router.add_post("/slack/interactive", self.interactive)
        app.router.add_post("/slack/commands", self.commands)

    async def _verified(self, request: web.Request) -> bytes:
        """The body of a correctly signed, first-seen request, or Refusal."""
        if (request.content_length or 0) > MAX_BODY:
            raise refuse("TooLarge", f"the request body is larger than {MAX_BODY} bytes")
        chunks: list[bytes] = []
        size = 0
        try:  # a sender that trickles or stalls must not hold a connection for good
            async with asyncio.timeout(BODY_SECONDS):
                while size <= MAX_BODY:  # read() answers what has arrived: read on to the end
                    chunk = await request.content.read(MAX_BODY + 1 - size)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
        except (TimeoutError, ConnectionError):
            raise refuse("IncompleteBody", f"the request body did not arrive whole within "
                         f"{BODY_SECONDS:g} seconds") from None
        if size > MAX_BODY:
            raise refuse("TooLarge", f"the request body is larger than {MAX_BODY} bytes")
        body = b"".join(chunks)
        ts = request.headers.get("X-Slack-Request-Timestamp", "")
        sig = request.headers.get("X-Slack-Signature", "")
        if not self._signed(body, ts, sig):
            raise refuse("BadSignature", "the request's Slack signature does not verify (or "
                         "its timestamp is not within five minutes)")
        if int(ts) < self.started:  # an earlier process may have handled it: none is twice
            raise refuse("SignedBeforeStart", f"this request was signed at {_utc(int(ts))}, "
                         "before Wingman's chat service started (at "
                         f"{_utc(self.started)}), and may have been handled already, so it "
                         "is not handled now: send it again")
        if self.replays.seen(f"sig:{sig}"):
            raise refuse("Replayed", "this request was already handled")
        return body

    def _signed(self, body: bytes, timestamp: str, signature: str) -> bool:
        """Whether the v0 signature verifies; anything malformed (no timestamp, not digits,
        a body that is not UTF-8) simply does not."""
        if not _TIMESTAMP.fullmatch(timestamp) or not signature.isascii():
            return False
        try:
            return self.verifier.is_valid(body=body, timestamp=timestamp, signature=signature)
        except (ValueError, TypeError):
            return False

    async def _actor(self, team: str, user_id: str, *, fresh: bool = False
                     ) -> ChatPerson | None:
        """Refusal for another workspace, bots, guests and deactivated accounts; else the
        mapped person (or None). What Slack's ``users.info`` says is kept for
        ``USER_CHECK_SECONDS`` for read-only answers (a button opening its modal, ``pending``,
        ``describe``, ``status``); ``fresh`` (a decision, a grant: anything that changes a
        request) asks Slack again, and is refused when Slack cannot say."""
        if team != self.config.team_id:
            raise refuse("ForeignWorkspace", "Wingman takes no decisions from this Slack "
                         "workspace")
        cached = self._users.get(user_id)
        if fresh or cached is None or time.monotonic() - cached[0] > USER_CHECK_SECONDS:
            try:
                resp = await self._call("users.info", self.client.users_info, user=user_id)
            except ChannelError as exc:
                log.warning("slack: users.info failed, so whether the sender is a bot, a "
                            "guest or deactivated is not known; the action is refused",
                            extra={"user": user_id, "reason": exc.reason,
                                   "error": exc.message[:300]})
                raise refuse("UserCheckUnavailable", "Slack could not say who you are right "
                             "now, so nothing was done; try again shortly") from exc
            info = resp.get("user")
            if not isinstance(info, dict) or info.get("id") != user_id:
                # not the user asked about (a proxy's answer, another user's): says nothing
                log.warning("slack: users.info answered without the user asked about; the "
                            "action is refused", extra={"user": user_id})
                raise refuse("UserCheckUnavailable", "Slack could not say who you are right "
                             "now, so nothing was done; try again shortly")
            self._users[user_id] = (time.monotonic(), info)
        else:
            info = cached[1]
        if info.get("is_bot") or info.get("is_app_user"):
            raise refuse("Bot", "bots cannot act on requests")
        if info.get("is_restricted") or info.get("is_ultra_restricted"):
            raise refuse("Guest", "guest accounts cannot act on requests")
        if info.get("deleted"):
            raise refuse("Unmapped", "deactivated accounts cannot act on requests")
        return self.service.config.person_for_slack(user_id)

    async def interactive(self, request: web.Request) -> web.Response:
        arrived = asyncio.get_running_loop().time()
        user_id = "unknown"
        try:
            body = await self._verified(request)
        except Refusal as refusal:
            await self.service.refused(self.name, user_id, refusal)
            return _refused(refusal)
        try:
            payload = json.loads(parse_qs(body.decode())["payload"][0])
        except (KeyError, IndexError, ValueError, RecursionError):  # too deeply nested
            payload = None
        if not isinstance(payload, dict):
            return web.Response(status=400, text="expected a form field 'payload' with a JSON "
                                "object")
        user_id = str(_obj(payload.get("user")).get("id", "unknown"))
        team = str(_obj(payload.get("team")).get("id") or
                   _obj(payload.get("user")).get("team_id") or "")
        kind = payload.get("type")
        if kind == "block_actions":
            # answered within ANSWER_SECONDS; the press is handled to its end all the same
            await self._within(self._button(payload, user_id, team, arrived), arrived)
            return web.Response(text="")
        if kind == "view_submission":
            return await self._submission(payload, user_id, team, arrived)
        return web.Response(text="")

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Keep ``task`` until it is done (it goes on after Slack was answered); what it
        raises is logged."""
        self._later.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._later.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("slack: handling a request failed with an unexpected error",
                          extra={"errorType": type(t.exception()).__name__})
        task.add_done_callback(done)

    async def _within(self, work: Coroutine[Any, Any, _R] | asyncio.Task[_R], arrived: float
                      ) -> asyncio.Task[_R]:
        """``work`` as a task, waited for until ``ANSWER_SECONDS`` after the request
        ``arrived`` (the loop's time), not longer: done or not, it goes on (``_keep``)."""
        task = work if isinstance(work, asyncio.Task) else asyncio.create_task(work)
        self._keep(task)
        left = arrived + ANSWER_SECONDS - asyncio.get_running_loop().time()
        await asyncio.wait({task}, timeout=max(left, 0.0))
        return task

    async def _button(self, payload: dict[str, Any], user_id: str, team: str, arrived: float
                      ) -> None:
        """A press: the decision modal opened with its ``trigger_id`` (valid for 3 s: not
        opened once ``TRIGGER_SECONDS`` have passed since the press arrived, and the person is
        told to press again, as they are when Slack does not open it), or a refusal told."""
        channel = str(_obj(payload.get("channel")).get("id") or
                      _obj(payload.get("container")).get("channel_id") or "")
        person: ChatPerson | None = None
        try:
            person = await self._actor(team, user_id)
            if channel != self.config.channel:
                raise refuse("WrongChannel", "Wingman takes no decisions in this channel")
            actions = payload.get("actions")
            if not isinstance(actions, list) or len(actions) != 1 or not isinstance(
                    actions[0], dict):
                raise refuse("InvalidButton", "one button at a time")
            button = self.signer.check(str(actions[0].get("value", "")))
            verb = {"wingman_approve": "approve", "wingman_reject": "reject"}.get(
                str(actions[0].get("action_id")))
            if verb != button.verb:
                raise refuse("InvalidButton", "this button is not one Wingman posted")
            ref = await self.service.current_ref(button.uid, self.name,
                                                 POSTING_WAIT_SECONDS)
            ts = str(_obj(payload.get("container")).get("message_ts") or
                     _obj(payload.get("message")).get("ts") or "")
            if ref is None or ref.get("ts") != ts or ref.get("channel") != channel:
                if ref is not None and ts and not self.retired.seen(f"{channel}:{ts}"):
                    # a copy (a post given up on, arrived all the same)
                    await self._retire(channel, ts, ref, self.service.request_name(button.uid))
                raise refuse("StaleButton", "this is not the request's current message: use "
                             "the latest one")
            if person is None:
                raise refuse("Unmapped", "you are not mapped to a Kubernetes user for "
                             f"environment {self.environment}: ask an administrator to add "
                             "your Slack id to chat.people")
            await self.service.refreshed()
            v = self.service.find(uid=button.uid, channel=self.name)
            from wingman.chat.guard import check_decision

            check_decision(v, person, verb, self.service.clock())
            trigger, value = str(payload.get("trigger_id", "")), str(actions[0]["value"])
            if asyncio.get_running_loop().time() > arrived + TRIGGER_SECONDS:
                raise ChannelError(f"the decision form was not ready within "
                                   f"{TRIGGER_SECONDS:g} s of the press")
            try:
                await self._call("views.open", self.client.views_open, trigger_id=trigger,
                                 view=self._modal(v, verb, value))
            except MessageRefused as exc:  # as the card was: the short card's modal
                log.warning("slack refused a modal; opening it with the short card",
                            extra={"request": v.name, "error": exc.message[:200]})
                await self._call("views.open", self.client.views_open, trigger_id=trigger,
                                 view=self._modal(v, verb, value, short=True))
        except Refusal as refusal:
            reply = await self.service.refused(self.name, user_id, refusal, person=person)
            await self._ephemeral(channel or self.config.channel, user_id, reply)
        except ChannelError as exc:  # nothing was decided: say so, or the press did nothing
            log.warning("slack modal failed", extra={"error": exc.message[:200]})
            await self._ephemeral(channel or self.config.channel, user_id, Reply((
                T("The decision form did not open ("), C(exc.message[:200]),
                T("); nothing was decided: press the button again"))))

    async def _retire(self, channel: str, ts: str, ref: dict[str, Any], name: str) -> None:
        """Make the message ``ts``, a card of a request whose current card is ``ref`` (a copy
        posted when a post was given up on but arrived all the same), say so, without its
        buttons, linking to the current card (``chat.getPermalink``; without the link when
        Slack does not give it). A failure is logged: the press is refused all the same. Tried
        at most once per ``RETIRE_SECONDS`` for one message (``retired``)."""
        link: dict[str, Any] = {"type": "text", "text": "current card"}
        try:
            got = await self._call("chat.getPermalink", self.client.chat_getPermalink,
                                   channel=str(ref.get("channel", "")),
                                   message_ts=str(ref.get("ts", "")))
            url = str(got.get("permalink") or "")
            if url.startswith("https://"):
                link = {"type": "link", "url": url, "text": "current card"}
        except ChannelError as exc:
            log.warning("slack: no link to a request's current card",
                        extra={"request": name, "error": exc.message[:200]})
        block = render.slack_rich([
            ("⚠️ Out of date: this is an old copy of the card of request ", render.OWN),
            (name or "?", render.THEIRS), (". Its buttons do nothing: use the ", render.OWN)])
        elements = block["elements"][0]["elements"]
        elements.append(link)
        elements += render.slack_rich([
            (", or ", render.OWN),
            (f"{self.config.command} describe {name}" if name
             else f"{self.config.command} pending", render.THEIRS),
            (".", render.OWN)])["elements"][0]["elements"]
        try:
            await self._call("chat.update", self.client.chat_update, channel=channel, ts=ts,
                             text=f"Wingman: out of date, an old copy of the card of request "
                                  f"`{name}`", blocks=[block])
        except ChannelError as exc:
            log.warning("slack: marking an old copy of a card failed",
                        extra={"request": name, "error": exc.message[:200]})

    def _modal(self, v: RequestView, verb: str, value: str, *, short: bool = False
               ) -> dict[str, Any]:
        """The decision modal: the card (``short``: the short card) and the inputs."""
        blocks = render.slack_summary(v) if short else render.slack_card(v)[:20]
        blocks.append({"type": "input", "block_id": "reason", "optional": verb == "approve",
                       "label": render._plain("Reason"),
                       "element": {"type": "plain_text_input", "action_id": "reason",
                                   "max_length": limits.REASON}})
        if self.service.config.step_up:
            blocks.append({"type": "input", "block_id": "code",
                           "label": render._plain("One-time code from your authenticator"),
                           "element": {"type": "plain_text_input", "action_id": "code",
                                       "min_length": 6, "max_length": 6}})
        return {"type": "modal", "callback_id": DECIDE_VIEW, "private_metadata": value,
                "title": render._plain("Approve request" if verb == "approve"
                                       else "Reject request"),
                "submit": render._plain("Approve" if verb == "approve" else "Reject"),
                "close": render._plain("Cancel"), "blocks": blocks}

    async def _submission(self, payload: dict[str, Any], user_id: str, team: str,
                          arrived: float) -> web.Response:
        """A modal's submission: the decision. Answered within ``ANSWER_SECONDS``: with the
        refusal in the modal (``errors``) or ``clear`` and the result as an ephemeral message
        when the decision is made by then; else with the modal saying it is being recorded,
        and the result (made or refused) as an ephemeral message once it is. While a person's
        decision is being made, another submission of theirs is not taken (it would use the
        same one-time code: ``StepUpReplayed``, a wrong code): the same modal is answered
        that it is being recorded, another one that it can be submitted once it is."""
        view = _obj(payload.get("view"))
        if view.get("callback_id") != DECIDE_VIEW:
            return web.Response(text="")
        values = _obj(_obj(view.get("state")).get("values"))
        reason = str(_obj(_obj(values.get("reason")).get("reason")).get("value") or "")
        code = _obj(_obj(values.get("code")).get("code")).get("value")
        value = str(view.get("private_metadata", ""))
        running = self._deciding.get(user_id)
        if running is not None:
            if running.value == value:
                self._tell_later(running, user_id)
                return web.json_response({"response_action": "update",
                                          "view": self._recording(value)})
            field = "code" if self.service.config.step_up else "reason"
            return web.json_response({"response_action": "errors", "errors": {field: (
                f"your decision on {self._named(running.value)[1]} is still being recorded: "
                "submit this one once its result has come")[:290]}})
        deciding = _Deciding(value, asyncio.create_task(
            self._decision(user_id, team, reason, code, value)))
        self._deciding[user_id] = deciding
        deciding.task.add_done_callback(lambda t: self._deciding.pop(user_id, None))
        task = await self._within(deciding.task, arrived)
        if not task.done():
            self._tell_later(deciding, user_id)
            return web.json_response({"response_action": "update",
                                      "view": self._recording(value)})
        reply = _result(task, "decision")
        if not reply.ok:
            field = "code" if reply.reason.startswith("StepUp") else "reason"
            return web.json_response({"response_action": "errors",
                                      "errors": {field: reply.plain[:290]}})
        if not deciding.told:  # else told already (a submission again said it would be)
            self._keep(asyncio.create_task(self._ephemeral(self.config.channel, user_id,
                                                           reply)))
        return web.json_response({"response_action": "clear"})

    def _tell_later(self, deciding: _Deciding, user_id: str) -> None:
        """Send the decision's result as an ephemeral message once it is made (once)."""
        if not deciding.told:
            deciding.told = True
            self._keep(asyncio.create_task(self._result_later(deciding.task, user_id)))

    async def _decision(self, user_id: str, team: str, reason: str, code: Any, value: str
                        ) -> Reply:
        person: ChatPerson | None = None
        try:
            person = await self._actor(team, user_id, fresh=True)
            button = self.signer.check(value)
            return await self.service.act(
                self.name, user_id, person, button.verb, uid=button.uid, reason=reason,
                code=str(code or "") if self.service.config.step_up else None)
        except Refusal as refusal:
            return await self.service.refused(self.name, user_id, refusal, person=person)

    async def _result_later(self, task: asyncio.Task[Reply], user_id: str) -> None:
        """The result of a decision that outlasted the answer to its submission, told."""
        await asyncio.wait({task})
        if task.cancelled():
            return
        await self._ephemeral(self.config.channel, user_id, _result(task, "decision"))

    def _named(self, value: str) -> tuple[str, str]:
        """The verb and request name of a modal's (signed) button value."""
        try:
            button = self.signer.check(value)
        except Refusal:
            return "decision", "the request"
        return button.verb, self.service.request_name(button.uid) or "the request"

    def _recording(self, value: str) -> dict[str, Any]:
        """The modal once its decision outlasted the answer: it is being recorded, and the
        result comes as a message."""
        verb, name = self._named(value)
        return {"type": "modal", "callback_id": f"{DECIDE_VIEW}_recording",
                "title": render._plain("Approve request" if verb == "approve"
                                       else "Reject request"),
                "close": render._plain("Close"),
                "blocks": [render.slack_rich([
                    (f"Your {verb} of ", render.OWN), (name, render.THEIRS),
                    (" is being recorded. Wingman tells you the result in a message in this "
                     "channel shortly; do not submit it again.", render.OWN)])]}

    async def _ephemeral(self, channel: str, user_id: str, reply: Reply) -> None:
        try:
            await self._call("chat.postEphemeral", self.client.chat_postEphemeral,
                             channel=channel, user=user_id, text="Wingman",
                             blocks=reply_blocks(reply))
        except ChannelError as exc:
            log.warning("slack ephemeral reply failed", extra={"error": exc.message[:200]})

    async def commands(self, request: web.Request) -> web.Response:
        """A slash command, answered ephemerally within ``ANSWER_SECONDS``: with its result
        when it is done by then; else saying it is under way, and the result sent to the
        command's ``response_url`` (Slack's way of answering later) once it is."""
        arrived = asyncio.get_running_loop().time()
        user_id = "unknown"
        try:
            body = await self._verified(request)
        except Refusal as refusal:
            await self.service.refused(self.name, user_id, refusal)
            return _refused(refusal)
        form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace"),
                                             keep_blank_values=True).items()}
        # a slash command carries no time of its own: when Slack signed it (verified, at
        # most five minutes ago) is when it was sent, at the latest (StaleMessage)
        signed = dt.datetime.fromtimestamp(
            int(request.headers["X-Slack-Request-Timestamp"]), dt.UTC)
        task = await self._within(self._command(form, signed), arrived)
        if not task.done():
            self._keep(asyncio.create_task(self._respond_later(task, form)))
            return web.json_response({"response_type": "ephemeral", "blocks": reply_blocks(
                Reply((T("Working on it: the answer follows here shortly."),)))})
        return web.json_response({"response_type": "ephemeral",
                                  "blocks": reply_blocks(_result(task, "command"))})

    async def _command(self, form: dict[str, str], signed: dt.datetime) -> Reply:
        user_id = form.get("user_id", "unknown")
        person: ChatPerson | None = None
        try:
            verb, rest = words(unescape(form.get("text", "")))
            verb = verb.lower()
            person = await self._actor(form.get("team_id", ""), user_id,
                                       fresh=verb in CHANGING)
            if form.get("command") != self.config.command:
                raise refuse("UnknownCommand", f"this app answers {self.config.command} only")
            channel = form.get("channel_id", "")
            allowed = {self.config.channel, self.config.requester_channel}
            if channel not in allowed and not channel.startswith("D"):
                raise refuse("WrongChannel", "Wingman takes no commands in this channel: use "
                             "the Wingman channel or a direct message")
            kwargs = command_args(verb, rest, f"{self.config.command} ")
            if verb in ("", "help"):
                return Reply((T(f"{self.config.command} pending | describe <request> | approve "
                                "<request> [reason] | reject <request> <reason> | exec "
                                "<request> <command> | status <grant> | confirm <code>"),))
            return await self.service.act(self.name, user_id, person, verb, sent_at=signed,
                                          **kwargs)
        except Refusal as refusal:
            return await self.service.refused(self.name, user_id, refusal, person=person)

    async def _respond_later(self, task: asyncio.Task[Reply], form: dict[str, str]) -> None:
        """The result of a command that outlasted its answer, sent to its ``response_url``
        (or, without one, as an ephemeral message in its channel)."""
        await asyncio.wait({task})
        if task.cancelled():
            return
        reply, url = _result(task, "command"), form.get("response_url", "")
        if url and not response_url_allowed(url, self.config.base_url):
            await self._foreign_response_url(url, form.get("user_id", "unknown"))
            url = ""
        if not url:
            await self._ephemeral(form.get("channel_id") or self.config.channel,
                                  form.get("user_id", ""), reply)
            return
        try:
            # slack_sdk's webhook client follows redirects (aiohttp's default, which it does
            # not change): a session of our own refuses them (``_no_redirects``)
            async with ClientSession(timeout=ClientTimeout(total=15),
                                     trace_configs=[_no_redirects()]) as session:
                resp = await AsyncWebhookClient(url, session=session).send(
                    response_type="ephemeral", text="Wingman", blocks=reply_blocks(reply))
            if resp.status_code != 200:
                log.warning("slack: answering a command later failed",
                            extra={"status": resp.status_code, "error": str(resp.body)[:200]})
        except _Redirected as exc:
            log.warning("slack: a command's response_url answered with a redirect, which is "
                        "not followed (an answer goes to Slack's address only); the answer "
                        "goes to its channel instead",
                        extra={"user": form.get("user_id", ""), "status": exc.status,
                               "redirectTo": exc.where})
            await self._ephemeral(form.get("channel_id") or self.config.channel,
                                  form.get("user_id", ""), reply)
        except (ClientError, OSError, TimeoutError) as exc:
            log.warning("slack: answering a command later failed",
                        extra={"error": type(exc).__name__})

    async def _foreign_response_url(self, url: str, user_id: str) -> None:
        """Refuse, log and audit a command's ``response_url`` that is not Slack's (nor
        ``baseUrl``'s): nothing is sent to it. Slack sends only its own, so a signed request
        with another came from whoever holds the signing secret, aiming the chat service at
        an address of their choosing; the path (Slack's hold a token) is never logged."""
        try:
            parts = urlsplit(url) if url.isascii() and url.isprintable() else None
            where = f"{parts.scheme}://{parts.hostname}" if parts and parts.hostname else "?"
        except ValueError:  # no URL at all ("https://[x": an unclosed IPv6 address)
            where = "?"
        log.warning("slack: a command's response_url is not Slack's; nothing was sent to it "
                    "and the answer goes to its channel instead. Slack sends only "
                    f"https://{RESPONSE_HOSTS[0]}/... ones: whoever signed this request may "
                    "hold the signing secret (rotate it)",
                    extra={"user": user_id, "responseUrl": where[:200]})
        await self.service.refused(
            self.name, user_id, refuse("ForeignResponseUrl", f"the command's response_url "
                                       f"({where[:200]}) is not Slack's, so the answer was not "
                                       "sent there"),
            person=self.service.config.person_for_slack(user_id))


class TokenRejected(ChannelError):
    """Slack rejected the bot token (``invalid_auth``, ``token_revoked``, ...): every call
    fails alike, backing off like an outage, until the Secret holds a valid one."""

    reason = "BotTokenRejected"


class _Redirected(Exception):
    """A response_url's or the Web API's answer was a redirect (its status, and where to:
    scheme, host and port, never the path or query, which may hold a token)."""

    def __init__(self, status: int, where: str) -> None:
        super().__init__(f"redirected ({status}) to {where}")
        self.status, self.where = status, where


def _no_redirects() -> TraceConfig:
    """Tracing that stops a request at its first redirect (``_Redirected``), before aiohttp
    follows it: the answer to a command is posted to the ``response_url`` checked by
    ``response_url_allowed`` and nowhere else, and a Web API call (a card, a modal, the user
    asked about) goes to ``baseUrl`` and nowhere else, not re-posted (307, 308) or fetched
    (301, 302, 303) at an address of the redirect's choosing."""
    async def stop(_session: ClientSession, _ctx: Any,
                   params: TraceRequestRedirectParams) -> None:
        location = params.response.headers.get("Location", "")
        try:
            target = urlsplit(urljoin(str(params.url), location))
            where = (f"{target.scheme}://{target.hostname}:{target.port or ''}"
                     .removesuffix(":") if target.hostname else "?")
        except ValueError:  # no URL at all ("http://[x": an unclosed IPv6 address)
            where = "?"
        raise _Redirected(params.response.status, where[:200])

    trace = TraceConfig()
    trace.on_request_redirect.append(stop)
    return trace


def response_url_allowed(url: str, base_url: str) -> bool:
    """Whether a later answer may be posted to ``url``: https on one of Slack's
    ``RESPONSE_HOSTS`` (port 443), or the scheme, host and port of the configured ``baseUrl``
    (a Slack proxy; the tests' local Slack), followed by a path of plain URL characters."""
    base = urlsplit(base_url)
    origins = [f"https://{host}{port}" for host in RESPONSE_HOSTS for port in ("", ":443")]
    if base.scheme in ("http", "https") and base.netloc:
        origins.append(f"{base.scheme}://{base.netloc}")
    return any(url.startswith(origin) and _RESPONSE_REST.fullmatch(url[len(origin):])
               for origin in origins)


def _result(task: asyncio.Task[Reply], what: str) -> Reply:
    """What to tell of a decision's or command's work, done in time for Slack's answer or
    after it: its reply, or, when it failed with an error nothing expected (logged by
    ``_keep``), that it failed and may have landed (never a bare 500 that Slack shows as
    "something went wrong")."""
    exc = task.exception()
    if exc is None:
        return task.result()
    return Reply((T(f"Wingman could not finish your {what}: an internal error "
                    f"({type(exc).__name__}). It may or may not have been recorded: look at the "
                    "request (describe) before trying again, and tell the Wingman operators."),),
                 ok=False, reason="InternalError")


@dataclass
class _Deciding:
    """A decision submitted in a modal, being made: the modal's (signed) button value, the
    task making it, and whether its result is to be sent as a message (``told``)."""

    value: str
    task: asyncio.Task[Reply]
    told: bool = False


_ESCAPED = re.compile(r"&(amp|lt|gt);")


def unescape(text: str) -> str:
    """A slash command's text as typed: Slack sends ``&``, ``<`` and ``>`` as ``&amp;``,
    ``&lt;`` and ``&gt;`` (its control characters, escaped in every text it sends), and nothing
    else escaped."""
    return _ESCAPED.sub(lambda m: {"amp": "&", "lt": "<", "gt": ">"}[m.group(1)], text)


def _obj(value: Any) -> dict[str, Any]:
    """A JSON object of a signed payload, or {} for anything else (it names nothing then)."""
    return value if isinstance(value, dict) else {}


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%M:%S UTC")


def _refused(refusal: Refusal) -> web.Response:
    status = {"Replayed": 409, "SignedBeforeStart": 409, "TooLarge": 413,
              "IncompleteBody": 408}.get(refusal.reason, 401)
    return web.Response(status=status, text=refusal.message)


__all__ = ["SlackChannel", "reply_blocks", "response_url_allowed"]
