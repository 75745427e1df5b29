"""A small name → factory registry, in the spirit of timm's ``register_model`` / ``create_model``.

Each kind of part (encoder, fusion, head) owns one :class:`Registry`; a module adds a part with a
decorator and callers build it by name::

    FUSIONS: Registry[Fusion] = Registry("fusion")

    @FUSIONS.register("dma")
    class DynamicModalAttention(Fusion): ...

    fusion = FUSIONS.create("dma", modalities=specs, width=32)

An unknown name, or a keyword the factory does not take, raises :class:`~mla.errors.MLAConfigError`
with the valid choices.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, cast

from mla.errors import MLAConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Named factories (usually classes) that build one kind of part.

    Args:
        kind: What the registry holds, used in messages (``"encoder"``, ``"fusion"``, ``"head"``).

    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """A decorator that registers a factory under ``name`` and returns it unchanged.

        Args:
            name: The registry name, a non-empty identifier such as ``"conv_pyramid"``.

        Raises:
            MLAConfigError: The name is not an identifier or is already taken.

        """
        if not name.isidentifier():
            msg = f"{self.kind} name {name!r} must be a Python identifier (letters, digits, underscores)"
            raise MLAConfigError(msg)

        def add(factory: F) -> F:
            if name in self._factories:
                msg = f"{self.kind} {name!r} is registered twice ({self._factories[name]!r} and {factory!r})"
                raise MLAConfigError(msg)
            self._factories[name] = cast(Callable[..., T], factory)
            logger.debug("registered %s %r", self.kind, name)
            return factory

        return add

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``.

        Raises:
            MLAConfigError: ``name`` is unknown; the message lists the valid names.

        """
        try:
            return self._factories[name]
        except KeyError:
            msg = f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}"
            raise MLAConfigError(msg) from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the part registered under ``name`` with keyword arguments.

        Raises:
            MLAConfigError: ``name`` is unknown, or the factory does not take these keywords (the
                message lists the ones it takes).

        """
        factory = self.get(name)
        signature = inspect.signature(factory)
        try:
            signature.bind(**kwargs)
        except TypeError as err:
            taken = ", ".join(signature.parameters) or "nothing"
            given = ", ".join(sorted(kwargs)) or "no arguments"
            msg = f"{self.kind} {name!r} cannot take {given} ({err}); it takes: {taken}"
            raise MLAConfigError(msg) from None
        return factory(**kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
