"""What the documentation says a user can type or will see, checked against the code: the
commands and options of ``wingman``/``kubectl wingman`` the docs use, the exit codes table, the
status protocol's states, and the CRDs' names and printer columns."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from wingman.audit.witness import witness_main
from wingman.cli import main as cli
from wingman.cli.requests import EXIT_CODES
from wingman.client import status as st
from wingman.verifier.privileges import _parser as verify_privileges_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
        REPO / "charts" / "wingman" / "README.md"]
AGENTS = REPO / "docs" / "agents.md"
API = REPO / "docs" / "api.md"


def _commands() -> dict[tuple[str, ...], set[str]]:
    """Every command path of the CLI with its options (the two commands with a parser of their
    own included)."""
    tree: dict[tuple[str, ...], set[str]] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        options: set[str] = set()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))
            else:
                options.update(action.option_strings)
        tree[path] = options

    walk(cli._parser(), ())
    walk(verify_privileges_parser(), ("verify-privileges",))
    usage = io.StringIO()
    with contextlib.redirect_stdout(usage), pytest.raises(SystemExit):
        witness_main(["--help"])
    tree[("audit", "witness")] = set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)",
                                                usage.getvalue()))
    return tree


def _uses(text: str) -> list[tuple[int, tuple[str, ...], list[str]]]:
    """Each ``wingman <command> ...`` the text shows in code, with the options typed after it
    (on the same line, or continued with a backslash; not inside quotes)."""
    commands = _commands()
    found = []
    lines = re.sub(r"\\\n\s*", " ", text).splitlines()
    for n, line in enumerate(lines, 1):
        for m in re.finditer(r"(?:kubectl[ -]wingman|(?<![\w/.-])wingman)((?: [a-z][a-z-]*)+)",
                             line):
            path: tuple[str, ...] = ()
            for word in m.group(1).split():
                if (*path, word) not in commands:
                    break
                path = (*path, word)
            if not path:
                continue
            rest = re.split(r"`|\s#|\|", line[m.end():])[0]
            rest = re.sub(r'"[^"]*"|\'[^\']*\'', "", rest)
            found.append((n, path, re.findall(r"(?<![\w-])(--?[a-zA-Z][a-zA-Z0-9-]*)", rest)))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_the_options_the_docs_type_are_the_commands_options(doc: Path) -> None:
    commands = _commands()
    wrong = [f"{doc.name}:{n}: {' '.join(path)} {option}"
             for n, path, options in _uses(doc.read_text()) for option in options
             if option not in commands[path]]
    assert not wrong, "options the command does not take"


def test_the_option_check_sees_commands_and_options() -> None:
    uses = _uses('`kubectl wingman exec req-1 --command "kubectl get pods -n x" --wait`\n'
                 "wingman audit verify f \\\n    --checkpoints c --bogus\n")
    assert uses == [(1, ("exec",), ["--command", "--wait"]),
                    (2, ("audit", "verify"), ["--checkpoints", "--bogus"])]


def test_the_exit_codes_table_is_the_clis() -> None:
    section = AGENTS.read_text().split("\nExit codes:\n", 1)[1].strip().split("\n\n", 1)[0]
    documented = [int(code) for code in re.findall(r"^\| (\d+) \|", section, re.M)]
    assert documented == sorted(EXIT_CODES)


def test_the_states_table_is_the_status_protocols() -> None:
    section = AGENTS.read_text().split("\nThe states:\n", 1)[1].strip().split("\n\n", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert sorted(documented) == sorted(state.value for state in st.State)


def _crd(name: str) -> dict[str, object]:
    return yaml.safe_load((REPO / "crds" / f"{name}.wingman.dev.yaml").read_text())  # type: ignore[no-any-return]


def _columns(crd: dict[str, object], wide: bool) -> list[str]:
    (version,) = crd["spec"]["versions"]  # type: ignore[index]
    return [c["name"].upper() for c in version["additionalPrinterColumns"]
            if bool(c.get("priority", 0)) == wide]


def test_api_md_names_the_crds_short_names_and_printer_columns() -> None:
    text = API.read_text()
    ar, eg = _crd("approvalrequests"), _crd("executiongrants")
    for crd in (ar, eg):
        names = crd["spec"]["names"]  # type: ignore[index]
        row = f"| `{names['kind']}` | `{names['plural']}` | `{names['shortNames'][0]}` | " \
              f"`{names['categories'][0]}` | Namespaced | yes |"
        assert row in text
    header = re.search(r"^\$ kubectl get ar -n wingman-test\n(NAME .*)$", text, re.M)
    assert header is not None and header.group(1).split() == ["NAME", *_columns(ar, False)]
    adds = re.search(r"kubectl get ar -n wingman-test -o wide +# adds (.*)$", text, re.M)
    assert adds is not None
    assert sorted(re.findall(r"[A-Z]+", adds.group(1))) == sorted(_columns(ar, True))
    eg_line = re.search(r"kubectl get eg -n wingman-test +# (.*) \(\+ (.*) with -o wide\)$",
                        text, re.M)
    assert eg_line is not None
    assert re.findall(r"[A-Z]+", eg_line.group(1)) == _columns(eg, False)
    assert sorted(re.findall(r"[A-Z]+", eg_line.group(2))) == sorted(_columns(eg, True))


def _code_text() -> str:
    """The source the docs' names may come from: the package, the chart, the CI scripts."""
    roots = [REPO / "operator" / "wingman", REPO / "charts" / "wingman" / "templates",
             REPO / ".ci", REPO / "tests" / "support"]
    files = [f for root in roots for f in root.rglob("*") if f.is_file()
             and f.suffix in ("", ".py", ".yaml", ".tpl", ".sh", ".json")]
    return "\n".join(f.read_text(errors="replace") for f in [*files, REPO / "Makefile"])


#: Variables the docs name that Wingman does not read: the agent's own, in an MCP client's
#: configuration.
NOT_READ = {"WINGMAN_MCP_TOKEN"}


def test_every_environment_variable_the_docs_name_is_read_or_set_somewhere() -> None:
    code = set(re.findall(r"\bWINGMAN_[A-Z0-9_]*[A-Z0-9]", _code_text()))
    named = {(doc.name, var) for doc in DOCS
             for var in re.findall(r"\bWINGMAN_[A-Z0-9_]*[A-Z0-9]", doc.read_text())}
    assert {(doc, var) for doc, var in named if var not in code | NOT_READ} == set()


def _series() -> set[str]:
    from wingman.chat.metrics import ChatMetrics
    from wingman.operator.metrics import Metrics

    names = set()
    for registry in (Metrics().registry, ChatMetrics().registry):
        for metric in registry.collect():
            names.add(metric.name + ("_total" if metric.type == "counter" else ""))
            if metric.type == "histogram":
                names.update(metric.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_every_metric_the_docs_name_is_exported() -> None:
    """Anywhere in the docs, not only the runbook's table: a wingman_* name is a series the
    operator or the chat component exports (or a prefix of some, ``wingman_chat_*``), or a
    name of the code's own (the PostgreSQL sink's roles and triggers)."""
    series, code = _series(), _code_text()
    wrong = set()
    for doc in DOCS:
        for name in re.findall(r"\bwingman_[a-z0-9_]+", doc.read_text()):
            if name in series or (name.endswith("_") and any(s.startswith(name) for s in series)):
                continue
            if not name.endswith(("_total", "_seconds", "_bucket", "_sum", "_count")) \
                    and re.search(rf"\b{name}\b", code):
                continue
            wrong.add((doc.name, name))
    assert wrong == set()


#: Wingman* names in the docs that are no alert: the Python client's class, and the example of
#: metrics.prometheusRule.extraRules.
NOT_ALERTS = {"WingmanClient", "WingmanNoVotes"}


def test_every_alert_the_docs_name_is_a_rule_of_the_chart() -> None:
    rules = (REPO / "charts" / "wingman" / "templates" / "prometheusrule.yaml").read_text()
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", rules, re.M))
    assert len(alerts) > 10
    named = {(doc.name, name) for doc in DOCS
             for name in re.findall(r"\bWingman[A-Z][A-Za-z]+", doc.read_text())}
    assert {(doc, name) for doc, name in named if name not in alerts | NOT_ALERTS} == set()


#: Dotted names in code spans that start like a value but are something else: Slack's API
#: methods.
NOT_VALUES = {"chat.postMessage", "chat.getPermalink", "chat.update"}


def _value_exists(schema: dict[str, Any], path: list[str]) -> bool:
    def resolved(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref", "")
        return schema["definitions"][ref.rsplit("/", 1)[1]] if ref else node

    node = schema
    for part in path:
        key = part.split("[", 1)[0]
        node = resolved(node)
        properties = node.get("properties") or {}
        if key in properties:
            node = properties[key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif node.get("type") == "object" and not properties:
            return True  # free-form (labels, resources, ...)
        else:
            return False
        node = resolved(node)
        if node.get("type") == "array":  # `targets[].rules` and `targets.rules` alike
            node = node.get("items") or {}
    return True


@pytest.mark.parametrize("doc", [d for d in DOCS if d.name != "architecture.md"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_value_the_docs_name_is_in_the_charts_schema(doc: Path) -> None:
    """A dotted name in code (`operator.allocator`, `gateway.targets[].rules`) that starts with
    a top-level value is a value of the chart (a module of the package, `operator.approvals`,
    is not)."""
    import json

    schema = json.loads((REPO / "charts" / "wingman" / "values.schema.json").read_text())
    tops = set(schema["properties"])
    wrong = []
    for n, line in enumerate(doc.read_text().splitlines(), 1):
        for span in re.findall(r"`([^`]+)`", line):
            for name in re.findall(r"(?<![\w./-])([a-z][A-Za-z0-9]*(?:\[[^\]]*\])?"
                                   r"(?:\.[A-Za-z][A-Za-z0-9_-]*(?:\[[^\]]*\])?)+)", span):
                parts = name.split(".")
                if parts[0].split("[")[0] not in tops or name in NOT_VALUES or "_" in name \
                        or name.endswith((".md", ".py", ".yaml", ".json")) \
                        or (REPO / "operator" / "wingman" / f"{'/'.join(parts)}.py").exists():
                    continue
                if not _value_exists(schema, parts):
                    wrong.append(f"{doc.name}:{n}: {name}")
    assert wrong == []


def test_every_key_of_a_status_answer_is_in_the_status_protocols_table() -> None:
    full = st.Status(
        st.State.SUCCEEDED, "done", kind="ExecutionGrant", name="n", namespace="ns", phase="p",
        reason="r", message="m", by="b", approvals=st.Approvals(1, 1, ("b",)),
        expires_at="t", environment="test", requester="u", instruction="i",
        commands=(st.CommandState("c", "g", st.State.SUCCEEDED),),
        review=st.Review("Approve", "low", 1, 0, 0), source={"agent": "a"},
        preview={"phase": "Succeeded"}, request="r", command="c", exit_code=0, output="o",
        output_sha256="s", waited_seconds=1.0)
    keys = set(full.to_dict()) | set(st.Status(st.State.RUNNING, "wait").to_dict())
    text = AGENTS.read_text()
    section = text.split("\n## The status protocol\n", 1)[1].split("\nThe states:\n", 1)[0]
    documented = {key for row in re.findall(r"^\|.*\|$", section, re.M)
                  for key in re.findall(r"`([a-z_0-9]+)`", row)}
    assert keys - documented == set(), "answered, but not in agents.md's status protocol table"


def test_api_md_lists_every_key_of_the_policy_file() -> None:
    values = yaml.safe_load((REPO / "charts" / "wingman" / "values.yaml").read_text())
    text = API.read_text()
    listed = text.split("keys as in\n  `values.yaml` (", 1)[1].split(").\n", 1)[0]
    top = re.sub(r"\{[^}]*\}", "", listed)
    assert sorted(re.findall(r"`(\w+)", top)) == sorted(values["policy"])
    for key in ("preview", "panel"):
        nested = re.search(rf"`{key}: \{{([^}}]*)\}}`", listed)
        assert nested is not None and sorted(re.findall(r"\w+", nested.group(1))) == sorted(
            values["policy"][key]), key


def test_audit_md_explains_every_kind_of_problem_verify_reports() -> None:
    from wingman.audit.verification import ProblemKind

    text = (REPO / "docs" / "audit.md").read_text()
    section = text.split("\n| Kind | Meaning |\n", 1)[1].split("\n\n", 1)[0]
    documented = re.findall(r"^\| `([A-Za-z]+)` \|", section, re.M)
    assert sorted(documented) == sorted(kind.value for kind in ProblemKind)


def test_api_md_gives_the_phases_the_crds_allow() -> None:
    text = API.read_text()

    def phases(crd: dict[str, object]) -> list[str]:
        (version,) = crd["spec"]["versions"]  # type: ignore[index]
        return list(version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
            "phase"]["enum"])

    ar_row = re.search(r"^\| `phase` \| ((?:`\w+`, )*`\w+`)\.", text, re.M)
    assert ar_row is not None
    assert re.findall(r"`(\w+)`", ar_row.group(1)) == phases(_crd("approvalrequests"))
    eg = text.split("\n## ExecutionGrant\n", 1)[1]
    listed = eg.split("status: `phase` (", 1)[1].split("), `reason`", 1)[0]
    listed = re.sub(r"\([^()]*\)", "", listed)  # the asides
    assert re.findall(r"`(\w+)`", listed) == phases(_crd("executiongrants"))


WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
         "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
         "fourteen": 14, "fifteen": 15, "sixteen": 16}


def test_api_md_counts_the_admission_policies_the_chart_renders() -> None:
    from support.chart import render

    said = re.search(r"The chart installs (\w+) `admissionregistration\.k8s\.io/v1` policies, "
                     r"and (\w+) more for the\npreview when `policy\.preview\.enabled` \(the "
                     r"default\), and (\w+) for the chat state when\n`chat\.enabled`",
                     API.read_text())
    assert said is not None, "api.md's sentence counting the admission policies moved"
    base, preview, chat = (WORDS[word] for word in said.groups())

    def policies(values: dict[str, Any]) -> int:
        return sum(o["kind"] == "ValidatingAdmissionPolicy" for o in render("test", values))

    chat_on = {"chat.enabled": True, "chat.webhook": {"enabled": True,
                                                       "url": "https://hooks.example.com/w"}}
    assert policies({"policy.preview.enabled": False}) == base
    assert policies({}) == base + preview
    assert policies(chat_on) == base + preview + chat


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_kubectl_wingman_command_the_docs_type_exists(doc: Path) -> None:
    commands = {path[0] for path in _commands() if path}
    typed = set(re.findall(r"kubectl[ -]wingman ([a-z][a-z-]*)", doc.read_text()))
    assert typed - commands == set()
