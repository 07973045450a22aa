"""The bounded, redacted diff: only what can be shown is redacted, as the whole would be."""

from __future__ import annotations

import time
from typing import Any

import pytest

from wingman.gateway.redaction import redact
from wingman.preview.diff import CUT, bounded, object_diff

LIMIT = 4096
TOKEN = "k8sPreviewToken-0123456789abcdefXYZ"  # a known secret: the preview's own token
FILLER = "".join(f"+  label-{i}: value {i}\n" for i in range(400))


def _whole(text: str, secrets: tuple[str, ...] = ()) -> tuple[str, bool]:
    out = redact(text, secrets).encode("utf-8")
    return out[:LIMIT].decode("utf-8", errors="ignore"), len(out) > LIMIT


def _around_the_cut() -> dict[str, str]:
    cases = {}
    for shift in (-40, -8, 0, 8, 40):
        at = LIMIT + shift  # a secret straddling where the shown text ends
        cases[f"token-at-{shift}"] = FILLER[:at] + TOKEN + "\n" + FILLER * 24
        cases[f"spread-token-at-{shift}"] = (FILLER[:at] + " ".join(TOKEN) + "\n" + FILLER * 24)
        cases[f"password-at-{shift}"] = FILLER[:at] + "password: s3cr3t-s3cr3t\n" + FILLER * 24
    # a value redacted whole shrinks the text: what is shown then comes from further down
    cases["shrunk"] = ("password: " + "x" * 200_000 + "\n" + FILLER[:LIMIT] + TOKEN + "\n"
                       + FILLER * 24)
    # a known secret spread over whitespace, from where the shown text ends
    cases["token-spread-wide"] = (FILLER[:LIMIT - 20] + ("\n" + " " * 1500).join(TOKEN) + "\n"
                                  + FILLER * 24)
    # where the first head read ends (twice the limit and ten margins of 4 KiB) falls right
    # after what is shown when a value redacted whole shrinks the text before it: a secret
    # there, or a name below a value, is read whole all the same
    head = 2 * (LIMIT + 10 * 4096)
    shrink = "password: " + "x" * (head - LIMIT) + "\n"  # then "password: [REDACTED]\n"
    cases["token-at-the-head's-end"] = shrink + FILLER[:LIMIT - 31] + TOKEN + "\n" + FILLER * 24
    cases["name-past-a-long-line"] = (FILLER[:LIMIT - 40] + "- value: s3cr3t-s3cr3t\n  "
                                      + "y" * head + "\n  name: DB_PASSWORD\n" + FILLER * 24)
    # an environment entry's value above its name, where the shown text ends
    cases["value-then-name"] = (FILLER[:LIMIT - 20] + "- value: s3cr3t-s3cr3t\n"
                                "  name: DB_PASSWORD\n" + FILLER * 24)
    # the kind far below: a Secret's data is redacted whatever its values look like
    cases["kind-below"] = ("data:\n  username: plainly-kept-if-no-secret\n" + FILLER * 24
                           + "kind: Secret\n")
    return cases


AROUND_THE_CUT = _around_the_cut()


@pytest.mark.parametrize("name", list(AROUND_THE_CUT))
def test_what_is_shown_is_redacted_as_the_whole_text_would_be(name: str) -> None:
    text = AROUND_THE_CUT[name]
    assert bounded(text, LIMIT, (TOKEN,)) == _whole(text, (TOKEN,))


def test_a_diff_of_megabytes_costs_what_its_head_does() -> None:
    text = FILLER * 2000 + "password: s3cr3t\n"  # 16 MB
    started = time.process_time()
    shown, cut = bounded(text, LIMIT, (TOKEN,))
    assert time.process_time() - started < 8
    assert cut and shown == _whole(text[:200_000], (TOKEN,))[0]


def test_a_large_secrets_diff_is_cut_and_says_so() -> None:
    data = {f"k{i}": f"v{i}" for i in range(4_000)}
    before = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
              "data": {"a": "c2VjcmV0"}, "immutable": False,
              "metadata_copy": {f"note{i}": "c2VjcmV0" for i in range(4_000)}}
    after = dict(before, immutable=True, stringData=data)
    diff = object_diff(before, after, label="secrets/db", limit=LIMIT)
    assert diff.endswith(f"\n{CUT}\n") and len(diff.encode("utf-8")) <= LIMIT + len(CUT) + 2
    assert "c2VjcmV0" not in diff and ": secret\n" not in diff


def _deployment(image: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "12"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": image,
                                                           "ports": [{"containerPort": 80}]}]}}}}


def test_an_image_change_is_a_two_line_context_diff() -> None:
    diff = object_diff(_deployment("nginx:1.25"), _deployment("nginx:1.27"),
                       label="deployments.apps/shop/web")
    assert diff == ("--- deployments.apps/shop/web (live)\n"
                    "+++ deployments.apps/shop/web (after)\n"
                    "@@ -15,5 +15,5 @@\n"
                    "     spec:\n"
                    "       containers:\n"
                    "-      - image: nginx:1.25\n"
                    "+      - image: nginx:1.27\n"
                    "         name: web\n"
                    "         ports:\n")


def _configmap(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": data}


def test_a_large_object_with_one_key_changed_costs_what_the_change_does() -> None:
    data = {f"key-{i:06d}": "v" * 100 for i in range(300_000)}  # 32 MB
    before = _configmap(data)
    after = _configmap(dict(data, **{"key-123456": "changed"}))
    started = time.process_time()
    diff = object_diff(before, after, label="configmaps/big")
    assert time.process_time() - started < 20  # about 50 s when both were written out whole
    assert diff.splitlines()[2:] == [
        "@@ -2,5 +2,5 @@", " data:", "   # ... 123456 unchanged keys (about 13744 KiB)",
        f"-  key-123456: {'v' * 100}", "+  key-123456: changed",
        "   # ... 176543 unchanged keys (about 19654 KiB)", " kind: ConfigMap"]


def test_a_large_object_with_many_changes_is_diffed_in_bounded_time() -> None:
    data = {f"key-{i:06d}": "v" * 100 for i in range(300_000)}
    started = time.process_time()
    diff = object_diff(_configmap(data), _configmap({k: "w" * 100 for k in data}),
                       label="configmaps/big")
    middle = object_diff(_configmap(dict(list(data.items())[:9_000])),
                         _configmap({k: ("w" * 100 if i % 2 else "v" * 100)
                                     for i, k in enumerate(list(data)[:9_000])}),
                         label="configmaps/big")
    created = object_diff(None, _configmap(data), label="configmaps/big")
    assert time.process_time() - started < 20
    assert created.splitlines()[1:] == [
        "+++ configmaps/big (after)", "! too large to diff line by line (about 33 MiB): created"]
    assert diff.splitlines()[2].startswith(
        "! too large to diff line by line (about 33 MiB): 300000 changed at "
        "/data/key-000000, /data/key-000001, ")
    assert middle.splitlines()[2] == ("! too many changes to line up: past line 2504, 6499 "
                                      "lines are shown as removed, then 6499 added")
    assert middle.splitlines()[3:8] == ["@@ -2,9003 +2,9003 @@", " data:",
                                        f"   key-000000: {'v' * 100}",
                                        f"-  key-000001: {'v' * 100}",
                                        f"+  key-000001: {'w' * 100}"]


def test_an_unchanged_part_naming_a_secret_is_written_out() -> None:
    # the redaction reads the whole diff for a Secret's kind: what names one stays in it
    for word, collapsed in (("kind: Secret", False), ("kind: Service", True)):
        value = f"{word}\n" + "x" * 20_000
        diff = object_diff(_configmap({"a": value, "b": "1"}), _configmap({"a": value, "b": "2"}),
                           label="configmaps/big")
        assert ("# ... 1 unchanged key (about 19 KiB)" in diff) is collapsed


def test_the_kind_is_written_out_whatever_is_collapsed_around_it() -> None:
    # a ConfigMap's kind tells the redaction its data is plain configuration
    meta = {"name": "big", "annotations": {f"note-{i}": "n" * 100 for i in range(400)}}
    before = dict(_configmap({"a": "1"}), metadata=meta)
    diff = object_diff(before, dict(before, data={"a": "2"}), label="configmaps/big")
    assert diff.splitlines()[2:] == ["@@ -1,5 +1,5 @@", " apiVersion: v1", " data:", "-  a: '1'",
                                     "+  a: '2'", " kind: ConfigMap",
                                     " # ... 1 unchanged key (about 45 KiB)"]
