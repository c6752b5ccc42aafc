"""tumorfield: differentiable reaction–diffusion–taxis simulation of tumour invasion.

The numerical core lives in :mod:`tumorfield_kernels`; this package re-exports
its public API and adds the application (models, config, I/O, CLI).

The names below are loaded on first use (PEP 562 ``__getattr__``): ``import tumorfield``, and so
``tumorfield --help`` and the CLI's argument errors, do not import JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the same names for type checkers and documentation tools (read, never run)
    from tumorfield_kernels import RESULTS as RESULTS
    from tumorfield_kernels import CellDiffusion as CellDiffusion
    from tumorfield_kernels import ExplicitDiffusion as ExplicitDiffusion
    from tumorfield_kernels import Grid as Grid
    from tumorfield_kernels import ImplicitDiffusion as ImplicitDiffusion
    from tumorfield_kernels import NoSubcycling as NoSubcycling
    from tumorfield_kernels import Numerics as Numerics
    from tumorfield_kernels import SaveAt as SaveAt
    from tumorfield_kernels import Scan as Scan
    from tumorfield_kernels import SolverError as SolverError
    from tumorfield_kernels import SqrtCheckpointed as SqrtCheckpointed
    from tumorfield_kernels import StateDependent as StateDependent
    from tumorfield_kernels import Stats as Stats
    from tumorfield_kernels import Stepper as Stepper
    from tumorfield_kernels import Subcycle as Subcycle
    from tumorfield_kernels import Substeps as Substeps
    from tumorfield_kernels import System as System
    from tumorfield_kernels import Taxis as Taxis
    from tumorfield_kernels import Trajectory as Trajectory
    from tumorfield_kernels import Unchecked as Unchecked
    from tumorfield_kernels import WithGrid as WithGrid
    from tumorfield_kernels import advance as advance
    from tumorfield_kernels import cast_floats as cast_floats
    from tumorfield_kernels import failure_message as failure_message
    from tumorfield_kernels import initial_frame as initial_frame
    from tumorfield_kernels import make_stepper as make_stepper
    from tumorfield_kernels import max_stable_dt as max_stable_dt
    from tumorfield_kernels import max_stable_dt_over_run as max_stable_dt_over_run
    from tumorfield_kernels import positivity_violations as positivity_violations
    from tumorfield_kernels import simulate as simulate
    from tumorfield_kernels import step_limits as step_limits

    from .fit import Fit as Fit
    from .fit import FitResult as FitResult
    from .fit import open_fit as open_fit
    from .io import open_trajectory as open_trajectory
    from .io import write_trajectory as write_trajectory
    from .problem import Problem as Problem

__version__ = "0.1.0"

__all__ = [
    "RESULTS",
    "CellDiffusion",
    "ExplicitDiffusion",
    "Grid",
    "ImplicitDiffusion",
    "NoSubcycling",
    "Numerics",
    "SaveAt",
    "Scan",
    "SolverError",
    "SqrtCheckpointed",
    "StateDependent",
    "Stats",
    "Stepper",
    "Subcycle",
    "Substeps",
    "System",
    "Taxis",
    "Trajectory",
    "Unchecked",
    "WithGrid",
    "advance",
    "cast_floats",
    "failure_message",
    "initial_frame",
    "make_stepper",
    "max_stable_dt",
    "max_stable_dt_over_run",
    "positivity_violations",
    "simulate",
    "step_limits",
    "Fit",
    "FitResult",
    "Problem",
    "open_fit",
    "open_trajectory",
    "write_trajectory",
    "__version__",
]

_SOURCES = {
    "RESULTS": "tumorfield_kernels",
    "CellDiffusion": "tumorfield_kernels",
    "ExplicitDiffusion": "tumorfield_kernels",
    "Grid": "tumorfield_kernels",
    "ImplicitDiffusion": "tumorfield_kernels",
    "NoSubcycling": "tumorfield_kernels",
    "Numerics": "tumorfield_kernels",
    "SaveAt": "tumorfield_kernels",
    "Scan": "tumorfield_kernels",
    "SolverError": "tumorfield_kernels",
    "SqrtCheckpointed": "tumorfield_kernels",
    "StateDependent": "tumorfield_kernels",
    "Stats": "tumorfield_kernels",
    "Stepper": "tumorfield_kernels",
    "Subcycle": "tumorfield_kernels",
    "Substeps": "tumorfield_kernels",
    "System": "tumorfield_kernels",
    "Taxis": "tumorfield_kernels",
    "Trajectory": "tumorfield_kernels",
    "Unchecked": "tumorfield_kernels",
    "WithGrid": "tumorfield_kernels",
    "advance": "tumorfield_kernels",
    "cast_floats": "tumorfield_kernels",
    "failure_message": "tumorfield_kernels",
    "initial_frame": "tumorfield_kernels",
    "make_stepper": "tumorfield_kernels",
    "max_stable_dt": "tumorfield_kernels",
    "max_stable_dt_over_run": "tumorfield_kernels",
    "positivity_violations": "tumorfield_kernels",
    "simulate": "tumorfield_kernels",
    "step_limits": "tumorfield_kernels",
    "Fit": "tumorfield.fit",
    "FitResult": "tumorfield.fit",
    "open_fit": "tumorfield.fit",
    "open_trajectory": "tumorfield.io",
    "write_trajectory": "tumorfield.io",
    "Problem": "tumorfield.problem",
}
"""Where each public name lives; :func:`__getattr__` imports it from there on first use."""


def __getattr__(name: str):
    """A public name (imported from its module on first use), or a subpackage (``tumorfield.io``)."""
    source = _SOURCES.get(name)
    if source is not None:
        value = getattr(importlib.import_module(source), name)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
