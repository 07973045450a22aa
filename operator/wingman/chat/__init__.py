"""``wingman chat``: notifications, and approvals from Telegram, Slack and a webhook.

Owns the chat component: ``render`` (what a message shows, escaped so that request text can fake
no formatting, mention, link or button), ``guard`` (signed buttons, refusal reasons, the TOTP
step-up), ``cluster`` (reads requests and grants; decides and grants *as the mapped person*
through Kubernetes impersonation, so admission and RBAC judge the person, never the chat
identity), ``service`` (the reconciler that posts and edits messages, the one place actions are
decided and audited, and which message shows which request, kept in a ConfigMap), the channels
``telegram`` (python-telegram-bot), ``slack`` (slack_sdk, signed interactive payloads) and
``webhook`` (HMAC-signed JSON), ``metrics`` and ``run``.

It may import the shared modules (``errors``, ``settings``, ``kube``, ``logs``), ``model``,
``client`` (the status protocol and the person's operations) and ``audit``; it never imports the
operator, the gateway, the token code (``capability``), the CLI or ``dev`` (``pyproject.toml``
``[tool.importlinter]``, checked by ``tests/unit/test_architecture.py``). ``render`` and
``guard`` are pure: no kopf, no kubernetes.
"""
