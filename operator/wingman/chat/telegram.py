"""The Telegram channel, with python-telegram-bot (the Bot API over HTTPS; ``baseUrl`` points
it elsewhere, e.g. a local Bot API server).

Requests are posted to ``chat.telegram.chatId`` with Approve and Reject buttons and edited in
place; notices for requesters go to ``requesterChatId`` (default: the same chat). Updates are
fetched by long polling (``getUpdates``: no inbound endpoint to expose) and handled
concurrently, each person's in order and each card's presses one at a time (``poll``).

Commands (in the configured chats, or in a private chat with the bot): ``/pending``,
``/describe <request>``, ``/approve <request> [reason]``, ``/reject <request> <reason>``,
``/exec <request> <command>``, ``/status <grant>``, and ``/confirm <code>`` for the step-up.

Refused before anything else, with an answer and an audit record: messages and button presses
from bots, from anonymous senders (a channel or an anonymous group admin), forwarded messages,
commands sent through another bot's inline mode (``via @bot``: that bot wrote their text),
callbacks delivered twice (the same callback id), buttons that do not verify or belong to
another environment, buttons pressed on a message that is not the request's current message,
and chats that are not configured. A chat user who is not in ``chat.people`` is refused by the
service (``Unmapped``).

Anyone on Telegram can write to the bot, so an update that cannot lead to anything (a sender
no ``chat.people`` entry maps, a bot, an anonymous sender, a group not configured: a mapped
person's updates are always handled) is counted and dropped as it is taken (``_screened``),
before it takes a pending or concurrent slot: the first of each sender a minute is logged and
still refused as above, apart from the slots; the others are counted into the audit trail.

Every text sent fits into one message (4096 characters after parsing, counted as Telegram
counts them, in UTF-16 code units, and at most 100 entities, the most Telegram formats: the
text of any further ``<code>`` would be shown plain): a card too long even abridged is sent as
a short card
(``render.telegram_summary``) with the same buttons, and replies are shortened before they
are escaped, never in the middle of their HTML; the answer to a button press (at most 200)
is shortened the same way. A request Telegram refuses anyway
(``Bad Request`` about the message itself) fails alone: the service records it and goes on. A
``Bad Request`` about the chat, its topic or the bot's rights (``_CHAT_WIDE``) would fail every
message alike: the channel backs off as in an outage.
"""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import re
import warnings
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from telegram import (
    Bot,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    Update,
    User,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError
from telegram.ext import SimpleUpdateProcessor
from telegram.warnings import PTBUserWarning

from wingman.chat import render
from wingman.chat.guard import ButtonSigner, Refusal, ReplayGuard, refuse
from wingman.chat.render import Notice, RequestView
from wingman.chat.service import (
    RETIRE_SECONDS,
    CardGone,
    ChannelError,
    ChatService,
    MessageRefused,
    Reply,
    Segment,
    T,
    command_args,
)
from wingman.settings import TelegramConfig

log = logging.getLogger("wingman.chat.telegram")
MAX_TEXT = 4000  # of Telegram's 4096, in UTF-16 code units after parsing
#: Seconds a card or notice waits for Telegram's answer (the library's default: 5), as long as
#: Slack's client: one given up on may have been posted all the same, and is then posted again.
SEND_READ_TIMEOUT = 15.0
#: Telegram formats at most 100 entities of a message and shows the text of the others plain
#: (without their ``<code>``: text others wrote would look like Wingman's own words, and be
#: searched for mentions and links): a card with more is sent abridged or short.
MAX_ENTITIES = 100
#: Updates handled at the same time (python-telegram-bot's ``SimpleUpdateProcessor``, what an
#: Application's ``concurrent_updates`` sets up): a press that waits (for its card's post to
#: end, for the API server) holds up neither polling nor other people's presses and commands.
MAX_CONCURRENT_UPDATES = 16
#: Updates taken from Telegram and not yet handled, at most: beyond, polling waits for one to
#: end before it takes the next (and fetches no more meanwhile).
MAX_PENDING_UPDATES = 256
#: When polling is stopped (the process stops: SIGTERM), how long the updates being handled may
#: still take to end (a decision made is then audited as recorded and answered) before they are
#: cancelled; well within the pod's grace period (30 s) before it is killed.
DRAIN_SECONDS = 15.0
#: Updates of one sender (a chat user, or the chat a message was sent as) taken and not yet
#: handled, at most: beyond, the sender's next ones are dropped before they take a pending
#: slot (``SenderBusy``), so that one person's flood does not hold up the others'.
MAX_PENDING_PER_SENDER = 32
#: An update that cannot lead to anything (``_screened``: a sender no ``chat.people`` entry
#: maps, a bot, an anonymous sender, a chat that is not configured and not private) is
#: counted and dropped before it takes a pending slot; the first of each sender in this many
#: seconds is logged and handled as before (its refusal answered and audited), the others
#: only counted: anyone can write to the bot, and a flood of them must delay no one.
REFUSED_QUIET_SECONDS = 60.0
#: Of those first ones, how many are being answered at once, at most (each is a call to
#: Telegram, outside the pending and concurrent slots): beyond, they are counted, not answered.
MAX_REFUSAL_ANSWERS = 4
#: Senders remembered for ``REFUSED_QUIET_SECONDS``, at most: a new one forgets the oldest.
_MAX_REFUSED_SENDERS = 1000
_TAGS = re.compile(r"<[^>]+>")
_START_TAG = re.compile(r"<[a-z][^>]*>")
_IN_CODE = re.compile(r"<(code|pre)>.*?</\1>", re.DOTALL)
#: What Telegram makes an entity of in Wingman's own plain words (``/approve``).
_DETECTED = re.compile(r"(?<![\w/])/[A-Za-z_]+|@[A-Za-z0-9_]{5,}|#\w+|https?://")
_COMMAND = re.compile(r"/([A-Za-z_]+)(?:@([A-Za-z0-9_]+))?(?:\s+(.*))?", re.DOTALL)
#: Bad Requests about the chat, its topic or the bot's rights, not the message: every message
#: would fail alike, so the channel backs off (and alerts) and catches up once they are fixed.
#: Deliberately broad (*chat not found*, *TOPIC_CLOSED*, *TOPIC_DELETED*, *message thread not
#: found*, *CHAT_WRITE_FORBIDDEN*, *not enough rights to send text messages*, *need
#: administrator rights in the channel chat*, *have no rights to send a message*, *group chat
#: was upgraded to a supergroup chat*, *bot was kicked*, *CHANNEL_PRIVATE*, *PEER_ID_INVALID*,
#: *USER_IS_BLOCKED*, ...): an unknown text that mentions any of these fails the channel, not
#: one message; message errors (*can't parse entities*, *message is too long*,
#: *BUTTON_DATA_INVALID*) mention none of them. python-telegram-bot drops the ``Bad Request: ``
#: prefix and capitalizes the rest (*Topic_closed*), so no word boundaries.
_CHAT_WIDE = re.compile(
    r"chat|channel|group|topic|thread|peer|rights|admin|member|forbidden|blocked|kicked|"
    r"banned|deactivated|restricted|private|not enough|bot was|bot is|user is|user_",
    re.IGNORECASE)


def _units(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _shown_length(text: str) -> int:
    return _units(html.unescape(_TAGS.sub("", text)))


def _entities(text: str) -> int:
    """The entities Telegram makes of an HTML text Wingman wrote: its tags, and what it
    detects in the words outside code (bot commands, mentions, hashtags, links)."""
    outside = html.unescape(_TAGS.sub("", _IN_CODE.sub("", text)))
    return len(_START_TAG.findall(text)) + len(_DETECTED.findall(outside))


def _fits(text: str) -> bool:
    return _shown_length(text) <= MAX_TEXT and _entities(text) <= MAX_ENTITIES


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-16 code units, marked with … when cut."""
    if _units(text) <= limit:
        return text
    if limit <= 0:
        return ""
    out: list[str] = []
    used = 1  # the …
    for ch in text:
        used += _units(ch)
        if used > limit:
            break
        out.append(ch)
    return "".join(out) + "…"


def segments_html(reply: Reply, limit: int = MAX_TEXT) -> str:
    """The reply as Telegram HTML, its visible text shortened to ``limit`` before escaping
    (an escaped text is never cut, so the HTML stays valid)."""
    out = []
    left = limit
    for s in reply.segments:
        text = _shorten(s.text, left)
        left -= _units(text)
        if text:
            out.append(f"<code>{html.escape(text)}</code>" if s.code else html.escape(text))
        if left <= 0:
            break
    return "".join(out)


@dataclass(frozen=True)
class _Unreadable:
    """An update the library could not read (``error_type``): skipped."""

    update_id: int
    error_type: str


class BotTokenRejected(ChannelError):
    """Telegram rejected the bot token (401, or 404 for a token of the wrong form): deliveries
    back off like an outage; polling ends (see ``TelegramChannel.poll``)."""

    reason = "BotTokenRejected"


class TelegramChannel:
    name = "telegram"

    def __init__(self, config: TelegramConfig, token: str, environment: str,
                 service: ChatService) -> None:
        self.config = config
        self.bot = Bot(token, base_url=config.base_url)
        #: What of the token an error must never repeat: it whole, and its secret part
        self._token_parts = sorted({p for p in (token, token.partition(":")[2]) if p},
                                   key=len, reverse=True)
        self.signer = ButtonSigner(token, self.name, environment)
        self.button_key = self.signer.key_id  # cards whose buttons it did not sign: edited
        self.service = service
        self.replays = ReplayGuard()
        self.retired = ReplayGuard(ttl=RETIRE_SECONDS)  # old copies edited, by message
        self._ready = False
        self.username = ""
        self.updates = SimpleUpdateProcessor(MAX_CONCURRENT_UPDATES)
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}
        self._pending: dict[str, int] = {}  # updates taken and not yet handled, by sender
        self._refused: dict[str, list[float]] = {}  # sender: [quiet until, left out since]
        self._answering: set[asyncio.Task[None]] = set()

    # -- calls ---------------------------------------------------------------------------
    async def _call(self, what: str, coro_fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            if not self._ready:
                await self.bot.initialize()
                self.username = self.bot.username or ""
                self._ready = True
            return await coro_fn(*args, **kwargs)
        except RetryAfter as exc:
            delay = exc.retry_after
            seconds = delay if isinstance(delay, int | float) else delay.total_seconds()
            raise ChannelError(f"Telegram rate-limited {what}", retry_after=seconds) from None
        except BadRequest as exc:
            message = self._scrubbed(exc.message)
            if "message is not modified" in message.lower():
                return None
            if "message to edit not found" in message.lower():
                raise CardGone(f"Telegram: {what}: the message was deleted") from None
            if _CHAT_WIDE.search(message):
                raise ChannelError(f"Telegram refused {what}: {message}") from None
            raise MessageRefused(f"Telegram refused {what}: {message}") from None
        except InvalidToken:  # its message quotes the token: never repeat it
            raise BotTokenRejected(f"Telegram {what} failed: the bot token was rejected; check "
                                   "the chat Secret's telegram-token") from None
        except (Forbidden, TelegramError) as exc:
            raise ChannelError(f"Telegram {what} failed: {type(exc).__name__}: "
                               f"{self._scrubbed(exc.message)}") from None
        except (OSError, RuntimeError) as exc:
            raise ChannelError(f"Telegram {what} failed: {type(exc).__name__}") from None

    def _scrubbed(self, message: str) -> str:
        """An error python-telegram-bot wrote, without the bot token: an answer that is not
        the Bot API's JSON (a proxy's error page naming the URL it was asked for, the token in
        its path) is quoted in it, and from there would reach the state ConfigMap (a refused
        card's ``error``) and log lines cut short, where the log filter no longer finds it."""
        for part in self._token_parts:
            message = message.replace(part, "[redacted]")
        return message

    def _markup(self, v: RequestView) -> InlineKeyboardMarkup | None:
        if not v.live:
            return None
        return InlineKeyboardMarkup([[
            InlineKeyboardButton("✅ Approve", callback_data=self.signer.sign("approve", v.uid)),
            InlineKeyboardButton("❌ Reject", callback_data=self.signer.sign("reject", v.uid)),
        ]])

    @staticmethod
    def card_text(v: RequestView) -> str:
        """The card: in full, else abridged, else the short card; always fits (in length,
        and in the entities Telegram formats: ``MAX_ENTITIES``)."""
        text = render.telegram_card(v)
        if not _fits(text):
            text = render.telegram_card(_compact(v))
        if not _fits(text):
            text = render.telegram_summary(v)
        return text

    async def _card(self, what: str, send: Any, v: RequestView, **kwargs: Any) -> Any:
        """Send the card; if Telegram refuses it, the short card (then the refusal stands)."""
        text = self.card_text(v)
        options: dict[str, Any] = {
            "parse_mode": ParseMode.HTML, "reply_markup": self._markup(v),
            "link_preview_options": LinkPreviewOptions(is_disabled=True), **kwargs}
        try:
            return await self._call(what, send, text=text, **options)
        except MessageRefused as exc:
            summary = render.telegram_summary(v)
            if text == summary:
                raise
            log.warning("telegram refused a card; sending the short card",
                        extra={"request": v.name, "error": exc.message[:200]})
            return await self._call(what, send, text=summary, **options)

    async def post_card(self, v: RequestView) -> dict[str, Any]:
        msg: Message = await self._card("sendMessage", self.bot.send_message, v,
                                        chat_id=self.config.chat_id,
                                        read_timeout=SEND_READ_TIMEOUT)
        return {"chat": self.config.chat_id, "message": msg.message_id}

    async def update_card(self, ref: dict[str, Any], v: RequestView) -> None:
        # reply_markup is None once decided: Telegram removes the buttons from the message.
        await self._card("editMessageText", self.bot.edit_message_text, v,
                         chat_id=ref["chat"], message_id=ref["message"])

    async def _retire(self, msg: Message, ref: dict[str, Any], name: str) -> None:
        """Make the message ``msg``, a card of a request whose current card is ``ref`` (a copy
        posted when a post was given up on but arrived all the same), say so, without its
        buttons, linking to the current card where Telegram has links to messages
        (supergroups). A failure is logged: the press is refused all the same. Tried at most
        once per ``RETIRE_SECONDS`` for one message (``retired``)."""
        parts: list[Segment] = [T("⚠️ Out of date: this is an old copy of the card of request "),
                                Segment(name or "?", code=True),
                                T(". Its buttons do nothing: use the current card")]
        text = segments_html(Reply(tuple(parts)), MAX_TEXT - 200)
        chat, current = str(ref.get("chat", "")), ref.get("message")
        if chat.startswith("-100") and _is_int(current):
            text += f' (<a href="https://t.me/c/{chat[4:]}/{current}">here</a>)'
        text += segments_html(Reply((T(", or send "), Segment(
            f"/describe {name}" if name else "/pending", code=True), T("."))))
        try:
            await self._call("editMessageText", self.bot.edit_message_text, chat_id=msg.chat.id,
                             message_id=msg.message_id, text=text, parse_mode=ParseMode.HTML,
                             reply_markup=None,
                             link_preview_options=LinkPreviewOptions(is_disabled=True))
        except ChannelError as exc:
            log.warning("telegram: marking an old copy of a card failed",
                        extra={"request": name, "error": exc.message[:200]})

    async def notify(self, v: RequestView, notice: Notice) -> None:
        chat = (self.config.requester_chat_id or self.config.chat_id
                if notice.audience == "requester" else self.config.chat_id)
        icon = "⏰" if notice.audience == "approvers" else "📣"
        parts = Reply(tuple(Segment(t, code=theirs) for t, theirs in notice.parts))
        text = f"{icon} {segments_html(parts, MAX_TEXT - 2)}"
        await self._call("sendMessage", self.bot.send_message, chat_id=chat, text=text,
                         parse_mode=ParseMode.HTML, read_timeout=SEND_READ_TIMEOUT,
                         link_preview_options=LinkPreviewOptions(is_disabled=True))

    async def say(self, chat_id: int, reply: Reply) -> None:
        text = (self.card_text(reply.view) if reply.view is not None
                else segments_html(reply))
        try:
            await self._call("sendMessage", self.bot.send_message, chat_id=chat_id,
                             text=text, parse_mode=ParseMode.HTML,
                             link_preview_options=LinkPreviewOptions(is_disabled=True))
        except ChannelError as exc:
            log.warning("telegram reply failed", extra={"error": exc.message[:200]})

    async def close(self) -> None:
        if self._ready:
            try:
                await self.bot.shutdown()
            except (TelegramError, OSError, RuntimeError):
                pass

    # -- updates -------------------------------------------------------------------------
    async def poll(self, stop: asyncio.Event, timeout: int = 20,
                   backoff: float = 1.0) -> str | None:
        """Long-poll getUpdates until ``stop``.

        A failed fetch is logged, counted (``wingman_chat_loop_failures_total``,
        ``loop="telegram-polling"``) and retried with backoff (``backoff`` seconds doubling to
        60, or Telegram's Retry-After): the network, a timeout, a 5xx, the rate limit
        (``RateLimited``), and an answer the library cannot read (``Unexpected``, logged as an
        error with its type). Only Telegram rejecting the bot token ends polling
        (``Unauthorized``; it returns ``BotTokenRejected``): /healthz then fails naming it
        (``run.health``) and the restarted pod reads the Secret again.
        An update that cannot be handled, or that the library cannot read (it fails the whole
        batch: the batch is then read one update at a time), is logged, counted
        (``UpdateFailed``) and skipped; polling goes on with the next.

        Updates are handled concurrently (``_in_turn``), up to ``MAX_CONCURRENT_UPDATES`` at a
        time, polling going on meanwhile: one person's updates one after the other in the order
        they came (an ``/approve`` before its ``/confirm``), and the presses on one card one at
        a time. Each is confirmed to Telegram (the next ``getUpdates``'s offset) once taken,
        not once handled: one still being handled when the process stops is not delivered
        again. Cancelled (the process stops), polling takes no more, and those being handled
        are given ``DRAIN_SECONDS`` to end (a decision that reached the API server is then
        audited as recorded, and answered) before they are cancelled."""
        handling: set[asyncio.Task[None]] = set()
        answering = self._answering
        try:
            return await self._poll(stop, timeout, backoff, handling)
        except BaseException:
            try:
                if handling or answering:  # none half done: a decision made is audited
                    await asyncio.wait(handling | answering, timeout=DRAIN_SECONDS)
            finally:  # what has not ended by then (or cancelled again) is given up unanswered
                for task in list(handling | answering):
                    task.cancel()
            raise
        finally:  # else (``stop``, the token rejected) it ends on its own (each wait bounded)
            await asyncio.gather(*handling, *answering, return_exceptions=True)

    async def _poll(self, stop: asyncio.Event, timeout: int, backoff: float,
                    handling: set[asyncio.Task[None]]) -> str | None:
        offset: int | None = None
        failures = 0
        count = self.service.metrics.loop_failures
        env = self.service.env
        allowed = ["message", "callback_query"]
        updates: list[Update | _Unreadable]
        while not stop.is_set():
            try:
                updates = list(await self._call(
                    "getUpdates", self.bot.get_updates, offset=offset, timeout=timeout,
                    read_timeout=timeout + 10, allowed_updates=allowed) or [])
                failures = 0
            except BotTokenRejected as exc:
                count.labels(env, "telegram-polling", "Unauthorized").inc()
                log.error("telegram polling ends: the bot token was rejected",
                          extra={"error": exc.message[:300]})
                return exc.reason
            except Exception as exc:  # noqa: BLE001 - polling outlives any one fetch
                batch = (None if isinstance(exc, ChannelError)
                         else await self._one_by_one(offset, allowed))
                if batch is not None:  # one update the library cannot read: skipped below
                    updates, failures = batch, 0
                else:
                    failures += 1
                    await self._back_off(stop, exc, failures, backoff)
                    continue
            for update in updates:
                if isinstance(update, _Unreadable):
                    offset = update.update_id + 1
                    count.labels(env, "telegram-polling", "UpdateFailed").inc()
                    log.error("telegram update unreadable; skipped",
                              extra={"updateId": update.update_id,
                                     "errorType": update.error_type})
                    continue
                offset = update.update_id + 1
                reason = self._screened(update)
                if reason is not None:  # before it takes a slot: a flood of them delays no one
                    if reason:
                        self._refuse_early(update, reason)
                    continue
                sender = _sender(update)
                if self._pending.get(sender, 0) >= MAX_PENDING_PER_SENDER:
                    self._refuse_early(update, "SenderBusy", answer=False)
                    continue
                while len(handling) >= MAX_PENDING_UPDATES:
                    await asyncio.wait(handling, return_when=asyncio.FIRST_COMPLETED)
                self._pending[sender] = self._pending.get(sender, 0) + 1
                task = asyncio.create_task(self._in_turn(update))
                handling.add(task)
                task.add_done_callback(handling.discard)
                task.add_done_callback(functools.partial(self._taken_off, sender))
        return None

    def _taken_off(self, sender: str, _task: asyncio.Task[None]) -> None:
        left = self._pending.get(sender, 0) - 1
        if left > 0:
            self._pending[sender] = left
        else:
            self._pending.pop(sender, None)

    def _person(self, user: User | None) -> bool:
        return (user is not None and not user.is_bot
                and self.service.config.person_for_telegram(user.id) is not None)

    def _screened(self, update: Update) -> str | None:
        """Why ``update`` cannot lead to anything, checked before it takes a pending slot: the
        refusal reason it would be handled with (``Unmapped``, ``Bot``, ``Anonymous``,
        ``WrongChat``), ``""`` for one that handling ignores anyway (not a command, a command
        for another bot, neither a message nor a press), None for one to handle: a mapped
        person's press or command is always handled (in any chat: a person's refusals are
        each audited), bounded by ``MAX_PENDING_PER_SENDER`` alone. Only what the
        update itself says is read (no call): what needs more (a button's signature, its
        card) is left to ``handle``."""
        cq, msg = update.callback_query, update.message
        if cq is not None:
            if cq.from_user.is_bot:
                return "Bot"
            return None if self._person(cq.from_user) else "Unmapped"
        if msg is None:
            return ""
        m = _COMMAND.fullmatch((msg.text or "").strip())
        if m is None:
            return ""
        bot_name = m.group(2)
        if bot_name and self.username and bot_name.lower() != self.username.lower():
            return ""
        if msg.sender_chat is None and self._person(msg.from_user):
            return None  # a person's refusals (a chat not configured too) are each audited
        if (msg.chat.id not in (self.config.chat_id, self.config.requester_chat_id)
                and msg.chat.type != "private"):
            return "WrongChat"
        if msg.sender_chat is not None or msg.from_user is None:
            return "Anonymous"
        if msg.from_user.is_bot:
            return "Bot"
        return "Unmapped"

    def _refuse_early(self, update: Update, reason: str, *, answer: bool = True) -> None:
        """Count an update dropped before it took a slot
        (``wingman_chat_updates_refused_total``); the first of its sender in
        ``REFUSED_QUIET_SECONDS`` is logged (with how many were left out since the previous
        line) and, with ``answer`` and fewer than ``MAX_REFUSAL_ANSWERS`` being answered,
        handled as before, apart (its refusal answered and audited as a single one is); a refusal
        not handled is counted into the audit trail's next record of its kind (``_left_out``)."""
        env = self.service.env
        self.service.metrics.updates_refused.labels(env, self.name, reason).inc()
        sender = _sender(update)
        now = self.service.clock().timestamp()
        quiet = self._refused.get(sender)
        if quiet is not None and now < quiet[0]:
            quiet[1] += 1
            self._left_out(update, reason)
            return
        left_out = int(quiet[1]) if quiet is not None else 0
        self._refused.pop(sender, None)
        while len(self._refused) >= _MAX_REFUSED_SENDERS:  # the oldest first
            self._refused.pop(next(iter(self._refused)))
        self._refused[sender] = [now + REFUSED_QUIET_SECONDS, 0]
        answered = answer and len(self._answering) < MAX_REFUSAL_ANSWERS
        log.warning("telegram updates refused before they are handled",
                    extra={"reason": reason, "sender": sender, "leftOut": left_out,
                           "answered": answered,
                           "quietSeconds": REFUSED_QUIET_SECONDS})
        if answered:
            task = asyncio.create_task(self._answer(update))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        else:
            self._left_out(update, reason)

    def _left_out(self, update: Update, reason: str) -> None:
        """A refusal dropped unhandled still reaches the audit trail, counted in the next
        record of its sender and reason (``ChatService.left_out``); ``SenderBusy`` is no
        refusal (a mapped person's update, sent again)."""
        if reason == "SenderBusy":
            return
        cq, msg = update.callback_query, update.message
        user = cq.from_user if cq is not None else msg.from_user if msg is not None else None
        self.service.left_out(self.name, reason, str(user.id) if user else "unknown")

    async def _answer(self, update: Update) -> None:
        """Handle a refused update apart from the others (it is refused and answered there)."""
        try:
            await self.handle(update)
        except Exception:
            self.service.metrics.loop_failures.labels(self.service.env, "telegram-polling",
                                                      "UpdateFailed").inc()
            log.exception("telegram update failed")

    async def _back_off(self, stop: asyncio.Event, exc: Exception, failures: int,
                        backoff: float) -> None:
        """Log and count a failed fetch, then wait (``stop`` ends the wait)."""
        retry_after = exc.retry_after if isinstance(exc, ChannelError) else None
        delay = retry_after or min(60.0, backoff * 2.0 ** (failures - 1))
        if isinstance(exc, ChannelError):
            kind = "RateLimited" if retry_after is not None else "Unavailable"
            log.warning("telegram polling failed; retrying with backoff",
                        extra={"reason": exc.reason, "error": exc.message[:300],
                               "retry_in_seconds": round(delay, 1)})
        else:
            kind = "Unexpected"
            log.error("telegram polling failed unexpectedly; retrying with backoff",
                      extra={"reason": kind, "errorType": type(exc).__name__,
                             "error": str(exc)[:300],
                             "retry_in_seconds": round(delay, 1)})
        self.service.metrics.loop_failures.labels(self.service.env, "telegram-polling",
                                                  kind).inc()
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            pass

    async def _one_by_one(self, offset: int | None, allowed: list[str]
                          ) -> list[Update | _Unreadable] | None:
        """The pending updates read one by one, after the library could not read them as a
        batch (one of them of a shape it does not know): each unreadable one stands for itself,
        to be skipped, so that one update cannot stop polling for good. None when the raw
        answer cannot be read either (not a list, its first update without an id)."""
        try:
            with warnings.catch_warnings():  # it asks for get_updates, which just failed
                warnings.simplefilter("ignore", PTBUserWarning)
                raw = await self._call("getUpdates", self.bot.do_api_request, "getUpdates",
                                       api_kwargs={"offset": offset, "timeout": 0,
                                                   "allowed_updates": allowed})
        except Exception:  # noqa: BLE001 - then the fetch failed as before: back off
            return None
        out: list[Update | _Unreadable] = []
        for item in raw if isinstance(raw, list) else []:
            uid = item.get("update_id") if isinstance(item, dict) else None
            if type(uid) is not int:
                break  # what has no id cannot be skipped: the ones before it are handled
            try:
                out.append(Update.de_json(item, self.bot))
            except Exception as exc:  # noqa: BLE001 - the library's reading of an update
                out.append(_Unreadable(uid, type(exc).__name__))
        return out or None

    async def _in_turn(self, update: Update) -> None:
        """Handle ``update`` after the earlier updates of its sender (and, for a press, of its
        card) have been handled, with python-telegram-bot's update processor bounding how
        many are handled at once; a failure is logged and counted (``UpdateFailed``)."""
        try:
            async with AsyncExitStack() as turns:
                for key in _turn_keys(update):  # the sender's first, always: no deadlock
                    await turns.enter_async_context(self._turn(key))
                handling = self.handle(update)
                try:
                    await self.updates.process_update(update, handling)
                finally:
                    handling.close()  # not started when cancelled before its turn: no warning
        except Exception:
            self.service.metrics.loop_failures.labels(self.service.env, "telegram-polling",
                                                      "UpdateFailed").inc()
            log.exception("telegram update failed")

    @asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        """Held while an update of ``key`` is handled; the next one of ``key`` waits (asyncio
        locks are first come, first served). Forgotten once no update holds or awaits it."""
        lock, users = self._turns.get(key) or (asyncio.Lock(), 0)
        self._turns[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[key]
            if users <= 1:
                del self._turns[key]
            else:
                self._turns[key] = (lock, users - 1)

    async def handle(self, update: Update) -> None:
        if update.callback_query is not None:
            await self._callback(update.callback_query)
        elif update.message is not None:
            await self._message(update.message)

    async def _callback(self, cq: CallbackQuery) -> None:
        user = cq.from_user
        chat_user = str(user.id)
        person = None if user.is_bot else self.service.config.person_for_telegram(user.id)
        reply: Reply
        try:
            if self.replays.seen(f"cq:{cq.id}"):
                raise refuse("Replayed", "this button press was already handled")
            if user.is_bot:
                raise refuse("Bot", "bots cannot decide requests")
            msg = cq.message
            if not isinstance(msg, Message):
                raise refuse("InvalidButton", "this button is not on a message Wingman "
                             "posted")
            if msg.chat.id != self.config.chat_id:
                raise refuse("WrongChat", "Wingman does not take decisions in this chat")
            if msg.forward_origin is not None:
                raise refuse("Forwarded", "buttons of a forwarded message do nothing: use the "
                             "original message")
            button = self.signer.check(cq.data or "")
            ref = await self.service.current_ref(button.uid, self.name)
            if ref is None or ref.get("message") != msg.message_id:
                if ref is not None and not self.retired.seen(f"{msg.chat.id}:{msg.message_id}"):
                    # a copy (a post given up on that arrived all the same)
                    await self._retire(msg, ref, self.service.request_name(button.uid))
                raise refuse("StaleButton", "this is not the request's current message: use "
                             "the latest one, or /pending")
            if button.verb == "reject" and person is not None:
                await self.service.refreshed()  # the views of a sync may not be there yet
                v = self.service.find(uid=button.uid, channel=self.name)
                reply = Reply((T(f"To reject, send: /reject {v.name} <reason>"),))
            else:
                reply = await self.service.act(self.name, chat_user, person, button.verb,
                                               uid=button.uid)
        except Refusal as refusal:
            reply = await self.service.refused(self.name, chat_user, refusal, person=person)
        try:
            await self._call("answerCallbackQuery", self.bot.answer_callback_query,
                             cq.id, text=_shorten(reply.plain, 190), show_alert=True)
        except ChannelError as exc:
            log.warning("telegram callback answer failed", extra={"error": exc.message[:200]})

    async def _message(self, msg: Message) -> None:
        text = msg.text or ""
        m = _COMMAND.fullmatch(text.strip())
        if m is None:
            return
        verb, bot_name, rest = m.group(1).lower(), m.group(2), (m.group(3) or "")
        if bot_name and self.username and bot_name.lower() != self.username.lower():
            return  # addressed to another bot
        if verb in ("start", "help"):
            await self.say(msg.chat.id, Reply((T(HELP),)))
            return
        user = msg.from_user
        chat_user = str(user.id) if user else "unknown"
        person = (self.service.config.person_for_telegram(user.id)
                  if user is not None and not user.is_bot and msg.sender_chat is None else None)
        try:
            if msg.sender_chat is not None or user is None:
                raise refuse("Anonymous", "anonymous messages (sent as a channel or an "
                             "anonymous admin) cannot act: send as yourself")
            if user.is_bot:
                raise refuse("Bot", "bots cannot act on requests")
            if msg.forward_origin is not None:
                raise refuse("Forwarded", "forwarded commands do nothing: send your own")
            if msg.via_bot is not None:  # an inline bot's result: its text is that bot's
                raise refuse("ViaBot", "commands sent through another bot (via "
                             f"@{msg.via_bot.username or msg.via_bot.id}) do nothing: type "
                             "your own")
            allowed = {self.config.chat_id, self.config.requester_chat_id}
            if msg.chat.id not in allowed and msg.chat.type != "private":
                raise refuse("WrongChat", "Wingman does not take commands in this chat")
            kwargs = command_args(verb, rest, "/")
            # when Telegram says it was sent: a message delivered again after a restart may
            # have been typed for an earlier request of the same name (StaleMessage)
            reply = await self.service.act(self.name, chat_user, person, verb,
                                           sent_at=msg.date, **kwargs)
        except Refusal as refusal:
            reply = await self.service.refused(self.name, chat_user, refusal, person=person)
        await self.say(msg.chat.id, reply)


HELP = ("Wingman commands: /pending, /describe <request>, /approve <request> [reason], "
        "/reject <request> <reason>, /exec <request> <command>, /status <grant>, "
        "/confirm <code> (step-up).")


def _turn_keys(update: Update) -> list[str]:
    """Whose turn an update waits for: its sender's (a chat user, or the chat it was sent as),
    then, for a press, its card's (the message the button is on)."""
    keys: list[str] = []
    cq, msg = update.callback_query, update.message
    if cq is not None:
        keys.append(f"user:{cq.from_user.id}")
        if isinstance(cq.message, Message):
            keys.append(f"card:{cq.message.chat.id}:{cq.message.message_id}")
    elif msg is not None:
        sender = (f"chat:{msg.sender_chat.id}" if msg.sender_chat is not None
                  else f"user:{msg.from_user.id}" if msg.from_user is not None else "")
        if sender:
            keys.append(sender)
    return keys


def _sender(update: Update) -> str:
    """Who sent ``update`` (its first turn key), ``unknown`` when it does not say."""
    keys = _turn_keys(update)
    return keys[0] if keys else "unknown"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _compact(v: RequestView) -> RequestView:
    from dataclasses import replace

    votes = tuple(replace(x, rationale=x.rationale[:60]) for x in v.votes)
    return replace(v, instruction=v.instruction[:300], justification=v.justification[:200],
                   votes=votes, dissent=())


__all__ = ["BotTokenRejected", "TelegramChannel", "segments_html"]
