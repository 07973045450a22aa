"""The preview result: its strict shape, its channel to the operator, and state binding."""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from typing import Any

import pytest

from wingman.model import preview as pv

DEPLOY = pv.Target(group="apps", version="v1", resource="deployments", kind="Deployment",
                   name="web", namespace="apps", uid="u-1", resource_version="240", generation=4)


def _cmd(command: str = "kubectl scale deployment/web --replicas=3 -n apps", *,
         outcome: pv.Outcome = pv.Outcome.PREVIEWED, diff: str = "", targets: int = 1
         ) -> pv.CommandPreview:
    found = tuple(pv.Target(group="apps", version="v1", resource="deployments",
                            kind="Deployment", name=f"web-{i}", namespace="apps",
                            uid=f"uid-{i:04d}-" + "a" * 30, resource_version=str(1000 + i),
                            generation=i) for i in range(targets))
    return pv.CommandPreview(command, "kubernetes", outcome, "dry run accepted", found, 0, diff)


def test_a_preview_survives_the_termination_message_round_trip() -> None:
    preview = pv.Preview("uid-1", (_cmd(diff="-  replicas: 1\n+  replicas: 3\n"),
                                   _cmd("kubectl get pods -n apps", outcome=pv.Outcome.READ_ONLY,
                                        targets=0)))
    encoded = pv.encode(preview)
    assert encoded.startswith(pv.MESSAGE_PREFIX) and len(encoded) <= pv.MAX_MESSAGE_BYTES
    assert pv.decode(encoded) == preview
    summary = preview.summary()
    assert (summary.objects, summary.kinds, summary.namespaces, summary.findings) == (
        1, ("Deployment",), ("apps",), 0)


def test_an_oversized_preview_is_shrunk_to_fit_diffs_first() -> None:
    def noisy(n: int) -> str:  # what compression cannot shrink
        return "".join(f"+ image: {hashlib.sha256(f'{n}/{i}'.encode()).hexdigest()}\n"
                       for i in range(40))[: pv.MAX_DIFF_BYTES]

    preview = pv.Preview("uid-1", tuple(_cmd(f"kubectl scale deployment/w{i} --replicas=2",
                                             diff=noisy(i), targets=5) for i in range(10)))
    assert len(pv.encode(preview)) > pv.MAX_MESSAGE_BYTES
    fitted, encoded = pv.fit(preview)
    assert len(encoded) <= pv.MAX_MESSAGE_BYTES
    assert pv.decode(encoded) == fitted
    assert all(c.diff_truncated for c in fitted.commands)
    # targets (what state binding needs) are kept as long as anything fits
    assert sum(len(c.targets) + c.targets_truncated for c in fitted.commands) == 50


@pytest.mark.parametrize("message", [
    "hello",
    pv.MESSAGE_PREFIX + "not base64!",
    pv.MESSAGE_PREFIX + base64.b64encode(b"not zlib").decode(),
    pv.MESSAGE_PREFIX + base64.b64encode(zlib.compress(b"[1, 2]")).decode(),
    # a zip bomb: inflates far beyond the bound
    pv.MESSAGE_PREFIX + base64.b64encode(zlib.compress(b" " * (4 * 1024 * 1024), 9)).decode(),
])
def test_anything_but_a_wellformed_result_is_refused(message: str) -> None:
    with pytest.raises(pv.PreviewInvalid):
        pv.decode(message)


@pytest.mark.parametrize("bad", [
    {"outcome": "Approved"},
    {"targets": [{"group": "apps", "version": "v1", "resource": "deployments",
                  "kind": "Deployment", "name": "Web_Server"}]},
    {"targets": [{"version": "v1", "resource": "pods", "kind": "Pod", "name": "x",
                  "generation": -1}]},
    {"diff": "x" * (pv.MAX_DIFF_BYTES + 1)},
    {"targets": [DEPLOY.to_dict()] * (pv.MAX_TARGETS + 1)},
])
def test_a_malformed_command_result_is_refused(bad: dict[str, object]) -> None:
    data = {**_cmd().to_dict(), **bad}
    raw = json.dumps({"approvalUID": "u", "commands": [data]}).encode()
    with pytest.raises(pv.PreviewInvalid):
        pv.decode(pv.MESSAGE_PREFIX + base64.b64encode(zlib.compress(raw)).decode())


@pytest.mark.parametrize(("field", "value"), [
    # what the API server refuses as an object's name (an RFC 1123 subdomain)
    ("name", "a..b"), ("name", "a.-b"), ("name", "a-.b"), ("name", ".web"),
    # a namespace is an RFC 1123 label: no '.'
    ("namespace", "apps.prod"), ("namespace", "a..b"),
    ("group", "apps..k8s.io"), ("group", "apps.-x"),
])
def test_a_target_named_as_the_api_server_would_refuse_is_refused(field: str,
                                                                  value: str) -> None:
    """Names in a preview's result were checked with a looser pattern than the API server's
    (``a..b`` taken as an object's name, ``apps.prod`` as a namespace's): a preview pod's
    result naming what no object can be named is not recorded."""
    good = DEPLOY.to_dict()
    assert pv.Target.from_dict(good) == DEPLOY
    assert pv.Target.from_dict({**good, "name": "web.v2", "group": "apps.example.com"})
    with pytest.raises(pv.PreviewInvalid, match=f"{field} .* has an invalid form"):
        pv.Target.from_dict({**good, field: value})


RBAC = {"group": "rbac.authorization.k8s.io", "version": "v1", "resource": "clusterroles",
        "kind": "ClusterRole"}


@pytest.mark.parametrize("name", ["system:aggregate-to-admin", "system:controller:job-controller",
                                  "Admin", "eks:podsecuritypolicy:privileged", "a..b", "x@y+z"])
def test_rbac_objects_are_named_as_the_api_server_names_them(name: str) -> None:
    """Roles and bindings are named by path segment, not as DNS subdomains: a preview that
    touches ``system:aggregate-to-admin`` is recorded, not refused as invalid."""
    target = pv.Target.from_dict({**RBAC, "name": name})
    assert target.name == name
    assert pv.Target.from_dict(target.to_dict()) == target


@pytest.mark.parametrize("name", [".", "..", "a/b", "a%2Fb", "a b", "tab\there", "\u202eevil",
                                  "caf\u00e9", "x" * 254])
def test_an_rbac_name_the_api_server_refuses_or_a_reviewer_could_misread_is_refused(
        name: str) -> None:
    with pytest.raises(pv.PreviewInvalid, match="name"):
        pv.Target.from_dict({**RBAC, "name": name})
    with pytest.raises(pv.PreviewInvalid, match=r"name .* has an invalid form"):
        pv.Target.from_dict({**DEPLOY.to_dict(), "name": "system:aggregate-to-admin"})


def _live(uid: str = "u-1", generation: int | None = 4, rv: str = "999") -> dict[str, object]:
    meta: dict[str, object] = {"uid": uid, "resourceVersion": rv}
    if generation is not None:
        meta["generation"] = generation
    return {"metadata": meta}


def test_binding_compares_generation_so_status_churn_is_not_drift() -> None:
    assert pv.drift(DEPLOY, _live(rv="1234")) is None  # status updates move the rv only


@pytest.mark.parametrize(("live", "says"), [
    (_live(generation=5), "changed since the preview (generation:4 then, generation:5 now)"),
    (_live(uid="u-2"), "was replaced"),
    (None, "was deleted"),
])
def test_binding_catches_every_kind_of_change(live: dict[str, object] | None, says: str) -> None:
    change = pv.drift(DEPLOY, live)
    assert change is not None and says in change.describe()
    assert change.describe().startswith("deployments.apps apps/web")


def test_objects_without_generation_bind_on_resource_version() -> None:
    cm = pv.Target(group="", version="v1", resource="configmaps", kind="ConfigMap",
                   name="conf", namespace="apps", uid="u-9", resource_version="77")
    assert pv.drift(cm, _live("u-9", None, "77")) is None
    assert pv.drift(cm, _live("u-9", None, "78")) is not None
    created = pv.Target(group="", version="v1", resource="configmaps", kind="ConfigMap",
                        name="new", namespace="apps", exists=False, action=pv.Action.CREATE)
    assert pv.drift(created, None) is None
    assert "exists now" in (pv.drift(created, _live()) or pv.Change(created, "")).what


def test_the_binding_of_a_command_comes_from_the_recorded_preview_only() -> None:
    recorded = pv.status(pv.Preview("uid-1", (_cmd(),)), job="j", started="t", completed="t")
    body: dict[str, Any] = {"metadata": {"uid": "uid-1"}, "status": {"preview": recorded}}
    plan = pv.binding(body, "kubectl scale deployment/web --replicas=3 -n apps")
    assert not plan.missing and [t.name for t in plan.targets] == ["web-0"]
    assert "no entry" in pv.binding(body, "kubectl other").unusable
    body["status"]["preview"]["phase"] = "Failed"
    assert "failed" in pv.binding(body, "kubectl scale deployment/web --replicas=3 -n apps").missing
    assert pv.binding({"status": {}}, "x").missing == "the request has no preview"
    gone = {"status": {"conditions": [{"type": "Previewed", "status": "True"}]}}
    assert "gone" in pv.binding(gone, "x").unusable
    assert pv.target_path(DEPLOY) == "/apis/apps/v1/namespaces/apps/deployments/web"


_WEB_ID = "3f2a9c1d" + "0" * 56


@pytest.mark.parametrize(("name", "named"), [
    ("web", True),                # the container of that exact name
    (_WEB_ID, True),              # its whole ID
    (_WEB_ID[:12], True),         # its short ID, as docker ps shows it
    ("3f2a9c1d", False),          # a name no container has, which the engine took as an ID start
    (_WEB_ID[:11], False),        # eleven characters: still not taken for the ID
    ("we", False),
])
def test_a_container_is_the_one_named_only_by_its_exact_name_or_twelve_id_digits(
        name: str, named: bool) -> None:
    state = {"Id": _WEB_ID, "Name": "/web"}
    assert pv.container_named(state, name) is named
