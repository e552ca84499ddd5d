"""Starting local Ray safely: no usage stats, no auth-token file in $HOME, no cloud probes.

Ray's dashboard probes cloud metadata (169.254.169.254) at start unless
``~/ray_bootstrap_config.yaml`` exists for the Ray processes' HOME. We give the Ray processes
a HOME of their own under the state directory holding that file (provider ``local``), so the
probe never runs and the user's real HOME is left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from bastion.core.settings import Settings

__all__ = ["dashboard_http", "process_ray_env", "ray_env", "start_ray", "stop_ray",
           "ray_temp_dir"]

_BOOTSTRAP = """\
# Written by Bastion. Its presence stops Ray's dashboard from probing cloud metadata
# endpoints to guess a provider: this is a local, manually started cluster.
cluster_name: bastion-local
provider:
  type: local
"""


def ray_env() -> dict[str, str]:
    """Environment every Ray process (and the driver) needs."""
    return {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        # Single-machine mode: Ray's processes address each other on 127.0.0.1 instead of the
        # machine's outward interface (the variable's name is historical; it gates this).
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # Ray Serve's documented throughput mode: replicas talk gRPC, request logs are
        # buffered, the router runs inline. Measured here: +40% at concurrency 1 and +15% at
        # 32 for single-item requests (docs/benchmarks.md).
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        # That mode's direct ingress drains an ingress replica for 30 s before stopping, for
        # external load balancers to notice; locally Serve's own proxy fronts it, and Ctrl-C
        # would wait those 30 s.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        # That mode's replica-to-replica gRPC caps a message at gRPC's default 4 MiB: an image
        # or clip past it (limits.max_image_bytes, max_audio_bytes) would fail between the
        # Ingress and the media deployments. 64 MiB is above every media limit's default.
        "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(64 * 1024 * 1024),
        # Serve's proxy answers 500 for a request whose Ingress replica died before answering;
        # this middleware sends it to a live replica instead (core/proxyreplay.py).
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "bastion.core.proxyreplay:proxy_middlewares",
        # Ray Train / Ray Data in a CLI: Bastion prints its own progress lines; Ray Data's
        # per-operator bars and Train's print patch (which echoes every line twice) are noise.
        "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DO_NOT_TRACK": "1",
    }


def process_ray_env() -> dict[str, str]:
    """:func:`ray_env` as this process applies it: a cluster that runs with Ray's token
    authentication (``RAY_AUTH_MODE=token``, set by KubeRay's ``authOptions`` in every Ray
    container) keeps it, so what Bastion starts there (``bastion retrain`` joining a RayJob's
    cluster, a job the drift trigger submits) sends the token. Elsewhere auth stays off: a
    local cluster binds 127.0.0.1 only."""
    env = ray_env()
    if os.environ.get("RAY_AUTH_MODE") == "token":
        env.pop("RAY_AUTH_MODE")
    return env


def dashboard_http(dashboard_url: str) -> str:
    """The dashboard address as the Serve and Jobs REST clients want it: ``ray.init`` gives
    ``host:port``; a bare address would be taken for a GCS address."""
    return dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"


def ray_temp_dir(state_dir: Path) -> str:
    """A short per-state-dir temp dir (Ray's socket paths must stay under ~107 bytes)."""
    tag = hashlib.sha1(str(state_dir).encode()).hexdigest()[:8]
    return os.path.join(tempfile.gettempdir(), f"bastion-ray-{os.getuid()}-{tag}")


@contextlib.contextmanager
def _home_for_ray(home: Path) -> Iterator[None]:
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old


@contextlib.contextmanager
def _sigint_ignored_in_children() -> Iterator[None]:
    """Ray's processes share the terminal's process group, so a Ctrl-C would interrupt the
    Serve controller and replicas while ``bastion up`` shuts them down in order (and the
    shutdown hangs). Processes inherit an ignored SIGINT, so ignore it while Ray starts: only
    the driver sees Ctrl-C, and it stops the rest."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def start_ray(settings: Settings, num_cpus: int | None = None) -> str:
    """Start (or join) the local Ray instance for this state directory; returns the
    dashboard address (where Serve configs and Ray jobs are submitted)."""
    os.environ.update(process_ray_env())
    # Ray loads here, not at import: bastion.cli imports this module to set Ray's environment
    # (ray_env) before anything imports Ray, which reads some of it at import time.
    import ray

    if ray.is_initialized():
        return str(ray._private.worker.get_dashboard_url())
    if os.environ.get("RAY_ADDRESS"):
        # Inside a Ray job (a KubeRay RayJob, or one submitted to 'bastion up's cluster):
        # join the cluster that runs it instead of starting one.
        ctx = ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING,
                       log_to_driver=True)
        return str(ctx.dashboard_url)
    home = settings.state_dir / "ray-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "ray_bootstrap_config.yaml").write_text(_BOOTSTRAP)
    # Logical CPUs: the Serve application reserves 2.5 (the Scorer 1, two Ingress replicas
    # 0.5 each, the two media deployments 0.25 each); at least 5 leave a retraining run's two
    # Ray Train workers (1 each) room beside it on a small machine.
    with _home_for_ray(home), _sigint_ignored_in_children():
        ctx = ray.init(
            num_cpus=num_cpus or max(os.cpu_count() or 1, 5),
            include_dashboard=True,
            _node_ip_address="127.0.0.1",  # all of Ray's own traffic stays on loopback
            dashboard_host="127.0.0.1",
            object_store_memory=512 * 1024 * 1024,
            _temp_dir=ray_temp_dir(settings.state_dir),
            logging_level=logging.WARNING,
            log_to_driver=True,
            configure_logging=True,
        )
    return str(ctx.dashboard_url)


def stop_ray(serve_timeout_s: float = 60.0, shutdown_serve: bool = True) -> None:
    """Shut Serve down (replicas drain and flush their event logs), then Ray. A Serve shutdown
    that does not finish in ``serve_timeout_s`` does not keep Ray running. A driver that only
    trains passes ``shutdown_serve=False``: joined to a cluster that serves, it must leave
    the Serve applications alone."""
    import ray  # see start_ray

    def _serve_shutdown() -> None:
        with contextlib.suppress(Exception):
            from ray import serve  # see start_ray

            serve.shutdown()

    if ray.is_initialized() and not shutdown_serve:
        ray.shutdown()
    elif ray.is_initialized():
        t = threading.Thread(target=_serve_shutdown, name="serve-shutdown", daemon=True)
        t.start()
        t.join(serve_timeout_s)
        ray.shutdown()
