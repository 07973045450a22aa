"""kubectl's and docker's grammar: flags anywhere, with '=' or a separate value, short forms."""

from __future__ import annotations

import pytest

from wingman.review.commands import parse, resource_types


@pytest.mark.parametrize("command", [
    "kubectl -n apps delete ns prod",
    "kubectl --namespace apps delete ns prod",
    "kubectl --namespace=apps delete ns prod",
    "kubectl -napps delete ns prod",
    "kubectl -n=apps delete ns prod",
    "kubectl delete -n apps ns prod",
    "kubectl delete ns -n apps prod",
    "kubectl delete ns prod -n apps",
    "kubectl --context prod -n apps --request-timeout 5s delete ns prod",
    "kubectl -v 9 --as-group=g -s https://x:6443 delete ns prod -n apps",
    "kubectl --kubeconfig=/k --insecure-skip-tls-verify delete --wait ns prod -n apps",
])
def test_the_verb_and_its_arguments_are_found_wherever_the_flags_are(command: str) -> None:
    parsed = parse(command)
    assert parsed.program == "kubectl"
    assert parsed.words == ("delete", "ns", "prod")
    assert parsed.verb == "delete" and parsed.action == ("delete",)
    assert parsed.flag("--namespace") in (("apps",), ())


def test_groups_have_subcommands_and_values_are_normalised() -> None:
    parsed = parse("kubectl -n apps set image deployment/web web=nginx:1 --record")
    assert parsed.action == ("set", "image")
    assert parsed.words == ("set", "image", "deployment/web", "web=nginx:1")
    parsed = parse("kubectl scale --replicas 0 deployment/web")
    assert parsed.flag("--replicas") == ("0",) and parsed.words == ("scale", "deployment/web")
    assert parse("kubectl exec -it web -- rm -rf /").after_dashes == ("rm", "-rf", "/")
    assert parse("kubectl exec -it web -- rm -rf /").words == ("exec", "web")


def test_an_unknown_flag_keeps_both_readings() -> None:
    # --frobnicate may be boolean (the verb is delete) or take 'delete' (the verb is ns).
    for command in ("kubectl --frobnicate delete ns prod", "kubectl -Z delete ns prod"):
        parsed = parse(command)
        assert parsed.verb == "delete" and parsed.ambiguous == ("delete",)
        assert {"delete", "ns"} <= set(parsed.verb_candidates)
    assert parse("kubectl --known=1 delete ns").ambiguous == ()


def test_docker_management_commands_read_as_their_subcommand() -> None:
    parsed = parse("docker -H unix:///x container rm -f db")
    assert parsed.action == ("container", "rm")
    assert parsed.flag("--host") == ("unix:///x",) and parsed.has("--force")


def test_unbalanced_quotes_still_parse() -> None:
    assert parse("kubectl delete ns 'prod").verb == "delete"
    assert parse("").program == ""


@pytest.mark.parametrize(("command", "action"), [
    ("kubectl create deploy web --image=nginx", ("create", "deployment")),
    ("kubectl create cj web --image=x --schedule=@hourly", ("create", "cronjob")),
    ("kubectl create sa robot", ("create", "serviceaccount")),
    ("kubectl create resourcequota q --hard=pods=1", ("create", "quota")),
    ("kubectl -n apps set sa deployment/web robot", ("set", "serviceaccount")),
    ("kubectl top po -A", ("top", "pod")),
    ("kubectl config use prod", ("config", "use-context")),
    ("kubectl create frobnicate x", ("create", "frobnicate")),
])
def test_a_subcommand_reads_by_its_own_name_whichever_alias_names_it(
        command: str, action: tuple[str, ...]) -> None:
    assert parse(command).action == action


@pytest.mark.parametrize(("word", "types"), [
    ("deploy/web", ("deployment",)),
    ("deployments.apps", ("deployment",)),
    ("deployments.v1.apps/web", ("deployment",)),
    ("po,SVC,ns", ("pod", "service", "namespace")),
    ("no", ("node",)),
    ("clusterroles.rbac.authorization.k8s.io", ("clusterrole",)),
    ("CronJobs", ("cronjob",)),
    ("widgets.example.com", ("widgets",)),
])
def test_resource_types_read_short_names_plurals_and_api_groups(
        word: str, types: tuple[str, ...]) -> None:
    assert resource_types(word) == types
