"""The operator process: kopf handlers over pure decisions, and what it builds.

Owns the approval, grant and preview decisions as pure functions of objects and policy
(``approvals``, ``grants``, ``previews``), the manifests of the Jobs and Secrets it creates
(``manifests``), what the watches delivered (``state``), leader election over a Lease
(``leader``) and readiness (``readiness``), the Events it posts (``events``), the signed
checkpoints of the audit head (``checkpoints``), the group commit of its audit appends
(``recorder``), its metrics (``metrics``) and its event loop's lag (``lag``), the threads its
blocking calls run on (``pool``), the allocator and the memory it hands back (``memory``), the
shared handler ``context`` and the process (``run``).
``handlers/`` holds the thin kopf handlers.

May import: ``wingman.model``, ``wingman.review``, ``wingman.capability``, ``wingman.audit``
and the shared top-level modules. Never ``wingman.gateway``, ``wingman.cli`` or ``wingman.dev``.
``approvals``, ``grants``, ``previews``, ``manifests`` and ``readiness`` import neither kopf
nor kubernetes. The operator never imports ``wingman.preview`` (it reads
``wingman.model.preview``) nor ``wingman.client`` or ``wingman.mcp``.
"""
