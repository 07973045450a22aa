"""The chat's reads of its state ConfigMap over a server at the API server's address that
answers it in a shape no API server gives: no answer it can use (``UnusableAnswer``, naming
the field, tried again as the API server being unreachable is), never a TypeError."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from support.oddapi import odd_api
from wingman.chat.cluster import ChatCluster
from wingman.kube import Kube, UnusableAnswer

PATH = "/api/v1/namespaces/wm/configmaps/wingman-chat-state"
META = {"name": "wingman-chat-state", "namespace": "wm", "resourceVersion": "7"}


@pytest.mark.parametrize(("answer", "says"), [
    ({"metadata": ["wingman-chat-state"], "data": {}}, "metadata is not an object"),
    ({"metadata": META, "data": ["state.json"]}, "data is not an object"),
    ({"metadata": META, "data": {"state.json": {"horizon": "x"}}},
     "data.state.json is not text"),
    ({"metadata": {**META, "resourceVersion": 7}, "data": {}},
     "metadata.resourceVersion is not text"),
])
def test_a_state_configmap_of_a_shape_no_api_server_gives_is_no_usable_answer(
        answer: dict[str, Any], says: str) -> None:
    with odd_api({PATH: {"apiVersion": "v1", "kind": "ConfigMap", **answer}}) as url:
        cluster = ChatCluster(Kube(k8s.ApiClient(k8s.Configuration(host=url))), "wm",
                              "wingman-chat-state")
        with pytest.raises(UnusableAnswer) as raised:
            cluster.load_state(once=5)
    assert says in raised.value.message and "wm/wingman-chat-state" in raised.value.message


def test_a_state_configmap_as_the_api_server_answers_it_is_read() -> None:
    answer = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": META,
              "data": {"state.json": '{"horizon": "2026-01-01T00:00:00Z"}'}}
    with odd_api({PATH: answer}) as url:
        cluster = ChatCluster(Kube(k8s.ApiClient(k8s.Configuration(host=url))), "wm",
                              "wingman-chat-state")
        assert cluster.load_state(once=5) == {"horizon": "2026-01-01T00:00:00Z"}
    assert cluster._version == "7"
