"""The chat component's calls to the API server.

Reads (requests, grants, the state ConfigMap) are made as the chat ServiceAccount, which may
read requests and grants and nothing else of value. Every decision and every grant is made
**as the mapped person**: the call carries ``Impersonate-User`` and ``Impersonate-Group``
headers, RBAC lets the chat ServiceAccount impersonate only the users and groups the values
map (``resourceNames``), and the API server then authorizes and admits the call exactly as if
the person had run ``kubectl wingman approve`` (approver group, no self-approval, one decision
per approver, ``by`` is the caller). The calls themselves are the shared client's
(``wingman.client.WingmanClient``): the same decision patch and grant as the CLI and the MCP
server, answered in the status protocol.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from wingman.client import shape
from wingman.client import status as st
from wingman.client.api import WingmanClient
from wingman.client.connect import Connection
from wingman.kube import APPROVALS, CONFIGMAPS, GRANTS, ApiError, Kube, UnusableAnswer
from wingman.settings import ChatPerson

STATE_KEY = "state.json"
log = logging.getLogger("wingman.chat")


def grant_summary(grant: dict[str, Any]) -> dict[str, Any]:
    """What the chat service reads of a grant (``render.view``): its name, request, command,
    requester, phase, reason and exit code."""
    meta, spec, status = (grant.get(k) or {} for k in ("metadata", "spec", "status"))
    return {"metadata": {"name": meta.get("name")},
            "spec": {k: spec[k] for k in ("approvalRef", "command", "requester") if k in spec},
            "status": {k: status[k] for k in ("phase", "reason", "exitCode") if k in status}}


class ChatCluster:
    def __init__(self, kube: Kube, namespace: str, state_configmap: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.state_configmap = state_configmap
        #: The state ConfigMap's resourceVersion as last read or written here.
        self._version = ""

    # -- reads, as the chat ServiceAccount ----------------------------------------------
    def requests(self) -> list[dict[str, Any]]:
        """The namespace's requests, each checked for the shape the chat reads
        (``shape.checked``, as the client checks them: else ``UnusableAnswer``, saying which
        field is wrong)."""
        return [shape.checked(o, "ApprovalRequest")
                for o in self.kube.list(APPROVALS, self.namespace)]

    def grants(self) -> list[dict[str, Any]]:
        """The namespace's grants, each checked (as ``requests``), and only what a card shows
        of it kept (``grant_summary``: not its command's output), so the chat service never
        holds the grants' outputs."""
        return self.kube.list(GRANTS, self.namespace, keep=lambda g: grant_summary(
            shape.checked(g, "ExecutionGrant")))

    def request(self, name: str) -> dict[str, Any] | None:
        return self.kube.get_or_none(APPROVALS, self.namespace, name)

    def grant(self, name: str) -> dict[str, Any] | None:
        return self.kube.get_or_none(GRANTS, self.namespace, name)

    # -- state ---------------------------------------------------------------------------
    def load_state(self, *, once: float | None = None) -> Any:
        """The state as stored: the JSON value of the ConfigMap's ``state.json`` (its shape is
        the service's to check: ``service.readable_state``), ``{}`` when there is none yet,
        None when it is not JSON (logged: the cards are posted again, and step-up codes are
        refused until it is fixed, as the wrong codes and lockouts it kept are unknown).
        ``once``: one try, given up (``ClusterError`` ``Unreachable``) after that many seconds
        without an answer (``Kube.request``)."""
        self._version, raw = self._read(once)
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            log.warning("chat state ConfigMap does not hold JSON; starting afresh: the cards "
                        "of open requests are posted again, and step-up codes are refused "
                        "until its stepUp is fixed (see the next error); only the chat "
                        "component should write this ConfigMap",
                        extra={"configmap": self.state_configmap, "key": STATE_KEY})
            return None

    def _read(self, once: float | None) -> tuple[str, str]:
        """The state ConfigMap's resourceVersion and ``state.json`` ("" for none)."""
        try:
            cm = self.kube.get(CONFIGMAPS, self.namespace, self.state_configmap, once=once)
        except ApiError as exc:
            if exc.not_found:
                raise ApiError(404, "NotFound", f"ConfigMap {self.state_configmap} is missing "
                               f"in {self.namespace}: the chart creates it (chat.enabled=true)"
                               ) from None
            raise
        return self._version_and_state(cm)

    def _version_and_state(self, cm: dict[str, Any]) -> tuple[str, str]:
        """The resourceVersion and ``state.json`` ("" for none) of the state ConfigMap as the
        API server answered it; ``UnusableAnswer`` (a ``ClusterError``: tried again, as when
        the API server cannot be reached) for a shape no API server gives, naming the field."""
        meta, data = cm.get("metadata") or {}, cm.get("data") or {}
        why = ""
        if not isinstance(meta, dict):
            why = "metadata is not an object"
        elif not isinstance(data, dict):
            why = "data is not an object"
        elif not isinstance(meta.get("resourceVersion") or "", str):
            why = "metadata.resourceVersion is not text"
        elif not isinstance(data.get(STATE_KEY) or "", str):
            why = f"data.{STATE_KEY} is not text"
        if why:
            raise UnusableAnswer(
                f"the API server answered the ConfigMap {self.namespace}/"
                f"{self.state_configmap} in a shape no API server gives: {why}. Check that "
                "the address is the API server's (not a proxy or another service) and that "
                "it is healthy")
        return str(meta.get("resourceVersion") or ""), str(data.get(STATE_KEY) or "")

    def save_state(self, state: dict[str, Any], *, unchanged: bool = False,
                   once: float | None = None) -> None:
        """Write the state, only over the ConfigMap as last read or written here (its
        ``resourceVersion``): a write given up without an answer (``once``: one try, as
        ``load_state``) that reaches the API server later, after a newer one, is refused there
        (Conflict) instead of putting old wrong-code counts back. On a Conflict the ConfigMap
        is read: when it holds this very state, the write had landed (a try whose answer was
        lost, or one given up that arrived later) and this one succeeds; otherwise ApiError 409
        Conflict, the version read taken for the next write (this component is the only
        writer: an own earlier write that landed) unless ``unchanged``: then an edit made
        since (an administrator fixing ``stepUp``) must be read by the caller before anything
        is written over it."""
        text = json.dumps(state, sort_keys=True, separators=(",", ":"))
        body: dict[str, Any] = {"data": {STATE_KEY: text}}
        if self._version:
            body["metadata"] = {"resourceVersion": self._version}
        try:
            out = self.kube.patch(CONFIGMAPS, self.namespace, self.state_configmap, body,
                                  once=once)
        except ApiError as exc:
            if not exc.conflict:
                raise
            version, stored = self._read(once)
            if stored == text:
                self._version = version  # written already: this state is what it holds
                return
            if not unchanged:
                self._version = version
            raise
        self._version = self._version_and_state(out)[0]

    # -- as the person ---------------------------------------------------------------------
    def client_as(self, person: ChatPerson, hints: st.Hints) -> WingmanClient:
        """The shared client (``wingman.client``), acting as ``person``: every call carries
        ``Impersonate-User``/``Impersonate-Group``, so it is authorized and admitted as theirs
        (its decision patch and grant are the CLI's and the MCP server's)."""
        conn = Connection(self.kube.as_user(person.user, person.groups), self.namespace,
                          f"wingman chat, impersonating {person.user}")
        return WingmanClient(conn, hints=hints)


class ChatHints:
    """``next`` hints in terms of chat commands (``/describe``, or ``/wingman describe``)."""

    def __init__(self, prefix: str = "/") -> None:
        self.prefix = prefix

    def get_request(self, name: str) -> str:
        return f"{self.prefix}describe {name}"

    def execute(self, request: str, command: str) -> str:
        return f"{self.prefix}exec {request} {command}"

    def get_result(self, grant: str) -> str:
        return f"{self.prefix}status {grant}"

    def request_approval(self) -> str:
        return "kubectl wingman request ..."

    def list_requests(self) -> str:
        return f"{self.prefix}pending"

    def policy(self) -> str:
        return "kubectl wingman policy"

    def approver_exec(self, request: str, command: str) -> str:
        return f"an approver sends {self.prefix}exec {request} {command}"


__all__ = ["STATE_KEY", "ChatCluster", "ChatHints"]
