"""tumorfield_kernels: the generic jitted numerical core of tumorfield.

Reaction–diffusion–taxis systems on cell-centred 1D/2D/3D grids with zero-flux
(or fixed-value) walls: exact (DCT-II) exponential integration of fast linear
fields, positivity-preserving local stencils for cell fields, quasi-steady
screened-Poisson solves, and a ``lax.scan`` rollout whose failures are results
(:class:`RESULTS`), not exceptions. It never imports ``tumorfield``.

Layers: :mod:`._stencils`, :mod:`._spectral`, :mod:`._phi`, :mod:`._diffusion` (operators) →
:mod:`._schemes` (one class per field scheme) → :mod:`._stepper` (one step of a
system) → :mod:`._rollout` (frames and failure detection) → :mod:`._api`; what to solve
(:mod:`._system`, :mod:`._grid`) apart from how (:mod:`._numerics`). :mod:`._decomposition` splits
one grid into slabs over the devices of a mesh (``simulate(..., mesh=)``).
"""

from ._api import advance as advance
from ._api import cast_floats as cast_floats
from ._api import check_initial as check_initial
from ._api import choose_cell_diffusion as choose_cell_diffusion
from ._api import initial_frame as initial_frame
from ._api import max_stable_dt as max_stable_dt
from ._api import max_stable_dt_over_run as max_stable_dt_over_run
from ._api import positivity_violations as positivity_violations
from ._api import simulate as simulate
from ._api import step_limits as step_limits
from ._decomposition import check_split as check_split
from ._grid import Grid as Grid
from ._grid import ImageError as ImageError
from ._grid import image_geometry as image_geometry
from ._grid import load_image as load_image
from ._numerics import CellDiffusion as CellDiffusion
from ._numerics import ExplicitDiffusion as ExplicitDiffusion
from ._numerics import ImplicitDiffusion as ImplicitDiffusion
from ._numerics import NoSubcycling as NoSubcycling
from ._numerics import Numerics as Numerics
from ._numerics import SaveAt as SaveAt
from ._numerics import Scan as Scan
from ._numerics import SqrtCheckpointed as SqrtCheckpointed
from ._numerics import Subcycle as Subcycle
from ._numerics import Substeps as Substeps
from ._numerics import Unchecked as Unchecked
from ._numerics import substeps_from_cap as substeps_from_cap
from ._phi import phi_functions as phi_functions
from ._solution import POSITIVITY_TOLERANCE as POSITIVITY_TOLERANCE
from ._solution import RESULTS as RESULTS
from ._solution import SolverError as SolverError
from ._solution import Stats as Stats
from ._solution import Trajectory as Trajectory
from ._solution import failure_message as failure_message
from ._spectral import from_spectral as from_spectral
from ._spectral import laplacian_symbol as laplacian_symbol
from ._spectral import to_spectral as to_spectral
from ._stencils import laplacian as laplacian
from ._stencils import transport as transport
from ._stepper import Stepper as Stepper
from ._stepper import make_stepper as make_stepper
from ._system import StateDependent as StateDependent
from ._system import System as System
from ._system import Taxis as Taxis
from ._system import WithGrid as WithGrid

__all__ = [
    "POSITIVITY_TOLERANCE",
    "RESULTS",
    "CellDiffusion",
    "ExplicitDiffusion",
    "Grid",
    "ImageError",
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
    "check_initial",
    "check_split",
    "failure_message",
    "from_spectral",
    "image_geometry",
    "initial_frame",
    "laplacian",
    "laplacian_symbol",
    "load_image",
    "make_stepper",
    "max_stable_dt",
    "max_stable_dt_over_run",
    "phi_functions",
    "positivity_violations",
    "simulate",
    "step_limits",
    "choose_cell_diffusion",
    "substeps_from_cap",
    "to_spectral",
    "transport",
]
