"""Differentiable parameter fitting: ``tumorfield fit FIT.toml -o FIT.h5`` and its Python API.

``Fit.load("FIT.toml").run()`` (or ``tumorfield.fit.fit("FIT.toml")``) fits model parameters
shared by several arms (run configs) to observations of their ``/scalars`` with L-BFGS on the
exact reverse-mode gradient, and returns a :class:`FitResult` with Gauss–Newton standard
errors and correlations; ``FitResult.write("FIT.h5")`` stores it. See ``docs/fitting.md``.
"""

from .._schema import ConfigError as ConfigError
from ._fit import Fit as Fit
from ._fit import FitResult as FitResult
from ._fit import fit as fit
from ._spec import FitSpec as FitSpec
from ._spec import load_spec as load_spec

__all__ = ["ConfigError", "Fit", "FitResult", "FitSpec", "fit", "load_spec"]
