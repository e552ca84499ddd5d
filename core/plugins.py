"""A small plug-in registry: ``@register("name")`` and ``create(name, **cfg)`` (timm's pattern,
without its silent overwrite: a duplicate name raises, an unknown one lists the known ones)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from bastion.core.errors import UnknownPluginError

__all__ = ["PluginRegistry"]

T = TypeVar("T")


class PluginRegistry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return deco

    def create(self, name: str, **cfg: object) -> T:
        try:
            factory = self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories)) or "none"
            raise UnknownPluginError(f"unknown {self.kind} {name!r}; known: {known}") from None
        return factory(**cfg)

    def names(self) -> list[str]:
        return sorted(self._factories)
