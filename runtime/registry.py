"""One small keyed registry used by every plugin family (sources, backends, rules, sinks...)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from runtime.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a plugin key (the config's ``type``) to the plugin class."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, key: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.family} {key!r} registered twice")
            self._items[key] = item
            return item

        return decorator

    def get(self, key: str) -> T:
        try:
            return self._items[key]
        except KeyError:
            raise ConfigError(
                f"unknown {self.family} {key!r}; expected one of: {', '.join(self.keys())}"
            ) from None

    def keys(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


def import_submodules(package_name: str) -> None:
    """Import every module of a plugin package so each registers itself: one file per plugin."""
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
