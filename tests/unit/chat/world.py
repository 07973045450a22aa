"""A chat service over a cluster held in memory and a real file audit trail, for the channel
tests (the channels themselves talk to tests/support/fake_chat.py's servers)."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

from wingman.audit import open_sink
from wingman.chat.cluster import ChatCluster
from wingman.chat.guard import StepUp
from wingman.chat.metrics import ChatMetrics
from wingman.chat.service import ChatService
from wingman.client import status as st
from wingman.errors import ClientError
from wingman.settings import ChatConfig, ChatPerson

# read once, at import: a request built from it expires a day later, so a long run reaches
# no expiry; what must be later than a message sent now reads the clock itself
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
BOB = ChatPerson(user="bob", groups=("approvers",), telegram_id=111, slack_id="U0BOB")


def request(name: str, n: int, **spec: Any) -> dict[str, Any]:
    """An ApprovalRequest awaiting a decision, created ``n`` minutes after the others."""
    return {"metadata": {"name": name, "uid": f"0f8fad5b-d9cb-469f-a165-{n:012d}",
                         "creationTimestamp": (NOW + dt.timedelta(minutes=n - 60)).strftime(
                             "%Y-%m-%dT%H:%M:%SZ")},
            "spec": {"requester": "agent", "environment": "prd", "instruction": "restart web",
                     "commands": ["kubectl rollout restart deployment/web -n apps"], **spec},
            "status": {"phase": "AwaitingDecision",
                       "expirationTime": (NOW + dt.timedelta(hours=24)).strftime(
                           "%Y-%m-%dT%H:%M:%SZ")}}


def oversized(name: str, n: int) -> dict[str, Any]:
    """As large as the CRD allows where a card shows it: too long even abridged."""
    return request(name, n, requester="system:serviceaccount:agents:" + "a" * 120,
                   instruction="i" * 2000, justification="j" * 2000,
                   commands=["kubectl get pods\u200b" + "x" * 215 for _ in range(10)],
                   source={"reference": "r" * 512, "agent": "g" * 253, "model": "m" * 253,
                           "excerpt": "e" * 4000, "inputTrust": "Untrusted"})


#: Text a worker, a voter or an approver may write, trying to make approvers see something
#: else than what runs: close the code it is shown in, fake Wingman's own lines ("Approved",
#: a status, bold labels), ping people, link elsewhere, reverse a line, and push the real
#: lines out of view with newlines. Each holds EVIL, which must only ever be shown as code.
HOSTILE = ("EVIL ok</code></pre><b>Status:</b> ✅ Approved by alice ```\n*Status:* Approved "
           "<!channel> <@U0ALICE> @channel <https://evil.example|approve here> &amp; "
           "\u202eesrever" + "\n" * 60 + "Commands (1, exactly as they would run):\nls")


def hostile(name: str, n: int, *, rejected: bool = False) -> dict[str, Any]:
    """A request whose every field a person or the panel writes is ``HOSTILE``; ``rejected``:
    rejected by an approver, with a hostile reason (its notice goes to the requester)."""
    obj = request(name, n, requester="agent", instruction=HOSTILE, justification=HOSTILE,
                  source={"excerpt": HOSTILE, "reference": "EVIL <!here>"})
    obj["status"]["consensus"] = {"risk": "low", "outcome": "Approve", "votes": [
        {"voter": "EVIL-voter", "verdict": "Approve\n✅ EVIL", "risk": "low",
         "rationale": HOSTILE}]}
    if rejected:
        obj["spec"]["decisions"] = [{"verdict": "Reject", "by": "carol", "reason": HOSTILE}]
        obj["status"]["conditions"] = [{"type": "Rejected", "status": "True",
                                        "reason": "RejectedByApprover"}]
        obj["status"]["phase"] = "Rejected"
    return obj


class Cluster(ChatCluster):
    """The chat's cluster in memory: the requests given, no grants, the state kept in
    ``saved``. A ``ChatCluster`` (so a service holds it as its own) that never calls the base
    ``__init__``: there is no API server, and any method not written here fails loudly on its
    missing ``kube``."""

    namespace = "wingman"

    def __init__(self, *objs: dict[str, Any]) -> None:
        self.objs = list(objs)
        self.saved: dict[str, Any] = {}

    def requests(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.objs)

    def grants(self) -> list[dict[str, Any]]:
        return []

    def load_state(self, *, once: float | None = None) -> dict[str, Any]:
        return copy.deepcopy(self.saved)

    def save_state(self, state: dict[str, Any], *, unchanged: bool = False,
                   once: float | None = None) -> None:
        self.saved = copy.deepcopy(state)


class Granting(Cluster):
    """The in-memory cluster whose client as the person records each grant it is asked for
    (``granted``: (request, command)) and answers as the real client does once created."""

    def __init__(self, *objs: dict[str, Any]) -> None:
        super().__init__(*objs)
        self.granted: list[tuple[str, str]] = []

    def grant(self, name: str) -> dict[str, Any] | None:
        return None

    def client_as(self, person: Any, hints: Any) -> Any:
        cluster = self

        class Client:
            def execute(self, name: str, command: str) -> st.Status:
                cluster.granted.append((name, command))
                return st.Status(state=st.State.GRANTED, next="wait", kind="ExecutionGrant")

        return Client()


class Deciding(Cluster):
    """The in-memory cluster whose client as the person records each decision in the
    request's ``spec.decisions``, refusing a second one by the same person as the API server's
    admission does (one decision per approver)."""

    def client_as(self, person: Any, hints: Any) -> Any:
        cluster = self

        class Client:
            def decide(self, name: str, verdict: str, reason: str, *, uid: str) -> None:
                obj = next(o for o in cluster.objs if o["metadata"]["uid"] == uid)
                decisions = obj["spec"].setdefault("decisions", [])
                if any(d["by"] == person.user for d in decisions):
                    raise ClientError(f"{person.user} already decided {name}",
                                         reason="AlreadyDecided")
                decisions.append({"verdict": verdict, "by": person.user, "reason": reason})

        return Client()


#: A command with the inner spacing, quotes and flags an approver copies from the card.
TYPED_COMMAND = "kubectl annotate deploy/web -n apps note='two  spaces'"
#: (text after the verb as chat users type it, the command that must reach the grant).
EXEC_AS_TYPED: list[tuple[str, str]] = [
    ("typed " + TYPED_COMMAND, TYPED_COMMAND),
    ("typed " + TYPED_COMMAND + "  ", TYPED_COMMAND),  # trailing spaces
    ("typed " + TYPED_COMMAND + "\t\n", TYPED_COMMAND),  # trailing tab and newline
    ("  typed   " + TYPED_COMMAND, TYPED_COMMAND),  # runs of spaces around the name
    ("typed\t" + TYPED_COMMAND, TYPED_COMMAND),  # a tab after the name
    ("typed\u00a0" + TYPED_COMMAND, TYPED_COMMAND),  # a no-break space after the name
    ("typed \u00a0\t " + TYPED_COMMAND + " \u00a0", TYPED_COMMAND),
    ("typed\n" + TYPED_COMMAND, TYPED_COMMAND),  # the command on the next line
]
#: The verb as chat users type it, with the whitespace after it.
VERB_AS_TYPED = ["exec ", "exec\t", "exec\u00a0", "exec   ", "EXEC ", "Exec \t "]
#: Commands that differ from the request's inside: never matched, whatever the spacing.
EXEC_NOT_AS_TYPED = [
    "typed " + TYPED_COMMAND.replace("annotate ", "annotate  "),
    "typed " + TYPED_COMMAND.replace("two  spaces", "two spaces"),
    "typed " + TYPED_COMMAND.replace(" -n", "\t-n"),
    "typed " + TYPED_COMMAND.replace(" -n", "\u00a0-n"),
]


def service(tmp: Path, *objs: dict[str, Any], people: tuple[ChatPerson, ...] = (BOB,),
            clock: Any = None) -> ChatService:
    svc = ChatService(config=ChatConfig(environment="prd", people=people),
                      cluster=Cluster(*objs),
                      sink=open_sink(str(tmp / "audit.log")), metrics=ChatMetrics(),
                      step_up=StepUp({}))
    if clock is not None:
        svc.clock = clock
    svc.state = {"horizon": (NOW - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "requests": {}}
    return svc


def audited(svc: ChatService, event: str = "ChatRefused") -> list[dict[str, Any]]:
    return [dict(r.data) for r in svc.sink.records() if r.event == event]


def metric(svc: ChatService, name: str, **labels: str) -> float:
    value = svc.metrics.registry.get_sample_value(name, {"environment": "prd", **labels})
    return float(value or 0.0)


__all__ = ["BOB", "EXEC_AS_TYPED", "EXEC_NOT_AS_TYPED", "HOSTILE", "NOW", "TYPED_COMMAND",
           "VERB_AS_TYPED", "Cluster", "Granting", "audited", "hostile", "metric", "oversized",
           "request", "service"]
