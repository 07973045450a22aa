"""The ``Context`` every handler shares, built once from ``OperatorSettings``, and the one way
an object is reconciled.

It holds the API client, the signing keys, the audit sink, the reviewer panel, the allowlist,
the metrics, what the watches told us (``state.Tracker``), the leader election and the Event
poster, and:

- ``audit``: the one way a handler appends to the audit trail (durably, or the transition is
  refused and retried; appends that arrive together are written together, ``recorder``);
- ``run``: reconcile one object under its own lock, only while this replica leads, at most
  ``RUNNING_PER_THREAD`` x ``settings.api_concurrency`` objects at once (a burst of thousands
  waits its turn instead of holding every object's bodies in memory at once; a reconcile that
  waits for the reviewer panel gives its slot up meanwhile, ``outside_turn``), and turn
  every failure into what it means: a copy older than one the tracker has seen of the object
  (a re-list's event, a read made before a write this process has seen answered) is read
  again instead of acted on, a conflict is re-read and retried at once, an unreachable
  or overloaded API server or a full audit volume is retried quietly within seconds, an error
  that retrying cannot fix ends the object with a clear reason (``Reconciler.abandon``), and
  only a bug logs a traceback (once per object, then retried with back-off).
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from wingman.audit import REJECTED_REASON, AuditRecord, AuditSink, NewRecord, open_sink
from wingman.capability import keyring as keyring
from wingman.errors import AuditUnavailable, ClusterError, WingmanError
from wingman.kube import APPROVALS, GRANTS, SECRETS, ApiError, Kube, Resource, create_or_adopt
from wingman.operator.events import Events
from wingman.operator.metrics import Metrics
from wingman.operator.recorder import Recorder
from wingman.operator.state import Entry, Tracker, older
from wingman.operator.writer import ADOPT, APPEND, KUBE_CALLS, Observation, Unsendable, Writer
from wingman.review.consensus import PanelConfig
from wingman.review.panel import voters_from_config
from wingman.review.voters import Namespaces, TargetRule
from wingman.scope import Allowlist
from wingman.settings import OperatorSettings

T = TypeVar("T")
log = logging.getLogger("wingman.operator")

KINDS: dict[str, Resource] = {"approval": APPROVALS, "grant": GRANTS}
#: Delays (seconds) of the quiet retries of a transient failure, then the last one repeats.
TRANSIENT_DELAYS = (0.5, 1.0, 2.0, 3.0, 5.0)
#: Delays of the retries after an unexpected error (a bug, logged once with its traceback).
BUG_DELAYS = (5.0, 10.0, 30.0, 60.0)
#: Fresh reads in a row older than a copy seen before after which the read is trusted: the store
#: went back (etcd restored from a backup without ``--bump-revision``), not a race with a write
STALE_READS = 3
#: Objects reconciled at once per thread of the pool: enough to keep every thread busy (a
#: reconcile also waits on the audit lock and the event loop), few enough that a burst does not
#: hold thousands of objects' bodies and responses at once.
RUNNING_PER_THREAD = 2


@dataclass
class _Slot:
    """The slot of ``Context.run`` the current reconcile holds (or gave up for a while)."""

    semaphore: asyncio.Semaphore
    held: bool = False


_SLOT: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar("wingman_run_slot",
                                                                     default=None)


class NotLeading(Exception):
    """This replica does not hold the leader lease (any more): stop without writing."""


class Retry(Exception):
    """Run this object again after ``delay`` seconds with a fresh read (a conflict, a race)."""

    def __init__(self, why: str, delay: float = 0.0) -> None:
        super().__init__(why)
        self.delay = delay


class Reconciler(Protocol):
    def observe(self, ctx: Context, body: dict[str, Any]) -> Entry:
        """Feed ``body`` to the tracker, as the kind's watch events do."""
        ...

    async def reconcile(self, ctx: Context, body: dict[str, Any]) -> None: ...

    async def abandon(self, ctx: Context, body: dict[str, Any], reason: str,
                      message: str) -> None: ...


class Leadership(Protocol):
    @property
    def leading(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, *, release: bool = True) -> None: ...


def permanent(exc: BaseException) -> bool:
    """Whether retrying can never make this call succeed (the request itself is refused)."""
    if isinstance(exc, ApiError):
        return exc.status in (400, 413, 422)
    if isinstance(exc, AuditUnavailable):
        return exc.reason == REJECTED_REASON
    return False


def _submit(executor: Executor, fn: Callable[..., T], *args: Any, **kwargs: Any
            ) -> asyncio.Future[T]:
    """Run ``fn`` on ``executor`` with the caller's context variables (the log context); the
    executor's refusal (shut down) is raised here, not from the future."""
    run = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return asyncio.get_running_loop().run_in_executor(executor, run)


@dataclass
class _Lock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass
class Context:
    settings: OperatorSettings
    kube: Kube
    ring: keyring.KeyRing
    sink: AuditSink
    panel: PanelConfig
    allowlist: Allowlist
    metrics: Metrics
    identity: str = "wingman-operator"
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    tracker: Tracker = field(default_factory=Tracker)
    # grants whose terminal phase / replay condition has been counted already
    counted: set[str] = field(default_factory=set)
    leader: Leadership | None = None
    events: Events | None = None
    reconcilers: dict[str, Reconciler] = field(default_factory=dict)
    #: Whether the sweep should look for token Secrets and gateway Jobs a deleted grant left
    #: without an owner (at start, and after a grant was deleted other than by the retirement)
    orphans_due: bool = True
    _locks: dict[str, _Lock] = field(default_factory=dict)
    _retries: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    _attempts: dict[str, int] = field(default_factory=dict)
    _quiet_until: float = 0.0
    _back_quiet_until: float = 0.0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _running: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
    #: The threads blocking calls run on (None: asyncio's default pool).
    executor: Executor | None = None
    #: The thread the audit appends run on (None: ``executor``): a group commit is one write
    #: at a time, and on a thread of its own it never waits behind API calls for a thread.
    audit_executor: Executor | None = None
    _recorder: Recorder | None = None
    #: The process the API calls (but lists) and audit appends run in (``writer``; None:
    #: ``executor`` and ``audit_executor`` here)
    writer: Writer | None = None
    _writer_sink: AuditSink | None = None

    def use_writer(self, writer: Writer) -> None:
        """Run the API calls (but lists), the audit appends to this context's sink and the
        Events' posts in ``writer`` from now on."""
        self.writer = writer
        self._writer_sink = self.sink
        writer.on_answer = self._answered
        if self.events is not None:
            self.events.writer = writer

    def _answered(self, seen: list[Observation], waited: float) -> None:
        """The metrics of a call the writer ran, as if it ran here."""
        self.metrics.call_wait.observe(waited)
        for verb, resource, code, seconds in seen:
            self.metrics.api_call(verb, resource, code, seconds)

    @property
    def env(self) -> str:
        return self.settings.environment

    @property
    def leading(self) -> bool:
        return self.leader is None or self.leader.leading

    def check_leading(self) -> None:
        """Before every write: a replica that lost the lease stops here."""
        if not self.leading:
            raise NotLeading

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (API, audit) off the event loop: a call of ``kube`` the writer
        runs (``writer.KUBE_CALLS``, ``create_or_adopt``) in the writer process when there is
        one, anything else (lists among them) on the operator's own pool
        (``settings.api_concurrency`` threads; asyncio's default pool has cores + 4)."""
        if self.writer is not None:
            try:
                if getattr(fn, "__self__", None) is self.kube and \
                        getattr(fn, "__name__", "") in KUBE_CALLS:
                    answer: T = await self.writer.call(fn.__name__, *args, **kwargs)
                    return answer
                if fn is create_or_adopt and args and args[0] is self.kube:
                    adopted: T = await self.writer.call(ADOPT, *args[1:], **kwargs)
                    return adopted
            except Unsendable as exc:  # a function or a class it has not imported
                self._ran_here(getattr(fn, "__name__", "call"), exc)
        queued = time.monotonic()

        def started() -> T:
            self.metrics.call_wait.observe(time.monotonic() - queued)
            return fn(*args, **kwargs)
        if self.executor is None:
            return await asyncio.to_thread(started)
        return await _submit(self.executor, started)

    def _ran_here(self, call: str, why: Unsendable) -> None:
        """A call the writer could not take (an argument it cannot rebuild) runs on the
        operator's threads: counted, and logged (debug: what it could not take)."""
        known = call if call in KUBE_CALLS or call in (ADOPT, APPEND) else "other"
        self.metrics.writer_local.labels(call=known).inc()
        log.debug("a call runs on the operator's threads, not in the writer",
                  extra={"call": known, "why": str(why)[:300]})

    async def _append(self, fn: Callable[[], T]) -> T:
        """Run a blocking audit append in the writer process (the context's own sink's
        ``append_all``), else on the audit thread, else as ``call``."""
        if self.writer is not None and isinstance(fn, functools.partial) and \
                fn.func == self.sink.append_all and self.sink is self._writer_sink:
            try:
                written: T = await self.writer.call(APPEND, *fn.args, **fn.keywords)
                return written
            except Unsendable as exc:  # records that cannot be sent: written here
                self._ran_here(APPEND, exc)
        if self.audit_executor is None:
            return await self.call(fn)
        try:
            future = _submit(self.audit_executor, fn)
        except RuntimeError as exc:  # shut down, or no thread could be started
            raise AuditUnavailable(f"the audit thread cannot run the append: {exc}") from None
        return await future

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A write to the API server: only while leading."""
        self.check_leading()
        return await self.call(fn, *args, **kwargs)

    def event(self, obj: Any, type_: str, reason: str, message: str) -> None:
        if self.events is not None:
            self.events.post(obj, type_, reason, message)

    async def audit(self, event: str, subject: dict[str, Any], data: dict[str, Any]
                    ) -> AuditRecord:
        """Append durably or raise AuditUnavailable: no transition without its record.
        Appends that arrive together are written together (``recorder``: group commit)."""
        (result,) = await self.audit_unit([(event, subject, data)])  # a unit of one
        if isinstance(result, AuditUnavailable):
            raise result
        return result

    def _recording(self) -> Recorder:
        """The group commit of this context's sink (made again when the sink was replaced)."""
        if self._recorder is None or self._recorder.sink is not self.sink:
            self._recorder = Recorder(self.sink, self._append, self.metrics.audit_written)
        return self._recorder

    async def audit_unit(self, entries: list[tuple[str, dict[str, Any], dict[str, Any]]]
                         ) -> list[AuditRecord | AuditUnavailable]:
        """Append (event, subject, data) records for consecutive steps durably with one wait
        (``Recorder.append_unit``): per entry its record or its ``AuditUnavailable``; those
        before the first failure are durable (after a refusal, none after it is written)."""
        self.check_leading()
        queued = time.monotonic()
        try:
            results = await self._recording().append_unit(
                [NewRecord(event, "operator", subject, data) for event, subject, data in entries])
        finally:
            self.metrics.audit_wait.observe(time.monotonic() - queued)
        for result in results:
            if isinstance(result, AuditUnavailable):
                self.metrics.audit_errors.labels(component="operator").inc()
                break
            self.metrics.audit_sequence.set(result.seq)
        return results

    # -- reconciling ------------------------------------------------------------------------
    @contextmanager
    def _keyed(self, key: str) -> Iterator[asyncio.Lock]:
        slot = self._locks.setdefault(key, _Lock())
        slot.users += 1
        try:
            yield slot.lock
        finally:
            slot.users -= 1
            if slot.users == 0:
                self._locks.pop(key, None)

    def busy(self, kind: str, uid: str) -> bool:
        """Whether a reconcile of this object runs or waits for its lock, or a retry of it is
        scheduled: the sweep need not re-sync it (a re-sync would only read it again and queue
        behind that run, which is what happens to every object while the operator is behind)."""
        key = f"{kind}/{uid}"
        return key in self._locks or key in self._retries

    def _turn(self) -> asyncio.Semaphore:
        """The slots of ``run`` (one set per event loop: a semaphore belongs to its loop)."""
        loop = asyncio.get_running_loop()
        if self._running is None or self._running[0] is not loop:
            self._running = (loop, asyncio.Semaphore(
                RUNNING_PER_THREAD * self.settings.api_concurrency))
        return self._running[1]

    @asynccontextmanager
    async def outside_turn(self) -> AsyncIterator[None]:
        """Wait for something slow outside the operator (the reviewer panel: LLM calls of up
        to their timeout, queued behind each voter's own concurrency) without holding a slot of
        ``run``: while a burst of requests waits for its reviews, grants, expiries and the
        sweep's re-syncs still get their turns. The slot is taken again before the block's
        work goes on."""
        slot = _SLOT.get()
        if slot is None or not slot.held:
            yield
            return
        slot.held = False
        slot.semaphore.release()
        try:
            yield
        finally:
            await slot.semaphore.acquire()
            slot.held = True

    def entry(self, kind: str, uid: str) -> Entry | None:
        table = self.tracker.approvals if kind == "approval" else self.tracker.grants
        return table.get(uid)

    async def run(self, kind: str, body: dict[str, Any]) -> None:
        """Reconcile ``body`` (of ``kind``) now; see the module docstring for failures."""
        if not self.leading:
            return
        asked = time.monotonic()
        meta = body.get("metadata") or {}
        uid, name = str(meta.get("uid", "")), str(meta.get("name", ""))
        key = f"{kind}/{uid}"
        pending = self._retries.pop(key, None)
        if pending is not None:
            pending.cancel()
        with self._keyed(key) as lock:
            async with lock:
                entry = self.entry(kind, uid)
                if entry is not None:
                    entry.attempted = time.monotonic()
                try:
                    await self._in_turn(kind, body, asked)
                except NotLeading:
                    return
                except Retry as exc:
                    self._again(kind, meta, exc.delay, str(exc), quiet=True)
                    return
                except (ClusterError, AuditUnavailable) as exc:
                    if isinstance(exc, ApiError) and exc.not_found:
                        return  # deleted meanwhile: nothing left to do
                    if permanent(exc):
                        await self._abandon(kind, body, exc)
                        return
                    self._transient(kind, meta, exc)
                    return
                except Exception as exc:
                    self.metrics.reconcile_errors.labels(resource=KINDS[kind].plural).inc()
                    attempt = self._attempts.get(key, 0)
                    if attempt == 0:
                        log.exception("unexpected error while reconciling; retrying",
                                      extra={"kind": kind, "object": name})
                    else:
                        log.warning("unexpected error while reconciling again; retrying",
                                    extra={"kind": kind, "object": name,
                                           "error": f"{type(exc).__name__}: {exc}"[:300]})
                    delay = BUG_DELAYS[min(attempt, len(BUG_DELAYS) - 1)]
                    self._again(kind, meta, delay, type(exc).__name__, quiet=True, bump=True)
                    return
        self._attempts.pop(key, None)

    async def stale_event(self, kind: str, body: dict[str, Any]) -> bool:
        """Whether the watch event's ``body`` is older than a copy of the object seen before (a
        re-list's, or an event that waited while the operator wrote). Such a copy changes
        nothing the tracker knows (acted on, a request's would be reviewed again, a grant's
        ``Pending`` copy from before its token was issued would issue it again): an object
        that still needs work is read again before anything is done (``run``); one that needs
        none costs nothing (under load a claim's write often overtakes the event of the
        review it was made on)."""
        if not self.tracker.stale(kind, body):
            return False
        entry = self.entry(kind, str((body.get("metadata") or {}).get("uid", "")))
        if entry is not None and entry.needs is not None and self.leading:
            await self.run(kind, dict(body))
        return True

    def _refuse_stale(self, kind: str, body: dict[str, Any]) -> None:
        """Retry (a fresh read) when ``body`` is older than a copy of the object seen: read
        before a change this process has seen since (a re-list's event made before the
        operator's own write, a re-sync's read answered after it, a copy that waited for its
        turn while a grant's claim was written onto its request), acted on it would repeat what
        that change recorded (a review, a claim) before the write's guard refused it. Checked
        once the reconcile has its turn, under the object's lock. Read again at once, unless
        the object's calls are failing (an outage): then after its back-off, which the
        scheduled retry ``run`` replaced had. Otherwise its version is seen: no copy older than
        it is acted on after it."""
        meta = body.get("metadata") or {}
        entry = self.entry(kind, str(meta.get("uid", "")))
        if entry is None:
            return
        version = str(meta.get("resourceVersion") or "")
        if not older(version, entry.newest):
            entry.seen(version)
            return
        self.metrics.stale_copies.labels(resource=KINDS[kind].plural, outcome="reread").inc()
        failed = self._attempts.get(f"{kind}/{meta.get('uid', '')}", 0)
        raise Retry("a copy older than one seen",
                    TRANSIENT_DELAYS[min(failed, len(TRANSIENT_DELAYS)) - 1] if failed else 0.0)

    async def _in_turn(self, kind: str, body: dict[str, Any], asked: float) -> None:
        """Reconcile in one of the slots of ``run`` (given up meanwhile by ``outside_turn``);
        ``asked``: when ``run`` was called (the wait is measured from there)."""
        slot = _Slot(self._turn())
        turn = _SLOT.set(slot)
        resource = KINDS[kind].plural
        try:
            await slot.semaphore.acquire()
            slot.held = True
            self._refuse_stale(kind, body)
            started = time.monotonic()
            self.metrics.reconcile_wait.labels(resource=resource).observe(started - asked)
            try:
                await self.reconcilers[kind].reconcile(self, body)
            finally:
                self.metrics.reconcile_duration.labels(resource=resource).observe(
                    time.monotonic() - started)
        finally:
            _SLOT.reset(turn)
            if slot.held:
                slot.held = False
                slot.semaphore.release()

    def _transient(self, kind: str, meta: dict[str, Any], exc: Exception) -> None:
        key = f"{kind}/{meta.get('uid', '')}"
        attempt = self._attempts.get(key, 0)
        delay = TRANSIENT_DELAYS[min(attempt, len(TRANSIENT_DELAYS) - 1)]
        reason = getattr(exc, "reason", type(exc).__name__)
        self.metrics.retries.labels(resource=KINDS[kind].plural, reason=str(reason)).inc()
        now = time.monotonic()
        if now >= self._quiet_until:  # one line per few seconds, however many objects wait
            self._quiet_until = now + 10.0
            log.warning("transient failure; retrying quietly", extra={
                "kind": kind, "object": meta.get("name"), "reason": reason,
                "error": str(exc)[:300], "retry_in_seconds": delay})
        self._again(kind, meta, delay, str(reason), quiet=True, bump=True)

    def _again(self, kind: str, meta: dict[str, Any], delay: float, why: str, *,
               quiet: bool, bump: bool = False) -> None:
        key = f"{kind}/{meta.get('uid', '')}"
        if bump:
            self._attempts[key] = self._attempts.get(key, 0) + 1
        delay = delay * (0.8 + 0.4 * random.random())  # noqa: S311 - jitter, not security
        loop = asyncio.get_running_loop()
        old = self._retries.pop(key, None)
        if old is not None:
            old.cancel()
        ns, name, uid = str(meta.get("namespace", "")), str(meta.get("name", "")), \
            str(meta.get("uid", ""))
        self._retries[key] = loop.call_later(
            delay, lambda: self._spawn(self.resync(kind, ns, name, uid)))
        if not quiet:
            log.info("retrying", extra={"kind": kind, "object": name, "why": why})

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resync(self, kind: str, namespace: str, name: str, uid: str = "") -> None:
        """Read the object afresh and reconcile it (a retry, the sweep, a new leader)."""
        key = f"{kind}/{uid}"
        self._retries.pop(key, None)
        if not self.leading:
            return
        entry = self.entry(kind, uid)
        ended = None if entry is None else entry.job_done  # a grant's Job's end, seen before
        asked = "" if entry is None else entry.newest  # the newest copy seen before this read
        try:
            body = await self.call(self.kube.get_or_none, KINDS[kind], namespace, name)
        except ClusterError as exc:
            self._transient(kind, {"namespace": namespace, "name": name, "uid": uid}, exc)
            return
        if body is None or (uid and body["metadata"].get("uid") != uid):
            self.tracker.forget(kind, uid)
            self._attempts.pop(key, None)
            return
        if entry is not None:
            version = str(body["metadata"].get("resourceVersion") or "")
            if not older(version, entry.newest):
                # a copy of this version is in hand: one older, queued for the object's turn
                # meanwhile (a re-list's), is read again rather than acted on before this one
                entry.seen(version)
            else:
                if older(version, asked):
                    # older than a copy seen before the read was sent: a healthy store never
                    # answers so (a read sees every write answered before it); one that went
                    # back does, every time
                    entry.behind += 1
                # else a race: read before a write (or while an event was on its way) whose
                # answer came first; it says nothing of the store, whichever read it follows
                if entry.behind < STALE_READS:
                    self.metrics.stale_copies.labels(resource=KINDS[kind].plural,
                                                     outcome="reread").inc()
                    delay = TRANSIENT_DELAYS[min(entry.behind, len(TRANSIENT_DELAYS) - 1)]
                    self._again(kind, body["metadata"], delay, "read older than a copy seen",
                                quiet=True)
                    return
                self.metrics.stale_copies.labels(resource=KINDS[kind].plural,
                                                 outcome="trusted").inc()
                self._went_back(kind, name, version, entry.newest)
                # what the tracker knew of it came from versions the store no longer has
                entry.newest = version
                self.reconcilers[kind].observe(self, body)
        if entry is not None and ended is not None and entry.job_done is ended:
            # read after that end: this copy shows all its gateway wrote (the grant's reconcile
            # then need not read it again before saying its command did not run)
            entry.job_done_read = str(body["metadata"].get("resourceVersion") or "")
        await self.run(kind, body)

    def _went_back(self, kind: str, name: str, version: str, seen: str) -> None:
        """Say (at most once per 10 s, however many objects) that the store went back."""
        now = time.monotonic()
        if now < self._back_quiet_until:
            return
        self._back_quiet_until = now + 10.0
        log.warning("the API server's copy is older than one it sent before: its store went "
                    "back (etcd restored from a backup without --bump-revision?); going on "
                    "from the API server's copy. Restart the operator so that it reads every "
                    "object again", extra={"kind": kind, "object": name, "version": version,
                                           "seen": seen})

    async def _abandon(self, kind: str, body: dict[str, Any], exc: BaseException) -> None:
        meta = body.get("metadata") or {}
        reason = "AuditRecordRejected" if isinstance(exc, AuditUnavailable) else \
            "OperatorWriteRejected"
        message = (f"the operator cannot complete this {KINDS[kind].plural[:-1]}: {exc}"
                   if isinstance(exc, AuditUnavailable) else
                   f"the API server refused the operator's write and retrying cannot help "
                   f"({exc}); fix the object (for example its size) and submit a new one")
        log.warning("object ended: retrying cannot help", extra={
            "kind": kind, "object": meta.get("name"), "reason": reason, "error": str(exc)[:500]})
        self.metrics.reconcile_errors.labels(resource=KINDS[kind].plural).inc()
        try:
            await self.reconcilers[kind].abandon(self, body, reason, message[:1000])
        except NotLeading:
            return
        except Retry as retry:  # the object changed since it was read: end it from a fresh read
            self._again(kind, meta, retry.delay, str(retry), quiet=True)
            return
        except (ClusterError, AuditUnavailable) as again:
            if permanent(again):
                # not even the short refusal could be written: say so where we still can
                self.event(body, "Warning", reason, message)
                entry = self.entry(kind, str(meta.get("uid", "")))
                if entry is not None:
                    entry.needs = None
                return
            self._transient(kind, meta, again)


def subject_of(body: Any) -> dict[str, Any]:
    meta = body.get("metadata", {})
    return {"kind": body.get("kind", ""), "namespace": meta.get("namespace", ""),
            "name": meta.get("name", ""), "uid": meta.get("uid", "")}


def build_context(settings: OperatorSettings, kube: Kube | None = None) -> Context:
    """Everything the handlers share; ConfigError / ClusterError / AuditUnavailable if not."""
    # Context.run and the election retry failed calls themselves, quietly; a connection for
    # each of the pool's threads and one for the leader election's own thread (with fewer,
    # urllib3 discards a connection whenever all are in use, and the next call opens a new one)
    kube = kube or Kube.from_environment(retries=False,
                                         pool_size=settings.api_concurrency + 1)
    metrics = Metrics()
    if kube.observer is None:  # every API call in the operator's metrics
        kube.observer = metrics.api_call
    labels = {**settings.object_labels, "wingman.dev/environment": settings.environment}
    ring, created = keyring.load_or_create(kube, settings.namespace,
                                           settings.signing_key_secret, labels=labels)
    keyring.publish(kube, settings.namespace, settings.public_keys_configmap, ring,
                    labels=labels)
    allowlist = Allowlist.from_patterns(settings.policy.allowlist)
    api_keys: dict[str, str] = {}
    if settings.voters_secret:
        obj = kube.get(SECRETS, settings.namespace, settings.voters_secret)
        api_keys = _decode_secret(obj)
    spec = settings.policy.panel
    voters = voters_from_config(spec.voters, secrets=api_keys,
                                is_allowed=lambda c: _allowed(allowlist, c),
                                namespaces=Namespaces(
                                    settings.namespace, settings.gateway_targets,
                                    {name: tuple(TargetRule.from_dict(r) for r in rules)
                                     for name, rules in settings.gateway_target_rules.items()}))
    panel = PanelConfig(voters, spec.threshold, spec.quorum, spec.timeout_seconds)
    sink = open_sink(settings.audit_target)
    metrics.signing_keys.set(len(ring.keys))
    ctx = Context(settings, kube, ring, sink, panel, allowlist, metrics,
                  identity=settings.identity)
    ctx.events = Events(kube, settings.identity, metrics.events_dropped)
    sink.append("OperatorStarted", actor="operator",
                subject={"kind": "Namespace", "name": settings.namespace},
                data={"environment": settings.environment, "signingKid": ring.active,
                      "keyGenerated": created, "voters": [v.name for v in voters],
                      "threshold": spec.threshold, "quorum": spec.quorum,
                      "identity": settings.identity})
    return ctx


def _decode_secret(obj: dict[str, Any]) -> dict[str, str]:
    import base64

    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


def _allowed(allowlist: Allowlist, command: str) -> bool:
    from wingman.scope import parse

    try:
        return allowlist.matches(parse(command))
    except WingmanError:
        return False


__all__ = ["KINDS", "Context", "NotLeading", "Reconciler", "Retry", "build_context",
           "permanent", "subject_of"]
