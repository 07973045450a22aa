"""Redaction of command output: every kind of credential an outside review found leaking, each
in the shapes real tools print it, and hostile output that must not stall the gateway.

A secret counts as leaked when it appears in the output whole, with whitespace removed (a
token wrapped across lines), or by any 16-character piece of it.
"""

from __future__ import annotations

import base64
import json
import textwrap
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wingman.gateway.redaction import REDACTED, clean, credential_name, redact

JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6IkNsaWVudEtleSJ9."
       "eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50Iiwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50In0."
       "c2lnbmF0dXJlLWJ5dGVzLXRoYXQtbG9vay1saWtlLWEtcmVhbC1zaWduYXR1cmUtdmFsdWU")
PASSWORD = "Tr0ub4dor&3-horse"
SPACED = "correct horse battery staple"
PEM_KEY = textwrap.dedent("""\
    -----BEGIN RSA PRIVATE KEY-----
    MIIEowIBAAKCAQEA2a2rwplBQLzHPZe5TNJNBnKFuoVk2z8TPm1zF7nQ0Q3vD6dF
    q8y3o1pY0p6s7Hk2h0lT0x1n9Jj2f0m4Q4t0bXzqgk2w3b8m9Yq1q4r7p2sE1xYt
    -----END RSA PRIVATE KEY-----
    """)
KEY_BODY = "MIIEowIBAAKCAQEA2a2rwplBQLzHPZe5TNJNBnKFuoVk2z8TPm1zF7nQ0Q3vD6dF"


def leaks(out: str, secret: str) -> bool:
    compact = "".join(out.split())
    if secret in out or "".join(secret.split()) in compact:
        return True
    if len(secret) >= 24:
        return any(secret[i:i + 16] in compact for i in range(len(secret) - 15))
    return False


# --------------------------------------------------------------------------- what leaked


CASES = {
    # environment entries, in YAML, pretty JSON and flow style
    "env-yaml": (f"    env:\n    - name: DB_PASSWORD\n      value: {PASSWORD}\n"
                 "    - name: LOG_LEVEL\n      value: debug\n", PASSWORD),
    "env-yaml-quoted": (f'    - name: API_TOKEN\n      value: "{SPACED}"\n', SPACED),
    "env-json": ('        "env": [\n            {\n                "name": "DB_PASSWORD",\n'
                 f'                "value": "{PASSWORD}"\n            }}\n        ],\n',
                 PASSWORD),
    "env-flow": (f"env: [{{name: STRIPE_SECRET_KEY, value: {PASSWORD}}}]\n", PASSWORD),
    "env-compact-json": (f'{{"name":"AWS_SECRET_ACCESS_KEY","value":"{PASSWORD}"}}', PASSWORD),
    "dotenv": (f"export DB_PASSWORD={PASSWORD}\n", PASSWORD),
    # authorization headers
    "basic": ("> GET / HTTP/1.1\n> Authorization: Basic "
              f"{base64.b64encode(f'admin:{PASSWORD}'.encode()).decode()}\n",
              base64.b64encode(f"admin:{PASSWORD}".encode()).decode()),
    "basic-lower": ("authorization: basic "
                    f"{base64.b64encode(f'u:{PASSWORD}'.encode()).decode()}",
                    base64.b64encode(f"u:{PASSWORD}".encode()).decode()),
    "auth-scheme": (f"Authorization: AWS4-HMAC-SHA256 Credential={PASSWORD}/x", PASSWORD),
    "bearer": (f"curl -H 'Authorization: Bearer {PASSWORD}'", PASSWORD),
    # connection URLs
    "postgres-url": (f"connecting to postgresql://app:{PASSWORD}@db.internal:5432/app",
                     PASSWORD),
    "redis-url": (f"REDIS_URL=redis://:{PASSWORD}@cache:6379/0", PASSWORD),
    "https-url": (f"remote: https://deploy:{PASSWORD}@git.example.com/x.git", PASSWORD),
    "url-in-json": (f'{{"dsn": "mysql://root:{PASSWORD}@10.0.0.5/db"}}', PASSWORD),
    # key names
    "pwd": (f"Server=db;Database=app;Uid=sa;Pwd={PASSWORD};", PASSWORD),
    "pwd-colon": (f"PWD: {PASSWORD}", PASSWORD),
    "passphrase": (f"ssh_passphrase = {PASSWORD}", PASSWORD),
    "apikey-camel": (f'"apiKey": "{PASSWORD}"', PASSWORD),
    "client-secret": (f"client_secret={PASSWORD}&grant_type=client_credentials", PASSWORD),
    "quoted-spaces": (f'password: "{SPACED}"', SPACED),
    "single-quoted-spaces": (f"secret = '{SPACED}'", SPACED),
    # command lines
    "dash-p": (f"mysql -u root -p {PASSWORD} -h db", PASSWORD),
    "dash-p-equals": (f"tool -p={PASSWORD}", PASSWORD),
    "long-flag": (f"docker login --password {PASSWORD} registry", PASSWORD),
    "long-flag-equals": (f"app --api-key={PASSWORD} --verbose", PASSWORD),
    # private keys
    "pem-rsa": (f"key:\n{PEM_KEY}done\n", KEY_BODY),
    "pem-openssh": ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + KEY_BODY + "\n"
                    "-----END OPENSSH PRIVATE KEY-----\n", KEY_BODY),
    "pem-cut-short": ("-----BEGIN PRIVATE KEY-----\n" + KEY_BODY + "\n" + KEY_BODY[::-1],
                      KEY_BODY),
    "pem-encrypted": ("-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + KEY_BODY +
                      "\n-----END ENCRYPTED PRIVATE KEY-----", KEY_BODY),
    # hidden from the rules by escapes and invisible characters
    "ansi-value": (f"password: \x1b[31m{PASSWORD}\x1b[0m", PASSWORD),
    "ansi-key": (f"\x1b[1mpassword\x1b[0m=\x1b[32m{PASSWORD}\x1b[0m", PASSWORD),
    "zero-width-value": (f"password=\u200b{PASSWORD}", PASSWORD),
    "zero-width-key": (f"pass\u200bword: {PASSWORD}", PASSWORD),
    "bidi": (f"token: \u202e{PASSWORD}\u202c", PASSWORD),
    "osc": (f"\x1b]8;;https://x\x07password\x1b]8;;\x07={PASSWORD}", PASSWORD),
    # tokens, whole, wrapped, interleaved, encoded
    "jwt": (f"token is {JWT} here", JWT),
    "jwt-wrapped-64": ("\n".join(textwrap.wrap(JWT, 64)), JWT),
    "jwt-wrapped-indented": ("    " + "\n    ".join(textwrap.wrap(JWT, 40)), JWT),
    "jwt-ansi-interleaved": ("\x1b[0m".join(JWT[i:i + 7] for i in range(0, len(JWT), 7)),
                             JWT),
    "jwt-base64": (f"data: {base64.b64encode(JWT.encode()).decode()}",
                   base64.b64encode(JWT.encode()).decode()),
    "jwt-base64-unaligned": (
        f"blob {base64.b64encode(b'xy' + JWT.encode()).decode()}",
        base64.b64encode(b"xy" + JWT.encode()).decode()[4:]),
    "jwt-base64url": (base64.urlsafe_b64encode(b"t=" + JWT.encode()).decode(),
                      base64.urlsafe_b64encode(b"t=" + JWT.encode()).decode()[4:]),
    "jwt-hex": (f"hex {JWT.encode().hex()}", JWT.encode().hex()),
    "jwt-percent": (f"url=https://x/cb?id_token={urllib.parse.quote(JWT, safe='')}", JWT),
    "jwt-percent-dots": ("q=" + JWT.replace(".", "%2E"), JWT.replace(".", "%2E")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_kind_of_credential_is_redacted(name: str) -> None:
    text, secret = CASES[name]
    out = redact(text)
    assert not leaks(out, secret), out
    assert REDACTED in out


# --------------------------------------------------------------------------- structure

SECRET_YAML = textwrap.dedent(f"""\
    apiVersion: v1
    data:
      .dockerconfigjson: {base64.b64encode(b'{"auths":{}}').decode()}
      ca.crt: {base64.b64encode(b"cert").decode()}
      username: {base64.b64encode(b"admin").decode()}
      x: {base64.b64encode(PASSWORD.encode()).decode()}
    kind: Secret
    metadata:
      annotations:
        kubectl.kubernetes.io/last-applied-configuration: |
          {{"apiVersion":"v1","data":{{"x":"{base64.b64encode(PASSWORD.encode()).decode()}"}},"kind":"Secret","metadata":{{"name":"db"}},"stringData":{{"plain":"{SPACED}"}}}}
      name: db
      namespace: apps
    stringData:
      anything: {SPACED}
    type: Opaque
    """)


def test_a_secrets_data_is_redacted_under_any_key_in_yaml() -> None:
    out = redact(SECRET_YAML)
    for leaked in (base64.b64encode(PASSWORD.encode()).decode(), SPACED,
                   base64.b64encode(b"admin").decode(), base64.b64encode(b"cert").decode()):
        assert not leaks(out, leaked), out
    # the shape stays readable: every key, no value
    for kept in ("apiVersion: v1", "  username: [REDACTED]", "  x: [REDACTED]",
                 "kind: Secret", "  name: db", "type: Opaque", "  anything: [REDACTED]"):
        assert kept in out, out


def test_a_secret_list_in_pretty_json_is_redacted() -> None:
    items = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s{i}"},
              "data": {f"key-{i}": base64.b64encode(f"{PASSWORD}-{i}".encode()).decode(),
                       "nested": base64.b64encode(b"value-" * 3).decode()},
              "type": "Opaque"} for i in range(3)]
    text = json.dumps({"apiVersion": "v1", "items": items, "kind": "List"}, indent=4)
    out = redact(text)
    for i in range(3):
        assert not leaks(out, base64.b64encode(f"{PASSWORD}-{i}".encode()).decode()), out
        assert f'"key-{i}": "[REDACTED]"' in out
    json.loads(out)  # still JSON


def test_a_secret_cut_off_by_the_output_bound_is_still_redacted() -> None:
    # `kubectl get secret -o yaml` puts data before kind: a cut output never says Secret
    text = SECRET_YAML.split("kind: Secret")[0]
    text = text[: text.index("x: ") + 10]
    out = redact(text)
    assert not leaks(out, base64.b64encode(b"admin").decode())
    assert base64.b64encode(PASSWORD.encode()).decode()[:7] not in out


def test_a_kubeconfig_keeps_its_shape_and_loses_its_credentials() -> None:
    client_key = base64.b64encode(PEM_KEY.encode()).decode()
    text = textwrap.dedent(f"""\
        apiVersion: v1
        clusters:
        - cluster:
            certificate-authority-data: {base64.b64encode(b"public ca").decode()}
            server: https://10.0.0.1:6443
          name: prod
        users:
        - name: admin
          user:
            client-certificate-data: {base64.b64encode(b"public cert").decode()}
            client-key-data: {client_key}
        - name: robot
          user:
            token: {JWT}
        - name: basic
          user:
            password: "{SPACED}"
            username: admin
        - name: oidc
          user:
            auth-provider:
              config:
                id-token: {JWT}
                refresh-token: {PASSWORD}
        """)
    out = redact(text)
    for secret in (client_key, JWT, SPACED, PASSWORD):
        assert not leaks(out, secret), out
    assert "server: https://10.0.0.1:6443" in out and "username: admin" in out


def test_a_pod_spec_keeps_everything_but_credential_values() -> None:
    text = textwrap.dedent(f"""\
        spec:
          automountServiceAccountToken: true
          containers:
          - env:
            - name: DATABASE_URL
              value: postgresql://app:{PASSWORD}@db:5432/app
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef:
                  key: password
                  name: db
            - name: JWT_SIGNING_KEY
              value: >-
                {PASSWORD}
            - name: REPLICAS
              value: "3"
            image: registry.example.com/web:1.2.3
            name: web
          serviceAccountName: web
          sessionAffinity: None
        """)
    out = redact(text)
    assert not leaks(out, PASSWORD), out
    for kept in ("automountServiceAccountToken: true", 'value: "3"', "key: password",
                 "image: registry.example.com/web:1.2.3", "sessionAffinity: None",
                 "- name: DB_PASSWORD"):
        assert kept in out, out


def test_a_configmap_keeps_plain_values_and_loses_credential_ones() -> None:
    text = textwrap.dedent(f"""\
        apiVersion: v1
        data:
          app.properties: |
            db.url=jdbc:postgresql://db/app
            db.password={PASSWORD}
          log.level: info
          SMTP_PASSWORD: "{SPACED}"
        kind: ConfigMap
        """)
    out = redact(text)
    assert not leaks(out, PASSWORD) and not leaks(out, SPACED), out
    assert "log.level: info" in out and "db.url=jdbc:postgresql://db/app" in out


# --------------------------------------------------------------------------- known secrets


@pytest.mark.parametrize("shape", ["plain", "wrapped", "base64", "base64-offset", "hex",
                                   "percent", "json-escaped", "ansi"])
def test_the_callers_secrets_are_redacted_in_every_shape(shape: str) -> None:
    secret = "sa-token-" + "0123456789abcdef" * 4 + "/+=\"x"
    data = secret.encode()
    text = {
        "plain": secret,
        "wrapped": "\n".join(textwrap.wrap(secret, 20)),
        "base64": base64.b64encode(data).decode(),
        "base64-offset": base64.b64encode(b"pre:" + data).decode(),
        "hex": data.hex(),
        "percent": urllib.parse.quote(secret, safe=""),
        "json-escaped": json.dumps({"t": secret}),
        "ansi": "\x1b[2m".join(secret),
    }[shape]
    out = redact(f"before {text} after", [secret])
    assert "before" in out and "after" in out
    for piece in (secret, data.hex(), base64.b64encode(data).decode()[4:-4]):
        assert not leaks(out, piece), out


# --------------------------------------------------------------------------- ordinary output

ORDINARY = [
    "deployment.apps/web restarted\n",
    "deployment.apps/web scaled\n",
    'Waiting for deployment "web" rollout to finish: 1 of 3 updated replicas are available...\n',
    "NAME                   READY   STATUS    RESTARTS   AGE\nweb-7d9c6b5d4f-x2x9k   1/1     "
    "Running   0          5m\n",
    "Name:         db\nNamespace:    apps\nType:  Opaque\n\nData\n====\npassword:  16 bytes\n",
    "apiVersion: v1\nkind: Service\nspec:\n  sessionAffinity: None\n  type: ClusterIP\n",
    "tokenization done; nothing to see\n",
    "Events:\n  Normal  Pulled  5m  kubelet  Container image \"nginx:1.27\" already present\n",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_output_is_kept_as_it_is(text: str) -> None:
    assert redact(text) == text


def test_cleaning_keeps_text_and_drops_what_a_terminal_would_interpret() -> None:
    assert clean("\x1b[1;31mred\x1b[0m\tok\r\n\x07") == "red\tok\n"
    assert clean("a\u200bb\u202ec\ufeffd é ü 漢字") == "abcd é ü 漢字"


@pytest.mark.parametrize(("name", "credential"), [
    ("DB_PASSWORD", True), ("apiKey", True), ("client-key-data", True), ("pwd", True),
    ("x-auth-token", True), ("AWS_SECRET_ACCESS_KEY", True), ("passphrase", True),
    ("ssh_key", True), ("private_key_file", False), ("LOG_LEVEL", False), ("name", False),
    ("key", False), ("author", False), ("sessionAffinity", False), ("bypass", False),
])
def test_credential_names(name: str, credential: bool) -> None:
    assert credential_name(name) is credential


# --------------------------------------------------------------------------- hostile output

HOSTILE = {
    "data-lines": "data:\n" + "  k: v\n" * 2500,
    "deep-indent": "".join(" " * (i % 160) + "data:\n" for i in range(0, 190)),
    "secret-kind-long-line": '{"kind":"Secret",' + '"data":{' * 3000,
    "pem-without-end": "-----BEGIN PRIVATE KEY-----\n" + "A" * 16000,
    "pem-headers": "-----BEGIN " + "A " * 8000,
    "base64-run": "A" * 16384,
    "hex-run": "0" * 16384,
    "percent-run": "%41" * 5400,
    "nested-pairs": "a=" * 8000,
    "key-pairs": "key=" * 4000,
    "env-names": "- name: DB_PASSWORD\n" * 800,
    "basic-run": "Basic " + "A" * 16000,
    "url-userinfo": "http://" + "a:" * 8000,
    "flags": "-p " * 5400,
    "quotes": 'password: "' + "\\" * 16000,
    "escapes": "\x1b[" + "1;" * 8000,
    "jwt-continuations": "eyJabcd\n" + "abcdefghij\n" * 1400,
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_output_finishes_and_still_redacts(name: str) -> None:
    out = redact(HOSTILE[name] + "\npassword=hunter2\n")
    assert "hunter2" not in out


PIECES = ["password", "pwd", "token", "secret", "key", "data:", "stringData:", "kind: Secret",
          '"kind":"Secret"', '"data":{', "- name: DB_TOKEN", "value:", ":", "=", " ", "\n",
          "  ", '"', "'", "{", "}", "[", "]", ",", "|", ">-", "-----BEGIN PRIVATE KEY-----",
          "-----END PRIVATE KEY-----", "eyJhbGciOi", ".", "%2E", "%", "Basic ", "Bearer ",
          "Authorization:", "://", "@", "-p ", "--password=", "\x1b[", "\x1b]", "\u200b",
          "\r", "\t", "QUJD", "0a1b", "\\"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=300))
def test_any_composition_of_hostile_pieces_is_redacted_without_error(pieces: list[str]) -> None:
    out = redact("".join(pieces) + "\npassword=hunter2\n")
    assert "hunter2" not in out
    assert "\x1b" not in out and "\u200b" not in out and "\r" not in out
