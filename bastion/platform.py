"""``bastion up``: prepare the state directory, bring the database's schema to head, train the
starter model if the registry is empty, start local Ray and the Serve application,
hot-reload the policy file, and run the drift monitor and the retention purge."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.core.decision import ResolvedTenant, fit_problems, resolve_policy
from bastion.core.errors import ConfigError, PolicyError, RegistryEmptyError
from bastion.core.keys import ensure_keys, load_reviewers, reviewers_path
from bastion.core.model import ModelMetadata
from bastion.core.policy import PolicySet, ensure_policy_file, load_policy
from bastion.core.retention import PurgeReport, purge
from bastion.core.runtime import start_ray, stop_ray
from bastion.core.settings import Settings
from bastion.core.store import display_url
from bastion.core.store.engine import open_engine
from bastion.core.store.legacy import import_legacy, legacy_files, summary
from bastion.core.store.schema import upgrade_url
from bastion.drift.check import monitor_pass
from bastion.registry.aliases import MULTILINGUAL
from bastion.registry.store import CHAMPION, ModelRegistry
from bastion.serving.config import deploy_config, serve_config, wait_until_running
from bastion.training.reference import ensure_reference
from bastion.training.starter import (
    MULTILINGUAL_DIR,
    register_starter,
    shipped_starter,
    train_starter,
)

__all__ = [
    "champion_metadata",
    "announce_keys",
    "check_policy",
    "deploy",
    "reload_policy",
    "run_platform",
    "DriftSchedule",
    "RetentionSchedule",
]

Say = Callable[[str], None]


def champion_metadata(settings: Settings) -> ModelMetadata:
    """Metadata of the @champion version (heads, held-out curves), from the local cache."""
    registry = ModelRegistry(settings)
    return registry.metadata(registry.by_alias(CHAMPION).version)


def check_policy(policy: PolicySet, meta: ModelMetadata) -> dict[str, ResolvedTenant]:
    """Resolve the policy against a model. Never raises for a category the model cannot
    serve as written: see :func:`core.decision.fit_problems` for what falls back."""
    return resolve_policy(policy, meta["heads"]["keys"], meta)


def say_fit(resolved: dict[str, ResolvedTenant], version: str, say: Say) -> None:
    """Tell the operator which categories run otherwise than the policy says, and why."""
    problems = fit_problems(resolved)
    if problems:
        say(f"Policy on model version {version}: {len(problems)} category(ies) served "
            "otherwise than written (see /readyz):")
        for line in problems:
            say(f"  - {line}")


def deploy(settings: Settings, policy: PolicySet, keys: dict[str, str],
           dashboard_url: str, model_version: str | None = None) -> None:
    """Deploy, or update in place, the Serve application from its config and wait for it.
    ``model_version`` pins the Scorer to a version instead of following @champion."""
    submitted = time.time()
    reviewers = load_reviewers(reviewers_path(settings.state_dir))
    deploy_config(serve_config(settings, policy, keys, model_version=model_version,
                               reviewers=reviewers), dashboard_url)
    wait_until_running(dashboard_url, since=submitted)


def reload_policy(settings: Settings, policy_path: Path, dashboard_url: str,
                  say: Say = print) -> PolicySet | None:
    """Apply an edited policy file to the running application (a ``user_config`` update: no
    replica restarts). An edit that does not validate, or does not fit the champion model, is
    reported and changes nothing; returns the applied policy, or None."""
    try:
        policy = load_policy(policy_path)
        meta = champion_metadata(settings)
        say_fit(check_policy(policy, meta), str(meta["version"]), say)
    except PolicyError as err:
        say(f"Policy edit rejected; the previous policy stays in force:\n{err}")
        return None
    keys, added = ensure_keys(settings.keys_file, policy.tenants)
    for t in added:
        say(f"New tenant {t!r} API key: {keys[t]}")
    deploy(settings, policy, keys, dashboard_url)
    say("Policy reloaded: " + ", ".join(
        f"{t}={policy.tenant_version(t)}" for t in sorted(policy.tenants)))
    return policy


def announce_keys(settings: Settings, policy: PolicySet, say: Say) -> dict[str, str]:
    """Give every tenant a key; print a key only in the start that created it (a terminal's
    scrollback or a service's log is no place to keep every key), the others by name with
    how to see them. Returns every tenant's key."""
    keys, added = ensure_keys(settings.keys_file, policy.tenants)
    for t in added:
        say(f"Tenant {t!r} API key (new, shown once): {keys[t]}")
    old = sorted(set(policy.tenants) - set(added))
    if old:
        say(f"Tenant key(s) of {', '.join(repr(t) for t in old)}: "
            f"see them with 'bastion keys TENANT --state-dir {settings.state_dir}'")
    say(f"Keys are kept in {settings.keys_file} (mode 0600)")
    return keys


class DriftSchedule(threading.Thread):
    """The drift monitor inside ``bastion up``: every ``drift.every_minutes`` of the policy in
    force (re-read each time, so edits apply), one :func:`bastion.drift.check.monitor_pass`
    over every tenant, whose trigger rules may submit a retraining job to this Ray cluster. A
    pass that fails is reported and retried at the next slot; it never stops the platform."""

    def __init__(self, settings: Settings, policy: Callable[[], PolicySet], dashboard_url: str,
                 say: Say, run_pass: Callable[..., Any] | None = None, tick_s: float = 5.0
                 ) -> None:
        super().__init__(name="drift-monitor", daemon=True)
        self._settings = settings
        self._policy = policy
        self._dashboard = dashboard_url
        self._say = say
        self._run_pass = run_pass
        self._tick_s = tick_s
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        last = time.monotonic()  # the first pass comes one interval after the start
        while not self._halt.wait(self._tick_s):
            every_s = self._policy().drift.every_minutes * 60.0
            if every_s <= 0 or time.monotonic() - last < every_s:
                continue
            last = time.monotonic()
            self.run_once()

    def run_once(self) -> None:
        run_pass = self._run_pass or monitor_pass

        def say(m: str) -> None:
            self._say(f"Drift monitor: {m}")

        try:
            run_pass(self._settings, self._policy(), dashboard_url=self._dashboard, say=say)
        except Exception as err:  # noqa: BLE001 - the platform keeps serving
            say(f"the check failed ({type(err).__name__}: {err}); retrying at the next slot")


class RetentionSchedule(threading.Thread):
    """The retention purge inside ``bastion up``: at start and then every ``every_s``, one
    :func:`bastion.core.retention.purge` with the policy in force (re-read each time, so an
    edited ``retention_days`` applies at the next pass). A pass that fails is reported and
    retried at the next one; it never stops the platform. Only a pass that removed something
    is reported."""

    def __init__(self, settings: Settings, policy: Callable[[], PolicySet], say: Say,
                 every_s: float = 3600.0, run_purge: Callable[..., PurgeReport] | None = None
                 ) -> None:
        super().__init__(name="retention-purge", daemon=True)
        self._settings = settings
        self._policy = policy
        self._say = say
        self._every_s = every_s
        self._run_purge = run_purge or purge
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while True:
            self.run_once()
            if self._halt.wait(self._every_s):
                return

    def run_once(self) -> PurgeReport | None:
        try:
            report = self._run_purge(self._settings.database_url, self._policy())
        except Exception as err:  # noqa: BLE001 - the platform keeps serving
            self._say(f"Retention purge failed ({type(err).__name__}: {err}); retrying in "
                      f"{self._every_s / 60:g} min")
            return None
        if report.total or report.cached_embeddings:
            self._say(report.summary())
        return report


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _register_starter(settings: Settings, say: Say, policy: PolicySet, **kw: Any) -> str:
    """The empty registry's first champion: the shipped starter heads (seconds), or, in a
    checkout without them, heads trained here from whatever labelled data this machine has."""
    t0 = time.perf_counter()
    if shipped_starter() is not None and not kw:
        say("The registry is empty: registering the shipped starter model.")
        version, model = register_starter(settings, policy)
    else:
        say("The registry is empty and this checkout ships no starter heads: training them "
            "here from the labelled data on this machine (minutes).")
        version, model = train_starter(settings, policy=policy, **kw)
    meta = model.metadata
    for key in meta.get("categories", []):
        m = meta.get("metrics", {}).get(key, {}).get("all", {})
        auroc = f"AUROC {m['auroc']:.3f} {m.get('auroc_ci')}" if "auroc" in m else "no AUROC"
        thin = meta.get("thin", {}).get(key)
        weak = meta.get("weak", {}).get(key)
        say(f"  {key:<11} held-out {auroc}, {m.get('n_pos', 0)} positives"
            + (f"  (thin: {thin})" if thin else "") + (f"  (weak: {weak})" if weak else ""))
    say(f"Registered {settings.model_name} version {version} as @champion "
        f"({time.perf_counter() - t0:.1f} s). 'bastion models show {version}' has the "
        "metrics per source.")
    return version


def _register_multilingual(settings: Settings, registry: ModelRegistry, say: Say,
                           policy: PolicySet) -> None:
    """The shipped multilingual starter as @multilingual, once: the languages routed to it
    (``serving.multilingual_languages``) are scored on its multilingual encoder."""
    if settings.serving.multilingual_replicas == 0 or shipped_starter(MULTILINGUAL_DIR) is None:
        return
    try:
        registry.by_alias(MULTILINGUAL)
        return
    except RegistryEmptyError:
        pass
    version, _ = register_starter(settings, policy, path=MULTILINGUAL_DIR, alias=MULTILINGUAL)
    say(f"Registered the multilingual starter (USE multilingual) as version {version} "
        f"@{MULTILINGUAL}: texts in other languages than English are scored on it.")


def run_platform(
    settings: Settings,
    say: Say = print,
    poll_s: float = 1.0,
    starter_kwargs: dict[str, Any] | None = None,
    stop_after_s: float | None = None,
) -> None:
    """Start everything and stay in the foreground until Ctrl-C (or SIGTERM)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if not _port_free(settings.host, settings.port):
        raise ConfigError(
            f"port {settings.port} on {settings.host} is in use; stop what holds it or pass "
            "--port PORT"
        )
    policy_path = ensure_policy_file(settings)
    policy = load_policy(policy_path)
    say(f"State directory: {settings.state_dir}")
    say(f"Policy file:     {policy_path} (edits apply live)")
    say(f"MLflow:          {settings.tracking_uri}")
    before, after = upgrade_url(settings.database_url)
    where = display_url(settings.database_url)
    say(f"Database:        {where} (schema {after}"
        + (f", upgraded from {before or 'empty'})" if before != after else ")"))
    if legacy_files(settings.state_dir):
        engine = open_engine(settings.database_url)
        try:
            imported = import_legacy(settings.state_dir, engine)
        finally:
            engine.dispose()
        say(f"{summary(imported)} (the files are renamed to *.imported)")

    registry = ModelRegistry(settings)
    if not registry.has_champion():
        _register_starter(settings, say, policy, **(starter_kwargs or {}))
    _register_multilingual(settings, registry, say, policy)
    meta = champion_metadata(settings)
    if ensure_reference(settings, registry, str(meta["version"])):
        say(f"Version {meta['version']} had no drift reference (registered before they were "
            "kept with the version): added one.")
    say_fit(check_policy(policy, meta), str(meta["version"]), say)
    keys = announce_keys(settings, policy, say)

    stopping = {"flag": False}

    def _stop(signum: int, _frame: Any) -> None:
        stopping["flag"] = True

    old_term = signal.signal(signal.SIGTERM, _stop)
    monitor: DriftSchedule | None = None
    retention: RetentionSchedule | None = None
    try:
        say("Starting Ray and the Serve application ...")
        dashboard_url = start_ray(settings)
        # ray.init installs its own SIGTERM handler (it logs and kills the driver, leaving
        # Ray's agents behind): ours must come after it, so SIGTERM shuts down in order.
        signal.signal(signal.SIGTERM, _stop)
        deploy(settings, policy, keys, dashboard_url)
        url = f"http://{settings.host}:{settings.port}"
        settings.server_file.write_text(json.dumps(
            {"url": url, "pid": os.getpid(), "started_at": time.time(),
             "dashboard": dashboard_url}))
        say(f"Bastion serves on {url}  (POST /v1/moderate, docs at {url}/docs). "
            f"Model version {meta['version']}. Ctrl-C stops.")
        rev_path = reviewers_path(settings.state_dir)

        def _mtime(p: Path) -> int:
            return p.stat().st_mtime_ns if p.exists() else 0

        current = {"policy": policy}
        monitor = DriftSchedule(settings, lambda: current["policy"], dashboard_url, say)
        monitor.start()
        retention = RetentionSchedule(settings, lambda: current["policy"], say)
        retention.start()
        every = policy.drift.every_minutes
        say(f"Drift monitor: every {every:g} min over the last {policy.drift.window_hours:g} h "
            "(policy 'drift' section)" if every > 0 else
            "Drift monitor: scheduled checks off (drift.every_minutes: 0); "
            "'bastion drift check' runs one")
        mtime, rev_mtime = policy_path.stat().st_mtime_ns, _mtime(rev_path)
        started = time.monotonic()
        while not stopping["flag"]:
            time.sleep(poll_s)
            if stop_after_s is not None and time.monotonic() - started > stop_after_s:
                break
            try:
                now = policy_path.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if now != mtime:
                mtime = now
                applied = reload_policy(settings, policy_path, dashboard_url, say)
                policy = applied or policy
                current["policy"] = policy
                rev_mtime = _mtime(rev_path)
            elif _mtime(rev_path) != rev_mtime:  # 'bastion review keys add' issued a key
                rev_mtime = _mtime(rev_path)
                keys, _ = ensure_keys(settings.keys_file, policy.tenants)
                deploy(settings, policy, keys, dashboard_url)
                say("Reviewer keys reloaded.")
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the clean shutdown short (and leave Ray running).
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if monitor is not None:
            monitor.stop()
            monitor.join(timeout=30)
        if retention is not None:
            retention.stop()
            retention.join(timeout=30)
        say("Shutting down Serve and Ray ...")
        settings.server_file.unlink(missing_ok=True)
        stop_ray()
        shutil.rmtree(settings.state_dir / "ray-home" / ".ray", ignore_errors=True)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        say("Stopped.")
