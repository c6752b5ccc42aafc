"""tumorfield: differentiable reaction–diffusion–taxis simulation of tumour invasion.

The numerical core lives in :mod:`tumorfield_kernels`; this package re-exports
its public API and adds the application (models, config, I/O, CLI).
"""

from tumorfield_kernels import RESULTS as RESULTS
from tumorfield_kernels import Grid as Grid
from tumorfield_kernels import SolverError as SolverError
from tumorfield_kernels import StateDependent as StateDependent
from tumorfield_kernels import System as System
from tumorfield_kernels import Taxis as Taxis
from tumorfield_kernels import Trajectory as Trajectory
from tumorfield_kernels import advance as advance
from tumorfield_kernels import cast_floats as cast_floats
from tumorfield_kernels import failure_message as failure_message
from tumorfield_kernels import initial_frame as initial_frame
from tumorfield_kernels import max_stable_dt as max_stable_dt
from tumorfield_kernels import max_stable_dt_over_run as max_stable_dt_over_run
from tumorfield_kernels import simulate as simulate
from tumorfield_kernels import step_limits as step_limits

from .fit import Fit as Fit
from .fit import FitResult as FitResult
from .io import open_trajectory as open_trajectory

__version__ = "0.1.0"

__all__ = [
    "RESULTS",
    "Grid",
    "SolverError",
    "StateDependent",
    "System",
    "Taxis",
    "Trajectory",
    "advance",
    "cast_floats",
    "failure_message",
    "initial_frame",
    "max_stable_dt",
    "max_stable_dt_over_run",
    "step_limits",
    "open_trajectory",
    "simulate",
    "__version__",
]
