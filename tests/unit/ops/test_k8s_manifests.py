"""The kustomize base and components render offline, every object validates
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict), and the
rendered manifests hold together: probes on grpc-health at the right ports,
non-root read-only containers, every reference (ConfigMap, Secret, selector,
named port, scale target) pointing at something that exists."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from services.common.config import DEFAULT_PORTS

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"   # schemas bundled in kubernetes-validate
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # CRDs: no upstream schema, checked below
PROTO_SERVICE = {"tiering": "kequn.tiering.v1.TieringService", "assignment": "kequn.assignment.v1.AssignmentService",
                 "scoring": "kequn.scoring.v1.ScoringService", "benefits": "kequn.benefits.v1.BenefitsService"}


def _render(kustomize: str, path: Path) -> list[dict]:
    result = subprocess.run([kustomize, "build", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def base(require_tool):
    return _render(require_tool("kustomize"), K8S / "base")


@pytest.fixture(scope="module")
def full(require_tool):
    return _render(require_tool("kustomize"), K8S / "overlays" / "production")


def _kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def _by_name(docs, kind):
    return {d["metadata"]["name"]: d for d in _kind(docs, kind)}


def _pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def kubernetes_validate():
    try:
        import kubernetes_validate as kv
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("kubernetes-validate not installed (bash .ci/ops.sh installs it)", pytrace=False)
        pytest.skip("kubernetes-validate not installed")
    return kv


@pytest.mark.parametrize("which", ["base", "full"])
def test_every_object_validates_against_the_kubernetes_schemas(which, request, kubernetes_validate):
    docs = request.getfixturevalue(which)
    checked = 0
    for doc in docs:
        if doc["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 20


def test_the_validator_would_catch_a_mistake(base, kubernetes_validate):
    deployment = yaml.safe_load(yaml.safe_dump(_by_name(base, "Deployment")["tiering"]))
    _pod_spec(deployment)["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"  # must be an int
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_base_has_what_operations_expect(base):
    kinds = {d["kind"] for d in base}
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "Job"} <= kinds
    assert set(_by_name(base, "Deployment")) == set(DEFAULT_PORTS) | {"console"}
    assert all(d["metadata"]["namespace"] == "kequn" for d in base if d["kind"] != "Namespace")
    assert {"NetworkPolicy", "ServiceMonitor", "PrometheusRule"}.isdisjoint(kinds), "components must be opt-in"


@pytest.mark.parametrize("name", sorted(DEFAULT_PORTS))
def test_deployment_probes_ports_and_security(base, name):
    deployment = _by_name(base, "Deployment")[name]
    pod = _pod_spec(deployment)
    (container,) = pod["containers"]
    grpc_port, metrics_port = DEFAULT_PORTS[name]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": grpc_port, "metrics": metrics_port}
    assert container["args"] == ["serve", name]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port, probe
    assert container["readinessProbe"]["grpc"]["service"] == PROTO_SERVICE[name]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) <= set(container["resources"]["limits"])
    assert pod["automountServiceAccountToken"] is False
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    env = {e["name"]: e for e in container["env"]}
    assert env[f"KEQUN_{name.upper()}_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == f"{name}-url"
    assert "KEQUN_SERVICE_TOKEN" in env
    # writable paths are volumes, the root filesystem stays read-only
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/kequn", "/etc/kequn/tokens"} <= mounts


def test_console_deployment_serves_http_with_probes_and_no_database_or_token_of_its_own(base):
    deployment = _by_name(base, "Deployment")["console"]
    pod = _pod_spec(deployment)
    (container,) = pod["containers"]
    assert container["args"] == ["serve", "console"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = {e["name"] for e in container["env"]}
    assert "KEQUN_SERVICE_TOKEN" not in env and not any(n.endswith("_DATABASE_URL") for n in env)
    assert deployment["spec"]["replicas"] == 1  # sessions live in the process
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert "/etc/kequn/tokens" in {m["mountPath"] for m in container["volumeMounts"]}


def test_config_map_references_resolve_and_point_the_services_at_each_other(base):
    config_maps = _by_name(base, "ConfigMap")
    for workload in _kind(base, "Deployment") + _kind(base, "Job"):
        for container in _pod_spec(workload)["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
    (config,) = config_maps.values()
    data = config["data"]
    for name, (grpc_port, _) in DEFAULT_PORTS.items():
        assert data[f"KEQUN_{name.upper()}_TARGET"] == f"{name}:{grpc_port}"
    assert data["KEQUN_TOKENS_FILE"].startswith("/etc/kequn/tokens/")


def test_secret_references_are_the_documented_ones(base):
    example = {d["metadata"]["name"]: set(d["stringData"])
               for d in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())}
    used: dict[str, set] = {}
    for workload in _kind(base, "Deployment") + _kind(base, "Job"):
        pod = _pod_spec(workload)
        for container in pod["containers"]:
            for e in container.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    used.setdefault(ref["name"], set()).add(ref["key"])
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                used.setdefault(volume["secret"]["secretName"], set()).add("tokens.yaml")
    assert used == example


def test_services_pdbs_and_hpas_target_the_deployments(base):
    deployments = _by_name(base, "Deployment")
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    for service in _kind(base, "Service"):
        targets = [n for n, labels in pod_labels.items() if _matches(service["spec"]["selector"], labels)]
        assert len(targets) == 1, service["metadata"]["name"]
        container_ports = {p["name"] for p in _pod_spec(deployments[targets[0]])["containers"][0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    for name in deployments:
        assert f"{name}-pods" in _by_name(base, "Service")  # headless, for dns_sd
        assert _by_name(base, "Service")[f"{name}-pods"]["spec"]["clusterIP"] == "None"
        if name == "console":  # one replica (in-memory sessions): no PDB to block a drain, no HPA
            assert "console" not in _by_name(base, "PodDisruptionBudget")
            assert "console" not in _by_name(base, "HorizontalPodAutoscaler")
            continue
        pdb = _by_name(base, "PodDisruptionBudget")[name]
        assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels[name])
        hpa = _by_name(base, "HorizontalPodAutoscaler")[name]
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["spec"]["minReplicas"] >= 2 > pdb["spec"]["minAvailable"]  # a drain never blocks forever


def test_migration_job_migrates_every_database(base):
    (job,) = _kind(base, "Job")
    (container,) = _pod_spec(job)["containers"]
    assert container["args"] == ["migrate"]
    keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]}
    assert keys == {f"{n}-url" for n in DEFAULT_PORTS}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_prometheus_dns_discovery_matches_the_headless_services(base):
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus-k8s.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "kequn"]
    services = _by_name(base, "Service")
    for sd in job["dns_sd_configs"]:
        (dns_name,) = sd["names"]
        service_name, namespace = dns_name.split(".")[:2]
        assert namespace == services[service_name]["metadata"]["namespace"]
        assert sd["port"] == DEFAULT_PORTS[service_name.removesuffix("-pods")][1]
    (console,) = [j for j in config["scrape_configs"] if j["job_name"] == "kequn-console"]
    (sd,) = console["dns_sd_configs"]
    service_name = sd["names"][0].split(".")[0]
    assert service_name == "console-pods" and services[service_name]["spec"]["clusterIP"] == "None"
    assert sd["port"] == services["console"]["spec"]["ports"][0]["port"] == 8080


def test_components_network_policies_and_service_monitor(full):
    deployments = _by_name(full, "Deployment")
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    container_ports = {p["name"] for d in deployments.values() for p in _pod_spec(d)["containers"][0]["ports"]}
    policies = _by_name(full, "NetworkPolicy")
    assert policies["default-deny"]["spec"]["podSelector"] == {}
    servers = [labels for labels in pod_labels if labels["app.kubernetes.io/component"] == "server"]
    console = [labels for labels in pod_labels if labels["app.kubernetes.io/name"] == "console"]
    for policy in policies.values():
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        covered = [labels for labels in pod_labels if _matches(selector, labels)]
        # A policy is for every server, for the console, or for all of kequn: never a selector that misses.
        assert covered in (servers, console, pod_labels), policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            for port in rule.get("ports", []):
                assert isinstance(port["port"], int) or port["port"] in container_ports
    assert _matches(policies["kequn-console-ingress"]["spec"]["podSelector"]["matchLabels"], console[0])

    monitors = _by_name(full, "ServiceMonitor")
    assert set(monitors) == {"kequn", "kequn-console"}
    (web,) = [s for s in _kind(full, "Service")
              if _matches(monitors["kequn-console"]["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
    assert web["metadata"]["name"] == "console" and monitors["kequn-console"]["spec"]["endpoints"][0]["port"] == "http"
    monitor = monitors["kequn"]
    selected = [s for s in _kind(full, "Service")
                if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
    assert sorted(s["metadata"]["name"] for s in selected) == sorted(DEFAULT_PORTS)  # no double scrape
    (endpoint,) = monitor["spec"]["endpoints"]
    assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected)
    assert {"targetLabel": "job", "replacement": "kequn"} in endpoint["relabelings"]


def test_prometheus_rule_is_the_alerts_file(full):
    (rule,) = _kind(full, "PrometheusRule")
    alerts = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"] == alerts, "regenerate: python deploy/k8s/components/service-monitor/gen_prometheus_rule.py"
