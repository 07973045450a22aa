"""The chat component's calls to the API server.

Reads (requests, grants, the state ConfigMap) are made as the chat ServiceAccount, which may
read requests and grants and nothing else of value. Every decision and every grant is made
**as the mapped person**: the call carries ``Impersonate-User`` and ``Impersonate-Group``
headers, RBAC lets the chat ServiceAccount impersonate only the users and groups the values
map (``resourceNames``), and the API server then authorizes and admits the call exactly as if
the person had run ``kubectl wingman approve`` (approver group, no self-approval, one decision
per approver, ``by`` is the caller). The decision patch is the CLI's: ``add
/spec/decisions/-``, or for the first decision ``test /metadata/resourceVersion`` plus ``add
/spec/decisions`` so two concurrent first decisions cannot replace each other.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from wingman import API_VERSION
from wingman.kube import APPROVALS, CONFIGMAPS, GRANTS, JSON_PATCH, ApiError, Kube
from wingman.settings import ChatPerson

STATE_KEY = "state.json"


def grant_name(request_name: str, command: str) -> str:
    """The CLI's deterministic grant name: one grant per command of a request."""
    digest = hashlib.sha256(command.encode()).hexdigest()[:8]
    return f"{request_name[:50]}-{digest}"


class ChatCluster:
    def __init__(self, kube: Kube, namespace: str, state_configmap: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.state_configmap = state_configmap

    # -- reads, as the chat ServiceAccount ----------------------------------------------
    def requests(self) -> list[dict[str, Any]]:
        return self.kube.list(APPROVALS, self.namespace)

    def grants(self) -> list[dict[str, Any]]:
        return self.kube.list(GRANTS, self.namespace)

    def request(self, name: str) -> dict[str, Any] | None:
        return self.kube.get_or_none(APPROVALS, self.namespace, name)

    def grant(self, name: str) -> dict[str, Any] | None:
        return self.kube.get_or_none(GRANTS, self.namespace, name)

    # -- state ---------------------------------------------------------------------------
    def load_state(self) -> dict[str, Any]:
        cm = self.kube.get_or_none(CONFIGMAPS, self.namespace, self.state_configmap)
        if cm is None:
            raise ApiError(404, "NotFound", f"ConfigMap {self.state_configmap} is missing in "
                           f"{self.namespace}: the chart creates it (chat.enabled=true)")
        raw = (cm.get("data") or {}).get(STATE_KEY)
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def save_state(self, state: dict[str, Any]) -> None:
        body = {"data": {STATE_KEY: json.dumps(state, sort_keys=True, separators=(",", ":"))}}
        self.kube.patch(CONFIGMAPS, self.namespace, self.state_configmap, body)

    # -- writes, as the person -------------------------------------------------------------
    def decide_as(self, person: ChatPerson, name: str, verdict: str, reason: str) -> None:
        """Append ``{verdict, by: person, reason}`` as the person (the CLI's patch)."""
        kube = self.kube.as_user(person.user, person.groups)
        entry = {"verdict": verdict, "by": person.user, "reason": reason}
        for attempt in range(3):
            obj = kube.get(APPROVALS, self.namespace, name)
            patch: list[dict[str, Any]]
            if obj.get("spec", {}).get("decisions"):
                patch = [{"op": "add", "path": "/spec/decisions/-", "value": entry}]
            else:
                patch = [{"op": "test", "path": "/metadata/resourceVersion",
                          "value": obj["metadata"]["resourceVersion"]},
                         {"op": "add", "path": "/spec/decisions", "value": [entry]}]
            try:
                kube.patch(APPROVALS, self.namespace, name, patch, content_type=JSON_PATCH)
                return
            except ApiError as exc:
                if attempt == 2 or "test operation" not in exc.message.lower():
                    raise

    def grant_as(self, person: ChatPerson, request: dict[str, Any], command: str) -> str:
        """Create the ExecutionGrant for one command as the person (the CLI's grant)."""
        kube = self.kube.as_user(person.user, person.groups)
        name = grant_name(request["metadata"]["name"], command)
        body = {"apiVersion": API_VERSION, "kind": "ExecutionGrant",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"approvalRef": {"name": request["metadata"]["name"]},
                         "command": command,
                         "requester": str(request["spec"]["requester"])}}
        kube.create(GRANTS, self.namespace, body)
        return name


__all__ = ["STATE_KEY", "ChatCluster", "grant_name"]
