"""Shadow challengers: a candidate scores a sample of live traffic beside the champion and
never decides (``bastion shadow start VERSION --sample 0.1``), or, as a canary, decides for a
share of one tenant's traffic (``--canary 0.05 --tenant acme``) and is taken off by itself
when its reviewed precision falls below the champion's.

What runs where:

- The registry holds the state: the alias ``@shadow`` names the version, the registered
  model's tag ``bastion.shadow`` its settings (:class:`ShadowConfig`); starting, stopping and
  a canary's rollback are audited like promotions.
- Serving follows it (``serving.scorer`` with ``alias="shadow"``; the Ingress samples items
  and writes the challenger's verdicts to the shadow log, ``core.shadow_events``). The
  shadow Scorer replica also runs the canary guard (:func:`guard_canary`).
- :func:`shadow_report` compares the two per tenant and category: agreement, what the
  challenger would have blocked or allowed differently (examples only where the tenant's
  policy keeps raw text), its precision on the items moderators reviewed, latency.
- :func:`shadow_checks`: the gate's shadow evidence, where the policy asks for it
  (``gate.shadow_min_items``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from bastion.core.aggregation import dawid_skene_weights
from bastion.core.errors import BastionError, RegistryEmptyError
from bastion.core.events import DecisionEvent, EventLog
from bastion.core.labels import LabelStore, item_key
from bastion.core.policy import PolicySet
from bastion.core.settings import Settings
from bastion.core.shadow_events import ShadowConfig, ShadowEvent, ShadowLog, bands_of
from bastion.registry.aliases import CHAMPION, SHADOW
from bastion.registry.report import Check, fmt
from bastion.registry.store import ModelRegistry

__all__ = ["ShadowConfig", "ShadowReport", "CategoryShadow", "shadow_config", "start_shadow",
           "build_report", "canary_rows", "evidence_checks", "canary_precision",
           "stop_shadow", "shadow_report", "shadow_checks", "guard_canary", "SHADOW_ITEMS",
           "SHADOW_PRECISION"]

SHADOW_TAG = "bastion.shadow"
SHADOW_ITEMS = "shadow_items"  # the gate's checks
SHADOW_PRECISION = "shadow_precision"
EXAMPLES = 3  # per category and kind of difference, in a report


def shadow_config(registry: ModelRegistry) -> ShadowConfig | None:
    """The shadow run now in force: the tag's settings while ``@shadow`` names its version."""
    raw = (registry.client.get_registered_model(registry.name).tags or {}).get(SHADOW_TAG)
    if not raw:
        return None
    config = ShadowConfig.from_json(json.loads(raw))
    try:
        if registry.by_alias(SHADOW).version != config.version:
            return None
    except RegistryEmptyError:
        return None
    return config


def _save(registry: ModelRegistry, config: ShadowConfig) -> None:
    registry.client.set_registered_model_tag(registry.name, SHADOW_TAG,
                                             json.dumps(config.to_json(), sort_keys=True))


def start_shadow(registry: ModelRegistry, version: str, *, sample: float = 0.1,
                 canary: float | None = None, tenant: str | None = None,
                 tenants: Collection[str] = (), min_reviewed: int = 10,
                 actor: str | None = None, reason: str | None = None) -> ShadowConfig:
    """Shadow ``version`` on ``sample`` of live items; with ``canary``, let it decide that
    share of ``tenant``'s requests too. Replaces a shadow run already going.

    Raises:
        BastionError: the version is the champion, or a setting is out of range (the message
            says which and how to fix it).
        ModelError: no such version.
    """
    version = registry.get(version).version
    try:
        champion = registry.by_alias(CHAMPION).version
    except RegistryEmptyError:
        champion = None
    if version == champion:
        raise BastionError(f"version {version} is @{CHAMPION} already: shadow a candidate "
                           "(see 'bastion models list')")
    if not 0 < sample <= 1:
        raise BastionError(f"--sample must be in (0, 1], got {sample}: e.g. 0.1 shadows one "
                           "item in ten")
    if canary is not None:
        if not 0 < canary <= 0.5:
            raise BastionError(f"--canary must be in (0, 0.5], got {canary}: e.g. 0.05 lets "
                               "the challenger decide one request in twenty")
        if tenant is None:
            raise BastionError("--canary needs --tenant: a canary decides for one tenant's "
                               "traffic only")
        if tenants and tenant not in tenants:
            raise BastionError(f"tenant {tenant!r} is not in the policy; tenants: "
                               f"{sorted(tenants)}")
    elif tenant is not None:
        raise BastionError("--tenant goes with --canary (a shadow samples every tenant)")
    if min_reviewed < 1:
        raise BastionError("--min-reviewed must be at least 1")
    previous = shadow_config(registry)
    config = ShadowConfig(version=version, sample=float(sample), started_at=time.time(),
                          canary=None if canary is None else float(canary),
                          canary_tenant=tenant, min_reviewed=int(min_reviewed))
    _save(registry, config)
    registry.client.set_registered_model_alias(registry.name, SHADOW, version)
    registry.audit("shadow_started", version=version, champion=champion, sample=sample,
                   canary=canary, tenant=tenant, actor=actor, reason=reason,
                   replaced=None if previous is None else previous.version)
    return config


def stop_shadow(registry: ModelRegistry, *, actor: str | None = None,
                reason: str | None = None) -> ShadowConfig | None:
    """End the shadow run (and its canary): serving stops sampling within seconds. None if
    there was none."""
    config = shadow_config(registry)
    try:
        registry.client.delete_registered_model_alias(registry.name, SHADOW)
    except Exception:  # noqa: BLE001 - no alias: nothing was shadowing
        pass
    if config is not None:
        registry.audit("shadow_stopped", version=config.version, actor=actor, reason=reason)
    return config


def stop_canary(registry: ModelRegistry, config: ShadowConfig, why: dict[str, Any],
                actor: str = "canary guard") -> ShadowConfig:
    """Take the canary off (the shadow sample goes on); ``why`` is kept with the config and
    in the audit trail."""
    stopped = replace(config, canary_stopped={**why, "at": time.time(), "actor": actor})
    _save(registry, stopped)
    registry.audit("canary_rolled_back", version=config.version, tenant=config.canary_tenant,
                   actor=actor, **why)
    return stopped


# -- the report ----------------------------------------------------------------------------

@dataclass
class CategoryShadow:
    """One (tenant, category) of a shadow run."""

    tenant: str
    category: str
    n: int = 0  # shadowed items scored for it
    agree: int = 0  # same band (block, review or allow) as the champion
    newly_blocked: int = 0  # the challenger would block, the champion did not
    newly_allowed: int = 0  # the champion flagged (block or review), the challenger would not
    newly_flagged: int = 0  # the challenger would send to review or block, the champion allowed
    reviewed: int = 0  # shadowed items moderators labelled for it
    champion_flagged: int = 0  # of the reviewed, flagged by each
    challenger_flagged: int = 0
    champion_precision: float | None = None  # positives among those flagged (soft labels)
    challenger_precision: float | None = None
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def agreement(self) -> float | None:
        return self.agree / self.n if self.n else None


@dataclass
class ShadowReport:
    version: str
    champions: list[str]  # the champion versions it was compared with
    config: ShadowConfig | None
    n: int
    tenants: dict[str, dict[str, Any]]  # per tenant: n, agreement, decision changes
    categories: list[CategoryShadow]
    latency_ms: dict[str, float | None]
    canary: list[dict[str, Any]] | None = None  # per category: reviewed precision of each

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "champions": self.champions, "n": self.n,
            "config": None if self.config is None else self.config.to_json(),
            "tenants": self.tenants, "latency_ms": self.latency_ms,
            "categories": [{**asdict(c), "agreement": _r(c.agreement),
                            "champion_precision": _r(c.champion_precision),
                            "challenger_precision": _r(c.challenger_precision)}
                           for c in self.categories],
            "canary": self.canary,
        }

    def to_table(self) -> str:
        lat = self.latency_ms
        lines = [f"Shadow of v{self.version} beside champion "
                 f"{', '.join('v' + c for c in self.champions) or '-'}: {self.n} item(s)"]
        if self.config is not None:
            lines.append(f"  sample {self.config.sample:g}"
                         + (f", canary {self.config.canary:g} of {self.config.canary_tenant}"
                            if self.config.canary else "")
                         + (f" (canary rolled back: {self.config.canary_stopped.get('why')})"
                            if self.config.canary_stopped else ""))
        lines.append(f"  latency ms: champion p50 {fmt(lat.get('champion_p50'))} p99 "
                     f"{fmt(lat.get('champion_p99'))}; challenger p50 "
                     f"{fmt(lat.get('shadow_p50'))} p99 {fmt(lat.get('shadow_p99'))}")
        for t, row in sorted(self.tenants.items()):
            changes = ", ".join(f"{k} {v}" for k, v in sorted(row["changes"].items()))
            lines.append(f"  {t}: {row['n']} item(s), decisions agree "
                         f"{fmt(row['agreement'])}{'; ' + changes if changes else ''}")
        header = ("tenant", "category", "n", "agree", "+block", "+allow", "+flag", "reviewed",
                  "champ prec", "chall prec")
        rows = [header] + [
            (c.tenant, c.category, str(c.n), fmt(c.agreement), str(c.newly_blocked),
             str(c.newly_allowed), str(c.newly_flagged), str(c.reviewed),
             f"{fmt(c.champion_precision)} ({c.champion_flagged})",
             f"{fmt(c.challenger_precision)} ({c.challenger_flagged})")
            for c in self.categories]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines.append("")
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                  for r in rows]
        shown = [(c, kind, ex) for c in self.categories for kind, ex in c.examples.items() if ex]
        if shown:
            lines += ["", "Examples (where the tenant's policy keeps raw text):"]
            for c, kind, ex in shown:
                lines += [f"  {c.tenant}/{c.category} {kind}: {e[:120]!r}" for e in ex]
        if self.canary:
            lines += ["", "Canary (reviewed precision of the decisions each version made):"]
            lines += [f"  {r['tenant']}/{r['category']}: challenger {fmt(r['challenger'])} "
                      f"({r['challenger_n']}) vs champion {fmt(r['champion'])} "
                      f"({r['champion_n']})" for r in self.canary]
        return "\n".join(lines)


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _soft_labels(settings: Settings, tenants: Iterable[str]) -> dict[tuple[str, str], float]:
    """(item key, category) -> the moderators' aggregated label, reviewed labels only."""
    store = LabelStore(settings.database_url)
    try:
        votes = store.votes(tenants=sorted(set(tenants)), reviewed=True)
    finally:
        store.close()
    return {k: soft for k, (soft, _w) in dawid_skene_weights(votes).items()} if votes else {}


def _precision(flags: list[bool], soft: list[float], least: int) -> tuple[int, float | None]:
    picked = [s for f, s in zip(flags, soft, strict=True) if f]
    return len(picked), (float(np.mean(picked)) if len(picked) >= least else None)


def shadow_report(settings: Settings, registry: ModelRegistry, version: str | None = None,
                  min_reviewed: int = 10) -> ShadowReport:
    """Compare the challenger's shadow verdicts with the champion's decisions.

    Args:
        version: the challenger; default the one ``@shadow`` names now.
        min_reviewed: flagged reviewed items a version needs before its precision counts.

    Raises:
        BastionError: no version given and no shadow run going.
    """
    config = shadow_config(registry)
    if version is None:
        if config is None:
            raise BastionError("no shadow run is going: start one with 'bastion shadow start "
                               "VERSION', or name the version to report on")
        version = config.version
    version = str(version)
    if config is not None and config.version != version:
        config = None
    log = ShadowLog(settings.database_url)
    try:
        shadowed = list(log.read(version=version))
    finally:
        log.close()
    soft = _soft_labels(settings, {e.tenant for e in shadowed})
    report = build_report(version, config, shadowed, soft, min_reviewed)
    if config is not None and config.canary_tenant is not None:
        report.canary = canary_precision(settings, config)
    return report


def build_report(version: str, config: ShadowConfig | None, shadowed: list[ShadowEvent],
                 soft: Mapping[tuple[str, str], float], min_reviewed: int = 10
                 ) -> ShadowReport:
    """The report on ``shadowed`` (one challenger's verdicts), with ``soft``: (item key,
    category) -> the moderators' aggregated label of each reviewed item."""
    tenants: dict[str, dict[str, Any]] = {}
    cats: dict[tuple[str, str], CategoryShadow] = {}
    judged: dict[tuple[str, str], tuple[list[bool], list[bool], list[float]]] = {}
    for e in shadowed:
        row = tenants.setdefault(e.tenant, {"n": 0, "agree": 0, "changes": Counter()})
        row["n"] += 1
        row["agree"] += e.decision == e.champion_decision
        if e.decision != e.champion_decision:
            row["changes"][f"{e.champion_decision}->{e.decision}"] += 1
        for cat in sorted(set(e.scores) | set(e.champion_scores)):
            c = cats.setdefault((e.tenant, cat), CategoryShadow(e.tenant, cat))
            mine, theirs = e.bands.get(cat, "allow"), e.champion_bands.get(cat, "allow")
            c.n += 1
            c.agree += mine == theirs
            kind = None
            if mine == "block" and theirs != "block":
                c.newly_blocked += 1
                kind = "would block"
            elif mine == "allow" and theirs != "allow":
                c.newly_allowed += 1
                kind = "would allow"
            elif mine != "allow" and theirs == "allow":
                c.newly_flagged += 1
                kind = "would flag"
            if kind and e.text:
                shown = c.examples.setdefault(kind, [])
                if len(shown) < EXAMPLES:
                    shown.append(e.text)
            label = soft.get((item_key(e.tenant, e.item_id), cat))
            if label is not None:
                fl = judged.setdefault((e.tenant, cat), ([], [], []))
                fl[0].append(theirs != "allow")
                fl[1].append(mine != "allow")
                fl[2].append(label)
    for key, (champ, chall, labels) in judged.items():
        c = cats[key]
        c.reviewed = len(labels)
        c.champion_flagged, c.champion_precision = _precision(champ, labels, min_reviewed)
        c.challenger_flagged, c.challenger_precision = _precision(chall, labels, min_reviewed)
    for row in tenants.values():
        row["agreement"] = round(row.pop("agree") / row["n"], 4)
        row["changes"] = dict(row["changes"])
    lat: dict[str, float | None] = {}
    for name, xs in (("champion", [e.champion_ms for e in shadowed if e.champion_ms]),
                     ("shadow", [e.shadow_ms for e in shadowed if e.shadow_ms])):
        lat[f"{name}_p50"] = _r(float(np.percentile(xs, 50))) if xs else None
        lat[f"{name}_p99"] = _r(float(np.percentile(xs, 99))) if xs else None
    return ShadowReport(
        version=version, champions=sorted({e.champion_version for e in shadowed}, key=_num),
        config=config, n=len(shadowed), tenants=tenants,
        categories=[cats[k] for k in sorted(cats)], latency_ms=lat)


def _num(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


# -- the canary ------------------------------------------------------------------------------

def canary_precision(settings: Settings, config: ShadowConfig) -> list[dict[str, Any]]:
    """Per category of the canary tenant: the reviewed precision of the decisions the
    challenger made (its canary share) and of those the champion made, since the canary
    started. Precision: positives (moderators' aggregated labels) among the items a version
    flagged (block or review) that moderators reviewed."""
    tenant = str(config.canary_tenant)
    log = EventLog(settings.database_url)
    try:
        decided = list(log.read(tenant=tenant, since=config.started_at, modality="text"))
    finally:
        log.close()
    return canary_rows(config, decided, _soft_labels(settings, [tenant]))


def canary_rows(config: ShadowConfig, decided: Iterable[DecisionEvent],
                soft: Mapping[tuple[str, str], float]) -> list[dict[str, Any]]:
    """Per category: the reviewed precision of the canary tenant's decisions ``decided``
    by the challenger and by the champion (None under ``min_reviewed`` items)."""
    tenant = str(config.canary_tenant)
    per: dict[str, dict[str, list[float]]] = {}
    for e in decided:
        who = "challenger" if e.model_version == config.version else "champion"
        for cat in bands_of(e.reasons):
            label = soft.get((item_key(tenant, e.item_id), cat))
            if label is not None:
                per.setdefault(cat, {"challenger": [], "champion": []})[who].append(label)
    out = []
    for cat, by in sorted(per.items()):
        row: dict[str, Any] = {"tenant": tenant, "category": cat}
        for who, labels in sorted(by.items()):
            row[f"{who}_n"] = len(labels)
            row[who] = (round(float(np.mean(labels)), 4)
                        if len(labels) >= config.min_reviewed else None)
        out.append(row)
    return out


def guard_canary(settings: Settings, registry: ModelRegistry) -> dict[str, Any] | None:
    """Roll the canary back when, for a category of its tenant, its reviewed precision is
    below the champion's (each measured on at least ``min_reviewed`` items). What the shadow
    Scorer runs every ``serving.canary_check_s``; returns why it rolled back, else None."""
    config = shadow_config(registry)
    if config is None or not config.canary_active:
        return None
    for row in canary_precision(settings, config):
        mine, theirs = row.get("challenger"), row.get("champion")
        if mine is not None and theirs is not None and mine < theirs:
            why = {"why": f"{row['tenant']}/{row['category']}: reviewed precision "
                          f"{mine:.3f} on {row['challenger_n']} item(s) < the champion's "
                          f"{theirs:.3f} on {row['champion_n']}",
                   "category": row["category"], "challenger": mine, "champion": theirs}
            stop_canary(registry, config, why)
            return why
    return None


# -- the gate ---------------------------------------------------------------------------------

def shadow_checks(settings: Settings, registry: ModelRegistry, version: str,
                  policy: PolicySet) -> list[Check]:
    """The gate's shadow evidence for ``version``, where the policy requires it
    (``gate.shadow_min_items`` > 0): enough shadowed items, and per (tenant, category) a
    precision on reviewed shadowed items no more than ``gate.shadow_max_precision_drop`` below
    the champion's on the same items (not measurable with fewer than ``shadow_min_reviewed``
    flagged by either)."""
    gate = policy.gate
    if gate.shadow_min_items <= 0:
        return []
    return evidence_checks(shadow_report(settings, registry, version, gate.shadow_min_reviewed),
                           policy)


def evidence_checks(report: ShadowReport, policy: PolicySet) -> list[Check]:
    """:func:`shadow_checks` on a report already built."""
    gate = policy.gate
    version = report.version
    n, least = report.n, gate.shadow_min_items
    checks = [Check(None, None, SHADOW_ITEMS, n >= least, float(n), float(least),
                    f"v{version} scored {n} live item(s) in the shadow of the champion "
                    f"({'>=' if n >= least else '<'} {least} required"
                    + ("" if n >= least else
                       f"; run 'bastion shadow start {version}' and let traffic flow") + ")")]
    for c in report.categories:
        if c.tenant not in policy.tenants or c.category not in policy.tenants[c.tenant].categories:
            continue
        mine, theirs = c.challenger_precision, c.champion_precision
        where = f"{c.tenant}/{c.category}"
        if mine is None or theirs is None:
            checks.append(Check(c.tenant, c.category, SHADOW_PRECISION, None, mine, theirs,
                                f"{where}: {c.reviewed} reviewed shadowed item(s), flagged "
                                f"{c.challenger_flagged} by v{version} and "
                                f"{c.champion_flagged} by the champion: fewer than "
                                f"{gate.shadow_min_reviewed} to compare precision"))
            continue
        floor = theirs - gate.shadow_max_precision_drop
        ok = mine >= floor
        checks.append(Check(c.tenant, c.category, SHADOW_PRECISION, ok, mine, floor,
                            f"{where}: precision on reviewed shadowed items {mine:.3f} "
                            f"{'>=' if ok else '<'} {floor:.3f} (the champion's {theirs:.3f} "
                            f"less {gate.shadow_max_precision_drop:g})"))
    return checks
