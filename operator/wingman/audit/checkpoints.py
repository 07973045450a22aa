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

**Size.** A witness's copy grows by one line (about 300 bytes) a minute for as long as the
trail is written: half a million lines a year. ``iter_checkpoints`` reads such a file as a
stream, one bounded line at a time, and ``CheckpointIndex`` holds what a verification needs of
every checkpoint (each one's ``seq`` and ``hash`` still detect a rewrite) packed in about 135
bytes each instead of the Python objects. ``parse_checkpoints`` (whole lists, e.g. the
ConfigMap's) keeps its size limit.

Signing and checking signatures is ``wingman.audit.signing`` (it needs the Ed25519 keys of
``wingman.capability.keys``); this module is the format alone. Pure: imports
``wingman.audit.records`` and ``wingman.errors``.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import io
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

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
"""Largest list of checkpoints ``parse_checkpoints`` reads whole (a ConfigMap's); files are
streamed by ``iter_checkpoints`` with no limit on their length."""

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


def iter_checkpoints(stream: IO[bytes], source: str) -> Iterator[tuple[int, Checkpoint]]:
    """(line number, checkpoint) for each line of a JSON Lines stream (blank lines skipped),
    read one line at a time: memory stays bounded however long the stream. Anything malformed
    raises ``AuditTampered`` naming its line. Signatures are not checked here."""
    for number in range(1, 2**63):
        line = stream.readline(MAX_CHECKPOINT_LINE + 2)
        if not line:
            return
        where = f"{source} line {number}"
        if len(line) > MAX_CHECKPOINT_LINE + 1 or (len(line) == MAX_CHECKPOINT_LINE + 1
                                                    and not line.endswith(b"\n")):
            raise _invalid(where, f"is longer than {MAX_CHECKPOINT_LINE} bytes")
        line = line.strip()
        if not line:
            continue
        try:
            obj = _loads(line)
        except _Malformed as exc:
            raise _invalid(where, str(exc)) from None
        yield number, parse_checkpoint(obj, where)


def parse_checkpoints(data: bytes | str, source: str) -> list[Checkpoint]:
    """Checkpoints from JSON Lines (blank lines skipped), e.g. the ConfigMap's
    ``checkpoints.jsonl``. Anything malformed raises ``AuditTampered``; so does a list over
    ``MAX_CHECKPOINTS_BYTES`` (stream a longer one with ``iter_checkpoints``)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > MAX_CHECKPOINTS_BYTES:
        raise _invalid(source, f"list is larger than {MAX_CHECKPOINTS_BYTES} bytes")
    return [checkpoint for _, checkpoint in iter_checkpoints(io.BytesIO(raw), source)]


class CheckpointIndex(Mapping[int, Checkpoint]):
    """Signature-checked checkpoints by ``seq``, packed (about 135 bytes each, against some 700
    as objects) so that a verification holds every one of a witness's year-long copy.

    ``add`` them (any order); two that disagree about one ``seq`` raise ``AuditTampered`` (the
    chain they describe was rewritten between them), and of two that agree the earlier signed is
    kept, as ``wingman.audit.signing.check_signatures`` does."""

    def __init__(self) -> None:
        self._seqs = array("q")
        self._hashes = bytearray()  # 32 bytes each
        self._times = bytearray()  # 27 ASCII bytes each (the _TIME form)
        self._signatures = bytearray()  # 64 bytes each
        self._names = array("H")  # (log, kid) pair, an index into _pairs
        self._pairs: list[tuple[str, str]] = []
        self._pair_ids: dict[tuple[str, str], int] = {}
        self._sorted = True
        self._newest: Checkpoint | None = None

    def add(self, checkpoint: Checkpoint) -> None:
        """Remember ``checkpoint``, whose signature the caller checked."""
        signature = base64.urlsafe_b64decode(checkpoint.signature + "==")
        if base64.urlsafe_b64encode(signature).rstrip(b"=").decode() != checkpoint.signature:
            raise ValueError("a checkpoint's signature must be checked before it is indexed")
        seqs = self._seqs
        if seqs and checkpoint.seq <= seqs[-1]:
            if checkpoint.seq < seqs[-1]:
                self._sorted = False
            else:
                self._agree(self._at(len(seqs) - 1), checkpoint)
                if checkpoint.time >= self._times[-27:].decode("ascii"):
                    return
                self._drop_last()
        pair = (checkpoint.log, checkpoint.kid)
        pair_id = self._pair_ids.get(pair)
        if pair_id is None:
            if len(self._pairs) >= 65535:
                raise _invalid("list", "names more than 65535 logs and audit keys")
            pair_id = self._pair_ids[pair] = len(self._pairs)
            self._pairs.append(pair)
        seqs.append(checkpoint.seq)
        self._hashes += bytes.fromhex(checkpoint.hash)
        self._times += checkpoint.time.encode("ascii")
        self._signatures += signature
        self._names.append(pair_id)
        self._newest = None

    def _drop_last(self) -> None:
        self._seqs.pop()
        self._names.pop()
        del self._hashes[-32:], self._times[-27:], self._signatures[-64:]

    @staticmethod
    def _agree(seen: Checkpoint, checkpoint: Checkpoint) -> None:
        if seen.hash != checkpoint.hash:
            raise AuditTampered(
                f"two signed checkpoints disagree about seq {checkpoint.seq}: "
                f"{seen.describe()} and {checkpoint.describe()}; the log was rewritten between "
                "them", reason=INVALID_REASON)

    def _sort(self) -> None:
        """Order by seq once (after ``add``s out of order), merging those that agree."""
        if self._sorted:
            return
        order = sorted(range(len(self._seqs)),
                       key=lambda i: (self._seqs[i], self._times[27 * i:27 * i + 27]))
        old = (self._seqs, self._hashes, self._times, self._signatures, self._names)
        self._seqs, self._hashes, self._times, self._signatures, self._names = (
            array("q"), bytearray(), bytearray(), bytearray(), array("H"))
        self._sorted = True
        for i in order:
            seq = old[0][i]
            if self._seqs and seq == self._seqs[-1]:
                if old[1][32 * i:32 * i + 32] != self._hashes[-32:]:
                    self._agree(self._at(len(self._seqs) - 1), self._build(old, i))
                continue  # sorted by time too: the one kept is the earlier signed
            self._seqs.append(seq)
            self._hashes += old[1][32 * i:32 * i + 32]
            self._times += old[2][27 * i:27 * i + 27]
            self._signatures += old[3][64 * i:64 * i + 64]
            self._names.append(old[4][i])

    def _build(self, columns: tuple[array[int], bytearray, bytearray, bytearray, array[int]],
               i: int) -> Checkpoint:
        seqs, hashes, times, signatures, names = columns
        log, kid = self._pairs[names[i]]
        signature = base64.urlsafe_b64encode(signatures[64 * i:64 * i + 64]).rstrip(b"=")
        return Checkpoint(log, seqs[i], hashes[32 * i:32 * i + 32].hex(),
                          times[27 * i:27 * i + 27].decode("ascii"), kid,
                          signature.decode("ascii"))

    def _at(self, i: int) -> Checkpoint:
        return self._build((self._seqs, self._hashes, self._times, self._signatures,
                            self._names), i)

    def __getitem__(self, seq: int) -> Checkpoint:
        self._sort()
        i = bisect.bisect_left(self._seqs, seq)
        if i == len(self._seqs) or self._seqs[i] != seq:
            raise KeyError(seq)
        return self._at(i)

    def __iter__(self) -> Iterator[int]:
        self._sort()
        return iter(self._seqs)

    def __len__(self) -> int:
        self._sort()
        return len(self._seqs)

    def newest(self) -> Checkpoint | None:
        """The checkpoint with the highest ``seq``."""
        self._sort()
        if self._newest is None and self._seqs:
            self._newest = self._at(len(self._seqs) - 1)
        return self._newest

    def before(self, seq: int) -> Checkpoint | None:
        """The checkpoint with the highest ``seq`` below ``seq``."""
        self._sort()
        i = bisect.bisect_left(self._seqs, seq)
        return self._at(i - 1) if i else None

    def checkpoints(self) -> Iterator[Checkpoint]:
        """Every checkpoint, by ``seq``."""
        self._sort()
        return (self._at(i) for i in range(len(self._seqs)))

    @classmethod
    def of(cls, checkpoints: Iterable[Checkpoint]) -> CheckpointIndex:
        index = cls()
        for checkpoint in checkpoints:
            index.add(checkpoint)
        return index


def newest(checkpoints: Sequence[Checkpoint]) -> Checkpoint | None:
    """The checkpoint with the highest ``seq`` (the one that covers the most records)."""
    return max(checkpoints, key=lambda c: (c.seq, c.time), default=None)


__all__ = [
    "CHECKPOINT_TYPE",
    "INVALID_REASON",
    "MAX_CHECKPOINTS_BYTES",
    "Checkpoint",
    "CheckpointIndex",
    "iter_checkpoints",
    "newest",
    "parse_checkpoint",
    "parse_checkpoints",
]
