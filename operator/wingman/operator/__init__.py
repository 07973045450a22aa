"""The operator process: kopf handlers over pure decisions, and what it builds.

Owns the approval and grant decisions as pure functions of objects and policy (``approvals``,
``grants``), the manifests of the Jobs and Secrets it creates (``manifests``), its metrics
(``metrics``), the shared handler ``context`` and the process (``run``). ``handlers/`` holds the
thin kopf handlers.

May import: ``wingman.model``, ``wingman.review``, ``wingman.capability``, ``wingman.audit``
and the shared top-level modules. Never ``wingman.gateway``, ``wingman.cli`` or ``wingman.dev``.
``approvals``, ``grants`` and ``manifests`` import neither kopf nor kubernetes.
"""
