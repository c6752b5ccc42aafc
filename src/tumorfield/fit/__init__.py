"""Differentiable parameter fitting: ``tumorfield fit FIT.toml -o FIT.h5`` and its Python API.

``Fit.load("FIT.toml").run()`` (or ``tumorfield.fit.fit("FIT.toml")``) fits model parameters
shared by several arms (run configs) to observations of their ``/scalars`` with L-BFGS on the
exact reverse-mode gradient, and returns a :class:`FitResult` with Gauss–Newton standard
errors and correlations; ``FitResult.write("FIT.h5")`` stores it, ``open_fit("FIT.h5")`` reads it back
(either schema). See ``docs/fitting.md``.
"""

from .._schema import ConfigError as ConfigError
from ._fit import Fit as Fit
from ._fit import FitResult as FitResult
from ._fit import fit as fit
from ._reader import NotAFitFile as NotAFitFile
from ._reader import StoredFit as StoredFit
from ._reader import open_fit as open_fit
from ._spec import FitSpec as FitSpec
from ._spec import load_spec as load_spec

__all__ = ["ConfigError", "Fit", "FitResult", "FitSpec", "NotAFitFile", "StoredFit", "fit", "load_spec", "open_fit"]
