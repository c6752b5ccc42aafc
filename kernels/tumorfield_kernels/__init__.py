"""tumorfield_kernels: the generic jitted numerical core of tumorfield.

Reaction–diffusion–taxis systems on cell-centred 2D/3D grids with zero-flux
boundaries: exact (DCT-II) exponential integration of fast linear fields,
positivity-preserving local stencils for cell fields, quasi-steady
screened-Poisson solves, and a ``lax.scan`` rollout. It never imports
``tumorfield``.
"""

from ._grid import Grid as Grid
from ._operators import laplacian as laplacian
from ._operators import laplacian_symbol as laplacian_symbol
from ._operators import phi_functions as phi_functions
from ._operators import transport as transport
from ._solver import Trajectory as Trajectory
from ._solver import advance as advance
from ._solver import cast_floats as cast_floats
from ._solver import initial_frame as initial_frame
from ._solver import max_stable_dt as max_stable_dt
from ._solver import max_stable_dt_over_run as max_stable_dt_over_run
from ._solver import simulate as simulate
from ._system import StateDependent as StateDependent
from ._system import System as System
from ._system import Taxis as Taxis

__all__ = [
    "Grid",
    "StateDependent",
    "System",
    "Taxis",
    "Trajectory",
    "advance",
    "cast_floats",
    "initial_frame",
    "laplacian",
    "laplacian_symbol",
    "max_stable_dt",
    "max_stable_dt_over_run",
    "phi_functions",
    "simulate",
    "transport",
]
