"""Errors of the k8s tooling. Each message says what is wrong, where, and how to fix it."""

from __future__ import annotations

from bastion.core.errors import ConfigError

__all__ = ["ManifestError", "KustomizeError", "ManifestInvalidError", "StaleGeneratedError"]


class ManifestError(ConfigError):
    """Something under k8s/ is wrong."""


class KustomizeError(ManifestError):
    """A kustomization cannot be built (missing file, unsupported feature, bad patch)."""


class ManifestInvalidError(ManifestError):
    """A rendered manifest does not validate against its schema."""


class StaleGeneratedError(ManifestError):
    """A committed generated file differs from what ``python -m k8s.render`` writes now."""
