"""Which kubectl commands a preview runs, and how (pure).

A preview runs before anyone reviewed the request, so it treats every command as untrusted:
only commands that parse under the command rules and match the environment's allowlist reach
this module (the runner checks both first), and this module then decides from kubectl's own
grammar what the dry run is:

- ``dry-run``: the verb supports ``--dry-run``; the runner appends ``--dry-run=server`` (the
  last occurrence of a flag wins, so the command cannot switch it off) and runs the exact argv
  through the recording proxy, which also marks every write ``dryRun=All``;
- every command that runs also gets ``--v=0`` appended: at ``-v=8`` and above kubectl logs
  the API server's response bodies on stderr, which the preview reads for its errors
  (``--vmodule``, which raises the level per source file, is refused); ``--v=0`` also comes
  first among the appended flags, as the word a trailing flag that takes a value
  (``--field-manager`` with nothing after it) would consume, so the flags after it always
  count;
- ``proxy``: the verb writes but has no ``--dry-run`` flag (``rollout restart``, ``pause``,
  ``resume``); the proxy alone makes each of its writes a dry run;
- ``read-only``: the verb only reads (``get``, ``describe``, ``rollout status``...): nothing
  would change, so it is not run at all (its output could reveal data to everyone who reads the
  request);
- ``refused``: anything else is not previewed and says why (a finding reviewers see):
  interactive and streaming verbs (``exec``, ``attach``, ``port-forward``, ``cp``, ``debug``,
  ``run``, ``proxy``, ``edit``), ``create token`` (mints a credential), verbs this table does
  not know (kubectl plugins among them), flags that change whom kubectl talks to or as whom
  (``--server``, ``--kubeconfig``, ``--context``, ``--as``, ``--token``...), flags that read
  local files or remote URLs (``-f``, ``-k``, ``--from-file``...), short flags combined in
  one word (``-Rf``: kubectl reads each letter as a flag) and a ``--`` separator.

Global flags may come before the verb (``kubectl -n apps scale ...``): kubectl accepts only
its global flags there, so the verb is the first word that is neither a flag nor the value of
``-n``/``--namespace``, ``-v``/``--v`` or ``--request-timeout``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from wingman import scope


class Mode(enum.StrEnum):
    DRY_RUN = "dry-run"
    PROXY = "proxy"
    READ_ONLY = "read-only"
    REFUSED = "refused"


#: Verbs whose writes kubectl itself can make server-side dry runs (``--dry-run=server``).
DRY_RUN_VERBS = frozenset({
    "scale", "delete", "label", "annotate", "patch", "apply", "replace", "taint",
    "autoscale", "expose", "drain", "cordon", "uncordon", "create", "set",
})
#: Verb groups that need a second word; (verb, sub) -> mode.
SUBCOMMANDS: dict[tuple[str, str], Mode] = {
    ("rollout", "undo"): Mode.DRY_RUN,
    ("rollout", "restart"): Mode.PROXY,
    ("rollout", "pause"): Mode.PROXY,
    ("rollout", "resume"): Mode.PROXY,
    ("rollout", "status"): Mode.READ_ONLY,
    ("rollout", "history"): Mode.READ_ONLY,
    ("auth", "can-i"): Mode.READ_ONLY,
    ("auth", "whoami"): Mode.READ_ONLY,
}
READ_ONLY_VERBS = frozenset({
    "get", "describe", "logs", "top", "explain", "api-resources", "api-versions", "version",
    "events", "diff", "wait", "cluster-info",
})
INTERACTIVE_VERBS = frozenset({
    "exec", "attach", "port-forward", "cp", "debug", "run", "proxy", "edit",
})
#: ``create`` subcommands that are refused: they mint credentials.
REFUSED_CREATE = frozenset({"token"})

#: Global flags that take their value as the next word.
GLOBAL_VALUE_FLAGS = frozenset({"-n", "--namespace", "-v", "--v", "--request-timeout"})
#: Flags that change whom kubectl talks to, as whom, or where it keeps state (the command
#: rules refuse them before a plan is made; refused here again).
CONNECTION_FLAGS = scope.CONNECTION_FLAGS
#: Flags that read local files or remote URLs.
FILE_FLAGS = frozenset({
    "-f", "--filename", "-k", "--kustomize", "--from-file", "--from-env-file", "--env-file",
    "-R", "--recursive", "--kuberc",
})
#: Flags that raise kubectl's logging per source file: at high levels kubectl logs the API
#: server's response bodies (a Secret's data) on stderr, which the preview reads.
LOGGING_FLAGS = frozenset({"--vmodule"})
#: Appended to every command the preview runs, after the command's own flags (the last
#: occurrence of a flag wins): kubectl logs nothing beyond its errors and warnings.
QUIET = "--v=0"
_SHORT_FILE = ("-f", "-k", "-s")  # also as -fVALUE / -f=VALUE
#: kubectl's short flags that take a value (the rest of a word such as ``-napps`` is the
#: value). After any other short flag kubectl reads the next letter as another flag: ``-Rf``
#: is ``-R -f``, so such words are refused.
_SHORT_VALUE = frozenset("nvlocpeL")


@dataclass(frozen=True)
class Plan:
    """How one kubectl command is previewed: ``argv`` is what the runner executes."""

    mode: Mode
    verb: str
    argv: tuple[str, ...] = ()
    reason: str = ""


def _flag_name(arg: str) -> str:
    """The flag a word sets, as kubectl reads it: kubectl's flag set turns '_' in a name into
    '-' (``--from_file`` is ``--from-file``)."""
    name = arg.split("=", 1)[0]
    return name.replace("_", "-") if name.startswith("--") else name


def _refused_flag(arg: str) -> str | None:
    name = _flag_name(arg)
    if name in CONNECTION_FLAGS:
        return (f"it sets {name}, which changes whom kubectl talks to or as whom; the preview "
                "(and the gateway) use their own identity")
    if name in FILE_FLAGS:
        return f"it sets {name}, which reads local files or remote content"
    if name in LOGGING_FLAGS:
        return (f"it sets {name}, which makes kubectl log what the API server answers (object "
                "contents) where the preview reads its errors")
    if not arg.startswith("--") and any(arg.startswith(s) and len(arg) > 2 for s in _SHORT_FILE):
        return f"it sets {arg[:2]}, which reads local files or changes the server"
    if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2 \
            and arg[1] not in _SHORT_VALUE:
        return (f"it combines short flags ({arg[:3]}...), which kubectl reads as several "
                "flags; write each flag as its own word")
    return None


def _verb_words(args: Sequence[str]) -> tuple[list[str], str | None, int]:
    """The non-flag words from the verb on and the verb's index in ``args``, or (_, why the
    verb cannot be found, _)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            break
        if "=" not in arg and arg in GLOBAL_VALUE_FLAGS:
            i += 2
            continue
        if "=" not in arg and arg.startswith("--") and arg not in ("--insecure-skip-tls-verify",
                                                                    "--warnings-as-errors",
                                                                    "--match-server-version"):
            return [], (f"the flag {arg} before the verb is not one the preview knows, so the "
                        "verb cannot be told apart from its value"), i
        i += 1
    words = [a for a in args[i:] if not a.startswith("-")]
    return words, None, i


def plan(argv: Sequence[str]) -> Plan:
    """The preview plan for a parsed kubectl argv (``argv[0] == 'kubectl'``)."""
    if not argv or argv[0] != "kubectl":
        return Plan(Mode.REFUSED, "", reason="only kubectl commands are previewed this way")
    args = list(argv[1:])
    if "--" in args:
        return Plan(Mode.REFUSED, "", reason="it contains '--', after which kubectl passes "
                    "arguments on unchecked")
    for arg in args:
        why = _refused_flag(arg)
        if why:
            return Plan(Mode.REFUSED, "", reason=why)
    words, why, at = _verb_words(args)
    if why:
        return Plan(Mode.REFUSED, "", reason=why)
    if not words:
        return Plan(Mode.REFUSED, "", reason="it names no kubectl verb")
    verb = words[0]
    sub = words[1] if len(words) > 1 else ""
    if verb in ("rollout", "auth") and at + 1 < len(args) and args[at + 1].startswith("-"):
        # kubectl skips a flag's value to find the subcommand: -n status restart is restart
        return Plan(Mode.REFUSED, verb, reason=f"a flag comes between kubectl {verb} and its "
                    "subcommand; write the subcommand right after the verb")
    if (verb, sub) in SUBCOMMANDS:
        mode = SUBCOMMANDS[(verb, sub)]
        label = f"{verb} {sub}"
    elif verb in ("rollout", "auth"):
        return Plan(Mode.REFUSED, verb, reason=f"kubectl {verb} {sub or '(nothing)'} is not a "
                    "subcommand the preview knows")
    elif verb in READ_ONLY_VERBS:
        mode, label = Mode.READ_ONLY, verb
    elif verb in INTERACTIVE_VERBS:
        return Plan(Mode.REFUSED, verb, reason=f"kubectl {verb} is interactive or streams; it "
                    "has no dry run")
    elif verb == "create" and REFUSED_CREATE.intersection(words[1:]):
        # kubectl finds the subcommand after the values of flags before it
        # (``create -n apps token``), which the words here still hold
        return Plan(Mode.REFUSED, verb, reason="kubectl create token mints a credential; it is "
                    "never previewed")
    elif verb in DRY_RUN_VERBS:
        mode, label = Mode.DRY_RUN, verb
    else:
        return Plan(Mode.REFUSED, verb, reason=f"kubectl {verb} is not a verb the preview "
                    "knows how to dry-run")
    if mode is Mode.READ_ONLY:
        return Plan(mode, label, reason="it only reads; nothing would change")
    # the first QUIET is the value a trailing flag that takes one would consume (pflag takes
    # the next word whatever it is): what follows it is always read as kubectl's flags
    run = tuple(argv) + (QUIET,) + (("--dry-run=server",) if mode is Mode.DRY_RUN else ()) \
        + (QUIET,)
    return Plan(mode, label, run)


__all__ = ["CONNECTION_FLAGS", "DRY_RUN_VERBS", "FILE_FLAGS", "LOGGING_FLAGS", "QUIET",
           "READ_ONLY_VERBS", "Mode", "Plan", "plan"]
