"""Wrap deploy/prometheus/streamd-alerts.yml into a Prometheus Operator PrometheusRule.

The alert rules have one source, the plain rules file that promtool checks and unit-tests; the
Kubernetes component deploy/k8s/components/prometheus-operator/prometheusrule.yaml is generated
from it (tests/test_deploy.py fails when the two differ). Run after editing the rules:

    python deploy/prometheus/build_prometheusrule.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "streamd-alerts.yml"
OUTPUT = HERE.parent / "k8s" / "components" / "prometheus-operator" / "prometheusrule.yaml"
HEADER = (
    "# GENERATED from deploy/prometheus/streamd-alerts.yml by deploy/prometheus/build_prometheusrule.py.\n"
)


def prometheus_rule(rules: dict) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "streamd", "labels": {"app.kubernetes.io/name": "streamd"}},
        "spec": {"groups": rules["groups"]},
    }


def render() -> str:
    document = prometheus_rule(yaml.safe_load(RULES.read_text()))
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=120)


def main() -> None:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
