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


@pytest.mark.parametrize(("command", "flags"), [
    # pflag: booleans combined until a flag that takes a value, which takes the rest of the
    # word or the next word; the verb is what follows
    ("docker -Dl debug rm -f web", {"--debug": ("",), "--log-level": ("debug",)}),
    ("docker -DH unix:///x rm -f web", {"--debug": ("",), "--host": ("unix:///x",)}),
    ("docker -Dlinfo rm -f web", {"--debug": ("",), "--log-level": ("info",)}),
])
def test_docker_combined_short_flags_take_their_value_where_pflag_does(
        command: str, flags: dict[str, tuple[str, ...]]) -> None:
    parsed = parse(command)
    assert parsed.action == ("rm",) and parsed.words == ("rm", "web"), parsed
    assert {k: parsed.flag(k) for k in flags} == flags


def test_docker_timeout_takes_its_value() -> None:
    parsed = parse("docker restart --timeout 0 web")
    assert parsed.words == ("restart", "web") and parsed.flag("--timeout") == ("0",)


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


@pytest.mark.parametrize(("command", "words", "flags"), [
    # -p and -f are logs' booleans --previous and --follow; the next word is the pod
    ("kubectl logs -p web -n apps", ("logs", "web"), {"--previous": ("",)}),
    ("kubectl logs -f web -n apps", ("logs", "web"), {"--follow": ("",)}),
    # ... and patch's --patch, proxy's --port
    ("kubectl patch deploy web -p {}", ("patch", "deploy", "web"), {"--patch": ("{}",)}),
    ("kubectl proxy -p 8002 -w /srv", ("proxy",), {"--port": ("8002",), "--www": ("/srv",)}),
    # boolean where the tables had a value
    ("kubectl get pods --show-kind -A", ("get", "pods"),
     {"--show-kind": ("",), "--all-namespaces": ("",)}),
    ("kubectl top pod --containers web", ("top", "pod", "web"), {"--containers": ("",)}),
    ("kubectl config view --raw --context=prod", ("config", "view"),
     {"--raw": ("",), "--context": ("prod",)}),
    ("kubectl logs web --prefix -c app", ("logs", "web"),
     {"--prefix": ("",), "--container": ("app",)}),
    # ... and a value where it is one
    ("kubectl get --raw /healthz", ("get",), {"--raw": ("/healthz",)}),
    ("kubectl set env deploy/web --prefix X_ A=b", ("set", "env", "deploy/web", "A=b"),
     {"--prefix": ("X_",)}),
    # combined short flags, the last one taking the next word or the rest
    ("kubectl exec -itn kube-system web -- sh", ("exec", "web"),
     {"--stdin": ("",), "--tty": ("",), "--namespace": ("kube-system",)}),
    ("kubectl get pods -Aowide", ("get", "pods"),
     {"--all-namespaces": ("",), "--output": ("wide",)}),
    ("kubectl get pods -n=apps", ("get", "pods"), {"--namespace": ("apps",)}),
])
def test_flags_are_read_as_the_command_reads_them(command: str, words: tuple[str, ...],
                                                  flags: dict[str, tuple[str, ...]]) -> None:
    parsed = parse(command)
    assert parsed.words == words
    assert {k: parsed.flag(k) for k in flags} == flags


@pytest.mark.parametrize("number", ["-\u0663", "-\u00b2", "-\uff11"])
def test_only_ascii_digits_make_a_negative_number_not_a_flag(number: str) -> None:
    # str.isdigit also says yes to an Arabic-Indic three, a superscript two, a fullwidth one
    assert parse("kubectl get pods -1").words == ("get", "pods", "-1")
    parsed = parse(f"kubectl get pods {number}")
    assert parsed.words == ("get", "pods") and number in parsed.flags


@pytest.mark.parametrize(("command", "flag"), [
    ("kubectl get pods -o --as=system:admin", "--as"),
    ("kubectl get pods --selector --token=abc", "--token"),
    ("kubectl logs -c --kubeconfig=/tmp/k web", "--kubeconfig"),
])
def test_a_value_flag_before_a_flag_is_also_read_without_its_value(command: str,
                                                                   flag: str) -> None:
    parsed = parse(command)
    assert not parsed.has(flag)  # kubectl's reading: the flag takes the word as its value
    assert any(r.has(flag) for r in parsed.readings)


@pytest.mark.parametrize(("command", "verb", "words"), [
    # cobra takes the word after a flag that is not a global boolean as its value while it
    # looks for the command; the command then reads its own flags
    ("kubectl -i get exec -- sh -c id", "exec", ("exec", "get")),
    ("kubectl -w get proxy", "proxy", ("proxy",)),
    ("kubectl --wait events delete x -n apps", "delete", ("delete", "events", "x")),
    ("kubectl -q version delete ns prod", "delete", ("delete", "version", "ns", "prod")),
    ("kubectl -R ns label prod a=b", "label", ("label", "ns", "prod", "a=b")),
    ("kubectl '' delete ns prod", "delete", ("delete", "ns", "prod")),
    # at a group, the group's own flags count too: --save-config is create's boolean
    ("kubectl create --save-config deploy web --image=x", "create",
     ("create", "deploy", "web")),
])
def test_the_command_cobra_finds_is_one_of_the_readings(command: str, verb: str,
                                                        words: tuple[str, ...]) -> None:
    parsed = parse(command)
    assert verb in parsed.verb_candidates
    assert any(r.words == words for r in parsed.readings), parsed.readings


def test_global_boolean_flags_do_not_take_the_verb() -> None:
    for command in ("kubectl --insecure-skip-tls-verify get pods",
                    "kubectl --warnings-as-errors get pods -n apps",
                    "kubectl -n apps --match-server-version get pods"):
        parsed = parse(command)
        assert [r.verb for r in parsed.readings] == ["get"], parsed.readings


def test_a_command_with_too_many_readings_is_unresolved() -> None:
    flags = " ".join(f"--x{i} v{i}" for i in range(12))
    parsed = parse(f"kubectl get pods {flags}")
    assert parsed.unresolved and len(parsed.readings) <= 2 * 64 + 2
    assert not parse("kubectl get pods --x1 v1 --x2 v2").unresolved
    # a long argv is read in bounded time, and unresolved if it cannot be read every way
    assert parse(("kubectl " + "-o -x " * 700)[:4096]).unresolved
    assert parse("kubectl " + "-x " * 5000 + "get pods").unresolved
