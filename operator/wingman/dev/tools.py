"""Where the Kubernetes-ecosystem binaries come from (kube-apiserver, etcd, helm, ...).

Wingman's local control plane, its tests and ``make run`` need kube-apiserver, etcd,
kube-controller-manager, kubectl, helm and promtool; the chart's tests also helm-docs,
kubeconform and podsecurity (and the pinned Kubernetes OpenAPI document); the real node
(``wingman.dev.kubelet``) kubelet, kube-scheduler and kube-proxy. This module finds them, in
order:

1. ``KUBEBUILDER_ASSETS`` (the envtest convention) for the control-plane binaries;
2. ``WINGMAN_TOOLS_DIR`` when set;
3. the project's cache, ``$WINGMAN_CACHE/bin`` (default ``~/.cache/wingman/bin``), filled by
   ``.ci/provision-tools.sh``, which builds pinned versions from the Go module proxy;
4. ``PATH``, for helm and promtool only (a stray kubectl or kube-apiserver on PATH may be of any
   version; the pinned ones are preferred).

``provision()`` runs the provisioning script when the repository checkout is at hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from wingman.errors import ClusterError

CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager", "kubectl")
#: The checkers the tests run over the chart (helm-docs, kubeconform, the Pod Security evaluator).
CHECKERS = ("helm-docs", "kubeconform", "podsecurity", "healthcheck")
#: The real node's components (wingman.dev.kubelet), built from the same pinned module.
NODE = ("kubelet", "kube-scheduler", "kube-proxy", "pause")
TOOLS = (*CONTROL_PLANE, "helm", "promtool", *CHECKERS, *NODE)

_REPO_ROOT = Path(__file__).resolve().parents[3]
PROVISION_SCRIPT = _REPO_ROOT / ".ci" / "provision-tools.sh"


def cache_dir() -> Path:
    """The directory that holds provisioned tools (outside the repository)."""
    return Path(os.environ.get("WINGMAN_CACHE", Path.home() / ".cache" / "wingman"))


def _candidates(name: str) -> list[Path]:
    dirs: list[Path] = []
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and name in CONTROL_PLANE:
        dirs.append(Path(assets))
    tools_dir = os.environ.get("WINGMAN_TOOLS_DIR")
    if tools_dir:
        dirs.append(Path(tools_dir))
    dirs.append(cache_dir() / "bin")
    return [d / name for d in dirs]


def kubernetes_openapi() -> Path | None:
    """The pinned Kubernetes release's OpenAPI (v2) document, which provisioning copies from
    the module cache; None when it has not been provisioned."""
    path = cache_dir() / "share" / "kubernetes-openapi.json"
    return path if path.is_file() else None


def find_tool(name: str) -> Path | None:
    """The path of tool ``name``, or None when it is nowhere to be found."""
    if name not in TOOLS:
        raise ValueError(f"unknown tool {name!r}; known tools: {', '.join(TOOLS)}")
    for candidate in _candidates(name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    if name in ("helm", "promtool"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def tool_path(name: str) -> Path:
    """The path of tool ``name``; raises ClusterError saying how to provision it."""
    path = find_tool(name)
    if path is None:
        raise ClusterError(
            f"{name} was not found (looked in KUBEBUILDER_ASSETS, WINGMAN_TOOLS_DIR and "
            f"{cache_dir() / 'bin'}). Run `bash .ci/provision-tools.sh` from the repository to "
            "build the pinned tools, or set KUBEBUILDER_ASSETS to a directory holding them.",
            reason="ToolMissing",
        )
    return path


def provision() -> Path:
    """Build missing tools with the repository's script (cached; seconds when warm).

    Returns the directory holding the tools. Without a repository checkout (an installed
    package), only looks the tools up.
    """
    if all(find_tool(t) for t in TOOLS):
        return tool_path("kube-apiserver").parent
    if not PROVISION_SCRIPT.is_file():
        missing = [t for t in TOOLS if find_tool(t) is None]
        raise ClusterError(
            f"tools missing: {', '.join(missing)}; set KUBEBUILDER_ASSETS or WINGMAN_TOOLS_DIR "
            "to a directory holding them (the provisioning script is only in a checkout).",
            reason="ToolMissing",
        )
    result = subprocess.run(
        ["bash", str(PROVISION_SCRIPT)], stdout=subprocess.PIPE, stderr=sys.stderr, text=True
    )
    if result.returncode != 0:
        raise ClusterError(
            f"{PROVISION_SCRIPT} failed with exit code {result.returncode}; its output above "
            "says which build failed.",
            reason="ToolMissing",
        )
    return Path(result.stdout.strip().splitlines()[-1])


__all__ = ["CHECKERS", "NODE", "TOOLS", "cache_dir", "find_tool", "kubernetes_openapi", "provision",
           "tool_path"]
