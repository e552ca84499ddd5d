"""Errors of the k8s tooling. Each message says what is wrong, where, and how to fix it."""

from __future__ import annotations

from bastion.core.errors import ConfigError

__all__ = [
    "ManifestError", "KustomizeError", "KubectlNotFoundError", "ManifestInvalidError",
    "StaleGeneratedError",
]


class ManifestError(ConfigError):
    """Something under k8s/ is wrong."""


class KustomizeError(ManifestError):
    """``kubectl kustomize`` refuses a kustomization (missing file, bad patch, conflict)."""


class KubectlNotFoundError(ManifestError):
    """There is no kubectl to render kustomizations with."""


class ManifestInvalidError(ManifestError):
    """A rendered manifest does not validate against its schema."""


class StaleGeneratedError(ManifestError):
    """A committed generated file differs from what ``python -m k8s.render`` writes now."""
