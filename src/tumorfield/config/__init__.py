"""Run configuration: TOML → checked, default-filled, typed sections, a grid and a model.

``load(path, overrides)`` / ``loads(text, source, overrides)`` return a
:class:`RunConfig`; every problem is a :class:`ConfigError` naming the file, the
key path, the bad value and what is allowed. The generic sections (``model``,
``grid``, ``time``, ``output``, ``run``) are in ``_sections``; each model adds
its own through ``Model.section_types``. ``config_docs()`` writes
``docs/config.md`` from the same classes.
"""

from .._schema import ConfigError as ConfigError
from ._docs import config_docs as config_docs
from ._loader import RunConfig as RunConfig
from ._loader import load as load
from ._loader import loads as loads
from ._memory import estimate_bytes as estimate_bytes
from ._sections import GENERIC_SECTIONS as GENERIC_SECTIONS
from ._sections import GridSection as GridSection
from ._sections import ModelSection as ModelSection
from ._sections import OutputSection as OutputSection
from ._sections import RunSection as RunSection
from ._sections import TimeSection as TimeSection
from ._toml import to_toml as to_toml

__all__ = [
    "ConfigError",
    "RunConfig",
    "load",
    "loads",
    "config_docs",
    "to_toml",
    "estimate_bytes",
    "GENERIC_SECTIONS",
    "ModelSection",
    "GridSection",
    "TimeSection",
    "OutputSection",
    "RunSection",
]
