"""Configuration from one place: ``WINGMAN_*`` environment variables (set from Helm values).

This is the only module that reads ``os.environ``. Each process gets one frozen settings
object (``OperatorSettings``, ``GatewaySettings``, ``ChatSettings`` or, for the CLI and the MCP
server, ``ClientSettings``, with ``McpHttpSettings`` for the MCP server's HTTP transport) and
passes it down; a bad value raises ``ConfigError`` naming the variable (or the configuration
file's field, or the flag) and what it accepts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from wingman.errors import ConfigError, shown_url, without_userinfo
from wingman.logs import FORMATS, LEVELS
from wingman.model import limits
from wingman.review.policy import EnvironmentPolicy

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DEFAULT_SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def _get(env: Mapping[str, str], key: str, default: str) -> str:
    return env.get(key, "").strip() or default


def _name(env: Mapping[str, str], key: str, default: str) -> str:
    value = _get(env, key, default)
    if not _NAME.fullmatch(value):
        raise ConfigError(f"{key}={value!r} is not a valid Kubernetes name (lowercase "
                          "letters, digits and '-', at most 63 characters)")
    return value


def _environment(env: Mapping[str, str]) -> str:
    """``WINGMAN_ENVIRONMENT``: a name the CRDs accept as ``spec.environment`` (a request of
    any other name could never be created for it)."""
    value = _get(env, "WINGMAN_ENVIRONMENT", "test")
    if not re.fullmatch(limits.ENVIRONMENT_PATTERN.strip("^$"), value):
        raise ConfigError(f"WINGMAN_ENVIRONMENT={value!r} is not an environment name: a "
                          f"lowercase letter, then lowercase letters, digits and '-', 1 to "
                          f"{limits.ENVIRONMENT} characters (the ApprovalRequest's "
                          "spec.environment)")
    return value


def _int(env: Mapping[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = _get(env, key, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} must be an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{key}={value} must be between {lo} and {hi}")
    return value


def env_bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    """A boolean environment variable: 1/true/yes/on or 0/false/no/off (any case; unset or
    empty: ``default``); anything else is a ConfigError naming the variable."""
    raw = _get(env, key, "true" if default else "false").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key}={raw!r} must be true or false (1, true, yes or on; 0, false, "
                      "no or off)")


def _policy(env: Mapping[str, str], environment: str) -> EnvironmentPolicy:
    path = env.get("WINGMAN_POLICY_FILE", "").strip()
    if not path:
        return EnvironmentPolicy(name=environment)
    return EnvironmentPolicy.load(Path(path), environment=environment)


def _log_format(env: Mapping[str, str]) -> str:
    fmt = _get(env, "WINGMAN_LOG_FORMAT", "text")
    if fmt not in FORMATS:
        raise ConfigError(f"WINGMAN_LOG_FORMAT={fmt!r} must be 'json' or 'text'")
    return fmt


#: The operator's memory allocator (``wingman.operator.memory``): ``auto`` is jemalloc when the
#: system has it, else glibc's malloc; ``python`` is CPython's own (pymalloc), unchanged.
ALLOCATORS = ("auto", "jemalloc", "glibc", "python")


def allocator(env: Mapping[str, str]) -> str:
    """``WINGMAN_ALLOCATOR``, checked (read before anything else starts, by the operator's
    re-execution, and again into ``OperatorSettings``)."""
    choice = _get(env, "WINGMAN_ALLOCATOR", "auto").lower()
    if choice not in ALLOCATORS:
        raise ConfigError(f"WINGMAN_ALLOCATOR={choice!r} must be one of {', '.join(ALLOCATORS)} "
                          "(auto: jemalloc when installed, else glibc's malloc)")
    return choice


def _log_level(env: Mapping[str, str], default: str = "info") -> str:
    level = _get(env, "WINGMAN_LOG_LEVEL", default).lower()
    if level not in LEVELS:
        raise ConfigError(f"WINGMAN_LOG_LEVEL={level!r} must be one of {', '.join(LEVELS)}")
    return level


@dataclass(frozen=True)
class LogSettings:
    """How a process logs: ``WINGMAN_LOG_FORMAT`` (json|text) and ``WINGMAN_LOG_LEVEL``."""

    format: str = "text"
    level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, level: str = "info"
                 ) -> LogSettings:
        """``level``: the default when ``WINGMAN_LOG_LEVEL`` is unset."""
        env = os.environ if env is None else env
        return cls(_log_format(env), _log_level(env, level))


_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
#: Label prefixes the operator sets itself on what it creates; values cannot override them.
RESERVED_LABEL_PREFIXES = ("wingman.dev/", "batch.kubernetes.io/", "controller-uid", "job-name")


def _json(env: Mapping[str, str], key: str, kind: type) -> Any:
    raw = env.get(key, "").strip()
    if not raw:
        return kind()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key} is not valid JSON ({exc.msg} at position {exc.pos}); the "
                          "chart renders it from values, check them") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{key} must be a JSON {'object' if kind is dict else 'array'}")
    return value


def _string_map(key: str, where: str, value: Any, *, labels: bool) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"{key}: {where} must map strings to strings")
    if labels:
        for k, v in value.items():
            if not _LABEL_KEY.fullmatch(k) or not _LABEL_VALUE.fullmatch(v):
                raise ConfigError(f"{key}: {where} {k}={v!r} is not a valid Kubernetes label")
    return dict(value)


def _object_labels(env: Mapping[str, str]) -> dict[str, str]:
    """``WINGMAN_OBJECT_LABELS``: the release's labels (app.kubernetes.io/*, the environment,
    commonLabels) for every object the operator creates."""
    return _string_map("WINGMAN_OBJECT_LABELS", "the labels",
                       _json(env, "WINGMAN_OBJECT_LABELS", dict), labels=True)


@dataclass(frozen=True)
class GatewayPod:
    """Scheduling and resources of gateway pods (``WINGMAN_GATEWAY_POD``, from values
    ``gateway.pod``); none of it widens what a gateway may do."""

    resources: Mapping[str, Any] = field(default_factory=lambda: {
        "requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)
    priority_class_name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    image_pull_policy: str = "IfNotPresent"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewayPod:
        key = "WINGMAN_GATEWAY_POD"
        raw: dict[str, Any] = _json(env, key, dict)
        known = {"resources", "nodeSelector", "tolerations", "affinity", "priorityClassName",
                 "labels", "annotations", "imagePullPolicy"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{key}: unknown fields {unknown}; known: {sorted(known)}")
        default = cls()
        resources = raw.get("resources") or default.resources
        affinity = raw.get("affinity") or {}
        tolerations = raw.get("tolerations") or []
        if not isinstance(resources, dict) or not isinstance(affinity, dict):
            raise ConfigError(f"{key}: resources and affinity must be objects")
        if not isinstance(tolerations, list) or not all(isinstance(t, dict)
                                                        for t in tolerations):
            raise ConfigError(f"{key}: tolerations must be a list of objects")
        priority = raw.get("priorityClassName") or ""
        if not isinstance(priority, str) or (priority and not _NAME.fullmatch(priority)):
            raise ConfigError(f"{key}: priorityClassName {priority!r} is not a valid name")
        pull = raw.get("imagePullPolicy") or "IfNotPresent"
        if pull not in ("Always", "IfNotPresent", "Never"):
            raise ConfigError(f"{key}: imagePullPolicy {pull!r} must be Always, IfNotPresent "
                              "or Never")
        labels = _string_map(key, "labels", raw.get("labels") or {}, labels=True)
        reserved = sorted(k for k in labels if k.startswith(RESERVED_LABEL_PREFIXES))
        if reserved:
            raise ConfigError(f"{key}: labels {reserved} are set by the operator itself; "
                              "choose other label keys")
        return cls(
            resources=resources,
            node_selector=_string_map(key, "nodeSelector", raw.get("nodeSelector") or {},
                                      labels=False),
            tolerations=tuple(tolerations), affinity=affinity, priority_class_name=priority,
            labels=labels,
            annotations=_string_map(key, "annotations", raw.get("annotations") or {},
                                    labels=False),
            image_pull_policy=pull)


def _docker_host(env: Mapping[str, str]) -> str:
    """The Docker engine's local socket: WINGMAN_DOCKER_HOST, else DOCKER_HOST."""
    key = "WINGMAN_DOCKER_HOST" if env.get("WINGMAN_DOCKER_HOST", "").strip() else "DOCKER_HOST"
    value = _get(env, key, "unix:///var/run/docker.sock")
    if not value.startswith("unix:///") or len(value) <= len("unix:///"):
        raise ConfigError(f"{key}={shown_url(value)!r} must be a local socket, "
                          "unix:///path/to/docker.sock "
                          "(the gateway never talks to a Docker engine over the network)")
    return value


_DEFAULT_AUDIT_TARGET = "/var/lib/wingman/audit/audit.jsonl"
_MAX_SECRET_FILE = 64 * 1024


def _secret_file(env: Mapping[str, str], key: str) -> str | None:
    """The content of the file ``env[key]`` names (a mounted Secret), stripped; never echoed."""
    path = env.get(key, "").strip()
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{key}={path!r} cannot be read ({exc.strerror}); mount the Secret "
                          "there (the chart does)") from None
    if len(raw) > _MAX_SECRET_FILE:
        raise ConfigError(f"{key}={path!r} is larger than {_MAX_SECRET_FILE} bytes; it must "
                          "hold one value")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{key}={path!r} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{key}={path!r} is empty; the Secret key it comes from holds nothing")
    return value


def _listen_address(env: Mapping[str, str]) -> str:
    """``WINGMAN_LISTEN_ADDRESS``: the IP address the operator's health and metrics ports (the
    chat service's HTTP and metrics ports) listen on."""
    raw = _get(env, "WINGMAN_LISTEN_ADDRESS", "0.0.0.0")  # noqa: S104 - a pod's ports
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        raise ConfigError(f"WINGMAN_LISTEN_ADDRESS={raw!r} must be an IP address (not a host "
                          "name): 0.0.0.0 listens on every IPv4 address (the default, what a "
                          "pod's probes and scrapes need), 127.0.0.1 on this machine only, "
                          ":: on every IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and (
            address.ipv4_mapped is not None or address.scope_id or address.is_link_local):
        # a mapped IPv4 address cannot be bound by an IPv6-only socket (kopf's), and a
        # link-local one only with its interface, which the ports' binding does not carry
        raise ConfigError(f"WINGMAN_LISTEN_ADDRESS={raw!r} is an IPv4-mapped or link-local "
                          "IPv6 address, which Wingman cannot listen on: give the IPv4 "
                          "address itself, or a global IPv6 address, or :: for every IPv6 "
                          "address")
    return str(address)


def _audit_target(env: Mapping[str, str]) -> str:
    """WINGMAN_AUDIT_TARGET_FILE (a mounted Secret: how a DSN with its password arrives) or
    WINGMAN_AUDIT_TARGET (a path), never both."""
    from_file = _secret_file(env, "WINGMAN_AUDIT_TARGET_FILE")
    if from_file is not None:
        if env.get("WINGMAN_AUDIT_TARGET", "").strip():
            raise ConfigError("WINGMAN_AUDIT_TARGET and WINGMAN_AUDIT_TARGET_FILE are both set; "
                              "set one (a DSN belongs in the file)")
        return from_file
    return _get(env, "WINGMAN_AUDIT_TARGET", _DEFAULT_AUDIT_TARGET)


def _witness_url(env: Mapping[str, str]) -> str | None:
    url = env.get("WINGMAN_AUDIT_WITNESS_URL", "").strip()
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is no number: often a password with an unencoded '/'
        parts, port_ok = None, False
    # any '@' (the last one ends a userinfo, however the password is spelt), whitespace or a
    # control character: refused, never guessed at
    if parts is None or not port_ok or parts.scheme not in ("http", "https") \
            or not parts.hostname or without_userinfo(url) != url or parts.fragment \
            or not url.isprintable() or any(c.isspace() for c in url):
        raise ConfigError(f"WINGMAN_AUDIT_WITNESS_URL={shown_url(url)!r} must be an "
                          "http(s) URL without credentials ('@'), fragment, spaces or control "
                          "characters, with a host and a numeric port if any, e.g. "
                          "https://witness.example/checkpoints (the HMAC key authenticates the "
                          "operator; percent-encode an '@' the path needs as %40)")
    return url


def _socket(env: Mapping[str, str]) -> str | None:
    path = env.get("WINGMAN_GATEWAY_DOCKER_SOCKET", "").strip()
    if path and not path.startswith("/"):
        raise ConfigError(f"WINGMAN_GATEWAY_DOCKER_SOCKET={path!r} must be an absolute path to "
                          "the node's Docker socket, e.g. /var/run/docker.sock")
    return path or None


def _lease_timing(env: Mapping[str, str]) -> dict[str, int]:
    duration = _int(env, "WINGMAN_LEASE_DURATION_SECONDS", 10, 2, 300)
    deadline = _int(env, "WINGMAN_RENEW_DEADLINE_SECONDS", min(7, duration - 1), 1, 299)
    retry = _int(env, "WINGMAN_RETRY_PERIOD_SECONDS", 2, 1, 60)
    if not retry < deadline < duration:
        raise ConfigError(
            f"leader election needs WINGMAN_RETRY_PERIOD_SECONDS ({retry}) < "
            f"WINGMAN_RENEW_DEADLINE_SECONDS ({deadline}) < WINGMAN_LEASE_DURATION_SECONDS "
            f"({duration}): the leader must give up before anyone else may take over")
    return {"lease_duration_seconds": duration, "renew_deadline_seconds": deadline,
            "retry_period_seconds": retry}


def _gateway_targets(env: Mapping[str, str]) -> frozenset[str] | None:
    """``WINGMAN_GATEWAY_TARGETS``: the namespaces of ``gateway.targets``, where the executor
    holds rights (a JSON array of namespace names); None when unset (not known: the review
    panel then judges no command by them)."""
    key = "WINGMAN_GATEWAY_TARGETS"
    if not env.get(key, "").strip():
        return None
    names = _json(env, key, list)
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{key}: {str(name)[:70]!r} is not a namespace name (lowercase "
                              "letters, digits and '-', at most 63 characters)")
    return frozenset(names)


def _gateway_target_rules(env: Mapping[str, str]) -> dict[str, tuple[dict[str, Any], ...]]:
    """``WINGMAN_GATEWAY_TARGET_RULES``: the rules of the executor's Role in each gateway
    target (``gateway.targets[].rules``, or the chart's defaults), a JSON object of namespace
    -> list of RBAC rules; empty when unset (the review panel then takes nothing as granted
    there). A rule is kept as written (``review.voters.TargetRule`` reads it); one that is not
    a JSON object, or whose ``apiGroups``, ``resources``, ``verbs`` or ``resourceNames`` is not
    a list of strings, stops the operator: the chart renders them from values."""
    key = "WINGMAN_GATEWAY_TARGET_RULES"
    rules = _json(env, key, dict)
    out: dict[str, tuple[dict[str, Any], ...]] = {}
    for name, listed in rules.items():
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{key}: {name[:70]!r} is not a namespace name (lowercase "
                              "letters, digits and '-', at most 63 characters)")
        if not isinstance(listed, list) or not all(isinstance(r, dict) for r in listed):
            raise ConfigError(f"{key}: namespace {name!r} must map to a JSON array of RBAC "
                              "rules (objects with apiGroups, resources and verbs)")
        for at, rule in enumerate(listed):
            for field_ in _RULE_FIELDS:
                value = rule.get(field_, [])
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(
                        f"{key}: rule {at} of namespace {name!r}: {field_} must be a list of "
                        f"strings, got {json.dumps(value)[:80]} (an RBAC rule's fields, as the "
                        "chart renders them from gateway.targets)")
        out[name] = tuple(listed)
    return out


#: the fields of an RBAC rule the review panel reads (a missing one is an empty list)
_RULE_FIELDS = ("apiGroups", "resources", "verbs", "resourceNames")


@dataclass(frozen=True)
class OperatorSettings:
    namespace: str
    environment: str
    policy: EnvironmentPolicy
    audit_target: str = field(repr=False)  # a DSN carries its password
    issuer: str
    log_format: str
    public_keys_configmap: str
    signing_key_secret: str
    gateway_image: str
    gateway_service_account: str
    policy_configmap: str
    metrics_port: int
    health_port: int
    voters_secret: str | None
    audit_volume_claim: str | None
    audit_secret: str | None
    job_ttl_seconds: int
    gateway_timeout_seconds: int
    leeway_seconds: int
    #: Elect one acting replica through the Lease ``leader_lease`` (off: always act).
    leader_election: bool = True
    leader_lease: str = "wingman-operator-leader"
    #: This replica's name in the election: the pod name (stable across container restarts).
    identity: str = "wingman-operator"
    lease_duration_seconds: int = 10
    renew_deadline_seconds: int = 7
    retry_period_seconds: int = 2
    #: How often the shared sweep runs (expiry, re-sync, retention, gauges).
    sweep_interval_seconds: float = 10.0
    #: An object that still needs work and was not attempted for this long is re-read.
    resync_seconds: float = 30.0
    #: The node's Docker socket, mounted into gateway pods when docker commands are enabled.
    gateway_docker_socket: str | None = None
    #: Testing only: SIGKILL the process right after this step of the grant flow.
    fault_kill_at: str | None = None
    log_level: str = "info"
    #: This replica's name (the pod's), reported on the Events it posts.
    pod_name: str = ""
    #: The release's labels for every object the operator creates.
    object_labels: Mapping[str, str] = field(default_factory=dict)
    gateway_pod: GatewayPod = field(default_factory=GatewayPod)
    #: The Secret holding the audit key that signs checkpoints (never the token-signing key).
    audit_key_secret: str = "wingman-audit-key"  # noqa: S105 - a Secret's name
    #: The ConfigMap holding the signed checkpoints and the audit public keys.
    checkpoints_configmap: str = "wingman-audit-checkpoints"
    checkpoint_interval_seconds: int = 60
    checkpoints_kept: int = 500
    #: An external witness every checkpoint is POSTed to (HMAC-SHA256 with the key below).
    witness_url: str | None = field(default=None, repr=False)  # its query may hold a token
    witness_hmac_key: str | None = field(default=None, repr=False)
    #: The ServiceAccount preview Jobs run as (confined to dry runs by admission).
    preview_service_account: str = "wingman-preview"
    witness_timeout_seconds: int = 10
    #: Blocking API calls in flight at once: the operator's thread pool and its connections to
    #: the API server (the audit appends have a thread of their own).
    api_concurrency: int = 32
    #: The memory allocator asked for (``ALLOCATORS``; applied at start by re-execution).
    allocator: str = "auto"
    #: Run the API calls (but lists) and audit appends in a process of their own
    #: (``operator.writer``), not on threads of the event loop's interpreter: faster bursts
    #: for more memory.
    writer_process: bool = True
    #: The IP address the health and metrics ports listen on (every IPv4 address by default;
    #: ``wingman dev run`` keeps its local operator's on 127.0.0.1).
    listen_address: str = "0.0.0.0"  # noqa: S104 - a pod's ports
    #: The namespaces of ``gateway.targets``, the only ones where the executor holds rights
    #: (the review panel's ``blast-radius`` voter holds a command elsewhere); None: not known.
    gateway_targets: frozenset[str] | None = None
    #: The rules of the executor's Role in each target, where the chart says them.
    gateway_target_rules: Mapping[str, tuple[Mapping[str, Any], ...]] = field(
        default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        environment = _environment(env)
        audit_secret = env.get("WINGMAN_AUDIT_SECRET", "").strip() or None
        if audit_secret and (audit_secret.count("/") != 1 or not all(audit_secret.split("/"))):
            raise ConfigError(f"WINGMAN_AUDIT_SECRET={audit_secret!r} must be 'name/key'")
        witness_url = _witness_url(env)
        witness_key = _secret_file(env, "WINGMAN_AUDIT_WITNESS_HMAC_KEY_FILE")
        if witness_url and not witness_key:
            raise ConfigError("WINGMAN_AUDIT_WITNESS_URL is set but "
                              "WINGMAN_AUDIT_WITNESS_HMAC_KEY_FILE is not: the witness must be "
                              "able to authenticate the checkpoints it receives")
        if witness_key is not None and len(witness_key) < 16:
            raise ConfigError("the witness HMAC key (WINGMAN_AUDIT_WITNESS_HMAC_KEY_FILE) is "
                              "shorter than 16 characters; use a random key of 32 bytes or more")
        timing = _lease_timing(env)
        return cls(
            namespace=_name(env, "WINGMAN_NAMESPACE", "wingman"),
            environment=environment,
            policy=_policy(env, environment),
            audit_target=_audit_target(env),
            issuer=_get(env, "WINGMAN_ISSUER", "wingman-operator"),
            log_format=_log_format(env),
            public_keys_configmap=_name(env, "WINGMAN_PUBLIC_KEYS_CONFIGMAP",
                                        "wingman-public-keys"),
            signing_key_secret=_name(env, "WINGMAN_SIGNING_KEY_SECRET", "wingman-signing-key"),
            gateway_image=_get(env, "WINGMAN_GATEWAY_IMAGE", "ghcr.io/wingman-dev/wingman:0.1.0"),
            gateway_service_account=_name(env, "WINGMAN_GATEWAY_SERVICE_ACCOUNT",
                                          "wingman-gateway"),
            preview_service_account=_name(env, "WINGMAN_PREVIEW_SERVICE_ACCOUNT",
                                          "wingman-preview"),
            policy_configmap=_name(env, "WINGMAN_POLICY_CONFIGMAP", "wingman-policy"),
            metrics_port=_int(env, "WINGMAN_METRICS_PORT", 9090, 0, 65535),
            # not 0: kopf's liveness endpoint reads port 0 as 80, it cannot bind a free one
            health_port=_int(env, "WINGMAN_HEALTH_PORT", 8080, 1, 65535),
            listen_address=_listen_address(env),
            gateway_targets=_gateway_targets(env),
            gateway_target_rules=_gateway_target_rules(env),
            voters_secret=env.get("WINGMAN_VOTERS_SECRET", "").strip() or None,
            audit_volume_claim=env.get("WINGMAN_AUDIT_VOLUME_CLAIM", "").strip() or None,
            audit_secret=audit_secret,
            job_ttl_seconds=_int(env, "WINGMAN_JOB_TTL_SECONDS", 3600, 300, 7 * 86400),
            gateway_timeout_seconds=_int(env, "WINGMAN_GATEWAY_TIMEOUT_SECONDS", 120, 1, 3600),
            leeway_seconds=_int(env, "WINGMAN_LEEWAY_SECONDS", 5, 0, 60),
            leader_election=env_bool(env, "WINGMAN_LEADER_ELECTION", True),
            leader_lease=_name(env, "WINGMAN_LEADER_LEASE", "wingman-operator-leader"),
            identity=_get(env, "WINGMAN_POD_NAME", f"{socket.gethostname()}-{os.getpid()}"),
            lease_duration_seconds=timing["lease_duration_seconds"],
            renew_deadline_seconds=timing["renew_deadline_seconds"],
            retry_period_seconds=timing["retry_period_seconds"],
            sweep_interval_seconds=float(_int(env, "WINGMAN_SWEEP_INTERVAL_SECONDS", 10, 1,
                                              3600)),
            resync_seconds=float(_int(env, "WINGMAN_RESYNC_SECONDS", 30, 1, 3600)),
            api_concurrency=_int(env, "WINGMAN_API_CONCURRENCY", 32, 1, 256),
            allocator=allocator(env),
            writer_process=env_bool(env, "WINGMAN_WRITER_PROCESS", True),
            gateway_docker_socket=_socket(env),
            fault_kill_at=env.get("WINGMAN_FAULT_KILL_AT", "").strip() or None,
            log_level=_log_level(env),
            pod_name=_get(env, "WINGMAN_POD_NAME", socket.gethostname()),
            object_labels=_object_labels(env),
            gateway_pod=GatewayPod.from_env(env),
            audit_key_secret=_name(env, "WINGMAN_AUDIT_KEY_SECRET", "wingman-audit-key"),
            checkpoints_configmap=_name(env, "WINGMAN_AUDIT_CHECKPOINTS_CONFIGMAP",
                                        "wingman-audit-checkpoints"),
            checkpoint_interval_seconds=_int(env, "WINGMAN_AUDIT_CHECKPOINT_INTERVAL_SECONDS",
                                             60, 1, 86400),
            checkpoints_kept=_int(env, "WINGMAN_AUDIT_CHECKPOINTS_KEPT", 500, 1, 2000),
            witness_url=witness_url,
            witness_hmac_key=witness_key,
            witness_timeout_seconds=_int(env, "WINGMAN_AUDIT_WITNESS_TIMEOUT_SECONDS", 10, 1,
                                         120),
        )


@dataclass(frozen=True)
class GatewaySettings:
    namespace: str
    environment: str
    policy: EnvironmentPolicy
    audit_target: str = field(repr=False)  # a DSN carries its password
    issuer: str
    log_format: str
    grant_name: str
    job_uid: str
    pod_name: str
    token_file: Path
    public_keys_dir: Path
    serviceaccount_dir: Path
    api_server: str
    exec_timeout_seconds: int
    max_output_bytes: int
    docker_enabled: bool
    leeway_seconds: int
    docker_host: str = "unix:///var/run/docker.sock"
    log_level: str = "info"
    #: The ServiceAccount kubectl commands run as (a short-lived token the gateway requests);
    #: the gateway's own account holds no rights in the target namespaces.
    executor_service_account: str = "wingman-executor"
    #: The UID of the grant the Job was made for (empty for Jobs of earlier releases): a grant
    #: of another UID under the name is never this gateway's to write.
    grant_uid: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        environment = _environment(env)
        host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
        port = env.get("KUBERNETES_SERVICE_PORT", "443").strip()
        if not host:
            raise ConfigError("KUBERNETES_SERVICE_HOST is not set: the gateway runs in a pod "
                              "(or the node harness) that tells it where the API server is")
        host_part = f"[{host}]" if ":" in host else host
        grant = env.get("WINGMAN_GRANT_NAME", "").strip()
        if not grant:
            raise ConfigError("WINGMAN_GRANT_NAME is not set: the gateway Job names its grant")
        return cls(
            namespace=_name(env, "WINGMAN_NAMESPACE", "wingman"),
            environment=environment,
            policy=_policy(env, environment),
            audit_target=_audit_target(env),
            issuer=_get(env, "WINGMAN_ISSUER", "wingman-operator"),
            log_format=_log_format(env),
            grant_name=grant,
            job_uid=env.get("WINGMAN_JOB_UID", "").strip(),
            pod_name=env.get("WINGMAN_POD_NAME", "").strip() or "unknown",
            token_file=Path(_get(env, "WINGMAN_TOKEN_FILE", "/var/run/wingman/token/token")),
            public_keys_dir=Path(_get(env, "WINGMAN_PUBLIC_KEYS_DIR", "/etc/wingman/keys")),
            serviceaccount_dir=Path(_get(env, "WINGMAN_SERVICEACCOUNT_DIR",
                                         DEFAULT_SERVICEACCOUNT_DIR)),
            api_server=f"https://{host_part}:{port}",
            exec_timeout_seconds=_int(env, "WINGMAN_EXEC_TIMEOUT_SECONDS", 120, 1, 3600),
            max_output_bytes=_int(env, "WINGMAN_MAX_OUTPUT_BYTES", 16384, 256, 16384),
            docker_enabled=env_bool(env, "WINGMAN_DOCKER_ENABLED", False),
            leeway_seconds=_int(env, "WINGMAN_LEEWAY_SECONDS", 5, 0, 60),
            docker_host=_docker_host(env),
            log_level=_log_level(env),
            executor_service_account=_name(env, "WINGMAN_EXECUTOR_SERVICE_ACCOUNT",
                                           "wingman-executor"),
            grant_uid=env.get("WINGMAN_GRANT_UID", "").strip(),
        )


# --------------------------------------------------------------------------- wingman chat

_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
#: Characters a chat signing key (slack-signing-secret, webhook-secret) holds at least.
MIN_SIGNING_KEY = 16
_SLACK_ID = re.compile(r"^[A-Z0-9]{2,32}$")


@dataclass(frozen=True)
class ChatPerson:
    """A chat user mapped to the Kubernetes identity chat decisions are made as."""

    user: str
    groups: tuple[str, ...] = ()
    telegram_id: int | None = None
    slack_id: str | None = None
    #: Key of this person's TOTP secret (base32) in the chat Secret; None: not enrolled.
    totp_key: str | None = None


@dataclass(frozen=True)
class TelegramConfig:
    chat_id: int
    requester_chat_id: int | None = None
    base_url: str = "https://api.telegram.org/bot"


@dataclass(frozen=True)
class SlackConfig:
    team_id: str
    channel: str
    requester_channel: str | None = None
    base_url: str = "https://slack.com/api/"
    command: str = "/wingman"


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    timeout_seconds: int = 10


@dataclass(frozen=True)
class ChatConfig:
    """The chat component's configuration file (the chart renders it from ``chat`` values)."""

    environment: str
    people: tuple[ChatPerson, ...] = ()
    telegram: TelegramConfig | None = None
    slack: SlackConfig | None = None
    webhook: WebhookConfig | None = None
    step_up: bool = False
    step_up_window_seconds: int = 120
    expiry_warning_minutes: int = 15

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, environment: str) -> ChatConfig:
        """Validate the file; ConfigError names the field and what it accepts."""
        if not isinstance(data, Mapping):
            raise ConfigError("the chat configuration must be a mapping")
        env = str(data.get("environment") or "")
        if env != environment:
            raise ConfigError(f"the chat configuration is for environment {env!r}, but this "
                              f"process serves {environment!r}; mount the right file")
        listed = data.get("people") or []
        if not isinstance(listed, list):
            raise ConfigError("chat.people must be a list of people (kubernetesUser, groups "
                              f"and ids), got {type(listed).__name__}")
        people = tuple(_person(p, i) for i, p in enumerate(listed))
        for attr, what in (("user", "Kubernetes user"), ("telegram_id", "Telegram user id"),
                           ("slack_id", "Slack user id")):
            seen = [getattr(p, attr) for p in people if getattr(p, attr) is not None]
            dup = {x for x in seen if seen.count(x) > 1}
            if dup:
                raise ConfigError(f"chat.people maps the {what} {sorted(map(str, dup))[0]!r} "
                                  "more than once; each person appears once")
        tg, sl, wh, step = (_section(data, key)
                            for key in ("telegram", "slack", "webhook", "stepUp"))
        telegram = slack = webhook = None
        on = {key: _enabled(section, key) for key, section in
              (("telegram", tg), ("slack", sl), ("webhook", wh), ("stepUp", step))}
        if on["telegram"]:
            telegram = TelegramConfig(
                chat_id=_cfg_int(tg, "chatId", "chat.telegram"),
                requester_chat_id=(_cfg_int(tg, "requesterChatId", "chat.telegram")
                                   if tg.get("requesterChatId") else None),
                base_url=_url(tg.get("baseUrl") or "https://api.telegram.org/bot",
                              "chat.telegram.baseUrl"))
        if on["slack"]:
            for key in ("teamId", "channel"):
                if not _SLACK_ID.fullmatch(str(sl.get(key) or "")):
                    raise ConfigError(f"chat.slack.{key} must be a Slack id (capital letters "
                                      f"and digits, e.g. T0123ABCD), got {sl.get(key)!r}")
            req = sl.get("requesterChannel") or None
            if req is not None and not _SLACK_ID.fullmatch(str(req)):
                raise ConfigError(f"chat.slack.requesterChannel must be a Slack channel id, "
                                  f"got {req!r}")
            command = str(sl.get("command") or "/wingman")
            if not re.fullmatch(r"/[a-z0-9_-]{1,31}", command):
                raise ConfigError(f"chat.slack.command must look like /wingman, got {command!r}")
            slack = SlackConfig(team_id=str(sl["teamId"]), channel=str(sl["channel"]),
                                requester_channel=str(req) if req else None,
                                base_url=_url(sl.get("baseUrl") or "https://slack.com/api/",
                                              "chat.slack.baseUrl"),
                                command=command)
        if on["webhook"]:
            webhook = WebhookConfig(
                url=_url(str(wh.get("url") or ""), "chat.webhook.url"),
                timeout_seconds=_cfg_range(wh, "timeoutSeconds", 10, 1, 120, "chat.webhook"))
        config = cls(
            environment=env, people=people, telegram=telegram, slack=slack, webhook=webhook,
            step_up=on["stepUp"],
            step_up_window_seconds=_cfg_range(step, "windowSeconds", 120, 30, 900,
                                              "chat.stepUp"),
            expiry_warning_minutes=_cfg_range(data, "expiryWarningMinutes", 15, 0, 1440,
                                              "chat"))
        return config

    def person_for_telegram(self, user_id: int) -> ChatPerson | None:
        return next((p for p in self.people if p.telegram_id == user_id), None)

    def person_for_slack(self, user_id: str) -> ChatPerson | None:
        return next((p for p in self.people if p.slack_id == user_id), None)

    def person_named(self, user: str) -> ChatPerson | None:
        return next((p for p in self.people if p.user == user), None)


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """The mapping ``chat.<key>`` (empty when not given); ConfigError for anything else."""
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"chat.{key} must be a mapping (enabled: true, ...), got "
                          f"{type(value).__name__}")
    return value


def _enabled(section: Mapping[str, Any], key: str) -> bool:
    """``chat.<key>.enabled``: true or false (absent: false). Anything else is refused: the
    string "false" (``--set-string``, a quoted YAML value) would read as true."""
    value = section.get("enabled", False)
    if not isinstance(value, bool):
        raise ConfigError(f"chat.{key}.enabled must be true or false, got {value!r}; write "
                          "it unquoted")
    return value


def _cfg_int(data: Mapping[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{where}.{key} must be an integer id, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{where}.{key} must be an integer id, got {value!r}") from None


def _cfg_range(data: Mapping[str, Any], key: str, default: int, lo: int, hi: int,
               where: str) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{where}.{key} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def _url(value: str, where: str) -> str:
    """A chat URL: http(s), with a host, and without credentials (any '@': the chat Secret
    holds them), spaces or control characters, as the chart refuses them."""
    if not re.match(r"^https?://[^\s/@]+", value) or "@" in value \
            or not value.isprintable() or any(c.isspace() for c in value):
        raise ConfigError(f"{where} must be an http(s) URL without credentials ('@'), spaces "
                          f"or control characters, got {shown_url(value)!r} (credentials "
                          "belong in the chat Secret; percent-encode an '@' the path needs "
                          "as %40)")
    return value


def _person(data: Any, index: int) -> ChatPerson:
    where = f"chat.people[{index}]"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping with kubernetesUser, groups and ids")
    user = data.get("kubernetesUser") or ""
    if not isinstance(user, str) or not user or len(user) > 253 or user.startswith("system:"):
        raise ConfigError(f"{where}.kubernetesUser must be a person's user name (1..253 "
                          f"characters, not system:*), got {user!r}")
    listed = data.get("groups") or []
    if not isinstance(listed, list) or not all(
            isinstance(g, str) and g and g == g.strip() for g in listed):
        raise ConfigError(f"{where}.groups must be a list of group names (e.g. "
                          f"[\"wingman:prd-approvers\"]), got {listed!r}")
    groups = tuple(listed)
    for g in groups:
        if g.startswith("system:"):
            raise ConfigError(f"{where}.groups may not name {g!r}: chat may only act with the "
                              "person's own Wingman groups, never system:* groups")
    tg = data.get("telegramUserId")
    slack = data.get("slackUserId")
    if slack is not None and not _SLACK_ID.fullmatch(str(slack)):
        raise ConfigError(f"{where}.slackUserId must be a Slack user id (e.g. U0123ABCD), "
                          f"got {slack!r}")
    totp = data.get("totpSecretKey") or None
    if totp is not None and not _SECRET_KEY.fullmatch(str(totp)):
        raise ConfigError(f"{where}.totpSecretKey must be a Secret key name, got {totp!r}")
    if tg is None and slack is None:
        raise ConfigError(f"{where} ({user}) has neither telegramUserId nor slackUserId")
    return ChatPerson(user=user, groups=groups,
                      telegram_id=_cfg_int(data, "telegramUserId", where) if tg is not None
                      else None,
                      slack_id=str(slack) if slack is not None else None,
                      totp_key=str(totp) if totp else None)


@dataclass(frozen=True)
class ChatSettings:
    namespace: str
    environment: str
    config: ChatConfig
    secrets_dir: Path
    audit_target: str = field(repr=False)  # a DSN carries its password
    log_format: str
    log_level: str
    http_port: int
    metrics_port: int
    #: The IP address both ports listen on (``WINGMAN_LISTEN_ADDRESS``, as the operator's).
    listen_address: str = "0.0.0.0"  # noqa: S104 - the pod's ports
    sync_interval_seconds: float = 5.0
    #: How long the HTTP server waits for a whole request on a new or idle connection.
    http_idle_seconds: float = 75.0
    state_configmap: str = "wingman-chat-state"
    #: Secret values read from ``secrets_dir`` at start (never logged).
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    def secret(self, key: str) -> str:
        value = self.secrets.get(key, "")
        if not value:
            raise ConfigError(f"the chat Secret has no key {key!r} (looked in "
                              f"{self.secrets_dir}/{key}): add it to the Secret named by "
                              "chat.secretName")
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ChatSettings:
        env = os.environ if env is None else env
        environment = _environment(env)
        path = Path(_get(env, "WINGMAN_CHAT_CONFIG", "/etc/wingman/chat/chat.yaml"))
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"WINGMAN_CHAT_CONFIG={path}: cannot read it ({exc.strerror}); "
                              "mount the ConfigMap wingman-chat") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"WINGMAN_CHAT_CONFIG={path} is not valid YAML: {exc}") from None
        config = ChatConfig.from_dict(raw or {}, environment=environment)
        secrets_dir = Path(_get(env, "WINGMAN_CHAT_SECRETS_DIR", "/etc/wingman/chat-secrets"))
        secrets: dict[str, str] = {}
        if secrets_dir.is_dir():
            for f in sorted(secrets_dir.iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    secrets[f.name] = f.read_text().strip()
        settings = cls(
            namespace=_name(env, "WINGMAN_NAMESPACE", "wingman"),
            environment=environment,
            config=config,
            secrets_dir=secrets_dir,
            audit_target=_audit_target(env),
            log_format=_log_format(env),
            log_level=_log_level(env),
            http_port=_int(env, "WINGMAN_CHAT_HTTP_PORT", 8080, 0, 65535),
            metrics_port=_int(env, "WINGMAN_METRICS_PORT", 9090, 0, 65535),
            listen_address=_listen_address(env),
            sync_interval_seconds=float(_int(env, "WINGMAN_CHAT_SYNC_SECONDS", 5, 1, 300)),
            http_idle_seconds=float(_int(env, "WINGMAN_CHAT_HTTP_IDLE_SECONDS", 75, 5, 3600)),
            state_configmap=_name(env, "WINGMAN_CHAT_STATE_CONFIGMAP", "wingman-chat-state"),
            secrets=secrets,
        )
        needed = []
        if config.telegram:
            needed.append("telegram-token")
        if config.slack:
            needed += ["slack-bot-token", "slack-signing-secret"]
        if config.webhook:
            needed.append("webhook-secret")
        if config.step_up:
            needed += [p.totp_key for p in config.people if p.totp_key]
        for key in needed:
            settings.secret(key)
        for key, what in (("slack-signing-secret", "Slack's signing secret (the app's Basic "
                           "Information page shows it: 32 characters): copy it whole"),
                          ("webhook-secret", "the webhook's HMAC key: generate one, e.g. "
                           "openssl rand -hex 32, and give it to the receiver too")):
            if key in needed and len(settings.secret(key)) < MIN_SIGNING_KEY:
                raise ConfigError(f"the chat Secret's key {key!r} holds "
                                  f"{len(settings.secret(key))} characters, fewer than "
                                  f"{MIN_SIGNING_KEY}: it must hold {what}")
        if config.step_up:
            for person in config.people:
                if person.totp_key:
                    _check_totp(person.totp_key, person.user, settings.secret(person.totp_key))
        if not (config.telegram or config.slack or config.webhook):
            raise ConfigError("no chat channel is enabled: enable chat.telegram, chat.slack "
                              "or chat.webhook")
        return settings


def _check_totp(key: str, user: str, secret: str) -> None:
    """ConfigError unless ``secret`` is a TOTP secret step-up can check codes with (pyotp:
    base32, at least 112 bits), naming its key and what is wrong, never its value: else
    every code of that person would fail unanswered, each counted as a wrong one."""
    import pyotp

    try:
        pyotp.TOTP(secret)
    except (ValueError, TypeError):  # binascii.Error, too short
        raise ConfigError(
            f"the chat Secret's key {key!r} ({user}'s TOTP secret) is not a secret step-up "
            "can use: it must be base32 (the letters A-Z and the digits 2-7, without spaces "
            "or an otpauth:// URI around it) of at least 112 bits (23 characters; 32, as "
            "pyotp.random_base32() makes, is usual; the 16 some apps make are too few): "
            "generate a new one, put it in the Secret and enrol it in their authenticator "
            "app") from None


@dataclass(frozen=True)
class ClientSettings:
    """Where a client (the CLI, ``wingman mcp``) finds its cluster and credentials.

    A kubeconfig when there is one (``--kubeconfig``, else ``$KUBECONFIG``, else
    ``~/.kube/config``); otherwise the pod's in-cluster configuration: the API server from
    ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` and the ServiceAccount token and CA
    from ``WINGMAN_SERVICEACCOUNT_DIR`` (default: where Kubernetes mounts them).
    ``WINGMAN_NAMESPACE`` names the release namespace when no ``-n`` is given.
    """

    kubeconfig: tuple[str, ...]
    default_kubeconfig: str
    service_host: str
    service_port: str
    serviceaccount_dir: Path
    namespace: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        env = os.environ if env is None else env
        paths = tuple(p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p.strip())
        namespace = env.get("WINGMAN_NAMESPACE", "").strip() or None
        if namespace is not None:
            namespace = _name(env, "WINGMAN_NAMESPACE", namespace)
        home = env.get("HOME", "").strip() or str(Path.home())
        return cls(
            kubeconfig=paths,
            default_kubeconfig=str(Path(home) / ".kube" / "config"),
            service_host=env.get("KUBERNETES_SERVICE_HOST", "").strip(),
            service_port=env.get("KUBERNETES_SERVICE_PORT", "").strip() or "443",
            serviceaccount_dir=Path(_get(env, "WINGMAN_SERVICEACCOUNT_DIR",
                                         DEFAULT_SERVICEACCOUNT_DIR)),
            namespace=namespace,
        )


#: ``wingman mcp --transport http``: the most connections served at once, the seconds an
#: idle connection is kept, and the most MCP sessions open at once, by default (a sidecar
#: serves one agent: a few connections; a session takes some 40 KB while it lasts, up to 30
#: minutes idle after its client went away without ending it).
MCP_MAX_CONNECTIONS = 100
MCP_IDLE_TIMEOUT_SECONDS = 5
MCP_MAX_SESSIONS = 1000


def _limit(given: int | None, flag: str, env: Mapping[str, str], key: str, default: int,
           lo: int, hi: int) -> int:
    if given is None:
        return _int(env, key, default, lo, hi)
    if not lo <= given <= hi:
        raise ConfigError(f"{flag} {given} must be between {lo} and {hi}")
    return given


@dataclass(frozen=True)
class McpHttpSettings:
    """The bounds of ``wingman mcp --transport http`` on its connections.

    ``max_connections``: the most connections open at once; one more is answered 503 with
    ``Retry-After`` as it opens and closed once read, within a second (``--max-connections``, else
    ``WINGMAN_MCP_MAX_CONNECTIONS``; 1 to 10000, default 100). ``idle_timeout_seconds``: a
    connection that has sent nothing of a request for this long (since it opened, or since the
    previous answer) is closed (``--idle-timeout-seconds``, else
    ``WINGMAN_MCP_IDLE_TIMEOUT_SECONDS``; 1 to 600, default 5). ``max_sessions``: the most
    MCP sessions (one per ``initialize``) open at once; one more is answered 503 until one
    ends or expires (``--max-sessions``, else ``WINGMAN_MCP_MAX_SESSIONS``; 1 to 10000, default
    1000). A flag given wins over its variable."""

    max_connections: int = MCP_MAX_CONNECTIONS
    idle_timeout_seconds: int = MCP_IDLE_TIMEOUT_SECONDS
    max_sessions: int = MCP_MAX_SESSIONS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *,
                 max_connections: int | None = None,
                 idle_timeout_seconds: int | None = None,
                 max_sessions: int | None = None) -> McpHttpSettings:
        env = os.environ if env is None else env
        return cls(
            max_connections=_limit(max_connections, "--max-connections", env,
                                   "WINGMAN_MCP_MAX_CONNECTIONS", MCP_MAX_CONNECTIONS, 1, 10000),
            idle_timeout_seconds=_limit(idle_timeout_seconds, "--idle-timeout-seconds", env,
                                        "WINGMAN_MCP_IDLE_TIMEOUT_SECONDS",
                                        MCP_IDLE_TIMEOUT_SECONDS, 1, 600),
            max_sessions=_limit(max_sessions, "--max-sessions", env, "WINGMAN_MCP_MAX_SESSIONS",
                                MCP_MAX_SESSIONS, 1, 10000),
        )


@dataclass(frozen=True)
class PreviewSettings:
    """The preview Job's settings (``wingman preview``): which request, and how long."""

    namespace: str
    environment: str
    policy: EnvironmentPolicy
    log_format: str
    approval_name: str
    approval_uid: str
    pod_name: str
    serviceaccount_dir: Path
    api_server: str
    timeout_seconds: int
    command_timeout_seconds: int
    termination_log: Path
    docker_enabled: bool
    docker_host: str = "unix:///var/run/docker.sock"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PreviewSettings:
        env = os.environ if env is None else env
        environment = _environment(env)
        approval = env.get("WINGMAN_APPROVAL_NAME", "").strip()
        uid = env.get("WINGMAN_APPROVAL_UID", "").strip()
        if not approval or not uid:
            raise ConfigError("WINGMAN_APPROVAL_NAME and WINGMAN_APPROVAL_UID must be set: the "
                              "preview Job names the ApprovalRequest it previews")
        policy = _policy(env, environment)
        timeout = _int(env, "WINGMAN_PREVIEW_TIMEOUT_SECONDS", policy.preview.timeout_seconds,
                       5, 600)
        return cls(
            namespace=_name(env, "WINGMAN_NAMESPACE", "wingman"),
            environment=environment,
            policy=policy,
            log_format=_log_format(env),
            approval_name=approval,
            approval_uid=uid,
            pod_name=env.get("WINGMAN_POD_NAME", "").strip() or "unknown",
            serviceaccount_dir=Path(_get(env, "WINGMAN_SERVICEACCOUNT_DIR",
                                         DEFAULT_SERVICEACCOUNT_DIR)),
            api_server=_api_server(env, "the preview"),
            timeout_seconds=timeout,
            command_timeout_seconds=_int(env, "WINGMAN_PREVIEW_COMMAND_TIMEOUT_SECONDS",
                                         min(30, timeout), 1, 600),
            termination_log=Path(_get(env, "WINGMAN_TERMINATION_LOG", "/dev/termination-log")),
            docker_enabled=env_bool(env, "WINGMAN_DOCKER_ENABLED", False),
            docker_host=_docker_host(env),
        )


def _api_server(env: Mapping[str, str], who: str) -> str:
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = env.get("KUBERNETES_SERVICE_PORT", "443").strip()
    if not host:
        raise ConfigError(f"KUBERNETES_SERVICE_HOST is not set: {who} runs in a pod (or the node "
                          "harness) that tells it where the API server is")
    host_part = f"[{host}]" if ":" in host else host
    return f"https://{host_part}:{port}"


__all__ = ["RESERVED_LABEL_PREFIXES", "ChatConfig", "ChatPerson", "ChatSettings", "ClientSettings",
           "GatewayPod", "GatewaySettings", "LogSettings", "McpHttpSettings", "OperatorSettings",
           "PreviewSettings", "SlackConfig", "TelegramConfig", "WebhookConfig", "env_bool"]
