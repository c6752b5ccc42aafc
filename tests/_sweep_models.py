"""A small model registered for the sweep tests (imported by the test processes it starts too).

``∂u/∂t = D∇²u + r u²``: cheap to compile, and it blows up in finite time for large ``r``, so a
sweep can hold a member that fails while the others complete.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import tumorfield as tf
from tumorfield import models
from tumorfield._schema import key, positive, section
from tumorfield.models import Field, Model, Observable, Observables


@section
class BlowUpParameters:
    """``[parameters]`` of the test model."""

    r: float = key(1.0, "1/day", "growth of u² (large: the explicit scheme overflows)", positive)


SYSTEM = tf.System(fields=("u",), diffusion={"u": 1e-3}, reaction=lambda s, p, t: {"u": p["r"] * s["u"] ** 2})


class BlowUp(Model):
    """Test model: ∂u/∂t = D∇²u + r u²."""

    name = "test_blow_up"
    section_types = {"parameters": BlowUpParameters}
    fields = {"u": Field("1", "u")}
    observables = Observables(total=Observable("mm²", "total"))

    @property
    def system(self):
        return SYSTEM

    def params(self, grid):
        return {"r": jnp.asarray(self.config["parameters"].r)}

    def initial_state(self, grid):
        y, x = grid.mesh()
        return {"u": 0.25 + 0.25 * np.cos(np.pi * x) * np.cos(np.pi * y)}

    @staticmethod
    def observe(state, params, t, grid):
        return {"total": jnp.sum(state["u"]) * grid.cell_volume}


def register() -> None:
    """Add the test model to the registry (tests remove it again: ``docs/config.md`` lists the registry)."""
    models.REGISTRY[BlowUp.name] = BlowUp


def unregister() -> None:
    models.REGISTRY.pop(BlowUp.name, None)


def write_base(directory, t_end=2.0) -> str:
    """A run config of the test model; returns its path."""
    path = directory / "blow_up.toml"
    path.write_text(
        '[model]\nname = "test_blow_up"\n[grid]\nshape = [8, 8]\nlength = [1.0, 1.0]\n'
        f"[time]\nt_end = {t_end}\ndt = 0.1\nsave_every = 0.1\n[run]\nchunk_frames = 4\n"
        f'progress = "none"\ncompilation_cache = "{directory / "cache"}"\n'
    )
    return str(path)
