"""Sweeps: many runs of one base config as one job — ``tumorfield sweep`` and ``tumorfield collect``.

:func:`load_sweep` expands a sweep file into member configs (checked before any compute);
:class:`SweepRunner` runs them in ``jax.vmap`` batches (one compile per batch shape), one
ordinary run file per member, with a manifest; :func:`collect` tabulates the results.
"""

from ._collect import collect as collect
from ._spec import Sweep as Sweep
from ._spec import load_sweep as load_sweep
from ._sweep import SweepRunner as SweepRunner
from ._sweep import members_of_process as members_of_process

__all__ = ["Sweep", "SweepRunner", "collect", "load_sweep", "members_of_process"]
