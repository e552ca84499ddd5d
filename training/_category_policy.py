"""Line edits of a tenant policy file for ``bastion category``: a new category after the
tenant's last one, a calibrated block threshold in place; every other line (comments, aligned
columns, hand-wrapped lists) stays as the person who keeps the file wrote it."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import yaml

from bastion.core.errors import BastionError
from bastion.core.policy import PolicySet, parse_policy
from bastion.review.calibration import Proposal
from bastion.review.calibration import apply as apply_proposals

__all__ = ["CategoryError", "parse_text", "policy_with_block_threshold",
           "policy_with_category", "read_policy", "write_policy"]


class CategoryError(BastionError):
    """A category cannot be added or changed as asked (bad input, a policy file that cannot be
    edited, or the gate refused the version); nothing was changed."""


def read_policy(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CategoryError(f"{path}: no such policy file; run 'bastion up' once to write "
                            "the default one, or pass --policy FILE") from None


def _categories(text: str, tenant: str) -> dict[str, tuple[int, int]]:
    """Where each of the tenant's category keys is in the file, ``name -> (line, column)``
    (0-based), from PyYAML's node tree: the file is edited line by line, never dumped back (a
    dump would reflow the hand-formatted lists and aligned columns of a policy a person
    keeps, and drop its comments)."""
    def child(node: Any, key: str, where: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            raise CategoryError(f"{where} is not a mapping")
        for k, v in node.value:
            if k.value == key:
                return v
        raise CategoryError(f"{where} has no key {key!r}")

    cats = child(child(child(yaml.compose(text), "tenants", "the policy"), tenant, "tenants"),
                 "categories", f"tenants.{tenant}")
    if not isinstance(cats, yaml.MappingNode) or cats.flow_style:
        raise CategoryError(f"tenants.{tenant}.categories is not written one category a line "
                            "(block style); write it so to let 'bastion category' edit it")
    return {k.value: (k.start_mark.line, k.start_mark.column) for k, _ in cats.value}


def _entry_lines(lines: list[str], line: int, col: int) -> tuple[int, int]:
    """Lines ``[line, end)`` of the mapping entry whose key is at ``(line, col)``: it goes on
    while lines are blank or indented past the key (YAML's rule for what belongs to it)."""
    end = line + 1
    while end < len(lines) and (not lines[end].strip()
                                or len(lines[end]) - len(lines[end].lstrip()) > col):
        end += 1
    while end > line + 1 and not lines[end - 1].strip():
        end -= 1
    return line, end


def _flow_entry(name: str, value: dict[str, Any], col: int) -> str:
    body = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000)
    return f"{' ' * col}{name}: {body.strip()}\n"


def policy_with_category(text: str, tenant: str, name: str, review: float, head: str,
                         target: float, description: str) -> str:
    """The policy file's text with ``name`` added after the tenant's last category, review-only
    (``review_threshold``, the ``head``, the target as its gate's ``min_precision``), under a
    comment saying where it came from; every other line is left as it was."""
    cats = _categories(text, tenant)
    line, col = list(cats.values())[-1]
    lines = text.splitlines(keepends=True)
    _, end = _entry_lines(lines, line, col)
    if not lines[end - 1].endswith("\n"):
        lines[end - 1] += "\n"
    note = (f"added by 'bastion category add' ({time.strftime('%Y-%m-%d')}): "
            f"{' '.join(description.split())}; review-only until 'bastion category status "
            f"{tenant} {name}' proposes a block threshold")
    comment = [f"{' ' * col}# {part}\n" for part in textwrap.wrap(note, 96 - col)]
    entry = _flow_entry(name, {"review_threshold": review, "head": head, "severity": 1,
                               "gate": {"min_precision": target}}, col)
    return "".join(lines[:end] + comment + [entry] + lines[end:])


def policy_with_block_threshold(text: str, proposal: Proposal) -> str:
    """The policy file's text with calibration's ``proposal`` applied
    (``review.calibration.apply``) to its one category, rewritten as one line; every other
    line is left as it was.

    Raises:
        CategoryError: the proposal has no block threshold.
    """
    if proposal.proposed_block is None:
        raise CategoryError(f"no block threshold to apply for {proposal.tenant}/"
                            f"{proposal.category}: {proposal.reason}")
    plain = apply_proposals(yaml.safe_load(text), [proposal])
    value = plain["tenants"][proposal.tenant]["categories"][proposal.category]
    first = ("block_threshold", "review_threshold")  # the thresholds lead, as people write it
    value = {k: value[k] for k in first if k in value} | {
        k: v for k, v in value.items() if k not in first}
    line, col = _categories(text, proposal.tenant)[proposal.category]
    lines = text.splitlines(keepends=True)
    _, end = _entry_lines(lines, line, col)
    return "".join(lines[:line] + [_flow_entry(proposal.category, value, col)] + lines[end:])


def parse_text(text: str, source: str) -> PolicySet:
    return parse_policy(yaml.safe_load(text), source)


def write_policy(path: Path, text: str) -> Path:
    """Replace the policy file atomically, keeping the old one beside it; returns the backup."""
    backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%dT%H%M%S')}")
    backup.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return backup
