"""The e2e tier against an existing cluster: ``WINGMAN_E2E_KUBECONFIG=<admin kubeconfig>``.

By default the integration, container and e2e tiers start the local control plane
(``wingman.dev.cluster.LocalCluster``). With ``WINGMAN_E2E_KUBECONFIG`` set, the session's
``cluster`` fixture is an :class:`ExistingCluster` instead: the same interface over a cluster
someone else started (kind, a separately started ``wingman dev cluster``, a real cluster),
reached with that kubeconfig. People are played by impersonation (``as``/``as-groups`` in a
generated kubeconfig), so the admission policies and RBAC see exactly the user and groups they
would see from that person; ServiceAccounts get real tokens through TokenRequest as before.
The admin identity must be allowed to impersonate (cluster-admin is).

``WINGMAN_E2E_NODES`` says who runs the gateway pods the tests create:

- ``harness`` (default): the node harness (``wingman.dev.node``) plays scheduler and kubelet
  for the tests' namespaces; use it with clusters that schedule nothing themselves (a control
  plane without nodes);
- ``cluster``: the cluster's own nodes do (kind); tests that need the harness (marked
  ``nodeharness``) are skipped with that reason, since the cluster's scheduler would race it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from wingman.dev.cluster import LocalCluster
from wingman.errors import ClusterError

KUBECONFIG_ENV = "WINGMAN_E2E_KUBECONFIG"
NODES_ENV = "WINGMAN_E2E_NODES"


def existing_kubeconfig() -> Path | None:
    """The kubeconfig the e2e tier was pointed at, or None (start the local control plane)."""
    value = os.environ.get(KUBECONFIG_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ClusterError(f"{KUBECONFIG_ENV}={value} is not a file; point it at the admin "
                           "kubeconfig of the cluster to test (e.g. `kind get kubeconfig`)",
                           reason="BadConfig")
    return path.resolve()


def nodes_mode() -> str:
    mode = os.environ.get(NODES_ENV, "harness").strip() or "harness"
    if mode not in ("harness", "cluster"):
        raise ClusterError(f"{NODES_ENV}={mode!r} must be 'harness' or 'cluster'",
                           reason="BadConfig")
    return mode


def _absolute(base: Path, entry: dict[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        value = entry.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value):
            entry[key] = str((base / value).resolve())


class ExistingCluster(LocalCluster):
    """A cluster started by someone else, used through its admin kubeconfig."""

    @classmethod
    def connect(cls, kubeconfig: Path) -> ExistingCluster:
        config = yaml.safe_load(kubeconfig.read_text()) or {}
        current = config.get("current-context")
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
        if current not in contexts:
            raise ClusterError(f"{kubeconfig} has no current-context; set one "
                               "(kubectl config use-context ...)", reason="BadConfig")
        context = contexts[current]
        clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
        users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
        cluster = dict(clusters[context["cluster"]])
        user = dict(users[context["user"]])
        base = kubeconfig.parent
        _absolute(base, cluster, ["certificate-authority"])
        _absolute(base, user, ["client-certificate", "client-key", "tokenFile"])
        workdir = Path(tempfile.mkdtemp(prefix="wingman-existing-"))
        ca = workdir / "ca.crt"
        if cluster.get("certificate-authority-data"):
            ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        elif cluster.get("certificate-authority"):
            shutil.copy(cluster["certificate-authority"], ca)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            raise ClusterError(f"{kubeconfig}: the cluster entry names no certificate "
                               "authority; the tests verify the API server's certificate",
                               reason="BadConfig")
        admin = workdir / "admin.kubeconfig"
        single = {"apiVersion": "v1", "kind": "Config", "current-context": "e2e",
                  "clusters": [{"name": "e2e", "cluster": cluster}],
                  "users": [{"name": "admin", "user": user}],
                  "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}]}
        admin.write_text(yaml.safe_dump(single))
        admin.chmod(0o600)
        found = cls(workdir, str(cluster["server"]), admin, None,  # type: ignore[arg-type]
                    _owns_workdir=True)
        found._admin_user = user
        found._cluster_entry = cluster
        return found

    _admin_user: dict[str, Any]
    _cluster_entry: dict[str, Any]

    def kubeconfig_for(self, user: str | None = None, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig acting as ``user`` in ``groups`` by impersonation (admin when None)."""
        if user is None:
            return self.kubeconfig
        key = (user, tuple(groups))
        if key not in self._user_kubeconfigs:
            path = self.workdir / f"user-{len(self._user_kubeconfigs)}.kubeconfig"
            entry = dict(self._admin_user)
            entry["as"] = user
            entry["as-groups"] = list(groups)
            config = {"apiVersion": "v1", "kind": "Config", "current-context": "e2e",
                      "clusters": [{"name": "e2e", "cluster": self._cluster_entry}],
                      "users": [{"name": user, "user": entry}],
                      "contexts": [{"name": "e2e", "context": {"cluster": "e2e",
                                                               "user": user}}]}
            path.write_text(yaml.safe_dump(config))
            path.chmod(0o600)
            self._user_kubeconfigs[key] = path
        return self._user_kubeconfigs[key]

    def api_client(self, user: str | None = None, groups: Sequence[str] = ()) -> Any:
        if user is not None:
            raise ClusterError("an existing cluster's people are impersonated through kubectl; "
                               "the Python client here acts as the admin only",
                               reason="NotSupported")
        return super().api_client()

    def stop(self) -> None:
        """The cluster is not ours: only our working files go."""
        with contextlib.suppress(OSError):
            shutil.rmtree(self.workdir)


__all__ = ["KUBECONFIG_ENV", "NODES_ENV", "ExistingCluster", "existing_kubeconfig",
           "nodes_mode"]
