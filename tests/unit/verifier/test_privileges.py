"""The decision part of ``wingman verify-privileges``: SAR answers and pod specs → violations.

No cluster here: the answers are given as a matrix, as the API server would return them. The
live command is tested in ``tests/e2e/test_privileges.py``.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.chart import find, helm, render
from support.ports import refused_port
from support.redirects import redirecting_server
from wingman.verifier import privileges
from wingman.verifier.privileges import token_audiences, verify_privileges_main
from wingman.verifier.rights import (
    CONTENT_DIGEST_ANNOTATION,
    CONTENT_FIELDS,
    RIGHTS,
    Finding,
    Identity,
    Need,
    Question,
    Report,
    Right,
    VerifyError,
    designed,
    dry_run_confinement,
    evaluate,
    executor_audience_problems,
    fixed_identities,
    group_identity,
    inspect_pod_spec,
    missing_admission,
    policy_content_digest,
    questions,
    render_text,
    sa_identity,
)

NS = "wingman-test"
TARGET = "apps"
IMAGE = "ghcr.io/wingman-dev/wingman:0.1.0"
WORKER = group_identity("worker", "wingman:workers")
APPROVER = group_identity("approver", "wingman:approvers")
IDENTITIES = [WORKER, APPROVER, *fixed_identities(NS)]
#: (role, namespace or None for cluster scope, right label)
Triple = tuple[str, str | None, str]


def _right(label: str) -> Right:
    (right,) = [r for r in RIGHTS if r.label == label]
    return right


def _ident(role: str) -> Identity:
    (ident,) = [i for i in IDENTITIES if i.role == role]
    return ident


def _as_designed(extra: Collection[Triple] = ()) -> list[tuple[Question, bool]]:
    """A matrix where exactly the designed rights are allowed, plus ``extra``
    (role, namespace, right label) triples."""
    qs = questions(IDENTITIES, NS, [TARGET], "test")
    return [(q, designed(q.identity.role, q.place, q.right)
             or (q.identity.role, q.namespace, q.right.label) in extra) for q in qs]


def _violations(findings: list[Finding]) -> set[Triple]:
    return {(f.question.identity.role, f.question.namespace, f.question.right.label)
            for f in findings if f.violation}


# --------------------------------------------------------------------------- design


def test_the_designed_matrix_has_no_violations() -> None:
    findings = evaluate(_as_designed())
    assert _violations(findings) == set()
    report = Report(NS, "wingman", "test", [TARGET], IDENTITIES, findings)
    assert report.ok
    assert report.executors(TARGET) == [_ident("executor").label]
    assert report.executors(NS) == [_ident("operator").label]  # create jobs (gateway Jobs)


@pytest.mark.parametrize("extra", [
    # the chat identity relays people's decisions by impersonation: it never decides itself
    ("chat", NS, "patch approvalrequests"),
    ("chat", None, "approve environments {environment}"),
    ("chat", NS, "create executiongrants"),
    ("chat", None, "impersonate users"),  # anyone, not only the mapped people
    ("chat", None, "impersonate users system:admin"),
    ("chat", None, "impersonate groups system:masters"),
    ("chat", None, "impersonate users system:serviceaccount:{namespace}:wingman-gateway"),
    ("worker", NS, "patch approvalrequests"),  # appending decisions
    ("operator", None, "approve environments {environment}"),
    ("worker", TARGET, "patch deployments"),
    ("worker", TARGET, "create pods/exec"),
    ("worker", NS, "create pods"),
    ("worker", NS, "get secrets"),
    ("approver", NS, "create jobs"),
    ("approver", TARGET, "update deployments/scale"),
    ("operator", TARGET, "patch deployments"),  # the operator has no rights in targets
    ("operator", TARGET, "create jobs"),
    ("operator", NS, "create pods"),  # only Jobs, which admission restricts
    ("operator", NS, "create pods/exec"),
    ("operator", NS, "create serviceaccounts/token"),
    ("operator", NS, "create leases"),  # forging burn markers
    ("gateway", NS, "patch deployments"),  # execution only in target namespaces
    ("gateway", TARGET, "patch deployments"),  # the executor acts there, not the gateway
    ("gateway", TARGET, "create pods/exec"),
    ("gateway", TARGET, "create pods/binding"),  # a node of its choosing, past the scheduler
    ("worker", TARGET, "create bindings"),
    ("operator", NS, "create pods/binding"),
    ("executor", NS, "patch executiongrants/status"),  # nothing in the release namespace
    ("executor", NS, "create leases"),
    ("executor", NS, "patch deployments"),
    ("executor", NS, "create serviceaccounts/token wingman-executor"),
    ("executor", TARGET, "get secrets"),
    ("operator", NS, "create serviceaccounts/token wingman-executor"),  # only the gateway
    ("chat", None, "impersonate users system:serviceaccount:{namespace}:wingman-executor"),
    ("gateway", NS, "create jobs"),
    ("gateway", NS, "delete leases"),  # un-burning a token = replay
    ("gateway", TARGET, "get secrets"),  # never by design, not even in targets
    ("gateway", TARGET, "bind roles"),
    ("verifier", NS, "list secrets"),
    ("default-sa", NS, "create pods"),
    ("default-sa", NS, "patch executiongrants/status"),
    # status.preview says which state an approval covers: nobody but the operator writes it
    ("worker", NS, "patch approvalrequests/status"),
    ("approver", NS, "update approvalrequests/status"),
    ("gateway", NS, "patch approvalrequests/status"),
    ("preview", NS, "patch approvalrequests/status"),
    ("any-user", NS, "update configmaps"),  # the gateway's public keys
    ("anonymous", TARGET, "create deployments"),
    ("operator", None, "impersonate users"),
    ("gateway", None, "get nodes/proxy"),
    ("worker", None, "delete validatingadmissionpolicybindings"),
])
def test_any_other_holder_is_a_violation(extra: Triple) -> None:
    findings = evaluate(_as_designed({extra}))
    assert _violations(findings) == {extra}
    report = Report(NS, "wingman", "test", [TARGET], IDENTITIES, findings)
    assert not report.ok
    (message,) = report.violations
    shown = extra[2].replace("{environment}", "test").replace("{namespace}", NS)
    assert message.startswith(f"{_ident(extra[0]).label} may {shown} in ")
    assert report.summary().startswith("FAIL: 1 violations (1 access, 0 pod spec)")


def test_named_questions_name_the_release_objects() -> None:
    qs = questions([_ident("chat")], NS, [TARGET], "prd")
    named = {(q.right.verb, q.right.resource, q.name) for q in qs if q.name}
    assert ("approve", "environments", "prd") in named
    assert ("impersonate", "users", f"system:serviceaccount:{NS}:wingman-operator") in named
    assert ("impersonate", "groups", "system:masters") in named
    # without a known environment the environment's right is not asked (never "all")
    assert not [q for q in questions([WORKER], NS, [], "") if q.right.resource ==
                "environments"]
    assert designed("approver", "cluster", _right("approve environments {environment}"))
    assert not designed("chat", "release", _right("patch approvalrequests"))


def test_designed_holders() -> None:
    assert designed("executor", "target", _right("patch deployments"))
    assert designed("executor", "target", _right("update deployments/scale"))
    assert not designed("gateway", "target", _right("patch deployments"))
    assert not designed("executor", "release", _right("patch executiongrants/status"))
    assert designed("gateway", "release",
                    _right("create serviceaccounts/token wingman-executor"))
    assert designed("gateway", "release", _right("create leases"))
    assert designed("gateway", "release", _right("patch executiongrants/status"))
    assert designed("operator", "release", _right("create jobs"))
    assert designed("operator", "release", _right("get secrets"))
    assert designed("operator", "release", _right("patch approvalrequests/status"))
    assert not designed("operator", "target", _right("create jobs"))
    assert not designed("gateway", "release", _right("patch deployments"))
    assert not designed("worker", "release", _right("create pods"))
    roles = {i.role for i in IDENTITIES}
    for right in RIGHTS:
        for role in roles:
            if right.kind == "escalation":  # nobody, anywhere
                assert not any(designed(role, place, right)
                               for place in ("release", "target", "cluster")), right
            if right.kind == "credentials":  # the operator's Secrets and the gateway's
                assert not designed(role, "target", right), (role, right)  # executor token
                assert designed(role, "release", right) is (
                    (role == "operator" and right.resource == "secrets")
                    or (role == "gateway" and right.name == "wingman-executor")), (role, right)


def test_a_designed_right_that_is_missing_is_not_a_violation() -> None:
    qs = questions(IDENTITIES, NS, [TARGET])
    findings = evaluate((q, False) for q in qs)
    assert not any(f.violation for f in findings)
    gateway_patch = [f for f in findings if f.question.identity.role == "executor"
                     and f.question.namespace == TARGET
                     and f.question.right.label == "patch deployments"]
    assert [(f.expected, f.allowed, f.result) for f in gateway_patch] == [(True, False, "ok")]


def test_questions_cover_every_place_once() -> None:
    targets = ["apps", "web"]
    qs = questions([WORKER], NS, targets, "test")
    per_scope = {s: sum(r.scope == s for r in RIGHTS) for s in ("namespace", "release",
                                                                "cluster")}
    assert len(qs) == (per_scope["namespace"] * (1 + len(targets)) + per_scope["release"]
                       + per_scope["cluster"])
    assert len({(q.namespace, q.right) for q in qs}) == len(qs)
    assert {q.namespace for q in qs if q.right.scope == "cluster"} == {None}
    assert {q.namespace for q in qs if q.right.scope == "release"} == {NS}
    assert {q.place for q in qs if q.namespace == "web"} == {"target"}


def test_service_account_identities_carry_the_groups_the_api_server_gives_them() -> None:
    operator = _ident("operator")
    assert operator.user == f"system:serviceaccount:{NS}:wingman-operator"
    assert set(operator.groups) == {"system:serviceaccounts", f"system:serviceaccounts:{NS}",
                                    "system:authenticated"}
    assert WORKER.user == "" and WORKER.groups == ("wingman:workers", "system:authenticated")


# --------------------------------------------------------------------------- pod specs


def _spec(**kw: Any) -> dict[str, Any]:
    container = {"name": "main", "image": IMAGE}
    container.update(kw.pop("container", {}))
    spec: dict[str, Any] = {"serviceAccountName": "wingman-gateway", "containers": [container],
                            "automountServiceAccountToken": False}
    spec.update(kw)
    return spec


def _problems(spec: dict[str, Any], docker_socket: str | None = None) -> list[str]:
    return [p.problem for p in inspect_pod_spec("pod/x", spec, gateway_image=IMAGE,
                                                docker_socket=docker_socket)]


def test_a_clean_gateway_pod_has_no_problems() -> None:
    assert _problems(_spec(volumes=[{"name": "t", "emptyDir": {}}])) == []


@pytest.mark.parametrize(("spec", "expect"), [
    (_spec(container={"securityContext": {"privileged": True}}), "container main is privileged"),
    (_spec(container={"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
     "adds capabilities SYS_ADMIN"),
    (_spec(hostNetwork=True), "hostNetwork is true"),
    (_spec(hostPID=True), "hostPID is true"),
    (_spec(hostIPC=True), "hostIPC is true"),
    (_spec(volumes=[{"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}]),
     "mounts /var/run/docker.sock (the Docker socket"),
    (_spec(volumes=[{"name": "etc", "hostPath": {"path": "/etc"}}]), "mounts /etc"),
    (_spec(container={"image": "evil:latest"}), "with image evil:latest"),
    (_spec(initContainers=[{"name": "init", "image": "busybox"}]), "with image busybox"),
    (_spec(ephemeralContainers=[{"name": "debug", "image": IMAGE}]), "ephemeral containers"),
])
def test_pod_spec_problems(spec: dict[str, Any], expect: str) -> None:
    problems = _problems(spec)
    assert len(problems) == 1 and expect in problems[0], problems


def _projected(name: str, **token: Any) -> dict[str, Any]:
    return {"name": name, "projected": {"sources": [{"serviceAccountToken": {
        "path": "token", **token}}]}}


@pytest.mark.parametrize(("spec", "expect"), [
    (_spec(automountServiceAccountToken=True), "mounts the automounted ServiceAccount token"),
    (_spec(automountServiceAccountToken=None), "mounts the automounted ServiceAccount token"),
    (_spec(volumes=[_projected("sa", audience="vault", expirationSeconds=600)]),
     "projects a ServiceAccount token for audience vault in volume sa"),
    (_spec(volumes=[_projected("sa", expirationSeconds=601)]),
     "projects a ServiceAccount token that lives 601 s, more than 600 s, in volume sa"),
    (_spec(volumes=[_projected("sa")]), "lives an hour (unset), more than 600 s"),
    (_spec(serviceAccountName="wingman-preview", automountServiceAccountToken=True,
           container={"image": "other"}), "mounts the automounted ServiceAccount token"),
])
def test_gateway_and_preview_pods_hold_only_their_own_short_lived_token(
        spec: dict[str, Any], expect: str) -> None:
    if spec.get("automountServiceAccountToken") is None:
        del spec["automountServiceAccountToken"]
    problems = _problems(spec)
    assert len(problems) == 1 and expect in problems[0], problems


def test_the_operators_own_pods_pass_the_token_check() -> None:
    from wingman.operator.manifests import SERVICE_ACCOUNT_TOKEN_SECONDS, service_account_volume
    from wingman.verifier.rights import POD_TOKEN_SECONDS

    assert POD_TOKEN_SECONDS == SERVICE_ACCOUNT_TOKEN_SECONDS
    assert _problems(_spec(volumes=[service_account_volume()])) == []
    # another account may hold whatever token it likes
    assert _problems(_spec(serviceAccountName="default", automountServiceAccountToken=True,
                           container={"image": "nginx"})) == []


def test_no_pod_runs_as_the_executor_whatever_its_image() -> None:
    (problem,) = _problems(_spec(serviceAccountName="wingman-executor"))
    assert problem.startswith("runs as wingman-executor")


def test_other_service_accounts_may_use_any_image_but_no_host_access() -> None:
    spec = _spec(serviceAccountName="default", container={"image": "nginx"})
    assert _problems(spec) == []
    spec["volumes"] = [{"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}]
    # The docker socket is allowed only to gateway pods, and only when enabled.
    (problem,) = _problems(spec, docker_socket="/var/run/docker.sock")
    assert "Docker socket" in problem
    (p,) = inspect_pod_spec("pod/x", spec, gateway_image=IMAGE)
    assert p.service_account == "default"


def test_the_docker_socket_is_allowed_to_gateway_pods_only_when_enabled() -> None:
    sock = [{"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}]
    assert _problems(_spec(volumes=sock), docker_socket="/var/run/docker.sock") == []
    assert _problems(_spec(volumes=sock), docker_socket="/run/other.sock") != []
    other = [{"name": "root", "hostPath": {"path": "/"}}]
    assert _problems(_spec(volumes=other), docker_socket="/var/run/docker.sock") != []


def test_a_pod_without_service_account_name_runs_as_default() -> None:
    spec = {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]}
    (p,) = inspect_pod_spec("job/j", spec, gateway_image=IMAGE)
    assert (p.obj, p.service_account) == ("job/j", "default")


# --------------------------------------------------------------------------- output


def _report(extra: Collection[Triple] = ()) -> Report:
    return Report(NS, "wingman", "test", [TARGET], IDENTITIES, evaluate(_as_designed(extra)),
                  inspected=["pod/a"])


def test_table_is_aligned_and_ends_with_the_summary() -> None:
    text = render_text(_report({("worker", TARGET, "create pods/exec")}))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("IDENTITY"))
    cols = [lines[header].index(c) for c in ("NAMESPACE", "RIGHT", "ALLOWED", "EXPECTED",
                                              "RESULT")]
    rows = lines[header + 1:header + 1 + len(_report().findings)]
    for row in rows:
        for col in cols:
            assert row[col - 2:col] == "  " and row[col] != " ", row
    bad = [r for r in rows if r.endswith("VIOLATION")]
    assert len(bad) == 1 and bad[0].startswith("worker group/wingman:workers")
    assert "VIOLATIONS (1):" in text
    assert lines[-1].startswith("FAIL: 1 violations")


def test_ok_summary_names_the_executor_as_the_only_one_executing_in_targets() -> None:
    summary = _report().summary()
    assert summary.startswith("OK: ")
    assert f"{TARGET}: executor sa/{NS}/wingman-executor" in summary


def test_json_output_is_complete() -> None:
    data = json.loads(json.dumps(_report({("any-user", None, "impersonate users")}).to_json()))
    assert data["ok"] is False
    assert len(data["violations"]) == 1
    (check,) = [c for c in data["checks"] if c["result"] == "VIOLATION"]
    assert check == {"identity": "any-user system:authenticated", "role": "any-user",
                     "namespace": None, "place": "cluster", "right": "impersonate users",
                     "group": "", "kind": "escalation", "allowed": True,
                     "expected": "denied", "result": "VIOLATION"}


# --------------------------------------------------------------------------- the command


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = verify_privileges_main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("spelt", ["https://127.0.0.1:{port}",
                                   "https://alice:s3/cr3t@127.0.0.1:{port}/?alice=s3cr3t"])
def test_unreachable_api_server_is_a_usage_error(tmp_path: Path, spelt: str) -> None:
    with refused_port() as port:  # nobody listens on it, nor can start to
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": spelt.format(port=port),
                                                   "insecure-skip-tls-verify": True}}],
            "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        }))
        code, out, err = _run("--namespace", NS, "--kubeconfig", str(kubeconfig),
                              "--gateway-image", IMAGE)
    assert code == 2 and out == ""
    assert f"cannot reach the API server at https://{'***@' if '@' in spelt else ''}" \
        f"127.0.0.1:{port}" in err
    assert "KUBECONFIG" in err
    for part in ("not-a-real-token", "alice", "s3", "cr3t"):
        assert part not in err


def test_missing_kubeconfig_and_bad_arguments(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, _, err = _run("--namespace", NS, "--kubeconfig", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err and "KUBECONFIG" in err
    code, _, err = _run("--namespace", NS, "--kubeconfig", str(tmp_path))
    assert code == 2 and f"kubeconfig {tmp_path} is not a regular file" in err
    monkeypatch.setenv("KUBECONFIG", str(tmp_path))
    code, _, err = _run("--namespace", NS)
    assert code == 2 and f"kubeconfig {tmp_path} is not a regular file" in err
    monkeypatch.delenv("KUBECONFIG")
    code, _, err = _run("--namespace", "Not_A_Name")
    assert code == 2 and "--namespace 'Not_A_Name' is not a valid Kubernetes name" in err
    assert _run("--output", "yaml")[0] == 2  # argparse: invalid choice
    assert _run("--help")[0] == 0


def test_a_namespace_file_that_is_no_utf8_text_is_named(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.config import incluster_config

    from wingman.verifier import privileges

    (tmp_path / "token").write_text("not-a-real-token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "namespace").write_bytes(b"\xff\xfewingman")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setattr(privileges, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "namespace")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "9")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    code, _, err = _run()
    assert code == 2
    assert f"the ServiceAccount namespace file {tmp_path / 'namespace'} is not UTF-8" in err
    code, _, err = _run("--namespace", NS)  # not needed: not read
    assert code == 2 and "namespace file" not in err and "cannot reach" in err, err


# --------------------------------------------------------------------------- the chart


def test_helm_test_pod_passes_the_targets_and_the_docker_socket() -> None:
    targets = [{"namespace": "apps"}, {"namespace": "web"}]
    (pod,) = find(render("test", {"gateway.targets": targets}, namespace=NS), "Pod",
                  "wingman-verify-privileges")
    args = pod["spec"]["containers"][0]["args"]
    assert args == ["wingman", "verify-privileges", "--namespace", NS, "--release", "wingman",
                    "--target-namespace", "apps", "--target-namespace", "web"]
    (pod,) = find(render("test", {"gateway.docker.enabled": True}, namespace=NS), "Pod",
                  "wingman-verify-privileges")
    args = pod["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--docker-socket", "/var/run/docker.sock"]


def test_verifier_may_list_rolebindings_in_the_release_namespace_only() -> None:
    objs = render("test", namespace=NS)
    (role,) = find(objs, "Role", "wingman-verifier", NS)
    rbac = [r for r in role["rules"] if "rbac.authorization.k8s.io" in r["apiGroups"]]
    assert rbac == [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"],
                     "verbs": ["list"]}]
    (cluster_role,) = find(objs, "ClusterRole", f"wingman-{NS}-verifier")
    assert cluster_role["rules"] == [
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
         "verbs": ["create"]},
        {"apiGroups": ["admissionregistration.k8s.io"],
         "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings"],
         "verbs": ["get", "list"]}]


@pytest.mark.parametrize("value", ["flase", "disabled", "2", "preview"])
def test_a_preview_setting_that_is_not_understood_is_an_error(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Read as "true", a typo for false would demand the preview's admission policies of a
    # release without previews (or the other way round): say what is wrong instead.
    monkeypatch.setenv("WINGMAN_PREVIEW", value)
    code, out, err = _run("--namespace", NS, "--gateway-image", IMAGE)
    assert code == 2 and out == ""
    assert f"WINGMAN_PREVIEW={value!r} must be true or false" in err
    for accepted in ("true", "yes", "1", "false", "no", "0"):
        assert accepted in err
    assert "--no-preview" in err
    # given on the command line, the setting is not read
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    code, _, err = _run("--namespace", NS, "--gateway-image", IMAGE, "--no-preview")
    assert code == 2 and "does not exist" in err and "WINGMAN_PREVIEW" not in err


def test_the_cli_hands_every_argument_to_verify_privileges(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from wingman.cli import main as cli

    # Options first, as the helm test pod passes them.
    assert cli.main(["verify-privileges", "--namespace", "Bad_Name", "--release", "r"]) == 2
    assert "--namespace 'Bad_Name' is not a valid Kubernetes name" in capsys.readouterr().err
    assert cli.main(["verify-privileges", "--help"]) == 0
    assert "--target-namespace" in capsys.readouterr().out


def test_needs_are_reads_and_asks_and_their_notes_say_why() -> None:
    from wingman.verifier.rights import NEEDS, need_notes

    assert {(n.role, n.label) for n in NEEDS} == {
        ("worker", "create approvalrequests"), ("worker", "get configmaps/wingman-policy"),
        ("approver", "get configmaps/wingman-policy")}
    assert all(n.verb in ("get", "create") and n.resource != "secrets" for n in NEEDS)
    ident = group_identity("worker", "agents")
    (note,) = need_notes([(ident, NEEDS[1])])
    assert note.startswith("worker group/agents cannot get configmaps/wingman-policy: agents")


# --------------------------------------------------------------------------- the preview

PREVIEW_WRITES = {("preview", TARGET, "patch deployments"),
                  ("preview", TARGET, "update deployments/scale")}


def test_the_previews_write_rights_are_by_design_only_while_confined_to_dry_runs() -> None:
    confined = evaluate(_as_designed(PREVIEW_WRITES), confined=["preview"])
    assert _violations(confined) == set()
    report = Report(NS, "wingman", "test", [TARGET], IDENTITIES, confined)
    assert report.ok
    assert report.executors(TARGET) == [_ident("executor").label], "dry runs execute nothing"
    assert "dry runs only" in render_text(report)
    # without the admission policy proven, the same rights are violations
    assert _violations(evaluate(_as_designed(PREVIEW_WRITES))) == PREVIEW_WRITES
    # and being confined never excuses what nobody may hold
    assert _violations(evaluate(_as_designed({("preview", TARGET, "get secrets")}),
                                confined=["preview"])) == {("preview", TARGET, "get secrets")}


def _chart_admission() -> tuple[dict[str, Any], dict[str, Any]]:
    objs = render("test", {"gateway.targets": [{"namespace": TARGET}]}, namespace=NS)
    (policy,) = find(objs, "ValidatingAdmissionPolicy", f"wingman-{NS}-preview-dry-run")
    (binding,) = find(objs, "ValidatingAdmissionPolicyBinding", f"wingman-{NS}-preview-dry-run")
    return policy, binding


USER = f"system:serviceaccount:{NS}:wingman-preview"


def test_the_charts_dry_run_policy_confines_the_preview() -> None:
    policy, binding = _chart_admission()
    assert dry_run_confinement([policy], [binding], USER) == (policy["metadata"]["name"], [])


def _tampered(change: str) -> tuple[dict[str, Any], dict[str, Any]]:
    policy, binding = _chart_admission()
    spec, bspec = policy["spec"], binding["spec"]
    if change == "validation":
        spec["validations"][0]["expression"] = "true"
    elif change == "narrow":
        spec["matchConstraints"]["resourceRules"][0]["resources"] = ["deployments"]
    elif change == "exclude":
        spec["matchConstraints"]["excludeResourceRules"] = [
            {"apiGroups": ["apps"], "apiVersions": ["*"], "operations": ["*"],
             "resources": ["deployments/scale"]}]
    elif change == "ignore":
        spec["failurePolicy"] = "Ignore"
    elif change == "condition":
        spec["matchConditions"].append({"name": "x", "expression": "false"})
    elif change == "warn":
        bspec["validationActions"] = ["Warn"]
    elif change == "selector":
        bspec["matchResources"] = {"namespaceSelector": {"matchLabels": {"only": "here"}}}
    elif change == "unbound":
        bspec["policyName"] = "something-else"
    elif change == "stale":
        policy["metadata"]["generation"] = 2
        policy["status"] = {"observedGeneration": 1}
    return policy, binding


@pytest.mark.parametrize(("change", "why"), [
    ("validation", "no validation requires request.dryRun"),
    ("narrow", "does not match every operation on every resource"),
    ("exclude", "excludeResourceRules narrows it"),
    ("ignore", "failurePolicy is Ignore"),
    ("condition", "not exactly the user name check"),
    ("warn", "no binding denies"),
    ("selector", "no binding denies"),
    ("unbound", "no binding uses it"),
    ("stale", "has not loaded its current version"),
])
def test_a_weakened_dry_run_policy_proves_nothing(change: str, why: str) -> None:
    policy, binding = _tampered(change)
    name, problems = dry_run_confinement([policy], [binding], USER)
    assert name is None and why in problems[0], problems
    assert dry_run_confinement([], [], USER)[1] == [
        f"no ValidatingAdmissionPolicy refuses {USER} requests that are not dry runs"]


def _gateway_writes(audiences: list[str] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {"gateway.targets": [{"namespace": TARGET}]}
    if audiences is not None:
        values["admission.executorTokenAudiences"] = audiences
    objs = render("test", values, namespace=NS)
    (policy,) = find(objs, "ValidatingAdmissionPolicy", f"wingman-{NS}-gateway-writes")
    return policy


def _jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def test_the_audiences_of_a_service_account_token_are_read_off_its_claims() -> None:
    assert token_audiences(_jwt({"aud": ["https://a", "https://b"], "sub": "x"})) == [
        "https://a", "https://b"]
    assert token_audiences(_jwt({"aud": "https://a"}) + "\n") == ["https://a"]
    assert token_audiences("not a token") == []
    assert token_audiences("a.%%%.c") == []
    assert token_audiences(_jwt({"sub": "x"})) == []


def test_executor_tokens_for_the_api_servers_audiences_pass_with_the_chart_defaults() -> None:
    policy = _gateway_writes()
    assert executor_audience_problems(
        [policy], NS, ["https://kubernetes.default.svc.cluster.local"]) == []
    # unknown audiences (not run in a pod): nothing to say
    assert executor_audience_problems([policy], NS, []) == []


def test_an_api_server_with_other_audiences_is_a_violation_naming_the_value_to_set() -> None:
    gke = "https://container.googleapis.com/v1/projects/p/locations/l/clusters/c"
    policy = _gateway_writes()
    (problem,) = executor_audience_problems([policy], NS, [gke])
    assert policy["metadata"]["name"] in problem and "ExecutorTokenUnavailable" in problem
    assert f'admission.executorTokenAudiences to ["{gke}"]' in problem
    # once the value lists it, the release agrees with its cluster
    assert executor_audience_problems([_gateway_writes([gke])], NS, [gke]) == []
    # another release's policy says nothing about this one's
    assert executor_audience_problems([policy], "elsewhere", [gke]) == []


def test_a_report_with_a_configuration_problem_fails() -> None:
    report = _report()
    assert report.ok
    report.config_problems.append("executor tokens would be refused")
    assert not report.ok and "executor tokens would be refused" in report.violations
    assert "1 configuration" in report.summary()
    assert report.to_json()["configProblems"] == ["executor tokens would be refused"]
    assert "executor tokens would be refused" in render_text(report)


def test_the_release_admission_policies_must_all_be_there_and_deny() -> None:
    for preview in (True, False):
        objs = render("test", {"policy.preview.enabled": preview}, namespace=NS)
        policies = find(objs, "ValidatingAdmissionPolicy")
        bindings = find(objs, "ValidatingAdmissionPolicyBinding")
        assert missing_admission(policies, bindings, NS, preview=preview) == []
    # a release without previews has no preview policies: verify-privileges expecting them
    # says how to tell it
    (problem, *_) = missing_admission(policies, bindings, NS, preview=True)
    assert problem.startswith(f"ValidatingAdmissionPolicy wingman-{NS}-preview-pods of the "
                              "release is missing")
    assert "--no-preview" in problem
    name = f"wingman-{NS}-executor-workloads"
    without = [b for b in bindings if b["metadata"]["name"] != name]
    assert missing_admission(policies, without, NS, preview=False) == [
        f"ValidatingAdmissionPolicyBinding {name} of the release is missing: policy {name} is "
        "not enforced; restore it with `helm upgrade` of the release (same values), and find "
        "out who removed or changed it"]
    warn = [{**b, "spec": {**b["spec"], "validationActions": ["Warn", "Audit"]}}
            if b["metadata"]["name"] == name else b for b in bindings]
    (disarmed,) = missing_admission(policies, warn, NS, preview=False)
    assert disarmed.startswith(f"ValidatingAdmissionPolicyBinding {name} has "
                               "validationActions ['Warn', 'Audit'], without Deny")
    gone = [p for p in policies if p["metadata"]["name"] != name]
    (missing,) = missing_admission(gone, bindings, NS, preview=False)
    assert missing.startswith(f"ValidatingAdmissionPolicy {name} of the release is missing")
    # another release's policies say nothing about this one's
    assert len(missing_admission(policies, bindings, "elsewhere", preview=False)) == 24


def test_a_release_admission_policy_that_fails_open_or_matches_less_is_disarmed() -> None:
    objs = render("test", {"policy.preview.enabled": False}, namespace=NS)
    policies = find(objs, "ValidatingAdmissionPolicy")
    bindings = find(objs, "ValidatingAdmissionPolicyBinding")
    name = f"wingman-{NS}-executor-workloads"
    grants = f"wingman-{NS}-executiongrants"

    def policy(target: str, **spec: Any) -> list[dict[str, Any]]:
        return [{**p, "spec": {**p["spec"], **spec}} if p["metadata"]["name"] == target else p
                for p in policies]

    def binding(target: str, **spec: Any) -> list[dict[str, Any]]:
        return [{**b, "spec": {**b["spec"], **spec}} if b["metadata"]["name"] == target else b
                for b in bindings]

    # as the API server returns them (defaults filled in), the release's own pass
    read_back = [{**b, "spec": {**b["spec"], "matchResources": {
        "matchPolicy": "Equivalent", "objectSelector": {}, "namespaceSelector": {},
        **b["spec"].get("matchResources", {})}}} for b in bindings]
    assert missing_admission(policies, read_back, NS, preview=False) == []

    (ignore,) = missing_admission(policy(name, failurePolicy="Ignore"), bindings, NS,
                                  preview=False)
    assert ignore.startswith(f"ValidatingAdmissionPolicy {name} has failurePolicy Ignore, "
                             "not Fail: an expression that cannot be evaluated admits")
    (excluded, content) = missing_admission(policy(name, matchConstraints={
        **policies[0]["spec"]["matchConstraints"], "objectSelector": {},
        "excludeResourceRules": [{"apiGroups": ["apps"], "apiVersions": ["*"],
                                  "operations": ["*"], "resources": ["deployments"]}]}),
        bindings, NS, preview=False)
    assert excluded.startswith(f"ValidatingAdmissionPolicy {name} narrows what it matches "
                               "(matchConstraints.excludeResourceRules)")
    assert content.startswith(f"ValidatingAdmissionPolicy {name}: content differs from the "
                              "chart")
    params = policy(name, paramKind={"apiVersion": "v1", "kind": "ConfigMap"})
    (param_kind,) = missing_admission(params, bindings, NS, preview=False)
    assert param_kind.startswith(f"ValidatingAdmissionPolicy {name} has a paramKind")
    (param_ref,) = missing_admission(policies, binding(name, paramRef={
        "name": "none", "parameterNotFoundAction": "Allow"}), NS, preview=False)
    assert param_ref.startswith(f"ValidatingAdmissionPolicyBinding {name} has a paramRef")
    narrowed = {
        "objectSelector": {"matchLabels": {"nobody": "has-this"}},
        "excludeResourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
                                  "operations": ["*"], "resources": ["*"]}],
        "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["*"],
                           "resources": ["configmaps"]}],
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}},
    }
    for key, value in narrowed.items():
        for target in (name, grants):
            (problem,) = missing_admission(policies, binding(target, matchResources={
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}}
                if target == grants and key != "namespaceSelector" else {},
                key: value}), NS, preview=False)
            assert problem.startswith(f"ValidatingAdmissionPolicyBinding {target} narrows "
                                      f"what it matches (matchResources.{key})"), problem
    # the executor's workloads are guarded in every namespace, not only the release's
    (only_here,) = missing_admission(policies, binding(name, matchResources={
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}}}), NS,
        preview=False)
    assert only_here.startswith(f"ValidatingAdmissionPolicyBinding {name} narrows")


#: Strings and numbers on which Go's encoding/json (Helm's toJson) and Python's json differ
#: unless the digest takes care: HTML characters, line and paragraph separators, control
#: characters, non-ASCII, astral characters, key order, whole and fractional numbers.
_AWKWARD_SPECS: list[dict[str, Any]] = [
    {"validations": [{"expression": "a < b && c > d", "message": "x & y"}]},
    {"validations": [{"expression": "'\u2028' + '\u2029'", "reason": "Invalid"}],
     "failurePolicy": "Fail"},
    {"variables": [{"name": "ctl", "expression": "'\x01\x1f\x7f\b\f\n\r\t\"\\\\'"}]},
    {"auditAnnotations": [{"key": "é", "valueExpression": "'日本 🙂 \u00a0 \ufeff'"}]},
    {"matchConditions": [{"name": "B", "expression": "true"}, {"name": "a", "expression": "1"}],
     "matchConstraints": {"resourceRules": [{"resources": ["x"], "apiGroups": [""],
                                             "operations": ["*"], "apiVersions": ["v1"]}],
                          "Z": 600, "b": 1.5, "ä": True, "a": None}},
    {},
]


def test_the_content_digest_is_byte_for_byte_the_charts(tmp_path: Path) -> None:
    """The chart computes each policy's digest with Helm (``toJson | sha256sum``) and the
    verifier recomputes it in Python: both must hash the very same bytes, whatever the
    policy's strings hold."""
    chart = tmp_path / "digest"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: digest\nversion: 0.1.0\n")
    fields = " ".join(json.dumps(f) for f in CONTENT_FIELDS)
    (chart / "templates" / "digests.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: digests\ndata:\n"
        "{{- range $i, $spec := .Values.specs }}\n"
        f"  d{{{{ $i }}}}: {{{{ pick $spec {fields} | toJson | sha256sum | quote }}}}\n"
        "{{- end }}\n")
    values = tmp_path / "values.json"
    # JSON is YAML, but YAML takes neither raw control characters nor escaped surrogates
    text = json.dumps({"specs": _AWKWARD_SPECS}, ensure_ascii=False)
    values.write_text("".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text),
                      encoding="utf-8")
    out = helm("template", "d", str(chart), "-f", str(values)).stdout
    (cm,) = [d for d in yaml.safe_load_all(out) if d]
    assert cm["data"] == {f"d{i}": policy_content_digest(spec)
                          for i, spec in enumerate(_AWKWARD_SPECS)}


def test_a_release_admission_policy_whose_content_differs_from_the_chart_is_reported() -> None:
    """A policy present, failing closed and bound with Deny may still enforce nothing: an
    expression edited to "true", a validation removed, a match condition that never holds,
    a variable changed. Its content digest, rendered by the chart, says so."""
    objs = render("test", {"policy.preview.enabled": True}, namespace=NS)
    policies = find(objs, "ValidatingAdmissionPolicy")
    bindings = find(objs, "ValidatingAdmissionPolicyBinding")
    name = f"wingman-{NS}-gateway-pods"
    (original,) = [p for p in policies if p["metadata"]["name"] == name]
    spec = original["spec"]

    # as the API server returns them, with its defaults filled in, the chart's own pass
    def read_back(p: dict[str, Any]) -> dict[str, Any]:
        match = p["spec"]["matchConstraints"]
        return {**p, "spec": {**p["spec"], "matchConstraints": {
            "matchPolicy": "Equivalent", "namespaceSelector": {}, "objectSelector": {},
            **match, "resourceRules": [{"scope": "*", **r} for r in match["resourceRules"]]}}}
    assert missing_admission([read_back(p) for p in policies], bindings, NS,
                             preview=True) == []

    first, *rest = spec["validations"]
    condition = spec["matchConditions"][0]
    variable = spec["variables"][0]
    edits: dict[str, dict[str, Any]] = {
        "expression true": {"validations": [{**first, "expression": "true"}, *rest]},
        "validation removed": {"validations": rest},
        "match condition never holds": {"matchConditions": [
            {**condition, "expression": "false"}]},
        "match condition removed": {"matchConditions": []},
        "variable changed": {"variables": [{**variable, "expression": "[]"},
                                           *spec["variables"][1:]]},
        "audit annotation added": {"auditAnnotations": [{"key": "k",
                                                          "valueExpression": "'v'"}]},
        "operation dropped": {"matchConstraints": {**spec["matchConstraints"], "resourceRules": [
            {**r, "operations": ["UPDATE"]} for r in spec["matchConstraints"]["resourceRules"]]}},
        "exact match policy": {"matchConstraints": {**spec["matchConstraints"],
                                                    "matchPolicy": "Exact"}},
        "message changed": {"validations": [{**first, "message": "ok"}, *rest]},
    }
    for what, change in edits.items():
        edited = [read_back({**p, "spec": {**spec, **change}}) if p is original else p
                  for p in policies]
        (problem,) = missing_admission(edited, bindings, NS, preview=True)
        assert problem.startswith(
            f"ValidatingAdmissionPolicy {name}: content differs from the chart (its "
            "matchConstraints, matchConditions, variables, validations, auditAnnotations do "
            f"not hash to its annotation {CONTENT_DIGEST_ANNOTATION})"), what
        assert problem.endswith("restore it with `helm upgrade` of the release (same values), "
                                "and find out who removed or changed it"), what
    # the annotation edited along with the content does not hide it
    unannotated = [{**p, "metadata": {**p["metadata"], "annotations": {}}} if p is original
                   else p for p in policies]
    (problem,) = missing_admission(unannotated, bindings, NS, preview=True)
    assert problem.startswith(f"ValidatingAdmissionPolicy {name}: content differs from the "
                              f"chart (it has no annotation {CONTENT_DIGEST_ANNOTATION})")
    assert "an older chart installed it" in problem


def test_an_exec_plugin_that_fails_is_a_usage_error_not_anonymous_questions(
        tmp_path: Path) -> None:
    # the kubernetes library only logs the plugin's failure: every SelfSubjectAccessReview
    # would be asked as system:anonymous and answered "denied" (a report that looks clean)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": "false",
            "interactiveMode": "Never"}}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }))
    code, out, err = _run("--namespace", NS, "--kubeconfig", str(kubeconfig),
                          "--gateway-image", IMAGE)
    assert code == 2 and out == ""
    assert "credentials from the command 'false', which failed" in err


def test_a_policy_edited_along_with_its_annotation_is_reported_from_the_charts_digests() -> None:
    """Whoever may edit a policy may edit its annotation too: the helm test pod carries the
    digests the release's chart rendered, and a policy whose content and annotation were both
    edited differs from them."""
    objs = render("test", {"policy.preview.enabled": True}, namespace=NS)
    policies = find(objs, "ValidatingAdmissionPolicy")
    bindings = find(objs, "ValidatingAdmissionPolicyBinding")
    (pod,) = find(objs, "Pod", "wingman-verify-privileges")
    (env,) = [e for e in pod["spec"]["containers"][0]["env"]
              if e["name"] == "WINGMAN_POLICY_DIGESTS"]
    digests = json.loads(env["value"])
    assert digests == {p["metadata"]["name"]: p["metadata"]["annotations"][
        CONTENT_DIGEST_ANNOTATION] for p in policies}
    assert missing_admission(policies, bindings, NS, preview=True, digests=digests) == []

    name = f"wingman-{NS}-executor-workloads"
    (original,) = [p for p in policies if p["metadata"]["name"] == name]
    spec = {**original["spec"], "validations": original["spec"]["validations"][1:]}
    edited = {**original, "spec": spec, "metadata": {**original["metadata"], "annotations": {
        CONTENT_DIGEST_ANNOTATION: policy_content_digest(spec)}}}
    tampered = [edited if p is original else p for p in policies]
    assert missing_admission(tampered, bindings, NS, preview=True) == []
    (problem,) = missing_admission(tampered, bindings, NS, preview=True, digests=digests)
    assert problem.startswith(
        f"ValidatingAdmissionPolicy {name}: content differs from the chart (its "
        "matchConstraints, matchConditions, variables, validations, auditAnnotations do not "
        "hash to the digest of the release's chart, though they hash to its annotation "
        f"{CONTENT_DIGEST_ANNOTATION})"), problem


def test_the_chat_state_policy_the_chart_rendered_must_be_there_and_deny() -> None:
    """The chat state's policy exists only with chat enabled: the helm test's digests name it,
    so a release that lost it (or its binding) fails the test."""
    chat = {"chat.enabled": True,
            "chat.webhook": {"enabled": True, "url": "https://hooks.example.com/wingman"}}
    objs = render("test", chat, namespace=NS)
    policies = find(objs, "ValidatingAdmissionPolicy")
    bindings = find(objs, "ValidatingAdmissionPolicyBinding")
    (pod,) = find(objs, "Pod", "wingman-verify-privileges")
    (env,) = [e for e in pod["spec"]["containers"][0]["env"]
              if e["name"] == "WINGMAN_POLICY_DIGESTS"]
    digests = json.loads(env["value"])
    name = f"wingman-{NS}-chat-state"
    assert name in digests
    assert missing_admission(policies, bindings, NS, preview=True, digests=digests) == []
    gone = [p for p in policies if p["metadata"]["name"] != name]
    (missing,) = missing_admission(gone, bindings, NS, preview=True, digests=digests)
    assert missing.startswith(f"ValidatingAdmissionPolicy {name} of the release is missing")
    unbound = [b for b in bindings if b["metadata"]["name"] != name]
    (missing,) = missing_admission(policies, unbound, NS, preview=True, digests=digests)
    assert missing.startswith(f"ValidatingAdmissionPolicyBinding {name} of the release is "
                              "missing")


@pytest.mark.parametrize("digests", ['{"p": "not-a-digest"}', "[]", "{"])
def test_policy_digests_that_are_not_the_charts_are_a_usage_error(digests: str) -> None:
    code, out, err = _run("--namespace", NS, "--gateway-image", IMAGE,
                          "--policy-digests", digests)
    assert code == 2 and out == ""
    assert "--policy-digests ($WINGMAN_POLICY_DIGESTS) is not the chart's digests" in err


@pytest.mark.parametrize("read", ["pods", "deployment", "rolebindings", "review"])
def test_the_verifiers_reads_follow_no_redirect(tmp_path: Path, read: str) -> None:
    """An answer that redirects (which an API server never sends: a proxy, another service at
    the address) is not followed to wherever it points: the verifier's reads and reviews are
    ``wingman.kube``'s bounded request, and the error names the status, what was asked, and
    what to check."""
    answer = {"kind": "List", "items": [], "status": {"allowed": True},
              "spec": {"template": {"spec": {"containers": []}}}}
    with redirecting_server(answer) as (url, followed):
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": url}}],
            "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u",
                                                   "namespace": NS}}],
            "current-context": "c"}))
        cluster, _ = privileges._connect(str(kubeconfig))
        try:
            with pytest.raises(VerifyError) as info:
                if read == "pods":
                    cluster.pod_specs(NS)
                elif read == "deployment":
                    cluster.operator_gateway_image(NS)
                elif read == "rolebindings":
                    cluster.rolebindings(NS, "wingman")
                else:
                    cluster.has(sa_identity("operator", NS, "wingman-operator"),
                                Need("operator", "get", "pods", "", "", "a read"), NS)
        finally:
            cluster.api.close()
    assert followed == [], "followed the redirect"
    assert "302" in info.value.message and "never answers" in info.value.message
    assert info.value.reason == "UnusableAnswer"
    assert "not-a-real-token" not in info.value.message
