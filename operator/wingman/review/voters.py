"""Built-in deterministic voters: the panel works offline, and every review is reproducible.

- ``destructive``: reads each command with kubectl's or docker's grammar
  (``wingman.review.commands``: flags anywhere, values with ``=`` or separate; subcommands and
  resource types by any name kubectl accepts for them) and rates its action, flags and targets
  from the tables below, in every way kubectl could read the command (``readings``: where a
  flag before the verb or a flag the tables cannot place changes what runs); the worst counts.
  It knows the release namespace (:class:`Namespaces`): anything there is high, a change
  there critical; a change in a system namespace (``SYSTEM_NAMESPACES``), creating or deleting
  one too, is high. A ``--raw`` path is read as the API server reads it (%-decoded); one
  written otherwise than plainly is high.
- ``blast-radius``: weighs the environment, the number of commands and their reach (in every
  reading of each): every namespace, cluster-scoped objects (built-in, ``Cluster<Kind>`` and
  well-known custom ones: ``CLUSTER_RESOURCES``, ``CLUSTER_CUSTOM_RESOURCES``) and the API
  server's own URLs (``--raw /metrics``, which only a ClusterRole grants) are high, an object
  of a type no table knows (a custom resource, maybe cluster-scoped) medium, a change in a system
  namespace (``SYSTEM_NAMESPACES``) critical, reading there as routine as elsewhere; and,
  where the request was previewed, what the preview found: how many objects, which kinds and
  namespaces; a command the preview could not show cleanly (target missing, forbidden,
  invalid, not previewable) is a finding (``PreviewFinding``) that rejects. When the gateway's
  targets are known (:class:`Namespaces`), a command that acts outside them (or, naming no
  namespace, in kubectl's default, ``EXECUTOR_DEFAULT_NAMESPACE``, or its action's own,
  ``ACTION_NAMESPACES``), in every namespace, on cluster-scoped objects (but a target's own
  Namespace, where its Role is known to grant what the command asks of it) or on the API
  server's own URLs is high and rejected: the executor holds Roles in the targets only, and
  the API server will refuse it.
- ``allowlist``: rejects any command the environment's allowlist does not cover.
- ``prompt-injection``: rejects requests whose text tries to instruct the reviewers.
  (``wingman.review.injection``; the provenance excerpt is scanned too)

``destructive`` and ``blast-radius`` raise their risk one level, and flag ``UntrustedInput``,
when the request says (``spec.source.inputTrust: Untrusted``) that the input that led to it came
from content the agent does not trust: an action prompted by a web page or an issue comment
deserves more caution than one a person asked for.

``wingman.review.panel`` builds a panel from the policy's voter specs.

The request text is untrusted data: voters only match it against fixed tables, never act on it.
The tables are documented where they are defined.
"""

from __future__ import annotations

import itertools
import posixpath
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from wingman.errors import ConfigError
from wingman.review.commands import (
    KUBECTL_SUBCOMMANDS,
    KUBECTL_VERBS,
    ParsedCommand,
    parse,
    resource_types,
)
from wingman.review.consensus import (
    DESTRUCTIVE,
    PREVIEW_FINDING,
    ReviewInput,
    Risk,
    Verdict,
    Vote,
    Voter,
)
from wingman.review.injection import PromptInjectionVoter

L, M, H, C = Risk.LOW, Risk.MEDIUM, Risk.HIGH, Risk.CRITICAL

# kubectl actions (verb, or verb and subcommand, by its own name: ``create deploy`` is
# ``("create", "deployment")``) and what they risk. An action not listed falls back to its verb;
# a verb kubectl does not have runs a plugin (an arbitrary program), and so may a ``create``
# subcommand kubectl does not have (``kubectl create foo`` runs ``kubectl-create-foo``): both
# are high.
KUBECTL_ACTIONS: dict[tuple[str, ...], Risk] = {
    ("get",): L, ("describe",): L, ("logs",): L, ("top",): L, ("explain",): L,
    ("api-resources",): L, ("api-versions",): L, ("version",): L, ("events",): L,
    ("wait",): L, ("diff",): L, ("kustomize",): L, ("completion",): L, ("options",): L,
    # cluster-info dump prints every object and every pod's log in kube-system (with -A, in
    # every namespace) into the output workers read: whatever a log holds, credentials too.
    ("help",): L, ("cluster-info",): L, ("cluster-info", "dump"): H,
    ("auth",): M, ("auth", "can-i"): L, ("auth", "whoami"): L, ("auth", "reconcile"): H,
    # undo rolls back to a revision nobody reviewed; resume rolls out whatever changed while
    # paused; pause stops every later rollout (a fix too) until someone resumes it.
    ("rollout",): M, ("rollout", "restart"): L, ("rollout", "status"): L,
    ("rollout", "history"): L, ("rollout", "undo"): H, ("rollout", "pause"): H,
    ("rollout", "resume"): H,
    # autoscale hands the replica count to an autoscaler: --max below today's count (or the
    # default --min, 1) scales the workload down.
    # expose and create service put a Service in front of traffic: a name other pods resolve
    # (one named `kubernetes` is found first through their DNS search path), a selector over
    # any app's pods.
    ("scale",): M, ("autoscale",): H, ("label",): M, ("annotate",): M, ("expose",): H,
    ("uncordon",): H,
    # A quota (--hard=pods=0, a memory cap) stops pods being created; a PodDisruptionBudget
    # (--min-available=100%, --max-unavailable=0) blocks every drain and eviction.
    # A PriorityClass above the workloads' (or --global-default, every new pod's) has the
    # scheduler preempt, evict, running pods of lower priority anywhere in the cluster.
    # create with no subcommand creates whatever its files (-f, -k) or body say: as apply.
    ("create",): H, ("create", "configmap"): M, ("create", "ingress"): M,
    ("create", "namespace"): M, ("create", "poddisruptionbudget"): H,
    ("create", "priorityclass"): H, ("create", "quota"): H, ("create", "service"): H,
    ("create", "secret"): H, ("create", "token"): C,
    ("create", "role"): H, ("create", "clusterrole"): H, ("create", "rolebinding"): H,
    ("create", "clusterrolebinding"): H, ("create", "serviceaccount"): H,
    ("create", "deployment"): H, ("create", "job"): H, ("create", "cronjob"): H,
    ("set",): H, ("set", "image"): H, ("set", "env"): H, ("set", "serviceaccount"): H,
    # set resources: a limit or request that shrinks a workload (--limits=memory=1Mi,
    # cpu=1m) gets its pods OOM-killed, throttled or unschedulable.
    ("set", "subject"): H, ("set", "selector"): H, ("set", "resources"): H,
    ("apply",): H, ("replace",): H, ("patch",): H, ("edit",): H, ("run",): H,
    ("cp",): H, ("drain",): H, ("cordon",): H, ("taint",): H, ("port-forward",): H,
    ("proxy",): H, ("config",): H, ("config", "get-contexts"): L,
    ("config", "current-context"): L, ("certificate",): H, ("certificate", "approve"): C,
    # plugin list lists the kubectl-* programs on the PATH, running none of them
    ("plugin",): M, ("plugin", "list"): L, ("alpha",): H,
    ("delete",): C, ("exec",): C, ("attach",): C, ("debug",): C,
}
# Service types that open a workload to outside the cluster (or, ExternalName, send a cluster
# name's traffic outside it): ``kubectl expose --type``, ``kubectl create service TYPE``.
OUTSIDE_SERVICE_TYPES = frozenset({"loadbalancer", "nodeport", "externalname"})
# kubectl actions that, given a resource type and no name or selector, act on every object of
# that type in the namespace (``kubectl rollout restart deployment -n apps`` restarts them all).
EVERY_OBJECT_ACTIONS = frozenset({("rollout", "restart"), ("rollout", "undo"),
                                  ("rollout", "pause"), ("rollout", "resume")})
# docker actions; a management command (``docker container rm``) is read as its subcommand.
# A command not listed (``docker plugin install``, ``docker compose down``) is high: nothing
# says what it does, so a human reads it.
DOCKER_ACTIONS: dict[str, Risk] = {
    "ps": L, "logs": L, "inspect": L, "images": L, "version": L, "info": L, "top": L,
    "stats": L, "port": L, "diff": L, "history": L, "ls": L, "events": L, "df": L,
    "wait": L, "search": L,
    # restart and start act on whatever container the name or ID is: the engine has no
    # namespaces or target rules (see DOCKER_OWNED); stop and pause take the container's
    # service down, as scaling to zero does; rename breaks whatever reaches it by name (a user
    # network's DNS, --link, scripts).
    "restart": M, "start": M, "stop": H, "pause": H, "unpause": M, "pull": M, "tag": M,
    "rename": H, "update": H, "create": H, "run": H, "cp": H, "kill": H, "rmi": H,
    "push": H, "commit": H, "build": H, "load": H, "import": H, "login": H, "logout": M,
    "rm": C, "prune": C, "exec": C, "attach": C,
}
# Flags that change who acts, which cluster is acted on or how kubectl is configured: a
# command approved for one identity and cluster must not run as another.
IDENTITY_FLAGS: dict[str, Risk] = {
    "--as": C, "--as-group": C, "--as-uid": C, "--token": H, "--user": H, "--username": H,
    "--password": H, "--client-key": H, "--client-certificate": H, "--kubeconfig": H,
    "--context": H, "--cluster": H, "--server": H, "--certificate-authority": H,
    "--insecure-skip-tls-verify": H, "--tls-server-name": H,
    # kubectl's preferences file: aliases and default flags for every command
    "--kuberc": H,
}
# A kustomization (`kubectl kustomize DIR`, `-k DIR`) that kustomize fetches rather than reads
# from a local directory: a URL (any scheme), a git repository (`git::`, `git@host:`,
# `user@host:path`, `host.tld:path` (scp style, no user), the `gh:` shorthand) or a path that
# starts with a host name (`github.com/org/repo//dir?ref=v1`). Remote content the reviewer
# cannot see.
REMOTE_KUSTOMIZATION = re.compile(
    r"^(?:[a-z][a-z0-9+.-]*://|git::|gh:|[\w.-]+@[\w.-]+:|[\w-]+(?:\.[\w-]+)+:"
    r"|[\w-]+(?:\.[\w-]+)+/)",
    re.IGNORECASE)
# `kubectl kustomize` flags that run programs or read beyond the kustomization.
KUSTOMIZE_FLAGS: dict[str, str] = {
    "--enable-alpha-plugins": "lets the kustomization run plugins (programs, containers)",
    "--enable-helm": "runs helm, which fetches charts",
    "--helm-command": "names the program kustomize runs as helm",
}
DOCKER_TARGET_FLAGS: dict[str, Risk] = {
    "--host": H, "--context": H, "--config": H, "--tlscacert": H, "--tlscert": H,
    "--tlskey": H, "--privileged": C, "--cap-add": C, "--pid": H, "--userns": H,
    "--security-opt": H, "--device": H, "--network": M, "--volume": H, "--mount": H,
}
DANGEROUS_FLAGS: dict[str, Risk] = {
    "--force": H, "--all": H, "--prune": C, "--privileged": C, "--now": H,
    "--force-conflicts": H, "--disable-eviction": H, "--delete-emptydir-data": H,
    # label/annotate --overwrite changes a label a Service, ReplicaSet or NetworkPolicy
    # selects on: its pods drop out of (or fall into) it.
    "--overwrite": H,
    # expose, run, create: a JSON document merged into the object, whatever the flags show
    # (a LoadBalancer, external IPs, a host path)
    "--overrides": H,
}
# Resource types that steer traffic: kube-proxy, the endpoint and ingress controllers and
# network plugins act on them and on their labels (a Service dropped, another app's traffic
# sent elsewhere). The chart lists writes to them as escalating (values.yaml).
TRAFFIC_RESOURCES = frozenset({
    "service", "endpoints", "endpointslice", "networkpolicy", "ingress", "ingressclass",
    "gateway", "httproute", "grpcroute", "tlsroute", "tcproute", "udproute", "referencegrant"})
# Label keys that move traffic on whatever carries them: a Service's proxy and headlessness,
# an EndpointSlice's Service and manager.
TRAFFIC_LABELS = ("service.kubernetes.io/", "endpointslice.kubernetes.io/",
                  "kubernetes.io/service-name")
# Container names the engine gives containers someone else owns: the kubelet's through
# cri-dockerd (`k8s_<container>_<pod>_<namespace>_...`), the control plane's, kind's nodes; a
# bare ID (12 to 64 hex digits, or a prefix) tells the reviewer nothing of which it is.
DOCKER_OWNED = re.compile(
    r"(?:k8s_|kube-|etcd|kind-|.*-control-plane\Z|[0-9a-f]{12,64}\Z)", re.IGNORECASE)
# Resource types whose annotations controllers act on: ingress-nginx runs an Ingress's
# configuration snippets, a cloud controller makes a Service's load balancer internal or not.
CONTROLLER_ANNOTATED = frozenset({"service", "ingress"})
# kubectl actions whose --selector (-l) or --field-selector is not what they act on but what
# they write (a PodDisruptionBudget's, a Service's selector), or that only read.
SELECTOR_SPEC_VERBS = frozenset({"create", "expose", "run"})
# Roles whose binding hands out (nearly) everything.
POWERFUL_ROLES = frozenset({"cluster-admin", "admin", "edit", "system:masters"})
SECRET_WORDS = ("secret", "serviceaccount", "token", "kubeconfig", "certificatesigningrequest",
                "csr", "credential", "password")
# Resource types by their singular name (``wingman.review.commands.resource_types`` reads
# plurals, short names and API groups as it: ``sa``, ``secrets.v1``, ``po,ns``).
SECRET_RESOURCES = frozenset({"secret", "serviceaccount"})
# Cluster-scoped resources: changing one reaches every namespace. Every built-in type
# (``kubectl api-resources --namespaced=false -o name`` on Kubernetes 1.34, the beta and alpha
# APIs too; tests/unit/review/test_voters.py holds that list and checks this one against it),
# by its singular name (``wingman.review.commands.resource_types``).
CLUSTER_RESOURCES = frozenset({
    "node", "namespace", "customresourcedefinition", "clusterrole", "clusterrolebinding",
    "persistentvolume", "storageclass", "priorityclass", "certificatesigningrequest",
    "apiservice", "validatingwebhookconfiguration", "mutatingwebhookconfiguration",
    "validatingadmissionpolicy", "validatingadmissionpolicybinding",
    "mutatingadmissionpolicy", "mutatingadmissionpolicybinding", "runtimeclass",
    "ingressclass", "csidriver", "csinode", "volumeattachment", "volumeattributesclass",
    "flowschema", "prioritylevelconfiguration", "ipaddress", "servicecidr", "deviceclass",
    "componentstatus", "resourceslice", "devicetaintrule", "clustertrustbundle",
    "storageversion",
    "storageversionmigration", "tokenreview", "subjectaccessreview",
    "selfsubjectaccessreview", "selfsubjectrulesreview", "selfsubjectreview",
})
# Custom resources: a cluster runs whatever CRDs its add-ons bring, and kubectl names them
# as written (``clusterissuers.cert-manager.io``, ``ClusterPolicy``). Cluster-scoped are
# - those named by the convention ``Cluster<Kind>`` (cert-manager's ClusterIssuer, Kyverno's
#   ClusterPolicy, external-secrets' ClusterSecretStore, Tekton's ClusterTask): any type whose
#   name starts with ``cluster`` but is not ``cluster`` itself (Cluster API's and
#   CloudNativePG's Clusters are namespaced), read as cluster-scoped whatever it is;
# - these of well-known add-ons, by singular and plural name: the Gateway API's
#   GatewayClass, Gatekeeper's ConstraintTemplate, Calico's, Cilium's, Karpenter's,
#   Crossplane's, the CSI snapshotter's classes and contents, OpenShift's.
CLUSTER_PREFIX = "cluster"
CLUSTER_CUSTOM_RESOURCES = frozenset({
    "gatewayclass", "gatewayclasses", "constrainttemplate", "constrainttemplates",
    "globalnetworkpolicy", "globalnetworkpolicies", "globalnetworkset", "globalnetworksets",
    "ippool", "ippools", "ipamblock", "ipamblocks", "blockaffinity", "blockaffinities",
    "bgpconfiguration", "bgpconfigurations", "bgppeer", "bgppeers", "felixconfiguration",
    "felixconfigurations", "hostendpoint", "hostendpoints", "kubecontrollersconfiguration",
    "kubecontrollersconfigurations", "tier", "tiers", "ipreservation", "ipreservations",
    "ciliumnode", "ciliumnodes", "ciliumidentity", "ciliumidentities",
    "ciliumclusterwidenetworkpolicy", "ciliumclusterwidenetworkpolicies",
    "ciliumclusterwideenvoyconfig", "ciliumclusterwideenvoyconfigs",
    "ciliumloadbalancerippool", "ciliumloadbalancerippools", "ciliumbgppeeringpolicy",
    "ciliumbgppeeringpolicies", "ciliumexternalworkload", "ciliumexternalworkloads",
    "ciliumcidrgroup", "ciliumcidrgroups", "ciliumendpointslice", "ciliumendpointslices",
    "nodepool", "nodepools", "nodeclaim", "nodeclaims", "ec2nodeclass", "ec2nodeclasses",
    "provider", "providers", "providerrevision", "providerrevisions", "composition",
    "compositions", "compositeresourcedefinition", "compositeresourcedefinitions",
    "volumesnapshotclass", "volumesnapshotclasses", "volumesnapshotcontent",
    "volumesnapshotcontents", "nodefeaturerule", "nodefeaturerules",
    "securitycontextconstraints", "project", "projects", "clusterversion", "clusteroperator",
})
# Namespaced types a reviewer knows, so that an object of any other type is one whose scope
# is unknown: the built-in ones (``kubectl api-resources --namespaced=true -o name``; the
# ``all`` category reads only namespaced types), and the namespaced custom resources of the
# add-ons above and of the common others (cert-manager, the Prometheus operator, the Gateway
# API, Istio, Argo, KEDA, Kyverno, external-secrets, Velero, Flux).
NAMESPACED_RESOURCES = frozenset({
    "pod", "service", "configmap", "secret", "serviceaccount", "persistentvolumeclaim",
    "endpoints", "event", "limitrange", "resourcequota", "replicationcontroller",
    "podtemplate", "binding", "deployment", "daemonset", "statefulset", "replicaset",
    "controllerrevision", "job", "cronjob", "horizontalpodautoscaler", "poddisruptionbudget",
    "ingress", "networkpolicy", "role", "rolebinding", "csistoragecapacity", "lease",
    "endpointslice", "resourceclaim", "resourceclaimtemplate", "localsubjectaccessreview",
    "leasecandidate", "podcertificaterequest", "all",
})
NAMESPACED_CUSTOM_RESOURCES = frozenset({
    "certificate", "certificates", "certificaterequest", "certificaterequests", "issuer",
    "issuers", "order", "orders", "challenge", "challenges", "servicemonitor",
    "servicemonitors", "podmonitor", "podmonitors", "probe", "probes", "prometheusrule",
    "prometheusrules", "prometheus", "prometheuses", "alertmanager", "alertmanagers",
    "alertmanagerconfig", "alertmanagerconfigs", "gateway", "gateways", "httproute",
    "httproutes", "grpcroute", "grpcroutes", "tlsroute", "tlsroutes", "tcproute", "tcproutes",
    "udproute", "udproutes", "referencegrant", "referencegrants", "virtualservice",
    "virtualservices", "destinationrule", "destinationrules", "serviceentry",
    "serviceentries", "sidecar", "sidecars", "peerauthentication", "peerauthentications",
    "authorizationpolicy", "authorizationpolicies", "requestauthentication",
    "requestauthentications", "envoyfilter", "envoyfilters", "rollout", "rollouts",
    "analysisrun", "analysisruns", "analysistemplate", "analysistemplates", "application",
    "applications", "applicationset", "applicationsets", "appproject", "appprojects",
    "workflow", "workflows", "workflowtemplate", "workflowtemplates", "cronworkflow",
    "cronworkflows", "scaledobject", "scaledobjects", "scaledjob", "scaledjobs",
    "triggerauthentication", "triggerauthentications", "policy", "policies", "policyreport",
    "policyreports", "policyexception", "policyexceptions", "externalsecret",
    "externalsecrets", "secretstore", "secretstores", "volumesnapshot", "volumesnapshots",
    "backup", "backups", "restore", "restores", "schedule", "schedules",
    "verticalpodautoscaler", "verticalpodautoscalers", "kustomization", "kustomizations",
    "helmrelease", "helmreleases", "gitrepository", "gitrepositories", "helmrepository",
    "helmrepositories", "networkset", "networksets",
    # Cluster API's, named Cluster<Kind> yet namespaced (the prefix rule yields to them)
    "clusterclass", "clusterclasses", "clusterresourceset", "clusterresourcesets",
    "clusterresourcesetbinding", "clusterresourcesetbindings",
})
# Namespaces whose workloads serve the whole cluster, matched whole (lower case): a change there
# (a restart, a scale, a patch) reaches every workload's networking, traffic, admission or
# certificates, so it is held for a human however routine its action; reading there stays as
# routine as elsewhere.
# - ``kube-*``: Kubernetes reserves the prefix for its own (kube-system: DNS, kube-proxy, the
#   network plugin on many clusters; kube-public, kube-node-lease).
# - ``*-system``: the convention of cluster add-ons (calico-system, istio-system,
#   gatekeeper-system, cilium-system, flux-system, longhorn-system, cattle-system).
# - ``openshift-*``: OpenShift's own components, as kube-* is Kubernetes'.
# - ``tigera-operator``: Calico's operator, which runs calico-system.
# - ``istio-*``, ``linkerd``, ``linkerd-*``: the service meshes' control planes and gateways
#   (istio-ingress, linkerd-cni), which carry other workloads' traffic.
# - ``cert-manager``: issues the cluster's TLS certificates; ``ingress-nginx``: serves every
#   Ingress; ``kyverno``: admits (or refuses) every namespace's objects.
SYSTEM_NAMESPACES = re.compile(
    r"(?:kube-.+|.+-system|openshift-.+|tigera-operator|istio-.+|linkerd(?:-.+)?"
    r"|cert-manager|ingress-nginx|kyverno)\Z")
# The namespace a kubectl command that names none acts in, as the gateway runs it: its
# kubeconfig (``wingman.gateway.executors.write_kubeconfig``) sets no namespace and kubectl's
# environment has no ``KUBERNETES_SERVICE_HOST``, so kubectl does not take the pod's own
# namespace (the release namespace) but Kubernetes' default.
EXECUTOR_DEFAULT_NAMESPACE = "default"
# kubectl actions that act on no API object: kubectl's own configuration, plugins and local
# files, and what the API server tells every authenticated identity (discovery and the
# OpenAPI schema, system:discovery; /version, system:public-info-viewer; the self reviews of
# auth can-i and whoami, system:basic-user), so the executor may run them anywhere. An
# action is matched whole or by its verb (``config view``, ``config set-context``).
OBJECTLESS_ACTIONS = frozenset({
    ("version",), ("api-resources",), ("api-versions",), ("explain",), ("completion",),
    ("options",), ("help",), ("kustomize",), ("config",), ("plugin",),
    ("auth", "whoami"), ("auth", "can-i"),
})
# kubectl actions on cluster-scoped objects only (Namespaces, ClusterRoles and their bindings,
# PriorityClasses, Nodes, CertificateSigningRequests; cluster-info dump lists the Nodes
# first), matched as OBJECTLESS_ACTIONS are.
CLUSTER_ACTIONS = frozenset({
    ("certificate",), ("create", "namespace"), ("create", "clusterrole"),
    ("create", "clusterrolebinding"), ("create", "priorityclass"), ("cordon",), ("uncordon",),
    ("drain",), ("taint",), ("top", "node"), ("cluster-info", "dump"),
})
# kubectl actions that act in no namespace: where they run, no namespace rule applies.
# (``cluster-info`` is not one: it lists the Services of -n, or of kube-system, see
# ACTION_NAMESPACES.)
NAMESPACELESS_ACTIONS = OBJECTLESS_ACTIONS | CLUSTER_ACTIONS
# kubectl actions that, given no -n, act in a namespace of their own rather than kubectl's
# default (``kubectl cluster-info`` lists the Services labelled
# kubernetes.io/cluster-service=true in kube-system), matched whole or by their verb.
ACTION_NAMESPACES: dict[tuple[str, ...], str] = {("cluster-info",): "kube-system"}
# kubectl actions whose first argument is an object's name (a pod's, or a new object's), not
# a resource type: there only a TYPE/NAME argument names a type (``logs deploy/web``,
# ``debug node/n1``; ``exec node -- sh`` runs in a pod named node).
NAME_FIRST_VERBS = frozenset({"exec", "attach", "port-forward", "logs", "cp", "run", "debug",
                              "create", "top", "events"})
# The values that turn a boolean flag off, and on, as pflag reads them (Go's
# ``strconv.ParseBool``): ``-A=false``, ``--all-namespaces=0``, ``-A=f`` are off; a flag given
# alone (``""``) is on, and so is one given 1, t, T, TRUE, true or True; any other value makes
# kubectl refuse to run.
PFLAG_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
PFLAG_TRUE = frozenset({"", "1", "t", "T", "TRUE", "true", "True"})
# From this log level (``-v``, ``--vmodule``) kubectl logs the bodies of the API requests and
# responses it exchanges: whole objects, whatever the command itself prints.
BODY_LOG_LEVEL = 8
_LOG_LEVEL = re.compile(r"[+-]?[0-9]{1,9}")
UNTRUSTED_INPUT = "UntrustedInput"
_LEVELS = (Risk.LOW, Risk.MEDIUM, Risk.HIGH, Risk.CRITICAL)


@dataclass(frozen=True)
class TargetRule:
    """One rule of the Role the executor holds in a gateway target (``gateway.targets[].rules``,
    or the chart's defaults), read as RBAC reads it: any of its API groups, resources (a
    subresource as ``resource/subresource``) and verbs, and, when it lists names, only those
    objects; ``*`` matches anything (the chart refuses it, RBAC would not)."""

    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str] = frozenset()

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any]) -> TargetRule:
        """A rule as written in values or a Role (``apiGroups``, ``resources``, ``verbs``,
        ``resourceNames``; a missing field is an empty list); a rule with a field that is not
        a list of strings grants nothing (``resourceNames: "x"`` read as none would grant
        every name)."""
        fields = [rule.get(key, []) for key in ("apiGroups", "resources", "verbs",
                                                "resourceNames")]
        if not all(isinstance(f, list) and all(isinstance(v, str) for v in f) for f in fields):
            return cls(frozenset(), frozenset(), frozenset())
        groups, resources, verbs, names = (frozenset(f) for f in fields)
        return cls(groups, resources, verbs, names)

    def grants(self, group: str, resource: str, verb: str, name: str) -> bool:
        return ((group in self.api_groups or "*" in self.api_groups)
                and (resource in self.resources or "*" in self.resources)
                and (verb in self.verbs or "*" in self.verbs)
                and (not self.resource_names or name in self.resource_names))


@dataclass(frozen=True)
class Namespaces:
    """Where this release's commands run, as the operator knows it (``wingman.settings``).

    ``release``: the release namespace, Wingman's own (the signing key Secret, the audit
    claim, the operator), where the executor holds no rights; ``""`` when not known.
    ``targets``: the namespaces of ``gateway.targets``, the only ones where the executor holds
    rights (the API server refuses a command anywhere else); None when not known, and then no
    command is judged by them.
    ``rules``: the rules of the executor's Role in each target, where known (a target not
    listed: not known, so nothing is taken as granted there)."""

    release: str = ""
    targets: frozenset[str] | None = None
    rules: Mapping[str, tuple[TargetRule, ...]] = field(default_factory=dict)

    def grants(self, namespace: str, group: str, resource: str, verb: str,
               name: str = "") -> bool:
        """Whether the executor's Role in ``namespace`` (a target) is known to grant ``verb``
        on ``resource`` (of API group ``group``; ``""`` the core group), for the object
        ``name``."""
        return self.targets is not None and namespace in self.targets and any(
            rule.grants(group, resource, verb, name) for rule in self.rules.get(namespace, ()))


def untrusted(request: ReviewInput, risk: Risk, why: list[str]) -> tuple[Risk, tuple[str, ...]]:
    """One risk level up (and the ``UntrustedInput`` flag) for a request acting on untrusted
    input; unchanged otherwise."""
    if not request.untrusted_input:
        return risk, ()
    raised = _LEVELS[min(risk.rank + 1, len(_LEVELS) - 1)]
    why.append(f"acts on untrusted input (risk {risk.value} -> {raised.value})")
    return raised, (UNTRUSTED_INPUT,)


class _Rating:
    """The worst risk found so far and every reason for it."""

    def __init__(self) -> None:
        self.risk = L
        self.reasons: list[str] = []
        self.found: list[tuple[Risk, str]] = []

    def add(self, risk: Risk, reason: str) -> None:
        self.risk = max(self.risk, risk, key=lambda x: x.rank)
        if reason not in self.reasons:
            self.reasons.append(reason)
            self.found.append((risk, reason))


def readings(parsed: ParsedCommand) -> tuple[ParsedCommand, ...]:
    """The readings of a command a reviewer rates: the first, and every other one kubectl could
    run (one whose verb is a kubectl command: kubectl runs no plugin named by a word that
    follows a flag)."""
    return (parsed, *(r for r in parsed.alternatives if r.verb in KUBECTL_VERBS))


def _names(words: Iterable[str], kinds: frozenset[str]) -> bool:
    """Whether any of ``words`` names a resource type in ``kinds`` (by any of its names)."""
    return any(t in kinds for w in words for t in resource_types(w))


def _values(parsed: ParsedCommand) -> Iterable[str]:
    for values in parsed.flags.values():
        yield from values


def _below_bodies(level: str) -> bool:
    """Whether a kubectl log level (``-v``, or one ``--vmodule`` entry's) is a number, as
    klog reads it (base 10, an optional sign), below :data:`BODY_LOG_LEVEL`."""
    return _LOG_LEVEL.fullmatch(level.strip()) is not None and int(level) < BODY_LOG_LEVEL


# kubectl sends a ``--raw`` path as client-go reads it (``Request.RequestURI``): parsed as a
# URL (a scheme and host, a ``#fragment`` are dropped: ``//api/v1/pods`` is the path
# ``/v1/pods``; the query is the query), its path %-decoded (``pro%78y`` is ``proxy``) and
# cleaned (``.``, ``..`` and repeated slashes resolved: kubectl 1.34 asks for
# ``/api/v1/namespaces/apps/pods/x/../../../../nodes`` as the Nodes, and the API server
# refuses a Role holder "nodes"). A path written otherwise than it is read is rated besides
# (high): a reviewer reads the path as written.
def _raw_path(path: str) -> str:
    """The path ``--raw PATH`` names (see above), without its query."""
    try:
        written = urllib.parse.urlsplit(path.strip()).path
    except ValueError:  # (kubectl cannot parse it either: it sends nothing)
        written = path.partition("?")[0]
    cleaned = posixpath.normpath("/" + urllib.parse.unquote(written))
    return "/" + cleaned.lstrip("/")  # (normpath keeps a leading '//', Go's Clean does not)


# The first word after a resource path's API version that is a verb, not a resource, as the
# API server reads it: ``/api/v1/watch/namespaces/apps/pods`` watches apps' pods; the old
# ``/api/v1/proxy/namespaces/apps/pods/web`` proxies to the pod web.
RAW_VERBS = frozenset({"watch", "proxy"})
# A Namespace's own subresources: ``/api/v1/namespaces/apps/status`` is the Namespace apps's
# status, not a resource named status in apps.
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclass(frozen=True)
class _RawRequest:
    """What a ``--raw`` resource path names, as the API server reads it (its
    ``RequestInfoFactory``): the namespace (RBAC's too: a Namespace's own path is in that
    namespace), the resource, the object's name, its subresource (``proxy`` for the old proxy
    form)."""

    namespace: str
    resource: str
    name: str
    subresource: str
    watch: bool = False  # (``/watch/`` in the path, or a ``watch`` query: RBAC's verb watch)


def _raw_request(path: str) -> _RawRequest | None:
    """The resource request a ``--raw`` path makes (see :class:`_RawRequest`); None for a
    non-resource URL (``/readyz``, ``/metrics``, discovery: ``/api/v1``, ``/apis/apps/v1``)."""
    parts = [p for p in _raw_path(path).split("/") if p]
    if len(parts) < 3 or parts[0] not in ("api", "apis") or (parts[0] == "apis"
                                                             and len(parts) < 4):
        return None
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    verb = ""
    if rest[0] in RAW_VERBS and len(rest) > 1:
        verb, rest = rest[0], rest[1:]
    space = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        space = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    subresource = "proxy" if verb == "proxy" else rest[2] if len(rest) > 2 else ""
    return _RawRequest(space, rest[0], rest[1] if len(rest) > 1 else "", subresource,
                       watch=verb == "watch" or _watch_query(path))


def _watch_query(path: str) -> bool:
    """Whether a ``--raw`` path's query asks to watch (``?watch=1``, ``?watch``: any value,
    read as the API server might; a query that cannot be parsed counts too)."""
    try:
        query = urllib.parse.urlsplit(path.strip()).query
    except ValueError:
        return True
    return any(key.lower() == "watch" for key, _ in
               urllib.parse.parse_qsl(query, keep_blank_values=True))


def _raw_target(path: str) -> tuple[str, str]:
    """(namespace, resource) a ``--raw`` API path names (``/api/v1/namespaces/apps/pods``,
    ``/apis/apps/v1/deployments``, ``/api/v1/watch/namespaces/apps/pods``); ``("", "")`` for a
    path that is no resource path (``/readyz``, ``/api/v1``). A namespace's own path names the
    resource ``namespaces``."""
    request = _raw_request(path)
    return (request.namespace, request.resource) if request else ("", "")


# Non-resource URLs the API server lets every identity the executor could be GET, through the
# ClusterRoles bound by default to every authenticated user (system:discovery,
# system:public-info-viewer) and to every ServiceAccount (system:service-account-issuer-
# discovery): these paths, and those under these prefixes (a rule's final ``*``). Any other
# (``/metrics``, ``/logs``, ``/debug/pprof``, ``/healthz/etcd``) only a ClusterRole grants:
# a Role cannot name a non-resource URL.
PUBLIC_PATHS = frozenset({"/api", "/apis", "/healthz", "/livez", "/readyz", "/openapi",
                          "/version", "/.well-known/openid-configuration", "/openid/v1/jwks"})
PUBLIC_PATH_PREFIXES = ("/api/", "/apis/", "/openapi/")


def _raw_private(path: str) -> bool:
    """Whether a ``--raw`` path is a non-resource URL no default binding gives every identity
    (not :data:`PUBLIC_PATHS`): the API server's own (its metrics, logs, profiles, one
    health check's detail), for which a ClusterRole is needed."""
    sent = _raw_path(path)
    return _raw_request(path) is None and sent not in PUBLIC_PATHS \
        and not sent.startswith(PUBLIC_PATH_PREFIXES)


_GO_BASES = {"0x": 16, "0o": 8, "0b": 2}


def _go_int(value: str) -> int | None:
    """An integer flag's value as kubectl and docker read it (pflag: Go's ``ParseInt`` with
    base 0): an optional sign, then ``0x``/``0o``/``0b`` or a leading ``0`` (octal) choosing
    the base, ``_`` between digits (``0x0``, ``0b0``, ``0_0``, ``00`` are all zero). None for
    a value it is not (kubectl then refuses to run). Reads ``_`` more loosely than Go: a value
    Go refuses only runs nothing."""
    text = value.strip()
    sign = -1 if text.startswith("-") else 1
    digits = text[1:] if text[:1] in "+-" else text
    base = _GO_BASES.get(digits[:2].lower(), 0)
    if base:
        digits = digits[2:]
    elif len(digits) > 1 and digits.startswith("0"):
        base, digits = 8, digits[1:]
    else:
        base = 10
    digits = digits.replace("_", "")
    if not digits.isascii() or not digits.isalnum():
        return None
    try:
        return sign * int(digits, base)
    except ValueError:
        return None


# Subresources through which the API server connects to what runs behind it: a GET on one
# (``kubectl get --raw .../services/web:80/proxy/admin``) is a request to the application,
# a pod or a node, whose effect no table knows.
CONNECT_SUBRESOURCES = frozenset({"proxy", "exec", "attach", "portforward"})


def _raw_subresource(path: str) -> str:
    """The subresource a ``--raw`` API path names (``/api/v1/namespaces/apps/pods/web/log``
    -> ``log``, ``/api/v1/nodes/n1/proxy/metrics`` -> ``proxy``, ``pro%78y`` -> ``proxy``: as
    the API server reads it, :func:`_raw_request`), lower case; ``""`` for none."""
    request = _raw_request(path)
    return request.subresource.lower() if request else ""


def _zero(value: str) -> bool:
    return _go_int(value) == 0


def _label_types(operands: Iterable[str]) -> list[str]:
    """The words of ``label``/``annotate`` operands that name resource types: the first
    object word (``svc`` in ``svc web``) and every ``TYPE/NAME`` (``deploy/web svc/web``), not
    a ``key=value`` or a ``key-`` (an object's name has neither ``=`` nor a final ``-``)."""
    objects = [w for w in operands if "=" not in w and not w.endswith("-")]
    return [w for at, w in enumerate(objects) if at == 0 or "/" in w]


#: Actions whose words after ``--`` are a program's argv, not objects (``exec web -- ls
#: nodes``, ``create job x --image=busybox -- rm ns``); every other action takes them as its
#: arguments (cobra hands them over: ``delete -- ns apps`` deletes the Namespace).
PROGRAM_AFTER_DASHES = frozenset({("exec",), ("run",), ("debug",), ("attach",),
                                  ("create", "job"), ("create", "cronjob"),
                                  ("create", "deployment")})


def _operands(parsed: ParsedCommand) -> tuple[str, ...]:
    """A kubectl command's arguments after its action, those after ``--`` too unless they are
    a program's (:data:`PROGRAM_AFTER_DASHES`)."""
    named = parsed.words[len(parsed.action):]
    if parsed.action[:1] in PROGRAM_AFTER_DASHES or parsed.action[:2] in PROGRAM_AFTER_DASHES:
        return named
    return (*named, *parsed.after_dashes)


def _namespace_objects(parsed: ParsedCommand) -> tuple[str, ...]:
    """The Namespace objects a kubectl command names (``delete ns apps``, ``delete ns,pods
    apps``, ``label namespace/apps a=b``, ``delete -- ns apps``) or creates (``create
    namespace apps``), lower case."""
    operands = [w for w in _operands(parsed) if "=" not in w and not w.endswith("-")]
    if parsed.action == ("create", "namespace"):
        return tuple(dict.fromkeys(w.strip().lower() for w in operands))
    listed = bool(operands) and "/" not in operands[0] \
        and "namespace" in resource_types(operands[0])
    return tuple(dict.fromkeys(
        w.partition("/")[2].strip().lower() if "/" in w else w.strip().lower()
        for at, w in enumerate(operands)
        if ("/" in w and resource_types(w) == ("namespace",)) or (listed and at and "/" not in w)))


def _switched_on(parsed: ParsedCommand, flag: str) -> bool:
    """Whether a boolean flag is on, as pflag reads its values (:data:`PFLAG_FALSE`,
    :data:`PFLAG_TRUE`): given more than once, the last value counts (``-A -A=false`` is
    off, ``-A=false -A`` on); a value pflag cannot read anywhere counts as on (kubectl then
    runs nothing, but a reviewer does not count on it)."""
    values = parsed.flag(flag)
    return bool(values) and (values[-1] not in PFLAG_FALSE
                             or any(v not in PFLAG_FALSE | PFLAG_TRUE for v in values))


def _every_namespace(parsed: ParsedCommand) -> bool:
    """Whether ``-A``/``--all-namespaces`` is on (not ``-A=false``, ``--all-namespaces=0``)."""
    return _switched_on(parsed, "--all-namespaces")


def _object_types(parsed: ParsedCommand) -> list[str]:
    """The resource types of the objects a kubectl command names, by their singular names:
    its first argument and every ``TYPE/NAME`` (only ``TYPE/NAME`` after
    :data:`NAME_FIRST_VERBS`), not a ``key=value``; ``label``'s and ``annotate``'s as
    :func:`_label_types` reads them; ``cp``'s arguments are pods (``NAMESPACE/POD:PATH``)."""
    if parsed.verb == "cp":
        return ["pod"]
    if parsed.verb in ("label", "annotate"):
        words = _label_types(_operands(parsed))
    else:
        operands = [w for w in _operands(parsed) if "=" not in w]
        first = parsed.verb not in NAME_FIRST_VERBS
        words = [w for at, w in enumerate(operands) if (at == 0 and first) or "/" in w]
    return [t for w in words for t in resource_types(w)]


def _cluster_type(kind: str) -> bool:
    """Whether a resource type (by its singular name, as ``resource_types`` reads it) is
    cluster-scoped: a built-in one of :data:`CLUSTER_RESOURCES`, a custom one of
    :data:`CLUSTER_CUSTOM_RESOURCES` or named ``Cluster<Kind>`` (:data:`CLUSTER_PREFIX`) and
    not known as namespaced (Cluster API's ClusterClass)."""
    return kind in CLUSTER_RESOURCES or kind in CLUSTER_CUSTOM_RESOURCES or (
        kind.startswith(CLUSTER_PREFIX) and kind not in ("cluster", "clusters")
        and kind not in NAMESPACED_CUSTOM_RESOURCES)


def _unknown_types(parsed: ParsedCommand) -> list[str]:
    """The types a kubectl command's objects are of (:func:`_object_types`) that no table says
    is cluster-scoped (:func:`_cluster_type`) or namespaced (:data:`NAMESPACED_RESOURCES`,
    :data:`NAMESPACED_CUSTOM_RESOURCES`): a custom resource that may be either. None for a
    plugin (its words are its own) or an action in no namespace."""
    if parsed.program != "kubectl" or parsed.verb not in KUBECTL_VERBS \
            or parsed.action in NAMESPACELESS_ACTIONS or parsed.action[:1] in NAMESPACELESS_ACTIONS:
        return []
    return [t for t in dict.fromkeys(_object_types(parsed))
            if not _cluster_type(t) and t not in NAMESPACED_RESOURCES
            and t not in NAMESPACED_CUSTOM_RESOURCES]


def _namespaced(parsed: ParsedCommand) -> bool:
    """Whether a kubectl command (not a ``--raw`` one) acts in a namespace: not one in no
    namespace (:data:`NAMESPACELESS_ACTIONS`) nor one on cluster-scoped objects only, where
    kubectl ignores ``-n`` and ``-A``."""
    if parsed.program != "kubectl" or not parsed.words or parsed.action in NAMESPACELESS_ACTIONS \
            or parsed.action[:1] in NAMESPACELESS_ACTIONS:
        return False
    types = _object_types(parsed)
    return not types or not all(_cluster_type(t) for t in types)


def _raw_cluster(path: str) -> bool:
    """Whether a ``--raw`` API path names a cluster-scoped resource (a Namespace itself too:
    ``/api/v1/namespaces/apps``), a resource of every namespace (``/api/v1/pods``), or a URL
    of the API server's own that only a ClusterRole grants (:func:`_raw_private`)."""
    space, resource = _raw_target(path)
    return (bool(resource) and (not space or resource == "namespaces")) or _raw_private(path)


def _cluster_scope(parsed: ParsedCommand) -> str:
    """How a kubectl command acts on what is cluster-scoped through the API server, as a
    reviewer reads it: an action of :data:`CLUSTER_ACTIONS`, an object of a type in
    :func:`_cluster_type` (``delete po,no web``: some of them), a ``--raw`` path of
    :func:`_raw_cluster`; ``""`` for none, and for :data:`OBJECTLESS_ACTIONS`, which read
    nothing any identity is refused (``version``, ``auth can-i delete nodes``,
    ``explain nodes``, ``config view --raw``)."""
    if parsed.program != "kubectl" or not parsed.words or parsed.action in OBJECTLESS_ACTIONS \
            or parsed.action[:1] in OBJECTLESS_ACTIONS:
        return ""
    raw = parsed.flag("--raw")
    if raw:
        return next((f"--raw {path} is a URL of the API server's own, which only a "
                     "ClusterRole grants" if _raw_private(path) else
                     f"--raw {path} names a cluster-scoped resource or every namespace's"
                     for path in raw if _raw_cluster(path)), "")
    if parsed.action in CLUSTER_ACTIONS or parsed.action[:1] in CLUSTER_ACTIONS:
        return f"'{' '.join(parsed.action)}' acts on cluster-scoped objects"
    types = [t for t in _object_types(parsed) if _cluster_type(t)]
    return f"acts on a cluster-scoped {types[0]}" if types else ""


def _changed_system_namespaces(parsed: ParsedCommand) -> tuple[str, ...]:
    """The system namespaces (:data:`SYSTEM_NAMESPACES`) a kubectl command may change, lower
    case: where it acts (:func:`_acting_namespaces`), the Namespace objects it names, and the
    namespace a ``config`` command sets (:func:`_configured_namespaces`); none for a command
    that only reads (:func:`_writes`): reading there is as routine as elsewhere."""
    if parsed.program != "kubectl" or not _writes(parsed):
        return ()
    places = (*_acting_namespaces(parsed), *_namespace_objects(parsed),
              *_configured_namespaces(parsed))
    return tuple(dict.fromkeys(n for n in places if SYSTEM_NAMESPACES.match(n)))


def _configured_namespaces(parsed: ParsedCommand) -> tuple[str, ...]:
    """The namespaces a ``config`` command writes into the kubeconfig, where the commands
    after it act, lower case: ``set-context``'s ``--namespace`` (``-n`` counted too), ``set``'s
    value for a ``contexts.NAME.namespace`` property. Every other ``config`` command (``view``,
    ``use-context``) acts in no namespace: its ``-n`` says nothing."""
    if parsed.action == ("config", "set-context"):
        named: Iterable[str] = parsed.flag("--namespace")
    elif parsed.action == ("config", "set"):
        values = [*parsed.words[2:], *parsed.after_dashes]
        named = [value for key, value in itertools.pairwise(values)
                 if key.lower().endswith(".namespace")]
    else:
        named = ()
    return tuple(dict.fromkeys(n.strip().lower() for n in named if n.strip()))


def _acting_namespaces(parsed: ParsedCommand) -> tuple[str, ...]:
    """The namespaces a kubectl command acts in, lower case: a ``--raw`` path's (kubectl ignores
    ``-n`` there); none for one not :func:`_namespaced`; else ``-n``/``--namespace`` (every
    value: a reviewer cannot tell which one kubectl keeps); none for one in every namespace
    (``-A``); else :data:`EXECUTOR_DEFAULT_NAMESPACE`."""
    if parsed.program != "kubectl":
        return ()
    raw = [_raw_target(path)[0].strip().lower() for path in parsed.flag("--raw")]
    if raw:
        return tuple(dict.fromkeys(n for n in raw if n))
    if not _namespaced(parsed):
        return ()
    named = tuple(dict.fromkeys(n.strip().lower() for n in parsed.flag("--namespace")
                                if n.strip()))
    if parsed.action[:1] == ("cp",):  # ``kubectl cp apps/web-1:/x /tmp/x``: a pod's own
        # namespace wins over -n, which (else the default) serves the pods named without one
        pods = [w.partition(":")[0] for w in (*parsed.words[1:], *parsed.after_dashes)
                if ":" in w]
        if pods:
            return tuple(dict.fromkeys(
                n for pod in pods
                for n in ((pod.partition("/")[0].strip().lower(),) if "/" in pod
                          else named or (EXECUTOR_DEFAULT_NAMESPACE,))))
    if named or _every_namespace(parsed):
        return named
    if parsed.flag("--filename") or parsed.flag("--kustomize"):
        return ()  # (each object in the files in the namespace it names, not known here)
    return (ACTION_NAMESPACES.get(parsed.action)
            or ACTION_NAMESPACES.get(parsed.action[:1], EXECUTOR_DEFAULT_NAMESPACE),)


def _kubectl_action_risk(action: tuple[str, ...]) -> tuple[Risk, str]:
    if action in KUBECTL_ACTIONS:
        risk = KUBECTL_ACTIONS[action]
    elif action[0] == "create" and len(action) > 1 \
            and action[1] not in KUBECTL_SUBCOMMANDS["create"]:
        return H, f"'create {action[1]}' is not a kubectl create subcommand: it would run a " \
                  "kubectl plugin, an arbitrary program"
    elif action[:1] in KUBECTL_ACTIONS:
        risk = KUBECTL_ACTIONS[action[:1]]
    else:
        return H, f"'{action[0]}' is not a kubectl command: it would run a kubectl plugin, " \
                  "an arbitrary program"
    words = " ".join(action)
    if risk >= H:
        return risk, f"'{words}' is destructive or invasive ({risk.value})"
    return risk, f"'{words}' is {'routine' if risk is L else 'a change'} ({risk.value})"


def _writes(parsed: ParsedCommand) -> bool:
    """Whether a kubectl command may change something: its action is not routine (medium or
    above in :data:`KUBECTL_ACTIONS`, or a plugin), or it acts on every object of a type
    (:data:`EVERY_OBJECT_ACTIONS`)."""
    return bool(parsed.words) and (_kubectl_action_risk(parsed.action)[0] >= M
                                   or parsed.action in EVERY_OBJECT_ACTIONS)


def _rate_kubectl(parsed: ParsedCommand, rating: _Rating, release: str = "") -> None:
    if not parsed.words:
        rating.add(M, "no kubectl command given")
    else:
        risk, why = _kubectl_action_risk(parsed.action)
        rating.add(risk, why)
    candidates = [*parsed.ambiguous, *(parsed.words[1:3] if parsed.ambiguous else ())]
    for candidate in dict.fromkeys(c for c in candidates if c != parsed.verb):
        if candidate in KUBECTL_VERBS or candidate in {a[0] for a in KUBECTL_ACTIONS}:
            risk, why = _kubectl_action_risk((candidate,))
            if risk >= M:
                rating.add(risk, f"{why}, if an unknown flag does not take '{candidate}' as "
                                 "its value")
    # A binding's --user/--group/--serviceaccount name its subjects, not the caller.
    binding = (parsed.verb == "create" and len(parsed.action) > 1
               and "binding" in parsed.action[1]) or parsed.action == ("set", "subject")
    for flag, risk in IDENTITY_FLAGS.items():
        if parsed.has(flag) and not (binding and flag == "--user"):
            rating.add(risk, f"{flag} acts as another identity, on another cluster or with "
                             "another configuration")
    for flag, risk in DANGEROUS_FLAGS.items():
        if parsed.has(flag):
            rating.add(risk, f"flag {flag}")
    for value in parsed.flag("--grace-period"):
        if _zero(value):
            rating.add(H, "--grace-period 0 kills without a graceful stop")
    for value in parsed.flag("--cascade"):
        if value == "orphan":
            rating.add(H, "--cascade orphan leaves dependents behind")
    for value in parsed.flag("--replicas"):
        number = _go_int(value)
        if (number is not None and number <= 0) or value.strip().startswith("-"):
            rating.add(H, f"scales to zero (--replicas {value})")
    outside = [t for t in parsed.flag("--type") if t.strip().lower() in OUTSIDE_SERVICE_TYPES] \
        if parsed.verb == "expose" else []
    if parsed.action == ("create", "service") and len(parsed.words) > 2 \
            and parsed.words[2].lower() in OUTSIDE_SERVICE_TYPES:
        outside.append(parsed.words[2])
    if parsed.verb == "expose" and (parsed.has("--external-ip")
                                    or parsed.has("--load-balancer-ip")):
        outside.append("an external IP")
    if parsed.action == ("create", "ingress"):
        outside.append("an Ingress")
    for how in outside:
        rating.add(H, f"opens a workload to outside the cluster ({how})")
    named = parsed.words[len(parsed.action):]
    if parsed.action in EVERY_OBJECT_ACTIONS and len(named) <= 1 \
            and not any("/" in t for t in named) \
            and not any(v.strip() for v in parsed.flag("--selector")):  # '-l ""' selects all
        rating.add(H, f"'{' '.join(parsed.action)}' names no object: kubectl acts on every "
                      f"{named[0] if named else 'object'} in the namespace, as with --all")
    writes = _writes(parsed)
    selectors = [*parsed.flag("--selector"), *parsed.flag("--field-selector")]
    if selectors and parsed.verb not in SELECTOR_SPEC_VERBS and writes:
        rating.add(H, f"selects its objects by selector ({', '.join(selectors)}): a selector "
                      "matches any number of objects, those created later too, as with --all; "
                      "name the objects")
    operands = _operands(parsed)
    if parsed.verb == "annotate" and _names(_label_types(operands), CONTROLLER_ANNOTATED):
        rating.add(H, "annotates a Service or Ingress: controllers act on their annotations "
                      "(an ingress-nginx snippet, a cloud load balancer made external)")
    elif parsed.verb in ("label", "annotate") and _names(_label_types(operands),
                                                         TRAFFIC_RESOURCES):
        rating.add(H, f"{parsed.verb}s an object that steers traffic (a Service, EndpointSlice, "
                      "NetworkPolicy, Ingress or route): kube-proxy and the network's "
                      "controllers act on it")
    if parsed.verb in ("label", "annotate"):
        keys = [w.split("=", 1)[0].removesuffix("-") for w in operands
                if "=" in w or (w.endswith("-") and len(w) > 1)]
        moved = [k for k in keys if k.lower().startswith(TRAFFIC_LABELS)]
        if moved:
            rating.add(H, f"sets or removes {moved[0]}, which moves traffic (kube-proxy skips "
                          "a Service, an EndpointSlice serves another Service)")
    if parsed.verb == "label" and any(w.endswith("-") and len(w) > 1 for w in operands):
        rating.add(H, "removes a label a Service, ReplicaSet or NetworkPolicy may select on")
    spaces = _acting_namespaces(parsed)
    places = (*spaces, *_namespace_objects(parsed))
    if release and release in places and writes:
        rating.add(C, f"changes Wingman's own namespace {release}, which holds its signing key "
                      "Secret, its audit claim and its operator (the executor has no rights "
                      "there: it cannot run)")
    elif release and release in spaces:
        rating.add(H, f"reads Wingman's own namespace {release}, which holds its signing key "
                      "Secret, its audit claim and its operator (the executor has no rights "
                      "there: it cannot run)")
    system = [n for n in places if SYSTEM_NAMESPACES.match(n) and n != release]
    if system and writes:
        rating.add(H, f"changes the system namespace {system[0]}: the cluster's own components "
                      "or add-ons run there (DNS, networking, a service mesh, admission, "
                      "certificates) and serve every workload")
    if _every_namespace(parsed) and (rating.risk >= M or writes):
        rating.add(H, "changes objects in every namespace")
    if binding:
        roles = {v.lower() for v in parsed.flag("--clusterrole") + parsed.flag("--role")}
        groups = {v.lower() for v in parsed.flag("--group")}
        if roles & POWERFUL_ROLES or groups & POWERFUL_ROLES:
            rating.add(C, f"grants {', '.join(sorted((roles | groups) & POWERFUL_ROLES))} "
                          "(cluster-wide power)")
        else:
            rating.add(H, "changes who may do what (RBAC)")
    for path in parsed.flag("--raw"):
        if parsed.verb == "delete":
            rating.add(C, f"deletes what --raw {path} names (a whole collection, if it names "
                          "one): kubectl ignores the command's other words, -n, -l and "
                          "--dry-run")
        read = _raw_path(path)
        if read != (path.strip().partition("?")[0].rstrip("/") or "/"):
            rating.add(H, f"--raw {path} names {read} (%-decoded, dot segments resolved): a "
                          "path written otherwise than plainly may reach what it does not show")
        if _raw_subresource(path) in CONNECT_SUBRESOURCES:
            rating.add(H, f"--raw {_raw_subresource(path)} reaches the application, pod or node "
                          "behind the API server: what the request does there is unknown")
    if parsed.action == ("config", "view") and (parsed.has("--raw") or parsed.has("--flatten")):
        rating.add(H, "prints credentials from the kubeconfig")
    cluster = [t for w in _label_types(operands) for t in resource_types(w)
               if _cluster_type(t)] if parsed.verb in ("label", "annotate") else []
    if {"namespace", "node"} & set(cluster):
        rating.add(H, "labels a namespace or node (Pod Security, scheduling)")
    elif cluster:
        rating.add(H, f"labels or annotates a cluster-scoped {cluster[0]}: controllers act on "
                      "them for the whole cluster (a ClusterRole's aggregate-to labels grant "
                      "its rights to every admin, edit or view binding; a default StorageClass "
                      "or IngressClass)")
    targets = [*parsed.flag("--kustomize"),
               *(parsed.words[1:] if parsed.verb == "kustomize" else ())]
    for target in targets:
        if REMOTE_KUSTOMIZATION.match(target):
            rating.add(H, f"loads remote content (the kustomization {target})")
    for flag, does in KUSTOMIZE_FLAGS.items():
        if parsed.has(flag):
            rating.add(H, f"{flag} {does}")
    if any(v.lower() == "loadrestrictionsnone" for v in parsed.flag("--load-restrictor")):
        rating.add(H, "--load-restrictor LoadRestrictionsNone reads files outside the "
                      "kustomization")
    if parsed.verb == "debug" and parsed.flag("--profile") and any(
            p in ("sysadmin", "netadmin") for p in parsed.flag("--profile")):
        rating.add(C, "debug with a privileged profile")
    levels = [*parsed.flag("--v"),
              *(entry.rpartition("=")[2] for value in parsed.flag("--vmodule")
                for entry in value.split(","))]
    if any(not _below_bodies(level) for level in levels):
        rating.add(H, f"log level -v {BODY_LOG_LEVEL} or above (or one it cannot read) makes "
                      "kubectl print the API requests and response bodies it exchanges (whole "
                      "objects: a ConfigMap's data, environment values) into the output "
                      "workers read; leave -v and --vmodule out")


def _rate_docker(parsed: ParsedCommand, rating: _Rating) -> None:
    action = parsed.action
    verb = action[-1] if action else ""
    if not verb:
        rating.add(M, "no docker command given")
    elif verb in DOCKER_ACTIONS:
        risk = DOCKER_ACTIONS[verb]
        rating.add(risk, f"'docker {' '.join(action)}' is "
                         f"{'destructive or invasive' if risk >= H else 'routine'} "
                         f"({risk.value})")
    else:
        rating.add(H, f"'docker {' '.join(action)}' is not a docker command the reviewers "
                      "know: what it does is unknown")
    for name in parsed.words[len(action):]:
        if DOCKER_OWNED.match(name):
            rating.add(H, f"container {name} is a Kubernetes pod's, the control plane's or a "
                          "node's, or a bare ID that does not say whose: the engine acts on "
                          "any container on the host")
    for flag, risk in DOCKER_TARGET_FLAGS.items():
        if parsed.has(flag):
            rating.add(risk, f"{flag} acts on another engine or widens the container's rights")
    for flag in ("--force", "--all", "--volumes"):
        if parsed.has(flag) and verb in ("rm", "rmi", "prune", "kill"):
            rating.add(C, f"flag {flag}")
    for value in (*parsed.flag("--time"), *parsed.flag("--timeout")):
        if _zero(value):
            rating.add(H, "-t 0 (--timeout, --time) kills without a graceful stop")


def command_risk(command: str, release: str = "") -> tuple[Risk, list[str]]:
    """The risk of one command and the reasons, from the tables above; ``release``: the
    release namespace (:class:`Namespaces`), when known."""
    parsed = parse(command)
    if not parsed.program:
        return C, ["empty command"]
    rating = _Rating()
    release = release.strip().lower()
    if parsed.program == "kubectl":
        _rate_kubectl(parsed, rating, release)
        for other in readings(parsed)[1:]:
            alternative = _Rating()
            _rate_kubectl(other, alternative, release)
            read = " ".join(other.words)
            read = read if len(read) <= 60 else read[:57] + "..."
            for risk, reason in alternative.found:
                if risk >= M and reason not in rating.reasons:
                    rating.add(risk, f"{reason}, if kubectl reads it as 'kubectl {read}'")
        if parsed.unresolved:
            rating.add(H, "its flags can be read in too many ways to rate them all")
    elif parsed.program == "docker":
        _rate_docker(parsed, rating)
    else:
        rating.add(H, f"'{parsed.program}' is neither kubectl nor docker")
    tokens = {w: None for r in readings(parsed)
              for w in (*r.words, *_values(r), *r.after_dashes)}
    for word in tokens:
        lowered = word.lower()
        if _names((lowered,), SECRET_RESOURCES) or any(w in lowered for w in SECRET_WORDS):
            rating.add(H, f"touches credentials ({word})")
        if re.match(r"https?://", lowered):
            rating.add(H, "loads remote content")
    return rating.risk, rating.reasons


class DestructivePatternVoter:
    """Approves routine commands; rejects destructive or credential-touching ones."""

    name = "destructive"
    local = True  # reviews the request alone (see consensus.Voter)

    def __init__(self, namespaces: Namespaces | None = None) -> None:
        self.namespaces = namespaces or Namespaces()

    async def review(self, request: ReviewInput) -> Vote:
        worst, why = Risk.LOW, []
        rollbacks = {r for _, r in request.rollbacks}
        for cmd in request.all_commands:
            risk, reasons = command_risk(cmd, self.namespaces.release)
            worst = max(worst, risk, key=lambda x: x.rank)
            why += [f"rollback: {r}" for r in reasons] if cmd in rollbacks else reasons
        destructive = worst >= Risk.HIGH
        worst, flags = untrusted(request, worst, why)
        if destructive:
            return Vote(self.name, Verdict.REJECT, worst,
                        "destructive: " + "; ".join(why), flags=(DESTRUCTIVE, *flags))
        if worst >= Risk.HIGH:
            return Vote(self.name, Verdict.REJECT, worst, "; ".join(why), flags=flags)
        return Vote(self.name, Verdict.APPROVE, worst,
                    "; ".join(why) or "no destructive pattern found", flags=flags)


class BlastRadiusVoter:
    """Weighs reach: production, many commands, all namespaces, a change in a system
    namespace, cluster scope, and, when the gateway's targets are known, what the executor
    will be refused."""

    name = "blast-radius"
    local = True  # reviews the request alone (see consensus.Voter)
    #: An environment is production when one of the '-'-separated parts of its name is one of
    #: these (``prd``, ``prod-eu``, ``eu-production-2``).
    PRODUCTION = ("prd", "prod", "production")

    def __init__(self, namespaces: Namespaces | None = None) -> None:
        self.namespaces = namespaces or Namespaces()

    @classmethod
    def production(cls, environment: str) -> bool:
        return any(part in cls.PRODUCTION
                   for part in re.split(r"[^a-z0-9]+", environment.lower()))

    async def review(self, request: ReviewInput) -> Vote:
        risk = Risk.MEDIUM if self.production(request.environment) else Risk.LOW
        why = [f"environment {request.environment}"]
        if len(request.commands) > 3:
            risk = max(risk, Risk.MEDIUM, key=lambda x: x.rank)
            why.append(f"{len(request.commands)} commands")
        for parsed in (r for cmd in request.all_commands for r in readings(parse(cmd))):
            if _every_namespace(parsed):
                risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
                why.append("all namespaces")
            changed = _changed_system_namespaces(parsed)
            if changed:
                risk = max(risk, Risk.CRITICAL, key=lambda x: x.rank)
                why.append(f"changes the system namespace {changed[0]}, whose components "
                           "serve every workload")
            refused = self._refused(parsed)
            # (a target's own Namespace, read or labelled as its Role grants, reaches it alone)
            scope = "" if self._own_namespaces(parsed) else _cluster_scope(parsed)
            if scope and not refused:  # (if refused, the reason says it is cluster-scoped)
                risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
                why.append(scope)
            unknown = _unknown_types(parsed)
            if unknown and not scope:
                risk = max(risk, Risk.MEDIUM, key=lambda x: x.rank)
                why.append(f"its objects are of a type the reviewers do not know ({unknown[0]}): "
                           "a custom resource may be cluster-scoped, reaching every namespace "
                           "(and refused to the executor, which holds Roles only)")
            if parsed.program == "kubectl" and any(parsed.has(f) for f in IDENTITY_FLAGS):
                risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
                why.append("another identity or cluster")
            if refused:
                risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
                why.append(refused)
            if parsed.unresolved:  # where it acts is not known in every reading
                risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
                why.append("its flags can be read in too many ways to tell where it acts")
        why = list(dict.fromkeys(why))
        risk, findings = self._preview(request.preview, risk, why)
        risk, flags = untrusted(request, risk, why)
        if findings:
            flags = (PREVIEW_FINDING, *flags)
        verdict = Verdict.REJECT if risk >= Risk.HIGH or findings else Verdict.APPROVE
        return Vote(self.name, verdict, risk, ", ".join(why), flags=flags)

    def _refused(self, parsed: ParsedCommand) -> str:
        """Why the executor will be refused the command, when the targets are known: it acts
        on cluster-scoped objects (:func:`_cluster_scope`: the chart binds the executor to
        Roles in the targets only, no ClusterRole, so it may neither read nor change them),
        in a namespace outside the targets (the one it names, the one its action acts in
        (:data:`ACTION_NAMESPACES`), or kubectl's default,
        :data:`EXECUTOR_DEFAULT_NAMESPACE`) or in every namespace; ``""`` otherwise. Like a
        preview's Forbidden, such a command cannot run, and the reviewer is told before
        approving it."""
        targets = self.namespaces.targets
        if targets is None or parsed.program != "kubectl" or self._own_namespaces(parsed):
            return ""
        allowed = ", ".join(sorted(targets)) or "none"
        scope = _cluster_scope(parsed)
        if scope:
            return (f"{scope}: the executor holds rights only in the gateway's targets "
                    f"({allowed}), through Roles, and none on cluster-scoped objects, so the "
                    "API server will refuse it")
        if _every_namespace(parsed) and not parsed.flag("--raw") and _namespaced(parsed):
            return (f"acts in every namespace: the executor holds rights only in the gateway's "
                    f"targets ({allowed}), so the API server will refuse it")
        outside = [n for n in _acting_namespaces(parsed) if n not in targets]
        if not outside:
            return ""
        named = "names no namespace, so kubectl acts in " if not (
            parsed.flag("--namespace") or parsed.flag("--raw")) else "acts in "
        return (f"{named}namespace {outside[0]}, not a gateway target ({allowed}): the "
                "executor holds no rights there, so the API server will refuse it")

    # What kubectl asks, by action, of the namespace whose Namespace object it names (``get ns
    # apps``, ``label ns apps a=b``): (resource, verb) rights there. RBAC reads a request for
    # the Namespace apps as one in the namespace apps, so a target's Role may grant it;
    # describe lists the namespace's quotas and limit ranges too. Other actions on a
    # Namespace ask more than one namespace's rights (delete waits on a watch of every
    # Namespace; get -w watches them all).
    NAMESPACE_RIGHTS: ClassVar[Mapping[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
        ("get",): (("namespaces", "get"),),
        ("describe",): (("namespaces", "get"), ("resourcequotas", "list"),
                        ("limitranges", "list")),
        ("label",): (("namespaces", "get"), ("namespaces", "patch")),
        ("annotate",): (("namespaces", "get"), ("namespaces", "patch")),
        ("patch",): (("namespaces", "get"), ("namespaces", "patch")),
    }

    def _own_namespaces(self, parsed: ParsedCommand) -> bool:
        """Whether the command acts on gateway targets' own Namespace objects alone (``get ns
        apps``, ``--raw /api/v1/namespaces/apps``) in a way each target's Role is known to
        grant (:attr:`NAMESPACE_RIGHTS`, :meth:`Namespaces.grants`): the API server lets it
        through, cluster-scoped as the type is, and it reaches that namespace alone."""
        rights = self.NAMESPACE_RIGHTS.get(parsed.action)
        if not rights or _switched_on(parsed, "--watch") or _switched_on(parsed, "--watch-only") \
                or _every_namespace(parsed) or parsed.has("--subresource"):
            return False  # (--subresource status asks for namespaces/status, not listed here)
        raw = parsed.flag("--raw")
        if raw:
            if parsed.verb != "get":
                return False
            requests = [_raw_request(path) for path in raw]
            names = [r.namespace for r in requests if r and r.resource == "namespaces"
                     and r.namespace and not r.subresource and not r.watch]
            if len(names) != len(raw):
                return False
        else:
            if any(t != "namespace" for t in _object_types(parsed)) \
                    or any("/" in w and resource_types(w) != ("namespace",)
                           for w in _operands(parsed) if "=" not in w):
                return False
            names = list(_namespace_objects(parsed))
        return bool(names) and all(
            self.namespaces.grants(n, "", resource, verb, n if resource == "namespaces" else "")
            for n in names for resource, verb in rights)

    CLUSTER_KINDS = frozenset({"Namespace", "Node", "ClusterRole", "ClusterRoleBinding",
                               "CustomResourceDefinition", "PersistentVolume",
                               "ValidatingAdmissionPolicy", "ValidatingWebhookConfiguration",
                               "MutatingWebhookConfiguration", "StorageClass",
                               "PriorityClass"})

    def _preview(self, preview: Mapping[str, Any] | None, risk: Risk, why: list[str]
                 ) -> tuple[Risk, bool]:
        """The preview's reach and findings: (risk, whether anything is a finding)."""
        if not preview:
            return risk, False
        if preview.get("phase") != "Completed":
            why.append(f"preview {preview.get('phase') or 'missing'}: "
                       f"{str(preview.get('message') or 'no result')[:200]}")
            return max(risk, Risk.HIGH, key=lambda x: x.rank), True
        summary = preview.get("summary") or {}
        objects = int(summary.get("objects") or 0)
        kinds = [str(k) for k in summary.get("kinds") or []]
        spaces = [str(n) for n in summary.get("namespaces") or []]
        why.append(f"preview: {objects} object(s)"
                   + (f" ({', '.join(kinds[:5])})" if kinds else "")
                   + (f" in {', '.join(spaces[:5])}" if spaces else ""))
        if objects > 10:
            risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
            why.append(f"{objects} objects would change")
        elif objects > 3 or len(spaces) > 1:
            risk = max(risk, Risk.MEDIUM, key=lambda x: x.rank)
        system = [n for n in spaces if SYSTEM_NAMESPACES.match(n.lower())]
        if system:
            risk = max(risk, Risk.CRITICAL, key=lambda x: x.rank)
            why.append(f"writes in the system namespace {system[0]}")
        cluster = sorted(k for k in set(kinds)
                         if k in self.CLUSTER_KINDS or _cluster_type(k.lower()))
        if cluster:
            risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
            why.append(f"cluster-scoped {', '.join(cluster)}")
        findings = [c for c in preview.get("commands") or [] if isinstance(c, Mapping)
                    and c.get("outcome") not in ("Previewed", "ReadOnly")]
        for c in findings[:5]:
            why.append(f"preview finding {c.get('outcome')}: "
                       f"{str(c.get('message') or '')[:200]}")
        # a result without a command (the preview could not read its request) showed nothing
        unread = not preview.get("commands")
        if unread:
            why.append(f"preview recorded no command: "
                       f"{str(preview.get('message') or 'no result')[:200]}")
        if findings or unread:
            risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
        return risk, bool(findings) or unread


class AllowlistVoter:
    """Rejects any command outside the environment's allowlist (checked again at grant time)."""

    name = "allowlist"
    local = True  # reviews the request alone (see consensus.Voter)

    def __init__(self, is_allowed: Callable[[str], bool]) -> None:
        self._is_allowed = is_allowed

    async def review(self, request: ReviewInput) -> Vote:
        outside = [c for c in request.all_commands if not self._is_allowed(c)]
        if outside:
            what = "commands and rollbacks" if request.rollbacks else "commands"
            return Vote(self.name, Verdict.REJECT, Risk.HIGH,
                        f"{len(outside)} of {len(request.all_commands)} {what} are outside the "
                        "environment's allowlist")
        return Vote(self.name, Verdict.APPROVE, Risk.LOW, "every command is allowlisted")


BUILTIN = ("destructive", "blast-radius", "allowlist", "prompt-injection")


def builtin_voter(name: str, is_allowed: Callable[[str], bool],
                  namespaces: Namespaces | None = None) -> Voter:
    """One built-in voter by name; ``namespaces``: where commands run, when known."""
    if name == "destructive":
        return DestructivePatternVoter(namespaces)
    if name == "blast-radius":
        return BlastRadiusVoter(namespaces)
    if name == "allowlist":
        return AllowlistVoter(is_allowed)
    if name == "prompt-injection":
        return PromptInjectionVoter()
    raise ConfigError(f"unknown built-in voter {name!r}; choose one of {', '.join(BUILTIN)}")


def builtin_panel(is_allowed: Callable[[str], bool],
                  names: Sequence[str] = BUILTIN,
                  namespaces: Namespaces | None = None) -> list[Voter]:
    """The built-in voters, in order."""
    return [builtin_voter(n, is_allowed, namespaces) for n in names]


__all__ = [
    "BUILTIN",
    "UNTRUSTED_INPUT",
    "AllowlistVoter",
    "BlastRadiusVoter",
    "DestructivePatternVoter",
    "Namespaces",
    "TargetRule",
    "builtin_panel",
    "builtin_voter",
    "command_risk",
    "untrusted",
]
