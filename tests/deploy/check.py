#!/usr/bin/env python3
"""Reads the deployment files with real parsers and renders the Helm chart with the real
Helm engine, for tests/tests/deploy.rs, which asserts on what this prints.

Tools (installed by .ci/run in target/deploy-venv): PyYAML (docker-compose.yml, Chart.yaml,
values files, rendered manifests), jsonschema (values.schema.json), helm-python-sdk (Helm
v4's Go SDK: lint, schema validation, template rendering), kubernetes-validate (rendered
manifests against the Kubernetes API's own schemas, strict), dockerfile (BuildKit's
Dockerfile parser) and hadolint (Dockerfile lint).

Usage: check.py REPO_ROOT < cases.json
  cases.json: {"renders": {NAME: {"values_files": [PATH, ...], "values": {...}}},
               "kube_versions": ["1.25.0", ...]}
Prints one JSON document (see `main`). Exits non-zero only when a tool is missing or an
input cannot be read at all; every finding is data for the test.
"""

import importlib.metadata
import json
import os
import subprocess
import sys

import dockerfile
import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

RELEASE = "notification"
NAMESPACE = "notification"


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def schema_errors(schema, values):
    """Every violation of `schema` by `values`, as "path: message" lines."""
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return sorted(
        "/".join(str(p) for p in error.absolute_path) + ": " + error.message
        for error in validator.iter_errors(values)
    )


def merge(base, override):
    """Helm's coalescing of values files: maps merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def kube_check(doc, versions):
    """Validates one manifest against the Kubernetes schemas of each version (strict: no
    unknown fields). Returns (errors, kinds without a schema, e.g. CRDs)."""
    errors, unknown = [], []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{version} {doc['kind']}/{doc['metadata']['name']}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            unknown.append(f"{doc['apiVersion']}/{doc['kind']}")
    return errors, sorted(set(unknown))


def render(chart, chart_dir, case, versions):
    values = {}
    for path in case.get("values_files", []):
        values = merge(values, load_yaml(path) or {})
    values = merge(values, case.get("values", {}))
    out = {"error": None, "manifests": [], "lint_errors": [], "kube_errors": [], "no_schema": []}
    lint = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE)
    out["lint_errors"] = lint["errors"]
    out["lint_messages"] = [m["error"] for m in lint["messages"]]
    try:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as e:
        out["error"] = str(e)
        return out
    out["python_schema_errors"] = schema_errors(chart.schema, chart.merge_values(values))
    for source in sorted(rendered):
        if source.endswith("NOTES.txt"):
            out["notes"] = rendered[source]
            continue
        for doc in yaml.safe_load_all(rendered[source]):
            if doc is None:
                continue
            errors, unknown = kube_check(doc, versions)
            out["kube_errors"] += errors
            out["no_schema"] += unknown
            out["manifests"].append({"source": source, "doc": doc})
    out["no_schema"] = sorted(set(out["no_schema"]))
    return out


def dockerfile_report(root, venv_bin):
    path = os.path.join(root, "Dockerfile")
    instructions = [
        {
            "cmd": c.cmd,
            "flags": list(c.flags),
            "value": list(c.value),
            "heredocs": [{"name": h.name, "content": h.content} for h in c.heredocs],
        }
        for c in dockerfile.parse_file(path)
    ]
    lint = subprocess.run(
        [os.path.join(venv_bin, "hadolint"), "--no-color", path],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "instructions": instructions,
        "hadolint": {"code": lint.returncode, "output": lint.stdout + lint.stderr},
    }


def main():
    root = os.path.abspath(sys.argv[1])
    cases = json.load(sys.stdin)
    versions = cases["kube_versions"]
    chart_dir = os.path.join(root, "helm", "notification")
    with open(os.path.join(chart_dir, "values.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    values = load_yaml(os.path.join(chart_dir, "values.yaml"))
    chart = helm.Chart.load(chart_dir)
    report = {
        "tools": {
            "helm_sdk": helm.helm_sdk_version(),
            "jsonschema": importlib.metadata.version("jsonschema"),
            "pyyaml": yaml.__version__,
        },
        "compose": load_yaml(os.path.join(root, "docker-compose.yml")),
        "chart_yaml": load_yaml(os.path.join(chart_dir, "Chart.yaml")),
        "chart_metadata": chart.metadata,
        "values": values,
        "values_schema_errors": schema_errors(schema, values),
        "helm_values_schema_error": None,
        "dockerfile": dockerfile_report(root, os.path.dirname(sys.executable)),
        "renders": {},
    }
    try:
        chart.validate_schema(values)
    except helm.HelmError as e:
        report["helm_values_schema_error"] = str(e)
    for name, case in cases["renders"].items():
        case = dict(case)
        case["values_files"] = [os.path.join(root, p) for p in case.get("values_files", [])]
        report["renders"][name] = render(chart, chart_dir, case, versions)
    chart.close()
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
