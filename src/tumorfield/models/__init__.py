"""Model registry: config ``[model] name`` → :class:`Model` subclass."""

from ._base import Model as Model

REGISTRY: dict[str, type[Model]] = {}


def register(cls: type[Model]) -> type[Model]:
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Model]:
    _load_builtin()
    return REGISTRY[name]


def names() -> tuple[str, ...]:
    _load_builtin()
    return tuple(sorted(REGISTRY))


def _load_builtin() -> None:
    import importlib

    for module in ("fisher_kpp", "voloshin2015"):
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as error:  # a model still being written
            if error.name != f"{__name__}.{module}":
                raise
