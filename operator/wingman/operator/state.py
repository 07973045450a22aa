"""What the operator knows about every ApprovalRequest and ExecutionGrant it watches (pure).

The watch streams feed ``Tracker`` with every object they carry; the handlers and the shared
sweep read it to decide what needs doing without asking the API server again:

- which objects still need work (``needs``: a review, decisions to count, an expiry, a
  grant to issue or release, a finished grant's token Secret to remove) and since when, for
  the re-sync of objects whose event was lost and for the oldest-unprocessed gauge;
- which requests and grants are due to expire, and which finished ones are due for retirement
  (retention);
- a trimmed copy of every ApprovalRequest that is not final, so a grant is authorized against
  the approval the watch delivered instead of a fresh read. That copy may be stale: the
  operator acts on it only through a write guarded by the copy's resourceVersion (the claim of
  the command), and re-reads before it refuses anything on its strength. It is kept as compact
  JSON (a tenth of the memory of the decoded objects) and decoded when a grant reads it;
- the token each grant was issued on its claim (the token fields of its entry in the
  approval's ``status.grants``, ``claims``): such a grant's stored phase stays ``Pending``
  until the gateway writes ``Running``, and the tracker judges it as
  ``wingman.model.grants.view`` does, ``TokenIssued`` with the claim's token expiry, whichever
  of the approval and the grant the watches deliver first (and after the approval is final);
- the newest resourceVersion seen of each object (``Entry.newest``): a copy older than it
  (``older``: a re-list's, a read answered after a write this process saw) changes nothing
  here, and ``Context.run`` reads it again instead of acting on it.

An entry is small (slots, no per-object dicts beyond that copy) and the tracker forgets it when
its object is deleted or retired: the operator's memory follows the objects that exist.

Nothing here is a source of truth: the objects are. A restarted operator rebuilds all of it
from the watches' initial listing. Imports neither kopf nor kubernetes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from wingman import conditions as cond
from wingman.model import approvals as rules
from wingman.model import grants as grant_rules

Body = Mapping[str, Any]

#: Status fields of an ApprovalRequest that grant authorization never reads (the largest ones).
_UNUSED_STATUS = ("consensus",)


@dataclass(slots=True)
class Entry:
    """One object: its identity, what it still needs, and the times the sweep compares."""

    kind: str  # "approval" | "grant"
    namespace: str
    name: str
    uid: str
    created: dt.datetime
    phase: str
    needs: str | None = None  # what is left to do, None when settled
    needs_since: dt.datetime | None = None
    final_at: dt.datetime | None = None  # when it became final (retention counts from here)
    expires_at: dt.datetime | None = None  # approval: expirationTime; grant: token expiry
    warn_at: dt.datetime | None = None  # approval: when its pending-expiry warning is due
    rollbacks: bool = False  # approval: it names rollbacks (spec.rollbacks)
    approval: str = ""  # grant: the ApprovalRequest it names
    attempted: float = 0.0  # monotonic time of the last reconcile attempt
    packed: bytes | None = None  # approvals that are not final: a trimmed copy, as JSON
    packed_version: str = ""  # the resourceVersion of that copy
    #: the newest resourceVersion of the object seen (watch events, write answers, copies
    #: acted on: ``seen``): a copy
    #: older than it (``older``) changes nothing here and is read again before it is acted on
    newest: str = ""
    #: fresh reads older than the ``newest`` seen before each was sent, since a copy was last
    #: seen or acted on (the store went back: trusted after ``Context.resync``'s few tries)
    behind: int = 0
    released: bool = False  # grant: its token is in place (stored or checked by this process)
    cleaned: bool = False  # grant: its token Secret (and Denied Job) are known to be gone
    secret_uid: str | None = None  # grant: the uid of the token Secret this process made
    secret_name: str | None = None  # grant: and its name
    job_done: tuple[str, str] | None = None  # grant: its Job finished (condition, reason)
    #: grant: the resourceVersion of the grant as read afresh after its Job's end was seen
    #: ("": not read since): a copy of that version shows all its gateway wrote, while any
    #: other (a watch event's) may lag a ``Running`` written before the Job ended
    job_done_read: str = ""
    #: grant: when its gateway Job, active as the Jobs watch (or a look after the token
    #: expired) last showed it, runs out of time (the Job's end, a watch event, settles the
    #: grant by then); None when the Job is not known to be active
    job_deadline: dt.datetime | None = None
    #: grant: the UID of a deleted namesake's gateway Job in the way of its own, and the
    #: monotonic time it was first found there; whether the wait was reported (once a Job)
    namesake_job: str = ""
    namesake_since: float = 0.0
    namesake_reported: bool = False
    #: its ``...Retired`` audit record is written (a delete the API server refused is retried
    #: without a second record)
    retire_recorded: bool = False
    #: the API server's refusal to delete it after the retention is reported (a Warning
    #: Event, once however often the sweep retries it)
    retire_refusal_reported: bool = False
    #: monotonic time of the last try to retire it (those refused are tried again in turn)
    retire_tried: float = 0.0

    def seen(self, version: str) -> None:
        """A copy of ``version`` (not older than ``newest``) was seen or acted on."""
        if version and not older(version, self.newest):
            self.newest = version
        self.behind = 0

    @property
    def body(self) -> dict[str, Any] | None:
        """A request that is not final: the trimmed copy of it the watch last delivered (a new
        dict on every read, so nobody changes the copy)."""
        if self.packed is None:
            return None
        decoded: dict[str, Any] = json.loads(self.packed)
        return decoded


def older(version: str, than: str) -> bool:
    """Whether the resourceVersion ``version`` is older than ``than``: both are decimal
    integers (etcd's revisions, which every write of the store increases; comparable as numbers
    since Kubernetes 1.35, KEP-5504), compared as numbers. False when either is not (nothing
    is known then: the write guards alone decide)."""
    if not (version.isdecimal() and than.isdecimal() and version.isascii() and than.isascii()):
        return False
    return int(version) < int(than)


def _version(body: Body) -> str:
    return str((body.get("metadata") or {}).get("resourceVersion") or "")


def _time(text: object) -> dt.datetime | None:
    return rules.parse_time(text)


def _conds(body: Body) -> list[Mapping[str, Any]]:
    return list((body.get("status") or {}).get("conditions") or [])


def trimmed(body: Body) -> dict[str, Any]:
    """The parts of an ApprovalRequest a grant's authorization reads."""
    meta = body.get("metadata") or {}
    status = {k: v for k, v in (body.get("status") or {}).items() if k not in _UNUSED_STATUS}
    keep = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp")
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {k: meta[k] for k in keep if k in meta},
            "spec": dict(body.get("spec") or {}), "status": status}


def pack(body: Body) -> bytes:
    """``body`` as compact JSON."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def approval_final_at(body: Body) -> dt.datetime | None:
    """When a request became final (Rejected, Revoked or Expired), from its conditions."""
    times = [_time(c.get("lastTransitionTime")) for c in _conds(body)
             if c.get("type") in ("Rejected", "Revoked", "Expired") and c.get("status") == "True"]
    found = [t for t in times if t is not None]
    return min(found) if found else None


def approval_needs(body: Body, pending_decisions: bool, now: dt.datetime,
                   warn_at: dt.datetime | None = None) -> str | None:
    """What is left to do for a request: ``review``, ``decisions``, ``expiry``, ``warning``
    (the one before a pending request expires, due at ``warn_at``) or None."""
    conds = _conds(body)
    if cond.get(conds, "Reviewed") is None:
        return "review"
    if pending_decisions:  # on a final request too: a late decision is reported ignored
        return "decisions"
    if rules.is_final(body):
        return None
    expires = _time((body.get("status") or {}).get("expirationTime"))
    if expires is not None and now >= expires:
        return "expiry"
    if warn_at is not None and now >= warn_at:
        return "warning"
    return None


def grant_needs(body: Body, entry: Entry | None) -> str | None:
    """What is left to do for a grant: ``issue``, ``release``, ``result`` (its Job finished
    without a final phase), ``cleanup`` or None."""
    phase = grant_rules.phase(body)
    if not grant_rules.is_terminal(body) and entry is not None and entry.job_done is not None:
        return "result"
    if phase == "Pending":
        return "issue"
    if phase == "TokenIssued":
        return None if entry is not None and entry.released else "release"
    if grant_rules.is_terminal(body):
        return None if entry is not None and entry.cleaned else "cleanup"
    return None


def job_deadline(job: Body) -> dt.datetime | None:
    """When a started Job's ``activeDeadlineSeconds`` runs out (``status.startTime`` plus the
    deadline), or None when it has no start time or no deadline."""
    start = _time((job.get("status") or {}).get("startTime"))
    seconds = (job.get("spec") or {}).get("activeDeadlineSeconds")
    if start is None or not isinstance(seconds, int) or isinstance(seconds, bool):
        return None
    return start + dt.timedelta(seconds=seconds)


def expiry_due(e: Entry, now: dt.datetime, mono: float, leeway: dt.timedelta,
               resync_seconds: float) -> bool:
    """Whether the sweep should look at ``e``'s expiry now.

    A request: once past its expiration time. A TokenIssued grant: once its token expired (plus
    leeway), unless its gateway Job is known to be active (``job_deadline``: a pod running, or
    waiting for a node or its token Secret; told by the Jobs watch, or found by an earlier
    look). Such a Job's end, a watch event, settles the grant; reading the grant and its Job
    at the expiry or every sweep would only load the API server. So the sweep looks only in case
    that event was lost: ``resync_seconds`` after the Job's deadline, and if the Job is still
    active then (its controller is late), after as long again as the last look was past the
    deadline (30 s, 60 s, 120 s...: at most twice as late as the Job controller). A grant whose
    Job is not known to be active is looked at once its token expired, and then (its deadline
    unknown) every ``resync_seconds``.
    """
    if e.final_at is not None or e.expires_at is None:
        return False
    if e.kind == "approval":
        return now >= e.expires_at
    due = e.expires_at + leeway
    if e.phase != "TokenIssued" or now < due:
        return False
    since = dt.timedelta(seconds=max(0.0, mono - e.attempted))
    looked_at = None if e.attempted == 0.0 else now - since
    resync = dt.timedelta(seconds=resync_seconds)
    if e.job_deadline is not None:
        if looked_at is None or looked_at < e.job_deadline:
            return now >= e.job_deadline + resync
        return since >= max(resync, looked_at - e.job_deadline)
    if looked_at is None or looked_at < due:
        return True  # not looked at since the token expired
    return since >= resync


@dataclass
class Tracker:
    """Every request and grant of the namespace, by uid (see the module docstring)."""

    approvals: dict[str, Entry] = field(default_factory=dict)
    grants: dict[str, Entry] = field(default_factory=dict)
    approval_uids: dict[str, str] = field(default_factory=dict)  # name -> uid
    #: request name -> the uids of the grants that name it (retirement asks per request)
    grants_by_approval: dict[str, set[str]] = field(default_factory=dict)
    #: grant uid -> the claim that issued its token (``grantUID`` and the token fields of
    #: the approval's ``status.grants`` entry; ``wingman.model.grants.ISSUED_FIELDS``)
    claims: dict[str, dict[str, str]] = field(default_factory=dict)
    #: request uid -> the uids of the grants its claims issued tokens to (a claim of a grant
    #: deleted meanwhile, listed again by the request's next version, goes with the request)
    claimed: dict[str, set[str]] = field(default_factory=dict)

    # -- feeding -------------------------------------------------------------------------
    def observe_approval(self, body: Body, pending_decisions: bool, now: dt.datetime, *,
                         warn_at: dt.datetime | None = None) -> Entry:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        status = body.get("status") or {}
        entry = self.approvals.get(uid)
        if entry is not None and older(_version(body), entry.newest):
            return entry  # a stale copy (a re-list's, a read's): the entry stays as it is
        if entry is None:
            entry = Entry("approval", str(meta.get("namespace", "")), str(meta.get("name", "")),
                          uid, _time(meta.get("creationTimestamp")) or now, "Pending")
            self.approvals[uid] = entry
            self.approval_uids[entry.name] = uid
        entry.phase = str(status.get("phase") or "Pending")
        entry.expires_at = _time(status.get("expirationTime"))
        entry.warn_at = warn_at
        entry.rollbacks = bool((body.get("spec") or {}).get("rollbacks"))
        final = rules.is_final(body)
        entry.final_at = (approval_final_at(body) or entry.final_at or now) if final else None
        version = _version(body)
        entry.seen(version)
        if final:
            entry.packed, entry.packed_version = None, ""
        elif entry.packed is None or not version or version != entry.packed_version:
            # the same version again (the operator's own write, then its watch event): the
            # same object, already packed
            entry.packed, entry.packed_version = pack(trimmed(body)), version
        self._needs(entry, approval_needs(body, pending_decisions, now, warn_at), now)
        for claim in status.get("grants") or []:
            grant_uid = claim.get("grantUID") if isinstance(claim, Mapping) else None
            if not grant_uid or not claim.get("tokenSHA256") or grant_uid in self.claims:
                continue  # the entries are append-only: a claim recorded once stays as it is
            self.claimed.setdefault(uid, set()).add(str(grant_uid))
            self.claims[str(grant_uid)] = {
                "grantUID": str(grant_uid),
                **{k: str(claim[k]) for k in grant_rules.ISSUED_FIELDS if claim.get(k)}}
            known = self.grants.get(str(grant_uid))
            if known is not None and known.phase == "Pending":
                # a grant whose token was issued on this claim: TokenIssued from now on
                known.phase = "TokenIssued"
                known.expires_at = _time(self.claims[str(grant_uid)].get("tokenExpirationTime"))
                known.released = False
                self._needs(known, "release", now)
        return entry

    def stale(self, kind: str, body: Body) -> bool:
        """Whether ``body`` is older than a copy of the same object seen before (``older``)."""
        uid = str((body.get("metadata") or {}).get("uid", ""))
        entry = (self.approvals if kind == "approval" else self.grants).get(uid)
        return entry is not None and older(_version(body), entry.newest)

    def view(self, body: Body) -> Body:
        """The grant ``body`` as ``wingman.model.grants.view`` judges it, with the claim that
        issued its token as the tracker knows it (``body`` itself when it knows none)."""
        uid = str((body.get("metadata") or {}).get("uid", ""))
        claim = self.claims.get(uid)
        if claim is None:
            return body
        return grant_rules.view(body, {"status": {"grants": [claim]}})

    def observe_grant(self, body: Body, now: dt.datetime) -> Entry:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        body = self.view(body)  # a Pending grant issued on its claim is TokenIssued
        status = body.get("status") or {}
        entry = self.grants.get(uid)
        if entry is not None and older(_version(body), entry.newest):
            return entry  # a stale copy (a re-list's, a read's): the entry stays as it is
        if entry is None:
            entry = Entry("grant", str(meta.get("namespace", "")), str(meta.get("name", "")),
                          uid, _time(meta.get("creationTimestamp")) or now, "Pending",
                          approval=str(((body.get("spec") or {}).get("approvalRef") or {})
                                       .get("name", "")))
            self.grants[uid] = entry
            self.grants_by_approval.setdefault(entry.approval, set()).add(uid)
        entry.seen(_version(body))
        entry.phase = grant_rules.phase(body)
        entry.expires_at = _time(status.get("tokenExpirationTime"))
        if grant_rules.is_terminal(body):
            entry.final_at = _time(status.get("completionTime")) or entry.final_at or now
        else:  # not final (again, after a status reset): nothing of it is known to be done
            entry.final_at = None
            entry.cleaned = False
            if entry.phase == "Pending":
                entry.released = False
        self._needs(entry, grant_needs(body, entry), now)
        return entry

    def forget(self, kind: str, uid: str) -> None:
        table = self.approvals if kind == "approval" else self.grants
        if kind == "grant":
            self.claims.pop(uid, None)
        entry = table.pop(uid, None)
        if entry is None:
            return
        if kind == "approval":
            for grant_uid in self.claimed.pop(uid, set()):
                if grant_uid not in self.grants:  # deleted: its claim goes too
                    self.claims.pop(grant_uid, None)
            if self.approval_uids.get(entry.name) == uid:
                del self.approval_uids[entry.name]
            return
        uids = self.grants_by_approval.get(entry.approval)
        if uids is not None:
            uids.discard(uid)
            if not uids:
                del self.grants_by_approval[entry.approval]

    @staticmethod
    def _needs(entry: Entry, needs: str | None, now: dt.datetime) -> None:
        if needs is None:
            entry.needs, entry.needs_since = None, None
        elif entry.needs != needs or entry.needs_since is None:
            entry.needs, entry.needs_since = needs, entry.needs_since or now

    def settle(self, entry: Entry, needs: str | None, now: dt.datetime) -> None:
        self._needs(entry, needs, now)

    # -- reading -------------------------------------------------------------------------
    def approval(self, name: str) -> Entry | None:
        uid = self.approval_uids.get(name)
        return self.approvals.get(uid) if uid else None

    def all(self) -> Iterator[Entry]:
        yield from list(self.approvals.values())
        yield from list(self.grants.values())

    def unsettled(self) -> list[Entry]:
        return [e for e in self.all() if e.needs is not None]

    def oldest_unsettled(self, kind: str, now: dt.datetime) -> float:
        """Age in seconds of the oldest object of ``kind`` that still needs work (0: none)."""
        ages = [(now - e.needs_since).total_seconds() for e in self.all()
                if e.kind == kind and e.needs is not None and e.needs_since is not None]
        return max([0.0, *ages])

    def grants_of(self, approval: str) -> list[Entry]:
        """The grants that name the request ``approval`` (from an index, not a scan)."""
        return [self.grants[u] for u in self.grants_by_approval.get(approval, ())]


def due_for_retirement(tracker: Tracker, retention: dt.timedelta, now: dt.datetime, *,
                        rollback_window: dt.timedelta = dt.timedelta(0)) -> list[Entry]:
    """Finished objects older than the retention. A grant of a request that names rollbacks
    is kept for the rollback window too (a rollback needs the grant that ran the command); a
    request is retired only once all its grants are gone, so it outlives them."""
    out: list[Entry] = []
    for g in tracker.grants.values():
        if g.final_at is None or g.needs is not None:
            continue
        request = tracker.approval(g.approval)
        keep = max(retention, rollback_window) if request is not None and request.rollbacks \
            else retention
        if now - g.final_at >= keep:
            out.append(g)
    retiring = {g.uid for g in out}
    for a in tracker.approvals.values():
        if a.final_at is None or now - a.final_at < retention:
            continue
        if any(g.uid not in retiring for g in tracker.grants_of(a.name)):
            continue
        out.append(a)
    return out


__all__ = ["Entry", "Tracker", "approval_final_at", "approval_needs", "due_for_retirement",
           "expiry_due", "grant_needs", "job_deadline", "older", "trimmed"]
