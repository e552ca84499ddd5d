"""Bastion's Ray jobs: ``bastion`` commands submitted through the Ray Jobs API to the cluster that
serves (``bastion up``'s local one, or the RayService's head on Kubernetes).

A drift trigger submits ``bastion retrain`` (:mod:`bastion.drift.triggers`); the console's
promote button submits ``bastion promote`` and its new-category form ``bastion category add``
(:mod:`bastion.review.console_models`), so a promotion from the browser runs the same gate, on
the same held-out data, as one from the CLI.
Each job carries ``{"bastion": <kind>}`` in its metadata: that is how Bastion finds its own jobs
among the cluster's (dedupe, and the console's list of job states).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bastion.core.runtime import dashboard_http, process_ray_env
from bastion.core.settings import Settings

__all__ = [
    "ACTIVE",
    "JOB_KINDS",
    "bastion_command",
    "jobs_client",
    "job_env",
    "job_rows",
    "active_jobs",
    "submit",
]

#: The kinds of job Bastion submits (the value of the ``bastion`` metadata key).
JOB_KINDS = ("retrain", "promote", "category")
ACTIVE = {"PENDING", "RUNNING"}


def bastion_command(settings: Settings, command: str, *args: str) -> str:
    """``bastion <command> --state-dir <dir> <args>`` from the same installation as the
    running platform: the entry point a job's driver runs."""
    exe = Path(sys.executable).with_name("bastion")
    cmd = str(exe) if exe.exists() else (shutil.which("bastion") or "bastion")
    return shlex.join([cmd, command, "--state-dir", str(settings.state_dir), *args])


def job_env() -> dict[str, str]:
    """Settings the job's driver must see as the platform does (endpoints and locations)."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith("BASTION_") or k in ("MLFLOW_TRACKING_URI",)}
    return {**process_ray_env(), **env}


def _policy_env(settings: Settings) -> dict[str, str]:
    """The platform's policy file, where it is not the state directory's default (``bastion
    up --policy FILE``): a job gates on, and edits, the file the platform serves."""
    if settings.policy_file is None:
        return {}
    return {"BASTION_POLICY_FILE": str(settings.resolved_policy_file)}


def jobs_client(dashboard_url: str | None = None) -> Any:
    """A Ray Jobs client for ``dashboard_url``, or, inside a Ray worker (a Serve replica), for
    the dashboard of the cluster it runs in."""
    from ray.job_submission import JobSubmissionClient  # start-up time: Ray (seconds)

    if dashboard_url is None:
        import ray

        if not ray.is_initialized():
            raise RuntimeError("no Ray cluster to submit jobs to: pass its dashboard address")
        dashboard_url = str(ray._private.worker.get_dashboard_url())
    return JobSubmissionClient(dashboard_http(dashboard_url))


def _kind(job: Any) -> str | None:
    kind = (job.metadata or {}).get("bastion")
    return kind if kind in JOB_KINDS else None


def active_jobs(client: Any, kind: str) -> list[str]:
    """The ids of ``kind`` jobs still pending or running."""
    return [job.submission_id or job.job_id or "?" for job in client.list_jobs()
            if _kind(job) == kind and str(job.status) in ACTIVE]


def job_rows(client: Any, limit: int = 50) -> list[dict[str, Any]]:
    """Bastion's jobs on the cluster, newest first: kind, state, times, who and why."""
    out = []
    for job in client.list_jobs():
        kind = _kind(job)
        if kind is None:
            continue
        meta = dict(job.metadata or {})
        out.append({"job_id": job.submission_id or job.job_id, "kind": kind,
                    "status": str(job.status), "message": job.message,
                    "start_time": (job.start_time or 0) / 1000 or None,
                    "end_time": (job.end_time or 0) / 1000 or None,
                    **{k: meta[k] for k in ("rule", "version", "category", "actor", "reason")
                       if k in meta}})
    out.sort(key=lambda r: r["start_time"] or 0, reverse=True)
    return out[:limit]


def submit(client: Any, settings: Settings, kind: str, command: str, *args: str,
           metadata: dict[str, str] | None = None, now: float | None = None) -> str:
    """Submit ``bastion <command> <args>`` as a ``kind`` job; returns its submission id."""
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() if now is None else now))
    job_id: str = client.submit_job(
        entrypoint=bastion_command(settings, command, *args),
        submission_id=f"bastion-{kind}-{stamp}-{uuid.uuid4().hex[:6]}",
        runtime_env={"env_vars": {**job_env(), **_policy_env(settings)}},
        metadata={"bastion": kind, **(metadata or {})},
    )
    return job_id
