"""Deployment artefacts: Dockerfiles, Kubernetes manifests, Prometheus config and alerts, Grafana.

What runs here: hadolint on both Dockerfiles; ``kustomize build`` of every overlay validated by
kubeconform against offline Kubernetes, KEDA and Prometheus Operator schemas (``make
deploy-tools``); cross-checks between the manifests and streamd's own config loader;
``promtool check config``, ``promtool check rules`` and ``promtool test rules``; the Grafana
dashboard's structure; and every dashboard and alert expression evaluated by a real Prometheus
scraping a real exporter of streamd's metric registry. What cannot run here: ``docker build``
(no Docker engine) and applying the manifests (no cluster).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from prom_helpers import PrometheusServer

from streamd import metrics as streamd_metrics
from streamd.config import ConfigError, load_config
from streamd.httpserver import Heartbeat, OpsServer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deploy" / "grafana"))  # build_dashboard.py is a script, not a package
import build_dashboard  # noqa: E402

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTS_FILE = PROMETHEUS_DIR / "streamd-alerts.yml"
SCHEMAS = REPO / ".local" / "k8s-schemas"
KUBERNETES_VERSION = "1.33.0"
RENDERED = ["base", "overlays/cpu", "overlays/gpu"]


def tool(name: str) -> str:
    """Path of a checker binary: .local/bin (Go tools), the venv (hadolint), then PATH."""
    for candidate in (REPO / ".local" / "bin" / name, Path(sys.executable).parent / name):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make deploy-tools`", pytrace=False)
    return found


def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, input=input, capture_output=True, text=True, cwd=REPO, timeout=120, check=False
    )


# --- Docker ------------------------------------------------------------------------------------

DOCKERFILES = {variant: DEPLOY / "docker" / f"Dockerfile.{variant}" for variant in ("cpu", "cuda")}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for line in text.splitlines()
        if (parts := line.split(None, 1))
    ]


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_dockerfile_passes_hadolint(variant: str) -> None:
    result = run(tool("hadolint"), str(DOCKERFILES[variant]))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_dockerfile_is_multistage_non_root_with_healthcheck_and_weights(variant: str) -> None:
    instructions = dockerfile_instructions(DOCKERFILES[variant])
    froms = [args for name, args in instructions if name == "FROM"]
    assert len(froms) >= 2, "build and runtime stages"
    runtime = instructions[max(i for i, (name, _) in enumerate(instructions) if name == "FROM") :]
    users = [args for name, args in runtime if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "runtime stage must drop root"
    assert any(name == "HEALTHCHECK" and "/healthz" in args for name, args in runtime)
    assert any(name == "COPY" and args.split()[-2:] == ["models/", "models/"] for name, args in runtime)
    assert any(name == "COPY" and "--from=build" in args for name, args in runtime)
    assert ("EXPOSE", "9108") in runtime
    assert any(name == "ENTRYPOINT" and json.loads(args) == ["streamd"] for name, args in runtime)


def test_cuda_image_base_is_official_and_matches_torch_pin() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    torch_pin = re.search(r'"torch==(\d+\.\d+\.\d+)"', pyproject).group(1)
    base = next(
        args
        for name, args in dockerfile_instructions(DOCKERFILES["cuda"])
        if name == "ARG" and args.startswith("BASE_IMAGE=")
    )
    image = base.split("=", 1)[1]
    assert image.startswith(("pytorch/pytorch:", "nvidia/cuda:")), image
    assert image.startswith(f"pytorch/pytorch:{torch_pin}-"), f"{image} does not carry torch {torch_pin}"
    cpu = DOCKERFILES["cpu"].read_text()
    assert f'"torch=={torch_pin}"' in cpu and "/whl/cpu" in cpu


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_dockerignore_lets_through_what_the_image_copies(variant: str) -> None:
    ignore = (DEPLOY / "docker" / f"Dockerfile.{variant}.dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*", "deny by default"
    for name, args in dockerfile_instructions(DOCKERFILES[variant]):
        if name == "COPY" and "--from=" not in args:
            for source in [a for a in args.split() if not a.startswith("--")][:-1]:
                assert f"!{source}" in ignore, f"{source} is copied but excluded from the build context"
                assert (REPO / source).exists(), source


# --- Kubernetes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    """``kustomize build`` output of the base and each overlay."""
    out = {}
    for target in RENDERED:
        result = run(tool("kustomize"), "build", str(K8S / target))
        assert result.returncode == 0, result.stderr
        out[target] = result.stdout
    return out


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict], kind: str) -> dict:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def kubeconform(text: str) -> subprocess.CompletedProcess:
    if not (SCHEMAS / f"v{KUBERNETES_VERSION}" / ".complete").exists():
        pytest.fail("Kubernetes schemas missing: run `make deploy-tools`", pytrace=False)
    template = str(SCHEMAS / f"v{KUBERNETES_VERSION}" / "{{ .ResourceKind }}{{ .KindSuffix }}.json")
    return run(
        tool("kubeconform"), "-strict", "-summary", "-output", "json",
        "-kubernetes-version", KUBERNETES_VERSION, "-schema-location", template, "-",
        input=text,
    )  # fmt: skip


@pytest.mark.parametrize("target", RENDERED)
def test_manifests_are_valid_against_schemas(rendered: dict[str, str], target: str) -> None:
    result = kubeconform(rendered[target])
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)["summary"]
    assert summary["valid"] == len(documents(rendered[target])), summary
    assert summary["skipped"] == summary["invalid"] == summary["errors"] == 0, summary


def test_kubeconform_rejects_an_unknown_field_and_a_wrong_type(rendered: dict[str, str]) -> None:
    docs = documents(rendered["overlays/cpu"])
    deployment = copy.deepcopy(by_kind(docs, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecondz"] = 10
    scaled = copy.deepcopy(by_kind(docs, "ScaledObject"))
    scaled["spec"]["maxReplicaCount"] = "eight"
    for doc in (deployment, scaled):
        result = kubeconform(yaml.safe_dump(doc))
        assert result.returncode != 0 and json.loads(result.stdout)["summary"]["invalid"] == 1, result.stdout


def container(docs: list[dict]) -> dict:
    (main,) = by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return main


def cluster_config(docs: list[dict], tmp_path: Path):
    """streamd's Config as a pod of these manifests would load it (ConfigMap file + env)."""
    config_map = by_kind(docs, "ConfigMap")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config_map["data"]["config.yaml"])
    environ = {}
    for var in container(docs)["env"]:
        environ[var["name"]] = var.get("value", "from-secret")
    environ.pop("STREAMD_CONFIG")
    return load_config(config_file, environ=environ)


@pytest.mark.parametrize("target", ["overlays/cpu", "overlays/gpu"])
def test_configmap_and_env_load_with_streamds_config_loader(
    rendered: dict[str, str], target: str, tmp_path: Path
) -> None:
    docs = documents(rendered[target])
    config = cluster_config(docs, tmp_path)
    main = container(docs)
    assert config.daemon.http_host == "0.0.0.0", "the daemon must listen beyond loopback in a pod"
    assert main["ports"][0]["containerPort"] == config.daemon.http_port
    assert config.model.device == ("cuda" if target.endswith("gpu") else "cpu")
    assert config.kafka.sasl_password == "from-secret" and config.redis.password == "from-secret"
    assert 0 < config.daemon.metrics_top_streams <= 100, "per-station panels and alert need the top-N view"
    # The volume mount and STREAMD_CONFIG point at the ConfigMap's file.
    env = {var["name"]: var for var in main["env"]}
    mount = next(m for m in main["volumeMounts"] if m["name"] == "config")
    assert env["STREAMD_CONFIG"]["value"] == f"{mount['mountPath']}/config.yaml"


def test_an_unknown_config_key_in_the_configmap_would_be_caught(
    rendered: dict[str, str], tmp_path: Path
) -> None:
    docs = documents(rendered["overlays/cpu"])
    by_kind(docs, "ConfigMap")["data"]["config.yaml"] += "\n  no_such_key: 1\n"
    with pytest.raises(ConfigError, match="no_such_key"):
        cluster_config(docs, tmp_path)


def test_probes_resources_and_security(rendered: dict[str, str]) -> None:
    docs = documents(rendered["overlays/cpu"])
    main = container(docs)
    port_names = {p["name"] for p in main["ports"]}
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert main[probe]["httpGet"]["port"] in port_names
    resources = main["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == "2"
    assert resources["requests"]["memory"] == "3Gi" and resources["limits"]["memory"] == "4Gi"
    pod = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["serviceAccountName"] == by_kind(docs, "ServiceAccount")["metadata"]["name"]
    assert "replicas" not in by_kind(docs, "Deployment")["spec"], "KEDA owns the replica count"


def test_gpu_overlay_requests_a_gpu_and_cuda_image(rendered: dict[str, str]) -> None:
    main = container(documents(rendered["overlays/gpu"]))
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert main["image"].endswith("-cuda")
    assert container(documents(rendered["overlays/cpu"]))["image"].endswith("-cpu")


def test_secret_keys_referenced_by_pod_and_keda_exist(rendered: dict[str, str]) -> None:
    docs = documents(rendered["overlays/cpu"])
    secret = by_kind(docs, "Secret")
    refs = [v["valueFrom"]["secretKeyRef"] for v in container(docs)["env"] if "valueFrom" in v]
    refs += [
        {"name": r["name"], "key": r["key"]}
        for r in by_kind(docs, "TriggerAuthentication")["spec"]["secretTargetRef"]
    ]
    assert refs
    for ref in refs:
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], ref


def test_scaledobject_scales_on_the_daemons_group_and_topic(rendered: dict[str, str], tmp_path: Path) -> None:
    docs = documents(rendered["overlays/cpu"])
    config = cluster_config(docs, tmp_path)
    scaled = by_kind(docs, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == by_kind(docs, "Deployment")["metadata"]["name"]
    (kafka,) = [t for t in scaled["triggers"] if t["type"] == "kafka"]
    meta = kafka["metadata"]
    assert meta["consumerGroup"] == config.kafka.group_id == "streamd"
    assert meta["topic"] == config.kafka.audio_topic == "streamd.audio"
    assert meta["bootstrapServers"] == config.kafka.bootstrap_servers
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= config.kafka.audio_partitions
    assert meta["allowIdleConsumers"] == "false"
    # /readyz needs assigned partitions: a rollout that surges past the partition count would stall.
    rolling = by_kind(docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert scaled["maxReplicaCount"] + rolling["maxSurge"] <= config.kafka.audio_partitions
    keda_sasl = {
        "": "none",
        "PLAIN": "plaintext",
        "SCRAM-SHA-256": "scram_sha256",
        "SCRAM-SHA-512": "scram_sha512",
    }
    assert meta["sasl"] == keda_sasl[config.kafka.sasl_mechanism]
    assert meta["tls"] == ("enable" if config.kafka.security_protocol.endswith("SSL") else "disable")
    assert kafka["authenticationRef"]["name"] == by_kind(docs, "TriggerAuthentication")["metadata"]["name"]


def test_service_pdb_and_servicemonitor_select_the_daemon(rendered: dict[str, str]) -> None:
    docs = documents(rendered["overlays/cpu"])
    pod_labels = by_kind(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = by_kind(docs, "Service")
    for selector in (
        service["spec"]["selector"],
        by_kind(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    monitor = by_kind(docs, "ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["namespace"] in monitor["namespaceSelector"]["matchNames"]
    assert {e["port"] for e in monitor["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    annotations = by_kind(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(container(docs)["ports"][0]["containerPort"])


def test_prometheusrule_carries_the_alert_rules_file(rendered: dict[str, str]) -> None:
    rule = by_kind(documents(rendered["overlays/cpu"]), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS_FILE.read_text())["groups"]


# --- Prometheus --------------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    result = run(tool("promtool"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_check_config_kubernetes_variant(tmp_path: Path) -> None:
    """prometheus-k8s.yml, checked by Debian's promtool with its kubernetes_sd_configs set aside.

    Debian builds Prometheus without Kubernetes service discovery, so its promtool rejects the
    ``kubernetes_sd_configs`` key itself. Everything else (relabelling, rule files) is checked by
    promtool on a copy whose discovery block is swapped for a static target; the discovery block
    is checked here against the fields Prometheus documents for it.
    """
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus-k8s.yml").read_text())
    (job,) = config["scrape_configs"]
    (sd,) = job.pop("kubernetes_sd_configs")
    assert set(sd) <= {"role", "namespaces", "selectors", "api_server", "kubeconfig_file", "attach_metadata"}
    assert sd["role"] == "pod" and set(sd["namespaces"]) <= {"names", "own_namespace"}
    assert sd["namespaces"]["names"] == ["streamd"]
    job["static_configs"] = [{"targets": ["127.0.0.1:9108"]}]
    config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
    copy_path = tmp_path / "prometheus-k8s.yml"
    copy_path.write_text(yaml.safe_dump(config))
    result = run(tool("promtool"), "check", "config", str(copy_path))
    assert result.returncode == 0, result.stdout + result.stderr
    # The relabelling keeps only annotated streamd pods and uses the annotated port.
    kept = {tuple(r["source_labels"]) for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert ("__meta_kubernetes_pod_annotation_prometheus_io_scrape",) in kept


def test_promtool_check_rules() -> None:
    result = run(tool("promtool"), "check", "rules", str(ALERTS_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_for_alerts() -> None:
    tests = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests
    result = run(tool("promtool"), "test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana dashboard and the queries behind dashboard and alerts ---------------------------


DASHBOARD_FILE = build_dashboard.OUTPUT
DOCS = REPO / "docs" / "operations.md"
METRIC_NAME = re.compile(r"\b((?:streamd|process)_[a-z0-9_]+)\b")


def test_dashboard_json_is_what_the_generator_writes() -> None:
    assert DASHBOARD_FILE.read_text() == build_dashboard.render(), (
        "run python deploy/grafana/build_dashboard.py"
    )


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    assert dashboard["uid"] == build_dashboard.UID and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert {"job", "instance"} <= variables.keys()
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat", "bargauge", "heatmap", "table")
        assert panel["datasource"]["uid"] == "${datasource}" and panel["title"] and panel["description"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs)
        for target in panel["targets"]:
            assert (
                target["expr"]
                and 'job=~"$job"' in target["expr"]
                and 'instance=~"$instance"' in target["expr"]
            )
    titles = " | ".join(p["title"] for p in panels)
    for needed in ("Chunks consumed", "Bytes consumed", "Consumer lag", "Inference latency", "Lookup latency",
                   "Chunk-to-decision delay", "Batch size", "per station", "Recognitions by type", "Chunk errors",
        "Dead-lettered",
                   "Events published", "Events failed", "Catalog version", "Catalog size", "Replica sync delay",
                   "CPU", "Resident memory", "GPU memory", "GPU utilisation"):  # fmt: skip
        assert needed in titles, needed


def test_dashboard_expressions_parse_with_promtool(tmp_path: Path) -> None:
    """Each panel query (variables filled in) as a recording rule: promtool parses every one."""
    exprs = [build_dashboard.concrete(e) for e in build_dashboard.expressions()]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(tool("promtool"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


class _FakeCuda:
    """torch.cuda as streamd.metrics' GPU collector reads it, for one device (no GPU here)."""

    is_available = is_initialized = staticmethod(lambda: True)
    device_count = staticmethod(lambda: 1)
    memory_allocated = staticmethod(lambda index: 1.5e9)
    memory_reserved = staticmethod(lambda index: 2.0e9)
    utilization = staticmethod(lambda index: 42)


class _FakeTorch:
    cuda = _FakeCuda


def simulate_daemon_step(m: streamd_metrics.Metrics, step: int) -> None:
    """What a working daemon records in 0.2 s, through streamd.metrics' own API: every metric moves."""
    m.tick()
    m.chunks.inc(40)
    m.bytes.inc(40 * 12_000)
    m.chunk_error("bad_length", stream_id="radio-3")
    m.discontinuity("duplicate")
    m.gap_fill.inc(0.05)
    m.active_streams.set(20)
    m.open_plays.set(5)
    streamd_metrics.observe_many(m.buffer_fill, [0.5, 1.0, 1.0])
    m.set_consumer_lag({0: 10 + step % 5, 1: 3})
    m.commit_lag.set(7)
    m.commits.inc()
    m.commit_failures.inc(step % 2)
    m.hops.inc(20)
    m.batch_size.observe(20)
    m.inference_seconds.observe(0.02)
    m.lookup_seconds.observe(0.001)
    streamd_metrics.observe_many(m.decision_delay, [0.7, 0.9, 1.1])
    m.backlog.set(step % 3)
    m.shed.labels("hops").inc(step % 2)
    m.play_event("started", f"radio-{step % 3}", 0.0)
    m.play_event("ended", f"radio-{step % 3}", 0.8)
    m.events_published.inc(2)
    m.event_failed("timeout")
    m.set_catalog("default", 3, 37_000 + step, 200)
    m.replica_sync_delay.set(0.5)


@pytest.fixture(scope="module")
def streamd_exporter():
    """streamd's metric registry (top-N view on) behind the daemon's own ops HTTP server, kept moving.

    There is no GPU on these machines, so ``torch`` is replaced by a stand-in that reports one CUDA
    device while the exporter runs: the GPU collector's real code produces the series.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "torch", _FakeTorch)
        m = streamd_metrics.Metrics(top_streams=5, model_version="test")
        stop = threading.Event()

        def activity() -> None:
            step = 0
            while not stop.wait(0.2):
                simulate_daemon_step(m, step)
                step += 1

        simulate_daemon_step(m, 0)
        worker = threading.Thread(target=activity, daemon=True)
        worker.start()
        with OpsServer("127.0.0.1", 0, m.render, Heartbeat(30.0)) as server:
            yield f"127.0.0.1:{server.port}", m
        stop.set()
        worker.join(timeout=5)


@pytest.fixture(scope="module")
def prometheus(streamd_exporter):
    target, _ = streamd_exporter
    with PrometheusServer([target], rule_files=[ALERTS_FILE]) as prom:
        prom.wait_for_scrapes(3)
        yield prom


def exported_families(m: streamd_metrics.Metrics) -> set[str]:
    body, _ = m.render()
    return {line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE ")}


def test_every_dashboard_query_returns_data(prometheus: PrometheusServer) -> None:
    results = prometheus.evaluate(build_dashboard.concrete(e) for e in build_dashboard.expressions())
    failed = [f"{r.expr}: {r.error or 'no series'}" for r in results if not r.has_data]
    assert not failed, "\n".join(failed)


def test_dashboard_variables_find_the_daemon(prometheus: PrometheusServer) -> None:
    (info,) = prometheus.api("query", query="streamd_build_info")["result"]
    assert info["metric"]["job"] and info["metric"]["instance"]


def test_alert_rules_load_evaluate_and_use_exported_metrics(prometheus: PrometheusServer) -> None:
    rules = yaml.safe_load(ALERTS_FILE.read_text())["groups"][0]["rules"]
    for rule in rules:
        for name in set(METRIC_NAME.findall(rule["expr"])):
            result = prometheus.query(f'count({{__name__="{name}", job="streamd"}})')
            assert result.has_data, f"alert {rule['alert']} uses {name}, which streamd does not export"
    loaded = prometheus.wait_for_rule_evaluation()
    assert len(loaded) == len(rules)
    assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError")) for r in loaded]
    assert "StreamdDown" not in {a["labels"]["alertname"] for a in prometheus.alerts()}


def test_every_streamd_metric_is_on_the_dashboard(streamd_exporter) -> None:
    _, m = streamd_exporter

    def family(name: str) -> str:
        return re.sub(r"_(bucket|sum|count|total)$", "", name)

    on_dashboard = {family(n) for e in build_dashboard.expressions() for n in METRIC_NAME.findall(e)}
    missing = {family(f) for f in exported_families(m) if f.startswith("streamd_")} - on_dashboard
    assert not missing, f"metrics without a panel: {sorted(missing)}"


def test_operations_doc_explains_every_metric_and_alert(streamd_exporter) -> None:
    _, m = streamd_exporter
    text = DOCS.read_text()
    names = {f for f in exported_families(m) if f.startswith("streamd_")}
    names |= {r["alert"] for r in yaml.safe_load(ALERTS_FILE.read_text())["groups"][0]["rules"]}
    assert not {n for n in names if n not in text}, sorted(n for n in names if n not in text)
