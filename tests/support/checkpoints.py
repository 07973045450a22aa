"""Long audit trails and witness copies of their checkpoints, made fast (no fsync per record).

A witness's copy grows by a checkpoint a minute: a year is half a million lines. These build
such files in seconds, so the streaming and packed paths are tested at a realistic size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from wingman.audit import AuditAnchor, AuditRecord, Checkpoint
from wingman.audit.records import GENESIS_HASH, make_record
from wingman.audit.signing import sign_checkpoint
from wingman.capability.keys import SigningKey

T0 = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
UNSIGNED = "A" * 86
"""A well-formed signature no key made: for the paths that take no keys."""


def write_trail(path: Path, count: int, *, start: int = 0, prev: str = GENESIS_HASH,
                tag: str = "") -> list[AuditRecord]:
    """``count`` chained records from ``start`` (following ``prev``) appended to ``path``."""
    records = []
    for seq in range(start, start + count):
        record = make_record(seq, prev, "GatewayExecuted", actor="gateway/p",
                             subject={"kind": "ExecutionGrant", "name": "g"},
                             data={"i": seq, "tag": tag}, now=T0)
        prev = record.hash
        records.append(record)
    with path.open("ab") as fh:
        fh.writelines(r.to_bytes() + b"\n" for r in records)
    return records


def checkpoints_of(records: Sequence[AuditRecord], key: SigningKey | None, *,
                   log: str = "wingman-prd", minutes: int = 0) -> list[Checkpoint]:
    """A checkpoint of each record, a minute apart from ``T0`` + ``minutes``; signed with
    ``key``, or carrying ``UNSIGNED`` when it is ``None``."""
    out = []
    for i, record in enumerate(records):
        now = T0 + dt.timedelta(minutes=minutes + i)
        if key is None:
            out.append(Checkpoint(log, record.seq, record.hash,
                                  now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "k", UNSIGNED))
        else:
            out.append(sign_checkpoint(key, log=log, anchor=AuditAnchor(record.seq,
                                                                        record.hash), now=now))
    return out


def write_checkpoints(path: Path, checkpoints: Sequence[Checkpoint]) -> None:
    with path.open("ab") as fh:
        fh.writelines((c.to_line() + "\n").encode("ascii") for c in checkpoints)
