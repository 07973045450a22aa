"""The capability: the signed, single-use token for one approved command, and its keys.

Owns the token format and verification (``tokens``), Ed25519 keys with ``kid`` rotation
(``keys``), and the operator's key ring stored in a Secret and published in a ConfigMap
(``keyring``).

May import: ``wingman.errors``, ``wingman.scope``; ``keyring`` also ``wingman.kube``. ``tokens``
and ``keys`` are pure (no kopf, no kubernetes, no I/O).
"""
