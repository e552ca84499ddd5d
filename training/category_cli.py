"""``bastion category``: add a tenant-owned category from a description and a few examples,
see what reviewed labels say about it, and pick its next items to label
(``training.category``)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import click

from bastion.core.clikit import guard, settings_for, state_dir_option
from bastion.core.policy import ensure_policy_file, load_policy
from bastion.core.settings import Settings
from bastion.training.category import MIN_POSITIVES, add_category, read_examples
from bastion.training.category_review import (
    CategoryStatus,
    apply_block_threshold,
    category_status,
    queue_for_labelling,
)

__all__ = ["category", "category_add", "category_status_cmd", "category_select",
           "category_list"]

policy_option = click.option(
    "--policy", "policy_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The policy file to read and edit (default: the state directory's, as 'bastion up').")


def _settings(state_dir: Path | None, policy_file: Path | None) -> tuple[Settings, Path]:
    parent = click.get_current_context().parent
    if state_dir is None and parent is not None:  # given before the subcommand (a Ray job's
        state_dir = parent.params.get("state_dir")  # entrypoint: core.jobs.bastion_command)
    settings = settings_for(state_dir, **({"policy_file": policy_file} if policy_file else {}))
    return settings, ensure_policy_file(settings)


@click.group(help="Tenant-owned categories: a new one in minutes from a description and a few "
             "examples, served review-only until reviewed labels show its precision.")
@state_dir_option
def category(state_dir: Path | None) -> None:
    pass


@category.command("add", help="Train a head for TENANT's new category NAME on the examples (at "
                  f"least {MIN_POSITIVES}, one a line; .jsonl with a 'text' field or .csv with a "
                  "text column also work) against the tenant's own logged traffic, register "
                  "@champion plus that head, gate and promote it, and add NAME to the policy "
                  "review-only (it never blocks until 'bastion category status --apply').")
@state_dir_option
@policy_option
@click.argument("tenant")
@click.argument("name")
@click.option("--description", required=True, help="What the category is: kept with the model "
              "version and shown to moderators.")
@click.option("--examples", "examples_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Positive examples.")
@click.option("--target-precision", type=click.FloatRange(0, 1, min_open=True), default=0.9,
              show_default=True, help="Reviewed precision the category must show before "
              "calibration proposes a block threshold (kept as its gate's min_precision).")
@click.option("--actor", default=None, help="Who asks, for the audit trail (default: the OS "
              "user).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@guard
def category_add(state_dir: Path | None, policy_file: Path | None, tenant: str, name: str,
                 description: str, examples_file: Path, target_precision: float,
                 actor: str | None, as_json: bool) -> None:
    t0 = time.perf_counter()
    settings, path = _settings(state_dir, policy_file)
    positives = read_examples(examples_file)
    say = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    result = add_category(settings, path, tenant, name, description, positives,
                          target_precision=target_precision, actor=actor, say=say)
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2))
        return
    click.echo(result.gate_table)
    for note in result.notes:
        click.echo(f"Note: {note}")
    click.echo(
        f"Added category {name!r} to tenant {tenant!r}: head {result.head!r} in version "
        f"{result.version} (now @champion; was v{result.previous}; serving follows within "
        f"seconds), review-only from score {result.review['threshold']} in {path} (previous "
        f"file kept as {result.policy_backup}); {result.labels_stored} example(s) stored as "
        f"labels. Negatives: {', '.join(f'{v} from {k}' for k, v in result.negatives.items())}.")
    t = result.timings_s
    click.echo(f"Took {time.perf_counter() - t0:.1f} s: head trained in {t['fit']:.2f} s "
               f"(examples embedded in {t['embed_examples']:.1f} s, negatives gathered in "
               f"{t['negatives']:.1f} s), registered in {t['register']:.1f} s, gated in "
               f"{t['gate']:.1f} s.")
    click.echo(f"Next: 'bastion category select {tenant} {name} --budget 50' queues the items "
               f"most worth labelling; 'bastion category status {tenant} {name}' shows when "
               f"reviewed precision reaches {target_precision:g}.")


def _print_status(st: CategoryStatus) -> None:
    p = st.proposal
    prec = "-" if st.precision_in_band is None else f"{st.precision_in_band:.3f}"
    mode = (f"blocks from {st.block_threshold}" if st.block_threshold is not None
            else "blocks (target precision)" if st.blocks
            else f"review-only from {st.review_threshold}")
    click.echo(f"{st.tenant}/{st.name} (head {st.head!r}): {mode}; target precision "
               f"{st.target_precision:g}")
    click.echo(f"  example labels: {st.n_example_labels}; reviewed items: {st.n_reviewed} "
               f"({st.n_positive} positive); in the review band: {st.n_in_band}, precision "
               f"{prec}")
    if p.proposed_block is None:
        click.echo(f"  calibration: no block threshold yet ({p.reason})")
        return
    a = p.achieved
    assert a is not None
    click.echo(f"  calibration proposes block at {p.proposed_block:.4f} (review from "
               f"{'-' if p.proposed_review is None else f'{p.proposed_review:.4f}'}): "
               f"precision {a.precision:.3f}, lower bound {a.precision_lower:.3f} >= "
               f"{p.target_precision:g} at {p.confidence:.0%} confidence, recall "
               f"{a.recall:.3f}")


@category.command("status", help="What moderators' reviewed labels say about TENANT's "
                  "category NAME: its precision in the review band against the target and, once "
                  "that is shown with confidence, the block threshold calibration proposes "
                  "(--apply writes it into the policy: a running 'bastion up' applies it live).")
@state_dir_option
@policy_option
@click.argument("tenant")
@click.argument("name")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95,
              show_default=True, help="Of the one-sided Clopper-Pearson lower bound on "
              "precision.")
@click.option("--min-items", type=click.IntRange(min=1), default=30, show_default=True,
              help="Fewest reviewed items before a threshold is proposed.")
@click.option("--apply", "do_apply", is_flag=True, help="Write the proposed block threshold "
              "into the policy file (the old one is kept beside it).")
@guard
def category_status_cmd(state_dir: Path | None, policy_file: Path | None, tenant: str,
                        name: str, confidence: float, min_items: int, do_apply: bool) -> None:
    settings, path = _settings(state_dir, policy_file)
    st = category_status(settings, load_policy(path), tenant, name, confidence=confidence,
                         min_items=min_items)
    _print_status(st)
    if st.proposal.proposed_block is None:
        if not st.blocks:
            click.echo("  It stays review-only: label its review-band items (and 'bastion "
                       f"category select {tenant} {name}' for more) and ask again.")
        return
    if not do_apply:
        click.echo(f"  Apply it with 'bastion category status {tenant} {name} --apply'.")
        return
    backup = apply_block_threshold(path, st.proposal)
    click.echo(f"Applied to {path} (previous version: {backup}): {tenant}/{name} now blocks "
               f"at {st.proposal.proposed_block:.4f}; from the next retraining on, the gate "
               "needs held-out labels for it like any category that blocks.")


@category.command("select", help="Active learning for TENANT's category NAME: queue the BUDGET "
                  "logged items most worth a label for it (unsure around its threshold, unlike "
                  "what is labelled already and each other). Needs store_raw_text: true.")
@state_dir_option
@policy_option
@click.argument("tenant")
@click.argument("name")
@click.option("--budget", type=click.IntRange(1, 100000), default=50, show_default=True)
@guard
def category_select(state_dir: Path | None, policy_file: Path | None, tenant: str, name: str,
                    budget: int) -> None:
    settings, path = _settings(state_dir, policy_file)
    picks = queue_for_labelling(settings, load_policy(path), tenant, name, budget)
    for p in picks:
        click.echo(json.dumps(p, sort_keys=True))
    click.echo(f"queued {len(picks)} item(s) of {tenant!r} for labelling {name!r}")


@category.command("list", help="Tenant-owned categories of the policy and their heads.")
@state_dir_option
@policy_option
@guard
def category_list(state_dir: Path | None, policy_file: Path | None) -> None:
    _, path = _settings(state_dir, policy_file)
    pol = load_policy(path)
    for tname, tpol in pol.tenants.items():
        for cname, cpol in tpol.categories.items():
            if cpol.head and "/" in cpol.head:
                mode = ("review-only" if cpol.block_threshold is None
                        and cpol.target_precision is None else "blocks")
                click.echo(f"{tname}\t{cname}\t{cpol.head}\t{mode}")
