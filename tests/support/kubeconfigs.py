"""Kubeconfig files that tell apart whose current context a client uses when ``KUBECONFIG``
names several: kubectl takes the first file that sets ``current-context``, the kubernetes
library's merger the last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from wingman.dev.cluster import LocalCluster


def one_per_user(cluster: LocalCluster, directory: Path, *users: str) -> list[Path]:
    """A kubeconfig file for each of ``users`` on the one real API server, each with its own
    context (named after the user) as its current context."""
    paths = []
    for user in users:
        config = yaml.safe_load(cluster.kubeconfig_for(user).read_text())
        for context in config["contexts"]:
            context["name"] = user
        config["current-context"] = user
        path = directory / f"{user}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        paths.append(path)
    return paths


def whoami(api: Any) -> str:
    """The user the API server authenticated ``api`` (a kubernetes ApiClient) as."""
    from kubernetes import client

    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview(metadata=client.V1ObjectMeta()))
    status = review.status
    assert status is not None and status.user_info is not None, review
    return str(status.user_info.username)
