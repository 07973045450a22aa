"""Outside checkers over what Wingman ships: kubeconform with strict schemas, and the upstream
Pod Security Standards evaluator. Both run offline.

**kubeconform** validates manifests against JSON schemas. The schemas are made here, not
downloaded: from the OpenAPI (v2) document of the pinned Kubernetes module (provisioning copies
``api/openapi-spec/swagger.json`` to the cache) and from the CRDs in ``crds/``. They are strict
the way kubeconform's own ``-strict`` schemas are: every object schema that lists its
properties refuses any other (``additionalProperties: false``), so a misspelt or misplaced
field fails instead of being dropped silently by the API server. Int-or-string and quantity
fields accept both forms, as the API server does. The schemas are written once per input (keyed
by their hash) under ``$WINGMAN_CACHE/kubeconform-schemas/``.

**podsecurity** (``.ci/tools/podsecurity``) runs ``k8s.io/pod-security-admission/policy`` — the
code behind the API server's PodSecurity admission — over every pod-bearing object.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.chart import CRDS_DIR
from wingman.dev import tools as devtools

Object = dict[str, Any]
INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}
_SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": INT_OR_STRING,
    "io.k8s.apimachinery.pkg.api.resource.Quantity": QUANTITY,
    # A CRD's schema (JSONSchemaProps) has properties literally named "$ref" and "$schema",
    # which JSON Schema validators take for keywords: it is checked as an object here, and in
    # full by the real API server, which the integration tier applies every CRD to.
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps":
        {"type": "object"},
}


def _tool(name: str) -> Path:
    path = devtools.find_tool(name)
    if path is None:
        pytest.skip(f"{name} is not provisioned; run `bash .ci/provision-tools.sh`")
    return path


# --------------------------------------------------------------------------- schemas


def _strict(node: Any) -> Any:
    """A copy of a JSON schema where objects with listed properties allow no others."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.get("format") == "int-or-string" or out.get("x-kubernetes-int-or-string"):
        rest = {k: v for k, v in out.items() if k not in ("type", "format")}
        return {**rest, **INT_OR_STRING}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            yield ref[len("#/definitions/"):]
        for v in node.values():
            yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _file_name(kind: str, group: str, version: str) -> str:
    """kubeconform's ``{{ .ResourceKind }}{{ .KindSuffix }}.json``: kind, the group's first
    label (none for the core group), the version; lowercase."""
    first = group.split(".")[0]
    return (f"{kind}-{first}-{version}" if group else f"{kind}-{version}").lower() + ".json"


def _closure(definitions: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``name`` and every definition it refers to, transitively, made strict."""
    needed, todo = {name}, [name]
    while todo:
        for ref in _refs(definitions[todo.pop()]):
            if ref not in needed:
                needed.add(ref)
                todo.append(ref)
    return {n: _SPECIAL.get(n) or _strict(definitions[n]) for n in sorted(needed)}


def _openapi_schemas(definitions: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind") or []:
            closure = _closure(definitions, name)
            schema = {"$schema": "http://json-schema.org/draft-04/schema#",
                      **copy.deepcopy(closure[name]), "definitions": closure}
            out[_file_name(gvk["kind"], gvk["group"], gvk["version"])] = schema
    return out


OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _crd_schemas(crds: Sequence[Mapping[str, Any]], definitions: Mapping[str, Any]
                 ) -> dict[str, Any]:
    """Each served version's openAPIV3Schema, strict, with what the API server adds to every
    custom resource: apiVersion, kind and the standard ObjectMeta."""
    meta = _closure(definitions, OBJECT_META)
    out: dict[str, Any] = {}
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema["properties"] = {"apiVersion": {"type": "string"},
                                    "kind": {"type": "string"},
                                    **schema.get("properties", {}),
                                    "metadata": {"$ref": f"#/definitions/{OBJECT_META}"}}
            schema["additionalProperties"] = False
            schema["definitions"] = meta
            out[_file_name(spec["names"]["kind"], spec["group"], version["name"])] = schema
    return out


def schema_dir(extra_crds: Sequence[Mapping[str, Any]] = ()) -> Path:
    """The directory of strict schemas for the pinned Kubernetes and Wingman's CRDs."""
    openapi = devtools.kubernetes_openapi()
    if openapi is None:
        pytest.skip("the Kubernetes OpenAPI document is not provisioned; run "
                    "`bash .ci/provision-tools.sh`")
    crd_texts = sorted(p.read_text() for p in CRDS_DIR.glob("*.yaml"))
    crds = [yaml.safe_load(t) for t in crd_texts] + list(extra_crds)
    key = hashlib.sha256(openapi.read_bytes() + json.dumps(
        [crd_texts, list(extra_crds)], sort_keys=True).encode() + Path(__file__).read_bytes()
    ).hexdigest()[:16]
    out = devtools.cache_dir() / "kubeconform-schemas" / key
    if not (out / ".complete").is_file():
        tmp = out.with_name(f"{key}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        definitions = json.loads(openapi.read_text())["definitions"]
        schemas = {**_openapi_schemas(definitions), **_crd_schemas(crds, definitions)}
        for name, schema in schemas.items():
            (tmp / name).write_text(json.dumps(schema))
        (tmp / ".complete").touch()
        try:
            tmp.rename(out)
        except OSError:  # another process (a test worker) finished first: its copy is used
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- kubeconform


@dataclass(frozen=True)
class Verdict:
    kind: str
    name: str
    status: str  # statusValid, statusInvalid, statusError, statusSkipped
    message: str


def kubeconform(objects: Sequence[Object], *, skip_kinds: Sequence[str] = ()
                ) -> list[Verdict]:
    """kubeconform -strict over ``objects``, against the schemas of :func:`schema_dir`; a
    kind without a schema is an error (nothing is skipped unless ``skip_kinds`` says so)."""
    schemas = schema_dir()
    args = [str(_tool("kubeconform")), "-strict", "-summary=false", "-output", "json",
            "-verbose", "-schema-location", f"{schemas}/{{{{ .ResourceKind }}}}"
            "{{ .KindSuffix }}.json"]
    if skip_kinds:
        args += ["-skip", ",".join(skip_kinds)]
    stream = "".join(f"---\n{yaml.safe_dump(o)}" for o in objects)
    result = subprocess.run([*args, "-"], input=stream, capture_output=True, text=True,
                            timeout=300, check=False)
    if result.returncode not in (0, 1):
        raise AssertionError(f"kubeconform failed to run: {result.stderr}")
    report = json.loads(result.stdout)
    return [Verdict(r.get("kind", ""), r.get("name", ""), r["status"], r.get("msg", ""))
            for r in report["resources"]]


def assert_conforms(objects: Sequence[Object], *, skip_kinds: Sequence[str] = ()) -> None:
    verdicts = kubeconform(objects, skip_kinds=skip_kinds)
    checked = [v for v in verdicts if v.status != "statusSkipped"]
    wanted = [o for o in objects if o["kind"] not in skip_kinds]
    assert len(checked) == len(wanted), (len(checked), len(wanted), verdicts)
    bad = [f"{v.kind}/{v.name}: {v.status}: {v.message}" for v in checked
           if v.status != "statusValid"]
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------- Pod Security


@dataclass(frozen=True)
class PodSecurity:
    kind: str
    name: str
    allowed: bool
    forbidden: tuple[tuple[str, str], ...]  # (reason, detail)


def pod_security(objects: Sequence[Object], level: str = "restricted") -> list[PodSecurity]:
    """The upstream evaluator's verdict on every pod-bearing object at ``level`` (latest)."""
    stream = "".join(f"---\n{yaml.safe_dump(o)}" for o in objects)
    result = subprocess.run([str(_tool("podsecurity")), "-level", level], input=stream,
                            capture_output=True, text=True, timeout=120, check=False)
    if result.returncode not in (0, 1):
        raise AssertionError(f"podsecurity failed to run: {result.stderr}")
    out = []
    for line in result.stdout.splitlines():
        r = json.loads(line)
        out.append(PodSecurity(r["kind"], r["name"], r["allowed"],
                               tuple((f["reason"], f.get("detail", "")) for f in r["forbidden"])))
    return out


__all__ = ["PodSecurity", "Verdict", "assert_conforms", "kubeconform", "pod_security",
           "schema_dir"]
