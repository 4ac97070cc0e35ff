"""One tiny registry class, instantiated once per component family.

Config files refer to components by registry name (``{name: cnn, kwargs: {width: 32}}``); user
code plugs in through the config's explicit ``plugins`` list (modules imported by name), never
through executable YAML.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from mmdistill.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component: the callable that builds it, a one-line description, metadata."""

    name: str
    obj: T
    description: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A name → component mapping with did-you-mean errors.

    Example:
        >>> ENCODERS = Registry("encoder")
        >>> @ENCODERS.register("cnn", modality="image")
        ... class CNN: ...
        >>> ENCODERS.get("cnn") is CNN
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, description: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; the description defaults to its docstring's
        first line."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            doc = description or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
            self._entries[name] = Entry(name=name, obj=obj, description=doc, meta=dict(meta))
            return obj

        return deco

    def entry(self, name: str, *, key: str | None = None) -> Entry[T]:
        """The entry for ``name``; unknown names raise :class:`ConfigError` with a suggestion.

        Args:
            name: registry name.
            key: config key path the name came from, used in the error message.
        """
        if name not in self._entries:
            raise ConfigError(self.unknown_message(name, key=key))
        return self._entries[name]

    def get(self, name: str, *, key: str | None = None) -> T:
        """The registered object for ``name``."""
        return self.entry(name, key=key).obj

    def build(self, name: str, *, key: str | None = None, **kwargs: Any) -> Any:
        """Call the registered object with ``kwargs``."""
        return self.get(name, key=key)(**kwargs)  # type: ignore[operator]

    def unknown_message(self, name: str, *, key: str | None = None) -> str:
        """``unknown encoder 'cnnn'; did you mean 'cnn'? available: cnn, lstm``."""
        where = f"{key}: " if key else ""
        close = difflib.get_close_matches(str(name), list(self._entries), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{where}unknown {self.kind} '{name}'{hint} available: {', '.join(self.names()) or '(none)'}"

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        """Registered entries, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
