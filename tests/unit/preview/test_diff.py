"""The bounded, redacted diff: only what can be shown is redacted, as the whole would be."""

from __future__ import annotations

import time

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
