"""The Kubernetes manifests, validated offline.

Checked: every core object (ConfigMap, Deployment, Service, the flow-run Job the work pool's template renders,
the RayService's pod templates) against the Kubernetes 1.37 API schemas in strict mode (kubernetes-validate:
an unknown field fails); the RayService's serveConfigV2 against Ray Serve's own ServeDeploySchema and its app
arguments against serving.app.ServeConfig; the generated files against what the generator writes now. Not
checked: the RayService's own fields against KubeRay's CRD schema (no registry package ships it) and the Helm
values against the Prefect chart's values schema (it ships with the chart, not on PyPI).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prefect.utilities.templating import apply_values
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from deployments import kubernetes
from serving.app import ServeConfig

K8S = Path(kubernetes.K8S)
VERSION = "1.37.0"
CREDENTIAL = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|STORE_URI|DATABASE_URL", re.IGNORECASE)


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def validate(resource: dict) -> None:
    kubernetes_validate.validate(resource, VERSION, strict=True)


def ray_service() -> dict:
    (service,) = documents("rayservice.yaml")
    return service


def pod_templates(service: dict) -> list[dict]:
    cluster = service["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"pods-{i}"}, "template": g["template"]}
        for i, g in enumerate(groups)
    ]


def flow_run_job(template: dict) -> dict:
    """The Job the worker would submit: the template's variables at their defaults, plus what a run supplies."""
    variables = template["variables"]["properties"]
    values = {name: spec.get("default") for name, spec in variables.items()}
    for name, fallback in {
        "cpu_request": "1",
        "cpu_limit": "1",
        "memory_request": "1Gi",
        "memory_limit": "1Gi",
    }.items():
        values[name] = values[name] or fallback  # what a deployment sets where the template has no default
    values.update(
        name="tabloop-train-abc12",
        namespace="tabloop",
        command="prefect flow-run execute",
        env=[{"name": "PREFECT_API_URL", "value": "http://prefect-server:4200/api"}],
        labels={"prefect.io/flow-run-id": "abc"},
        annotations={},
        service_account_name="prefect-worker",
    )
    job = apply_values(copy.deepcopy(template["job_configuration"]["job_manifest"]), values, remove_notset=True)
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["args"] = container["args"].split()  # the worker splits the command the same way
    return job


def test_the_generated_manifests_match_the_configuration_they_come_from():
    assert kubernetes.main(["--check"]) == 0, "run python deployments/kubernetes.py"


@pytest.mark.parametrize("name", ["config.yaml", "mlflow.yaml"])
def test_each_core_object_validates_strictly(name):
    for resource in documents(name):
        validate(resource)


def test_the_ray_service_runs_serving_config_yaml_and_its_pods_validate():
    service = ray_service()
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve)
    (app,) = serve["applications"]
    ServeConfig(**app["args"])
    assert serve["http_options"]["host"] == "0.0.0.0"
    for template in pod_templates(service):
        validate(template)
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert (head["livenessProbe"]["httpGet"]["path"], head["readinessProbe"]["httpGet"]["path"]) == (
        "/health",
        "/ready",
    )


def test_the_work_pool_template_renders_a_valid_job_where_prefects_default_does_not():
    template = json.loads((K8S / "prefect-base-job-template.json").read_text())
    job = flow_run_job(template)
    validate(job)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == kubernetes.IMAGE
    with pytest.raises(kubernetes_validate.ValidationError, match=r"completions|parallelism"):
        validate(flow_run_job(kubernetes.default_job_template()))


def test_credentials_only_come_from_the_secret():
    containers = [c for t in pod_templates(ray_service()) for c in t["template"]["spec"]["containers"]]
    containers += [
        c
        for d in documents("mlflow.yaml")
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    template = json.loads((K8S / "prefect-base-job-template.json").read_text())
    containers += template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
    for container in containers:
        assert {"secretRef": {"name": kubernetes.SECRET}} in container["envFrom"], container["name"]
        for variable in container.get("env", []) if isinstance(container.get("env"), list) else []:
            assert not (CREDENTIAL.search(variable["name"]) and "value" in variable), variable
    (config_map,) = documents("config.yaml")
    assert not [key for key in config_map["data"] if CREDENTIAL.search(key)]
    assert all(d["kind"] != "Secret" for name in ("config.yaml", "mlflow.yaml") for d in documents(name))


def test_a_wrong_field_or_a_misspelt_serving_argument_fails_validation():
    deployment = next(d for d in documents("mlflow.yaml") if d["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["replica"] = broken["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        validate(broken)
    probe = copy.deepcopy(deployment)
    probe["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [5000]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(probe)
    serve = yaml.safe_load(ray_service()["spec"]["serveConfigV2"])
    serve["applications"][0]["args"]["max_batchsize"] = 64
    with pytest.raises(ValidationError, match="max_batchsize"):
        ServeConfig(**serve["applications"][0]["args"])


def test_the_worker_values_name_the_pool_the_deployments_can_use():
    values = yaml.safe_load((K8S / "prefect-worker-values.yaml").read_text())
    assert values["worker"]["config"] == {"workPool": "tabloop-kubernetes", "type": "kubernetes"}
    assert values["worker"]["apiConfig"] == "server"
