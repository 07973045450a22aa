"""Configuration from one place: ``WINGMAN_*`` environment variables (set from Helm values).

This is the only module that reads ``os.environ``. Each process gets one frozen settings
object (``OperatorSettings`` or ``GatewaySettings``) and passes it down; a bad value raises
``ConfigError`` naming the variable and what it accepts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wingman.errors import ConfigError
from wingman.review.policy import EnvironmentPolicy

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _get(env: Mapping[str, str], key: str, default: str) -> str:
    return env.get(key, "").strip() or default


def _name(env: Mapping[str, str], key: str, default: str) -> str:
    value = _get(env, key, default)
    if not _NAME.match(value):
        raise ConfigError(f"{key}={value!r} is not a valid Kubernetes name (lowercase "
                          "letters, digits and '-', at most 63 characters)")
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


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = _get(env, key, "true" if default else "false").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key}={raw!r} must be true or false")


def _policy(env: Mapping[str, str], environment: str) -> EnvironmentPolicy:
    path = env.get("WINGMAN_POLICY_FILE", "").strip()
    if not path:
        return EnvironmentPolicy(name=environment)
    return EnvironmentPolicy.load(Path(path), environment=environment)


def _log_format(env: Mapping[str, str]) -> str:
    fmt = _get(env, "WINGMAN_LOG_FORMAT", "text")
    if fmt not in ("json", "text"):
        raise ConfigError(f"WINGMAN_LOG_FORMAT={fmt!r} must be 'json' or 'text'")
    return fmt


def _docker_host(env: Mapping[str, str]) -> str:
    """The Docker engine's local socket: WINGMAN_DOCKER_HOST, else DOCKER_HOST."""
    key = "WINGMAN_DOCKER_HOST" if env.get("WINGMAN_DOCKER_HOST", "").strip() else "DOCKER_HOST"
    value = _get(env, key, "unix:///var/run/docker.sock")
    if not value.startswith("unix:///") or len(value) <= len("unix:///"):
        raise ConfigError(f"{key}={value!r} must be a local socket, unix:///path/to/docker.sock "
                          "(the gateway never talks to a Docker engine over the network)")
    return value


def _socket(env: Mapping[str, str]) -> str | None:
    path = env.get("WINGMAN_GATEWAY_DOCKER_SOCKET", "").strip()
    if path and not path.startswith("/"):
        raise ConfigError(f"WINGMAN_GATEWAY_DOCKER_SOCKET={path!r} must be an absolute path to "
                          "the node's Docker socket, e.g. /var/run/docker.sock")
    return path or None


@dataclass(frozen=True)
class OperatorSettings:
    namespace: str
    environment: str
    policy: EnvironmentPolicy
    audit_target: str
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
    peering: bool = True
    expiry_interval_seconds: float = 10.0
    #: The node's Docker socket, mounted into gateway pods when docker commands are enabled.
    gateway_docker_socket: str | None = None
    #: Testing only: SIGKILL the process right after this step of the grant flow.
    fault_kill_at: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        environment = _name(env, "WINGMAN_ENVIRONMENT", "test")
        audit_secret = env.get("WINGMAN_AUDIT_SECRET", "").strip() or None
        if audit_secret and audit_secret.count("/") != 1:
            raise ConfigError(f"WINGMAN_AUDIT_SECRET={audit_secret!r} must be 'name/key'")
        return cls(
            namespace=_name(env, "WINGMAN_NAMESPACE", "wingman"),
            environment=environment,
            policy=_policy(env, environment),
            audit_target=_get(env, "WINGMAN_AUDIT_TARGET", "/var/lib/wingman/audit/audit.jsonl"),
            issuer=_get(env, "WINGMAN_ISSUER", "wingman-operator"),
            log_format=_log_format(env),
            public_keys_configmap=_name(env, "WINGMAN_PUBLIC_KEYS_CONFIGMAP",
                                        "wingman-public-keys"),
            signing_key_secret=_name(env, "WINGMAN_SIGNING_KEY_SECRET", "wingman-signing-key"),
            gateway_image=_get(env, "WINGMAN_GATEWAY_IMAGE", "ghcr.io/wingman-dev/wingman:0.1.0"),
            gateway_service_account=_name(env, "WINGMAN_GATEWAY_SERVICE_ACCOUNT",
                                          "wingman-gateway"),
            policy_configmap=_name(env, "WINGMAN_POLICY_CONFIGMAP", "wingman-policy"),
            metrics_port=_int(env, "WINGMAN_METRICS_PORT", 9090, 0, 65535),
            health_port=_int(env, "WINGMAN_HEALTH_PORT", 8080, 0, 65535),
            voters_secret=env.get("WINGMAN_VOTERS_SECRET", "").strip() or None,
            audit_volume_claim=env.get("WINGMAN_AUDIT_VOLUME_CLAIM", "").strip() or None,
            audit_secret=audit_secret,
            job_ttl_seconds=_int(env, "WINGMAN_JOB_TTL_SECONDS", 3600, 0, 7 * 86400),
            gateway_timeout_seconds=_int(env, "WINGMAN_GATEWAY_TIMEOUT_SECONDS", 120, 1, 3600),
            leeway_seconds=_int(env, "WINGMAN_LEEWAY_SECONDS", 5, 0, 60),
            peering=_bool(env, "WINGMAN_PEERING", True),
            expiry_interval_seconds=float(_int(env, "WINGMAN_EXPIRY_INTERVAL_SECONDS", 10, 1,
                                               3600)),
            gateway_docker_socket=_socket(env),
            fault_kill_at=env.get("WINGMAN_FAULT_KILL_AT", "").strip() or None,
        )


@dataclass(frozen=True)
class GatewaySettings:
    namespace: str
    environment: str
    policy: EnvironmentPolicy
    audit_target: str
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        environment = _name(env, "WINGMAN_ENVIRONMENT", "test")
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
            audit_target=_get(env, "WINGMAN_AUDIT_TARGET", "/var/lib/wingman/audit/audit.jsonl"),
            issuer=_get(env, "WINGMAN_ISSUER", "wingman-operator"),
            log_format=_log_format(env),
            grant_name=grant,
            job_uid=env.get("WINGMAN_JOB_UID", "").strip(),
            pod_name=env.get("WINGMAN_POD_NAME", "").strip() or "unknown",
            token_file=Path(_get(env, "WINGMAN_TOKEN_FILE", "/var/run/wingman/token/token")),
            public_keys_dir=Path(_get(env, "WINGMAN_PUBLIC_KEYS_DIR", "/etc/wingman/keys")),
            serviceaccount_dir=Path(_get(env, "WINGMAN_SERVICEACCOUNT_DIR",
                                         "/var/run/secrets/kubernetes.io/serviceaccount")),
            api_server=f"https://{host_part}:{port}",
            exec_timeout_seconds=_int(env, "WINGMAN_EXEC_TIMEOUT_SECONDS", 120, 1, 3600),
            max_output_bytes=_int(env, "WINGMAN_MAX_OUTPUT_BYTES", 16384, 256, 16384),
            docker_enabled=_bool(env, "WINGMAN_DOCKER_ENABLED", False),
            leeway_seconds=_int(env, "WINGMAN_LEEWAY_SECONDS", 5, 0, 60),
            docker_host=_docker_host(env),
        )


__all__ = ["GatewaySettings", "OperatorSettings"]
