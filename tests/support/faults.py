"""Fault scenarios on the real control plane, shared by the integration tests (generous bounds)
and ``tests/bench/bench_faults.py`` (the precise figures).

- ``failover``: two operator replicas, a flow of requests and grants; the active replica is
  SIGKILLed (or SIGTERMed) mid-flow; the standby takes over and everything settles.
- ``restart``: one replica, SIGKILLed mid-flow and started again (same pod name, as after a
  container restart, or a new one, as a replacement pod).
- ``outage``: requests and grants in flight while the API server is down (SIGKILL, restarted
  after a while) or etcd is frozen (SIGSTOP/SIGCONT); everything settles after it returns.

Each returns its figures and raises AssertionError when anything was lost or done twice: every
request reviewed, every grant's Job released with its token, one Job and one token Secret per
grant, the Secret holding the token the grant records, at most one ``ApprovalReviewed`` and one
``TokenMinted`` per object from each replica, and a second one from the surviving replica only
for an object whose record was among the killed replica's last (the record is written before
the status: a replica killed between the two leaves a record whose status write never
happened, and the next leader reviews or mints again, once). Every audit file verifies.
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.flow import Feeder, Flow, Snapshot, audit_counts
from support.operator import OperatorProcess, wait_for
from wingman.audit import verify

#: How many of a killed replica's last records may concern objects still in flight.
IN_FLIGHT_TAIL = 4


def _wall(record: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(record["time"]).timestamp()


def wait_ready(op: OperatorProcess, timeout: float) -> float:
    """Poll ``/readyz`` until this replica acts; the monotonic time it first did."""
    def ready() -> float | None:
        try:
            return time.monotonic() if op.readiness()[0] == 200 else None
        except OSError:
            return None
    return float(wait_for("the replica ready (holding the lease)", ready, timeout, 0.05,
                          on_timeout=op.log_tail))


def first_record_after(op: OperatorProcess, since_wall: float, events: tuple[str, ...],
                       timeout: float) -> float:
    """Seconds from ``since_wall`` to this replica's first audit record of ``events``."""
    def found() -> float | None:
        for r in op.audit_events():
            if r["event"] in events and _wall(r) >= since_wall:
                return _wall(r) - since_wall
        return None
    return float(wait_for(f"a first {'/'.join(events)} record", found, timeout, 0.1,
                          on_timeout=op.log_tail))


def check(snapshot: Snapshot, requests: list[str], grants: list[str],
          survivors: list[OperatorProcess], killed: list[OperatorProcess]) -> list[str]:
    """Everything the module docstring promises; the list of what is wrong (empty: fine)."""
    problems = []
    unreviewed = sorted(set(requests) - snapshot.reviewed())
    unreleased = sorted(set(grants) - snapshot.released())
    if unreviewed:
        problems.append(f"requests not reviewed: {unreviewed[:10]} ({len(unreviewed)})")
    if unreleased:
        problems.append(f"grants not released: {unreleased[:10]} ({len(unreleased)})")
    problems += snapshot.doubles(grants)
    tails: set[str] = set()
    for op in killed:
        tails |= {r["subject"]["name"] for r in op.audit_events()[-IN_FLIGHT_TAIL:]}
    counts = [audit_counts(op.audit_events()) for op in survivors + killed]
    for names_, column in ((requests, 0), (grants, 1)):
        what = "ApprovalReviewed" if column == 0 else "TokenMinted"
        for name in names_:
            per_replica = [c[column][name] for c in counts]
            total = sum(per_replica)
            if total == 0:
                problems.append(f"{name}: no {what} record")
            elif any(n > 1 for n in per_replica):
                problems.append(f"{name}: {what} {per_replica} (a replica acted twice)")
            elif total > 1 and name not in tails:
                problems.append(f"{name}: {what} by {total} replicas, not in a killed "
                                f"replica's last records")
    for op in survivors + killed:
        result = verify(str(op.audit_path))
        if not result.ok:
            problems.append(f"audit trail {op.audit_path} does not verify: {result}")
        if "Traceback" in op.log_path.read_text(errors="replace"):
            problems.append(f"traceback in {op.log_path}")
    return problems


def settle(flow: Flow, feeder: Feeder, timeout: float, on_timeout: Callable[[], str]
           ) -> tuple[float, Snapshot]:
    """Stop creating, wait until every created request is reviewed, granted and its grant
    released; (the monotonic time it was seen settled, the snapshot)."""
    feeder.stop_creating.set()

    def settled() -> tuple[float, Snapshot] | None:
        snap = flow.snapshot()
        if set(feeder.created) <= snap.reviewed() and \
                len(feeder.granted) == len(feeder.created) and \
                set(feeder.granted) <= snap.released():
            return time.monotonic(), snap
        return None
    result: tuple[float, Snapshot] = wait_for("the flow settled", settled, timeout, 0.2,
                                              on_timeout=on_timeout)
    return result


@dataclass
class Takeover:
    how: str
    active: str = ""  # the work directory of the replica that was stopped or killed
    ready_after: float = 0.0
    first_action_after: float = 0.0
    settled_after: float = 0.0
    requests: int = 0
    grants: int = 0
    problems: list[str] = field(default_factory=list)


def failover(cluster: Any, ns: str, workdir: Path, how: str, *, before: float = 6.0,
             after: float = 6.0, interval: float = 0.25, timeout: float = 90.0,
             env: Mapping[str, str] | None = None) -> Takeover:
    """``how``: ``SIGKILL``, ``SIGTERM`` or ``SIGHUP`` of the active replica; ``env``: more
    of the replicas' environment (a lease duration of the test's)."""
    a = OperatorProcess(cluster, ns, workdir / "a", extra_env=env)
    b = OperatorProcess(cluster, ns, workdir / "b", extra_env=env)
    result = Takeover(how)
    feeder: Feeder | None = None
    try:
        a.start()
        wait_ready(a, 60)
        b.start()
        flow = Flow(cluster, ns)
        feeder = Feeder(flow, interval=interval).start()
        time.sleep(before)
        active, standby = (a, b) if a.readiness()[0] == 200 else (b, a)
        assert active.proc is not None
        result.active = active.workdir.name
        t0, w0 = time.monotonic(), time.time()
        active.proc.send_signal(getattr(signal, how))
        result.ready_after = wait_ready(standby, 60) - t0
        result.first_action_after = first_record_after(
            standby, w0, ("ApprovalReviewed", "TokenMinted"), 60)
        active.proc.wait(timeout=30)
        time.sleep(after)
        done, snap = settle(flow, feeder, timeout, standby.log_tail)
        result.settled_after = done - t0
        result.requests, result.grants = len(feeder.created), len(feeder.granted)
        killed = [active] if how == "SIGKILL" else []
        survivors = [standby] + ([active] if how != "SIGKILL" else [])
        result.problems = check(snap, feeder.created, feeder.granted, survivors, killed)
    finally:
        if feeder is not None:
            feeder.stop()
        a.stop()
        b.stop()
    return result


def restart(cluster: Any, ns: str, workdir: Path, *, same_identity: bool = True,
            before: float = 5.0, interval: float = 0.25, timeout: float = 90.0,
            env: Mapping[str, str] | None = None) -> Takeover:
    """One replica SIGKILLed mid-flow and started again: as the same pod (a container restart)
    or, ``same_identity=False``, as a new one (a replacement pod, a new lease identity);
    ``env``: more of its environment (a lease duration of the test's)."""
    op = OperatorProcess(cluster, ns, workdir / "op", extra_env=env)
    result = Takeover("restart" if same_identity else "replacement")
    feeder: Feeder | None = None
    try:
        op.start()
        wait_ready(op, 60)
        flow = Flow(cluster, ns)
        feeder = Feeder(flow, interval=interval).start()
        time.sleep(before)
        t0, w0 = time.monotonic(), time.time()
        op.kill()
        before_records = len(op.audit_events())
        if not same_identity:
            op.extra_env["WINGMAN_POD_NAME"] = f"operator-{workdir.name}-replacement"
        op.start()
        result.ready_after = wait_ready(op, 60) - t0
        result.first_action_after = first_record_after(op, w0, ("ApprovalReviewed",), 60)
        done, snap = settle(flow, feeder, timeout, op.log_tail)
        result.settled_after = done - t0
        result.requests, result.grants = len(feeder.created), len(feeder.granted)
        # one process, one file: the records after the kill are the restarted process's
        records = op.audit_events()
        result.problems = _check_one_file(snap, feeder.created, feeder.granted, op,
                                          records[:before_records], records[before_records:])
    finally:
        if feeder is not None:
            feeder.stop()
        op.stop()
    return result


def _check_one_file(snap: Snapshot, requests: list[str], grants: list[str],
                    op: OperatorProcess, killed: list[dict[str, Any]],
                    restarted: list[dict[str, Any]]) -> list[str]:
    """``check`` for one process restarted on the same audit file."""
    problems = []
    unreviewed = sorted(set(requests) - snap.reviewed())
    unreleased = sorted(set(grants) - snap.released())
    if unreviewed:
        problems.append(f"requests not reviewed: {unreviewed[:10]} ({len(unreviewed)})")
    if unreleased:
        problems.append(f"grants not released: {unreleased[:10]} ({len(unreleased)})")
    problems += snap.doubles(grants)
    tails = {r["subject"]["name"] for r in killed[-IN_FLIGHT_TAIL:]}
    for part in (killed, restarted):
        reviewed, minted = audit_counts(part)
        problems += [f"{n}: reviewed {c} times by one process" for n, c in reviewed.items()
                     if c > 1]
        problems += [f"{n}: minted {c} times by one process" for n, c in minted.items()
                     if c > 1]
    r1, m1 = audit_counts(killed)
    r2, m2 = audit_counts(restarted)
    for n in set(r1) & set(r2) | set(m1) & set(m2):
        if n not in tails:
            problems.append(f"{n}: acted on before and after the kill, not in flight")
    if not verify(str(op.audit_path)).ok:
        problems.append("the audit trail does not verify")
    if "Traceback" in op.log_path.read_text(errors="replace"):
        problems.append("traceback in the operator log")
    return problems


@dataclass
class Outage:
    component: str
    seconds: float
    requests: int
    grants: int
    last_request_after: float = 0.0
    last_grant_after: float = 0.0
    problems: list[str] = field(default_factory=list)


def outage(cluster: Any, ns: str, workdir: Path, component: str, *, seconds: float,
           requests: int = 100, grants: int = 20, timeout: float = 180.0) -> Outage:
    """``component``: ``kube-apiserver`` (SIGKILL, then started again) or ``etcd`` (SIGSTOP,
    then SIGCONT). ``grants`` requests are approved before; their grants and the ``requests``
    new requests are created while the operator is held (SIGSTOP), and it is let go as the
    outage begins: all of them are in flight, seen and not yet written. Figures: seconds from
    the component's return (the API server ready again / etcd resumed) to the last request
    reviewed and the last grant's Job released."""
    op = OperatorProcess(cluster, ns, workdir / "op")
    result = Outage(component, seconds, requests, grants)
    flow = Flow(cluster, ns)
    op.start()
    try:
        wait_ready(op, 60)
        early = [f"e-{i:04d}" for i in range(grants)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(flow.request, early))
        wait_for("the early requests reviewed", lambda: set(early) <= flow.reviewed(), 120,
                 0.5, on_timeout=op.log_tail)
        fresh = [f"r-{i:04d}" for i in range(requests)]
        granted = [f"g-{i:04d}" for i in range(grants)]
        # held while they are created, the operator has all of them in flight (their events
        # delivered, nothing written) when the outage begins
        assert op.proc is not None
        op.proc.send_signal(signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(flow.request, fresh))
                list(pool.map(lambda i: flow.grant(granted[i], early[i]), range(grants)))
            time.sleep(1)
        finally:
            if component == "etcd":
                cluster.pause("etcd")
            else:
                cluster.kill(component)
            op.proc.send_signal(signal.SIGCONT)
        try:
            time.sleep(seconds)
        finally:
            if component == "etcd":
                cluster.resume("etcd")
            else:
                cluster.restart(component)
        back = time.monotonic()
        last: dict[str, float] = {}

        def settled() -> Snapshot | None:
            snap = flow.snapshot()
            now = time.monotonic()
            for n in snap.reviewed() | snap.released():
                last.setdefault(n, now)
            done = set(fresh) <= snap.reviewed() and set(granted) <= snap.released()
            return snap if done else None
        snap = wait_for("every request and grant settled after the outage", settled,
                        timeout, 0.2, on_timeout=op.log_tail)
        result.last_request_after = max(last[n] for n in fresh) - back
        result.last_grant_after = max(last[n] for n in granted) - back
        result.problems = check(snap, early + fresh, granted, [op], [])
    finally:
        op.stop()
    return result


__all__ = ["Outage", "Takeover", "check", "failover", "outage", "restart", "wait_ready"]
