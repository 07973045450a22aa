"""``wingman audit verify|witness``: verify a trail against its signed checkpoints.

Checkpoints come from the release's ConfigMap (``-n NAMESPACE``: the operator's checkpoints and
the audit public keys it publishes), from files (``--checkpoints FILE``: a witness's copy, or
an export), or both. ``--audit-key FILE`` pins the audit public keys (PEM) instead of trusting
the ConfigMap's. Every checkpoint's signature is checked before any record is read. A file is
read as a stream, a line at a time, into a packed ``CheckpointIndex``: a witness's copy of a
year or more verifies in bounded memory, every checkpoint in it still checked and used.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from wingman.audit import Checkpoint, parse_checkpoints, unexpected, verify_main
from wingman.audit.checkpoints import CheckpointIndex, iter_checkpoints
from wingman.audit.file import open_regular
from wingman.audit.signing import check_signature, keyset_from_pems
from wingman.capability.keys import KeySet
from wingman.errors import AuditTampered, ClusterError, ConfigError, WingmanError
from wingman.model import names
from wingman.model.text import terminal_text

CHECKPOINTS_CONFIGMAP = "wingman-audit-checkpoints"
CHECKPOINTS_KEY = "checkpoints.jsonl"
_CONFIGMAP_NAME = names.OBJECT_NAME
MAX_KEY_BYTES = 64 * 1024
"""Largest audit public key file read (an Ed25519 PEM is about 113 bytes)."""


def add_verify_arguments(vp: argparse.ArgumentParser) -> None:
    vp.add_argument("target", help="a JSON Lines file or a postgresql:// DSN")
    vp.add_argument("--expected-head", help="a head hash recorded elsewhere (detects "
                    "truncation of the tail)")
    vp.add_argument("-n", "--namespace", help="verify against the signed checkpoints the "
                    "operator keeps in this namespace (ConfigMap --configmap)")
    vp.add_argument("--configmap", default=CHECKPOINTS_CONFIGMAP,
                    help="the checkpoints ConfigMap (default %(default)s)")
    vp.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, "
                    "~/.kube/config, else in a pod its ServiceAccount)")
    vp.add_argument("--context", help="the kubeconfig context to use")
    vp.add_argument("--checkpoints", action="append", default=[], metavar="FILE",
                    help="signed checkpoints in JSON Lines, e.g. a witness's copy (repeatable)")
    vp.add_argument("--log", metavar="NAME",
                    help="verify against the checkpoints of this trail only (the release "
                    "namespace that wrote it; default: -n's namespace); needed when the "
                    "checkpoint files hold several trails, as one witness's copy may")
    vp.add_argument("--audit-key", action="append", default=[], metavar="PEM",
                    help="trust only this audit public key (repeatable); default: the keys "
                    "published in the checkpoints ConfigMap")


def _from_cluster(namespace: str, configmap: str, kubeconfig: str | None,
                  context: str | None) -> tuple[list[Checkpoint], dict[str, str]]:
    from wingman.client.connect import connect
    from wingman.kube import CONFIGMAPS, ApiError

    if not (len(configmap) <= 253 and _CONFIGMAP_NAME.fullmatch(configmap)):
        # "" would read the list of every ConfigMap, "a/b" another resource
        shown = configmap if len(configmap) <= 80 else configmap[:60] + "..."
        raise ConfigError(f"--configmap {shown!r} is not a ConfigMap name: 1 to 253 lowercase "
                          "letters, digits, '-' and '.', in parts joined by single '.', each "
                          "starting and ending with a letter or digit (an RFC 1123 subdomain; "
                          f"default {CHECKPOINTS_CONFIGMAP})")
    kube = connect(kubeconfig=kubeconfig, context=context, namespace=namespace).kube
    try:
        obj = kube.get_or_none(CONFIGMAPS, namespace, configmap)
    except ApiError as exc:
        raise ClusterError(f"cannot read ConfigMap {namespace}/{configmap}: {exc.message}"
                           ) from None
    finally:
        kube.close()
    if obj is None:
        raise ClusterError(f"there is no ConfigMap {namespace}/{configmap}: the operator of that "
                           "namespace has not stored a checkpoint yet (or it was deleted)")
    data = {str(k): str(v) for k, v in (obj.get("data") or {}).items()}
    source = f"ConfigMap {namespace}/{configmap}"
    checkpoints = parse_checkpoints(data.get(CHECKPOINTS_KEY, ""), source)
    pems = {k: v for k, v in data.items() if k.endswith(".pem")}
    return checkpoints, pems


def _read_file(name: str, what: str, most: int) -> bytes:
    """At most ``most`` bytes of the regular file ``name``."""
    with open_regular(name, what) as fh:
        try:
            return fh.read(most)
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {name}: {exc.strerror or exc}") from None


class _Trails:
    """Which trail's checkpoints count (``want``; None: whichever, as long as there is one) and
    the names of the trails seen (a few, for the message when there are several)."""

    SHOWN = 5

    def __init__(self, want: str | None) -> None:
        self.want = want
        self.seen: set[str] = set()

    def keep(self, checkpoint: Checkpoint) -> bool:
        if len(self.seen) <= self.SHOWN:
            self.seen.add(checkpoint.log)
        return self.want is None or checkpoint.log == self.want

    def check_source(self, source: str, held: set[str], kept: int) -> None:
        """``source`` held checkpoints (of the trails ``held``) but none of the wanted trail:
        refused, as every checkpoint left out would leave a cut tail or a rewrite unnoticed
        while the user believes ``source`` was consulted."""
        if self.want is None or kept or not held:
            return
        names = ", ".join(sorted(held)[:self.SHOWN]) + (" and more" if len(held) > self.SHOWN
                                                         else "")
        raise ConfigError(f"{source} holds no checkpoint of trail {self.want} (it holds "
                          f"{names}): name the trail being verified with --log (the release "
                          "namespace that wrote it), or pass this trail's checkpoints")

    def check(self) -> None:
        if self.want is None and len(self.seen) > 1:
            names = sorted(self.seen)[:self.SHOWN]
            more = " and more" if len(self.seen) > self.SHOWN else ""
            raise ConfigError(f"the checkpoints are of several trails ({', '.join(names)}"
                              f"{more}); name this trail's with --log (the release namespace "
                              "that wrote it)")


def _stream_file(name: str, keys: KeySet, into: CheckpointIndex, trails: _Trails) -> int:
    """Every checkpoint of the file ``name``, a line at a time, signature-checked; those of the
    trail ``trails`` wants go into ``into`` (how many: the result). ``AuditTampered`` names the
    first bad line."""
    held: set[str] = set()
    kept = 0
    with open_regular(name, "checkpoints file") as fh:
        try:
            for number, checkpoint in iter_checkpoints(fh, name):
                check_signature(checkpoint, keys, f"{name} line {number}")
                if len(held) <= trails.SHOWN:
                    held.add(checkpoint.log)
                if trails.keep(checkpoint):
                    into.add(checkpoint)
                    kept += 1
        except OSError as exc:
            raise ConfigError(f"cannot read checkpoints file {name}: {exc.strerror or exc}"
                              ) from None
    trails.check_source(f"checkpoints file {name}", held, kept)
    return kept


def gather(args: argparse.Namespace) -> tuple[CheckpointIndex, list[str], list[str]]:
    """The signature-checked checkpoints, where they came from (empty: none asked for) and
    which of those sources held no checkpoint of the trail (each must be reported: a source
    that adds nothing was not consulted, whatever the others show)."""
    found: list[Checkpoint] = []
    sources: list[str] = []
    published: dict[str, str] = {}
    if args.namespace:
        found, published = _from_cluster(args.namespace, args.configmap, args.kubeconfig,
                                          args.context)
        sources.append(f"ConfigMap {args.namespace}/{args.configmap}")
    sources += args.checkpoints
    index = CheckpointIndex()
    if not sources:
        return index, [], []
    if args.audit_key:
        pems: list[bytes] = []
        for name in args.audit_key:
            pem = _read_file(name, "audit key", MAX_KEY_BYTES + 1)
            if len(pem) > MAX_KEY_BYTES:
                raise ConfigError(f"audit key {name} is larger than {MAX_KEY_BYTES} bytes; "
                                  "pass the audit public key's PEM file")
            try:
                keyset_from_pems([pem])
            except ConfigError as exc:  # which file, and what it should hold
                raise ConfigError(f"--audit-key {name}: {exc.message}; pass the audit public "
                                  "key as an Ed25519 PEM: a *.pem entry of the checkpoints "
                                  "ConfigMap, or 'openssl pkey -pubout' of the private key"
                                  ) from None
            pems.append(pem)
        keys = keyset_from_pems(pems)
    elif published:
        keys = KeySet.from_mapping(published)
    else:
        raise ConfigError("checkpoints from files need the audit public key: pass --audit-key "
                          "PEM (or -n NAMESPACE to use the keys the operator publishes)")
    trails = _Trails(args.log or args.namespace or None)
    empty: list[str] = []
    if args.namespace:
        kept = 0
        for checkpoint in found:
            check_signature(checkpoint, keys, sources[0])
            if trails.keep(checkpoint):
                index.add(checkpoint)
                kept += 1
        trails.check_source(sources[0], {c.log for c in found}, kept)
        if not kept:
            empty.append(sources[0])
    for name in args.checkpoints:
        if not _stream_file(name, keys, index, trails):
            empty.append(name)
    trails.check()
    len(index)  # orders them: two that disagree about a seq are tampering, reported here
    return index, sources, empty


def verify_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """0 verified, 1 tampered (the trail or its checkpoints) or unverified (a checkpoint source
    asked for holds no checkpoint of the trail, and the trail holds records), 2 unreadable or
    bad arguments."""
    stream = out if out is not None else sys.stdout
    try:
        checkpoints, sources, empty_sources = gather(args)
    # a message may quote what the API server (or whatever answers at its address) said, or
    # what a checkpoints file holds: shown escaped, never acted on by the terminal
    except AuditTampered as exc:
        print(f"TAMPERED: {terminal_text(exc.message, '  ')}", file=stream)
        return 1
    except WingmanError as exc:
        print(f"UNREADABLE: {terminal_text(exc.message, '  ')}", file=stream)
        return 2
    except Exception as exc:  # noqa: BLE001 - a verdict line and an exit code, never a traceback
        print(unexpected(exc), file=stream)
        return 2
    empty = " and ".join(empty_sources) if empty_sources else None
    code = verify_main(args.target, expected_head=args.expected_head, checkpoints=checkpoints,
                       out=stream, empty_sources=empty)
    if empty and code == 0:
        print(f"note: there is no checkpoint in {empty}, and the trail holds no record yet (a "
              "fresh install): there is nothing to rewrite; verify again once it has records",
              file=sys.stderr)
    if not sources and code == 0 and args.expected_head is None:
        print("note: no signed checkpoints were checked, so a consistent rewrite or a cut tail "
              "would go unnoticed; pass -n NAMESPACE (or --checkpoints FILE --audit-key PEM)",
              file=sys.stderr)
    return code


__all__ = ["add_verify_arguments", "gather", "verify_command"]
