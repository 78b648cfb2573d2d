"""deploy/k8s and the Dockerfile agree with the server.

The manifests are rendered offline with ``kubectl kustomize`` (kubectl's built-in Kustomize; skipped
with a reason where kubectl is not installed) and validated strictly against the Kubernetes schemas
with ``kubernetes-validate``. KEDA's ScaledObject is a custom resource that kubernetes-validate has no
schema for: it is checked against the subset of KEDA's v1alpha1 schema written below, just as strict.
Then the numbers that must agree with the server are checked, and the Deployment's own command line
is run: it serves, its probes answer, and every metric the HPA and KEDA objects name is on /metrics.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from support.servers import Proc

from litserve.cli import build_parser
from litserve.cli.serve import load_app
from litserve.core.drain import shutdown_budget

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
VARIANTS = ["base", "overlays/gpu", "overlays/hpa", "overlays/keda"]

kubectl = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(kubectl is None, reason="kubectl is not installed (apt-get install kubectl)")


def render(variant: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl or "kubectl", "kustomize", str(K8S / variant)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [c] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def server_args(c: dict[str, Any]) -> Any:
    """The container's command line, parsed by litserve's own parser (so a typo in a flag fails here)."""
    return build_parser().parse_args(c["args"])


# KEDA v1alpha1 ScaledObject: the fields these manifests use, and no others allowed.
_STRICT = {"additionalProperties": False}
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    **_STRICT,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            **_STRICT,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    **_STRICT,
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "apiVersion": {"type": "string"},
                    },
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "advanced": {
                    "type": "object",
                    **_STRICT,
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            **_STRICT,
                            "properties": {"behavior": {"type": "object"}, "name": {"type": "string"}},
                        },
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        **_STRICT,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}


@needs_kubectl
@pytest.mark.parametrize("variant", VARIANTS)
def test_manifests_render_and_validate_strictly(variant):
    import kubernetes_validate

    docs = render(variant)
    kinds = sorted(d["kind"] for d in docs)
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= set(kinds), kinds
    version = kubernetes_validate.latest_version()
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, SCALED_OBJECT_SCHEMA)
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{variant}: {doc['kind']} is invalid: {exc.message} at {list(exc.path)}")


@needs_kubectl
@pytest.mark.parametrize("variant", VARIANTS)
def test_manifests_agree_with_the_server(variant):
    docs = render(variant)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]
    c = container(docs)
    args = server_args(c)
    assert args.command == "serve" and args.host == "0.0.0.0"

    # Probes: the server's own paths, on the port it listens on.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == args.port
    for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == args.port, probe
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == args.port
    service = one(docs, "Service")
    assert [ports.get(p["targetPort"], p["targetPort"]) for p in service["spec"]["ports"]] == [args.port]

    # Selectors reach the pods.
    labels = pod["metadata"]["labels"]
    for selector in (
        service["spec"]["selector"],
        one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
    ):
        assert selector and selector.items() <= labels.items()

    # Grace: preStop, then the drain and stop bounded by shutdown_grace, all before the kubelet's SIGKILL.
    grace = args.shutdown_grace
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["spec"]["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + shutdown_budget(grace)

    # Startup: /health answers only once every worker's setup is done, so the startup probe must
    # allow startup_timeout before liveness may kill the pod.
    startup = c["startupProbe"]
    budget = startup.get("initialDelaySeconds", 0) + startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= args.startup_timeout

    # A rolling update never has fewer ready pods than asked for.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    if variant == "overlays/gpu":
        gpus = int(c["resources"]["limits"]["nvidia.com/gpu"])
        assert args.accelerator == "cuda" and int(args.devices) == gpus
    else:
        assert "nvidia.com/gpu" not in c["resources"].get("limits", {})

    if variant in ("overlays/hpa", "overlays/keda"):
        assert "replicas" not in deployment["spec"]  # the autoscaler owns it
    if variant == "overlays/hpa":
        hpa = one(docs, "HorizontalPodAutoscaler")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
        [metric] = hpa["spec"]["metrics"]
        assert metric["type"] == "Pods"
    if variant == "overlays/keda":
        so = one(docs, "ScaledObject")
        assert so["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert [t["type"] for t in so["spec"]["triggers"]] == ["prometheus"]
        assert so["spec"]["minReplicaCount"] >= 1
        stab = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert stab["stabilizationWindowSeconds"] > 0


def autoscaling_metric_names() -> set[str]:
    """Every litserve metric the HPA (through prometheus-adapter's rule) and KEDA read."""
    names: set[str] = set()
    adapter = yaml.safe_load((K8S / "overlays/hpa/prometheus-adapter-values.yaml").read_text())
    exposed = {}
    for rule in adapter["rules"]["custom"]:
        read = set(re.findall(r"litserve_[a-z_]+", rule["seriesQuery"] + rule["metricsQuery"]))
        exposed[rule["name"]["as"]] = read
        names |= read
    hpa = yaml.safe_load((K8S / "overlays/hpa/hpa.yaml").read_text())
    for metric in hpa["spec"]["metrics"]:
        assert metric["pods"]["metric"]["name"] in exposed, "the HPA reads a metric no adapter rule exposes"
    so = yaml.safe_load((K8S / "overlays/keda/scaledobject.yaml").read_text())
    for trigger in so["spec"]["triggers"]:
        names |= set(re.findall(r"litserve_[a-z_]+", trigger["metadata"]["query"]))
    return names


def test_the_dockerfile_builds_a_non_root_image_of_the_installed_project():
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", text, re.M)
    assert re.search(r"^RUN pip install /src", text, re.M)  # the project installed, not run from source
    [user] = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user not in ("root", "0")
    assert "EXPOSE 8000" in lines
    assert any(line.startswith("HEALTHCHECK") for line in lines) and "/health" in text
    for line in lines:  # every COPY source is in the repository
        if line.startswith("COPY "):
            for src in [w for w in line.split()[1:-1] if not w.startswith("--")]:
                assert (ROOT / src).exists(), src
    entry = yaml.safe_load(re.search(r"^ENTRYPOINT (.*)$", text, re.M).group(1))
    cmd = yaml.safe_load(re.search(r"^CMD (.*)$", text, re.M).group(1))
    assert entry == ["litserve"]
    args = build_parser().parse_args(cmd)
    assert args.command == "serve" and args.port == 8000


@needs_kubectl
@pytest.mark.slow
def test_the_deployments_command_serves_its_probes_and_every_autoscaling_metric(tmp_path):
    # The image's /app/server.py is examples/simple_server.py; run the Deployment's args against it.
    shutil.copy(ROOT / "examples" / "simple_server.py", tmp_path / "server.py")
    c = container(render("base"))
    args = list(c["args"])
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = "{port}"
    assert load_app(args[1], {}, app_dir=str(tmp_path)) is not None  # the target imports as the image would
    with Proc.python(["-m", "litserve", *args], tmp_path) as proc:
        proc.wait_http(c["startupProbe"]["httpGet"]["path"], timeout=60)
        assert httpx.get(proc.url + c["livenessProbe"]["httpGet"]["path"], timeout=10).status_code == 200
        assert httpx.get(proc.url + c["readinessProbe"]["httpGet"]["path"], timeout=10).status_code == 200
        assert httpx.post(proc.url + "/predict", json={"input": 3.0}, timeout=10).json() == {"output": 9.0}
        text = httpx.get(proc.url + "/metrics", timeout=10).text
        families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        wanted = autoscaling_metric_names()
        assert wanted and wanted <= families, f"named by HPA/KEDA but not exported: {wanted - families}"
        assert re.search(r'^litserve_capacity\{route="/predict"\} 1\.0$', text, re.M)  # one worker, no batching
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(shutdown_budget(server_args(c).shutdown_grace)) == 0, proc.output()
        proc.wait_group_gone()
