"""The chat service's memory of what it posted lives in a ConfigMap: whatever that ConfigMap
holds, the service starts (an unreadable state is forgotten, and messages are posted again);
state of the wrong shape is dropped once, and the ConfigMap rewritten without it (or, when
it may not be written, logged once saying so, and written with the next save). The step-up
wrong codes and lockouts are the exception: never dropped, they fail closed until fixed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from support.apiproxy import FaultyApiProxy
from support.chart import CHART_DIR, can, installed, kubectl_as_sa
from support.operator import wait_for
from wingman import GROUP
from wingman.audit import open_sink
from wingman.chat.cluster import STATE_KEY, ChatCluster
from wingman.chat.guard import Refusal, StepUp
from wingman.chat.metrics import ChatMetrics
from wingman.chat.service import (
    SAVE_BUDGET_SECONDS,
    STATE_CALL_SECONDS,
    ChatService,
    readable_state,
)
from wingman.dev.cluster import LocalCluster
from wingman.errors import WingmanError
from wingman.kube import CONFIGMAPS, ApiError, Kube
from wingman.settings import ChatConfig

HORIZON = "2026-01-01T00:00:00Z"
UID = "0f8fad5b-d9cb-469f-a165-000000000001"
CARD = {"name": "web", "telegram": {"ref": {"chat": -100, "message": 7}, "hash": "h"}}


def _store(cluster: LocalCluster, namespace: str, raw: str) -> Kube:
    kube = Kube(cluster.api_client())
    kube.create(CONFIGMAPS, namespace, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wingman-chat-state"}, "data": {STATE_KEY: raw}})
    return kube


@pytest.mark.parametrize("raw, expected", [
    ("[" * 100_000 + "]" * 100_000, None),      # past the JSON parser's depth
    ("{not json", None),
    (json.dumps({"requests": {"r1": {"ts": "1"}}}), {"requests": {"r1": {"ts": "1"}}}),
], ids=["nested", "not-json", "kept"])
def test_any_stored_state_loads_without_stopping_the_service(
        cluster: LocalCluster, namespace: str, raw: str, expected: dict[str, object] | None
) -> None:
    kube = _store(cluster, namespace, raw)
    assert ChatCluster(kube, namespace, "wingman-chat-state").load_state() == expected


@pytest.mark.parametrize("stored, expected", [
    (["a list"], None),
    ({"horizon": HORIZON, "requests": {UID: CARD, "u2": ["posted"]}},
     {"horizon": HORIZON, "requests": {UID: CARD}}),
    ({"horizon": HORIZON, "requests": {UID: {**CARD, "slack": {"ref": "1712.5"}}}},
     {"horizon": HORIZON, "requests": {UID: {**CARD, "slack": {}}}}),
], ids=["not-an-object", "entry-not-an-object", "ref-not-a-reference"])
def test_a_state_of_the_wrong_shape_is_rewritten_without_what_cannot_be_read(
        cluster: LocalCluster, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        stored: Any, expected: dict[str, Any] | None) -> None:
    kube = _store(cluster, namespace, json.dumps(stored))
    chat = ChatCluster(kube, namespace, "wingman-chat-state")
    svc = ChatService(config=ChatConfig(environment="prd"), cluster=chat,
                      sink=open_sink(str(tmp_path / "audit.log")), metrics=ChatMetrics(),
                      step_up=StepUp({}))
    asyncio.run(svc.load())
    saved = json.loads(kube.get(CONFIGMAPS, namespace, "wingman-chat-state")["data"][STATE_KEY])
    if expected is None:  # started afresh, from now on
        assert saved["requests"] == {} and saved["horizon"] > HORIZON
    else:
        assert saved == expected
    warned = [r for r in caplog.records if "wrong shape" in r.getMessage()]
    assert len(warned) == 1 and vars(warned[0])["configmap"] == "wingman-chat-state"
    # read again (the next start): nothing left to drop, nothing logged
    caplog.clear()
    asyncio.run(svc.load())
    assert not [r for r in caplog.records if "wrong shape" in r.getMessage()]


def test_a_wrong_shape_that_cannot_be_saved_is_logged_once_and_saved_later(
        cluster: LocalCluster, crds: object, namespace: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The chat identity may read the state ConfigMap but not patch it (RBAC broken, say):
    what has the wrong shape is dropped and the start goes on, with one warning that says the
    save failed (not one per retried start, each claiming it was saved); once the identity
    may patch it again, the next save writes the state without it."""
    stored = {"horizon": HORIZON, "requests": {UID: CARD, "u2": ["posted"]}}
    raw = json.dumps(stored)
    admin = _store(cluster, namespace, raw)
    user = f"chat-{uuid.uuid4().hex[:6]}"
    for role, verbs, resources in (
            ("read", "get", ["configmaps"]),
            ("list", "list", [f"approvalrequests.{GROUP}", f"executiongrants.{GROUP}"])):
        cluster.kubectl("create", "role", f"{user}-{role}", "-n", namespace, f"--verb={verbs}",
                        *[f"--resource={r}" for r in resources])
        cluster.kubectl("create", "rolebinding", f"{user}-{role}", "-n", namespace,
                        f"--role={user}-{role}", f"--user={user}")
    wait_for("read allowed", lambda: can(cluster, user=user, groups=[], verb="get",
                                         resource="configmaps", namespace=namespace))
    chat = ChatCluster(Kube(cluster.api_client(user=user)), namespace, "wingman-chat-state")
    svc = ChatService(config=ChatConfig(environment="prd"), cluster=chat,
                      sink=open_sink(str(tmp_path / "audit.log")), metrics=ChatMetrics(),
                      step_up=StepUp({}))
    for _ in range(3):  # as the process starts: load until it succeeds
        try:
            asyncio.run(svc.load())
            break
        except WingmanError:
            continue
    warned = [r for r in caplog.records if "wrong shape" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "saving the state without it failed" in warned[0].getMessage()
    assert vars(warned[0])["saved"] is False and vars(warned[0])["reason"] == "Forbidden"
    assert "u2" not in svc.state["requests"]  # dropped in memory: the service goes on
    stored_now = admin.get(CONFIGMAPS, namespace, "wingman-chat-state")["data"][STATE_KEY]
    assert json.loads(stored_now) == stored  # nothing written
    # patch allowed again: the next save (here: the request the state named is gone) writes
    cluster.kubectl("create", "role", f"{user}-patch", "-n", namespace, "--verb=patch",
                    "--resource=configmaps")
    cluster.kubectl("create", "rolebinding", f"{user}-patch", "-n", namespace,
                    f"--role={user}-patch", f"--user={user}")
    wait_for("patch allowed", lambda: can(cluster, user=user, groups=[], verb="patch",
                                          resource="configmaps", namespace=namespace))
    asyncio.run(svc.sync())
    saved = json.loads(admin.get(CONFIGMAPS, namespace, "wingman-chat-state")["data"][STATE_KEY])
    assert saved == {"horizon": HORIZON, "requests": {}}
    assert readable_state(saved)[1] == []
    assert len([r for r in caplog.records if "wrong shape" in r.getMessage()]) == 1


SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
T0 = 1_800_000_000.0  # on a 30 s step


def _restarted(chat: ChatCluster, tmp: Path, at: list[float], *, started: float,
               load: bool = True) -> ChatService:
    """A chat service as a new process starts it: a fresh StepUp that takes no code before
    it has read the state ConfigMap, then that state read."""
    svc = ChatService(config=ChatConfig(environment="prd", step_up=True), cluster=chat,
                      sink=open_sink(str(tmp / "audit.log")), metrics=ChatMetrics(),
                      step_up=StepUp({"bob": SECRET}, clock=lambda: at[0], started=started,
                                     restored=False))
    if load:
        asyncio.run(svc.load())
    return svc


def _try(svc: ChatService, code: str) -> str:
    try:
        asyncio.run(svc._verify_step_up("bob", code))
    except Refusal as refusal:
        return refusal.reason
    return "accepted"


def _wrong(at: float) -> str:
    right = pyotp.TOTP(SECRET)
    return next(c for c in ("000000", "111111", "222222")
                if all(right.at(at + d * 30) != c for d in (-1, 0, 1)))


def test_wrong_step_up_codes_and_lockouts_outlive_a_restart(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """Someone guessing a person's code cannot get fresh tries by restarting the chat service
    (or waiting for a rollout): the wrong codes in a row and the lockout are kept in the state
    ConfigMap and read back by the next process; a lockout that has ended is dropped."""
    kube = _store(cluster, namespace, json.dumps({"horizon": HORIZON, "requests": {}}))
    chat = ChatCluster(kube, namespace, "wingman-chat-state")
    at = [T0]
    first = _restarted(chat, tmp_path, at, started=T0 - 600)
    for _ in range(3):
        assert _try(first, _wrong(at[0])) == "StepUpFailed"
    # restart: two more wrong codes lock bob out, as they would have without the restart
    at[0] = T0 + 60
    second = _restarted(chat, tmp_path, at, started=T0 + 30)
    assert _try(second, _wrong(at[0])) == "StepUpFailed"
    assert _try(second, _wrong(at[0])) == "StepUpLocked"
    stored = json.loads(kube.get(CONFIGMAPS, namespace, "wingman-chat-state")["data"][STATE_KEY])
    assert stored["stepUp"] == {"bob": {"lockedUntil": int(T0) + 60 + 300}}
    assert stored["horizon"] == HORIZON  # the rest of the state is kept
    # restart during the lockout: even the right code is refused
    at[0] = T0 + 180
    third = _restarted(chat, tmp_path, at, started=T0 + 120)
    assert _try(third, pyotp.TOTP(SECRET).at(at[0])) == "StepUpLocked"
    # restart after it ended: dropped, the right code is taken, nothing is left stored
    at[0] = T0 + 420
    fourth = _restarted(chat, tmp_path, at, started=T0 + 390)
    assert _try(fourth, pyotp.TOTP(SECRET).at(at[0])) == "accepted"
    assert _try(fourth, _wrong(at[0])) == "StepUpFailed"
    assert _try(fourth, pyotp.TOTP(SECRET).at(at[0] + 30)) == "accepted"  # the count ends
    stored = json.loads(kube.get(CONFIGMAPS, namespace, "wingman-chat-state")["data"][STATE_KEY])
    assert "stepUp" not in stored


def test_no_step_up_code_is_taken_before_the_state_is_read(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """Fail closed: while the state ConfigMap cannot be read (missing, the API server down),
    the wrong codes and lockouts kept in it are unknown, so every code is refused
    (StepUpUnavailable) rather than taken with fresh tries; once read, codes are taken."""
    kube = Kube(cluster.api_client())
    chat = ChatCluster(kube, namespace, "wingman-chat-state")
    at = [T0]
    svc = _restarted(chat, tmp_path, at, started=T0 - 600, load=False)
    with pytest.raises(WingmanError):
        asyncio.run(svc.load())  # no ConfigMap yet
    assert _try(svc, pyotp.TOTP(SECRET).at(at[0])) == "StepUpUnavailable"
    _store(cluster, namespace, json.dumps({"horizon": HORIZON, "requests": {}}))
    asyncio.run(svc.load())
    assert _try(svc, pyotp.TOTP(SECRET).at(at[0])) == "accepted"


def test_step_up_state_of_the_wrong_shape_is_kept_and_refuses_codes_until_fixed(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """Fail closed: a stepUp the service cannot read (a count that is not a whole number) is
    not dropped, which would hand out fresh tries: it is kept in the ConfigMap through the
    start's save, every code is refused (StepUpUnavailable) by this process and the next, and
    once it is fixed in the ConfigMap codes are taken again."""
    stored = {"horizon": HORIZON, "requests": {UID: CARD, "u2": ["posted"]},
              "stepUp": {"bob": {"failures": "3"}}}
    kube = _store(cluster, namespace, json.dumps(stored))
    chat = ChatCluster(kube, namespace, "wingman-chat-state")
    at = [T0]
    svc = _restarted(chat, tmp_path, at, started=T0 - 600)
    saved = json.loads(kube.get(CONFIGMAPS, namespace, "wingman-chat-state")["data"][STATE_KEY])
    assert saved == {**stored, "requests": {UID: CARD}}  # the rest dropped, stepUp kept
    assert _try(svc, pyotp.TOTP(SECRET).at(at[0])) == "StepUpUnavailable"
    second = _restarted(chat, tmp_path, at, started=T0 - 600)
    assert _try(second, pyotp.TOTP(SECRET).at(at[0])) == "StepUpUnavailable"
    kube.patch(CONFIGMAPS, namespace, "wingman-chat-state", {"data": {STATE_KEY: json.dumps(
        {**saved, "stepUp": {"bob": {"failures": 3}}})}})
    assert _try(second, _wrong(at[0])) == "StepUpFailed"
    assert _try(second, _wrong(at[0])) == "StepUpLocked"  # the fifth in a row
    saved = json.loads(kube.get(CONFIGMAPS, namespace, "wingman-chat-state")["data"][STATE_KEY])
    assert saved["stepUp"] == {"bob": {"lockedUntil": int(T0) + 300}}


class _FixedMeanwhile(ChatCluster):
    """The state ConfigMap, which an administrator fixes (``fix``: the state.json then) right
    after the service has read it: between its read and its write."""

    fix: dict[str, Any] | None = None

    def load_state(self, *, once: float | None = None) -> Any:
        raw = super().load_state(once=once)
        if self.fix is not None:
            self.kube.patch(CONFIGMAPS, self.namespace, self.state_configmap,
                            {"data": {STATE_KEY: json.dumps(self.fix)}})
            self.fix = None
        return raw


def test_a_step_up_fix_made_while_the_service_saves_is_not_written_over(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """While stepUp cannot be read, every save reads it again first; a fix that lands between
    that read and the write is not written over with the old, unreadable stepUp (which would
    keep every code refused): the write is made only if the ConfigMap is unchanged, else read
    and written again, with the fix."""
    stored = {"horizon": HORIZON, "requests": {UID: CARD},
              "stepUp": {"bob": {"failures": "3"}}}
    kube = _store(cluster, namespace, json.dumps(stored))
    chat = _FixedMeanwhile(kube, namespace, "wingman-chat-state")
    at = [T0]
    svc = _restarted(chat, tmp_path, at, started=T0 - 600)
    assert _try(svc, pyotp.TOTP(SECRET).at(at[0])) == "StepUpUnavailable"
    chat.fix = {**stored, "stepUp": {"bob": {"failures": 3}}}
    asyncio.run(svc._save())  # the reconciler saving as the administrator fixes it
    saved = json.loads(kube.get(CONFIGMAPS, namespace, "wingman-chat-state")["data"][STATE_KEY])
    assert saved["stepUp"] == {"bob": {"failures": 3}}
    assert _try(svc, _wrong(at[0])) == "StepUpFailed"
    assert _try(svc, _wrong(at[0])) == "StepUpLocked"  # the fifth in a row


def test_only_the_chat_component_writes_its_state_so_nobody_else_lifts_a_lockout(
        cluster: LocalCluster, crds: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    values = {"chat.enabled": True,
              "chat.webhook": {"enabled": True, "url": "https://hooks.example.com/wingman"}}
    with installed(cluster, "test", namespace=f"wm-chst-{suffix}",
                   target_namespace=f"apps-chst-{suffix}", values=values) as release:
        ns = release.namespace
        locked = json.dumps({"stepUp": {"bob": {"lockedUntil": 4102444800}}})
        lift = json.dumps({"data": {STATE_KEY: json.dumps({"stepUp": {}})}})
        # The chat component writes its state (a lockout)...
        done = kubectl_as_sa(cluster, ns, "wingman-chat", "-n", ns, "patch", "configmap",
                             "wingman-chat-state", "-p",
                             json.dumps({"data": {STATE_KEY: locked}}))
        assert done.returncode == 0, done.stderr
        # ...and the operator, whose Role may patch ConfigMaps, may not lift it (once the
        # policy is loaded: it takes effect a moment after it is created).
        refused = wait_for("the chat-state policy", lambda: (
            r := kubectl_as_sa(cluster, ns, "wingman-operator", "-n", ns, "patch", "configmap",
                               "wingman-chat-state", "-p", lift, "--dry-run=server"))
            and "ValidatingAdmissionPolicy" in r.stderr and r, 60)
        assert refused.returncode != 0
        assert "only the Wingman chat component" in refused.stderr, refused.stderr
        assert "step-up wrong-code counts and lockouts" in refused.stderr
        done = kubectl_as_sa(cluster, ns, "wingman-operator", "-n", ns, "patch", "configmap",
                             "wingman-chat-state", "-p", lift)
        assert done.returncode != 0 and "only the Wingman chat component" in done.stderr, \
            done.stderr
        # Nor may an administrator replace it without the lockout, or delete it.
        for args in (["patch", "configmap", "wingman-chat-state", "-p", lift],
                     ["delete", "configmap", "wingman-chat-state"]):
            done = cluster.kubectl(*args, "-n", ns, check=False)
            assert done.returncode != 0 and "only the Wingman chat component" in done.stderr, \
                done.stderr
        cm = cluster.kubectl("get", "configmap", "wingman-chat-state", "-n", ns, "-o",
                             "json").stdout
        assert json.loads(cm)["data"][STATE_KEY] == locked
        # Labels and annotations stay anyone's to change, so helm upgrades the release.
        done = cluster.kubectl("label", "configmap", "wingman-chat-state", "-n", ns,
                               "team=payments", check=False)
        assert done.returncode == 0, done.stderr
        cluster.helm("upgrade", "wingman", str(CHART_DIR), "--namespace", ns, "--reuse-values",
                     "--set", "chat.expiryWarningMinutes=2")
        cm = cluster.kubectl("get", "configmap", "wingman-chat-state", "-n", ns, "-o",
                             "json").stdout
        assert json.loads(cm)["data"][STATE_KEY] == locked


class _Stopped(BaseException):
    """The process stops (killed, out of memory, a rollout): nothing after it runs."""


class _StopsAfterCheck(ChatCluster):
    """The real state ConfigMap, whose process stops at the first save once ``checked[0]``:
    between checking a code and writing its outcome."""

    checked: list[bool]

    def save_state(self, state: dict[str, Any], *, unchanged: bool = False,
                   once: float | None = None) -> None:
        if self.checked[0]:
            raise _Stopped()
        super().save_state(state, unchanged=unchanged, once=once)


def test_a_process_stopped_between_a_check_and_its_write_keeps_every_wrong_code(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """Restarting the chat service (a crash, an out-of-memory kill, a rollout) just after a
    wrong code was checked, before its outcome was written, buys no try: each code was written
    ahead as wrong, so five such codes, each by a process stopped that way, lock the person
    out in the ConfigMap the next process reads."""
    kube = _store(cluster, namespace, json.dumps({"horizon": HORIZON, "requests": {}}))
    at = [T0]
    for _ in range(5):
        chat = _StopsAfterCheck(kube, namespace, "wingman-chat-state")
        chat.checked = [False]
        svc = _restarted(chat, tmp_path, at, started=T0 - 600)
        verify = svc.step_up.verify

        def checking(user: str, code: str, verify: Any = verify, chat: Any = chat) -> None:
            chat.checked[0] = True
            verify(user, code)
        svc.step_up.verify = checking  # type: ignore[method-assign]
        with pytest.raises(_Stopped):
            asyncio.run(svc._verify_step_up("bob", _wrong(at[0])))
    stored = json.loads(kube.get(CONFIGMAPS, namespace, "wingman-chat-state")["data"][STATE_KEY])
    assert stored["stepUp"] == {"bob": {"lockedUntil": int(T0) + 300}}
    restarted = _restarted(ChatCluster(kube, namespace, "wingman-chat-state"), tmp_path, at,
                           started=T0 - 600)
    assert _try(restarted, pyotp.TOTP(SECRET).at(at[0])) == "StepUpLocked"


@pytest.fixture
def proxy(cluster: LocalCluster, tmp_path: Path) -> Iterator[FaultyApiProxy]:
    directory = tmp_path / "proxy"
    directory.mkdir()
    with FaultyApiProxy(cluster.server, cluster.ca_file, directory) as made:
        yield made


def _through(cluster: LocalCluster, namespace: str, proxy: FaultyApiProxy) -> Kube:
    """A client of a ServiceAccount that may read and patch ConfigMaps in ``namespace`` (as
    the chat one may its state), every call through ``proxy``."""
    cluster.kubectl("create", "serviceaccount", "chat", "-n", namespace)
    cluster.kubectl("create", "role", "chat-state", "-n", namespace, "--verb=get,patch",
                    "--resource=configmaps")
    cluster.kubectl("create", "rolebinding", "chat-state", "-n", namespace,
                    "--role=chat-state", f"--serviceaccount={namespace}:chat")
    wait_for("patch allowed", lambda: can(
        cluster, user=f"system:serviceaccount:{namespace}:chat", groups=[], verb="patch",
        resource="configmaps", namespace=namespace))
    return Kube.from_token(proxy.url, cluster.sa_token(namespace, "chat"), proxy.ca_file)


def test_a_step_up_write_the_api_server_holds_is_refused_within_the_budget(
        cluster: LocalCluster, namespace: str, tmp_path: Path, proxy: FaultyApiProxy) -> None:
    """An API server that takes the write ahead of a step-up code and never answers: each
    try is given up after a few seconds (not the client's own 30 s, retried by the HTTP
    library), made again within the budget, and then the code is refused unchecked, saying
    to try again; nothing is decided on a code whose try the state may not hold."""
    _store(cluster, namespace, json.dumps({"horizon": HORIZON, "requests": {}}))
    chat = ChatCluster(_through(cluster, namespace, proxy), namespace, "wingman-chat-state")
    at = [T0]
    svc = _restarted(chat, tmp_path, at, started=T0 - 600)
    path = CONFIGMAPS.path(namespace, "wingman-chat-state")
    proxy.hold("PATCH", path, seconds=60, times=1000)
    started = time.monotonic()
    with pytest.raises(Refusal) as refused:
        asyncio.run(svc._verify_step_up("bob", pyotp.TOTP(SECRET).at(at[0])))
    assert time.monotonic() - started < SAVE_BUDGET_SECONDS + STATE_CALL_SECONDS
    assert refused.value.reason == "StepUpUnavailable"
    assert "your code was not checked" in refused.value.message
    assert "try again shortly" in refused.value.message
    assert proxy.count("PATCH", path) > 1, "a write held up is made again"
    assert svc.step_up.stored() == {}  # nothing checked, nothing counted


@pytest.mark.parametrize("fault", ["lose", "drop"])
@pytest.mark.parametrize("right", [True, False], ids=["right-code", "wrong-code"])
def test_a_step_up_write_whose_answer_is_lost_is_recognised(
        cluster: LocalCluster, namespace: str, tmp_path: Path, proxy: FaultyApiProxy,
        fault: str, right: bool) -> None:
    """The write ahead of a code reached the API server and its answer was lost (``lose``),
    or the connection was closed before it reached it (``drop``): made again, it is known to
    have landed (the ConfigMap holds it) or lands, the code is checked, and the count is the
    code's own, once (a wrong one counted once, a right one cleared)."""
    kube = _store(cluster, namespace, json.dumps({"horizon": HORIZON, "requests": {}}))
    chat = ChatCluster(_through(cluster, namespace, proxy), namespace, "wingman-chat-state")
    at = [T0]
    svc = _restarted(chat, tmp_path, at, started=T0 - 600)
    path = CONFIGMAPS.path(namespace, "wingman-chat-state")
    reads = proxy.count("GET", path)
    getattr(proxy, fault)("PATCH", path, times=1)
    code = pyotp.TOTP(SECRET).at(at[0]) if right else _wrong(at[0])
    assert _try(svc, code) == ("accepted" if right else "StepUpFailed")
    stored = json.loads(kube.get(CONFIGMAPS, namespace, "wingman-chat-state")["data"][STATE_KEY])
    assert stored.get("stepUp") == (None if right else {"bob": {"failures": 1}})
    # the write ahead twice (the second told Conflict, when the first had landed, and then
    # the ConfigMap read: it holds that state), and the outcome's write when there is one
    assert proxy.count("PATCH", path) == 3
    assert proxy.count("GET", path) - reads == (1 if fault == "lose" else 0)
    assert stored["horizon"] == HORIZON


def test_a_state_write_that_arrives_after_a_newer_one_changes_nothing(
        cluster: LocalCluster, namespace: str) -> None:
    """A write given up without an answer may still reach the API server later, after the
    writes made since: it is made over the ConfigMap as it was then (its resourceVersion), so
    the API server refuses it (Conflict) instead of putting the older counts back (a lockout
    lifted, fresh tries)."""
    kube = _store(cluster, namespace, json.dumps({"horizon": HORIZON, "requests": {}}))
    chat = ChatCluster(kube, namespace, "wingman-chat-state")
    chat.load_state()
    late = ChatCluster(kube, namespace, "wingman-chat-state")  # the write given up, as it was
    late.load_state()
    landed = ChatCluster(kube, namespace, "wingman-chat-state")  # one of the newer state
    landed.load_state()
    locked = {"horizon": HORIZON, "requests": {},
              "stepUp": {"bob": {"lockedUntil": int(T0) + 300}}}
    chat.save_state(locked)
    with pytest.raises(ApiError) as refused:
        late.save_state({"horizon": HORIZON, "requests": {}, "stepUp": {"bob": {"failures": 1}}})
    assert refused.value.conflict
    stored = json.loads(kube.get(CONFIGMAPS, namespace, "wingman-chat-state")["data"][STATE_KEY])
    assert stored == locked
    # a write of the state the ConfigMap holds (its own earlier try landed): made
    landed.save_state(locked)
    late.save_state(locked)  # and the refused one's writer, having read it, writes again
