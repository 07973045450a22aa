"""``wingman chat`` end to end: the real component, the real operator and the chart's RBAC and
admission on the real control plane, with python-telegram-bot and slack_sdk talking to local
servers that speak the Bot API and the Web API (tests/support/fake_chat.py).

What people rely on: a request is posted with its votes and exact commands; a mapped approver's
button approves it *as that person* (spec.decisions, the audit trail, the edited message
without buttons); unmapped users, the requester, bots, forwarded and replayed callbacks change
nothing and are told why; Slack requests must be signed; prd needs two people and their TOTP
codes; a request that expires has dead buttons; an outage of the chat services never blocks a
request, and the messages catch up; no token or secret reaches a log.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest

import wingman
from support.chart import (
    APPROVER,
    SECOND_APPROVER,
    WORKER,
    Release,
    approval_request,
    approver_groups,
    can,
    dump,
    installed,
    sa_groups,
    sa_user,
    worker_groups,
)
from support.fake_chat import (
    FakeSlack,
    FakeTelegram,
    WebhookReceiver,
    serving,
    slack_signature,
    slack_signed,
)
from support.operator import OperatorProcess, get, wait_for
from support.ports import listening_ports, logged_ports
from support.processes import stop_process
from wingman.chat.webhook import signature as webhook_signature
from wingman.client.status import grant_name
from wingman.dev.cluster import LocalCluster

OPERATOR_SRC = Path(wingman.__file__).resolve().parents[1]
TG_TOKEN = "7000001:AAH-test-telegram-bot-token-" + uuid.uuid4().hex
SLACK_TOKEN = "xoxb-test-" + uuid.uuid4().hex
SIGNING_SECRET = "slack-signing-" + uuid.uuid4().hex
WEBHOOK_SECRET = "webhook-" + uuid.uuid4().hex
TOTP = {APPROVER: pyotp.random_base32(), SECOND_APPROVER: pyotp.random_base32()}
CHAT = -1001  # the approvers' Telegram group
REQUESTER_CHAT = -1002
TEAM, CHANNEL = "T0WINGMAN", "C0APPROVE"
# chat ids: bob 111, carol 222, alice (the requester) 333; 999 is nobody
IDS = {APPROVER: 111, SECOND_APPROVER: 222, WORKER: 333}
SLACK = {APPROVER: "U0BOB", SECOND_APPROVER: "U0CAROL", WORKER: "U0ALICE"}


@dataclass
class Env:
    cluster: LocalCluster
    release: Release
    operator: OperatorProcess
    chat: subprocess.Popen[bytes]
    chat_log: Path
    http: str
    telegram: FakeTelegram
    slack: FakeSlack
    webhook: WebhookReceiver
    chat_env: dict[str, str]
    #: the port of ``/metrics``, which the process bound itself (port 0) and named
    metrics_port: int
    #: when /healthz first answered: the chat process had started by then
    healthy_at: float = 0.0

    @property
    def ns(self) -> str:
        return self.release.namespace

    def create(self, name: str, **spec: Any) -> dict[str, Any]:
        body = approval_request(name, requester=WORKER, environment=self.release.env,
                                commands=[f"kubectl rollout restart deployment/{name} -n "
                                          f"{self.release.target_namespace}"], **spec)
        self.cluster.kubectl("create", "-n", self.ns, "-f", "-", input=dump(body),
                             user=WORKER, groups=worker_groups(self.release.env))
        obj = wait_for(f"{name} reviewed", lambda: _reviewed(self, name), timeout=60)
        return dict(obj)

    def ar(self, name: str) -> dict[str, Any]:
        obj = get(self.cluster, "approvalrequests", self.ns, name)
        assert obj is not None
        return obj

    def card(self, name: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((m for m in self.telegram.sent_to(CHAT)
                         if f"approval request {name}\n" in m["plain"]), None)
        return dict(wait_for(f"Telegram card of {name}", find, timeout=30,
                             on_timeout=self.log_tail))

    def buttons(self, card: dict[str, Any]) -> list[str]:
        """The card's buttons, once the card shows the reviewed request."""
        return list(wait_for("buttons", lambda: self.telegram.buttons(CHAT, card["id"]),
                             timeout=20, on_timeout=self.log_tail))

    def answer(self, callback_id: str) -> str:
        got = wait_for(f"answer to {callback_id}",
                       lambda: self.telegram.answers.get(callback_id), timeout=30,
                       on_timeout=self.log_tail)
        return str(got["text"])

    def reply_after(self, chat: int, count: int) -> str:
        """The text of the first message posted to ``chat`` after the first ``count``."""
        msgs = wait_for(f"a reply in {chat}",
                        lambda: (lambda m: m if len(m) > count else None)(
                            sorted(self.telegram.sent_to(chat), key=lambda m: m["id"])),
                        timeout=30, on_timeout=self.log_tail)
        return str(msgs[count]["plain"])

    def audit(self) -> list[dict[str, Any]]:
        return self.operator.audit_events()

    def chat_metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as resp:
            return str(resp.read().decode())

    def log_tail(self) -> str:
        return ("chat log:\n" + "\n".join(self.chat_log.read_text(errors="replace")
                                          .splitlines()[-40:])
                + "\noperator log:\n" + self.operator.log_tail(20))


def _reviewed(env: Env, name: str) -> dict[str, Any] | None:
    obj = get(env.cluster, "approvalrequests", env.ns, name)
    phase = (obj or {}).get("status", {}).get("phase")
    return obj if phase and phase not in ("Pending", "Reviewing") else None


def _people(env: str) -> list[dict[str, Any]]:
    out = []
    for user in (APPROVER, SECOND_APPROVER, WORKER):
        groups = worker_groups(env) if user == WORKER else approver_groups(env)
        person = {"kubernetesUser": user, "groups": groups,
                  "telegramUserId": str(IDS[user]), "slackUserId": SLACK[user]}
        if user in TOTP:
            person["totpSecretKey"] = f"totp-{user}"
        out.append(person)
    return out


@contextmanager
def chat_env(cluster: LocalCluster, env: str, tmp: Path, *, step_up: bool = False
             ) -> Iterator[Env]:
    """Install the chart with chat on, run the operator and ``wingman chat`` as their
    ServiceAccounts, against the fake Telegram, Slack and webhook receiver."""
    suffix = uuid.uuid4().hex[:6]
    users = {SLACK[APPROVER]: {"is_bot": False}, SLACK[SECOND_APPROVER]: {"is_bot": False},
             SLACK[WORKER]: {"is_bot": False}, "U0GUEST": {"is_restricted": True},
             "U0NOBODY": {}}
    with serving(FakeTelegram(TG_TOKEN)) as telegram, \
            serving(FakeSlack(SLACK_TOKEN, TEAM, users)) as slack, \
            serving(WebhookReceiver()) as webhook:
        values = {
            "chat.enabled": True, "chat.people": _people(env),
            "chat.stepUp.enabled": step_up, "chat.expiryWarningMinutes": 1,
            "chat.telegram": {"enabled": True, "chatId": str(CHAT),
                              "requesterChatId": str(REQUESTER_CHAT),
                              "baseUrl": telegram.base_url},
            "chat.slack": {"enabled": True, "teamId": TEAM, "channel": CHANNEL,
                           "baseUrl": slack.base_url},
            "chat.webhook": {"enabled": True, "url": webhook.url},
        }
        if env == "prd":  # the operator here writes a file, not the values' PostgreSQL
            values["audit.type"] = "file"
        with installed(cluster, env, namespace=f"wm-chat-{env}-{suffix}",
                       target_namespace=f"apps-chat-{suffix}", values=values) as release:
            operator = OperatorProcess(cluster, release.namespace, tmp / "operator",
                                       environment=env)
            operator.start()
            secrets = tmp / "secrets"
            secrets.mkdir()
            for key, value in {"telegram-token": TG_TOKEN, "slack-bot-token": SLACK_TOKEN,
                               "slack-signing-secret": SIGNING_SECRET,
                               "webhook-secret": WEBHOOK_SECRET,
                               **{f"totp-{u}": s for u, s in TOTP.items()}}.items():
                (secrets / key).write_text(value + "\n")
            config = tmp / "chat.yaml"
            config.write_text(cluster.kubectl(
                "get", "configmap", "wingman-chat", "-n", release.namespace, "-o",
                "jsonpath={.data.chat\\.yaml}").stdout)
            token = cluster.sa_token(release.namespace, "wingman-chat",
                                     expiration_seconds=3600)
            chat_env_vars = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp),
                "KUBECONFIG": str(cluster.token_kubeconfig(token, "chat")),
                "WINGMAN_NAMESPACE": release.namespace, "WINGMAN_ENVIRONMENT": env,
                "WINGMAN_CHAT_CONFIG": str(config), "WINGMAN_CHAT_SECRETS_DIR": str(secrets),
                "WINGMAN_AUDIT_TARGET": str(operator.audit_path),
                # free ports the process binds itself and names in 'chat starting': one
                # picked here and handed over could be taken by another process in between
                "WINGMAN_CHAT_HTTP_PORT": "0", "WINGMAN_METRICS_PORT": "0",
                "WINGMAN_CHAT_SYNC_SECONDS": "1", "WINGMAN_LOG_FORMAT": "json",
                "PYTHONPATH": str(OPERATOR_SRC),  # the code under test, not an installed copy
            }
            log_path = tmp / "chat.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", "wingman.cli", "chat"],
                                        env=chat_env_vars, stdout=log,
                                        stderr=subprocess.STDOUT)
            try:
                ports = wait_for("chat's 'chat starting' record",
                                 lambda: _started_ports(proc, log_path), timeout=60,
                                 on_timeout=lambda: log_path.read_text(errors="replace"))
                env_obj = Env(cluster, release, operator, proc, log_path,
                              f"http://127.0.0.1:{ports['httpPort']}", telegram, slack, webhook,
                              chat_env_vars, ports["metricsPort"])
                wait_for("chat /healthz", lambda: _healthy(env_obj), timeout=60,
                         on_timeout=env_obj.log_tail)
                env_obj.healthy_at = time.time()
                yield env_obj
            finally:
                stop_process(proc, timeout=20)
                operator.stop()


def _started_ports(proc: subprocess.Popen[bytes], log: Path) -> dict[str, int] | None:
    """The ports the chat process names in its ``chat starting`` record, once its own
    process listens on them; None before."""
    if proc.poll() is not None:
        raise AssertionError(f"wingman chat exited {proc.returncode}:\n"
                             f"{log.read_text(errors='replace')}")
    ports = logged_ports(log.read_text(errors="replace"), "chat starting",
                         "httpPort", "metricsPort")
    if ports is None:
        return None
    assert set(ports.values()) <= listening_ports(proc.pid), ports
    return ports


def _healthy(env: Env) -> bool:
    if env.chat.poll() is not None:
        raise AssertionError(f"wingman chat exited {env.chat.returncode}:\n{env.log_tail()}")
    try:
        with urllib.request.urlopen(f"{env.http}/healthz", timeout=2) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except OSError:
        return False


def _no_secret_in_logs(env: Env) -> None:
    logs = env.chat_log.read_text(errors="replace") + env.operator.log_tail(100000)
    for secret in (TG_TOKEN, SLACK_TOKEN, SIGNING_SECRET, WEBHOOK_SECRET, *TOTP.values()):
        assert secret not in logs


def _decisions(env: Env, name: str) -> list[dict[str, Any]]:
    return list(env.ar(name)["spec"].get("decisions") or [])


# --------------------------------------------------------------------------- test


@pytest.fixture(scope="module")
def test_env(cluster: LocalCluster, crds: object,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with chat_env(cluster, "test", tmp_path_factory.mktemp("chat-test")) as env:
        yield env


def test_a_mapped_approvers_click_approves_as_that_person_and_others_change_nothing(
        test_env: Env) -> None:
    env = test_env
    env.create("tg-one", justification="@channel <b>urgent</b> https://evil.example")
    card = env.card("tg-one")
    # the card: requester, exact command as code, votes with verdict/risk/rationale, n of m
    assert f"<pre>kubectl rollout restart deployment/tg-one -n {env.release.target_namespace}" \
           "</pre>" in card["html"]
    assert "destructive" in card["plain"] and "0 of 1 approvals" in card["plain"]
    # untrusted text is escaped inside a code entity: no formatting, mention or link
    assert "<code>@channel &lt;b&gt;urgent&lt;/b&gt; https://evil.example</code>" in card["html"]
    approve, _reject = env.buttons(card)

    # an unmapped user, the requester, a bot: refused with the reason, nothing recorded
    for who, reason in ((FakeTelegram.user(999), "Unmapped"),
                        (FakeTelegram.user(IDS[WORKER]), "OwnRequest"),
                        (FakeTelegram.user(IDS[APPROVER], bot=True), "Bot")):
        answer = env.answer(env.telegram.press(who, CHAT, card["id"], approve))
        assert reason in answer, answer
    # a forwarded copy and a forged button: refused too
    assert "Forwarded" in env.answer(env.telegram.press(
        FakeTelegram.user(IDS[APPROVER]), CHAT, card["id"], approve, forwarded=True))
    assert "InvalidButton" in env.answer(env.telegram.press(
        FakeTelegram.user(IDS[APPROVER]), CHAT, card["id"], approve[:-2] + "AA"))
    assert _decisions(env, "tg-one") == []

    # bob approves with the button: the decision is bob's, made through admission
    cid = env.telegram.press(FakeTelegram.user(IDS[APPROVER]), CHAT, card["id"], approve)
    assert "Approve recorded" in env.answer(cid)
    assert _decisions(env, "tg-one") == [{"verdict": "Approve", "by": APPROVER, "reason": ""}]
    wait_for("Approved", lambda: env.ar("tg-one")["status"].get("phase") == "Approved")
    # the same callback delivered again is a replay; the old buttons are dead
    env.telegram.answers.pop(cid)
    assert "Replayed" in env.answer(env.telegram.press(
        FakeTelegram.user(IDS[APPROVER]), CHAT, card["id"], approve, callback_id=cid))
    assert "AlreadyDecided" in env.answer(env.telegram.press(
        FakeTelegram.user(IDS[APPROVER]), CHAT, card["id"], approve))
    assert "NotDecidable" in env.answer(env.telegram.press(
        FakeTelegram.user(IDS[SECOND_APPROVER]), CHAT, card["id"], approve))
    assert _decisions(env, "tg-one") == [{"verdict": "Approve", "by": APPROVER, "reason": ""}]

    # the message is edited in place: approved, no buttons
    wait_for("card edited", lambda: "Approved" in env.card("tg-one")["plain"]
             and not env.telegram.buttons(CHAT, card["id"]), on_timeout=env.log_tail)
    # the requester's chat is told the terminal state with its reason
    wait_for("requester notice", lambda: any(
        "tg-one" in m["plain"] and f"approved by {APPROVER}" in m["plain"]
        for m in env.telegram.sent_to(REQUESTER_CHAT)))

    # the audit trail: the chat's records under bob's name, the operator's approval by bob
    events = env.audit()
    recorded = [e for e in events if e["event"] == "ChatDecisionRecorded"]
    assert [(e["actor"], e["data"]["channel"], e["subject"]["name"]) for e in recorded] == [
        (APPROVER, "telegram", "tg-one")]
    approved = [e for e in events if e["event"] == "ApprovalApproved"
                and e["subject"]["name"] == "tg-one"]
    assert approved and approved[0]["data"]["approvedBy"] == [APPROVER]
    refused = {e["data"]["reason"] for e in events if e["event"] == "ChatRefused"}
    assert {"Unmapped", "OwnRequest", "Bot", "Forwarded", "InvalidButton", "Replayed",
            "AlreadyDecided", "NotDecidable"} <= refused

    # the webhook got the request and its approval, HMAC-signed
    def delivered() -> list[dict[str, Any]]:
        return [d for d in env.webhook.deliveries
                if d["body"]["request"]["name"] == "tg-one"]
    wait_for("webhook approved event", lambda: any(
        d["body"]["event"] == "request.approved" for d in delivered()))
    for d in delivered():
        body = json.dumps(d["body"], sort_keys=True, ensure_ascii=False).encode()
        assert d["headers"]["X-Wingman-Signature"] == webhook_signature(
            WEBHOOK_SECRET, d["headers"]["X-Wingman-Timestamp"], body)


def test_telegram_commands_decide_and_grant_as_the_person(test_env: Env) -> None:
    env = test_env
    env.create("tg-cmd")
    env.card("tg-cmd")
    carol = FakeTelegram.user(IDS[SECOND_APPROVER])
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/pending")
    assert "tg-cmd" in env.reply_after(CHAT, n)
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/reject tg-cmd")
    assert "ReasonRequired" in env.reply_after(CHAT, n)
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/approve tg-cmd change window 7", forwarded=True)
    assert "Forwarded" in env.reply_after(CHAT, n)
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/approve tg-cmd change window 7")
    assert "Approve recorded" in env.reply_after(CHAT, n)
    assert _decisions(env, "tg-cmd") == [
        {"verdict": "Approve", "by": SECOND_APPROVER, "reason": "change window 7"}]
    wait_for("Approved", lambda: env.ar("tg-cmd")["status"].get("phase") == "Approved")
    # /exec creates the grant as carol (an approver may grant); the command must be exact
    command = env.ar("tg-cmd")["spec"]["commands"][0]
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/exec tg-cmd " + command + " --now")
    assert "NotACommandOfTheRequest" in env.reply_after(CHAT, n)
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/exec tg-cmd " + command)
    assert "ExecutionGrant tg-cmd-" in env.reply_after(CHAT, n)
    grants = json.loads(env.cluster.kubectl("get", "eg", "-n", env.ns, "-o", "json").stdout)
    mine = [g for g in grants["items"] if g["spec"]["approvalRef"]["name"] == "tg-cmd"]
    assert [g["spec"]["command"] for g in mine] == [command]
    # the requester may grant her own approved request here (workersMayGrant), as herself
    env.create("tg-mine")
    env.card("tg-mine")
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/approve tg-mine change window 8")
    assert "Approve recorded" in env.reply_after(CHAT, n)
    wait_for("Approved", lambda: env.ar("tg-mine")["status"].get("phase") == "Approved")
    alice = FakeTelegram.user(IDS[WORKER])
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(alice, CHAT, "/exec tg-mine " + env.ar("tg-mine")["spec"]["commands"][0])
    assert "as alice" in env.reply_after(CHAT, n)
    # the same command again: the one grant it has is answered, no second one exists
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/exec tg-cmd " + command)
    assert "already existed" in env.reply_after(CHAT, n)
    grants = json.loads(env.cluster.kubectl("get", "eg", "-n", env.ns, "-o", "json").stdout)
    assert len([g for g in grants["items"] if g["spec"]["approvalRef"]["name"] == "tg-cmd"]) == 1
    # /status reads the grant as carol, in the status protocol, with the next step
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, f"/status {mine[0]['metadata']['name']}")
    reply = env.reply_after(CHAT, n)
    assert f"Grant {mine[0]['metadata']['name']}: " in reply and "Next: " in reply


def test_exec_refuses_a_grant_another_worker_made_under_the_commands_name(
        test_env: Env) -> None:
    # a grant's name is derived from the request and the command, so any worker can take it
    # first: /exec must say so (GrantNameTaken, whose grant it is), not answer that grant as
    # the command's nor blame the API server
    env = test_env
    env.create("tg-taken")
    env.card("tg-taken")
    carol = FakeTelegram.user(IDS[SECOND_APPROVER])
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/approve tg-taken change window 8")
    assert "Approve recorded" in env.reply_after(CHAT, n)
    wait_for("Approved", lambda: env.ar("tg-taken")["status"].get("phase") == "Approved")
    command = env.ar("tg-taken")["spec"]["commands"][0]
    taken = grant_name("tg-taken", command)
    env.cluster.kubectl("create", "-n", env.ns, "-f", "-", user="mallory",
                        groups=worker_groups(env.release.env), input=json.dumps({
                            "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
                            "metadata": {"name": taken, "namespace": env.ns},
                            "spec": {"approvalRef": {"name": "tg-taken"}, "command": command,
                                     "requester": "mallory"}}))
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/exec tg-taken " + command)
    reply = env.reply_after(CHAT, n)
    assert "GrantNameTaken" in reply and "requester 'mallory'" in reply, reply
    assert "API server" not in reply, reply


def test_a_command_sent_before_its_request_existed_decides_nothing(test_env: Env) -> None:
    # Telegram delivers an update again when the chat component restarted before confirming
    # it (getUpdates' offset). Was the request it names deleted and created anew under the
    # same name in between, the command was typed for the old one: it must not decide (or
    # grant) the new one, which its sender never saw; the same command sent now does.
    env = test_env
    env.create("tg-again")
    env.card("tg-again")
    env.cluster.kubectl("delete", "ar", "tg-again", "-n", env.ns, "--wait=true")
    created = env.create("tg-again")
    wait_for("the new request's card", lambda: len([
        m for m in env.telegram.sent_to(CHAT) if "approval request tg-again\n" in m["plain"]
    ]) == 2, timeout=30, on_timeout=env.log_tail)
    born = dt.datetime.strptime(created["metadata"]["creationTimestamp"],
                                "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    earlier = int(born) - 30  # when the old request stood under that name
    carol = FakeTelegram.user(IDS[SECOND_APPROVER])
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/approve tg-again change window 9", date=earlier)
    reply = env.reply_after(CHAT, n)
    assert "StaleMessage" in reply and "before this request tg-again existed" in reply, reply
    assert "send the command again" in reply, reply
    assert _decisions(env, "tg-again") == []
    refused = [e for e in env.audit() if e["event"] == "ChatRefused"
               and e["data"]["reason"] == "StaleMessage"]
    assert [(e["subject"]["name"], e["data"]["as"]) for e in refused] == [
        ("tg-again", SECOND_APPROVER)]
    # sent now, the same command decides the new request
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/approve tg-again change window 9")
    assert "Approve recorded" in env.reply_after(CHAT, n)
    assert _decisions(env, "tg-again") == [
        {"verdict": "Approve", "by": SECOND_APPROVER, "reason": "change window 9"}]
    wait_for("Approved", lambda: env.ar("tg-again")["status"].get("phase") == "Approved")
    # an /exec sent before the new request existed creates no grant for it either
    command = env.ar("tg-again")["spec"]["commands"][0]
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/exec tg-again " + command, date=earlier)
    assert "StaleMessage" in env.reply_after(CHAT, n)
    grants = json.loads(env.cluster.kubectl("get", "eg", "-n", env.ns, "-o", "json").stdout)
    assert [g for g in grants["items"] if g["spec"]["approvalRef"]["name"] == "tg-again"] == []


def test_slack_buttons_are_signed_and_decide_as_the_person(test_env: Env) -> None:
    env = test_env
    env.create("sl-one")

    def card() -> tuple[str, dict[str, Any]] | None:
        return next(((ts, m) for ts, m in env.slack.cards(CHANNEL)
                     if "sl-one" in str(m["text"])), None)
    ts, message = wait_for("Slack card", card, timeout=30, on_timeout=env.log_tail)
    actions = next(b for b in message["blocks"] if b["type"] == "actions")
    approve = next(e for e in actions["elements"] if e["action_id"] == "wingman_approve")
    commands = next(b for b in message["blocks"] if b["type"] == "rich_text"
                    and b["elements"][0]["type"] == "rich_text_preformatted")
    assert commands["elements"][0]["elements"][0]["text"] == env.ar("sl-one")["spec"][
        "commands"][0]

    def click(user: str, team: str = TEAM) -> dict[str, str]:
        payload = {"type": "block_actions", "user": {"id": user, "team_id": team},
                   "team": {"id": team}, "channel": {"id": CHANNEL},
                   "container": {"type": "message", "message_ts": ts, "channel_id": CHANNEL},
                   "trigger_id": f"trig-{uuid.uuid4().hex[:8]}",
                   "actions": [{"action_id": "wingman_approve", "block_id": "wingman_decide",
                                "value": approve["value"]}]}
        return {"payload": json.dumps(payload)}

    interactive = f"{env.http}/slack/interactive"
    # unsigned, wrongly signed and stale requests are refused
    status, _, _ = slack_signed(interactive, "not-the-secret", click(SLACK[APPROVER]))
    assert status == 401
    old = int(time.time()) - 600
    body = click(SLACK[APPROVER])
    from urllib.parse import urlencode
    sig = slack_signature(SIGNING_SECRET, str(old), urlencode(body).encode())
    status, _, _ = slack_signed(interactive, SIGNING_SECRET, body, timestamp=old,
                                signature=sig)
    assert status == 401
    # a guest and another workspace: told why (ephemeral), no modal
    slack_signed(interactive, SIGNING_SECRET, click("U0GUEST"))
    slack_signed(interactive, SIGNING_SECRET, click(SLACK[APPROVER], team="T0OTHER"))
    wait_for("refusals", lambda: len(env.slack.ephemeral) >= 2)
    texts = json.dumps(env.slack.ephemeral)
    assert "Guest" in texts and "ForeignWorkspace" in texts
    assert env.slack.views == []

    # bob's click opens the modal; submitting it decides as bob
    status, _, sent = slack_signed(interactive, SIGNING_SECRET, click(SLACK[APPROVER]))
    assert status == 200
    (view,) = wait_for("modal", lambda: list(env.slack.views), timeout=20)
    submission = {"type": "view_submission", "user": {"id": SLACK[APPROVER], "team_id": TEAM},
                  "team": {"id": TEAM},
                  "view": {"callback_id": view["view"]["callback_id"],
                           "private_metadata": view["view"]["private_metadata"],
                           "state": {"values": {"reason": {"reason": {
                               "type": "plain_text_input", "value": "looks right"}}}}}}
    form = {"payload": json.dumps(submission)}
    status, answer, sent = slack_signed(interactive, SIGNING_SECRET, form)
    assert status == 200 and json.loads(answer) == {"response_action": "clear"}, answer
    assert _decisions(env, "sl-one") == [
        {"verdict": "Approve", "by": APPROVER, "reason": "looks right"}]
    # replaying the signed submission (same body, timestamp and signature) is refused
    status, _ = post_raw(interactive, form, sent)
    assert status == 409
    assert len(_decisions(env, "sl-one")) == 1
    # the card is updated in place: approved, no buttons
    wait_for("Slack card updated", lambda: (lambda m: m["edits"] > 0 and not any(
        b["type"] == "actions" for b in m["blocks"]))(dict(env.slack.cards(CHANNEL))[ts]),
        on_timeout=env.log_tail)
    # the slash command answers ephemerally
    status, answer, _ = slack_signed(f"{env.http}/slack/commands", SIGNING_SECRET, {
        "team_id": TEAM, "user_id": SLACK[SECOND_APPROVER], "channel_id": CHANNEL,
        "command": "/wingman", "text": "status nope", "trigger_id": "t"})
    assert status == 200 and "NotFound" in answer


def test_a_request_too_long_for_a_message_gets_the_short_card_and_holds_up_nothing(
        test_env: Env) -> None:
    env = test_env
    ns = env.release.target_namespace
    body = approval_request(
        "tg-huge", requester=WORKER, environment=env.release.env,
        instruction="i" * 2000, justification="j" * 2000,
        commands=[f"kubectl rollout restart deployment/huge{i}-{'x' * 200} -n {ns}"
                  for i in range(10)],
        source={"reference": "r" * 512, "agent": "g" * 253, "model": "m" * 253,
                "excerpt": "e" * 4000, "inputTrust": "Untrusted"})
    env.cluster.kubectl("create", "-n", env.ns, "-f", "-", input=dump(body), user=WORKER,
                        groups=worker_groups(env.release.env))
    env.create("tg-after-huge")
    # the request after it is posted; the long one as the short card, still with its buttons
    # while it awaits a decision (Telegram would refuse the full card: it checks the length)
    env.card("tg-after-huge")
    card = env.card("tg-huge")
    assert "too long for a chat message" in card["plain"]
    assert "kubectl wingman describe tg-huge" in card["plain"]
    if env.ar("tg-huge")["status"].get("phase") == "AwaitingDecision":
        assert len(env.buttons(card)) == 2
    # Slack and the webhook show it whole (their limits are higher)
    wait_for("slack card", lambda: any("tg-huge" in str(m["text"])
                                       for _, m in env.slack.cards(CHANNEL)), timeout=40)


def post_raw(url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
    from urllib.parse import urlencode

    from support.fake_chat import post

    return post(url, urlencode(form).encode(), headers)


def test_a_chat_outage_never_blocks_a_request_and_messages_catch_up(test_env: Env) -> None:
    env = test_env
    env.telegram.down = env.slack.down = env.webhook.down = True
    try:
        env.create("outage")
        time.sleep(3)  # several sync rounds fail meanwhile
        assert not any("outage" in m["plain"] for m in env.telegram.sent_to(CHAT))
        # the request works by CLI as always
        env.cluster.kubectl("patch", "ar", "outage", "-n", env.ns, "--type=json", "-p", json.dumps(
            [{"op": "add", "path": "/spec/decisions", "value": [
                {"verdict": "Approve", "by": APPROVER, "reason": "by CLI"}]}]),
            user=APPROVER, groups=approver_groups("test"))
        wait_for("Approved", lambda: env.ar("outage")["status"].get("phase") == "Approved")
    finally:
        env.telegram.down = env.slack.down = env.webhook.down = False
    # the channels return: the card appears showing the approval, the requester is told
    card = env.card("outage")
    assert "Approved" in card["plain"] and not env.telegram.buttons(CHAT, card["id"])
    wait_for("requester notice", lambda: any(
        "outage" in m["plain"] and "Approved" in m["plain"]
        for m in env.telegram.sent_to(REQUESTER_CHAT)), timeout=40)
    wait_for("slack card", lambda: any("outage" in str(m["text"])
                                       for _, m in env.slack.cards(CHANNEL)), timeout=40)
    wait_for("webhook caught up", lambda: any(
        d["body"]["request"]["name"] == "outage" and d["body"]["event"] == "request.approved"
        for d in env.webhook.deliveries), timeout=40)
    metrics = env.chat_metrics()
    assert 'wingman_chat_messages_failed_total{channel="telegram",environment="test"}' in metrics


def test_chat_identity_can_never_decide_and_impersonates_only_mapped_people(
        test_env: Env) -> None:
    env = test_env
    chat_sa = sa_user(env.ns, "wingman-chat")
    groups = sa_groups(env.ns)
    assert not can(env.cluster, user=chat_sa, groups=groups, verb="patch",
                   resource="approvalrequests", group="wingman.dev", namespace=env.ns)
    assert not can(env.cluster, user=chat_sa, groups=groups, verb="approve",
                   resource="environments", group="wingman.dev", name="test")
    assert not can(env.cluster, user=chat_sa, groups=groups, verb="create",
                   resource="executiongrants", group="wingman.dev", namespace=env.ns)
    assert can(env.cluster, user=chat_sa, groups=groups, verb="impersonate",
               resource="users", name=APPROVER)
    for user in ("admin", "system:admin", "mallory"):
        assert not can(env.cluster, user=chat_sa, groups=groups, verb="impersonate",
                       resource="users", name=user)
    assert not can(env.cluster, user=chat_sa, groups=groups, verb="impersonate",
                   resource="groups", name="system:masters")
    assert not can(env.cluster, user=chat_sa, groups=groups, verb="impersonate",
                   resource="users")
    _no_secret_in_logs(env)


# --------------------------------------------------------------------------- prd


@pytest.fixture(scope="module")
def prd_env(cluster: LocalCluster, crds: object,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with chat_env(cluster, "prd", tmp_path_factory.mktemp("chat-prd"), step_up=True) as env:
        yield env


def _code(env: Env, user: str) -> str:
    """``user``'s current code, once it is one the chat process takes: no code an earlier
    process could have accepted (its step begins a step after the start, or later)."""
    totp = pyotp.TOTP(TOTP[user])
    first = (math.ceil(env.healthy_at / totp.interval) + 1) * totp.interval
    time.sleep(max(0.0, first - time.time()))
    return str(totp.now())


def test_prd_needs_two_different_people_each_with_their_step_up_code(prd_env: Env) -> None:
    env = prd_env
    env.create("prd-exp", expiresAfterSeconds=60)  # checked at the end: expires meanwhile
    exp_card = env.card("prd-exp")
    exp_approve, _ = env.buttons(exp_card)
    env.create("prd-two")
    card = env.card("prd-two")
    approve, _ = env.buttons(card)
    bob, carol = FakeTelegram.user(IDS[APPROVER]), FakeTelegram.user(IDS[SECOND_APPROVER])

    # the button asks for the code; a wrong code decides nothing
    assert "Step-up required" in env.answer(env.telegram.press(bob, CHAT, card["id"], approve))
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(bob, CHAT, "/confirm 12345x")
    assert "StepUpFailed" in env.reply_after(CHAT, n)
    assert _decisions(env, "prd-two") == []
    # the held decision was used up by the failed attempt: start again, then the right code
    assert "Step-up required" in env.answer(env.telegram.press(bob, CHAT, card["id"], approve))
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(bob, CHAT, f"/confirm {_code(env, APPROVER)}")
    assert "Approve recorded" in env.reply_after(CHAT, n)
    assert _decisions(env, "prd-two") == [{"verdict": "Approve", "by": APPROVER, "reason": ""}]
    # one approval of two: still awaiting, the card says 1 of 2 and keeps its buttons
    wait_for("1 of 2 on the card", lambda: "1 of 2 approvals" in env.card("prd-two")["plain"],
             on_timeout=env.log_tail)
    assert env.ar("prd-two")["status"]["phase"] == "AwaitingDecision"
    assert env.telegram.buttons(CHAT, card["id"])
    # the same person cannot supply the second approval
    assert "AlreadyDecided" in env.answer(env.telegram.press(bob, CHAT, card["id"], approve))

    # carol, by command, with her own code
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, "/approve prd-two second pair of eyes")
    assert "Step-up required" in env.reply_after(CHAT, n)
    n = len(env.telegram.sent_to(CHAT))
    env.telegram.say(carol, CHAT, f"/confirm {_code(env, SECOND_APPROVER)}")
    assert "Approve recorded" in env.reply_after(CHAT, n)
    wait_for("Approved", lambda: env.ar("prd-two")["status"].get("phase") == "Approved")
    assert [d["by"] for d in _decisions(env, "prd-two")] == [APPROVER, SECOND_APPROVER]
    recorded = [e for e in env.audit() if e["event"] == "ChatDecisionRecorded"]
    assert [(e["actor"], e["data"]["stepUp"]) for e in recorded] == [
        (APPROVER, True), (SECOND_APPROVER, True)]

    # the short-lived request: approvers were warned, then it expired; its buttons are dead
    assert any("prd-exp" in m["plain"] and "expires in" in m["plain"]
               for m in env.telegram.sent_to(CHAT))
    wait_for("prd-exp Expired", lambda: env.ar("prd-exp")["status"].get("phase") == "Expired",
             timeout=90)
    wait_for("expired card without buttons", lambda: "Expired" in env.card("prd-exp")["plain"]
             and not env.telegram.buttons(CHAT, exp_card["id"]), on_timeout=env.log_tail)
    assert "NotDecidable" in env.answer(env.telegram.press(carol, CHAT, exp_card["id"],
                                                           exp_approve))
    assert _decisions(env, "prd-exp") == []
    notice = wait_for("requester told of the timeout", lambda: next(
        (m["plain"] for m in env.telegram.sent_to(REQUESTER_CHAT) if "prd-exp" in m["plain"]),
        None))
    assert "Expired" in notice and "not a rejection" in notice
    _no_secret_in_logs(env)
