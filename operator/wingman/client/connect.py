"""Connecting as the caller: a kubeconfig when there is one, else the pod's ServiceAccount.

The order is kubectl's: ``--kubeconfig``, else ``$KUBECONFIG`` (several paths merge as kubectl
merges them: the first file that sets ``current-context``, or that defines a cluster, context or
user name, wins), else ``~/.kube/config``, with ``--context`` over the current context; with
none of them, the in-cluster configuration (``KUBERNETES_SERVICE_HOST`` and ``_PORT``, and the
token and CA in the ServiceAccount directory, re-read as the kubelet rotates the token). The
namespace is ``-n``, else ``$WINGMAN_NAMESPACE``, else the context's namespace (in a pod: the
pod's own), else ``wingman``. A kubeconfig whose exec credential plugin fails or gives no
credentials is a ConfigError (the kubernetes library would only log it and call anonymously),
naming the kubectl command that shows the plugin's error.

Nothing here ever holds more than the caller's own rights: no impersonation unless the caller
asks for it (and RBAC allows it), no Secret is read.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from wingman.errors import ConfigError
from wingman.kube import Kube, failed_exec_plugin, kubeconfig_contexts, load_kubeconfig
from wingman.settings import ClientSettings

DEFAULT_NAMESPACE = "wingman"
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _check_namespace(namespace: str, source: str) -> str:
    if not _NAMESPACE.fullmatch(namespace):
        shown = repr(namespace) if len(namespace) <= 80 else (
            f"{namespace[:60]!r}... ({len(namespace)} characters)")
        raise ConfigError(f"{source} {shown} is not a valid namespace: a namespace is 1 to 63 "
                          "lowercase letters, digits and '-', starting and ending with a letter "
                          "or digit (the release's namespace, e.g. wingman)")
    return namespace


@dataclass(frozen=True)
class Connection:
    """An authenticated connection, the namespace to use, and where both came from."""

    kube: Kube
    namespace: str
    origin: str  # "kubeconfig <path> (context <name>)" or "in-cluster ServiceAccount"


def _tilde(*paths: str) -> str:
    """What to add to "no such file" when a path begins with ``~``: it is taken as written, as
    kubectl takes it (a shell expands ``~`` only unquoted, at the start of a word)."""
    if not any(p.startswith("~") for p in paths):
        return ""
    return (" (a leading ~ is not expanded, as kubectl does not expand it: write $HOME/... "
            "unquoted, or the full path)")


def _kubeconfig_paths(settings: ClientSettings, explicit: str | None) -> tuple[str, ...]:
    if explicit:
        if not Path(explicit).is_file():
            if not Path(explicit).exists():
                raise ConfigError(f"--kubeconfig {explicit}: no such file{_tilde(explicit)}")
            raise ConfigError(f"--kubeconfig {explicit} is not a regular file (a directory, a "
                              "FIFO or a device); pass the kubeconfig file itself")
        return (explicit,)
    if settings.kubeconfig:
        for name in settings.kubeconfig:  # a missing one is skipped, as kubectl does
            if Path(name).exists() and not Path(name).is_file():
                raise ConfigError(f"KUBECONFIG names {name}, which is not a regular file (a "
                                  "directory, a FIFO or a device); name the kubeconfig files "
                                  f"themselves, separated by '{os.pathsep}'")
        existing = tuple(p for p in settings.kubeconfig if Path(p).is_file())
        if not existing:
            raise ConfigError(f"KUBECONFIG={os.pathsep.join(settings.kubeconfig)}: no such "
                              f"file{_tilde(*settings.kubeconfig)}; fix KUBECONFIG or unset it "
                              "(in a pod: to use the ServiceAccount)")
        return existing
    if Path(settings.default_kubeconfig).is_file():
        return (settings.default_kubeconfig,)
    return ()


def _kubectl(paths: Sequence[str], context: str | None, *args: str) -> str:
    """The kubectl command line that reads the same kubeconfig and context: ``--kubeconfig``
    takes one file only, so several (a merged ``KUBECONFIG``) are given as kubectl reads them."""
    where = ([] if len(paths) > 1 else ["--kubeconfig", paths[0]]) + (
        ["--context", context] if context is not None else [])
    line = shlex.join(["kubectl", *args, *where])
    return f"KUBECONFIG={shlex.quote(os.pathsep.join(paths))} {line}" if len(paths) > 1 else line


def connect(settings: ClientSettings | None = None, *, kubeconfig: str | None = None,
            context: str | None = None, namespace: str | None = None,
            impersonate: str | None = None, impersonate_groups: Sequence[str] = (),
            timeout: float = 30.0) -> Connection:
    """Connect as the caller (see the module docstring); ConfigError says what is missing."""
    settings = ClientSettings.from_env() if settings is None else settings
    if namespace is not None:
        _check_namespace(namespace, "-n/--namespace")
    configuration = k8s.Configuration()
    paths = _kubeconfig_paths(settings, kubeconfig)
    context_namespace: str | None = None
    if paths:
        joined = os.pathsep.join(paths)
        try:
            if context is not None:
                contexts = kubeconfig_contexts(paths)
                if not any(c.get("name") == context for c in contexts):
                    names = ", ".join(sorted(str(c.get("name")) for c in contexts))
                    raise ConfigError(f"--context {context}: no such context in {joined} "
                                      f"(contexts: {names or 'none'})")
            # kubectl's current context (the first file that sets one), not the library's
            chosen = load_kubeconfig(configuration, paths, context, persist_config=False)
            context_namespace = (chosen or {}).get("context", {}).get("namespace")
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - any kubeconfig problem is the user's to fix
            raise ConfigError(f"cannot use the kubeconfig {joined}: {exc} (is it a kubeconfig? "
                              f"'{_kubectl(paths, None, 'config', 'view')}' shows what kubectl "
                              "makes of it)") from None
        command = failed_exec_plugin(paths, chosen, configuration)
        if command is not None:
            raise ConfigError(
                f"the kubeconfig {joined} gets its credentials from the command {command!r}, "
                "which failed or gave none, so every call would go out anonymous; run "
                f"'{_kubectl(paths, context, 'version')}' to see the command's error, and fix "
                "it (log in again, or put the command on PATH)")
        origin = f"kubeconfig {joined}" + (f" (context {context})" if context else "")
    else:
        if context is not None:
            raise ConfigError(f"--context {context} needs a kubeconfig, and there is none "
                              "(--kubeconfig, KUBECONFIG or ~/.kube/config)")
        if not settings.service_host:
            raise ConfigError(
                "no Kubernetes configuration: no kubeconfig (--kubeconfig, KUBECONFIG or "
                "~/.kube/config) and not in a pod (KUBERNETES_SERVICE_HOST is not set)")
        sa = settings.serviceaccount_dir
        loader = k8s_config.incluster_config.InClusterConfigLoader(
            token_filename=str(sa / "token"), cert_filename=str(sa / "ca.crt"),
            environ={"KUBERNETES_SERVICE_HOST": settings.service_host,
                     "KUBERNETES_SERVICE_PORT": settings.service_port})
        try:
            loader.load_and_set(configuration)
        except (k8s_config.ConfigException, OSError) as exc:
            raise ConfigError(f"in-cluster configuration failed: {exc} (ServiceAccount "
                              f"directory {sa}; set WINGMAN_SERVICEACCOUNT_DIR if it is "
                              "mounted elsewhere)") from None
        try:
            context_namespace = (sa / "namespace").read_text(encoding="utf-8").strip() or None
        except OSError:
            context_namespace = None
        except UnicodeDecodeError:
            if namespace is not None or settings.namespace is not None:
                context_namespace = None  # not needed: -n or WINGMAN_NAMESPACE names it
            else:
                raise ConfigError(f"the ServiceAccount namespace file {sa / 'namespace'} is "
                                  "not UTF-8 text, while it should hold the pod's namespace: "
                                  "check what is mounted there (WINGMAN_SERVICEACCOUNT_DIR), "
                                  "or pass -n NAMESPACE") from None
        origin = f"in-cluster ServiceAccount ({sa})"
    kube = Kube(k8s.ApiClient(configuration), timeout=timeout)
    if impersonate:
        kube = kube.as_user(impersonate, tuple(impersonate_groups))
    ns = namespace or settings.namespace or (
        _check_namespace(context_namespace, f"the namespace of {origin}")
        if context_namespace else DEFAULT_NAMESPACE)
    return Connection(kube, ns, origin)


__all__ = ["DEFAULT_NAMESPACE", "Connection", "connect"]
