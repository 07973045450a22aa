"""Signing checkpoints with the audit key, and checking their signatures (Ed25519).

Separate from ``wingman.audit.checkpoints`` (the format) because it needs the keys of
``wingman.capability.keys``: processes that only append to the trail (the gateway, chat) never
import it. Pure: imports ``wingman.audit``'s format modules, ``wingman.capability.keys`` and
``wingman.errors``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature

from wingman.audit.checkpoints import _LOG, INVALID_REASON, Checkpoint, _invalid
from wingman.audit.records import AuditAnchor, _format_time
from wingman.capability.keys import KeySet, SigningKey, _b64url, _load_public, jwk_thumbprint
from wingman.errors import AuditTampered


def sign_checkpoint(key: SigningKey, *, log: str, anchor: AuditAnchor,
                    now: dt.datetime) -> Checkpoint:
    """A checkpoint of ``anchor`` signed with the audit key ``key``."""
    if not _LOG.fullmatch(log):
        raise ValueError(f"checkpoint log name {log!r} is not a valid name")
    unsigned = Checkpoint(log, anchor.seq, anchor.hash, _format_time(now), key.kid, "")
    signature = _b64url(key.private_key.sign(unsigned.payload()))
    return Checkpoint(log, anchor.seq, anchor.hash, unsigned.time, key.kid, signature)


def check_signature(checkpoint: Checkpoint, keys: KeySet, source: str = "") -> None:
    """``AuditTampered`` unless an audit key in ``keys`` signed ``checkpoint``."""
    key = keys.get(checkpoint.kid)
    where = f"{source} ({checkpoint.describe()})" if source else checkpoint.describe()
    if key is None:
        known = ", ".join(keys) or "none"
        raise _invalid(where, f"is signed with audit key {checkpoint.kid!r}, which is not one "
                              f"of the trusted audit keys ({known})")
    try:
        signature = base64.urlsafe_b64decode(checkpoint.signature + "==")
        if _b64url(signature) != checkpoint.signature:  # unused bits set: not what was signed
            raise InvalidSignature
        key.verify(signature, checkpoint.payload())
    except (InvalidSignature, binascii.Error, ValueError):
        raise _invalid(where, "has a signature that does not verify: it was forged or "
                              "changed after signing") from None


def check_signatures(checkpoints: Iterable[Checkpoint], keys: KeySet, source: str = ""
                     ) -> list[Checkpoint]:
    """Every checkpoint, once its signature verified (``AuditTampered`` at the first that does
    not), sorted by ``seq``. Two signed checkpoints that disagree about one ``seq`` are
    tampering too: the chain they describe was rewritten between them."""
    by_seq: dict[int, Checkpoint] = {}
    for checkpoint in checkpoints:
        check_signature(checkpoint, keys, source)
        seen = by_seq.get(checkpoint.seq)
        if seen is not None and seen.hash != checkpoint.hash:
            raise AuditTampered(
                f"two signed checkpoints disagree about seq {checkpoint.seq}: "
                f"{seen.describe()} and {checkpoint.describe()}; the log was rewritten between "
                "them", reason=INVALID_REASON)
        if seen is None or checkpoint.time < seen.time:
            by_seq[checkpoint.seq] = checkpoint
    return [by_seq[seq] for seq in sorted(by_seq)]


def keyset_from_pems(pems: Iterable[bytes | str]) -> KeySet:
    """Audit public keys (PEM), each under its RFC 7638 thumbprint: the kid the operator gives
    the audit keys it generates. ``ConfigError`` for a key that is not a sound Ed25519 key."""
    keys = KeySet()
    for number, pem in enumerate(pems, start=1):
        key = _load_public(f"audit key #{number}", pem)
        keys.add(jwk_thumbprint(key), key)
    return keys


__all__ = ["check_signature", "check_signatures", "keyset_from_pems", "sign_checkpoint"]
