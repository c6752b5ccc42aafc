"""tumorfield_kernels: the generic jitted numerical core of tumorfield.

Reaction–diffusion–taxis systems on cell-centred 1D/2D/3D grids with zero-flux
(or fixed-value) walls: exact (DCT-II) exponential integration of fast linear
fields, positivity-preserving local stencils for cell fields, quasi-steady
screened-Poisson solves, and a ``lax.scan`` rollout whose failures are results
(:class:`RESULTS`), not exceptions. It never imports ``tumorfield``.

Layers: :mod:`._stencils`, :mod:`._spectral`, :mod:`._phi` (operators) →
:mod:`._schemes` (one class per field scheme) → :mod:`._stepper` (one step of a
system) → :mod:`._rollout` (frames and failure detection) → :mod:`._api`.
"""

from ._api import advance as advance
from ._api import cast_floats as cast_floats
from ._api import initial_frame as initial_frame
from ._api import max_stable_dt as max_stable_dt
from ._api import max_stable_dt_over_run as max_stable_dt_over_run
from ._api import simulate as simulate
from ._api import step_limits as step_limits
from ._grid import Grid as Grid
from ._phi import phi_functions as phi_functions
from ._solution import POSITIVITY_TOLERANCE as POSITIVITY_TOLERANCE
from ._solution import RESULTS as RESULTS
from ._solution import SolverError as SolverError
from ._solution import Trajectory as Trajectory
from ._solution import failure_message as failure_message
from ._spectral import laplacian_symbol as laplacian_symbol
from ._stencils import laplacian as laplacian
from ._stencils import transport as transport
from ._system import StateDependent as StateDependent
from ._system import System as System
from ._system import Taxis as Taxis

__all__ = [
    "POSITIVITY_TOLERANCE",
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
    "laplacian",
    "laplacian_symbol",
    "max_stable_dt",
    "max_stable_dt_over_run",
    "phi_functions",
    "simulate",
    "step_limits",
    "transport",
]
