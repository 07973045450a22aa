"""The server-side preview: what a request's commands would change, before anyone votes.

Owns the preview Job's process (``runner``: ``wingman preview``), which commands it runs and how
(``commands``), the proxy that turns every write into a recorded server-side dry run
(``proxy``), the diff people and voters read (``diff``) and the per-command result (``report``).
The result's shape, its channel to the operator and the state-binding rule live in
``wingman.model.preview``, which the operator and the gateway read too.

May import: ``wingman.model``, ``wingman.scope``, ``wingman.kube``, ``wingman.settings``,
``wingman.errors``, ``wingman.gateway.redaction`` (the one redaction of command output), the
Docker SDK (``runner`` reads a ``docker`` command's container) and the standard library. Never
``wingman.operator``, ``wingman.review``, ``wingman.capability``, ``wingman.audit``,
``wingman.cli`` or ``wingman.dev``; the operator never imports this package (it reads
``wingman.model.preview``).
"""
