"""Command scope: what exact argv an approved command string stands for, and whether it is allowed.

This module owns the rules that turn an approved command *string* into the argv the gateway
executes (never through a shell), the environment allowlist of command patterns, and the
command's SHA-256 that capability tokens carry. Everything here is a pure function of data.

Command rules (:func:`parse`), checked in this order; each failure raises
:class:`~wingman.errors.ScopeViolation` with the ``reason`` given:

1. ``CommandTooLong``: more than 4096 bytes of UTF-8.
2. ``ForbiddenCharacter``: any control character: NUL and the rest of C0 (including ``\\t``,
   ``\\n``, ``\\r``), DEL (U+007F) and C1 (U+0080-U+009F). Words are separated by spaces only.
3. ``NonAsciiCharacter``: any character above U+007F. This covers homoglyphs (Cyrillic
   U+0430, the fullwidth semicolon U+FF1B, the Greek question mark U+037E), zero-width
   (U+200B) and bidirectional controls (U+202E), and NBSP. Nothing is normalised: a command
   that needs normalising is rejected, and the message names the code point and its index
   (``U+202E at index 7``).
4. ``EmptyCommand``: empty, or spaces only.
5. ``ShellMetacharacter``. The executor has no shell, so an unquoted ``;`` would reach the
   program as a literal argument and chain nothing. It is rejected all the same, because an
   approver reading ``a; b`` believes it is two commands: the approver must read the command
   the way it executes. Hence:

   - outside quotes, these are rejected: the operators and substitutions ``; & | $ ` ( ) < >``,
     the glob and expansion characters ``* ? [ ] { } ~``, the comment ``#``, history ``!``
     and the backslash ``\\`` (quote the argument if one of them is meant literally);
   - inside single or double quotes a metacharacter is a literal argument and allowed,
     EXCEPT ``$(``, ``${`` and the backtick, which look like substitution to a human and are
     rejected everywhere, even inside single quotes;
   - inside double quotes every ``$`` is rejected, because a shell expands ``"$X"``; inside
     double quotes the backslash escapes only ``"`` and ``\\`` (POSIX ``shlex``).
6. ``Malformed``: unbalanced quotes (or any disagreement between this module's lexer and
   ``shlex.split(posix=True)``, which cannot happen for a command that passed the rules above
   and is checked anyway so the validator and the executor never see different argv).
7. ``TooManyArguments``: more than 64 arguments.

For a ``kubectl`` command rules 8 to 14 follow, read the way kubectl (pflag) reads its flags:
``--flag=value`` or ``--flag value``, ``_`` in a long flag's name read as ``-``
(``--as_group`` is ``--as-group``), short flags combined in one word (``-As`` is ``-A -s``:
after a letter that takes no value the next letter is another flag; after ``-n``, ``-v``,
``-l``, ``-o``, ``-c``, ``-e``, ``-L`` or ``-k``, ``-f`` and ``-p`` but in ``kubectl logs``
(there ``--follow`` and ``--previous``; ``-p`` is ``patch``'s ``--patch``), and ``-r`` in
``create`` (``create deployment``'s ``--replicas``), the rest of the word is the value), and
flags anywhere, before the verb too (where rule 11 allows only global options). A ``--`` ends
the flags (what follows is another program's argv: ``exec web -it -- ls -s``) when it follows
a word that is no flag, or a flag that cannot take it as its value: one whose value is in its
word (``--container=app``, ``-capp``) or one that takes none (:data:`SWITCH_FLAGS`, ``-i``,
``-t``, ``-q``, ``-A``, ``-R``, ``-h``, ``-w`` but in ``proxy``, ``-f``/``-p`` in ``logs``). A
``--`` right after any other flag (``-c --``, ``patch -p --``, an unknown flag) may be that
flag's value, so the words after it are still read as flags.

8. ``ConnectionFlag``: the command sets a flag in :data:`CONNECTION_FLAGS`, which changes
   whom kubectl talks to, as whom, or which configuration it reads (``--server``/``-s``,
   ``--kubeconfig``, ``--context``, ``--cluster``, ``--user``, ``--token``, ``--as``,
   ``--as-group``, ``--certificate-authority``, ``--insecure-skip-tls-verify``...), however
   spelt, and any word that contains ``--kuberc=`` (kubectl takes its preferences file from
   such a word before it parses flags, even from a flag's value). Never allowed, whatever the
   allowlist says: a command acts only as the executor identity the gateway gives it
   (``wingman-executor``), against the cluster's own API server. Two commands have flags of
   their own by those names, which shadow the global ones: ``--user`` (the binding's subject)
   right after ``create rolebinding``, ``create clusterrolebinding`` or ``set subject``
   (written right after the verb, with no flag between), and ``debug``'s ``--profile`` with
   one of its profiles (``legacy``, ``general``, ``baseline``, ``netadmin``, ``restricted``,
   ``sysadmin``); there they are allowed.
9. ``MissingFlagValue``: the last word is a flag that always takes a value
   (:data:`VALUE_FLAGS`, or a short flag such as ``-n``); kubectl would refuse to run it.
10. ``ServingVerb``: the verb (the first word that is neither a flag nor a flag's value) is
    one of :data:`SERVING_VERBS` (``proxy``, ``port-forward``): such a command serves the
    executor's rights, or a pod's port, on a local port for as long as it runs, which is
    nothing a single approved command is for.

Rules 11-14 keep a command to what its approvers read: it never makes kubectl read or write
the gateway pod's files (its ServiceAccount token among them), fetch content from a URL the
approvers never saw, or run a program other than kubectl.

11. ``FlagBeforeVerb``: a flag before the verb that is not one of kubectl's global options
    (:data:`GLOBAL_FLAGS`: ``-n``, ``-v``, ``--request-timeout``...). kubectl looks for its
    verb before it reads any flag, and takes the word after such a flag as the flag's value:
    ``kubectl -i get cp ...`` runs ``cp``, ``kubectl --accept-paths get proxy`` runs
    ``proxy``. Written after the verb, the flag is read as the command's own. A ``--`` before
    the verb is refused too: kubectl then runs no command (it prints its help), whatever the
    words after it show.
12. ``UnknownVerb``: the verb is not one of kubectl's built-in commands
    (:data:`KUBECTL_VERBS`, from ``kubectl --help`` of the pinned kubectl), or a word right
    after ``create`` is not one of its subcommands: kubectl would look for a plugin program
    (``kubectl-VERB``, ``kubectl-create-WORD``) and run it.
13. ``LocalVerb``: the verb is one of :data:`LOCAL_VERBS`, which work on the gateway pod's
    files or run other programs (``cp``, ``config``, ``kustomize``, ``plugin``, ``diff``,
    which runs a ``diff`` program), or opens an editor (``edit``, ``apply
    edit-last-applied``).
14. ``LocalFile``: the command sets a flag of :data:`LOCAL_FILE_FLAGS`, which reads a local
    file or a URL (``-f``/``--filename``, ``-k``/``--kustomize``, ``--from-file``,
    ``--from-env-file``, ``--patch-file``, ``--cert``, ``--key``, ``debug --custom``), writes
    files (``cluster-info dump --output-directory``) or opens an editor (``--edit``);
    ``-f`` is ``--follow`` in ``kubectl logs``, and allowed there after the verb. Also an
    output format that reads its template from a file (``-o`` ``go-template-file``,
    ``templatefile``, ``jsonpath-file``, ``custom-columns-file``: any format ending in
    ``file``, in any letter case; ``--template`` is then that file's path). Write the change
    as a command instead (``kubectl patch``, ``set``, ``scale``, ``label``,
    ``create configmap --from-literal``...) and inline templates (``-o go-template=...``).
15. ``RawPath``: the path of ``--raw`` (``kubectl get|delete --raw PATH``) has a ``%``
    escape or a ``.``/``..`` segment before its query, a ``#`` anywhere, or does not start
    with exactly one ``/``. kubectl decodes the path, cleans it and drops a scheme and host
    (and a ``#`` with all after it) before it requests it, so such a path reaches another
    resource than the one it shows: an allowlisted ``kubectl get --raw /readyz/*`` filled
    with ``..%2F..%2Fapi%2Fv1%2Fnamespaces%2F...`` would read any object, ``s%65crets``
    hides ``secrets`` from its reader, and ``/api/v1/nodes/n1/proxy#/metrics`` (the node's
    proxy) is no proxy path to the reviewers. An empty
    ``--raw=`` is refused too: kubectl reads it as no ``--raw`` at all (``get --raw= pods``
    is ``get pods``), which is not what it shows.

An empty quoted argument (``''``) is a real, empty argv element; it is allowed by ``parse``
but no allowlist wildcard matches it.

Allowlist patterns (:class:`AllowlistPattern`, :class:`Allowlist`) are written like commands,
for example ``kubectl rollout restart deployment/*``, ``docker restart *`` or
``kubectl scale deployment/{name} --replicas={int:0..50}``, and lexed by the same rules, except
that unquoted ``*`` and ``{...}`` are wildcard syntax. Quoting makes them literal
(``'jsonpath={.items[*].metadata.name}'`` is one literal argument). Matching is argv-wise:

- the pattern and the command have the same number of arguments (there is no "rest" marker);
- the first word of a pattern is a literal executable name (``kubectl`` or ``docker``);
- an argument pattern is a literal (byte-equal) or has exactly one wildcard, with literal
  text around it (``deployment/*``, ``--replicas=*``); a pattern with two wildcards in one
  argument is a configuration error (matching then stays linear and unambiguous);
- ``*`` matches one or more characters from ``A-Z a-z 0-9 . _ : @ % + = , -``: never ``/``
  (in ``deployment/*`` the star is one name segment), never a space, quote or metacharacter,
  and never the whole of ``.`` or ``..``; there is no ``?`` or ``[...]``;
- ``{int:LO..HI}`` matches a canonical non-negative decimal integer (no sign, no leading
  zeros) with ``LO <= n <= HI``;
- ``{name}`` matches a Kubernetes object name (RFC 1123 subdomain: lowercase alphanumerics,
  ``-`` and ``.``, at most 253 characters, starting and ending alphanumeric);
- a wildcard never matches an argument that starts with ``-``, nor text that starts with
  ``-``, unless the pattern argument itself starts with ``-``: ``*`` cannot be filled with
  ``--kubeconfig=/evil`` (flag injection), nor ``deployment/*`` with ``deployment/-x``;
  ``--replicas=*`` is written by the administrator as an option and may be filled;
- a wildcard is never part of a flag's name: ``-*``, ``--*`` or ``--a*`` would let the command
  choose the flag (``--namespace=other``, ``--all-namespaces``), so such a pattern is a
  configuration error; a wildcard after a flag must be its value (``--replicas=*``, or
  ``-l*`` after a short flag that takes the rest of the word as its value);
- a kubectl pattern that sets a :data:`CONNECTION_FLAGS` flag is a configuration error (no
  such command ever runs, rule 8), and so is one that could only match a command refused by
  rules 11-14 (a literal verb or flag they refuse, such as ``kubectl cp *`` or
  ``kubectl create secret generic * --from-file=*``).

:func:`check` is the gate used by the operator at grant time and by the gateway before exec:
the command must be byte-identical to one of the approved commands, parse cleanly, and match
the allowlist. :func:`executor_for` maps argv[0] to the executor (``kubectl`` → kubernetes,
``docker`` → docker; paths such as ``/usr/bin/kubectl`` are rejected).

Messages never repeat the command itself (it may carry secrets, and hostile characters would
reach logs); they name the rule, the position and the command's SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from wingman.errors import ConfigError, ScopeViolation
from wingman.model import commandline, limits, names

__all__ = [
    "CONNECTION_FLAGS",
    "GLOBAL_FLAGS",
    "KUBECTL_VERBS",
    "LOCAL_FILE_FLAGS",
    "LOCAL_VERBS",
    "MAX_ARGUMENTS",
    "MAX_COMMAND_BYTES",
    "SERVING_VERBS",
    "SWITCH_FLAGS",
    "VALUE_FLAGS",
    "Allowlist",
    "AllowlistPattern",
    "Executor",
    "check",
    "command_sha256",
    "executor_for",
    "parse",
]

MAX_COMMAND_BYTES = limits.COMMAND_BYTES
"""Longest accepted command, in bytes of UTF-8."""

MAX_ARGUMENTS = 64
"""Most arguments (argv elements, including argv[0]) a command may have."""

Executor = Literal["kubernetes", "docker"]

_EXECUTORS: dict[str, Executor] = {"kubectl": "kubernetes", "docker": "docker"}

# Rejected when unquoted: shell operators and substitution, globbing and expansion, comment,
# history expansion and the escape character.
_UNQUOTED_FORBIDDEN = frozenset(";&|$`()<>*?[]{}~#!\\")
_PATTERN_WILDCARD_START = frozenset("*{")

_STAR_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@%+=,-")
_INT_RE = re.compile(r"0|[1-9][0-9]{0,17}")
_NAME_RE = names.OBJECT_NAME  # a Kubernetes object name (the API server's rule)
_NAME_MAX = 253
_TYPED_RE = re.compile(r"int:(0|[1-9][0-9]{0,17})\.\.(0|[1-9][0-9]{0,17})|name")

CONNECTION_FLAGS = frozenset({
    "--kubeconfig", "--context", "--cluster", "--user", "-s", "--server", "--token", "--as",
    "--as-group", "--as-uid", "--username", "--password", "--certificate-authority",
    "--client-certificate", "--client-key", "--insecure-skip-tls-verify", "--tls-server-name",
    "--cache-dir", "--profile", "--profile-output", "--kuberc",
})
"""kubectl flags that change whom kubectl talks to, as whom, or which configuration and state
it uses: a command that sets one never runs (rule 8)."""

VALUE_FLAGS = frozenset({
    "--namespace", "--v", "--request-timeout", "--log-flush-frequency", "--vmodule",
    "--selector", "--output", "--container", "--env", "--label-columns", "--kustomize",
    "--filename", "--field-manager", "--field-selector", "--replicas", "--patch", "--type",
    "--image", "--grace-period", "--timeout", "--sort-by", "--template", "--since", "--tail",
    "--to-revision", "--revision", "--current-replicas", "--resource-version", "--max",
    "--min", "--cpu-percent", "--overrides", "--subresource", "--for",
})
"""Long kubectl flags that take a value in every command that has them (rule 9)."""

SERVING_VERBS = frozenset({"proxy", "port-forward"})
"""kubectl verbs that serve an identity's rights or a pod's port on a local port until they
are stopped: a command with one never runs (rule 10)."""

GLOBAL_FLAGS = frozenset({
    "-n", "--namespace", "-v", "--v", "--vmodule", "--log-flush-frequency", "--request-timeout",
    "--disable-compression", "--match-server-version", "--warnings-as-errors",
})
"""kubectl's global options (``kubectl options``) besides :data:`CONNECTION_FLAGS`: the only
flags a command may set before its verb (rule 11)."""

KUBECTL_VERBS = frozenset({
    "create", "expose", "run", "set", "explain", "get", "edit", "delete", "rollout", "scale",
    "autoscale", "certificate", "cluster-info", "top", "cordon", "uncordon", "drain", "taint",
    "describe", "logs", "attach", "exec", "port-forward", "proxy", "cp", "auth", "debug",
    "events", "diff", "apply", "patch", "replace", "wait", "kustomize", "label", "annotate",
    "completion", "api-resources", "api-versions", "config", "plugin", "version", "alpha",
    "help", "options",
})
"""kubectl's built-in commands (``kubectl --help`` of kubectl 1.34, with ``alpha``, ``help``
and ``options``): for any other verb kubectl runs a plugin program from PATH (rule 12)."""

LOCAL_VERBS = frozenset({"cp", "config", "kustomize", "plugin", "diff", "edit"})
"""kubectl verbs that work on the gateway pod's files or run another program (``diff`` runs
a ``diff`` program, ``edit`` an editor): a command with one never runs (rule 13)."""

LOCAL_FILE_FLAGS = frozenset({
    "-f", "--filename", "-k", "--kustomize", "--from-file", "--from-env-file", "--patch-file",
    "--cert", "--key", "--custom", "--output-directory", "--edit",
    # not kubectl 1.34's, but flags of other kubectl versions that read or write files
    "--env-file", "--log-file", "--log-dir",
})
"""kubectl flags that read local files or URLs, write files, or open an editor: a command
that sets one never runs (rule 14; ``-f`` is ``--follow`` in ``kubectl logs``)."""

# ``kubectl create WORD``: kubectl runs a plugin kubectl-create-WORD unless WORD is one of
# create's subcommands, by name or alias (kubectl 1.34).
_CREATE_SUBCOMMANDS = frozenset({
    "clusterrole", "clusterrolebinding", "configmap", "cm", "cronjob", "cj", "deployment",
    "deploy", "ingress", "ing", "job", "namespace", "ns", "poddisruptionbudget", "pdb",
    "priorityclass", "pc", "quota", "resourcequota", "role", "rolebinding", "secret",
    "service", "svc", "serviceaccount", "sa", "token",
})

SWITCH_FLAGS = frozenset({
    "--all", "--all-containers", "--all-namespaces", "--all-pods",
    "--allow-missing-template-keys", "--append-hash", "--append-server-path",
    "--arguments-only", "--as-current-user", "--attach", "--cached", "--cascade", "--client",
    "--command", "--create-annotation", "--current", "--delete-emptydir-data",
    "--disable-compression", "--disable-eviction", "--disable-filter", "--dry-run", "--edit",
    "--embed-certs", "--enable-alpha-plugins", "--enable-helm", "--exec-provide-cluster-info",
    "--expose", "--flatten", "--follow", "--force", "--force-conflicts", "--global-default",
    "--help", "--helm-debug", "--ignore-daemonsets", "--ignore-errors", "--ignore-not-found",
    "--insecure-skip-tls-verify", "--insecure-skip-tls-verify-backend", "--interactive",
    "--keep-annotations", "--keep-init-containers", "--keep-labels", "--keep-liveness",
    "--keep-readiness", "--keep-startup", "--leave-stdin-open", "--list", "--local",
    "--match-server-version", "--merge", "--minify", "--name-only", "--namespaced",
    "--network", "--no-headers", "--no-preserve", "--now", "--openapi-patch", "--output-patch",
    "--output-watch-events", "--overwrite", "--previous", "--privileged", "--prune", "--quiet",
    "--recursive", "--remove-extra-permissions", "--remove-extra-subjects", "--replace",
    "--resolve", "--rm", "--same-node", "--save-config", "--server-print", "--server-side",
    "--set-raw-bytes", "--share-processes", "--show-capacity", "--show-events", "--show-kind",
    "--show-labels", "--show-managed-fields", "--show-swap", "--stdin", "--sum",
    "--timestamps", "--tty", "--use-protocol-buffers", "--validate", "--wait",
    "--warnings-as-errors", "--watch", "--watch-only", "--windows-line-endings",
})
"""Long kubectl flags that never take the next word as their value, in every command that has
them (boolean flags, and ``--cascade``, ``--dry-run``, ``--validate``, whose value is
optional): a ``--``
right after one ends kubectl's flags. Any other long flag written without ``=`` may take the
next word, a ``--`` too, as its value."""

# Short flags after which the rest of the word is the flag's value, in every kubectl command.
_SHORT_VALUE = frozenset("nvloceLk")
# ... and in some commands only (kubectl 1.34): ``-f`` is ``--filename`` but in ``logs``
# (``--follow``), ``-p`` is ``patch``'s ``--patch`` and ``proxy``'s ``--port`` (``logs``'
# ``--previous``), ``-r`` is ``create deployment``'s ``--replicas``, ``-w``, ``-u`` and ``-P``
# are ``proxy``'s. Elsewhere a letter is read as a flag without a value, so the next letter is
# another flag (``-As`` sets ``-s``): kubectl refuses a letter the command does not have.
_SHORT_VALUE_IN: dict[str, frozenset[str]] = {
    "p": frozenset({"patch", "proxy"}), "r": frozenset({"create"}),
    "w": frozenset({"proxy"}), "u": frozenset({"proxy"}), "P": frozenset({"proxy"}),
}
# Short flags that never take a value in any command that has them (and ``-w`` but in
# ``proxy``, ``-f`` and ``-p`` in ``logs``): a ``--`` right after them ends kubectl's flags.
_SHORT_SWITCHES = frozenset("ARiqth")
# Global flags that a command's own flag of the same name shadows, in that command only:
# ``--user`` (a subject: ``create rolebinding x --clusterrole=view --user=alice``) and
# ``debug``'s ``--profile`` (a security profile), with the values kubectl accepts.
_SUBJECT_COMMANDS = frozenset({
    ("create", "rolebinding"), ("create", "clusterrolebinding"), ("set", "subject"),
})
_DEBUG_PROFILES = frozenset({
    "legacy", "general", "baseline", "netadmin", "restricted", "sysadmin",
})


def command_sha256(command: str) -> str:
    """Hex SHA-256 of the command's UTF-8 bytes (the form capability tokens carry).

    Raises ScopeViolation (``NonAsciiCharacter``) for a string that is not valid Unicode text
    (a lone surrogate), which no command can contain.
    """
    try:
        data = command.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = command[exc.start]
        raise ScopeViolation(
            f"the command contains U+{ord(bad):04X} at index {exc.start}, which is not valid "
            "Unicode text; commands must be plain ASCII",
            reason="NonAsciiCharacter",
        ) from None
    return hashlib.sha256(data).hexdigest()


def _ref(command: str) -> str:
    """A safe reference to a command for messages: its hash, never its text."""
    try:
        return f"sha256:{command_sha256(command)}"
    except ScopeViolation:
        return "sha256:<not UTF-8 encodable>"


def _check_characters(command: str) -> None:
    """Rules 1-4: length, control characters, non-ASCII (``wingman.model.commandline``, which
    the client applies before any call too), blank."""
    long = commandline.too_long("the command", command)
    if long is not None:
        raise ScopeViolation(long, reason="CommandTooLong")
    found = commandline.not_plain("the command", command)
    if found is not None:
        reason, why = found
        raise ScopeViolation(why, reason=reason)
    if not command.strip(" "):
        raise ScopeViolation(
            "the command is empty; give the exact command to run", reason="EmptyCommand"
        )


@dataclass(frozen=True, slots=True)
class _Word:
    """One lexed argument: its text and, per character, whether it was quoted."""

    text: str
    quoted: tuple[bool, ...]


def _metachar(char: str, index: int, why: str) -> ScopeViolation:
    return ScopeViolation(
        f"the command contains {char!r} at index {index} {why}",
        reason="ShellMetacharacter",
    )


def _lex(command: str, *, pattern: bool) -> list[_Word]:
    """Split an already character-checked command into words, enforcing rule 5.

    POSIX shell quoting, restricted: single quotes are literal, double quotes allow escaping
    only ``"`` and ``\\`` (as ``shlex`` does), unquoted backslash is rejected. In ``pattern``
    mode unquoted ``*`` and ``{...}`` are kept (unquoted) for the pattern compiler.
    """
    words: list[_Word] = []
    text: list[str] = []
    quoted: list[bool] = []
    in_word = False
    state = " "  # " " outside quotes, "'" inside single quotes, '"' inside double quotes
    i = 0
    n = len(command)
    while i < n:
        c = command[i]
        if c == "`":
            raise _metachar(c, i, "(a backtick looks like command substitution)")
        if c == "$" and i + 1 < n and command[i + 1] in "({":
            raise _metachar(
                command[i : i + 2], i, "(it looks like a substitution, even inside quotes)"
            )
        if state == "'":
            if c == "'":
                state = " "
            else:
                text.append(c)
                quoted.append(True)
        elif state == '"':
            if c == '"':
                state = " "
            elif c == "$":
                raise _metachar(c, i, "inside double quotes, where a shell would expand it")
            elif c == "\\" and i + 1 < n and command[i + 1] in '"\\':
                text.append(command[i + 1])
                quoted.append(True)
                i += 1
            else:
                text.append(c)
                quoted.append(True)
        elif c == " ":
            if in_word:
                words.append(_Word("".join(text), tuple(quoted)))
                text, quoted, in_word = [], [], False
        elif c in "'\"":
            state = c
            in_word = True
        elif c in _UNQUOTED_FORBIDDEN and not (pattern and c in _PATTERN_WILDCARD_START):
            if pattern and c == "}":
                raise _metachar(c, i, "without a matching '{'")
            raise _metachar(c, i, "outside quotes; quote the argument if it is meant literally")
        elif c == "{":  # pattern mode: a typed wildcard, kept whole and unquoted
            end = command.find("}", i)
            if end < 0:
                raise _metachar(c, i, "without a matching '}'")
            text.extend(command[i : end + 1])
            quoted.extend([False] * (end + 1 - i))
            in_word = True
            i = end
        else:
            text.append(c)
            quoted.append(False)
            in_word = True
        i += 1
    if state != " ":
        kind = "single" if state == "'" else "double"
        raise ScopeViolation(
            f"the command has an unbalanced {kind} quote; close every quote it opens",
            reason="Malformed",
        )
    if in_word:
        words.append(_Word("".join(text), tuple(quoted)))
    if len(words) > MAX_ARGUMENTS:
        raise ScopeViolation(
            f"the command has {len(words)} arguments, more than the {MAX_ARGUMENTS} allowed",
            reason="TooManyArguments",
        )
    return words


def parse(command: str) -> list[str]:
    """The argv a command string stands for, or ScopeViolation (rules in the module doc)."""
    if not isinstance(command, str):
        raise ScopeViolation(
            f"a command must be a string, not {type(command).__name__}", reason="Malformed"
        )
    return list(_parsed(command))


#: Commands whose argv is remembered: one review parses each command once per voter and once
#: more for the policy's allowlist check, and a request's grants parse it again.
PARSED_CACHE_SIZE = 512


@functools.lru_cache(maxsize=PARSED_CACHE_SIZE)
def _parsed(command: str) -> tuple[str, ...]:
    """:func:`parse` of a string, remembered (a pure function of the text; a command refused
    raises each time, and is not remembered)."""
    _check_characters(command)
    argv = [word.text for word in _lex(command, pattern=False)]
    try:
        reference = shlex.split(command, comments=False, posix=True)
    except ValueError:
        reference = None
    if reference != argv:
        raise ScopeViolation(
            f"the command ({_ref(command)}) splits ambiguously; quote its arguments plainly",
            reason="Malformed",
        )
    if argv[0] == "kubectl":
        _check_kubectl_flags(argv[1:])
    return tuple(argv)


def _short_takes_value(letter: str, verb: str | None) -> bool:
    """Whether the short flag ``-LETTER`` takes a value in the command ``verb`` (None: not
    known, then only a letter that takes one in every command does)."""
    if letter in _SHORT_VALUE:
        return True
    if verb is None:
        return False
    if letter == "f":
        return verb != "logs"
    return verb in _SHORT_VALUE_IN.get(letter, ())


def _flags_in(arg: str, *, verb: str | None = None) -> tuple[list[str], bool, str | None]:
    """The flags one word sets as kubectl reads it in the command ``verb``, whether the last
    of them still needs its value from the next word, and the value the word itself gives the
    last one (``None``: none). Long names have ``_`` read as ``-``; which short flags take a
    value depends on the command (:func:`_short_takes_value`: ``-f`` is ``--filename``, but
    ``--follow`` in ``kubectl logs``)."""
    if arg.startswith("--"):
        name, eq, value = arg.partition("=")
        name = name.replace("_", "-")
        return [name], not eq and name in VALUE_FLAGS, value if eq else None
    if not arg.startswith("-") or arg == "-":
        return [], False, None
    names: list[str] = []
    for index in range(1, len(arg)):
        letter = arg[index]
        names.append(f"-{letter}")
        rest = arg[index + 1 :]
        takes_value = _short_takes_value(letter, verb)
        if takes_value or letter == "s" or rest.startswith("="):
            # the rest is the value
            return names, takes_value and not rest, rest.removeprefix("=") or None
    return names, False, None


def _ends_flags_after(word: str, verb: str | None, whole: bool = True) -> bool:
    """Whether a ``--`` right after ``word`` ends kubectl's flags (``verb``: the command, None
    when a pattern leaves it open; ``whole``: false when a wildcard follows ``word``).

    Yes after a word that is no flag (kubectl reads it as an argument, or as a flag's value,
    after which a ``--`` ends the flags) and after a flag that cannot take the next word as
    its value: one given its value in the word (``--container=app``, ``-capp``, ``-i=true``)
    or one that takes none (:data:`SWITCH_FLAGS`; ``-i``, ``-t``, ``-q``... and ``-it``). Any
    other flag may take the ``--`` as its value (``-c --``, ``patch -p --``), and so may an
    unknown one: then the words after it are still read as flags (fail closed)."""
    if not word.startswith("-") or word == "-":
        return True
    if not whole:  # the wildcard is the value of a flag that names it (-l*, --selector=*)
        return _names_its_flag(word)
    if word.startswith("--"):
        name, eq, _ = word.partition("=")
        return bool(eq) or name.replace("_", "-") in SWITCH_FLAGS
    for index in range(1, len(word)):
        letter, rest = word[index], word[index + 1 :]
        if rest.startswith("="):
            return True
        switch = letter in _SHORT_SWITCHES or (verb is not None and (
            (letter == "w" and verb != "proxy") or (letter in "fp" and verb == "logs")))
        if not switch:
            # a flag that takes a value has it in the rest of the word, if any
            return bool(rest) and (letter == "s" or _short_takes_value(letter, verb))
    return True


def _shadowed_global(name: str, names: Sequence[str], verb: str | None,
                     subcommand: str | None, value: str | None) -> bool:
    """Whether ``name`` is not the global flag of that name but the command's own: ``--user``
    after ``create rolebinding|clusterrolebinding`` or ``set subject`` (a subject of the
    binding), ``--profile`` in ``debug`` with one of its profiles (``value``: the flag's)."""
    if len(names) != 1:
        return False
    if name == "--user":
        return (verb, subcommand) in _SUBJECT_COMMANDS
    return name == "--profile" and verb == "debug" and value in _DEBUG_PROFILES


def _check_kubectl_flags(args: Sequence[str], known: Sequence[bool] | None = None) -> None:
    """Rules 8 to 14 on a kubectl command's arguments (``argv[1:]``).

    ``known`` is for allowlist patterns: ``known[i]`` is false when only a prefix of
    ``args[i]`` is known (a wildcard follows it). Then the rules refuse only what every
    command the pattern matches would set, and rules 9 and 10 are not applied.
    """
    pattern = known is not None
    for index, arg in enumerate(args):
        if arg == "--kuberc" or "--kuberc=" in arg:
            # before it parses any flag kubectl takes its preferences file (aliases, flag
            # defaults) from any word that contains --kuberc= (a selector value too)
            raise ScopeViolation(
                f"argument {index + 1} contains --kuberc, from which kubectl reads a "
                "preferences file before it parses its flags, wherever it appears; Wingman "
                "never runs such a command: remove it",
                reason="ConnectionFlag",
            )
    verb: str | None = ""  # "" before the verb, None when a pattern leaves it open
    verb_seen = False
    verb_index = -1
    # the word right after the verb create or set, when it is one (whole) and no flag
    subcommand: str | None = None
    subcommand_next = False  # the previous word was the verb create
    value_next = False  # the previous word was a flag whose value this word is
    output_next = False  # ... and that flag was -o/--output
    raw_next = False  # ... and that flag was --raw
    for index, arg in enumerate(args):
        whole = known is None or known[index]
        if arg == "--" and whole and (index == 0 or _ends_flags_after(
                args[index - 1], verb, known is None or known[index - 1])):
            if not verb_seen:
                raise ScopeViolation(
                    f"argument {index + 1} is -- before the verb: kubectl then runs no command "
                    "at all (it prints its help), whatever the words after it show; write the "
                    "verb first, and -- only where a command takes arguments after it",
                    reason="FlagBeforeVerb",
                )
            return  # the flags end here; what follows is passed on as arguments
        names, needs_value, value = _flags_in(arg, verb=verb)
        if not whole:
            needs_value = False  # a wildcard in a flag's word is the flag's value
        if output_next:
            _check_output(arg, index, whole)
        if raw_next:
            _check_raw(arg, index, whole)
        if not names and not value_next:
            if not verb_seen:
                verb_seen = True
                verb_index = index
                verb = arg if whole else None
                if verb is not None:
                    _check_verb(verb, pattern)
                subcommand_next = verb == "create"
            elif subcommand_next:
                subcommand_next = False
                if whole and arg not in _CREATE_SUBCOMMANDS:
                    raise ScopeViolation(
                        f"argument {index + 1}, the first word after create that is not a "
                        "flag, is not one of create's subcommands, so kubectl may look for a "
                        "plugin program (kubectl-create-...) and run it; Wingman never runs "
                        "such a command: write a built-in subcommand right after create "
                        "(kubectl create --help lists them), its flags after it",
                        reason="UnknownVerb",
                    )
        if index == verb_index + 1 and not names and whole and verb in ("create", "set"):
            # the subcommand, as kubectl finds it only with no flag between it and the verb
            subcommand = arg
        if verb == "apply" and arg == "edit-last-applied" and whole:
            # whether kubectl reads it as the subcommand or as a flag's value depends on the
            # flag before it: refused either way
            raise _local_verb("apply edit-last-applied", "opens an editor in the gateway pod")
        value_next = needs_value
        output_next = needs_value and names[-1] in ("-o", "--output")
        # --raw takes a value in every command that runs (config view's, a boolean, never does)
        raw_next = names == ["--raw"] and value is None
        profile = value
        if names == ["--profile"] and value is None and index + 1 < len(args) and (
                known is None or known[index + 1]):
            profile = args[index + 1]  # --profile general
        for name in names:
            if name in CONNECTION_FLAGS and not _shadowed_global(
                    name, names, verb, subcommand, profile):
                how = "sets" if len(names) == 1 else (
                    "combines short flags, which kubectl reads letter by letter, so it may set")
                shown = "-s (--server)" if name == "-s" else name
                raise ScopeViolation(
                    f"argument {index + 1} {how} {shown}, which changes whom kubectl talks to, "
                    "as whom, or which configuration it reads; Wingman never runs such a "
                    "command (it acts only as the identity the gateway gives it): remove the flag, "
                    "and write each short flag and its value as words of their own",
                    reason="ConnectionFlag",
                )
        if not verb_seen and names and not GLOBAL_FLAGS.issuperset(names):
            bad = next(name for name in names if name not in GLOBAL_FLAGS)
            raise ScopeViolation(
                f"argument {index + 1} sets {bad} before the verb, where kubectl reads only its "
                "global options (-n, -v, --request-timeout...) and takes the word after any "
                "other flag as its value while it looks for the verb, so the command could run "
                "another verb than the one it shows; write the flag after the verb",
                reason="FlagBeforeVerb",
            )
        if not pattern and needs_value and index == len(args) - 1:
            raise ScopeViolation(
                f"the last argument is the flag {names[-1]}, which needs a value after it; "
                "kubectl would refuse to run the command: give the value or remove the flag",
                reason="MissingFlagValue",
            )
        for name in names:
            if name in LOCAL_FILE_FLAGS and not (name == "-f" and verb in ("logs", None)):
                raise _local_file(index, name)
        if names and names[-1] in ("-o", "--output") and value is not None:
            _check_output(value, index, whole)
        if names == ["--raw"] and value is not None:
            _check_raw(value, index, whole)


def _check_verb(verb: str, pattern: bool) -> None:
    """Rules 10, 12 and 13 on the verb (rule 10 not for a pattern)."""
    if verb in SERVING_VERBS and not pattern:
        raise ScopeViolation(
            f"kubectl {verb} serves "
            + ("the API with the executor's rights" if verb == "proxy" else "a pod's port")
            + " on a local port until it is stopped; Wingman never runs it: approve "
            "the exact commands to run instead",
            reason="ServingVerb",
        )
    if verb not in KUBECTL_VERBS:
        raise ScopeViolation(
            "the verb is not one of kubectl's built-in commands, so kubectl would look for a "
            "plugin program (kubectl-VERB) and run it; Wingman never runs such a command: "
            "use a built-in verb (kubectl --help lists them)",
            reason="UnknownVerb",
        )
    if verb in LOCAL_VERBS:
        raise _local_verb(verb, _LOCAL_VERB_DOES[verb])


_LOCAL_VERB_DOES = {
    "cp": "copies files between the gateway pod and a container",
    "config": "reads and writes kubectl's own configuration file in the gateway pod",
    "kustomize": "builds manifests from the gateway pod's files or from a URL",
    "plugin": "looks for plugin programs on the gateway pod's PATH",
    "diff": "runs a diff program in the gateway pod",
    "edit": "opens an editor in the gateway pod",
}


def _local_verb(verb: str, what: str) -> ScopeViolation:
    return ScopeViolation(
        f"kubectl {verb} {what}; Wingman never runs it: write the change as a command "
        "(kubectl patch, set, scale, label, annotate...)",
        reason="LocalVerb",
    )


def _local_file(index: int, name: str) -> ScopeViolation:
    if name == "--edit":
        what = "opens an editor"
    elif name == "--output-directory":
        what = "writes files in the gateway pod"
    else:
        what = "reads a file of the gateway pod, or content from a URL that can change after " \
               "approval"
    shown = "-f (--filename)" if name == "-f" else "-k (--kustomize)" if name == "-k" else name
    return ScopeViolation(
        f"argument {index + 1} sets {shown}, which {what}; Wingman never runs such a command: "
        "write the change as a command (kubectl patch, set, scale, label, annotate, create "
        "configmap --from-literal...) with its content inline",
        reason="LocalFile",
    )


def _check_output(value: str, index: int, whole: bool) -> None:
    """Rule 14 on the value of ``-o``/``--output`` (for a pattern, on its known prefix)."""
    form, eq, _ = value.partition("=")
    if (eq or whole) and form.strip().casefold().endswith("file"):
        raise ScopeViolation(
            f"argument {index + 1} is an output format that reads its template from a file of "
            "the gateway pod (go-template-file, templatefile, jsonpath-file, "
            "custom-columns-file; --template is then the file's path); Wingman never runs such "
            "a command: give the template inline (-o go-template=..., -o jsonpath=..., "
            "-o custom-columns=...)",
            reason="LocalFile",
        )


def _check_raw(value: str, index: int, whole: bool) -> None:
    """Rule 15 on the value of ``--raw`` (for a pattern, on its known prefix)."""
    path = value.partition("?")[0]
    # for a pattern, only the segments its literal prefix holds whole
    segments = path.split("/") if whole else path.split("/")[:-1]
    # kubectl drops a '#' and all after it (a URL's fragment), query or not
    if "%" in path or "#" in value or any(s in (".", "..") for s in segments) or (
            (whole or len(path) >= 2) and (not path.startswith("/") or path.startswith("//"))):
        raise ScopeViolation(
            f"argument {index + 1} is a --raw path with %-escapes, a '#', a '.' or '..' "
            "segment, or not one leading '/': kubectl decodes and cleans the path (and drops a "
            "scheme and host, and a '#' with all after it) before it requests it, so it would "
            "reach another resource than the path shows ('..%2F' leaves the segment an "
            "allowlist wildcard stands for; '/api/v1/nodes/n1/proxy#/metrics' reaches the "
            "node's proxy); Wingman never runs such a command: write the path as requested, "
            "starting with a single '/', without %-escapes, '#' or dot segments (a query after "
            "'?' may have %-escapes)",
            reason="RawPath",
        )


def executor_for(argv: Sequence[str]) -> Executor:
    """``kubernetes`` for ``kubectl``, ``docker`` for ``docker``; exact names, never a path."""
    if not argv:
        raise ScopeViolation("the command has no program to run", reason="EmptyCommand")
    executor = _EXECUTORS.get(argv[0])
    if executor is None:
        raise ScopeViolation(
            "the command's program must be exactly 'kubectl' or 'docker' (no path, no other "
            "program); the gateway runs nothing else",
            reason="UnsupportedExecutor",
        )
    return executor


# ----------------------------------------------------------------------------------------------
# Allowlist patterns


@dataclass(frozen=True, slots=True)
class _ArgPattern:
    """One argument of a pattern: ``prefix`` + wildcard + ``suffix``, or a literal."""

    prefix: str
    kind: Literal["literal", "star", "int", "name"]
    suffix: str = ""
    low: int = 0
    high: int = 0

    def matches(self, arg: str) -> bool:
        if self.kind == "literal":
            return arg == self.prefix
        if len(arg) <= len(self.prefix) + len(self.suffix):
            return False
        if not (arg.startswith(self.prefix) and arg.endswith(self.suffix)):
            return False
        middle = arg[len(self.prefix) : len(arg) - len(self.suffix)]
        if middle.startswith("-") and not self.prefix.startswith("-"):
            return False  # a wildcard never supplies a flag (or text that starts like one)
        if self.kind == "star":
            return middle not in (".", "..") and all(c in _STAR_CHARS for c in middle)
        if self.kind == "int":
            return _INT_RE.fullmatch(middle) is not None and self.low <= int(middle) <= self.high
        return len(middle) <= _NAME_MAX and _NAME_RE.fullmatch(middle) is not None


def _compile_arg(word: _Word, where: str) -> _ArgPattern:
    starts = [
        i
        for i, (char, quoted) in enumerate(zip(word.text, word.quoted, strict=True))
        if not quoted and char in _PATTERN_WILDCARD_START
    ]
    if not starts:
        return _ArgPattern(word.text, "literal")
    if word.text[starts[0]] == "{":
        end = word.text.index("}", starts[0])
    else:
        end = starts[0]
    if any(s > end for s in starts):
        raise ConfigError(
            f"{where}: an argument may contain only one wildcard ('*', '{{int:..}}' or "
            "'{name}'); quote literal '*' and '{' characters"
        )
    prefix, suffix = word.text[: starts[0]], word.text[end + 1 :]
    if prefix.startswith("-") and not _names_its_flag(prefix):
        raise ConfigError(
            f"{where}: a wildcard in a flag's name ('-*', '--*', '--a*') lets the command "
            "choose the flag (--namespace=other, --all-namespaces); write the flag literally "
            "and put the wildcard in its value ('--replicas=*', '-l *')"
        )
    if word.text[starts[0]] == "*":
        return _ArgPattern(prefix, "star", suffix)
    form = word.text[starts[0] + 1 : end]
    typed = _TYPED_RE.fullmatch(form)
    if typed is None:
        raise ConfigError(
            f"{where}: unknown typed wildcard {{{form}}}; use {{int:LO..HI}} or {{name}}"
        )
    if form == "name":
        return _ArgPattern(prefix, "name", suffix)
    low, high = int(typed.group(1)), int(typed.group(2))
    if low > high:
        raise ConfigError(f"{where}: {{int:{low}..{high}}} is an empty range; write LO <= HI")
    return _ArgPattern(prefix, "int", suffix, low, high)


def _names_its_flag(prefix: str) -> bool:
    """Whether a wildcard after ``prefix`` (which starts with '-') can only be a flag's value:
    the flag is complete (``--replicas=``, ``-n=``) or a short flag that takes the rest of the
    word as its value comes first (``-l``, ``-napps``)."""
    if "=" in prefix:
        return True
    if prefix.startswith("--"):
        return False
    return any(letter in _SHORT_VALUE for letter in prefix[1:])


@dataclass(frozen=True, slots=True)
class AllowlistPattern:
    """One allowlisted command shape, such as ``kubectl rollout restart deployment/*``."""

    source: str
    args: tuple[_ArgPattern, ...]

    @classmethod
    def parse(cls, pattern: str) -> AllowlistPattern:
        """Compile a pattern string; ConfigError says what is wrong with it."""
        where = f"allowlist pattern {pattern!a}"
        if not isinstance(pattern, str):
            raise ConfigError(f"{where}: a pattern must be a string")
        try:
            _check_characters(pattern)
            words = _lex(pattern, pattern=True)
        except ScopeViolation as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        args = tuple(_compile_arg(word, where) for word in words)
        first = args[0]
        if first.kind != "literal" or first.prefix not in _EXECUTORS:
            raise ConfigError(
                f"{where}: the first word must be exactly 'kubectl' or 'docker', with no "
                "wildcard and no path"
            )
        if first.prefix == "kubectl":
            try:
                _check_kubectl_flags([a.prefix for a in args[1:]],
                                     [a.kind == "literal" for a in args[1:]])
            except ScopeViolation as exc:
                raise ConfigError(
                    f"{where}: every command it matches is refused (rule {exc.reason}): "
                    f"{exc.message}"
                ) from None
        return cls(pattern, args)

    def matches(self, argv: Sequence[str]) -> bool:
        """True when argv has the same length and every argument matches its pattern."""
        if len(argv) != len(self.args):
            return False
        return all(p.matches(arg) for p, arg in zip(self.args, argv, strict=True))


@dataclass(frozen=True, slots=True)
class Allowlist:
    """An environment's allowlist; an empty allowlist allows nothing."""

    patterns: tuple[AllowlistPattern, ...] = ()

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> Allowlist:
        """Compile every pattern; ConfigError names the first bad one."""
        if isinstance(patterns, str):
            raise ConfigError("an allowlist is a list of pattern strings, not one string")
        return cls(tuple(AllowlistPattern.parse(p) for p in patterns))

    def matches(self, argv: Sequence[str]) -> bool:
        """True when some pattern matches argv."""
        return any(p.matches(argv) for p in self.patterns)


def _loose(command: str) -> str:
    return " ".join(command.split()).casefold()


def check(command: str, *, approved: Sequence[str], allowlist: Allowlist) -> list[str]:
    """The argv to execute, if the command is approved, well-formed and allowlisted.

    ``command`` must equal one string of ``approved`` exactly (no normalisation of
    whitespace or case), then pass :func:`parse`, then match ``allowlist``. Otherwise
    ScopeViolation with reason ``CommandMismatch``, a :func:`parse` reason, or
    ``NotInAllowlist``.
    """
    if isinstance(approved, str | bytes):
        raise TypeError("approved must be a sequence of command strings, not one string")
    if not isinstance(command, str):
        raise ScopeViolation(
            f"a command must be a string, not {type(command).__name__}", reason="Malformed"
        )
    if not any(isinstance(a, str) and a == command for a in approved):
        hint = ""
        loose = _loose(command)
        if any(isinstance(a, str) and _loose(a) == loose for a in approved):
            hint = " It differs from an approved command only in whitespace or letter case."
        raise ScopeViolation(
            f"the command ({_ref(command)}) is not byte-for-byte one of the "
            f"{len(approved)} approved commands; run exactly what was approved.{hint}",
            reason="CommandMismatch",
        )
    argv = parse(command)
    if not allowlist.matches(argv):
        raise ScopeViolation(
            f"the command ({_ref(command)}, {len(argv)} arguments) matches none of the "
            f"{len(allowlist.patterns)} allowlist patterns of this environment; ask an "
            "administrator to allow it or request an allowlisted command",
            reason="NotInAllowlist",
        )
    return argv
