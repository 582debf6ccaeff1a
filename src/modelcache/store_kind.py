"""`StoreKind`: which store a file was found in. Declared by the store modules, one kind each.

Its own module because everything names a kind (the inventory's records, the planner's rules, the
report's titles) while the kinds themselves are declared by the store modules, which import the
inventory: this module imports nothing of modelcache at load time.
"""

from __future__ import annotations

from collections.abc import Iterator


class _Kinds(type):
    """The class of `StoreKind`: iterating it lists every store's kind, in rank order.

    The kinds are declared by the store modules (`stores/`), one module per store; listing them
    loads those modules through `stores.registry`. That import is made when a kind is first
    asked for, never when this module loads: the store modules import this one.
    """

    def __iter__(cls) -> Iterator[StoreKind]:
        _load()
        return iter(sorted(_KINDS.values(), key=_rank))

    def __getattr__(cls, name: str) -> StoreKind:
        # `StoreKind.OLLAMA`: `declare` sets the attribute; this finds it when its module is not loaded yet.
        if not name.isupper():
            raise AttributeError(name)
        _load()
        kind = _KINDS.get(name.lower())
        if kind is None:
            raise AttributeError(name)
        return kind


class StoreKind(str, metaclass=_Kinds):
    """Which layout a file was found in, as JSON and `--store` spell it (a `str`: `"ollama"`).

    One object per kind, so that records compare theirs by identity. Each store module declares
    its kind once (`StoreKind.declare("ollama", rank=40)`); the rank is the order in which stores
    own a shared inode and in which `consolidate` picks the copy to keep (the HF cache first: it
    is what most tools read). `StoreKind("ollama")` finds a kind; iterating `StoreKind` lists them
    all, in rank order; `StoreKind.OLLAMA` names one.
    """

    value: str
    rank: int

    def __new__(cls, value: str) -> StoreKind:
        kind = _KINDS.get(value)
        if kind is None:
            _load()
            kind = _KINDS.get(value)
        if kind is None:
            raise ValueError(f"{value!r} is not a valid StoreKind")
        return kind

    @classmethod
    def declare(cls, value: str, rank: int) -> StoreKind:
        """The kind `value`, made once (a store module declares its own); ranks are unique."""
        kind = _KINDS.get(value)
        if kind is not None:
            if kind.rank != rank:
                raise ValueError(f"store kind {value!r} declared with ranks {kind.rank} and {rank}")
            return kind
        taken = next((k for k in _KINDS.values() if k.rank == rank), None)
        if taken is not None:
            raise ValueError(f"store kinds {taken.value!r} and {value!r} both declare rank {rank}")
        kind = str.__new__(cls, value)
        kind.value = str(value)
        kind.rank = rank
        _KINDS[value] = kind
        type.__setattr__(cls, value.upper(), kind)
        return kind

    @property
    def name(self) -> str:
        return self.value.upper()

    def __repr__(self) -> str:
        return f"<StoreKind.{self.name}: {self.value!r}>"

    def __str__(self) -> str:
        return f"StoreKind.{self.name}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __reduce__(self) -> tuple[type[StoreKind], tuple[str]]:  # pickled, copied: the same object back
        return (StoreKind, (self.value,))


_KINDS: dict[str, StoreKind] = {}
_loaded = False


def _rank(kind: StoreKind) -> int:
    return kind.rank


def _load() -> None:
    """Import every store module, so that every kind is declared (once per process)."""
    global _loaded
    if not _loaded:
        from .stores.registry import specs

        specs()
        _loaded = True
