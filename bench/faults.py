"""Faults survived (issue 14), each under load (concurrent clients, real texts):

1. ``scorer_kill``: SIGKILL of a Scorer replica mid-load;
2. ``ingress_kill``: SIGKILL of an Ingress replica mid-load;
3. ``store_outage``: the database unreachable for a while (a TCP relay in front of PostgreSQL
   cut and restored): what ``/readyz`` says during it, and whether the log recovers;
4. ``restart``: ``bastion up`` stopped with SIGTERM under load and started again.

Per scenario: requests, status code counts, failures, p50/p99, and the event log checked
against the answers (every item answered 2xx must be in the log). Run:
``.venv/bin/python bench/faults.py [--scale 0.2] [--only scorer_kill,...]``.
Writes bench/results/faults.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion.core.runtime import ray_env  # noqa: E402

for _k, _v in ray_env().items():
    os.environ.setdefault(_k, _v)

import httpx  # noqa: E402
from sqlalchemy import create_engine, make_url, text  # noqa: E402

from bastion.core.events import EventLog  # noqa: E402
from bastion.core.settings import Settings, load_settings  # noqa: E402
from bench._faults import Load, TcpRelay, kill_replica, readyz  # noqa: E402
from bench._traffic import machine, real_texts, write_results  # noqa: E402

POSTGRES = os.environ.get("BASTION_TEST_POSTGRES_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SCENARIOS = ("scorer_kill", "ingress_kill", "store_outage", "restart")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(cond: Any, timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while True:
        try:
            if cond():
                return time.monotonic() - t0
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            pass
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.25)


def ready(base: str) -> bool:
    return readyz(base)[0] == 200


def logged_check(url: str, result: Any, tenant: str, prefix: str) -> dict[str, Any]:
    """Every item answered 2xx against the event log (waits for the writers to drain)."""
    answered = {i for t, i in result.answered_2xx_items if t == tenant}
    log = EventLog(url)
    try:
        def in_log() -> set[str]:
            return {e.item_id for e in log.read(tenant=tenant) if e.item_id.startswith(prefix)}
        try:
            wait(lambda: answered <= in_log(), 60, "answered items in the event log")
        except RuntimeError:
            pass
        got = in_log()
    finally:
        log.close()
    missing = sorted(answered - got)
    return {"answered_2xx_items": len(answered), "logged_of_those": len(answered & got),
            "logged_total": len(got), "answered_but_not_logged": len(missing),
            "missing_examples": missing[:5]}


def postgres_schema() -> tuple[str, str] | None:
    """A fresh schema on the local PostgreSQL (URL direct, and its host:port), or None."""
    from bastion.core.store.schema import upgrade_url

    server = make_url(POSTGRES)
    engine = create_engine(server, connect_args={"connect_timeout": 2})
    schema = f"bastion_faults_{os.getpid()}"
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    except Exception as err:  # noqa: BLE001 - no server: the store outage is skipped
        print(f"  no PostgreSQL at {server.host}:{server.port}: {type(err).__name__}")
        return None
    finally:
        engine.dispose()
    url = server.update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    upgrade_url(rendered)
    return rendered, schema


def drop_schema(schema: str) -> None:
    engine = create_engine(make_url(POSTGRES))
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def kill_scenario(base: str, key: str, texts: list[str], db_url: str, deployment: str,
                  n: int, concurrency: int) -> dict[str, Any]:
    prefix = f"{deployment}-kill-{time.time_ns()}"
    load = Load(base, "demo", key, texts, concurrency=concurrency, prefix=prefix).start()
    load.wait_requests(n // 3)
    before = readyz(base)[1]
    pid = kill_replica(base, deployment)
    killed_at = time.monotonic()
    load.wait_requests(load.result.requests + n // 3)
    wait(lambda: ready(base) and readyz(base)[1][deployment]["pid"] != pid, 300,
         f"{deployment} replaced")
    recovered = time.monotonic() - killed_at
    load.wait_requests(n)
    result = load.stop()
    after = readyz(base)[1]
    return {"killed_pid": pid, "replicas_before": _replicas(before),
            "ready_again_after_s": round(recovered, 1), **result.summary(),
            "events": logged_check(db_url, result, "demo", prefix),
            "ready_after": after.get("ready")}


def _replicas(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body.get(k, {}).get("replica_id") for k in ("ingress", "scorer")}


def store_outage(base: str, key: str, texts: list[str], db_url: str, relay: TcpRelay,
                 n: int, concurrency: int, outage_s: float) -> dict[str, Any]:
    prefix = f"outage-{time.time_ns()}"
    load = Load(base, "demo", key, texts, concurrency=concurrency, prefix=prefix).start()
    load.wait_requests(n // 3)
    relay.cut()
    t0 = time.monotonic()
    during: list[dict[str, Any]] = []
    while time.monotonic() - t0 < outage_s:
        status, body = readyz(base)
        during.append({"t_s": round(time.monotonic() - t0, 1), "status": status,
                       "why": body.get("stores", {}).get("not_ready_because")})
        time.sleep(max(outage_s / 6, 0.5))
    relay.restore()
    back = wait(lambda: ready(base), 120, "ready after the store came back")
    load.wait_requests(load.result.requests + n // 3)
    result = load.stop()
    return {"outage_s": outage_s, "readyz_during": during,
            "ready_again_after_s": round(back, 1), **result.summary(),
            "events": logged_check(db_url, result, "demo", prefix)}


def restart(state: Path, texts: list[str], n: int, concurrency: int) -> dict[str, Any]:
    """``bastion up`` in a subprocess, SIGTERM under load, started again."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BASTION_STATE_DIR": str(state)}
    cmd = [str(Path(sys.executable).parent / "bastion"), "up", "--port", str(port)]

    def up() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait(lambda: ready(base), 600, "bastion up ready")
        return proc

    proc = up()
    keys = json.loads((state / "tenant_keys.json").read_text())
    prefix = f"restart-{time.time_ns()}"
    load = Load(base, "demo", keys["demo"], texts, concurrency=concurrency, prefix=prefix,
                timeout_s=30).start()
    load.wait_requests(n // 2)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(300)
    stopped_s = time.monotonic() - t0
    proc = up()
    down_s = time.monotonic() - t0
    load.wait_requests(load.result.requests + n // 2)
    result = load.stop()
    settings = load_settings(state)
    try:
        check = logged_check(settings.database_url, result, "demo", prefix)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(300)
    return {"shutdown_s": round(stopped_s, 1), "unavailable_s": round(down_s, 1),
            **result.summary(), "events": check}


def serve_platform(settings: Settings) -> tuple[str, str, Any]:
    from bastion.core.keys import ensure_keys
    from bastion.core.policy import ensure_policy_file, load_policy
    from bastion.core.runtime import start_ray
    from bastion.platform import deploy
    from bastion.training.starter import register_starter

    policy = load_policy(ensure_policy_file(settings))
    register_starter(settings, policy)
    dashboard = start_ray(settings)
    keys, _ = ensure_keys(settings.keys_file, policy.tenants)
    deploy(settings, policy, keys, dashboard)
    return f"http://127.0.0.1:{settings.port}", keys["demo"], dashboard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="Multiply request counts.")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--outage-s", type=float, default=20.0)
    ap.add_argument("--only", default=",".join(SCENARIOS))
    ap.add_argument("--out", default=str(ROOT / "bench/results/faults.json"))
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    n = max(int(600 * args.scale), 30)
    texts, source = real_texts(2000)
    results: dict[str, Any] = {
        "benchmark": "faults", "machine": machine(), "traffic": source,
        "concurrency": args.concurrency, "requests_per_scenario": n,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "scenarios": {}}
    from bastion.core.runtime import stop_ray

    pg = postgres_schema() if {"scorer_kill", "ingress_kill", "store_outage"} & set(only) \
        else None
    relay = None
    with tempfile.TemporaryDirectory(prefix="bastion-faults-") as tmp:
        state = Path(tmp) / "state"
        try:
            if {"scorer_kill", "ingress_kill", "store_outage"} & set(only):
                over: dict[str, Any] = {"port": free_port()}
                if pg is not None:
                    direct = make_url(pg[0])
                    relay = TcpRelay((direct.host or "127.0.0.1", direct.port or 5432))
                    over["database_url"] = direct.set(
                        host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
                settings = load_settings(state, **over)
                db_url = pg[0] if pg is not None else settings.database_url
                print(f"serving (database {'PostgreSQL via a relay' if pg else 'SQLite'}) ...",
                      flush=True)
                base, key, _ = serve_platform(settings)
                results["serving"] = {k: v for k, v in settings.serving.model_dump().items()
                                      if k.endswith("replicas")}
                for dep in ("scorer", "ingress"):
                    if f"{dep}_kill" in only:
                        print(f"{dep}_kill ...", flush=True)
                        results["scenarios"][f"{dep}_kill"] = kill_scenario(
                            base, key, texts, db_url, dep, n, args.concurrency)
                        print(json.dumps(results["scenarios"][f"{dep}_kill"]), flush=True)
                if "store_outage" in only:
                    if relay is None:
                        results["scenarios"]["store_outage"] = {
                            "skipped": "no PostgreSQL on 127.0.0.1:5432 to cut off"}
                    else:
                        print("store_outage ...", flush=True)
                        results["scenarios"]["store_outage"] = store_outage(
                            base, key, texts, db_url, relay, n, args.concurrency,
                            args.outage_s)
                        print(json.dumps(results["scenarios"]["store_outage"]), flush=True)
                stop_ray()
            if "restart" in only:
                print("restart ...", flush=True)
                results["scenarios"]["restart"] = restart(Path(tmp) / "restart", texts, n,
                                                          args.concurrency)
                print(json.dumps(results["scenarios"]["restart"]), flush=True)
        finally:
            stop_ray()
            if relay is not None:
                relay.close()
            if pg is not None:
                drop_schema(pg[1])
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_results(args.out, results)
    print(json.dumps({k: {m: v.get(m) for m in ("requests", "failures", "status_codes")}
                      for k, v in results["scenarios"].items()}, indent=2))


if __name__ == "__main__":
    main()
