"""kubectl's and docker's command-line grammar, as reviewers need it: verb, arguments, flags.

Both CLIs accept flags anywhere (cobra intersperses them): ``kubectl -n apps delete ns prod``,
``kubectl delete --namespace=apps ns prod`` and ``kubectl delete ns prod -n apps`` are one
command. A flag takes its value as ``--flag=value``, ``--flag value``, ``-fvalue``,
``-f=value`` or ``-f value`` (and ``-itn ns`` is ``-i -t -n ns``); which flags take a value is
in the tables below, from kubectl's own help (1.32 to 1.34), per command where commands differ:
``-p`` is ``--previous`` for ``logs``, ``--patch`` for ``patch``; ``-f`` is ``--follow`` for
``logs``, ``--filename`` elsewhere; ``--raw`` is boolean for ``config view``. Everything after
``--`` is the argv of another program (``kubectl exec ... -- sh``).

kubectl finds its command before it reads any flag (cobra's ``Find``): looking for the verb,
and then for a group's subcommand, it skips each flag and, unless it is one of kubectl's global
boolean options (at ``create`` and ``apply``, also one of theirs), the word after it, as the
flag's value. Only then are the flags read, with that command's own flags. So a flag before
the verb can hide it from a reader who takes the first word: ``kubectl -i get exec -- sh``
runs ``exec`` (on a pod named ``get``), ``kubectl -w get proxy`` runs ``proxy``.

The parse therefore keeps every reading kubectl could make (``ParsedCommand.readings``): the
first takes the first positional words as the command and reads an unknown flag as boolean;
the others are cobra's (the command as cobra finds it, its words taken out, each flag read with
that command's flags) and, in each, the other way to read a flag the tables cannot place: an
unknown flag given without ``=`` taking the next word, and a value flag followed by a word that
looks like a flag not taking it. A reviewer rates the worst reading, so a crafted flag hides
neither the verb nor another flag. Past ``MAX_READINGS`` readings (or ``MAX_STEPS`` words
read) the parse says ``unresolved``. ``ambiguous`` names the words an unknown flag may take as
its value in the first reading.

kubectl accepts other names for some subcommands (``kubectl create deploy``, ``create cj``,
``top po``) and for every resource type (plural, short names, ``deployments.apps``, lists like
``po,svc``): ``ParsedCommand.action`` reads a subcommand by its own name and
``resource_types`` a resource type by its singular name, so risk tables keyed on one name see
them all. docker's commands are read once, with one table (combined short flags as pflag
reads them: ``-Dl debug`` is ``--debug --log-level debug``). Pure: the standard library only.
"""

from __future__ import annotations

import collections
import functools
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from wingman.scope import SWITCH_FLAGS

# kubectl's flags, from its help (kubectl 1.32 to 1.34: `kubectl options` and every command's
# `--help`). Global options, which every command has and cobra knows before it has found the
# command: those that take a value, and the boolean ones.
KUBECTL_GLOBAL_VALUE_FLAGS = frozenset({
    "--as", "--as-group", "--as-uid", "--cache-dir", "--certificate-authority",
    "--client-certificate", "--client-key", "--cluster", "--context", "--kubeconfig",
    "--kuberc", "--log-flush-frequency", "--namespace", "--password", "--profile",
    "--profile-output", "--request-timeout", "--server", "--tls-server-name", "--token",
    "--user", "--username", "--v", "--vmodule",
})
KUBECTL_GLOBAL_BOOL_FLAGS = frozenset({
    "--disable-compression", "--insecure-skip-tls-verify", "--match-server-version",
    "--warnings-as-errors",
})
# The flags of kubectl's commands that take a value in every command that has them.
KUBECTL_COMMAND_VALUE_FLAGS = frozenset({
    "--accept-hosts", "--accept-paths", "--address", "--aggregation-rule", "--annotation",
    "--annotations", "--api-group", "--api-prefix", "--api-version", "--audience",
    "--auth-provider", "--auth-provider-arg", "--bound-object-kind", "--bound-object-name",
    "--bound-object-uid", "--categories", "--cert", "--chunk-size", "--class", "--cluster-ip",
    "--clusterip", "--clusterrole", "--concurrency", "--container", "--copy-to", "--cpu",
    "--cpu-percent", "--current-replicas", "--custom", "--default-backend", "--description",
    "--docker-email", "--docker-password", "--docker-server", "--docker-username",
    "--duration", "--env", "--exec-api-version", "--exec-arg", "--exec-command", "--exec-env",
    "--exec-interactive-mode", "--external-ip", "--external-name", "--field-manager",
    "--field-selector", "--filename", "--for", "--from", "--from-env-file", "--from-file",
    "--from-literal", "--grace-period", "--group", "--hard", "--helm-api-versions",
    "--helm-command", "--helm-kube-version", "--image", "--image-pull-policy", "--keepalive",
    "--key", "--keys", "--kustomize", "--label-columns", "--labels", "--limit-bytes",
    "--limits", "--load-balancer-ip", "--load-restrictor", "--max", "--max-log-requests",
    "--max-unavailable", "--memory", "--min", "--min-available", "--mount", "--name",
    "--namespaces", "--network-name", "--node-port", "--non-resource-url", "--output",
    "--output-directory", "--override-type", "--overrides", "--patch", "--patch-file",
    "--pod-running-timeout", "--pod-selector", "--port", "--preemption-policy", "--protocol",
    "--proxy-url", "--prune-allowlist", "--reject-methods", "--reject-paths", "--replicas",
    "--requests", "--resource", "--resource-name", "--resource-version", "--restart",
    "--retries", "--revision", "--role", "--rule", "--schedule", "--scopes", "--selector",
    "--serviceaccount", "--session-affinity", "--set-image", "--since", "--since-time",
    "--skip-wait-for-delete-timeout", "--sort-by", "--subresource", "--tail", "--target",
    "--target-port", "--tcp", "--template", "--timeout", "--to-revision", "--type", "--types",
    "--unix-socket", "--value", "--verb", "--verbs", "--www", "--www-prefix",
    # Boolean in some commands, a value in others: KUBECTL_COMMAND_BOOL says where not.
    "--containers", "--prefix", "--raw",
})
# The boolean flags of kubectl's commands, with those whose value is optional (given only as
# --flag=value, never as the next word: --dry-run, --validate, --cascade).
KUBECTL_COMMAND_BOOL_FLAGS = SWITCH_FLAGS - KUBECTL_GLOBAL_BOOL_FLAGS  # scope's one table
KUBECTL_SHORT = {
    "-n": "--namespace", "-s": "--server", "-v": "--v", "-f": "--filename", "-l": "--selector",
    "-o": "--output", "-c": "--container", "-k": "--kustomize", "-A": "--all-namespaces",
    "-i": "--stdin", "-t": "--tty", "-R": "--recursive", "-w": "--watch", "-q": "--quiet",
    "-e": "--env", "-L": "--label-columns", "-h": "--help",
}
# Where a command's flag differs from the tables above (the command by its action).
KUBECTL_COMMAND_SHORT: dict[tuple[str, ...], dict[str, str]] = {
    ("logs",): {"-f": "--follow", "-p": "--previous"},
    ("patch",): {"-p": "--patch"},
    ("proxy",): {"-p": "--port", "-w": "--www", "-u": "--unix-socket", "-P": "--www-prefix"},
    ("delete",): {"-i": "--interactive"},
    ("run",): {"-l": "--labels"},
    ("expose",): {"-l": "--labels"},
    ("set", "env"): {"-c": "--containers"},
    ("set", "resources"): {"-c": "--containers"},
    ("create", "deployment"): {"-r": "--replicas"},
}
KUBECTL_COMMAND_BOOL: dict[tuple[str, ...], frozenset[str]] = {
    ("logs",): frozenset({"--prefix"}),
    ("config", "view"): frozenset({"--raw"}),
    ("top", "pod"): frozenset({"--containers"}),
}
# The boolean flags of a command group itself, which cobra knows while it looks for the
# group's subcommand (`create` and `apply` have their own flags; the other groups none).
KUBECTL_GROUP_BOOL_FLAGS: dict[str, frozenset[str]] = {
    "create": frozenset({
        "--allow-missing-template-keys", "--dry-run", "--edit", "--recursive", "--save-config",
        "--show-managed-fields", "--validate", "--windows-line-endings", "-R"}),
    "apply": frozenset({
        "--all", "--allow-missing-template-keys", "--cascade", "--dry-run", "--force",
        "--force-conflicts", "--openapi-patch", "--overwrite", "--prune", "--recursive",
        "--server-side", "--show-managed-fields", "--validate", "--wait", "-R"}),
}
KUBECTL_VALUE_FLAGS = KUBECTL_GLOBAL_VALUE_FLAGS | KUBECTL_COMMAND_VALUE_FLAGS
KUBECTL_BOOL_FLAGS = KUBECTL_GLOBAL_BOOL_FLAGS | KUBECTL_COMMAND_BOOL_FLAGS
# Subcommands: kubectl verbs whose next word selects what they do (kubectl 1.32 to 1.34), and
# the other names cobra accepts for a subcommand (its ``Aliases``): ``kubectl create deploy``
# is ``kubectl create deployment``. ``action`` reads a subcommand by its own name.
KUBECTL_SUBCOMMANDS: dict[str, frozenset[str]] = {
    "create": frozenset({
        "clusterrole", "clusterrolebinding", "configmap", "cronjob", "deployment", "ingress",
        "job", "namespace", "poddisruptionbudget", "priorityclass", "quota", "role",
        "rolebinding", "secret", "service", "serviceaccount", "token"}),
    "rollout": frozenset({"history", "pause", "restart", "resume", "status", "undo"}),
    "set": frozenset({"env", "image", "resources", "selector", "serviceaccount", "subject"}),
    "auth": frozenset({"can-i", "reconcile", "whoami"}),
    "certificate": frozenset({"approve", "deny"}),
    "config": frozenset({
        "current-context", "delete-cluster", "delete-context", "delete-user", "get-clusters",
        "get-contexts", "get-users", "rename-context", "set", "set-cluster", "set-context",
        "set-credentials", "unset", "use-context", "view"}),
    "apply": frozenset({"edit-last-applied", "set-last-applied", "view-last-applied"}),
    "top": frozenset({"node", "pod"}),
    "plugin": frozenset({"list"}),
    "cluster-info": frozenset({"dump"}),
    "alpha": frozenset(),
}
KUBECTL_SUBCOMMAND_ALIASES: dict[str, dict[str, str]] = {
    "create": {"cm": "configmap", "cj": "cronjob", "deploy": "deployment", "ing": "ingress",
               "ns": "namespace", "pdb": "poddisruptionbudget", "pc": "priorityclass",
               "resourcequota": "quota", "svc": "service", "sa": "serviceaccount"},
    "set": {"sa": "serviceaccount"},
    "top": {"nodes": "node", "no": "node", "pods": "pod", "po": "pod"},
    "config": {"use": "use-context"},
}
KUBECTL_GROUPS = frozenset(KUBECTL_SUBCOMMANDS)
KUBECTL_VERBS = frozenset({
    "get", "describe", "logs", "top", "explain", "api-resources", "api-versions", "version",
    "cluster-info", "events", "diff", "wait", "completion", "kustomize", "options", "help",
    "create", "apply", "replace", "patch", "edit", "delete", "set", "label", "annotate",
    "scale", "autoscale", "rollout", "expose", "run", "exec", "attach", "cp", "debug",
    "port-forward", "proxy", "drain", "cordon", "uncordon", "taint", "certificate", "auth",
    "config", "plugin", "alpha",
})

DOCKER_VALUE_FLAGS = frozenset({
    "--host", "--context", "--config", "--log-level", "--tlscacert", "--tlscert", "--tlskey",
    "--filter", "--format", "--time", "--timeout", "--signal", "--tail", "--since", "--until",
    "--name", "--user", "--workdir", "--env", "--volume", "--mount", "--network", "--publish",
    "--entrypoint", "--restart", "--memory", "--cpus", "--label", "--cap-add", "--cap-drop",
    "--device", "--pid", "--ipc", "--userns", "--security-opt", "--platform",
})
DOCKER_SHORT = {"-H": "--host", "-c": "--context", "-l": "--log-level", "-D": "--debug",
                "-f": "--force", "-a": "--all", "-t": "--time", "-s": "--signal",
                "-e": "--env", "-v": "--volume", "-u": "--user", "-w": "--workdir",
                "-p": "--publish", "-i": "--interactive", "-d": "--detach"}
DOCKER_SHORT_VALUE = frozenset({"-H", "-c", "-l", "-t", "-s", "-e", "-v", "-u", "-w", "-p"})
# The commands whose -t is a boolean (--tty, --timestamps), not --time's value.
DOCKER_TTY_VERBS = frozenset({"run", "exec", "create", "logs"})
DOCKER_GROUPS = frozenset({"container", "image", "network", "volume", "system", "builder",
                           "compose", "context", "plugin", "secret", "service", "stack",
                           "swarm", "node", "config", "trust", "manifest", "buildx"})


@dataclass(frozen=True)
class ParsedCommand:
    """One command line read with its program's grammar."""

    program: str
    """``kubectl``, ``docker`` or the first word as written."""
    words: tuple[str, ...]
    """The positional words (verb, subcommand, resources, names), in order."""
    flags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Long flag name -> its values (``""`` for a boolean flag), short forms normalised."""
    after_dashes: tuple[str, ...] = ()
    """The argv after ``--`` (another program's)."""
    ambiguous: tuple[str, ...] = ()
    """Words that may be an unknown flag's value rather than positional."""
    alternatives: tuple[ParsedCommand, ...] = ()
    """The other ways kubectl may read the same argv (``readings``)."""
    unresolved: bool = False
    """Whether the argv has more readings than were read (``MAX_READINGS``, ``MAX_STEPS``)."""

    @property
    def readings(self) -> tuple[ParsedCommand, ...]:
        """This reading and every other one: a reviewer rates the worst."""
        return (self, *self.alternatives)

    @property
    def verb(self) -> str:
        return self.words[0] if self.words else ""

    @property
    def action(self) -> tuple[str, ...]:
        """The verb and, for a command group (``rollout``, ``set``, ``create``...), its
        subcommand, by its own name (``create deploy`` is ``("create", "deployment")``):
        ``("set", "image")``, ``("create", "clusterrolebinding")``."""
        groups = KUBECTL_GROUPS if self.program == "kubectl" else DOCKER_GROUPS
        if self.verb in groups and len(self.words) > 1:
            if self.program == "kubectl":
                return self.verb, subcommand(self.verb, self.words[1])
            return self.words[:2]
        return self.words[:1]

    def flag(self, name: str) -> tuple[str, ...]:
        return tuple(self.flags.get(name, ()))

    def has(self, name: str) -> bool:
        return name in self.flags

    @property
    def verb_candidates(self) -> tuple[str, ...]:
        """Every word that could be the verb under some reading of ambiguous flags."""
        out = list(dict.fromkeys(r.verb for r in self.readings if r.verb))
        out += [w for w in self.ambiguous if w not in out]
        if self.ambiguous and len(self.words) > 1:
            out += [w for w in self.words[1:3] if w not in out]
        return tuple(out)


def subcommand(group: str, word: str) -> str:
    """The subcommand ``word`` names in kubectl's command group ``group`` (its aliases read as
    its own name: ``subcommand("create", "cj")`` is ``"cronjob"``)."""
    return KUBECTL_SUBCOMMAND_ALIASES.get(group, {}).get(word, word)


# kubectl's built-in resource types: the singular name, then the plural and the short names
# (``kubectl api-resources``). kubectl accepts any of them, in any case, alone or with the
# API group (``deployments.apps``, ``deployments.v1.apps``), and lists of them (``po,svc``).
_RESOURCE_NAMES = (
    ("pod", "pods", "po"), ("service", "services", "svc"), ("configmap", "configmaps", "cm"),
    ("secret", "secrets"), ("serviceaccount", "serviceaccounts", "sa"),
    ("namespace", "namespaces", "ns"), ("node", "nodes", "no"),
    ("persistentvolume", "persistentvolumes", "pv"),
    ("persistentvolumeclaim", "persistentvolumeclaims", "pvc"),
    ("endpoints", "ep"), ("event", "events", "ev"), ("limitrange", "limitranges", "limits"),
    ("resourcequota", "resourcequotas", "quota"),
    ("replicationcontroller", "replicationcontrollers", "rc"), ("podtemplate", "podtemplates"),
    ("componentstatus", "componentstatuses", "cs"), ("binding", "bindings"),
    ("deployment", "deployments", "deploy"), ("daemonset", "daemonsets", "ds"),
    ("statefulset", "statefulsets", "sts"), ("replicaset", "replicasets", "rs"),
    ("controllerrevision", "controllerrevisions"),
    ("job", "jobs"), ("cronjob", "cronjobs", "cj"),
    ("horizontalpodautoscaler", "horizontalpodautoscalers", "hpa"),
    ("poddisruptionbudget", "poddisruptionbudgets", "pdb"),
    ("ingress", "ingresses", "ing"), ("ingressclass", "ingressclasses"),
    ("networkpolicy", "networkpolicies", "netpol"),
    ("customresourcedefinition", "customresourcedefinitions", "crd", "crds"),
    ("apiservice", "apiservices"),
    ("role", "roles"), ("rolebinding", "rolebindings"), ("clusterrole", "clusterroles"),
    ("clusterrolebinding", "clusterrolebindings"),
    ("certificatesigningrequest", "certificatesigningrequests", "csr"),
    ("priorityclass", "priorityclasses", "pc"), ("storageclass", "storageclasses", "sc"),
    ("runtimeclass", "runtimeclasses"), ("csidriver", "csidrivers"), ("csinode", "csinodes"),
    ("csistoragecapacity", "csistoragecapacities"), ("volumeattachment", "volumeattachments"),
    ("volumeattributesclass", "volumeattributesclasses"),
    ("validatingwebhookconfiguration", "validatingwebhookconfigurations"),
    ("mutatingwebhookconfiguration", "mutatingwebhookconfigurations"),
    ("validatingadmissionpolicy", "validatingadmissionpolicies"),
    ("validatingadmissionpolicybinding", "validatingadmissionpolicybindings"),
    ("mutatingadmissionpolicy", "mutatingadmissionpolicies"),
    ("mutatingadmissionpolicybinding", "mutatingadmissionpolicybindings"),
    ("flowschema", "flowschemas"),
    ("prioritylevelconfiguration", "prioritylevelconfigurations"),
    ("lease", "leases"), ("endpointslice", "endpointslices"),
    ("ipaddress", "ipaddresses"), ("servicecidr", "servicecidrs"),
    ("deviceclass", "deviceclasses"), ("resourceclaim", "resourceclaims"),
    ("resourceclaimtemplate", "resourceclaimtemplates"), ("resourceslice", "resourceslices"),
    ("tokenreview", "tokenreviews"), ("subjectaccessreview", "subjectaccessreviews"),
    ("selfsubjectaccessreview", "selfsubjectaccessreviews"),
    ("selfsubjectrulesreview", "selfsubjectrulesreviews"),
    ("localsubjectaccessreview", "localsubjectaccessreviews"),
    ("selfsubjectreview", "selfsubjectreviews"),
    ("clustertrustbundle", "clustertrustbundles"), ("storageversion", "storageversions"),
    ("storageversionmigration", "storageversionmigrations"),
    ("leasecandidate", "leasecandidates"), ("podcertificaterequest", "podcertificaterequests"),
    ("devicetaintrule", "devicetaintrules"),
)
KUBECTL_RESOURCE_ALIASES: dict[str, str] = {
    name: names[0] for names in _RESOURCE_NAMES for name in names}


def resource_types(word: str) -> tuple[str, ...]:
    """The resource types a kubectl argument names, each by its singular name:
    ``deploy/web`` -> ``("deployment",)``, ``po,SVC`` -> ``("pod", "service")``,
    ``clusterroles.rbac.authorization.k8s.io`` -> ``("clusterrole",)``. A word that names no
    built-in type reads as itself, lower case and without its API group."""
    out: list[str] = []
    for part in word.split("/", 1)[0].lower().split(","):
        name = part.split(".", 1)[0]
        name = KUBECTL_RESOURCE_ALIASES.get(name, name)
        if name not in out:
            out.append(name)
    return tuple(out)


def split(command: str) -> list[str]:
    """The argv of ``command`` (POSIX shell words; plain whitespace when quotes do not close)."""
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def _normalise(name: str) -> str:
    return name.replace("_", "-")


# A command line with more ways to read its flags than this, or that takes more steps to read
# every way (a word of one reading is a step), is not read every way: the parse says
# ``unresolved`` and a reviewer treats it as one it cannot read.
MAX_READINGS = 64
MAX_STEPS = 4_000


@dataclass(frozen=True)
class Grammar:
    """The flags one command knows: short forms, and which take a value."""

    short: Mapping[str, str]
    value_flags: frozenset[str]
    bool_flags: frozenset[str]


def kubectl_grammar(action: tuple[str, ...] = ()) -> Grammar:
    """kubectl's flags as the command ``action`` reads them (``()``: any command's)."""
    if action not in KUBECTL_COMMAND_SHORT and action not in KUBECTL_COMMAND_BOOL:
        action = ()  # one grammar for every command without flags of its own
    return _grammar(action)


@functools.cache
def _grammar(action: tuple[str, ...]) -> Grammar:
    boolean = KUBECTL_COMMAND_BOOL.get(action, frozenset())
    return Grammar({**KUBECTL_SHORT, **KUBECTL_COMMAND_SHORT.get(action, {})},
                   KUBECTL_VALUE_FLAGS - boolean, KUBECTL_BOOL_FLAGS | boolean)


def parse_argv(argv: list[str]) -> ParsedCommand:
    """Read ``argv`` with kubectl's or docker's grammar (other programs: words only)."""
    if not argv:
        return ParsedCommand("", ())
    program = argv[0].rsplit("/", 1)[-1]
    if program == "kubectl":
        return _parse_kubectl(argv[1:])
    if program == "docker":
        return _parse_docker(argv[1:])
    return ParsedCommand(program, tuple(a for a in argv[1:] if not a.startswith("-")))


# ----------------------------------------------------------------------------------- kubectl

_Item = tuple[int, str]
"""A word of the argv and where it stands in it."""


def _parse_kubectl(args: list[str]) -> ParsedCommand:
    """kubectl's argv ``args`` read every way kubectl could read it.

    The first reading takes the first positional words as the command and every flag as the
    tables say (an unknown one as boolean). The others are cobra's: the command it finds (a
    flag before it that is not a global boolean takes the next word), each flag read with that
    command's own flags; and, in either, a flag the tables cannot place read both ways.
    """
    items = list(enumerate(args))
    starts = [_State(items, False, 0, [])]
    path, rest = _cobra_command(items)
    if path:
        starts.append(_State(rest, True, 0, path))
    budget = _Budget()
    readings: dict[object, ParsedCommand] = {}
    for state in _scan(starts, budget):
        parsed = ParsedCommand("kubectl", tuple(state.words), _frozen(state.flags),
                               state.after_dashes, tuple(state.ambiguous))
        key = (parsed.words, tuple(sorted(parsed.flags.items())), parsed.after_dashes)
        readings.setdefault(key, parsed)
    first, *others = readings.values()
    return replace(first, alternatives=tuple(others), unresolved=budget.exhausted)


def _cobra_command(items: list[_Item]) -> tuple[list[str], list[_Item]]:
    """The command cobra finds in ``items`` (kubectl's verb and, for a command group, the
    subcommand) and the items left once its words are taken out.

    Looking for the next command word, cobra skips a flag and, unless it knows the flag as
    boolean there (a global one; at a group, also the group's own), the word after it too.
    """
    rest = list(items)
    at = _next_command(rest, KUBECTL_GLOBAL_BOOL_FLAGS)
    if at is None:
        return [], rest
    verb = rest.pop(at)[1]
    path = [verb]
    if verb in KUBECTL_GROUPS:
        at = _next_command(rest, KUBECTL_GLOBAL_BOOL_FLAGS
                           | KUBECTL_GROUP_BOOL_FLAGS.get(verb, frozenset()))
        if at is not None and subcommand(verb, rest[at][1]) in KUBECTL_SUBCOMMANDS[verb]:
            path.append(rest.pop(at)[1])
    return path, rest


def _next_command(items: list[_Item], boolean: frozenset[str]) -> int | None:
    """Where cobra's next command word is in ``items`` (cobra's ``stripFlags``)."""
    at = 0
    while at < len(items):
        arg = items[at][1]
        at += 1
        if arg == "--":
            return None
        if arg.startswith("-") and "=" not in arg and (
                (arg.startswith("--") and _normalise(arg) not in boolean)
                or (len(arg) == 2 and arg not in boolean)):
            at += 1  # cobra takes the next word as this flag's value
        elif arg and not arg.startswith("-"):
            return at - 1
    return None


class _Budget:
    """How many readings one argv may still fork, and how many words read."""

    def __init__(self) -> None:
        self.forks = 0
        self.steps = 0
        self.exhausted = False

    def fork(self) -> bool:
        if self.forks >= MAX_READINGS:
            self.exhausted = True
            return False
        self.forks += 1
        return True

    def step(self) -> bool:
        self.steps += 1
        if self.steps <= MAX_STEPS:
            return True
        self.exhausted = True
        return False


@dataclass
class _State:
    """One reading in progress: what it reads, where it is and what it has read.

    ``found``: ``items`` are what is left once the command cobra found (``words`` so far) is
    taken out, and its own flags apply throughout. Otherwise the first positional words are the
    command, flags before it are read with any command's flags, and an unknown flag before it
    is boolean (cobra's reading is the other one).
    """

    items: list[_Item]
    found: bool
    at: int
    words: list[str]
    flags: dict[str, list[str]] = field(default_factory=dict)
    ambiguous: list[str] = field(default_factory=list)
    after_dashes: tuple[str, ...] = ()

    def fork(self) -> _State:
        return _State(self.items, self.found, self.at, list(self.words),
                      {k: list(v) for k, v in self.flags.items()}, list(self.ambiguous),
                      self.after_dashes)

    def add(self, name: str, value: str) -> None:
        self.flags.setdefault(name, []).append(value)


def _scan(starts: list[_State], budget: _Budget) -> list[_State]:
    """Every reading from ``starts`` as pflag reads them: ``starts`` first, in order, then the
    other ways to read their flags."""
    done: list[_State] = []
    pending = collections.deque(starts)
    while pending:
        state = pending.popleft()
        _read(state, pending, budget)
        done.append(state)
    return done


def _is_command(words: list[str]) -> bool:
    """Whether ``words`` hold the whole command (a group's subcommand too)."""
    return bool(words) and (words[0] not in KUBECTL_GROUPS or len(words) > 1)


def _action(words: list[str]) -> tuple[str, ...]:
    if words and words[0] in KUBECTL_GROUPS and len(words) > 1:
        return words[0], subcommand(words[0], words[1])
    return tuple(words[:1])


def _is_flag(word: str) -> bool:
    return word.startswith("-") and len(word) > 1 and not _is_number(word)


def _read(state: _State, pending: collections.deque[_State], budget: _Budget) -> None:
    """Read ``state`` to the end of its items; each other way to read a flag is a new state in
    ``pending``."""
    items = state.items
    while state.at < len(items) and budget.step():
        index, arg = items[state.at]
        state.at += 1
        following = items[state.at] if state.at < len(items) else None
        known = state.found or _is_command(state.words)
        grammar = kubectl_grammar(_action(state.words) if known else ())
        if arg == "--":
            state.after_dashes = tuple(a for _, a in items[state.at:])
            return
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg.partition("=")
            name = _normalise(name)
            if eq:
                state.add(name, value)
            elif name in grammar.value_flags:
                _take_value(state, name, following, pending, budget)
            elif name in grammar.bool_flags:
                state.add(name, "")
            else:
                _unknown(state, name, index, following, known, pending, budget)
        elif _is_flag(arg):
            _read_shorts(state, arg, grammar, index, following, known, pending, budget)
        elif known or arg not in ("", "-"):  # cobra skips these looking for the command
            state.words.append(arg)


def _take_value(state: _State, name: str, following: _Item | None,
                pending: collections.deque[_State], budget: _Budget) -> None:
    """A value flag takes the next word, even one that looks like a flag (as pflag does); if
    it does, the other reading (the tables are wrong, the word is a flag) is kept too."""
    if following is None:
        state.add(name, "")
        return
    if _is_flag(following[1]) and budget.fork():
        other = state.fork()
        other.add(name, "")
        pending.append(other)
    state.add(name, following[1])
    state.at += 1


def _unknown(state: _State, name: str, index: int, following: _Item | None, known: bool,
             pending: collections.deque[_State], budget: _Budget) -> None:
    """A flag the tables do not have: boolean here, and, once the command is known, taking
    the next word in another reading."""
    state.add(name, "")
    if following is None:
        return
    if following[0] == index + 1 and not following[1].startswith("-"):
        state.ambiguous.append(following[1])  # maybe this unknown flag's value
    if known and budget.fork():
        other = state.fork()
        other.flags[name][-1] = following[1]
        other.at += 1
        pending.append(other)


def _read_shorts(state: _State, arg: str, grammar: Grammar, index: int,
                 following: _Item | None, known: bool, pending: collections.deque[_State],
                 budget: _Budget) -> None:
    """``-x``, ``-xvalue``, ``-x=value`` and combined ``-itn ns``, as pflag reads them."""
    chars = arg[1:]
    for at, char in enumerate(chars):
        short, rest = f"-{char}", chars[at + 1:]
        name = grammar.short.get(short)
        if rest.startswith("="):
            state.add(name or short, rest[1:])
            return
        if name in grammar.value_flags:
            if rest:
                state.add(name, rest)
            else:
                _take_value(state, name, following, pending, budget)
            return
        if name is not None:
            state.add(name, "")
            continue
        if len(chars) == 1:
            _unknown(state, short, index, following, known, pending, budget)
            return
        state.add(short, "")
        value = rest or (following[1] if following else "")
        if value and known and budget.fork():  # an unknown value flag would take the rest
            other = state.fork()
            other.flags[short][-1] = value
            other.at += 0 if rest else 1
            pending.append(other)


# ------------------------------------------------------------------------------------ docker

def _parse_docker(rest: list[str]) -> ParsedCommand:
    short, value_flags, short_value = DOCKER_SHORT, DOCKER_VALUE_FLAGS, DOCKER_SHORT_VALUE
    words: list[str] = []
    flags: dict[str, list[str]] = {}
    ambiguous: list[str] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        i += 1
        if arg == "--":
            return ParsedCommand("docker", tuple(words), _frozen(flags), tuple(rest[i:]),
                                 tuple(ambiguous))
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg.partition("=")
            name = _normalise(name)
            if eq:
                flags.setdefault(name, []).append(value)
            elif name in value_flags and i < len(rest):
                flags.setdefault(name, []).append(rest[i])
                i += 1
            else:
                flags.setdefault(name, []).append("")
                if name not in value_flags and i < len(rest) and not rest[i].startswith("-"):
                    ambiguous.append(rest[i])  # maybe this unknown flag's value
            continue
        if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
            # combined short flags, as pflag reads them: booleans (-it) until one that takes
            # a value, which takes the rest of the word or the next one (-Dl debug, -t0)
            verb = words[-1] if len(words) > 1 and words[0] in DOCKER_GROUPS \
                else words[0] if words else ""
            for at, char in enumerate(arg[1:], start=2):
                letter = f"-{char}"
                long = short.get(letter, letter)
                if letter not in short_value or (letter == "-t" and verb in DOCKER_TTY_VERBS):
                    flags.setdefault(long, []).append("")
                    continue
                if at < len(arg):
                    flags.setdefault(long, []).append(arg[at:].removeprefix("="))
                elif i < len(rest):
                    flags.setdefault(long, []).append(rest[i])
                    i += 1
                else:
                    flags.setdefault(long, []).append("")
                break
            else:
                if len(arg) == 2 and arg not in short and i < len(rest) \
                        and not rest[i].startswith("-"):
                    ambiguous.append(rest[i])  # maybe this unknown flag's value
            continue
        words.append(arg)
    return ParsedCommand("docker", tuple(words), _frozen(flags), (), tuple(ambiguous))


def _is_number(arg: str) -> bool:
    """``-5``, ``-0.5``: a negative number, not a flag (ASCII digits only: ``-²`` is a flag)."""
    digits = arg[1:].replace(".", "", 1)
    return digits.isascii() and digits.isdigit()


def _frozen(flags: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {k: tuple(v) for k, v in flags.items()}


@functools.lru_cache(maxsize=32)
def parse(command: str) -> ParsedCommand:
    """``command`` read every way (``parse_argv``). The voters of one request read the same
    commands: the last few parses are kept (a few, as a command may be 4 KiB read 64 ways).
    Callers must not change what it returns."""
    return parse_argv(split(command))


__all__ = ["KUBECTL_VERBS", "ParsedCommand", "parse", "parse_argv", "resource_types", "split",
           "subcommand"]
