"""The ``bastion`` command line. Commands are verbs; every one takes ``--state-dir``."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from bastion.core.errors import BastionError
from bastion.core.store.cli import db

__all__ = ["main", "cli"]

_state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="BASTION_STATE_DIR",
    default=None, help="Folder holding everything Bastion keeps (env BASTION_STATE_DIR; "
    "default ~/.local/share/bastion).",
)


def _settings(state_dir: Path | None, **kw: Any) -> Any:
    from bastion.core.settings import load_settings

    return load_settings(state_dir, **kw)


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(2)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BastionError as err:
            _fail(str(err))

    return wrapper


def _exit_if_rejected(file: Path, problems: list[str]) -> None:
    """List the lines of an import file that were rejected ("line N: why") and exit 1."""
    if problems:
        click.secho(f"{len(problems)} line(s) of {file} rejected:", fg="red", err=True)
        for line in problems:
            click.echo(f"  {line}", err=True)
        sys.exit(1)


@click.group(help="Bastion: Trust & Safety moderation on Ray.")
def cli() -> None:
    pass


cli.add_command(db)


@cli.command(help="Start the platform locally (Ray, MLflow registry, moderation API) and stay "
             "in the foreground until Ctrl-C.")
@_state_dir_option
@click.option("--port", type=int, default=None, help="HTTP port (default 8000).")
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Tenant policy YAML (default <state-dir>/policy.yaml).")
@_guard
def up(state_dir: Path | None, port: int | None, host: str | None,
       policy_file: Path | None) -> None:
    from bastion.core.launcher import run_platform

    settings = _settings(state_dir, port=port, host=host, policy_file=policy_file)
    run_platform(settings, say=click.echo)


@cli.command(help="Send text to a running server and print the JSON response.")
@_state_dir_option
@click.option("--tenant", default="demo", show_default=True, help="Tenant whose policy applies.")
@click.option("--url", default=None, help="Server URL (default: the one 'bastion up' wrote).")
@click.option("--key", envvar="BASTION_API_KEY", default=None,
              help="Tenant API key (default: from the state directory).")
@click.option("--session-id", default=None, help="Session the texts belong to.")
@click.option("--user-id", default=None, help="Author of the texts.")
@click.argument("texts", nargs=-1, required=True)
@_guard
def moderate(state_dir: Path | None, tenant: str, url: str | None, key: str | None,
             session_id: str | None, user_id: str | None, texts: tuple[str, ...]) -> None:
    import httpx

    from bastion.core.keys import load_keys

    settings = _settings(state_dir)
    if url is None:
        if not settings.server_file.exists():
            _fail(f"no running server found for state directory {settings.state_dir}; start "
                  "one with 'bastion up' (same --state-dir) or pass --url")
        url = json.loads(settings.server_file.read_text())["url"]
    if key is None:
        key = load_keys(settings.keys_file).get(tenant)
        if key is None:
            _fail(f"no API key for tenant {tenant!r} in {settings.keys_file}; pass --key")
    ctx = {k: v for k, v in {"session_id": session_id, "user_id": user_id}.items() if v}
    body = {"tenant": tenant,
            "items": [{"id": str(i), "text": t, "context": ctx} for i, t in enumerate(texts)]}
    try:
        r = httpx.post(f"{url.rstrip('/')}/v1/moderate", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {key}"})
    except httpx.TransportError as err:
        _fail(f"cannot reach {url} ({err}); is 'bastion up' running?")
    click.echo(json.dumps(r.json(), indent=2))
    if r.status_code >= 400:
        sys.exit(1)


@cli.group(help="Tenant policy files.")
def policy() -> None:
    pass


@policy.command("validate", help="Validate a policy file; with a registered champion model in "
                "the state directory, also check it fits that model and show the thresholds.")
@_state_dir_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_guard
def policy_validate(state_dir: Path | None, file: Path) -> None:
    from bastion.core.decision import fit_problems
    from bastion.core.launcher import champion_metadata, check_policy
    from bastion.core.policy import load_policy

    pol = load_policy(file)
    n_cats = sum(len(t.categories) for t in pol.tenants.values())
    click.echo(f"{file}: valid ({len(pol.tenants)} tenant(s), {n_cats} category rule(s))")
    settings = _settings(state_dir)
    if not (settings.state_dir / "mlflow.db").exists() and settings.mlflow_tracking_uri is None:
        click.echo("No registry in the state directory: not checked against a model.")
        return
    try:
        meta = champion_metadata(settings)
    except BastionError as err:
        click.echo(f"Not checked against a model: {err}")
        return
    resolved = check_policy(pol, meta)
    problems = fit_problems(resolved)
    click.echo(f"Fits model version {meta['version']}" + (
        f", with {len(problems)} category(ies) served otherwise than written:" if problems
        else ":"))
    for line in problems:
        click.echo(f"  ! {line}")
    for t, rt in resolved.items():
        click.echo(f"  {t} (policy version {rt.version})")
        for c in rt.categories:
            rev = "-" if c.review_threshold is None else f"{c.review_threshold:.3f}"
            block = ("never (review only)" if c.block_threshold is None
                     else f"{c.block_threshold:.3f}")
            click.echo(f"    {c.name:<15} block>={block} review>={rev} "
                       f"action={c.action.value} ({c.source})")


@cli.command(help="Print tenants' API keys from the state directory.")
@_state_dir_option
@click.argument("tenant", required=False)
@_guard
def keys(state_dir: Path | None, tenant: str | None) -> None:
    from bastion.core.keys import load_keys

    settings = _settings(state_dir)
    all_keys = load_keys(settings.keys_file)
    if tenant is not None:
        if tenant not in all_keys:
            _fail(f"no key for tenant {tenant!r} in {settings.keys_file}")
        click.echo(all_keys[tenant])
        return
    for t, k in sorted(all_keys.items()):
        click.echo(f"{t}\t{k}")


def _lifecycle(state_dir: Path | None) -> Any:
    from bastion.core.launcher import ensure_policy_file
    from bastion.core.policy import load_policy
    from bastion.registry.lifecycle import Lifecycle

    settings = _settings(state_dir)
    return Lifecycle(settings, load_policy(ensure_policy_file(settings)))


@cli.group(help="Model versions in the MLflow registry.")
def models() -> None:
    pass


@models.command("list", help="Every version with its aliases and gate verdict.")
@_state_dir_option
@_guard
def models_list(state_dir: Path | None) -> None:
    from bastion.registry.store import ModelRegistry

    registry = ModelRegistry(_settings(state_dir))
    click.echo(f"{'version':<8} {'aliases':<22} {'validation':<11} {'kind':<10} created (UTC)")
    for v in registry.list_versions():
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.created / 1000))
        click.echo(f"{v.version:<8} {','.join('@' + a for a in v.aliases):<22} "
                   f"{v.tags.get('validation_status', '-'):<11} "
                   f"{v.tags.get('bastion.kind', '-'):<10} {created}")


@models.command("show", help="A version's tags and its latest gate report.")
@_state_dir_option
@click.argument("version")
@_guard
def models_show(state_dir: Path | None, version: str) -> None:
    from mlflow.exceptions import MlflowException

    lc = _lifecycle(state_dir)
    info = lc.registry.get(version)
    click.echo(f"{lc.name} version {info.version}  aliases: "
               f"{', '.join('@' + a for a in info.aliases) or '-'}  run: {info.run_id}")
    for k, v in sorted(info.tags.items()):
        click.echo(f"  {k}: {v}")
    from bastion.training.starter_report import category_lines

    meta = lc.registry.metadata(info.version)
    click.echo("\nCategories (held-out, from the version's metadata):")
    for line in category_lines(meta):
        click.echo(f"  {line}")
    try:
        text = lc.client.download_artifacts(info.run_id, "gate/latest.txt")
        click.echo("\nLatest gate report:\n" + Path(text).read_text())
    except (MlflowException, OSError):
        click.echo("\nNo gate report yet: run 'bastion promote " + info.version + "'.")


@cli.group(help="The starter model shipped with Bastion: build it, document it, look at it.")
def starter() -> None:
    pass


@starter.command("build", help="Train the starter heads on every labelled source this machine "
                 "has (packaged ones, and the development data in ../shared/data or --data), "
                 "measure them and write the artifact (default training/starter_model/).")
@_state_dir_option
@click.option("--data", "data_dir", type=click.Path(file_okay=False, exists=True,
              path_type=Path), default=None,
              help="Folder of the development data sets (default ../shared/data).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the artifact (default: the shipped one).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Embedding cache folder (default <state-dir>/embeddings).")
@click.option("--source", "sources", multiple=True,
              help="Only these sources (repeatable; default every available one).")
@click.option("--no-cross-source", is_flag=True, help="Skip the leave-one-source-out heads.")
@click.option("--limit", type=click.IntRange(min=20), default=None,
              help="At most N items per source (a quick trial build; the shipped one has none).")
@_guard
def starter_build(state_dir: Path | None, data_dir: Path | None, out: Path | None,
                  cache_dir: Path | None, sources: tuple[str, ...],
                  no_cross_source: bool, limit: int | None) -> None:
    import os

    from bastion.training.datasets import available_sources
    from bastion.training.starter import SHIPPED_DIR, build_from_sources, write_starter
    from bastion.training.starter_report import category_lines

    if data_dir is not None:
        os.environ["BASTION_DEV_DATA"] = str(data_dir.resolve())
    names = list(sources) or available_sources()
    click.echo(f"Sources: {', '.join(names)}")
    last: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if done == total or done - last.get(stage, 0) >= max(total // 10, 1):
            last[stage] = done
            click.echo(f"  {stage}: {done}/{total}")

    unknown = [n for n in names if n not in available_sources()]
    if unknown:
        _fail(f"source(s) {', '.join(unknown)} not available here; available: "
              f"{', '.join(available_sources())} (the development sets need ../shared/data "
              "or --data DIR)")
    given = {"--state-dir": state_dir, "--data": data_dir, "--out": out, "--cache": cache_dir,
             "--limit": limit}
    command = " ".join(["bastion starter build",
                        *(f"{k} {v}" for k, v in given.items() if v is not None),
                        *(f"--source {s}" for s in sources),
                        *(["--no-cross-source"] if no_cross_source else [])])
    model = build_from_sources(_settings(state_dir), sources=names, cache_dir=cache_dir,
                               progress=progress, cross_source=not no_cross_source,
                               limit_per_source=limit, command=command)
    path = write_starter(model, out or SHIPPED_DIR)
    for line in category_lines(model.metadata):
        click.echo(f"  {line}")
    click.echo(f"Wrote {path} (run 'bastion starter docs' to regenerate "
               "docs/starter-model.md).")


@starter.command("docs", help="Write docs/starter-model.md from the shipped artifact.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Default docs/starter-model.md of this checkout.")
@_guard
def starter_docs(out: Path | None) -> None:
    from bastion.training.starter import SHIPPED_DIR, artifact_digest
    from bastion.training.starter_report import render_markdown

    meta = json.loads((SHIPPED_DIR / "metadata.json").read_text())
    extra = ""
    cases = Path(__file__).resolve().parents[1] / "bench/results/starter.json"
    if cases.exists():
        from bastion.training.starter_report import plain_cases_section

        extra = plain_cases_section(json.loads(cases.read_text()))
    target = out or Path(__file__).resolve().parents[1] / "docs/starter-model.md"
    target.write_text(render_markdown(meta, artifact_digest(), extra))
    click.echo(f"Wrote {target}")


@starter.command("show", help="The shipped starter's categories, metrics and weak spots.")
@_guard
def starter_show() -> None:
    from bastion.training.starter import SHIPPED_DIR, shipped_starter
    from bastion.training.starter_report import category_lines

    if shipped_starter() is None:
        _fail(f"no starter artifact in {SHIPPED_DIR}; run 'bastion starter build'")
    meta = json.loads((SHIPPED_DIR / "metadata.json").read_text())
    click.echo(f"Starter built {meta.get('created_at')} by {meta.get('command')}")
    for line in category_lines(meta):
        click.echo(f"  {line}")


@models.command("audit", help="Who promoted, forced, was refused or rolled back, when, why.")
@_state_dir_option
@_guard
def models_audit(state_dir: Path | None) -> None:
    for e in _lifecycle(state_dir).audit():
        click.echo(json.dumps(e, sort_keys=True))


@cli.command(help="Run the gate on VERSION against @champion and promote it if it passes.")
@_state_dir_option
@click.argument("version")
@click.option("--force", is_flag=True, help="Promote even if the gate fails (recorded).")
@click.option("--reason", default=None, help="Why: kept in the audit trail.")
@_guard
def promote(state_dir: Path | None, version: str, force: bool, reason: str | None) -> None:
    from bastion.registry.lifecycle import GateRefused

    lc = _lifecycle(state_dir)
    try:
        result = lc.promote(version, force=force, reason=reason)
    except GateRefused as err:
        click.echo(str(err))
        sys.exit(1)
    click.echo(result.report.to_table())
    how = "FORCED past a failing gate" if result.forced else "gate passed"
    click.echo(f"Promoted version {result.version} to @champion ({how}); previous champion: "
               f"{result.previous}. Serving follows within seconds.")


@cli.command(help="Move @champion back to the previous champion.")
@_state_dir_option
@click.option("--reason", default=None, help="Why: kept in the audit trail.")
@_guard
def rollback(state_dir: Path | None, reason: str | None) -> None:
    old, new = _lifecycle(state_dir).rollback(reason=reason)
    click.echo(f"Rolled back @champion from version {old} to version {new}. Serving follows "
               "within seconds.")


@cli.command(help="Retrain on the human labels (and the seed data) with Ray Train, register the "
             "result as @challenger and run the promotion gate. Mode and sizes default to the "
             "policy's 'retraining' section. Re-running an interrupted run resumes it.")
@_state_dir_option
@click.option("--mode", type=click.Choice(["heads", "full"]), default=None,
              help="heads: backbone frozen, cached embeddings (fast); full: backbone and heads "
              "fine-tuned together.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ray Train workers of a full run.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Most epochs of a full run (early stopping may end it sooner).")
@click.option("--gpu/--no-gpu", "use_gpu", default=None,
              help="Train on GPUs (default: where the Ray cluster has them).")
@click.option("--seed-data/--no-seed-data", default=None,
              help="Train on the packaged seed data as well as the labels.")
@click.option("--davidson-limit", type=click.IntRange(min=1), default=None,
              help="Rows of the Davidson tweets to include (default 8000).")
@click.option("--promote/--no-promote", default=None,
              help="Promote if the gate passes (default: the policy's auto_promote).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Per-worker batch of a full run (default 32).")
@click.option("--max-length", type=click.IntRange(min=8), default=None,
              help="Tokens per text in a full run (default 128).")
@click.option("--max-failures", type=click.IntRange(min=-1), default=None,
              help="Worker failures a run recovers from, from its latest checkpoint (default 2).")
@click.option("--reason", default=None,
              help="Why this run starts (the drift monitor passes its trigger); kept on the "
              "MLflow run and the registered version.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_guard
def retrain(state_dir: Path | None, mode: str | None, workers: int | None, epochs: int | None,
            use_gpu: bool | None, seed_data: bool | None, davidson_limit: int | None,
            promote: bool | None, batch_size: int | None, max_length: int | None,
            max_failures: int | None, reason: str | None, as_json: bool) -> None:
    from dataclasses import asdict, replace

    from bastion.core.launcher import ensure_policy_file
    from bastion.core.policy import load_policy
    from bastion.core.runtime import stop_ray
    from bastion.training.retrain import options_from_policy
    from bastion.training.retrain import retrain as run_retrain

    settings = _settings(state_dir)
    pol = load_policy(ensure_policy_file(settings))
    opts = options_from_policy(pol, mode=mode, workers=workers, epochs=epochs,
                               use_gpu=use_gpu, seed_data=seed_data,
                               davidson_limit=davidson_limit, promote=promote,
                               max_failures=max_failures, reason=reason)
    ft = {k: v for k, v in {"batch_size": batch_size, "max_length": max_length}.items()
          if v is not None}
    if ft:
        opts = replace(opts, finetune=replace(opts.finetune, **ft))
    say = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    try:
        result = run_retrain(settings, pol, opts, say=say)
    finally:
        stop_ray(shutdown_serve=False)
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2, default=str))
        return
    click.echo(result.gate_table)
    if result.promoted:
        click.echo(f"Version {result.version} passed the gate and is now @champion; serving "
                   "follows within seconds.")
    elif result.gate_passed:
        click.echo(f"Version {result.version} passed the gate; it stays @challenger "
                   f"(promote it with 'bastion promote {result.version}').")
    else:
        click.echo(f"Version {result.version} did not pass the gate; it stays @challenger and "
                   "@champion is unchanged.")
    click.echo(f"Timings (s): {json.dumps(result.timings_s)}")


@cli.group(help="Moderators' labels in the label store that retraining reads.")
def labels() -> None:
    pass


@labels.command("import", help="Import items and labels from FILE: JSON Lines (.jsonl) or CSV "
                "(.csv, one label:<category> column per category). Bad lines are reported and "
                "skipped (exit status 1); importing the same file again changes nothing.")
@_state_dir_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--annotator", default="import", show_default=True,
              help="Annotator of the lines that do not name one.")
@_guard
def labels_import(state_dir: Path | None, file: Path, annotator: str) -> None:
    from contextlib import closing

    from bastion.core.labels import LabelStore

    settings = _settings(state_dir)
    with closing(LabelStore(settings.database_url)) as store:
        report = store.import_file(file, default_annotator=annotator)
    click.echo(f"imported {report.items} item(s): {report.labels_added} label(s) added, "
               f"{report.labels_unchanged} unchanged, {report.labels_revised} revised")
    _exit_if_rejected(file, report.errors)


@labels.command("stats", help="How many items and labels the label store holds, by tenant and "
                "by category.")
@_state_dir_option
@_guard
def labels_stats(state_dir: Path | None) -> None:
    from contextlib import closing

    from bastion.core.labels import LabelStore
    from bastion.core.store import normalise_url

    url = _settings(state_dir).database_url
    path = normalise_url(url).render_as_string(hide_password=True)
    with closing(LabelStore(url)) as store:
        st = store.stats()
    last = st["last_label_ts"]
    when = "-" if last is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last))
    click.echo(f"{path}: {st['items']} item(s), {st['labels']} label(s) by "
               f"{st['annotators']} annotator(s); last label {when}")
    if not st["items"]:
        click.echo("No labels yet: add some with 'bastion labels import FILE'.")
        return
    click.echo("By tenant:")
    for tenant, n in st["by_tenant"].items():
        click.echo(f"  {tenant:<20} {n['items']:>8} item(s) {n['labels']:>8} label(s)")
    click.echo("By category:")
    for category, n_labels in st["by_category"].items():
        click.echo(f"  {category:<20} {n_labels:>8} label(s)")


@cli.group(help="Human review: reviewer keys, the queue, labels for retraining.")
def review() -> None:
    pass


@review.group("keys", help="Moderator and ML-ops keys for the review API.")
def review_keys() -> None:
    pass


@review_keys.command("add", help="Issue a key for reviewer NAME (re-issuing replaces the old "
                     "key); a running 'bastion up' picks it up within seconds.")
@_state_dir_option
@click.argument("name")
@click.option("--role", type=click.Choice(["moderator", "mlops"]), default="moderator",
              show_default=True, help="moderator: claims and labels; mlops: also sees gold.")
@click.option("--tenant", "tenants", multiple=True, required=True,
              help="A tenant whose items this reviewer sees (repeat for several).")
@_guard
def review_keys_add(state_dir: Path | None, name: str, role: str,
                    tenants: tuple[str, ...]) -> None:
    from bastion.core.keys import add_reviewer, reviewers_path
    from bastion.core.launcher import ensure_policy_file
    from bastion.core.policy import load_policy

    settings = _settings(state_dir)
    pol = load_policy(ensure_policy_file(settings))
    unknown = sorted(set(tenants) - set(pol.tenants))
    if unknown:
        _fail(f"unknown tenant(s) {unknown}; the policy has {sorted(pol.tenants)}")
    key = add_reviewer(reviewers_path(settings.state_dir), name, role, tenants)
    click.echo(key)


@review_keys.command("list", help="Reviewers, their roles and tenants (not their keys).")
@_state_dir_option
@_guard
def review_keys_list(state_dir: Path | None) -> None:
    from bastion.core.keys import load_reviewers, reviewers_path

    for name, r in sorted(load_reviewers(reviewers_path(_settings(state_dir).state_dir)).items()):
        click.echo(f"{name}\t{r['role']}\t{','.join(r['tenants'])}")  # type: ignore[arg-type]


@contextlib.contextmanager
def _review_service(settings: Any) -> Iterator[Any]:
    """The review service of a state directory (its queue closed on exit)."""
    from bastion.core.launcher import ensure_policy_file
    from bastion.core.policy import load_policy
    from bastion.review.queue import ReviewQueue
    from bastion.review.service import ReviewService

    pol = load_policy(ensure_policy_file(settings))
    queue = ReviewQueue(settings.database_url)
    try:
        yield ReviewService(queue, lambda: pol)
    finally:
        queue.close()


@review.command("queue", help="Open review tasks, most urgent first, with why they rank there.")
@_state_dir_option
@click.option("--tenant", "tenants", multiple=True, help="Only these tenants.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@_guard
def review_queue(state_dir: Path | None, tenants: tuple[str, ...], limit: int) -> None:
    with _review_service(_settings(state_dir)) as svc:
        tasks = svc.queue.pending(list(tenants) or None, limit)
        stats = svc.queue.stats()
    click.echo(json.dumps(stats, sort_keys=True))
    for t in tasks:
        why = "; ".join(f"{r.get('factor')}={r.get('value')}" for r in t.reasons)
        click.echo(f"{t.priority:8.3f}  {t.tenant:<12} {t.task_id}  items={len(t.items)} "
                   f"reports={len(t.reports)} events={len(t.events)} "
                   f"slots={t.slots_done}/{t.slots}  [{why}]")


@review.command("select", help="Active learning: queue the logged items that would teach the "
                "model most (uncertain, rare categories first, unlike each other), BUDGET per "
                "tenant. Needs decisions whose text the policy keeps (store_raw_text).")
@_state_dir_option
@click.option("--budget", type=click.IntRange(1, 100000), required=True,
              help="Items to queue per tenant.")
@click.option("--tenant", "tenants", multiple=True, help="Only these tenants.")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Only decisions of the last DAYS days.")
@_guard
def review_select(state_dir: Path | None, budget: int, tenants: tuple[str, ...],
                  days: float | None) -> None:
    settings = _settings(state_dir)
    since = time.time() - days * 86400 if days else None
    with _review_service(settings) as svc:
        picks = svc.select_for_labelling(budget,
                                         tenants=list(tenants) or None, since=since)
    for p in picks:
        click.echo(json.dumps(p, sort_keys=True))
    click.echo(f"queued {len(picks)} item(s) for labelling")


@review.command("calibrate", help="Propose, per tenant and category, the lowest block threshold "
                "whose precision on reviewed items meets the target with the given confidence, "
                "and the review band below it. --apply writes them into the policy file "
                "(a running 'bastion up' applies it live).")
@_state_dir_option
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True,
              help="Of the one-sided Clopper-Pearson lower bound on precision.")
@click.option("--min-items", type=click.IntRange(min=1), default=30, show_default=True,
              help="Fewest reviewed items a category needs for a proposal.")
@click.option("--apply", "do_apply", is_flag=True, help="Accept the proposals: edit the policy "
              "file (the old one is kept as policy.yaml.bak-<time>).")
@_guard
def review_calibrate(state_dir: Path | None, confidence: float, min_items: int,
                     do_apply: bool) -> None:
    import shutil

    import yaml

    from bastion.core.launcher import ensure_policy_file
    from bastion.core.policy import load_policy, parse_policy
    from bastion.review.calibration import apply, propose, render

    settings = _settings(state_dir)
    with _review_service(settings) as svc:
        reviewed = svc.reviewed()
    path = ensure_policy_file(settings)
    pol = load_policy(path)
    proposals = propose(pol, reviewed, confidence=confidence, min_items=min_items)
    click.echo(render(proposals))
    if not do_apply:
        click.echo("Nothing changed; run again with --apply to accept.")
        return
    if not any(p.proposed_block is not None for p in proposals):
        click.echo("No proposal to apply.")
        return
    data = apply(yaml.safe_load(path.read_text()), proposals)
    parse_policy(data, str(path))
    backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%dT%H%M%S')}")
    shutil.copy2(path, backup)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# Thresholds calibrated by 'bastion review calibrate' on reviewed items.\n"
                   + yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)
    click.echo(f"Applied to {path} (previous version: {backup}).")


@review.command("gold", help="Queue items whose answers are known (JSON Lines: tenant, "
                "item_id, text, labels): they measure the moderators who label them.")
@_state_dir_option
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_guard
def review_gold(state_dir: Path | None, file: Path) -> None:
    n, problems = 0, []
    with _review_service(_settings(state_dir)) as svc:
        for lineno, line in enumerate(file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                svc.add_gold(rec["tenant"], rec["item_id"], rec["text"], rec["labels"],
                             rec.get("session_id"))
                n += 1
            except (ValueError, KeyError, TypeError, BastionError) as err:
                problems.append(f"line {lineno}: {err}")
    click.echo(f"queued {n} gold item(s)")
    _exit_if_rejected(file, problems)


@review.command("moderators", help="Each moderator's estimated reliability per category "
                "(Dawid-Skene) and accuracy on gold items.")
@_state_dir_option
@_guard
def review_moderators(state_dir: Path | None) -> None:
    with _review_service(_settings(state_dir)) as svc:
        rows = svc.moderators()
    click.echo(f"{'moderator':<16} {'category':<14} {'sens':>6} {'spec':>6} {'labels':>7} "
               f"{'gold':>5} {'gold acc':>8}")
    for r in rows:
        acc = "-" if r["gold_accuracy"] is None else f"{r['gold_accuracy']:.3f}"
        click.echo(f"{r['annotator']:<16} {r['category']:<14} {r['sensitivity']:6.3f} "
                   f"{r['specificity']:6.3f} {r['n_labels']:7d} {r['n_gold']:5d} {acc:>8}")


@cli.group(help="Drift: recent traffic against what the champion was trained on.")
def drift() -> None:
    pass


def _platform_dashboard(settings: Any) -> str | None:
    """The Ray dashboard of the running ``bastion up`` of this state directory, if any."""
    import os

    if not settings.server_file.exists():
        return None
    try:
        info = json.loads(settings.server_file.read_text())
        os.kill(int(info["pid"]), 0)
    except (ValueError, KeyError, OSError):
        return None
    dash = info.get("dashboard")
    return str(dash) if dash else None


@drift.command("check", help="Validate and test each tenant's recent traffic for drift; "
               "writes JSON and HTML reports under <state-dir>/drift and logs them to MLflow. "
               "While 'bastion up' runs, the policy's trigger rules may start a retraining "
               "job on its Ray cluster. Window, size and rate default to the policy's 'drift' "
               "section. Exits 1 when a tenant drifted.")
@_state_dir_option
@click.option("--tenant", "tenants", multiple=True, help="Only these tenants.")
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Window: the last HOURS of traffic (policy default: 24).")
@click.option("--min-items", type=click.IntRange(min=10), default=None,
              help="Fewest items a window needs to be checked (policy default: 100).")
@click.option("--false-alarm-rate", type=click.FloatRange(0.0001, 0.2), default=None,
              help="Of the whole family of tests of one window (policy default: 0.01).")
@click.option("--trigger/--no-trigger", default=True, show_default=True,
              help="Evaluate the policy's retraining triggers (needs 'bastion up' running).")
@_guard
def drift_check(state_dir: Path | None, tenants: tuple[str, ...], hours: float | None,
                min_items: int | None, false_alarm_rate: float | None, trigger: bool) -> None:
    from bastion.core.launcher import ensure_policy_file
    from bastion.core.policy import load_policy
    from bastion.drift.check import monitor_pass

    settings = _settings(state_dir)
    pol = load_policy(ensure_policy_file(settings))
    unknown = sorted(set(tenants) - set(pol.tenants))
    if unknown:
        _fail(f"unknown tenant(s) {unknown}; the policy has {sorted(pol.tenants)}")
    dashboard = _platform_dashboard(settings) if trigger else None
    results, signals, outcome = monitor_pass(
        settings, pol, dashboard_url=dashboard, tenants=list(tenants) or None, hours=hours,
        min_items=min_items, false_alarm_rate=false_alarm_rate, say=click.echo)
    if trigger and outcome is None:
        from bastion.drift.triggers import fired

        hits = fired(pol.retraining.triggers.rules, signals)
        if hits:
            click.echo(f"Trigger {hits[0][0]} fires ({'; '.join(hits[0][1])}), but no "
                       "'bastion up' runs for this state directory: start it, or run "
                       "'bastion retrain'.")
    elif outcome is not None and outcome.action == "none":
        click.echo("No retraining trigger fired.")
    if any(r is not None and r.drift for r, _m in results):
        sys.exit(1)


@drift.command("triggers", help="Recent retraining-trigger decisions: what fired, why, and "
               "whether a job was submitted or skipped (cooldown, a job still running).")
@_state_dir_option
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_guard
def drift_triggers(state_dir: Path | None, limit: int, as_json: bool) -> None:
    from bastion.drift.triggers import TriggerLog

    settings = _settings(state_dir)
    log = TriggerLog(settings.database_url)
    try:
        rows = log.recent(limit)
    finally:
        log.close()
    if not rows:
        click.echo("No trigger has fired yet.")
        return
    dashboard = _platform_dashboard(settings)
    if dashboard is not None:  # the platform runs: say how each submitted job ended
        from ray.job_submission import JobSubmissionClient

        from bastion.core.runtime import dashboard_http

        try:
            client = JobSubmissionClient(dashboard_http(dashboard))
            for r in rows:
                if r["job_id"]:
                    r["job_status"] = str(client.get_job_status(r["job_id"]))
        except Exception as err:  # noqa: BLE001 - the record is still worth showing
            click.echo(f"(job states unavailable: {err})", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["at"]))
        state = f" [{r['job_status']}]" if r.get("job_status") else ""
        click.echo(f"{when}Z  {r['action']:<9} {r['rule']:<20} {r['message']}{state}")


def main() -> None:
    import os

    from bastion.core.runtime import ray_env

    # Before anything imports ray: some of its settings are read at import time.
    for k, v in ray_env().items():
        os.environ.setdefault(k, v)
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    cli(prog_name="bastion")


if __name__ == "__main__":
    main()
