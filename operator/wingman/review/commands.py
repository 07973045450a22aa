"""kubectl's and docker's command-line grammar, as reviewers need it: verb, arguments, flags.

Both CLIs accept flags anywhere (cobra intersperses them): ``kubectl -n apps delete ns prod``,
``kubectl delete --namespace=apps ns prod`` and ``kubectl delete ns prod -n apps`` are one
command. A flag takes its value as ``--flag=value``, ``--flag value``, ``-fvalue`` or
``-f value``; which flags take a value is in the tables below (kubectl's global options,
``kubectl options``, and the value-taking flags of its commands). Everything after ``--`` is
the argv of another program (``kubectl exec ... -- sh``).

kubectl accepts other names for some subcommands (``kubectl create deploy``, ``create cj``,
``top po``) and for every resource type (plural, short names, ``deployments.apps``, lists like
``po,svc``): ``ParsedCommand.action`` reads a subcommand by its own name and
``resource_types`` a resource type by its singular name, so risk tables keyed on one name see
them all.

An unknown flag given without ``=`` is ambiguous: it may take the next word as its value, or
not. The parse then records ``ambiguous`` and keeps both readings available
(``verb_candidates``), so a reviewer rates the worse one and a crafted flag cannot hide the
verb. Pure: the standard library only.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

# kubectl's global options (`kubectl options`) that take a value; the rest are boolean.
KUBECTL_GLOBAL_VALUE_FLAGS = frozenset({
    "--as", "--as-group", "--as-uid", "--cache-dir", "--certificate-authority",
    "--client-certificate", "--client-key", "--cluster", "--context", "--kubeconfig",
    "--log-flush-frequency", "--namespace", "--password", "--profile", "--profile-output",
    "--request-timeout", "--server", "--tls-server-name", "--token", "--user", "--username",
    "--v", "--vmodule", "--log-backtrace-at", "--log-dir", "--log-file",
    "--log-file-max-size", "--stderrthreshold",
})
KUBECTL_GLOBAL_BOOL_FLAGS = frozenset({
    "--insecure-skip-tls-verify", "--match-server-version", "--disable-compression",
    "--warnings-as-errors", "--add-dir-header", "--alsologtostderr", "--logtostderr",
    "--one-output", "--skip-headers", "--skip-log-headers",
})
# Value-taking flags of kubectl's commands (those a reviewer's command is likely to carry).
KUBECTL_COMMAND_VALUE_FLAGS = frozenset({
    "--filename", "--selector", "--output", "--container", "--replicas", "--image",
    "--field-selector", "--type", "--patch", "--grace-period", "--timeout", "--cascade",
    "--for", "--to-revision", "--clusterrole", "--role", "--group", "--serviceaccount",
    "--from-literal", "--from-file", "--from-env-file", "--port", "--target-port",
    "--current-replicas", "--resource-version", "--min", "--max", "--cpu-percent",
    "--env", "--limits", "--requests", "--restart", "--overrides", "--template",
    "--field-manager", "--subresource", "--kustomize", "--raw", "--since", "--since-time",
    "--tail", "--limit-bytes", "--address", "--profile", "--copy-to", "--target",
    "--share-processes", "--duration", "--bound-object-kind", "--bound-object-name",
    "--audience", "--prune-allowlist", "--sort-by", "--chunk-size", "--label-columns",
    "--show-kind", "--from", "--name", "--labels",
    "--expose", "--schedule", "--resource", "--verb", "--resource-name", "--non-resource-url",
    "--aggregation-rule", "--docker-server", "--docker-username", "--docker-password",
    "--docker-email", "--cert", "--key", "--hostport", "--pod-running-timeout",
    "--selector-overwrite", "--session-affinity", "--external-ip", "--cluster-ip",
    "--load-balancer-ip", "--protocol", "--generator", "--revision", "--containers",
    "--local-port", "--namespace-selector", "--path", "--class", "--rule", "--default-backend",
    "--annotation", "--tcp", "--node-port", "--storage-class", "--ephemeral-storage",
    "--env-from", "--keys",
})
KUBECTL_SHORT = {
    "-n": "--namespace", "-s": "--server", "-v": "--v", "-f": "--filename", "-l": "--selector",
    "-o": "--output", "-c": "--container", "-p": "--patch", "-k": "--kustomize",
    "-A": "--all-namespaces", "-i": "--stdin", "-t": "--tty", "-R": "--recursive",
    "-w": "--watch", "-q": "--quiet", "-e": "--env", "-L": "--label-columns",
}
KUBECTL_VALUE_FLAGS = KUBECTL_GLOBAL_VALUE_FLAGS | KUBECTL_COMMAND_VALUE_FLAGS
KUBECTL_BOOL_FLAGS = KUBECTL_GLOBAL_BOOL_FLAGS | frozenset({
    "--all-namespaces", "--stdin", "--tty", "--recursive", "--watch", "--quiet", "--all",
    "--force", "--overwrite", "--wait", "--now", "--ignore-not-found", "--prune",
    "--server-side", "--force-conflicts", "--local", "--ignore-daemonsets",
    "--delete-emptydir-data", "--disable-eviction", "--privileged", "--show-labels",
    "--no-headers", "--previous", "--follow", "--timestamps", "--prefix", "--insecure",
    "--attach", "--rm", "--keep-annotations", "--include-uninitialized", "--openapi-patch",
    "--allow-missing-template-keys", "--export", "--exact", "--show-managed-fields",
    "--watch-only", "--ignore-errors", "--all-containers",
    # Optional values: given only as --flag=value, never as a separate word.
    "--dry-run", "--validate", "--record",
})
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
    "--filter", "--format", "--time", "--signal", "--tail", "--since", "--until", "--name",
    "--user", "--workdir", "--env", "--volume", "--mount", "--network", "--publish",
    "--entrypoint", "--restart", "--memory", "--cpus", "--label", "--cap-add", "--cap-drop",
    "--device", "--pid", "--ipc", "--userns", "--security-opt", "--platform",
})
DOCKER_SHORT = {"-H": "--host", "-c": "--context", "-l": "--log-level", "-D": "--debug",
                "-f": "--force", "-a": "--all", "-t": "--time", "-s": "--signal",
                "-e": "--env", "-v": "--volume", "-u": "--user", "-w": "--workdir",
                "-p": "--publish", "-i": "--interactive", "-d": "--detach"}
DOCKER_SHORT_VALUE = frozenset({"-H", "-c", "-l", "-t", "-s", "-e", "-v", "-u", "-w", "-p"})
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
        out = [self.verb] if self.verb else []
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


def parse_argv(argv: list[str]) -> ParsedCommand:
    """Read ``argv`` with kubectl's or docker's grammar (other programs: words only)."""
    if not argv:
        return ParsedCommand("", ())
    program = argv[0].rsplit("/", 1)[-1]
    if program == "kubectl":
        short, value_flags, bool_flags = KUBECTL_SHORT, KUBECTL_VALUE_FLAGS, KUBECTL_BOOL_FLAGS
        short_value = frozenset(k for k, v in KUBECTL_SHORT.items() if v in KUBECTL_VALUE_FLAGS)
    elif program == "docker":
        short, value_flags, bool_flags = DOCKER_SHORT, DOCKER_VALUE_FLAGS, frozenset()
        short_value = DOCKER_SHORT_VALUE
    else:
        return ParsedCommand(program, tuple(a for a in argv[1:] if not a.startswith("-")))
    words: list[str] = []
    flags: dict[str, list[str]] = {}
    ambiguous: list[str] = []
    rest = argv[1:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        i += 1
        if arg == "--":
            return ParsedCommand(program, tuple(words), _frozen(flags), tuple(rest[i:]),
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
                if name not in bool_flags and name not in value_flags and i < len(rest) \
                        and not rest[i].startswith("-"):
                    ambiguous.append(rest[i])  # maybe this unknown flag's value
            continue
        if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
            head = arg[:2]
            if head in short_value:
                long = short[head]
                if len(arg) > 2:
                    value = arg[2:].removeprefix("=")
                    flags.setdefault(long, []).append(value)
                elif i < len(rest):
                    flags.setdefault(long, []).append(rest[i])
                    i += 1
                else:
                    flags.setdefault(long, []).append("")
                continue
            for char in arg[1:]:  # combined booleans: -it
                flags.setdefault(short.get(f"-{char}", f"-{char}"), []).append("")
            if len(arg) == 2 and head not in short and i < len(rest) \
                    and not rest[i].startswith("-"):
                ambiguous.append(rest[i])  # maybe this unknown flag's value
            continue
        words.append(arg)
    return ParsedCommand(program, tuple(words), _frozen(flags), (), tuple(ambiguous))


def _is_number(arg: str) -> bool:
    return arg[1:].replace(".", "", 1).isdigit()


def _frozen(flags: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {k: tuple(v) for k, v in flags.items()}


def parse(command: str) -> ParsedCommand:
    return parse_argv(split(command))


__all__ = ["KUBECTL_VERBS", "ParsedCommand", "parse", "parse_argv", "resource_types", "split",
           "subcommand"]
