"""``bastion retrain``, ``bastion promote`` and ``bastion starter``: training versions and
gating them, both on the training snapshot's held-out split."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import click

from bastion.core.clikit import fail, guard, settings_for, state_dir_option
from bastion.core.modelcard import category_lines
from bastion.core.policy import PolicySet, ensure_policy_file, load_policy
from bastion.core.runtime import stop_ray
from bastion.core.settings import Settings
from bastion.registry.aliases import image_model_name
from bastion.registry.image_gate import ImageLifecycle
from bastion.registry.lifecycle import GateRefused, Lifecycle
from bastion.registry.store import ModelRegistry
from bastion.training.datasets import available_multilingual_sources, available_sources
from bastion.training.image_retrain import ImageRetrainOptions, image_heldout, retrain_images
from bastion.training.retrain import RetrainResult, heldout_data, options_from_policy
from bastion.training.retrain import retrain as run_retrain
from bastion.training.starter import (
    MULTILINGUAL_DIR,
    SHIPPED_DIR,
    artifact_digest,
    build_from_sources,
    shipped_starter,
    write_starter,
)
from bastion.training.starter_report import plain_cases_section, render_markdown

__all__ = ["starter", "starter_build", "starter_docs", "starter_show", "retrain", "promote"]


@click.group(help="The starter model shipped with Bastion: build it, document it, look at it.")
def starter() -> None:
    pass


@starter.command("build", help="Train the starter heads on every labelled source this machine "
                 "has (packaged ones, and the development data in ../shared/data or --data), "
                 "measure them and write the artifact (default training/starter_model/).")
@state_dir_option
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
@click.option("--multilingual", is_flag=True,
              help="The multilingual starter: heads on USE multilingual v3, from the English "
              "sources and the Korean, French and Arabic ones (default out: "
              "training/starter_model_multilingual/).")
@guard
def starter_build(state_dir: Path | None, data_dir: Path | None, out: Path | None,
                  cache_dir: Path | None, sources: tuple[str, ...],
                  no_cross_source: bool, limit: int | None, multilingual: bool) -> None:

    if data_dir is not None:
        os.environ["BASTION_DEV_DATA"] = str(data_dir.resolve())
    here = available_sources() + (available_multilingual_sources() if multilingual else [])
    names = list(sources) or here
    click.echo(f"Sources: {', '.join(names)}")
    last: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if done == total or done - last.get(stage, 0) >= max(total // 10, 1):
            last[stage] = done
            click.echo(f"  {stage}: {done}/{total}")

    unknown = [n for n in names if n not in here]
    if unknown:
        fail(f"source(s) {', '.join(unknown)} not available here; available: "
              f"{', '.join(here)} (the development sets need ../shared/data or --data DIR"
              f"{'' if multilingual else '; the non-English ones --multilingual'})")
    if multilingual and not any(n in available_multilingual_sources() for n in names):
        fail("a multilingual starter needs the non-English sets of the development data "
             "(../shared/data, or --data DIR)")
    given = {"--state-dir": state_dir, "--data": data_dir, "--out": out, "--cache": cache_dir,
             "--limit": limit}
    command = " ".join(["bastion starter build",
                        *(f"{k} {v}" for k, v in given.items() if v is not None),
                        *(f"--source {s}" for s in sources),
                        *(["--no-cross-source"] if no_cross_source else []),
                        *(["--multilingual"] if multilingual else [])])
    model = build_from_sources(settings_for(state_dir), sources=names, cache_dir=cache_dir,
                               progress=progress, cross_source=not no_cross_source,
                               limit_per_source=limit, command=command,
                               multilingual=multilingual)
    path = write_starter(model, out or (MULTILINGUAL_DIR if multilingual else SHIPPED_DIR))
    for line in category_lines(model.metadata):
        click.echo(f"  {line}")
    click.echo(f"Wrote {path} (run 'bastion starter docs' to regenerate "
               "docs/starter-model.md).")


@starter.command("cascade", help="Fit the cascade's first stage for a starter artifact that "
                 "has none (default the shipped one): fitted on its training split, "
                 "calibrated on its validation split against its own heads, measured on its "
                 "test split. 'bastion starter build' does this as part of the build.")
@state_dir_option
@click.option("--model", "model_dir", type=click.Path(file_okay=False, exists=True,
              path_type=Path), default=None, help="The artifact (default: the shipped one).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Embedding cache folder (default the state directory's).")
@click.option("--max-test", type=click.IntRange(min=100), default=None,
              help="Measure on a random sample of N test items (default: all of them).")
@guard
def starter_cascade(state_dir: Path | None, model_dir: Path | None, cache_dir: Path | None,
                    max_test: int | None) -> None:
    from bastion.core.embcache import EmbeddingCache
    from bastion.core.encoders import create_encoder
    from bastion.core.model import ModerationModel
    from bastion.core.store import default_database_url
    from bastion.training.cascade import add_first_stage
    from bastion.training.datasets import load_starter_data
    from bastion.training.starter import split_masks

    path = model_dir or SHIPPED_DIR
    meta = json.loads((path / "metadata.json").read_text())
    built = set(meta.get("data", {}).get("sources", {}))
    names = [n for n in available_sources() if n in built]  # the build's order: same splits
    missing = sorted(built - set(names))
    if missing:
        fail(f"the artifact was built from {', '.join(missing)}, not available here (the "
             "development sets need ../shared/data or BASTION_DEV_DATA)")
    data = load_starter_data(sources=names)
    if data.fingerprint() != meta["data"]["fingerprint"]:
        fail(f"the labelled data here differs from what {path} was built from (data "
             "fingerprint); rebuild the whole artifact with 'bastion starter build'")
    encoder = create_encoder("minilm", precision="fp32")
    settings = settings_for(state_dir)
    cache = EmbeddingCache(default_database_url(cache_dir) if cache_dir
                           else settings.database_url, encoder)
    try:
        model: ModerationModel = add_first_stage(
            path, data, lambda texts: cache.embed(texts)[0], splits=split_masks(data.groups),
            max_test=max_test, encoder=encoder)
    finally:
        cache.close()
    write_starter(model, path)
    report = model.metadata["cascade"]["report"]
    click.echo(f"First stage decides {report['first_stage_share']:.1%} of {report['n_items']} "
               f"held-out items; decision agreement {report['decision_agreement']:.2%}")
    for key, m in report["per_key"].items():
        click.echo(f"  {key}: allows {m['missed']} of {m['n_flagged']} items the full model "
                   f"flags; AUROC cascade {report['auroc'].get(key, {}).get('cascade')} vs "
                   f"full {report['auroc'].get(key, {}).get('full')}")
    click.echo(f"Wrote {path}")


@starter.command("docs", help="Write docs/starter-model.md from the shipped artifact.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Default docs/starter-model.md of this checkout.")
@guard
def starter_docs(out: Path | None) -> None:
    meta = json.loads((SHIPPED_DIR / "metadata.json").read_text())
    extra = ""
    cases = Path(__file__).resolve().parents[1] / "bench/results/starter.json"
    if cases.exists():
        extra = plain_cases_section(json.loads(cases.read_text()))
    target = out or Path(__file__).resolve().parents[1] / "docs/starter-model.md"
    target.write_text(render_markdown(meta, artifact_digest(), extra))
    click.echo(f"Wrote {target}")


@starter.command("show", help="The shipped starter's categories, metrics and weak spots.")
@guard
def starter_show() -> None:
    if shipped_starter() is None:
        fail(f"no starter artifact in {SHIPPED_DIR}; run 'bastion starter build'")
    meta = json.loads((SHIPPED_DIR / "metadata.json").read_text())
    click.echo(f"Starter built {meta.get('created_at')} by {meta.get('command')}")
    for line in category_lines(meta):
        click.echo(f"  {line}")


@click.command(help="Retrain on the human labels (and the seed data) with Ray Train, register the "
             "result as @challenger and run the promotion gate. Mode and sizes default to the "
             "policy's 'retraining' section. Re-running an interrupted run resumes it.")
@state_dir_option
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
@click.option("--modality", type=click.Choice(["text", "image"]), default="text",
              show_default=True, help="text: the text model; image: the image heads, on the "
              "embeddings the event log kept of reviewed images (the backbone frozen).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@guard
def retrain(state_dir: Path | None, mode: str | None, workers: int | None, epochs: int | None,
            use_gpu: bool | None, seed_data: bool | None, davidson_limit: int | None,
            promote: bool | None, batch_size: int | None, max_length: int | None,
            max_failures: int | None, reason: str | None, modality: str,
            as_json: bool) -> None:

    settings = settings_for(state_dir)
    pol = load_policy(ensure_policy_file(settings))
    say = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    if modality == "image":
        if mode == "full" or workers or epochs or batch_size or max_length:
            fail("--modality image trains heads on the frozen image backbone: drop --mode "
                 "full, --workers, --epochs, --batch-size and --max-length")
        iopts = ImageRetrainOptions(
            promote=pol.retraining.auto_promote if promote is None else promote, reason=reason)
        try:
            result = retrain_images(settings, pol, iopts, say=say)
        finally:
            stop_ray(shutdown_serve=False)
    else:
        result = _retrain_text(settings, pol, say, mode=mode, workers=workers, epochs=epochs,
                               use_gpu=use_gpu, seed_data=seed_data,
                               davidson_limit=davidson_limit, promote=promote,
                               max_failures=max_failures, reason=reason, batch_size=batch_size,
                               max_length=max_length)
    what = "the image model's " if modality == "image" else ""
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2, default=str))
        return
    click.echo(result.gate_table)
    if result.promoted:
        click.echo(f"Version {result.version} passed the gate and is now {what}@champion; "
                   "serving follows within seconds.")
    elif result.gate_passed:
        click.echo(f"Version {result.version} passed the gate; it stays {what}@challenger "
                   f"(promote it with 'bastion promote {result.version}"
                   f"{' --modality image' if what else ''}').")
    else:
        click.echo(f"Version {result.version} did not pass the gate; it stays {what}"
                   f"@challenger and {what}@champion is unchanged.")
    click.echo(f"Timings (s): {json.dumps(result.timings_s)}")


def _retrain_text(settings: Settings, pol: PolicySet, say: Callable[[str], None], *,
                  batch_size: int | None, max_length: int | None, **flags: Any
                  ) -> RetrainResult:
    opts = options_from_policy(pol, **flags)
    ft = {k: v for k, v in {"batch_size": batch_size, "max_length": max_length}.items()
          if v is not None}
    if ft:
        opts = replace(opts, finetune=replace(opts.finetune, **ft))
    try:
        return run_retrain(settings, pol, opts, say=say)
    finally:
        stop_ray(shutdown_serve=False)


@click.command(help="Run the gate on VERSION against @champion and promote it if it passes.")
@state_dir_option
@click.argument("version")
@click.option("--force", is_flag=True, help="Promote even if the gate fails (recorded).")
@click.option("--reason", default=None, help="Why: kept in the audit trail.")
@click.option("--actor", default=None,
              help="Who asks, for the audit trail (default: the OS user; the console passes "
                   "the reviewer's name).")
@click.option("--modality", type=click.Choice(["text", "image"]), default="text",
              show_default=True, help="Which model VERSION is of: the text model or the image "
              "heads (gated on held-out reviewed images).")
@guard
def promote(state_dir: Path | None, version: str, force: bool, reason: str | None,
            actor: str | None, modality: str) -> None:
    settings = settings_for(state_dir)
    pol = load_policy(ensure_policy_file(settings))
    lc: Lifecycle
    if modality == "image":
        registry = ModelRegistry(settings, image_model_name(settings.model_name))
        registry.ensure_reachable()
        lc = ImageLifecycle(settings, pol, eval_data=image_heldout(settings, pol),
                            registry=registry)
    else:
        ModelRegistry(settings).ensure_reachable()  # before building the held-out data (slow)
        # the held-out data a retraining run under this policy gates on: one evaluation set
        lc = Lifecycle(settings, pol, eval_data=heldout_data(settings, pol))
    try:
        result = lc.promote(version, force=force, reason=reason, actor=actor)
    except GateRefused as err:
        click.echo(str(err))
        sys.exit(1)
    click.echo(result.report.to_table())
    how = "FORCED past a failing gate" if result.forced else "gate passed"
    click.echo(f"Promoted version {result.version} to @champion ({how}); previous champion: "
               f"{result.previous}. Serving follows within seconds.")
