"""The operator's kopf handlers: each reads objects, calls a pure decision, audits, writes.

``approvals`` (review, decisions, expiry), ``grants`` (authorize → Job → claim → mint → status and
token Secret together, and the Job watcher), ``housekeeping`` (signing-key reload, burn-marker
collection).

May import: kopf, ``wingman.operator`` and what it may import.
"""
