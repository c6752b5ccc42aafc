"""The Voloshin 2015 model: pharmacokinetics, dose timing, knockouts, config errors, gradients."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tumorfield as tf
from tumorfield import config as tconfig
from tumorfield._schema import ConfigError
from tumorfield.models.voloshin2015 import SYSTEM, Doses, Parameters, Voloshin2015
from tumorfield.models.voloshin2015.kinetics import drug_effects, il1_responses, plasma, polarisation_rates, reaction
from tumorfield.models.voloshin2015.parameters import PAPER_MOLAR_MASS
from tumorfield.models.voloshin2015.pk import plasma_concentration

GRID = tf.Grid((8, 8), (4.0, 4.0))
SMALL = {"initial": {"tumor_radius": 0.8, "interface_width": 0.3}, "vessels": {"rim_radius": 1.2}}


def model(genotype="wild_type", ptx=(), ana=(), parameters=None) -> Voloshin2015:
    return Voloshin2015.from_sections(
        {
            **SMALL,
            "host": {"genotype": genotype},
            "dosing": {"paclitaxel": list(ptx), "anakinra": list(ana)},
            "parameters": parameters or {},
        }
    )


def dose(time, amount, route="ip", **extra):
    return {"time": time, "dose_mg_per_kg": amount, "route": route, **extra}


def short_run(m: Voloshin2015):
    """0.4 day in float32 fields (as the CLI runs); one compiled rollout shared by every caller."""
    return tf.simulate(
        m.system,
        GRID,
        m.initial_state(GRID),
        t_end=0.4,
        dt=0.02,
        params=m.params(GRID),
        numerics=tf.Numerics(dtype="float32"),
        saveat=tf.SaveAt(every=0.02),
    )


# --- pharmacokinetics -------------------------------------------------------------------------


def test_iv_bolus_matches_closed_form():
    p = Parameters()
    doses = Doses([1.0], [22.5], ["iv"])
    ke, v = float(p.ptx_iv_ke), float(p.ptx_iv_v)
    for t in (0.5, 1.0, 1.01, 1.1, 1.5):
        got = float(plasma_concentration(doses, jnp.asarray(t), 853.9, (p.ptx_iv_ke, p.ptx_iv_v), (1.0, 2.0, 1.0)))
        want = 0.0 if t < 1.0 else 22.5 / v * math.exp(-ke * (t - 1.0)) * 1e6 / 853.9
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_absorbed_doses_superpose_bateman_curves():
    ka, ke, vf = 24.0, 5.0, 0.9
    doses = Doses([0.0, 0.25], [18.0, 9.0], ["ip", "sc"])
    t = 0.4

    def bateman(amount, tau):
        return amount / vf * ka / (ka - ke) * (math.exp(-ke * tau) - math.exp(-ka * tau)) * 1e6 / 853.9

    got = float(plasma_concentration(doses, jnp.asarray(t), 853.9, (10.0, 0.3), (ka, ke, vf)))
    assert got == pytest.approx(bateman(18.0, 0.4) + bateman(9.0, 0.15), rel=1e-12)


@pytest.mark.parametrize("amount, cmax_ug_per_ml", [(18.0, 13.0), (36.0, 25.7)])
def test_default_ip_paclitaxel_reproduces_published_cmax_at_two_hours(amount, cmax_ug_per_ml):
    """Drug Metab Dispos 1995;23:713: C_max 13 / 25.7 µg/mL at 2 h after 18 / 36 mg/kg i.p. (within 10 %)."""
    p = eqx.tree_at(lambda q: q.paclitaxel_doses, Parameters(), Doses([0.0], [amount], ["ip"]))
    t = jnp.linspace(0.0, 0.5, 2001)
    curve = np.array(jax.vmap(lambda s: plasma(p, s)[0])(t)) * PAPER_MOLAR_MASS["paclitaxel"] / 1e6  # µg/mL
    assert curve.max() == pytest.approx(cmax_ug_per_ml, rel=0.10)
    assert float(t[curve.argmax()]) * 24 == pytest.approx(2.0, abs=0.25)


# --- dose timing ------------------------------------------------------------------------------


def test_dose_on_step_boundary_is_seen_despite_float32_rounding():
    p = model(ptx=[dose(3.0, 20.0, "iv")]).params(GRID)
    with jax.enable_x64(False):
        dt = jnp.float32(0.02)
        for step in (150,):  # 150 × 0.02 = 3.0 only up to float32 rounding
            t_at = jnp.float32(step) * dt
            t_before = jnp.float32(step - 1) * dt
            pf = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), p)
            assert float(plasma(pf, t_at)[0]) > 1e4  # the full bolus, nM
            assert float(plasma(pf, t_before)[0]) == 0.0


def test_validate_refuses_doses_off_step_boundaries():
    m = model(ptx=[dose(3.0, 20.0), dose(3.01, 20.0)])
    m.validate(GRID, 5.0, 0.01)
    with pytest.raises(ConfigError, match=r"dosing\.paclitaxel\[1\]\.time"):
        m.validate(GRID, 5.0, 0.02)
    with pytest.raises(ConfigError, match=r"dosing\.anakinra\[0\]\.time"):
        model(ana=[dose(1.0, 10.0, every=0.75, count=2)]).validate(GRID, 5.0, 0.5)


def test_tissue_paclitaxel_appears_exactly_at_the_dose_step():
    """As the CLI runs it: x64 on, fields in float32 (so t is float32), scalar ODEs in float64."""
    traj = short_run(model(ptx=[dose(0.2, 20.0, "iv")]))
    total = np.asarray(traj["paclitaxel"]).sum(axis=(1, 2))
    t = np.asarray(traj.t)
    assert traj["paclitaxel"].dtype == jnp.float32 and traj["burden"].dtype == jnp.float64
    assert np.all(total[t < 0.2 - 1e-6] == 0.0)
    assert np.all(total[t > 0.2 + 1e-6] > 0.0)
    assert np.all(np.isfinite(np.asarray(traj["tumor"])))


# --- host genotypes -------------------------------------------------------------------------


def random_state(seed=0):
    rng = np.random.default_rng(seed)
    m = model()
    state = {k: jnp.asarray(v) for k, v in m.initial_state(GRID).items()}
    for name in ("il1b", "anakinra", "paclitaxel", "paclitaxel_bound", "vegf", "chemo", "mde", "leakiness", "m1", "m2"):
        scale = {"il1b": 5.0, "anakinra": 1.0, "paclitaxel": 2000.0, "paclitaxel_bound": 5000.0, "vegf": 50.0}.get(
            name, 0.3
        )
        state[name] = jnp.asarray(scale * rng.uniform(size=GRID.shape))
    state["circulating"] = jnp.asarray(3.0)
    return state


def test_il1b_knockout_removes_host_il1b_production_only():
    state = random_state()
    wt, ko = model(ptx=[dose(0.0, 20.0)]).params(GRID), model("il1b_ko", ptx=[dose(0.0, 20.0)]).params(GRID)
    r_ko = reaction(state, ko, jnp.asarray(0.1), GRID)
    np.testing.assert_allclose(r_ko["il1b"], ko.rho_n * state["tumor"], rtol=1e-12)
    r_wt = reaction(state, wt, jnp.asarray(0.1), GRID)
    assert float(jnp.min(r_wt["il1b"] - r_ko["il1b"])) > 0
    # the receptor side is untouched: with the same IL1β, the responses agree
    for a, b in zip(il1_responses(state, wt), il1_responses(state, ko), strict=True):
        np.testing.assert_array_equal(a, b)


def test_il1r_knockout_zeroes_the_host_response_but_not_the_tumours():
    state = random_state(1)
    wt, ko = model().params(GRID), model("il1r_ko").params(GRID)
    phi_t_wt, phi_h_wt = il1_responses(state, wt)
    phi_t_ko, phi_h_ko = il1_responses(state, ko)
    np.testing.assert_array_equal(phi_t_ko, phi_t_wt)
    assert float(jnp.max(phi_h_ko)) == 0.0 and float(jnp.min(phi_h_wt)) > 0.0
    _, t_p = drug_effects(state, ko)
    k21, _ = polarisation_rates(state, ko, phi_h_ko, t_p)
    np.testing.assert_allclose(k21, ko.k21_0 + ko.k_p * t_p, rtol=1e-12)
    chemo = reaction(state, ko, jnp.asarray(0.0), GRID)["chemo"]
    e_p, _ = drug_effects(state, ko)
    n, phi_t = state["tumor"], phi_t_ko
    free = jnp.maximum(1.0 - n - ko.eps_mac * (state["m1"] + state["m2"]), 0.0)
    kill = ko.delta_p * e_p * ko.r_n * (1.0 + ko.a_r * phi_t) * n * free  # paclitaxel kills dividing cells
    np.testing.assert_allclose(chemo, ko.s_c * n + ko.s_d * kill, rtol=1e-12)  # no IL1 term


def test_anakinra_does_nothing_without_any_il1b():
    """Control (target 8): an IL1β-KO host whose tumour makes none either; anakinra has nothing to block."""
    none = {"rho_n": 0.0}
    run = {}
    for label, ana in (("no drug", ()), ("anakinra", [dose(0.0, 100.0)])):
        run[label] = short_run(model("il1b_ko", ptx=[dose(0.0, 20.0)], ana=ana, parameters=none))
    assert float(jnp.max(run["anakinra"]["anakinra"][-1])) > 1.0  # the drug is there
    for name in ("tumor", "m1", "m2", "leakiness", "burden"):
        np.testing.assert_array_equal(run["anakinra"][name], run["no drug"][name])
    # ... whereas with the tumour's own IL1β, anakinra does act
    with_il1b = short_run(model("il1b_ko", ptx=[dose(0.0, 20.0)], ana=[dose(0.0, 100.0)]))
    without_drug = short_run(model("il1b_ko", ptx=[dose(0.0, 20.0)]))
    assert float(jnp.max(jnp.abs(with_il1b["m2"][-1] - without_drug["m2"][-1]))) > 1e-5


# --- configuration ----------------------------------------------------------------------------

BASE = """
[model]
name = "voloshin2015"
[grid]
shape = [16, 16]
length = [8.0, 8.0]
[time]
t_end = 4.0
dt = 0.02
save_every = 1.0
"""


@pytest.mark.parametrize(
    "extra, key, fragment",
    [
        ('[host]\ngenotype = "il1_ko"', "host.genotype", "il1b_ko"),
        (
            "[dosing]\npaclitaxel = [{time = 1.0, dose_mg_per_kg = 20.0}, {time = -1.0, dose_mg_per_kg = 5.0}]",
            "dosing.paclitaxel",
            "paclitaxel[1].time = -1.0: must be ≥ 0",
        ),
        ('[dosing]\nanakinra = [{time = 1.0, dose_mg_per_kg = 20.0, route = "oral"}]', "dosing.anakinra", "'sc'"),
        ("[dosing]\nanakinra = [{time = 1.0, dose = 20.0}]", "dosing.anakinra", "unknown keys ['dose']"),
        ("[dosing]\nanakinra = [{time = 1.0, dose_mg_per_kg = 2.0, count = 0}]", "dosing.anakinra", "count = 0"),
        ("[parameters]\ntheta50 = 1.5", "parameters.theta50", "≤ 1"),
        ("[parameters]\nK_i = 0.0", "parameters.K_i", "> 0"),
        ("[parameters]\nk_circ = 2e4", "parameters.k_circ", "k_circ"),
        ("[dosing]\npaclitaxel = [{time = 1.01, dose_mg_per_kg = 20.0}]", "dosing.paclitaxel[0].time", "step"),
        ("[initial]\ntumor_radius = 5.0", "initial.tumor_radius", "half the box"),
    ],
)
def test_config_errors_name_the_key_value_and_rule(extra, key, fragment):
    with pytest.raises(ConfigError) as info:
        tconfig.loads(BASE + extra, source="arm.toml")
    assert info.value.key_path == key
    assert fragment in str(info.value) and "arm.toml" in str(info.value)


def test_repeated_doses_expand_and_config_round_trips():
    text = BASE + '[dosing]\npaclitaxel = [{time = 1.0, dose_mg_per_kg = 20.0, route = "iv", every = 0.5, count = 3}]'
    run = tconfig.loads(text)
    doses = run.model.params(run.grid).paclitaxel_doses
    np.testing.assert_array_equal(doses.time[:3], [1.0, 1.5, 2.0])
    np.testing.assert_array_equal(doses.iv[:3], [1.0, 1.0, 1.0])
    assert len(doses) == 32 and float(jnp.sum(doses.amount)) == 60.0  # padded with empty doses
    assert run.model.system is SYSTEM and model().system is SYSTEM  # one System: compiled rollouts are shared


# --- differentiability ------------------------------------------------------------------------


def test_parameters_pytree_is_differentiable():
    """Every parameter leaf gets a finite gradient through the model's reaction, PK and diagnostics.

    (Reverse mode through a whole rollout also works, but compiling it takes ~70 s on the
    2-core CI machine, too long for the suite; the core's rollout gradients are verified
    on smaller systems in the core's own tests.)
    """
    m = model(ptx=[dose(0.0, 20.0)], ana=[dose(0.0, 50.0)])
    state = random_state(2)
    state["circulating"] = jnp.asarray(0.0)

    def shed(p):  # cells shed per day: d(circulating)/dt at zero circulating cells
        return reaction(state, p, jnp.asarray(0.1), GRID)["circulating"]

    def everything(p):
        rates = reaction(state, p, jnp.asarray(0.1), GRID)
        seen = m.observe(state, p, jnp.asarray(0.1), GRID)
        total = sum(jnp.sum(v) for v in rates.values()) + sum(jnp.sum(v) for v in seen.values())
        return total + jnp.sum(plasma(p, jnp.asarray(0.1))[0]) + jnp.sum(plasma(p, jnp.asarray(0.1))[1])

    p0 = m.params(GRID)
    grads = jax.grad(everything)(p0)
    leaves = jax.tree_util.tree_leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
    g = jax.grad(shed)(p0)
    assert float(g.b_tm) > 0 and float(g.gamma_iv) > 0  # more TMEM gain or leak permeability: more shedding
    h = 1e-6 * float(p0.b_tm)
    fd = (
        shed(eqx.tree_at(lambda q: q.b_tm, p0, p0.b_tm + h)) - shed(eqx.tree_at(lambda q: q.b_tm, p0, p0.b_tm - h))
    ) / (2 * h)
    assert float(g.b_tm) == pytest.approx(float(fd), rel=1e-6)
    # the dose amounts are leaves too: a larger anakinra dose lowers the IL1 response
    dphi = jax.grad(
        lambda p: jnp.sum(il1_responses({**state, "anakinra": plasma(p, 0.1)[1] * jnp.ones(GRID.shape)}, p)[1])
    )(p0)
    assert float(dphi.anakinra_doses.amount[0]) < 0


def test_every_parameter_acts_within_one_step_of_the_whole_model():
    """One step of the full system (reaction, transport, decay, quasi-steady solves, PK): every
    scalar parameter that can act within a step gets a finite, non-zero gradient of a loss with
    random weights per field and cell (so that exchanges such as M1 ⇄ M2 switching do not cancel).
    The exceptions are named: the i.v. paclitaxel PK, as both doses here are i.p."""
    from tumorfield.models.voloshin2015.parameters import parameter_fields

    m = model(ptx=[dose(0.0, 20.0)], ana=[dose(0.0, 50.0)])
    state = random_state(3)
    state.update(circulating=jnp.asarray(1e3), burden=jnp.asarray(1e2), seeded=jnp.asarray(0.0))
    rng = np.random.default_rng(4)
    weights = {name: jnp.asarray(rng.uniform(0.5, 1.5, np.shape(v))) for name, v in state.items()}

    def loss(p):
        traj = tf.simulate(
            m.system, GRID, state, t_end=0.01, dt=0.01, params=p, throw=False, numerics=tf.Numerics(adjoint=tf.Scan())
        )
        return sum(jnp.sum(weights[name] * traj[name][-1]) for name in state)

    grads = jax.jit(jax.grad(loss))(m.params(GRID))
    idle = {"ptx_iv_ke", "ptx_iv_v"}
    for f in parameter_fields():
        g = float(getattr(grads, f.name))
        assert math.isfinite(g), f.name
        if f.name in idle | {"host_il1b", "host_il1r"}:
            continue
        assert g != 0.0, f"d loss / d {f.name} is 0: the parameter does not act on a step"
    assert float(grads.ptx_iv_ke) == 0.0 and float(grads.ptx_iv_v) == 0.0


# --- paclitaxel: a slowed, not dissolved, tumour; retention in cells (issue 13) ------------------


def test_paclitaxel_at_full_effect_slows_but_cannot_dissolve_a_tumour():
    """Kill ∝ proliferation (Norton–Simon): with δ_P < 1 the tumour term stays positive wherever the
    logistic term is, at any drug level; δ_P = 1 stops growth exactly; intravasation switched off."""
    state = random_state(5)
    state["paclitaxel_bound"] = jnp.full(GRID.shape, 1e9)  # E_P = 1 to rounding
    state["leakiness"] = jnp.zeros(GRID.shape)
    m = model(ptx=[dose(0.0, 20.0)]).params(GRID)
    free = 1.0 - state["tumor"] - m.eps_mac * (state["m1"] + state["m2"])
    untreated = reaction(state, eqx.tree_at(lambda p: p.delta_p, m, jnp.asarray(0.0)), jnp.asarray(0.1), GRID)
    treated = reaction(state, m, jnp.asarray(0.1), GRID)
    growing = np.asarray(free > 0) & np.asarray(state["tumor"] > 0)
    assert growing.any()
    np.testing.assert_allclose(
        np.asarray(treated["tumor"])[growing], (1.0 - float(m.delta_p)) * np.asarray(untreated["tumor"])[growing],
        rtol=1e-5,
    )  # fmt: skip
    assert np.all(np.asarray(treated["tumor"])[growing] > 0.0)
    full = reaction(state, eqx.tree_at(lambda p: p.delta_p, m, jnp.asarray(1.0)), jnp.asarray(0.1), GRID)
    assert np.all(np.abs(np.asarray(full["tumor"])[growing]) <= 1e-5 * np.asarray(untreated["tumor"])[growing])


def test_cell_bound_paclitaxel_outlasts_the_free_drug():
    """After an i.p. dose the free drug follows plasma out within hours, while the cell-bound pool
    still holds what it took up; once the free drug is gone the bound pool decays at its release rate
    alone, k_off (0.11–0.61/day: days, Kuh et al. 1999), which the exponential scheme integrates exactly."""
    m = model(ptx=[dose(0.0, 20.0)])
    traj = short_run(m)  # 0.4 day, the compiled rollout shared with the other tests
    free = np.asarray(traj["paclitaxel"]).mean(axis=(1, 2))
    bound = np.asarray(traj["paclitaxel_bound"]).mean(axis=(1, 2))
    assert free[-1] < 0.7 * free.max() and bound[-1] > 0.95 * bound.max() > 0
    p = m.params(GRID)
    assert float(SYSTEM.decay["paclitaxel_bound"](p)) == float(p.ptx_k_off)
    assert float(SYSTEM.decay["paclitaxel"](p)) == pytest.approx(float(p.lambda_p + p.ptx_kappa * p.ptx_k_off))
    state = random_state(8)
    r = reaction(state, p, jnp.asarray(0.1), GRID)
    np.testing.assert_allclose(r["paclitaxel_bound"], p.ptx_kappa * p.ptx_k_off * state["paclitaxel"], rtol=1e-6)


# --- diagnostics that do not collapse when the tumour thins out (issue 13) ------------------------


def test_tumour_weighted_diagnostics_survive_a_vanishing_tumour_and_read_nan_when_it_is_gone():
    from tumorfield.models.voloshin2015.observables import TUMOR_THRESHOLD, observe

    state = random_state(6)
    p = model(ptx=[dose(0.0, 20.0)]).params(GRID)
    values = {}
    for scale in (1.0, 1e-3, 1e-20):  # far below the region threshold: the old region means were 0
        state["tumor"] = scale * jnp.asarray(np.random.default_rng(7).uniform(0.2, 0.8, GRID.shape))
        assert float(jnp.max(state["tumor"])) < TUMOR_THRESHOLD or scale == 1.0
        values[scale] = observe(state, p, jnp.asarray(1.0), GRID, 0.5)
    for key in ("il1b_mean", "m2_fraction", "mean_leakiness", "paclitaxel_cell_mean", "kill_effect"):
        got = [float(values[s][key]) for s in (1.0, 1e-3, 1e-20)]
        assert all(math.isfinite(g) and g > 0 for g in got), (key, got)
        assert got[1] == pytest.approx(got[0], rel=1e-4) and got[2] == pytest.approx(got[0], rel=1e-3), key
    state["tumor"] = jnp.zeros(GRID.shape)
    gone = observe(state, p, jnp.asarray(1.0), GRID, 0.5)
    for key in ("il1b_mean", "m2_fraction", "mean_leakiness"):
        assert math.isnan(float(gone[key])), key  # undefined, not 0
