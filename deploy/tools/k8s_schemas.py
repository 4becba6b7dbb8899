"""Build the JSON schemas that kubeconform validates our Kubernetes manifests against, offline.

kubeconform normally downloads schemas from GitHub, which this project's machines cannot reach.
Instead this script assembles them from packages in registries we can reach:

- Built-in kinds (Deployment, Service, ...): the ``kubernetes-validate`` wheel on PyPI ships the
  Kubernetes OpenAPI schemas as JSON Schema files whose ``$ref``s point into one shared
  ``_definitions.json``. kubeconform wants one self-contained file per kind, so each kind's file
  is written with exactly the definitions it reaches copied into its ``$defs``.
- Custom resources (KEDA ScaledObject/TriggerAuthentication, Prometheus Operator
  ServiceMonitor/PrometheusRule): their CustomResourceDefinitions live in the projects' Go modules,
  fetched with ``go mod download``. Each served version's ``openAPIV3Schema`` becomes a strict JSON
  schema (unknown fields rejected, as the API server does for structural schemas).

Files are named like kubeconform's ``{{ .ResourceKind }}{{ .KindSuffix }}.json`` template, e.g.
``deployment-apps-v1.json``, ``service-v1.json``, ``scaledobject-keda-v1alpha1.json``.

Usage: python deploy/tools/k8s_schemas.py [--out .local/k8s-schemas] [--kubernetes-version 1.33.0]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

KUBERNETES_VERSION = "1.33.0"
DEFINITIONS_REF = "/api/_definitions.json#/$defs/"

# (Go module, version, CRD files inside the module).
CRD_SOURCES = [
    (
        "github.com/kedacore/keda/v2",
        "v2.21.0",
        [
            "config/crd/bases/keda.sh_scaledobjects.yaml",
            "config/crd/bases/keda.sh_triggerauthentications.yaml",
        ],
    ),
    (
        "github.com/prometheus-operator/prometheus-operator",
        "v0.85.0",
        [
            "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        ],
    ),
]


def schema_file_name(kind: str, api_version: str) -> str:
    """kubeconform's ``{{ .ResourceKind }}{{ .KindSuffix }}.json`` for this kind and apiVersion."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix.lower()}.json"


# --- Built-in kinds ----------------------------------------------------------------------------


def _collect_refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            out.add(ref.rsplit("/", 1)[-1])
        for value in node.values():
            _collect_refs(value, out)
    elif isinstance(node, list):
        for value in node:
            _collect_refs(value, out)


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                "#/$defs/" + v[len(DEFINITIONS_REF) :]
                if k == "$ref" and isinstance(v, str) and v.startswith(DEFINITIONS_REF)
                else _rewrite_refs(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def standalone_schema(schema: dict, definitions: dict[str, Any]) -> dict:
    """``schema`` with every definition it reaches, directly or through others, in its own ``$defs``."""
    needed: set[str] = set()
    pending: set[str] = set()
    _collect_refs(schema, pending)
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        _collect_refs(definitions[name], pending)
    out = _rewrite_refs({k: v for k, v in schema.items() if k != "$id"})
    out["$defs"] = {name: definitions[name] for name in sorted(needed)}
    return out


def kubernetes_validate_dir(kubernetes_version: str) -> Path:
    """The strict schemas for one Kubernetes version inside the installed kubernetes-validate package."""
    try:
        import kubernetes_validate
    except ImportError:
        raise SystemExit("kubernetes-validate is not installed: pip install -e '.[deploy]'") from None
    root = (
        Path(kubernetes_validate.__file__).parent
        / "kubernetes-json-schema"
        / f"v{kubernetes_version}-local-strict"
    )
    if not root.is_dir():
        raise SystemExit(f"kubernetes-validate has no schemas for Kubernetes {kubernetes_version} ({root})")
    return root


def write_builtin_schemas(kubernetes_version: str, out_dir: Path) -> int:
    src = kubernetes_validate_dir(kubernetes_version)
    definitions = json.loads((src / "_definitions.json").read_text())["$defs"]
    count = 0
    for path in sorted(src.glob("*.json")):
        if path.name.startswith("_") or path.name == "all.json":
            continue
        schema = json.loads(path.read_text())
        if "x-kubernetes-group-version-kind" not in schema:
            continue  # a sub-object (e.g. DeploymentSpec), never a document of its own
        (out_dir / path.name).write_text(json.dumps(standalone_schema(schema, definitions)))
        count += 1
    return count


# --- Custom resources --------------------------------------------------------------------------


def strict_openapi_schema(node: Any) -> Any:
    """An OpenAPI v3 (structural) CRD schema as JSON Schema that rejects unknown fields.

    Follows kubeconform's openapi2jsonschema conversion: objects with ``properties`` and no
    ``additionalProperties`` get ``additionalProperties: false`` unless they preserve unknown
    fields; ``x-kubernetes-int-or-string`` becomes integer-or-string; ``nullable`` adds null.
    """
    if isinstance(node, list):
        return [strict_openapi_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_openapi_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def crd_schemas(crd: dict) -> dict[str, dict]:
    """File name -> JSON schema for every served version of one CustomResourceDefinition."""
    spec = crd["spec"]
    kind, group = spec["names"]["kind"], spec["group"]
    out = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = strict_openapi_schema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
        api_version = f"{group}/{version['name']}"
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "enum": [api_version]}
        props["kind"] = {"type": "string", "enum": [kind]}
        # metadata is checked by the API server's ObjectMeta rules, not by the CRD schema.
        props["metadata"] = {"type": "object"}
        schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        out[schema_file_name(kind, api_version)] = schema
    return out


def go_module_dir(module: str, version: str) -> Path:
    """Download a Go module into the module cache (read only) and return its directory."""
    with tempfile.TemporaryDirectory() as empty:  # outside any go.mod, so nothing is edited
        env = dict(os.environ, GOFLAGS="-mod=mod")
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            cwd=empty, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "Dir" not in info:
        raise SystemExit(
            f"go mod download {module}@{version} failed: {info.get('Error') or result.stderr.strip()}"
        )
    return Path(info["Dir"])


def write_crd_schemas(out_dir: Path) -> int:
    count = 0
    for module, version, files in CRD_SOURCES:
        root = go_module_dir(module, version)
        for rel in files:
            for name, schema in crd_schemas(yaml.safe_load((root / rel).read_text())).items():
                (out_dir / name).write_text(json.dumps(schema))
                count += 1
    return count


def build(out_root: Path, kubernetes_version: str = KUBERNETES_VERSION) -> Path:
    """Write all schemas under ``out_root/v<version>/`` (once; a stamp file marks completion)."""
    out_dir = out_root / f"v{kubernetes_version}"
    stamp = out_dir / ".complete"
    if stamp.exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    builtin = write_builtin_schemas(kubernetes_version, out_dir)
    crds = write_crd_schemas(out_dir)
    stamp.write_text(f"{builtin} built-in kinds, {crds} custom resource versions\n")
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".local/k8s-schemas"))
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = parser.parse_args(argv)
    out_dir = build(args.out, args.kubernetes_version)
    print(f"{out_dir}: {(out_dir / '.complete').read_text().strip()}", file=sys.stderr)


if __name__ == "__main__":
    main()
