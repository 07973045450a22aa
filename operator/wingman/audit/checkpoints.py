"""Signed checkpoints of the audit head: tamper evidence that trusts no single writer.

The chain alone cannot expose a consistent rewrite of the whole store, nor a tail cut at a
record boundary: anyone who can write the store can re-chain it. A *checkpoint* is the head
(``seq``, ``hash``) at a ``time``, signed with a dedicated Ed25519 audit key that only the
operator holds (never the token-signing key), and kept where the writers of the store cannot
write (the operator's ConfigMap, and optionally an external witness). Since each record's hash
commits to every record before it, one checkpoint protects the whole prefix up to its ``seq``:
``verify`` with checkpoints reports a rewrite at or before any checkpoint (``Rewritten``) and a
log that ends before the newest checkpoint (``Truncated``), without a head kept by hand.

**Format.** One checkpoint is the canonical JSON (see ``wingman.audit.records``) of
``{"log", "seq", "hash", "time", "kid", "signature"}``; ``signature`` is the base64url Ed25519
signature of the canonical JSON of the other five fields plus ``"type":
"wingman.dev/audit-checkpoint/v1"``. ``log`` names the trail (the release namespace). A list of
checkpoints is stored as JSON Lines, oldest first.

Signing and checking signatures is ``wingman.audit.signing`` (it needs the Ed25519 keys of
``wingman.capability.keys``); this module is the format alone. Pure: imports
``wingman.audit.records`` and ``wingman.errors``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wingman.audit.records import (
    _HEX64,
    _TIME,
    AuditAnchor,
    _loads,
    _Malformed,
    _parse_time,
    canonical_json,
)
from wingman.errors import AuditTampered

CHECKPOINT_TYPE = "wingman.dev/audit-checkpoint/v1"
"""Signed with every checkpoint, so no other signature of the audit key can pass for one."""

MAX_CHECKPOINT_LINE = 1024
MAX_CHECKPOINTS_BYTES = 4 * 1024 * 1024
"""Largest list of checkpoints read from one source."""

INVALID_REASON = "AuditCheckpointInvalid"
_FIELDS = frozenset(("log", "seq", "hash", "time", "kid", "signature"))
_LOG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,252}")
_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")  # as wingman.capability.keys spells a kid
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{86}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed head of the audit chain."""

    log: str
    seq: int
    hash: str
    time: str
    kid: str
    signature: str

    def payload(self) -> bytes:
        """The bytes the signature covers."""
        return canonical_json({"type": CHECKPOINT_TYPE, "log": self.log, "seq": self.seq,
                               "hash": self.hash, "time": self.time, "kid": self.kid})

    def to_dict(self) -> dict[str, Any]:
        return {"log": self.log, "seq": self.seq, "hash": self.hash, "time": self.time,
                "kid": self.kid, "signature": self.signature}

    def to_line(self) -> str:
        """The stored form: canonical JSON on one line (no newline)."""
        return canonical_json(self.to_dict()).decode("ascii")

    @property
    def at(self) -> dt.datetime:
        return _parse_time(self.time)

    @property
    def anchor(self) -> AuditAnchor:
        return AuditAnchor(self.seq, self.hash)

    def describe(self) -> str:
        """``seq N (sha256:…, signed 2025-…Z with audit key K)`` for messages."""
        return f"seq {self.seq} (sha256:{self.hash[:16]}…, signed {self.time} with audit key " \
               f"{self.kid})"


def _invalid(source: str, what: str) -> AuditTampered:
    return AuditTampered(f"checkpoint {source} {what}", reason=INVALID_REASON)


def parse_checkpoint(obj: Any, source: str = "") -> Checkpoint:
    """A checkpoint from its JSON object; ``AuditTampered`` (``AuditCheckpointInvalid``) says
    what is wrong. The signature is not checked here: see ``wingman.audit.signing``."""
    if not isinstance(obj, Mapping) or set(obj) != _FIELDS:
        raise _invalid(source, f"is not a checkpoint object with exactly the fields "
                               f"{sorted(_FIELDS)}")
    seq, log, digest, time, kid, signature = (obj["seq"], obj["log"], obj["hash"], obj["time"],
                                              obj["kid"], obj["signature"])
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        raise _invalid(source, "has a seq that is not a non-negative 64-bit integer")
    if not isinstance(log, str) or not _LOG.fullmatch(log):
        raise _invalid(source, "has an invalid log name")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise _invalid(source, "has a hash that is not 64 lowercase hex digits")
    if not isinstance(time, str) or not _TIME.fullmatch(time):
        raise _invalid(source, "has a time that is not RFC 3339 UTC with microseconds")
    if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
        raise _invalid(source, "has an invalid key id")
    if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
        raise _invalid(source, "has a signature that is not 64 bytes of base64url")
    try:
        _parse_time(time)
    except ValueError:
        raise _invalid(source, "has a time that is not a real date") from None
    return Checkpoint(log, seq, digest, time, kid, signature)


def parse_checkpoints(data: bytes | str, source: str) -> list[Checkpoint]:
    """Checkpoints from JSON Lines (blank lines skipped), e.g. the ConfigMap's
    ``checkpoints.jsonl`` or a witness's copy. Anything malformed raises ``AuditTampered``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > MAX_CHECKPOINTS_BYTES:
        raise _invalid(source, f"list is larger than {MAX_CHECKPOINTS_BYTES} bytes")
    out: list[Checkpoint] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        line = line.strip()
        if not line:
            continue
        where = f"{source} line {number}"
        if len(line) > MAX_CHECKPOINT_LINE:
            raise _invalid(where, f"is longer than {MAX_CHECKPOINT_LINE} bytes")
        try:
            obj = _loads(line)
        except _Malformed as exc:
            raise _invalid(where, str(exc)) from None
        out.append(parse_checkpoint(obj, where))
    return out


def newest(checkpoints: Sequence[Checkpoint]) -> Checkpoint | None:
    """The checkpoint with the highest ``seq`` (the one that covers the most records)."""
    return max(checkpoints, key=lambda c: (c.seq, c.time), default=None)


__all__ = [
    "CHECKPOINT_TYPE",
    "INVALID_REASON",
    "MAX_CHECKPOINTS_BYTES",
    "Checkpoint",
    "newest",
    "parse_checkpoint",
    "parse_checkpoints",
]
