"""``bastion review`` and ``bastion labels``: the human review loop and its labels."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import click
import yaml

from bastion.core.clikit import exit_if_rejected, fail, guard, settings_for, state_dir_option
from bastion.core.decision import ResolvedTenant, flag_thresholds, resolve_policy
from bastion.core.errors import BastionError
from bastion.core.keys import add_reviewer, load_reviewers, reviewers_path
from bastion.core.labels import LabelStore
from bastion.core.policy import ensure_policy_file, load_policy, parse_policy
from bastion.core.settings import Settings
from bastion.core.store import display_url
from bastion.core.textkey import text_key
from bastion.registry.store import CHAMPION, ModelRegistry
from bastion.review.calibration import apply, propose, render
from bastion.review.queue import ReviewQueue
from bastion.review.service import ReviewService

__all__ = [
    "labels",
    "labels_import",
    "labels_stats",
    "review",
    "review_keys",
    "review_keys_add",
    "review_keys_list",
    "review_queue",
    "review_select",
    "review_calibrate",
    "review_gold",
    "review_moderators",
]


@click.group(help="Moderators' labels in the label store that retraining reads.")
def labels() -> None:
    pass


@labels.command("import", help="Import items and labels from FILE: JSON Lines (.jsonl) or CSV "
                "(.csv, one label:<category> column per category). Bad lines are reported and "
                "skipped (exit status 1); importing the same file again changes nothing.")
@state_dir_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--annotator", default="import", show_default=True,
              help="Annotator of the lines that do not name one.")
@guard
def labels_import(state_dir: Path | None, file: Path, annotator: str) -> None:

    settings = settings_for(state_dir)
    with closing(LabelStore(settings.database_url, text_key(settings))) as store:
        report = store.import_file(file, default_annotator=annotator)
    click.echo(f"imported {report.items} item(s): {report.labels_added} label(s) added, "
               f"{report.labels_unchanged} unchanged, {report.labels_revised} revised")
    exit_if_rejected(file, report.errors)


@labels.command("stats", help="How many items and labels the label store holds, by tenant and "
                "by category.")
@state_dir_option
@guard
def labels_stats(state_dir: Path | None) -> None:

    url = settings_for(state_dir).database_url
    path = display_url(url)
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


@click.group(help="Human review: reviewer keys, the queue, labels for retraining.")
def review() -> None:
    pass


@review.group("keys", help="Moderator and ML-ops keys for the review API.")
def review_keys() -> None:
    pass


@review_keys.command("add", help="Issue a key for reviewer NAME (re-issuing replaces the old "
                     "key); a running 'bastion up' picks it up within seconds.")
@state_dir_option
@click.argument("name")
@click.option("--role", type=click.Choice(["moderator", "mlops"]), default="moderator",
              show_default=True, help="moderator: claims and labels; mlops: also sees gold.")
@click.option("--tenant", "tenants", multiple=True, required=True,
              help="A tenant whose items this reviewer sees (repeat for several).")
@guard
def review_keys_add(state_dir: Path | None, name: str, role: str,
                    tenants: tuple[str, ...]) -> None:
    settings = settings_for(state_dir)
    pol = load_policy(ensure_policy_file(settings))
    unknown = sorted(set(tenants) - set(pol.tenants))
    if unknown:
        fail(f"unknown tenant(s) {unknown}; the policy has {sorted(pol.tenants)}")
    key = add_reviewer(reviewers_path(settings.state_dir), name, role, tenants)
    click.echo(key)


@review_keys.command("list", help="Reviewers, their roles and tenants (not their keys).")
@state_dir_option
@guard
def review_keys_list(state_dir: Path | None) -> None:
    reviewers = load_reviewers(reviewers_path(settings_for(state_dir).state_dir))
    for name, r in sorted(reviewers.items()):
        click.echo(f"{name}\t{r['role']}\t{','.join(r['tenants'])}")  # type: ignore[arg-type]


@contextlib.contextmanager
def review_service(settings: Settings) -> Iterator[ReviewService]:
    """The review service of a state directory (its queue closed on exit), ranking around the
    thresholds serving uses: the policy resolved for the champion, where there is one."""
    pol = load_policy(ensure_policy_file(settings))
    registry = ModelRegistry(settings)
    resolved: dict[str, ResolvedTenant] = {}
    if registry.has_champion():
        meta = registry.metadata(registry.by_alias(CHAMPION).version)
        resolved = resolve_policy(pol, meta["heads"]["keys"], meta)
    queue = ReviewQueue(settings.database_url)
    try:
        yield ReviewService(queue, lambda: pol,
                            thresholds=lambda tenant: flag_thresholds(resolved, tenant),
                            text_key=text_key(settings))
    finally:
        queue.close()


@review.command("queue", help="Open review tasks, most urgent first, with why they rank there.")
@state_dir_option
@click.option("--tenant", "tenants", multiple=True, help="Only these tenants.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@guard
def review_queue(state_dir: Path | None, tenants: tuple[str, ...], limit: int) -> None:
    with review_service(settings_for(state_dir)) as svc:
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
@state_dir_option
@click.option("--budget", type=click.IntRange(1, 100000), required=True,
              help="Items to queue per tenant.")
@click.option("--tenant", "tenants", multiple=True, help="Only these tenants.")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Only decisions of the last DAYS days.")
@guard
def review_select(state_dir: Path | None, budget: int, tenants: tuple[str, ...],
                  days: float | None) -> None:
    settings = settings_for(state_dir)
    since = time.time() - days * 86400 if days else None
    with review_service(settings) as svc:
        picks = svc.select_for_labelling(budget,
                                         tenants=list(tenants) or None, since=since)
    for p in picks:
        click.echo(json.dumps(p, sort_keys=True))
    click.echo(f"queued {len(picks)} item(s) for labelling")


@review.command("calibrate", help="Propose, per tenant and category, the lowest block threshold "
                "whose precision on reviewed items meets the target with the given confidence, "
                "and the review band below it. --apply writes them into the policy file "
                "(a running 'bastion up' applies it live).")
@state_dir_option
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True,
              help="Of the one-sided Clopper-Pearson lower bound on precision.")
@click.option("--min-items", type=click.IntRange(min=1), default=30, show_default=True,
              help="Fewest reviewed items a category needs for a proposal.")
@click.option("--apply", "do_apply", is_flag=True, help="Accept the proposals: edit the policy "
              "file (the old one is kept as policy.yaml.bak-<time>).")
@guard
def review_calibrate(state_dir: Path | None, confidence: float, min_items: int,
                     do_apply: bool) -> None:


    settings = settings_for(state_dir)
    with review_service(settings) as svc:
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
@state_dir_option
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@guard
def review_gold(state_dir: Path | None, file: Path) -> None:
    n, problems = 0, []
    with review_service(settings_for(state_dir)) as svc:
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
    exit_if_rejected(file, problems)


@review.command("moderators", help="Each moderator's estimated reliability per category "
                "(Dawid-Skene) and accuracy on gold items.")
@state_dir_option
@guard
def review_moderators(state_dir: Path | None) -> None:
    with review_service(settings_for(state_dir)) as svc:
        rows = svc.moderators()
    click.echo(f"{'moderator':<16} {'category':<14} {'sens':>6} {'spec':>6} {'labels':>7} "
               f"{'gold':>5} {'gold acc':>8}")
    for r in rows:
        acc = "-" if r["gold_accuracy"] is None else f"{r['gold_accuracy']:.3f}"
        click.echo(f"{r['annotator']:<16} {r['category']:<14} {r['sensitivity']:6.3f} "
                   f"{r['specificity']:6.3f} {r['n_labels']:7d} {r['n_gold']:5d} {acc:>8}")
