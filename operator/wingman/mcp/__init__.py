"""``wingman mcp``: the Model Context Protocol server through which agents use Wingman.

``server`` builds the tools (request_approval, get_request, execute, rollback, get_result,
list_requests) and resources (the environment's policy, the status protocol) on the official
``mcp`` SDK and serves them over stdio or streamable HTTP. Every call runs through
``wingman.client`` with the agent's own Kubernetes identity: the server holds no more than the
worker's rights, has no tool to decide a request, and never reads a capability token.

May import: ``wingman.client``, the shared top-level modules (``errors``, ``settings``), the
``mcp`` SDK and its ASGI stack. Never the token code (``capability``), the audit trail, the
operator, the gateway, the review panel, the verifier or the CLI.
"""
