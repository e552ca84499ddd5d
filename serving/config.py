"""The Serve config of the application: one text for ``bastion up``, the tests and KubeRay.

It is what ``serve build`` writes for ``serving.app:build_app``: ``args`` hold only what does
not change while running (a change there is a code change and restarts replicas), while the
policy and the tenant key hashes go into the Ingress's ``user_config`` (a change there is a
lightweight update: ``reconfigure`` on the running replicas). It is submitted the way
``serve deploy`` and the KubeRay operator submit it: to the dashboard's REST API.
"""

from __future__ import annotations

import time
from typing import Any

from ray.dashboard.modules.serve.sdk import ServeSubmissionClient
from ray.serve.schema import ServeDeploySchema

from bastion.core.errors import BastionError
from bastion.core.keys import key_hashes, reviewer_hashes
from bastion.core.policy import PolicySet
from bastion.core.runtime import dashboard_http
from bastion.core.settings import Settings
from bastion.core.store import default_database_url
from bastion.serving.app import APP_NAME, AppArgs

__all__ = ["serve_config", "deploy_config", "wait_until_running", "IMPORT_PATH"]

IMPORT_PATH = "bastion.serving.app:build_app"


def serve_config(
    settings: Settings,
    policy: PolicySet,
    keys: dict[str, str],
    model_version: str | None = None,
    keys_file: str | None = None,
    reviewers: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``ServeDeploySchema`` document (validated) for this platform.

    With ``keys_file`` (a path inside the replicas, e.g. a mounted Secret) the tenant keys
    stay out of the config; otherwise their SHA-256 digests go into the Ingress's user_config.
    """
    args = AppArgs(
        state_dir=str(settings.state_dir),
        tracking_uri=settings.tracking_uri,
        model_name=settings.model_name,
        limits=settings.limits,
        serving=settings.serving,
        keys_file=keys_file,
        # only a URL other than the state directory's default: pods get theirs from the
        # environment (BASTION_DATABASE_URL), and a default would pin this machine's path
        database_url=(None if settings.database_url == default_database_url(settings.state_dir)
                      else settings.database_url),
    ).model_dump(mode="json")
    ingress_config: dict[str, Any] = {
        "policy": policy.model_dump(mode="json", exclude_none=True),
        # each replica enforces 1/N of a tenant's fair-use limits (serving.fairuse)
        "ingress_replicas": settings.serving.ingress_replicas}
    if settings.policy_file is not None:  # the console's jobs edit and gate on this file
        ingress_config["policy_file"] = str(settings.resolved_policy_file)
    if reviewers:
        ingress_config["reviewer_hashes"] = reviewer_hashes(reviewers)
    if keys_file is None:
        ingress_config["key_hashes"] = key_hashes(
            {t: k for t, k in keys.items() if t in policy.tenants})
    doc: dict[str, Any] = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": settings.host, "port": settings.port},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": IMPORT_PATH,
            "args": args,
            "deployments": [
                {"name": "Ingress", "user_config": ingress_config},
                {"name": "Scorer", "user_config": {"model_version": model_version}},
            ],
        }],
    }
    ServeDeploySchema.model_validate(doc)
    return doc


def deploy_config(config: dict[str, Any], dashboard_url: str) -> None:
    """Submit a Serve config to a running cluster (what ``serve deploy`` does)."""
    ServeSubmissionClient(dashboard_http(dashboard_url)).deploy_applications(config)


def wait_until_running(
    dashboard_url: str, timeout_s: float = 300.0, since: float | None = None
) -> dict[str, Any]:
    """Block until the application is RUNNING with every deployment HEALTHY."""
    client = ServeSubmissionClient(dashboard_http(dashboard_url))
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        details = client.get_serve_details()
        app = details.get("applications", {}).get(APP_NAME)
        if app:
            last = app
            fresh = since is None or (app.get("last_deployed_time_s") or 0) >= since - 1
            deps = app.get("deployments", {})
            healthy = deps and all(d.get("status") == "HEALTHY" for d in deps.values())
            if fresh and app.get("status") == "RUNNING" and healthy:
                return app
            if app.get("status") == "DEPLOY_FAILED":
                raise BastionError(f"Serve could not deploy {APP_NAME}: {app.get('message')}")
        time.sleep(0.5)
    raise BastionError(
        f"Serve application {APP_NAME} not running after {timeout_s:.0f}s; last status: "
        f"{last.get('status')} {last.get('message', '')}"
    )
