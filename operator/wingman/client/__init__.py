"""The typed client API that the CLI, the MCP server and the chat component share.

- ``connect``: the caller's own connection (kubeconfig, else the pod's ServiceAccount) and the
  release namespace;
- ``api``: ``WingmanClient``, what a worker or an approver can do (request, execute, decide,
  read, wait within a bound), each answered with a ``status.Status``;
- ``status``: the status protocol, a closed set of states with a ``next`` hint, computed as a
  pure function of the objects (``docs/agents.md``).

May import: the shared top-level modules (``errors``, ``conditions``, ``kube``, ``settings``,
``logs``: its token detector, the audit trail's too),
``wingman.model`` and ``wingman.review.policy`` (to read the environment's policy);
``status`` is pure (neither kopf nor kubernetes). Never the token code (``capability``), the
audit trail, the operator, the gateway, the verifier or the CLI: an agent's tools hold no more
than the worker's rights.

    from wingman.client import WingmanClient, connect
    client = WingmanClient(connect(namespace="wingman-test"))
    answer = client.create_request(instruction="...", commands=["kubectl ..."])
    answer.state, answer.next
"""

from wingman.client.api import PolicyView, Source, WingmanClient
from wingman.client.connect import Connection, connect
from wingman.client.status import State, Status

__all__ = ["Connection", "PolicyView", "Source", "State", "Status", "WingmanClient",
           "connect"]
