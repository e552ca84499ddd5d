"""A tenant's policy applied to what the media deployments read from an image or a voice clip.

The text an image shows and the transcript of a clip go through the text path
(:func:`core.decision.decide`); this module adds what only media has: the image model's
categories, matches against the tenant's known-bad image hashes, the acoustic cues of a clip,
and, for a clip, the transcript span each text reason rests on, so that a moderator can play
exactly that span.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bastion.core.media import AcousticCues, hash_distance
from bastion.core.media import cue_reasons as media_cue_reasons
from bastion.core.policy import Action, AudioPolicy, ImagePolicy

__all__ = ["image_verdict", "cue_reasons", "flagged_span", "merge"]


def image_verdict(policy: ImagePolicy, facts: dict[str, Any]
                  ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The image categories' scores and the reasons that fired: a known-bad hash match first
    (a rule, like a keyword), then each category past its review or block threshold. A
    category's score is its trained head's (``facts["head_scores"]``, from the image model's
    ``@champion``) where there is one, else the shipped model's ``source`` output."""
    scores: dict[str, float] = {}
    reasons: list[dict[str, Any]] = []
    for hl in policy.hash_lists:
        best = min(hash_distance(facts["pdq"], h) for h in hl.hashes)
        if best <= hl.max_distance:
            reasons.append({"kind": "hash", "action": hl.action.value, "rule": hl.name,
                            "category": hl.category, "distance": best,
                            "threshold": hl.max_distance})
    probs = facts["image_scores"]
    heads = facts.get("head_scores") or {}
    for name, cat in policy.categories.items():
        if name in heads:  # a trained image head (the image model's @champion)
            s, by = round(float(heads[name]), 6), f"image heads v{facts.get('image_version')}"
        elif cat.source is not None and cat.source in probs:  # the backbone's own output
            s, by = round(float(probs[cat.source]), 6), f"image model {cat.source} output"
        else:
            continue  # no head trained for it yet, and the backbone has no such output
        scores[name] = s
        if cat.block_threshold is not None and s >= cat.block_threshold:
            reasons.append({"kind": "image_model", "category": name, "score": s,
                            "threshold": cat.block_threshold, "band": "block",
                            "action": cat.action.value, "threshold_source": "policy",
                            "scored_by": by})
        elif cat.review_threshold is not None and s >= cat.review_threshold:
            reasons.append({"kind": "image_model", "category": name, "score": s,
                            "threshold": cat.review_threshold, "band": "review",
                            "action": Action.review.value, "threshold_source": "policy",
                            "scored_by": by})
    return scores, reasons


def cue_reasons(policy: AudioPolicy, cues: dict[str, Any]) -> list[dict[str, Any]]:
    """A reason per acoustic cue past the tenant's thresholds (shouting, a sudden burst, a
    speech rate; ``core.media.cue_reasons``), each with its span and the policy's
    ``cue_action``."""
    fired = media_cue_reasons(AcousticCues.from_dict(cues), shout_lufs=policy.shout_lufs,
                              burst_db=policy.burst_db, max_words_per_s=policy.max_words_per_s)
    return [r | {"action": policy.cue_action.value} for r in fired]


def flagged_span(segments: Sequence[Sequence[Any]], seg_scores: np.ndarray | None,
                 column: int | None, phrase_hit: Any = None) -> dict[str, Any] | None:
    """The transcript segment a reason rests on: the one holding a keyword phrase
    (``phrase_hit(text) -> bool``), else the one scoring highest on the model's ``column``."""
    if not segments:
        return None
    pick: int | None = None
    if phrase_hit is not None:
        pick = next((i for i, (_, _, t) in enumerate(segments) if phrase_hit(t)), None)
    if pick is None and seg_scores is not None and column is not None and len(seg_scores):
        pick = int(np.argmax(seg_scores[:, column]))
    if pick is None:
        return None
    start, end, text = segments[pick]
    return {"start": float(start), "end": float(end), "text": str(text)}


def merge(decided: dict[str, Any], scores: dict[str, float],
          reasons: list[dict[str, Any]]) -> dict[str, Any]:
    """The text path's decision (``core.decision.decide``'s dict) with media scores and
    reasons added: the most severe reason decides, as in ``decide``. A score of the same name
    as a text category's keeps the higher of the two (each fired on its own threshold)."""
    out_scores = dict(decided["scores"])
    for name, s in scores.items():
        out_scores[name] = max(s, out_scores.get(name, 0.0))
    all_reasons = [r for r in decided["reasons"] if r["kind"] != "allow_list" or not reasons]
    all_reasons += reasons
    all_reasons.sort(key=lambda r: (-Action(r["action"]).severity, -r.get("score", 2.0)))
    decision = all_reasons[0]["action"] if all_reasons else Action.allow.value
    return {**decided, "decision": decision, "scores": out_scores, "reasons": all_reasons}
