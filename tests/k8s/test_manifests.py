"""Every rendered overlay validates, and its parts fit together: the Serve config, the pods that
run it, the secrets they read, the retraining job, the network rules and each overlay's shape."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from bastion.core.runtime import ray_env
from k8s.render import K8S, load_serve_settings, serve_config_text
from k8s.validate import Validator
from tests.k8s._resources import (
    VARIANTS,
    Resource,
    all_workloads,
    containers,
    embedded_rayjob,
    find,
    one,
    pod_specs,
    pod_templates,
)

TELEMETRY_OFF = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true",
                 "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_validates_against_kubernetes_and_kuberay_schemas(
    rendered: dict[str, list[Resource]], validator: Validator, variant: str
) -> None:
    validator.check(rendered[variant], f"k8s/overlays/{variant}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_resource_lands_in_the_overlays_namespace(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    expected = "bastion-dev" if variant.startswith("dev") else "bastion"
    assert {d["metadata"].get("namespace") for d in rendered[variant]} == {expected}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_serve_config_v2_is_the_generated_serve_config(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    text = one(rendered[overlay], "RayService", "bastion")["spec"]["serveConfigV2"]
    folder = "base/serving" if overlay == "dev" else "overlays/prod"
    settings = K8S / folder / "serve-settings.yaml"
    assert text == serve_config_text(load_serve_settings(settings))
    ServeDeploySchema.model_validate(yaml.safe_load(text))


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_serve_config_points_at_what_the_cluster_provides(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    docs = rendered[overlay]
    rayservice = one(docs, "RayService", "bastion")
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    args = config["applications"][0]["args"]
    assert config["http_options"]["host"] == "0.0.0.0"
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    serve_ports = {p["containerPort"] for p in head["containers"][0]["ports"]}
    assert config["http_options"]["port"] in serve_ports
    # MLflow: the in-cluster Service, the same URI every pod gets from bastion-env.
    uri = urlsplit(args["tracking_uri"])
    service = one(docs, "Service", uri.hostname or "")
    assert uri.port in {p["port"] for p in service["spec"]["ports"]}
    assert one(docs, "ConfigMap", "bastion-env")["data"]["MLFLOW_TRACKING_URI"] == args[
        "tracking_uri"]
    # Every Ray container has the state dir and the tenant keys file mounted, keys from a Secret.
    secrets = {s["metadata"]["name"]: s for s in find(docs, "Secret")}
    for where, pod in pod_specs(rayservice):
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            assert args["state_dir"] in mounts, where
            keys_dir, _, keys_name = args["keys_file"].rpartition("/")
            secret_volume = mounts[keys_dir]["secret"]
            assert keys_name in secrets[secret_volume["secretName"]]["data"], where


@pytest.mark.parametrize("variant", VARIANTS)
def test_ray_version_and_images_follow_the_pins(
    rendered: dict[str, list[Resource]], pins: dict[str, str], variant: str
) -> None:
    docs = rendered[variant]
    image = f"bastion:{pins['bastion']}-ray{pins['ray']}-{pins['python_tag']}-cpu"
    clusters = [one(docs, "RayService", "bastion")["spec"]["rayClusterConfig"],
                embedded_rayjob(docs)["spec"]["rayClusterSpec"]]
    clusters += [c["spec"]["jobTemplate"]["rayClusterSpec"] for c in find(docs, "RayCronJob")]
    assert {c["rayVersion"] for c in clusters} == {pins["ray"]}
    for where, container in [c for d in all_workloads(docs) for c in containers(d)]:
        if container["name"] != "postgres":
            assert container["image"] == image, where


@pytest.mark.parametrize("variant", VARIANTS)
def test_telemetry_is_off_in_every_container(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    docs = rendered[variant]
    for where, container in [c for d in all_workloads(docs) for c in containers(d)]:
        env = _effective_env(docs, container)
        assert {k: env.get(k) for k in TELEMETRY_OFF} == TELEMETRY_OFF, where
    # The same values as the local platform's (core.runtime.ray_env) wherever both set one.
    data = one(docs, "ConfigMap", "bastion-env")["data"]
    local = ray_env()
    assert {k: v for k, v in data.items() if k in local} == {k: local[k] for k in data
                                                             if k in local}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_referenced_secret_and_configmap_exists_with_its_keys(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    docs = rendered[variant]
    held = {(d["kind"], d["metadata"]["name"]): set(d.get("data", {})) for d in docs
            if d["kind"] in ("Secret", "ConfigMap")}
    for where, ref in _references(all_workloads(docs)):
        kind, name, key = ref
        assert (kind, name) in held, f"{where}: {kind} {name} is not in the overlay"
        assert key is None or key in held[(kind, name)], f"{where}: {kind} {name} lacks {key}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_credentials_come_only_from_secrets(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    for where, container in [c for d in all_workloads(rendered[variant]) for c in containers(d)]:
        for var in container.get("env", []):
            secretish = any(w in var["name"] for w in ("PASSWORD", "SECRET", "TOKEN", "KEY"))
            assert not (secretish and "value" in var), f"{where}: {var['name']} is inlined"
            if "value" in var and "://" in var["value"] and "@" in var["value"]:
                # A URI with credentials may only compose them from Secret-backed variables.
                userinfo = var["value"].split("://", 1)[1].split("@", 1)[0]
                assert userinfo == "$(POSTGRES_USER):$(POSTGRES_PASSWORD)", where


def test_no_secret_is_committed_and_secret_sources_are_git_ignored() -> None:
    for file in K8S.rglob("*.yaml"):
        if "secrets" in file.parts:
            continue
        kinds = {d.get("kind") for d in yaml.safe_load_all(file.read_text())
                 if isinstance(d, dict)}
        assert "Secret" not in kinds, f"{file}: a Secret in a committed manifest"
    ignore = [line for line in (K8S / ".gitignore").read_text().splitlines()
              if line and not line.startswith("#")]
    for overlay in (K8S / "overlays").iterdir():
        k = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        for gen in k.get("secretGenerator", []):
            assert "literals" not in gen, f"{overlay}: secret values inlined as literals"
            for source in gen.get("envs", []) + [f.rpartition("=")[2] for f in gen.get(
                    "files", [])]:
                rel = (overlay / source).relative_to(K8S).as_posix()
                assert _ignored(rel, ignore), f"k8s/{rel} is not git-ignored"
                assert not _ignored(rel + ".example", ignore)
                assert (overlay / (source + ".example")).is_file(), f"no {rel}.example"


@pytest.mark.parametrize("variant", VARIANTS)
def test_retraining_runs_the_one_rayjob_definition(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    docs = rendered[variant]
    rayjob = embedded_rayjob(docs)
    assert rayjob["spec"]["entrypoint"].startswith("bastion retrain --state-dir ")
    cronjobs, raycronjobs = find(docs, "CronJob"), find(docs, "RayCronJob")
    if variant.endswith("raycronjob"):
        assert not cronjobs and len(raycronjobs) == 1
        assert raycronjobs[0]["spec"]["jobTemplate"] == rayjob["spec"]
        cron_file = yaml.safe_load(
            (K8S / "components/retrain-cronjob/cronjob.retrain.yaml").read_text())
        assert raycronjobs[0]["spec"]["schedule"] == cron_file["spec"]["schedule"]
        return
    assert not raycronjobs and len(cronjobs) == 1
    cron = cronjobs[0]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    mount = pod["containers"][0]["volumeMounts"][0]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "bastion-retrain"
    assert pod["containers"][0]["command"] == ["bash", f"{mount['mountPath']}/trigger.sh"]
    # The trigger's ServiceAccount may create and follow RayJobs, nothing more.
    assert one(docs, "ServiceAccount", pod["serviceAccountName"])
    binding = one(docs, "RoleBinding", "bastion-retrain-trigger")
    # kustomize's `namespace:` also sets the namespace of a ServiceAccount subject.
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                    "namespace": binding["metadata"]["namespace"]}]
    role = one(docs, "Role", binding["roleRef"]["name"])
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"],
                              "verbs": ["create", "get", "list"]}]


def test_trigger_script_creates_the_rayjob_beside_it(rendered: dict[str, list[Resource]]) -> None:
    data = one(rendered["dev"], "ConfigMap", "bastion-retrain")["data"]
    script = data["trigger.sh"]
    assert script.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in script
    assert 'kubectl create -f "$here/rayjob.yaml"' in script and "rayjob.yaml" in data
    bash = shutil.which("bash")
    if bash:  # syntax only; nothing runs
        subprocess.run([bash, "-n", "-c", script], check=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_bastion_container_gets_the_database_url_from_a_secret(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    docs = rendered[variant]
    found = _bastion_containers(docs)
    kinds = {where.split("/")[0] for where, _ in found}
    expected = {"RayService", "RayJob", "RayCronJob" if variant.endswith("raycronjob")
                else "CronJob"}
    assert expected <= kinds, kinds
    secrets = {d["metadata"]["name"]: d for d in find(docs, "Secret")}
    for where, container in found:
        [var] = [v for v in container.get("env", []) if v["name"] == "BASTION_DATABASE_URL"]
        ref = var["valueFrom"]["secretKeyRef"]
        assert "value" not in var and ref["key"] in secrets[ref["name"]]["data"], where
        assert not ref.get("optional"), where
    # The one setting replaced the review queue's own: no container sets the old one.
    for where, container in [c for d in all_workloads(docs) for c in containers(d)]:
        assert "BASTION_REVIEW_DB_URL" not in _env_names(docs, container), where
        assert "BASTION_DATABASE_URL" not in _effective_env(docs, container), (
            f"{where}: BASTION_DATABASE_URL inlined or from a ConfigMap")


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_serving_cluster_migrates_the_database_before_it_serves(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    rayservice = one(rendered[overlay], "RayService", "bastion")
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    [init] = head["initContainers"]
    assert init["command"] == ["bastion", "db", "upgrade"]
    assert init["image"] == head["containers"][0]["image"]
    assert [v["name"] for v in init["env"]] == ["BASTION_DATABASE_URL"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_ray_pods_reach_mlflow_and_only_they_and_mlflow_reach_postgres(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    docs = rendered[variant]
    templates = {(d["kind"], i): t for d in all_workloads(docs)
                 for i, t in enumerate(pod_templates(d))}

    def allowed(policy: Resource) -> list[tuple[str, int]]:
        peers = [p["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"]
                 for p in rule["from"]]
        return sorted(k for k, t in templates.items() if any(_matches(sel, t) for sel in peers))

    mlflow_policy = one(docs, "NetworkPolicy", "mlflow")
    assert _matches(mlflow_policy["spec"]["podSelector"]["matchLabels"],
                    one(docs, "Deployment", "mlflow")["spec"]["template"])
    ray_templates = sorted(k for k in templates if k[0].startswith("Ray"))
    assert allowed(mlflow_policy) == ray_templates and ray_templates
    postgres = find(docs, "StatefulSet", "postgres")
    if variant.startswith("dev"):
        policy = one(docs, "NetworkPolicy", "postgres")
        assert _matches(policy["spec"]["podSelector"]["matchLabels"],
                        postgres[0]["spec"]["template"])
        assert allowed(policy) == sorted([("Deployment", 0), *ray_templates])
    else:
        assert not postgres and not find(docs, "NetworkPolicy", "postgres")


OPERATOR = {"app.kubernetes.io/name": "kuberay-operator"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_ray_control_planes_are_reachable_only_from_the_platforms_own_pods(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    docs = rendered[variant]
    clusters = {"bastion-serve": [one(docs, "RayService", "bastion")],
                "bastion-retrain": [embedded_rayjob(docs), *find(docs, "RayCronJob")]}
    for app, workloads in clusters.items():
        policy = one(docs, "NetworkPolicy", app)["spec"]
        assert policy["policyTypes"] == ["Ingress"]
        templates = [t for w in workloads for t in pod_templates(w)]
        assert templates and all(_matches(policy["podSelector"]["matchLabels"], t)
                                 for t in templates), app
        # no other workload's pods are selected: another app's rules never open these pods
        for d in all_workloads(docs):
            if d not in workloads:
                assert not any(_matches(policy["podSelector"]["matchLabels"], t)
                               for t in pod_templates(d)), (app, d["kind"])
        open_ports: set[int] = set()
        for rule in policy["ingress"]:
            ports = {p["port"] for p in rule.get("ports", [])}
            if "from" not in rule:  # anyone: only Serve's HTTP port, only on the serving pods
                open_ports |= ports
                continue
            for peer in rule["from"]:
                selector = peer["podSelector"]["matchLabels"]
                if selector == OPERATOR:  # the KubeRay operator: the dashboard only
                    assert ports == {8265} and peer["namespaceSelector"] == {}, app
                else:  # the cluster's own pods: every port (GCS, raylet, object store...)
                    assert selector == {"app.kubernetes.io/name": app} and "namespaceSelector" \
                        not in peer, (app, peer)
        assert open_ports == ({8000} if app == "bastion-serve" else set()), app
    # the retraining submitter (it submits the job) is one of the retraining pods
    submitter = embedded_rayjob(docs)["spec"]["submitterPodTemplate"]
    assert _matches({"app.kubernetes.io/name": "bastion-retrain"}, submitter)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_ray_cluster_needs_rays_token_and_every_client_sends_it(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    docs = rendered[variant]
    secrets = {d["metadata"]["name"]: d for d in find(docs, "Secret")}
    clusters = [("RayService", one(docs, "RayService", "bastion")["spec"]["rayClusterConfig"]),
                ("RayJob", embedded_rayjob(docs)["spec"]["rayClusterSpec"])]
    clusters += [("RayCronJob", c["spec"]["jobTemplate"]["rayClusterSpec"])
                 for c in find(docs, "RayCronJob")]
    names = set()
    for where, cluster in clusters:
        auth = cluster["authOptions"]
        assert auth["mode"] == "token", where
        assert "auth_token" in secrets[auth["secretName"]]["data"], where
        names.add(auth["secretName"])
    assert names == {"bastion-ray-auth"}
    # `ray job submit` runs outside the Ray containers: it is given the token itself
    jobs = [embedded_rayjob(docs)["spec"]] + [c["spec"]["jobTemplate"]
                                             for c in find(docs, "RayCronJob")]
    for job in jobs:
        [sub] = job["submitterPodTemplate"]["spec"]["containers"]
        env = {v["name"]: v for v in sub["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "bastion-ray-auth", "key": "auth_token"}
    # nothing turns it off again
    for where, container in [c for d in all_workloads(docs) for c in containers(d)]:
        assert _effective_env(docs, container).get("RAY_AUTH_MODE") in (None, "token"), where


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_ray_container_gets_the_text_digest_key_from_a_secret(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    docs = rendered[variant]
    secrets = {d["metadata"]["name"]: d for d in find(docs, "Secret")}
    found = [(w, c) for w, c in _bastion_containers(docs)
             if w.startswith(("RayService", "RayJob", "RayCronJob")) and "db-upgrade" not in w]
    assert found
    for where, container in found:
        [var] = [v for v in container.get("env", []) if v["name"] == "BASTION_TEXT_HMAC_KEY"]
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]]["data"], where


def test_dev_is_small_with_one_worker(rendered: dict[str, list[Resource]]) -> None:
    cluster = one(rendered["dev"], "RayService", "bastion")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is False
    [group] = cluster["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 1


def test_prod_sizes_every_container_autoscales_and_has_disruption_budgets(
    rendered: dict[str, list[Resource]]
) -> None:
    docs = rendered["prod"]
    for where, container in [c for d in all_workloads(docs) for c in containers(d)]:
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) >= {"cpu", "memory"}, where
    cluster = one(docs, "RayService", "bastion")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["envFrom"] == [{"configMapRef": {"name": "bastion-env"}}]
    [group] = cluster["workerGroupSpecs"]
    assert 2 <= group["minReplicas"] <= group["replicas"] < group["maxReplicas"]
    assert one(docs, "Deployment", "mlflow")["spec"]["replicas"] >= 2
    templates = [t for d in find(docs, "RayService") + find(docs, "Deployment")
                 for t in pod_templates(d)]
    for pdb in find(docs, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(_matches(selector, t) for t in templates), pdb["metadata"]["name"]
    assert all(any(_matches(p["spec"]["selector"]["matchLabels"], t)
                   for p in find(docs, "PodDisruptionBudget")) for t in templates)


def _effective_env(docs: list[Resource], container: Resource) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({v["name"]: v["value"] for v in container.get("env", []) if "value" in v})
    return env


def _bastion_containers(docs: list[Resource]) -> list[tuple[str, Resource]]:
    """Containers that run Bastion: the Bastion image, except the MLflow server's."""
    return [(where, c) for d in all_workloads(docs) for where, c in containers(d)
            if c["image"].startswith("bastion:") and not where.startswith("Deployment/mlflow")]


def _env_names(docs: list[Resource], container: Resource) -> set[str]:
    names = {v["name"] for v in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            names |= set(one(docs, "Secret", source["secretRef"]["name"])["data"])
    return names


def _references(workloads: list[Resource]) -> list[tuple[str, tuple[str, str, str | None]]]:
    found: list[tuple[str, tuple[str, str, str | None]]] = []
    for doc in workloads:
        for where, pod in pod_specs(doc):
            for volume in pod.get("volumes", []):
                if "secret" in volume:
                    found.append((where, ("Secret", volume["secret"]["secretName"], None)))
                if "configMap" in volume:
                    found.append((where, ("ConfigMap", volume["configMap"]["name"], None)))
        for where, container in containers(doc):
            for source in container.get("envFrom", []):
                for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if field in source:
                        found.append((where, (kind, source[field]["name"], None)))
            for var in container.get("env", []):
                for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    ref: dict[str, Any] = var.get("valueFrom", {}).get(field)
                    if ref:
                        found.append((where, (kind, ref["name"], ref["key"])))
    return found


def _matches(selector: dict[str, str], template: Resource) -> bool:
    labels = template.get("metadata", {}).get("labels", {})
    return all(labels.get(k) == v for k, v in selector.items())


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if fnmatch.fnmatch(path, pattern.lstrip("!")):
            ignored = not negate
    return ignored
