"""The chat component's Prometheus metrics (``wingman_chat_*``), served on its /metrics.

Label values are bounded sets: the channel (telegram, slack, webhook), the verdict, the
refusal reasons of ``wingman.chat.guard`` and the service, and a loop (:data:`LOOPS`) and its
kind of failure (:data:`FAILURE_KINDS`); never names of people or objects.
The chart's alert WingmanChatDeliveryFailing reads ``messages_failed``, ``messages_sent`` and
``backlog``; WingmanChatLoopFailing and WingmanChatBotTokenRejected (its ``Unauthorized``
kind) read ``loop_failures``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

#: The loops of ``wingman_chat_loop_failures_total``: the reconciler, Telegram's polling and
#: Slack's Web API (``SlackChannel.watch``: it counts only a rejected bot token).
LOOPS = ("reconciler", "telegram-polling", "slack-web-api")
#: Its kinds of failure: the cluster, the audit trail or the chat service could not be reached
#: or failed (``Unavailable``); Telegram's rate limit (``RateLimited``); anything else, logged
#: with its type (``Unexpected``); one Telegram update that could not be handled
#: (``UpdateFailed``); the bot token rejected, which ends Telegram's polling or Slack's watch
#: (``Unauthorized``).
FAILURE_KINDS = ("Unavailable", "RateLimited", "Unexpected", "UpdateFailed", "Unauthorized")


class ChatMetrics:
    """Every wingman_chat_* series."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages_sent = Counter(
            "wingman_chat_messages_sent_total",
            "Messages posted or updated in place, by channel.",
            ["environment", "channel"], registry=r)
        self.messages_failed = Counter(
            "wingman_chat_messages_failed_total",
            "Attempts to post or update a message that failed (retried with backoff; a "
            "message the chat service refuses for what it is: once, not retried).",
            ["environment", "channel"], registry=r)
        self.backlog = Gauge(
            "wingman_chat_backlog",
            "Messages that are due but not delivered yet, by channel.",
            ["environment", "channel"], registry=r)
        self.decisions = Counter(
            "wingman_chat_decisions_total",
            "Decisions recorded from chat (as the mapped person), by channel and verdict.",
            ["environment", "channel", "verdict"], registry=r)
        self.refusals = Counter(
            "wingman_chat_refusals_total",
            "Chat actions refused, by channel and reason.",
            ["environment", "channel", "reason"], registry=r)
        self.updates_refused = Counter(
            "wingman_chat_updates_refused_total",
            "Telegram updates dropped before they are handled, by channel and reason: from a "
            "sender no chat.people entry maps (Unmapped), a bot (Bot), an anonymous sender "
            "(Anonymous), a chat not configured and not private, from such a sender "
            "(WrongChat), or a sender "
            "with too many updates not yet handled (SenderBusy). The first of each sender a "
            "minute is still answered and audited as a refusal.",
            ["environment", "channel", "reason"], registry=r)
        self.loop_failures = Counter(
            "wingman_chat_loop_failures_total",
            "Failures of the chat component's loops (the reconciler, Telegram's polling, "
            "Slack's Web API), by loop and kind; each is retried with backoff but "
            "Unauthorized, a rejected bot token, which ends Telegram's polling or Slack's "
            "watch.",
            ["environment", "loop", "kind"], registry=r)
        self.up = Gauge("wingman_chat_up", "1 while the chat component runs.",
                        ["environment"], registry=r)


__all__ = ["FAILURE_KINDS", "LOOPS", "ChatMetrics"]
