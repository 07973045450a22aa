"""The node harness's pure rules: argv from image + command, $(VAR) expansion, mount paths."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client as k8s

from support.redirects import redirecting_server
from wingman.dev.node import (
    IMAGE_INIT,
    NodeHarness,
    PodRejected,
    _Rest,
    _Source,
    build_argv,
    expand,
    rewrite_path,
)
from wingman.errors import ClusterError, ConfigError
from wingman.operator import manifests


def test_image_prefix_replaces_the_entrypoint() -> None:
    prefix = [sys.executable, "-m", "wingman.cli"]
    assert build_argv(prefix, ["wingman", "gateway"], []) == [*prefix, "gateway"]
    assert build_argv(prefix, [], ["gateway", "--x"]) == [*prefix, "gateway", "--x"]
    assert build_argv(prefix, ["wingman"], ["a"]) == [*prefix, "a"]


def test_the_images_init_is_left_out_of_a_local_process() -> None:
    """The gateway and preview Jobs start ``wingman`` under tini, which only a container's PID 1
    needs: the local process is the command after it."""
    prefix = [sys.executable, "-m", "wingman.cli"]
    assert IMAGE_INIT == manifests.INIT
    for entry in ("gateway", "preview"):
        assert build_argv(prefix, [*manifests.INIT, "wingman", entry], []) == [*prefix, entry]
    # only the init's exact prefix is dropped
    assert build_argv(prefix, ["/usr/bin/tini", "wingman", "gateway"], []) == [
        *prefix, "wingman", "gateway"]
    assert build_argv(prefix, ["/usr/bin/tini", "--"], ["x"]) == [*prefix, "--", "x"]


def test_expansion_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"
    assert expand("cost $5 $(A", env) == "cost $5 $(A"


def test_mount_paths_rewrite_whole_components_longest_first(tmp_path: Path) -> None:
    mounts = [("/etc/wingman", tmp_path / "outer"), ("/etc/wingman/keys/", tmp_path / "keys"),
              ("/tmp", tmp_path / "tmp")]
    assert rewrite_path("/etc/wingman/keys/k1.pem", mounts) == f"{tmp_path}/keys/k1.pem"
    assert rewrite_path("/etc/wingman/policy.yaml", mounts) == f"{tmp_path}/outer/policy.yaml"
    assert rewrite_path("/tmp", mounts) == f"{tmp_path}/tmp"
    assert rewrite_path("/tmpfoo/x", mounts) == "/tmpfoo/x"
    assert rewrite_path("relative/tmp", mounts) == "relative/tmp"


@pytest.mark.parametrize("images", [{"img": []}, {"img": "python"}, {"img": [""]}])
def test_bad_image_mapping_is_refused(images: Any, tmp_path: Path) -> None:
    cluster: Any = SimpleNamespace(server="https://127.0.0.1:6443")
    with pytest.raises(ConfigError, match="images"):
        NodeHarness(cluster=cluster, namespaces=["ns"], workdir=tmp_path,
                    gateway_image="img", images=images)


def test_namespaces_are_required(tmp_path: Path) -> None:
    cluster: Any = SimpleNamespace(server="https://127.0.0.1:6443")
    with pytest.raises(ConfigError, match="namespaces"):
        NodeHarness(cluster=cluster, namespaces=[], workdir=tmp_path, gateway_image="img")


def test_the_dev_harness_finds_the_checkout_it_runs_from() -> None:
    from wingman.dev import run, tools

    assert (run.REPO / "crds").is_dir() and (run.REPO / "charts" / "wingman").is_dir()
    assert tools.PROVISION_SCRIPT.is_file()


def test_the_node_harness_calls_follow_no_redirect() -> None:
    """The harness's reads and writes (a pod, its status, a TokenRequest) are
    ``wingman.kube``'s request: a redirect, which an API server never sends, is no answer,
    not followed to wherever it points; a refusal is still the status and the server's
    message."""
    with redirecting_server({"kind": "Pod", "metadata": {"name": "p", "uid": "u"}}) as (
            url, followed):
        api = k8s.ApiClient(k8s.Configuration(host=url))
        try:
            rest = _Rest(api)
            with pytest.raises(ClusterError) as info:
                rest.get("/api/v1/namespaces/ns/pods/p")
            with pytest.raises(ClusterError):
                rest.call("PATCH", "/api/v1/namespaces/ns/pods/p/status", body={"status": {}},
                          content_type="application/strategic-merge-patch+json")
        finally:
            api.close()
    assert followed == [], "followed the redirect"
    assert info.value.reason == "UnusableAnswer" and "302" in info.value.message


@pytest.mark.parametrize(("path", "value"), [
    ("metadata.labels['app']", "web"),
    ("metadata.annotations['note']", "hi"),
    # '$' also matches before a final newline: such a path is no fieldRef the kubelet serves
    ("metadata.labels['app']\n", None),
    ("metadata.labels['app']\r\n", None),
    ("metadata.annotations['note']\n", None),
])
def test_a_label_or_annotation_fieldref_is_the_whole_path(path: str, value: str | None) -> None:
    api = k8s.ApiClient(k8s.Configuration(host="https://127.0.0.1:1"))
    try:
        harness: Any = SimpleNamespace(_rest=_Rest(api))
        source = _Source(harness, {"metadata": {
            "name": "p", "namespace": "ns", "labels": {"app": "web"},
            "annotations": {"note": "hi"}}, "spec": {}})
        if value is not None:
            assert source.field(path) == value
        else:
            with pytest.raises(PodRejected, match="is not supported by the wingman dev node"):
                source.field(path)
    finally:
        api.close()
