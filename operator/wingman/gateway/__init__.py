"""The execution gateway: the one process that executes, inside a grant's gateway Job.

Owns the run (``run``: verify, re-check, burn once, audit, execute, record), its checks
(``checks``), the status it writes (``status``), the short-lived token of the executor
account kubectl commands run as (``identity``), the executors for kubectl and docker
(``executors``) and output redaction (``redaction``).

May import: ``wingman.model``, ``wingman.capability``, ``wingman.audit`` and the shared
top-level modules. Never ``wingman.operator``, ``wingman.review``, ``wingman.preview``,
``wingman.mcp``, ``wingman.cli`` or ``wingman.dev``.
"""
