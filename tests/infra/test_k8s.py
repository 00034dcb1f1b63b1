"""The Kubernetes pack (infra/k8s: a Deployment scaled by KEDA, a Knative Service, a KServe runtime),
checked offline: every manifest well-formed for its kind, probes on the right routes and sized by the
same rule as the Terraform's Cloud Run probe, a progress deadline past the startup window, the
concurrency the server can hold, and checkov's Kubernetes checks."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from tests.infra.conftest import INFRA
from tests.infra.test_checks import BIN
from tests.infra.test_modules import _evaluate

K8S = INFRA / "k8s"
# What each kind must hold (dotted paths; [] = a non-empty list whose first item is followed).
REQUIRED = {
    "Deployment": ["spec.selector.matchLabels", "spec.template.spec.containers[].image"],
    "Service": ["spec.selector", "spec.ports[].port"],
    "NetworkPolicy": ["spec.podSelector", "spec.policyTypes[]"],
    "ScaledObject": ["spec.scaleTargetRef.name", "spec.triggers[].type", "spec.triggers[].metadata.query"],
    "ServingRuntime": ["spec.supportedModelFormats[].name", "spec.containers[].image"],
    "InferenceService": ["spec.predictor.model.modelFormat.name", "spec.predictor.model.runtime"],
}
KNATIVE = ["spec.template.spec.containers[].image", "spec.template.spec.containerConcurrency"]


def _documents():
    return [(path.name, document) for path in sorted(K8S.glob("*.yaml"))
            for document in yaml.safe_load_all(path.read_text()) if document]


def _get(document, path):
    node = document
    for part in path.split("."):
        many = part.endswith("[]")
        node = node.get(part.removesuffix("[]")) if isinstance(node, dict) else None
        if many:
            assert isinstance(node, list) and node, path
            node = node[0]
    return node


def _containers(document):
    spec = document["spec"]
    if document["kind"] == "Deployment":
        return spec["template"]["spec"]["containers"]
    if document["kind"] == "Service" and document["apiVersion"].startswith("serving.knative.dev"):
        return spec["template"]["spec"]["containers"]
    return spec.get("containers", [])


def test_every_manifest_is_well_formed_for_its_kind():
    kinds = set()
    for name, document in _documents():
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(document), name
        assert document["metadata"].get("name") and document["metadata"].get("namespace"), name
        kind = document["kind"]
        required = KNATIVE if document["apiVersion"].startswith("serving.knative.dev") else REQUIRED[kind]
        for path in required:
            assert _get(document, path) not in (None, "", []), (name, kind, path)
        kinds.add(kind)
    assert {"Deployment", "ScaledObject", "ServingRuntime", "InferenceService", "Service"} <= kinds


def test_the_inference_service_uses_the_runtime_and_keda_scales_the_deployment():
    names = {(document["kind"], document["metadata"]["name"]) for _, document in _documents()}
    for _, document in _documents():
        if document["kind"] == "InferenceService":
            assert ("ServingRuntime", document["spec"]["predictor"]["model"]["runtime"]) in names
        if document["kind"] == "ScaledObject":
            assert ("Deployment", document["spec"]["scaleTargetRef"]["name"]) in names
            assert "gguf_requests_waiting" in document["spec"]["triggers"][0]["metadata"]["query"]


def _sized(document):
    return "serverless-gguf/warm-model-bytes" in (document["metadata"].get("annotations") or {})


def test_probes_follow_the_terraforms_rule_and_the_deadline_outlasts_them(modules):
    checked = 0
    for name, document in _documents():
        if not _sized(document):
            continue
        warm = int(document["metadata"]["annotations"]["serverless-gguf/warm-model-bytes"])
        budget = _evaluate("local.startup_failure_threshold * local.startup_period_seconds", modules["gpu_service"],
                           {"warm_model_bytes": warm})
        for container in _containers(document):
            startup = container["startupProbe"]
            assert startup["httpGet"]["path"] == container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
            assert container["livenessProbe"]["httpGet"]["path"] == "/health"
            window = startup["failureThreshold"] * startup["periodSeconds"]
            assert window == budget, (name, window, budget)
            checked += 1
        deadline = document["spec"].get("progressDeadlineSeconds") or int(
            document["spec"].get("template", {}).get("metadata", {}).get("annotations", {})
            .get("serving.knative.dev/progress-deadline", "0s").removesuffix("s"))
        if document["kind"] != "ServingRuntime":
            assert deadline > budget, name
    assert checked == 3


def _env(container):
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def test_concurrency_is_what_one_replica_holds():
    """N_PARALLEL x warm chat models + MAX_QUEUE: every request a replica can hold, no more (beyond
    that the server answers 429 rather than queueing behind the platform)."""
    for name, document in _documents():
        containers = _containers(document)
        if not containers or "N_PARALLEL" not in _env(containers[0]):
            continue
        env = _env(containers[0])
        holds = int(env["N_PARALLEL"]) * len(env["WARM_MODELS"].split(",")) + int(env["MAX_QUEUE"])
        if document["apiVersion"].startswith("serving.knative.dev"):
            assert document["spec"]["template"]["spec"]["containerConcurrency"] == holds, name
    for _, document in _documents():
        if document["kind"] == "ScaledObject":
            assert int(document["spec"]["triggers"][0]["metadata"]["threshold"]) == 8
        if document["kind"] == "InferenceService":
            assert document["spec"]["predictor"]["containerConcurrency"] == 8


def test_checkov_kubernetes_checks_pass():
    result = subprocess.run([str(BIN / "checkov"), "-d", str(K8S), "--framework", "kubernetes", "--output", "json",
                             "--quiet"], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [check["check_id"] + " " + check["resource"] for r in reports for check in r["results"]["failed_checks"]]
    assert failed == [] and sum(r["summary"]["passed"] for r in reports) > 50


@pytest.mark.parametrize("kind", ["Deployment"])
def test_the_pod_runs_as_its_image_does(kind):
    (document,) = [document for _, document in _documents() if document["kind"] == kind]
    pod = document["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["volumes"][0]["hostPath"]["path"]  # node-local models: a new pod on the node skips the download
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


# Kubernetes' own OpenAPI schemas (kubernetes-validate carries them; strict: unknown fields fail).
KUBERNETES = "1.33.0"
CORE_API = ("v1", "apps/v1", "networking.k8s.io/v1")
# Fields the custom resources add around a pod spec or a container, per their own API references.
KNATIVE_REVISION = {"containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds"}
KSERVE_COMPONENT = {"minReplicas", "maxReplicas", "containerConcurrency", "scaleMetric", "scaleTarget", "timeout",
                    "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy",
                    "model"}
KSERVE_MODEL = {"modelFormat", "runtime", "storageUri", "protocolVersion"}


def _pod(spec, name):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _knative_defaults(spec):
    """What Knative fills in before the pod exists: a container name, and probes on the serving port."""
    spec = {key: value for key, value in spec.items() if key not in KNATIVE_REVISION}
    containers = []
    for container in spec["containers"]:
        container = {"name": "user-container", **container}
        port = container["ports"][0]["containerPort"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if "httpGet" in container.get(probe, {}):
                container[probe] = {**container[probe], "httpGet": {"port": port, **container[probe]["httpGet"]}}
        containers.append(container)
    return {**spec, "containers": containers}


def _core_objects(document):
    """The document, or the Kubernetes objects a custom resource embeds, as core objects to validate."""
    api, kind, name = document["apiVersion"], document["kind"], document["metadata"]["name"]
    if api in CORE_API:
        return [document]
    if api.startswith("serving.knative.dev"):
        return [_pod(_knative_defaults(document["spec"]["template"]["spec"]), name)]
    if kind == "ServingRuntime":
        return [_pod({"containers": document["spec"]["containers"]}, name)]
    if kind == "InferenceService":
        predictor = document["spec"]["predictor"]
        model = {key: value for key, value in predictor["model"].items() if key not in KSERVE_MODEL}
        pod = {key: value for key, value in predictor.items() if key not in KSERVE_COMPONENT}
        return [_pod({**pod, "containers": [{"name": "kserve-container", **model}]}, name)]
    assert kind == "ScaledObject", kind  # KEDA publishes no schema here: REQUIRED checks its fields
    return []


def _schema_errors(documents):
    import kubernetes_validate

    errors = []
    for name, document in documents:
        for core in _core_objects(document):
            try:
                kubernetes_validate.validate(core, KUBERNETES, strict=True)
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{name} {document['kind']}: {error.message} at {list(error.absolute_path)}")
    return errors


def test_every_manifest_validates_against_kubernetes_schemas():
    assert sum(len(_core_objects(document)) for _, document in _documents()) == 6
    assert _schema_errors(_documents()) == []


def test_the_schema_check_catches_a_misspelt_field():
    (deployment,) = [(name, d) for name, d in _documents() if d["kind"] == "Deployment"]
    name, document = json.loads(json.dumps(deployment))
    container = document["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    (knative,) = [(n, json.loads(json.dumps(d))) for n, d in _documents() if d["apiVersion"].startswith("serving.")
                  and d["kind"] == "Service"]
    knative[1]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    errors = _schema_errors([(name, document), knative])
    assert len(errors) == 2 and "readinesProbe" in errors[0] and "'8000'" in errors[1], errors
