"""URLs in messages: no userinfo, query or fragment, however the URL is spelt."""

from __future__ import annotations

import pytest

from wingman.errors import shown_url, without_userinfo

# (url, what the message may show, the secret parts it must not)
USERINFO = [
    ("https://alice:s3cr3t@w.example/c", "https://***@w.example/c", ["alice", "s3cr3t"]),
    # a password holding an unencoded '/', '?', '#' or '@': a URL parser ends the
    # authority there, so the rest of the password looked like the host, the query or the path
    ("postgresql://u:pa/ss@host/db", "postgresql://***@host/db", ["pa", "ss@"]),
    ("postgresql://u:pa?ss@host/db", "postgresql://***@host/db", ["pa", "ss@"]),
    ("postgresql://u:pa#ss@host/db", "postgresql://***@host/db", ["pa", "ss@"]),
    ("https://u:p?w#d@witness:8443/x", "https://***@witness:8443/x", ["p?w", "#d"]),
    ("https://u:p@ss@w@host/c", "https://***@host/c", ["p@", "ss@", "w@"]),
    ("https://u:a/b?c#d@e@host:1/x", "https://***@host:1/x", ["a/b", "c#d", "e@"]),
    # percent-encoded, IPv6, user only, empty password, empty userinfo
    ("https://u%40x:p%2Fw@host/c", "https://***@host/c", ["u%40x", "p%2Fw"]),
    ("https://u:pw@[::1]:8443/c", "https://***@[::1]:8443/c", ["pw"]),
    ("https://u:p/w@[fe80::1%25eth0]/c", "https://***@[fe80::1%25eth0]/c", ["p/w"]),
    ("https://alice@host/c", "https://***@host/c", ["alice"]),
    ("https://alice:@host/c", "https://***@host/c", ["alice"]),
    ("https://@host/c", "https://***@host/c", []),
    # no scheme, or a mistyped one: nothing before the last '@' is kept
    ("u:s3cr3t@host/db", "***@host/db", ["s3cr3t", "u:"]),
    ("alice:pa/ss@host", "***@host", ["alice", "pa/ss"]),
    ("https:/alice:s3cr3t@w/c", "https:/***@w/c", ["alice", "s3cr3t"]),
    ("https:alice:s3cr3t@w/c", "***@w/c", ["alice", "s3cr3t"]),
    # whitespace and control characters in the password
    ("https://u:p w\td\n@host/c", "https://***@host/c", ["p w", "d\n"]),
    ("  https://u:pw@host/c", "  https://***@host/c", ["pw"]),
    # the full-width '@' that Unicode normalisation turns into one
    ("https://u:s3cr3t\uff20host/c", "https://***\uff20host/c", ["s3cr3t"]),
    # no userinfo at all: unchanged
    ("https://host:8443/c?x=1", "https://host:8443/c?x=1", []),
    ("https://[::1]/c", "https://[::1]/c", []),
    ("", "", []),
]


@pytest.mark.parametrize(("url", "shown", "hidden"), USERINFO)
def test_without_userinfo_hides_everything_before_the_last_at(
        url: str, shown: str, hidden: list[str]) -> None:
    assert without_userinfo(url) == shown
    for part in hidden:
        assert part not in without_userinfo(url)


def test_an_at_in_the_path_or_query_hides_more_never_less() -> None:
    # which '@' ends a userinfo cannot be known: the last one is taken, a detail is lost
    assert without_userinfo("https://u:pw@host/a@b?c=d@e") == "https://***@e"


def test_a_very_long_url_is_scrubbed_in_linear_time() -> None:
    url = "https://u:" + "p/@?#" * 200_000 + "@host/c"
    assert without_userinfo(url) == "https://***@host/c"
    assert without_userinfo("https://" + "a" * 1_000_000) == "https://" + "a" * 1_000_000


@pytest.mark.parametrize(("url", "shown"), [
    ("https://w.example/c?token=s3cr3t", "https://w.example/c?…"),
    ("https://w.example/c#s3cr3t", "https://w.example/c#…"),
    ("https://u:pw@w.example:8443/c?token=s3cr3t#f", "https://***@w.example:8443/c?…"),
    ("https://u:p?w#d@witness:8443/x?token=s3cr3t", "https://***@witness:8443/x?…"),
    ("https://w.example/c", "https://w.example/c"),
    ("https://w.example/c\uff1ftoken=s3cr3t", "https://w.example/c\uff1f…"),
])
def test_shown_url_has_no_userinfo_query_or_fragment(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert "s3cr3t" not in shown_url(url)


def test_shown_url_is_bounded() -> None:
    shown = shown_url("https://w.example/" + "a" * 5000)
    assert len(shown) == 201 and shown.endswith("…")
