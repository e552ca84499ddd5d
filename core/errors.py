"""Errors of the shared core. Each message says what is wrong, where, and how to fix it."""

from __future__ import annotations

__all__ = [
    "BastionError",
    "ConfigError",
    "PolicyError",
    "ModelError",
    "RegistryEmptyError",
    "RegistryUnavailableError",
    "UnknownPluginError",
    "LabelError",
    "StoreError",
]


class BastionError(Exception):
    """Base class of every error Bastion raises on purpose."""


class ConfigError(BastionError):
    """Platform settings are missing or invalid."""


class PolicyError(ConfigError):
    """A tenant policy file is invalid; the message names the file, the key and the fix."""


class ModelError(BastionError):
    """A model artifact is missing, corrupt, or does not match what was asked for."""


class RegistryEmptyError(ModelError):
    """The registry holds no champion model yet."""


class RegistryUnavailableError(BastionError):
    """The MLflow tracking server (the model registry) cannot be reached."""


class LabelError(BastionError):
    """A label, labelled item or label file is invalid, or conflicts with what the store holds."""


class StoreError(BastionError):
    """The database is unreachable, or its schema is not the one this code needs."""


class UnknownPluginError(BastionError, KeyError):
    """A plug-in (encoder, head) name is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""
