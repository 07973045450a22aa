"""The ``wingman chat`` process: builds the service and its channels, runs until a signal.

One asyncio loop runs the reconciler, Telegram's long polling and an HTTP server on
``WINGMAN_CHAT_HTTP_PORT`` (``/healthz``; Slack's ``/slack/interactive`` and
``/slack/commands`` when Slack is enabled) and the metrics on ``WINGMAN_METRICS_PORT``
(``/metrics``), both on ``WINGMAN_LISTEN_ADDRESS`` (every IPv4 address unless set; ``::``:
every IPv6 address, IPv6 only, as asyncio's servers bind it).
Either port may be 0 (outside the chart, which sets fixed ones): the system picks a free port,
and the ``chat starting`` record names the ports bound (``httpPort``, ``metricsPort``).
``/healthz`` answers 503, naming it and why (``telegram polling (BotTokenRejected)``), once
the reconciler, Telegram's polling or Slack's Web API watch has ended (the reconciler never
should; polling ends only when Telegram rejects the bot token, and Slack's watch only when
Slack rejects it: at start, ``auth.test``, or in any later call), so the probes restart the
pod, which reads the Secret again. The HTTP server cuts off a connection
that has not sent a whole request line and headers, or stays idle, for
``WINGMAN_CHAT_HTTP_IDLE_SECONDS`` (``chat.httpIdleTimeoutSeconds``; ``http_runner``).
SIGTERM, SIGINT and SIGHUP stop it cleanly. Every log record passes a filter that replaces
the values of the chat Secret (bot tokens, signing secrets, TOTP secrets) with
``[redacted]`` wherever they appear in it, whatever library logged them; the chat
libraries' records (``LIBRARY_LOGGERS``) keep their message but not its arguments
(``<withheld>``), which carry what the library received (a chat message with a step-up
code, say).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from wingman.audit import open_sink
from wingman.chat.cluster import ChatCluster
from wingman.chat.guard import StepUp
from wingman.chat.metrics import ChatMetrics
from wingman.chat.service import ChatService
from wingman.errors import ConfigError, WingmanError, cannot_listen, cannot_listen_on
from wingman.kube import Kube
from wingman.logs import setup_logging
from wingman.settings import ChatSettings

log = logging.getLogger("wingman.chat")

#: Seconds a connection to the HTTP server has, by default, to deliver a request's line and
#: headers whole, from its opening (or from the answer to its previous request), which is also
#: how long it may stay idle: a client that sends them slowly, or nothing, is cut off then
#: instead of holding a connection for good (Slack sends a request at once; the body then has
#: ``slack.BODY_SECONDS``). The chart sets it (``chat.httpIdleTimeoutSeconds``, read as
#: ``ChatSettings.http_idle_seconds``): above the idle timeout of the proxy in front, which
#: would otherwise reuse a connection the server is closing and answer Slack 502.
HEADER_SECONDS = 75.0
#: Longest request line and header line, in bytes (longer: 400). Slack's are far shorter.
MAX_LINE_BYTES = 8190


#: the chat libraries' loggers: kept at WARNING, and their records' arguments are withheld
LIBRARY_LOGGERS = ("httpx", "httpcore", "telegram", "slack_sdk", "aiohttp.access")
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")


def _library(name: str) -> bool:
    return any(name == lib or name.startswith(lib + ".") for lib in LIBRARY_LOGGERS)


class RedactSecrets(logging.Filter):
    """Replaces every occurrence of a secret value (and of its URL-encoded form: a bot token's
    ``:`` is ``%3A`` in a query) in a record's message, arguments, traceback and fields,
    whatever text holds it (an error, a URL), and withholds the arguments of the chat
    libraries' records: python-telegram-bot logs a batch of updates it cannot read whole (at
    CRITICAL), chat messages such as ``/confirm <code>`` included. A field that is not a
    string (a list, a dict, an exception, bytes) is checked as the log line shows it (its
    ``str``) and, when that holds a secret, becomes that text redacted. One pass over the text
    per secret: linear in its length, whatever it holds."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        values = {s for s in secrets if len(s) >= 6}
        values |= {quote(s, safe="") for s in values}
        self.secrets = sorted(values, key=len, reverse=True)

    def _clean(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, "[redacted]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and _library(record.name):
            record.msg = _PLACEHOLDER.sub(
                lambda m: "%" if m.group() == "%%" else "<withheld>", str(record.msg))
            record.args = None
        if not self.secrets:
            return True
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        for key, value in list(vars(record).items()):
            if key in ("msg", "exc_text", "args", "exc_info") or value is None or isinstance(
                    value, int | float):
                continue
            if isinstance(value, str):
                setattr(record, key, self._clean(value))
                continue
            try:
                text = str(value)  # as the line shows it (the JSON format's default=str too)
            except Exception:  # noqa: BLE001 - a filter that raises fails the caller's log call
                setattr(record, key, "<unprintable>")
                continue
            cleaned = self._clean(text)
            if cleaned != text:
                setattr(record, key, cleaned)
        return True


def install_redaction(secrets: Iterable[str]) -> None:
    flt = RedactSecrets(secrets)
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(flt)
    root.addFilter(flt)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def http_runner(app: web.Application, idle_seconds: float | None = None) -> web.AppRunner:
    """The runner of one of the chat's servers (its HTTP port; its metrics port, with the
    default ``HEADER_SECONDS``), with its limits: aiohttp closes a connection that
    has not delivered a whole request (line and headers) within ``keepalive_timeout`` of its
    opening or of its previous answer, which makes that timeout both the header read timeout
    and the idle timeout (``idle_seconds``, else ``HEADER_SECONDS``; aiohttp's default, an
    hour, is none); request and header lines are limited to ``MAX_LINE_BYTES`` each (aiohttp
    also limits the number of headers)."""
    return web.AppRunner(app, access_log=None,
                         keepalive_timeout=HEADER_SECONDS if idle_seconds is None else idle_seconds,
                         max_line_size=MAX_LINE_BYTES, max_field_size=MAX_LINE_BYTES)


def run_chat(settings: ChatSettings) -> int:
    """Run until SIGTERM/SIGINT/SIGHUP; 2 on a configuration or startup error."""
    setup_logging(settings.log_format, settings.log_level, component="chat")
    install_redaction(settings.secrets.values())
    try:
        return asyncio.run(_main(settings))
    except WingmanError as exc:
        print(f"wingman chat: cannot start: {exc}", file=sys.stderr)
        return 2


async def _main(settings: ChatSettings) -> int:
    # Before anything is served: what was signed or shown before it, an earlier process may
    # have accepted (step-up codes, Slack requests), and this one cannot know.
    started = time.time()
    config = settings.config
    kube = Kube.from_environment()
    sink = open_sink(settings.audit_target)
    metrics = ChatMetrics()
    totp = {p.user: settings.secret(p.totp_key) for p in config.people
            if p.totp_key and config.step_up}
    service = ChatService(config=config, cluster=ChatCluster(kube, settings.namespace,
                                                             settings.state_configmap),
                          sink=sink, metrics=metrics,
                          step_up=StepUp(totp, config.step_up_window_seconds,
                                         started=started, restored=False))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)

    tasks: list[asyncio.Task[Any]] = []
    app = web.Application()
    async def healthz(_request: web.Request) -> web.Response:
        return await health(tasks)

    app.router.add_get("/healthz", healthz)
    closers: list[Any] = []
    telegram = slack = None
    if config.telegram:
        from wingman.chat.telegram import TelegramChannel

        telegram = TelegramChannel(config.telegram, settings.secret("telegram-token"),
                                   settings.environment, service)
        service.channels.append(telegram)
        closers.append(telegram.close)
    if config.slack:
        from wingman.chat.slack import SlackChannel

        slack = SlackChannel(config.slack, settings.secret("slack-bot-token"),
                             settings.secret("slack-signing-secret"), settings.environment,
                             service, started=started)
        slack.routes(app)
        service.channels.append(slack)
        closers.append(slack.close)
    if config.webhook:
        from wingman.chat.webhook import WebhookChannel

        webhook = WebhookChannel(config.webhook, settings.secret("webhook-secret"))
        service.channels.append(webhook)
        closers.append(webhook.close)

    scraper = http_runner(metrics_app(metrics.registry))
    runner = http_runner(app, settings.http_idle_seconds)
    await scraper.setup()
    await runner.setup()
    host = settings.listen_address
    port, setting, value = settings.metrics_port, "WINGMAN_METRICS_PORT", "chat.metricsPort"
    try:
        await listen(scraper, host, settings.metrics_port)
        port, setting, value = settings.http_port, "WINGMAN_CHAT_HTTP_PORT", "chat.httpPort"
        await listen(runner, host, settings.http_port)
    except OSError as exc:
        await runner.cleanup()
        await scraper.cleanup()
        sink.close()
        kube.close()
        said = cannot_listen_on(exc, host, "chat.listenAddress")
        raise (ConfigError(said) if said else cannot_listen(exc, port, setting, value)) from None
    metrics.up.labels(settings.environment).set(1)
    log.info("chat starting", extra={
        "namespace": settings.namespace, "environment": settings.environment,
        "channels": [c.name for c in service.channels], "stepUp": config.step_up,
        "people": len(config.people),
        # the ports bound: a free one the system picked where the setting was 0
        "httpPort": bound_port(runner), "metricsPort": bound_port(scraper)})
    try:
        while not stop.is_set():  # the state ConfigMap must be readable before anything
            try:
                await service.load()
                break
            except (WingmanError, OSError) as exc:
                log.warning("cannot read the chat state yet; retrying",
                            extra={"reason": getattr(exc, "reason", type(exc).__name__),
                                   "error": str(exc)[:300]})
                try:
                    await asyncio.wait_for(stop.wait(), timeout=5)
                except TimeoutError:
                    pass
        tasks.append(asyncio.create_task(service.run(stop, settings.sync_interval_seconds),
                                         name="reconciler"))
        if telegram is not None:
            tasks.append(asyncio.create_task(telegram.poll(stop), name="telegram polling"))
        if slack is not None:
            tasks.append(asyncio.create_task(slack.watch(), name="slack web api"))
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # no new request first (the handlers under way end), then the channels' work that goes
        # on after its answer (a Slack decision) ends, before the audit and the client close
        await runner.cleanup()
        for close in closers:
            await close()
        await scraper.cleanup()
        metrics.up.labels(settings.environment).set(0)
        sink.close()
        kube.close()
        log.info("chat stopped")
    return 0


async def listen(runner: web.BaseRunner, host: str, port: int) -> None:
    """Serve ``runner`` on ``host`` (an IP address) and ``port``; OSError when nothing could
    be bound (asyncio skips an address whose socket the system refuses: IPv6 on a kernel
    without it, and would serve on no socket at all)."""
    await web.TCPSite(runner, host, port).start()
    if not runner.addresses:
        raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """The metrics port's server: ``registry`` on ``/metrics`` (and ``/``), in the format the
    scraper asks for (OpenMetrics for Prometheus, else Prometheus' text format), compressed
    when it accepts that (``Accept-Encoding``: gzip for Prometheus; aiohttp picks deflate
    when both are offered), served by the process's
    event loop like the HTTP port, on the same address."""
    async def scrape(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        resp = web.Response(body=encode(registry), headers={"Content-Type": content_type})
        resp.enable_compression()
        return resp

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/", scrape)
    return app


def bound_port(runner: web.BaseRunner) -> int:
    """The port ``runner``'s one site listens on (the one the system picked for port 0)."""
    return int(runner.addresses[0][1])


async def health(loops: Sequence[asyncio.Task[Any]]) -> web.Response:
    """200 while every loop runs; 503 naming the ones that ended, each with the reason it
    ended with (``telegram polling (BotTokenRejected)``) or the type of its error."""
    ended = [_ended(t) for t in loops if t.done()]
    if ended:
        return web.Response(status=503, text="not running: " + ", ".join(ended))
    return web.Response(text="ok")


def _ended(task: asyncio.Task[Any]) -> str:
    """An ended loop's name, and why it ended: the reason it returned (a rejected bot
    token's ``BotTokenRejected``), or the type of the error it raised."""
    if task.cancelled():
        return task.get_name()
    exc = task.exception()
    why = type(exc).__name__ if exc is not None else task.result()
    return f"{task.get_name()} ({why})" if isinstance(why, str) and why else task.get_name()


__all__ = ["HEADER_SECONDS", "RedactSecrets", "bound_port", "health", "http_runner",
           "install_redaction", "listen", "metrics_app", "run_chat"]
