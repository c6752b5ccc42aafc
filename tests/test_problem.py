"""``tumorfield.Problem``: one object from a run config, the one batching decision, and defaults that
agree between the CLI and the API."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import tumorfield as tf
from tumorfield import config as cfg
from tumorfield.problem import Problem

KELLER_SEGEL = """[model]
name = "fisher_kpp"
[grid]
shape = [10, 10, 10]
length = [2.0, 2.0, 2.0]
[time]
t_end = 1.0
dt = 0.005
save_every = 0.25
[parameters]
D = 1e-3
r = 1.0
chi = 5.0
D_c = 0.05
k_c = 1.0
s_c = 20.0
[initial]
amplitude = 0.8
radius = 0.3
[run]
progress = "none"
compilation_cache = "off"
"""


def test_a_keller_segel_collapse_completes_from_the_cli_and_from_simulate_with_defaults(tmp_path):
    """3D chemotactic collapse at dt = 0.005: taxis steepens until a step needs sub-cycling. With the
    defaults it completes both from ``tumorfield run`` and from ``tf.simulate`` (no numerics given),
    with the same fields; without sub-cycling the same run does not complete."""
    path = tmp_path / "ks.toml"
    path.write_text(KELLER_SEGEL)
    run = subprocess.run([sys.executable, "-m", "tumorfield.cli", "run", str(path), "-o", str(tmp_path / "ks.h5")],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "sub-cycling:" in run.stderr
    config = cfg.load(path)
    model, grid = config.model, config.grid
    traj = tf.simulate(model.system, grid, model.initial_state(grid), t_end=1.0, dt=0.005, params=model.params(grid),
                       saveat=tf.SaveAt(every=0.25))  # fmt: skip
    assert traj.successful and int(np.max(np.asarray(traj.stats.substeps))) >= 2
    # the CLI's run is the API's with the config's numerics (float32 here, where the tests enable x64)
    as_cli = tf.simulate(model.system, grid, model.initial_state(grid), t_end=1.0, dt=0.005,
                         params=model.params(grid), numerics=config.numerics)  # fmt: skip
    assert config.numerics == tf.Numerics(dtype="float32")  # the defaults, in the run's precision
    with tf.open_trajectory(tmp_path / "ks.h5") as stored:
        assert stored.status == "complete"
        np.testing.assert_allclose(stored.fields["u"][-1], np.asarray(as_cli["u"][-1]), rtol=1e-5, atol=1e-6)
    no_subcycling = tf.Numerics(substeps=tf.NoSubcycling())
    plain = tf.simulate(model.system, grid, model.initial_state(grid), t_end=1.0, dt=0.005,
                        params=model.params(grid), numerics=no_subcycling, throw=False)  # fmt: skip
    assert not plain.successful


FISHER = """[model]
name = "fisher_kpp"
[grid]
shape = [8, 8]
length = [1.0, 1.0]
[time]
t_end = 0.1
dt = 0.01
save_every = 0.1
"""


def _problem(*overrides, text=FISHER) -> Problem:
    return Problem.from_config(cfg.loads(text, "t.toml", overrides))


def test_rollout_key_shares_what_is_traced_and_splits_what_is_structural():
    base = _problem()
    assert base.rollout_key() == _problem("parameters.D=2e-3", "parameters.r=0.5").rollout_key()
    assert base.rollout_key() == _problem("initial.amplitude=0.3", "initial.radius=0.1").rollout_key()
    for different in (
        _problem("parameters.chi=0.1"),  # another System (chemotaxis): another program
        _problem("grid.shape=[8,10]"),
        _problem("time.dt=0.005"),
        _problem('numerics.cell_diffusion="implicit"'),
        _problem("numerics.max_substeps=1"),
        _problem('output.precision="float64"'),
    ):
        assert different.rollout_key() != base.rollout_key()


def test_voloshin_members_differing_in_the_initial_radius_share_a_rollout():
    """The invasion diagnostics measure from the initial radius, which is a traced parameter, not a
    constant baked into ``observe``: arms differing in it batch together (they did not before)."""
    text = open("experiments/voloshin2015/ptx.toml").read()
    a = _problem("grid.shape=[16,16]", text=text)
    b = _problem("grid.shape=[16,16]", "initial.tumor_radius=0.8", text=text)
    assert a.rollout_key() == b.rollout_key()
    assert float(b.params.initial_radius) == pytest.approx(0.8)


def test_observe_must_be_a_static_function_of_its_arguments():
    from tumorfield.models import fisher_kpp

    class Stateful(fisher_kpp.FisherKPP):
        def observe(self, state, params, t, grid):  # reads the instance: cannot be shared by a batch
            return {}

    config = cfg.loads(FISHER)
    model = Stateful({name: config.model.config[name] for name in Stateful.section_types})
    with pytest.raises(TypeError, match=r"Stateful.observe must be a @staticmethod"):
        Problem.from_config(type("C", (), {"model": model, "grid": config.grid, "numerics": config.numerics,
                                           "time": config.time})())  # fmt: skip
