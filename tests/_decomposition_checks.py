"""The measurements of ``tests/test_core_decomposition.py``, run as one subprocess with 8 forced host
devices (``python tests/_decomposition_checks.py OUT.json``), so that they share one JAX start and
the tests read them from one JSON file.

For every problem the decomposed result on 2, 4 and 8 devices is compared with one device: the
largest relative difference ``max |a − b| / max |a|`` over the fields of the state after 100 steps
(float32) and, where a gradient is taken, over its components. The compiled step of each problem
on 8 devices is audited from its HLO text: the collectives it holds and the per-device memory
(``memory_analysis``) against one device's.
"""

from __future__ import annotations

import os
import sys

# 8 host devices; LLVM's optimisations off: a third less compile time, and both sides of every
# comparison are compiled alike
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

jax.config.update("jax_enable_x64", True)  # the suite's strict settings (tests/conftest.py)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

import tumorfield_kernels as tk  # noqa: E402

DEVICES = (2, 4, 8)
STEPS = 100
VOLOSHIN = """
[model]
name = "voloshin2015"
[grid]
shape = {shape}
length = {length}
[time]
t_end = 1.0
dt = 0.01
save_every = 1.0
[initial]
tumor_radius = 0.8
interface_width = 0.3
[vessels]
rim_radius = 1.2
[dosing]
paclitaxel = [{{ time = 0.2, dose_mg_per_kg = 20.0, route = "ip" }}]
anakinra = []
[numerics]
max_substeps = 1
cell_diffusion = "{diffusion}"
"""
COLLECTIVES = ("all-to-all", "collective-permute", "all-gather", "all-reduce", "reduce-scatter")


def mesh(n: int) -> Mesh:
    return Mesh(np.array(jax.devices()[:n]), ("x",))


def relative(a, b) -> float:
    """``max |a − b| / max |a|`` over the leaves of two pytrees."""
    worst = 0.0
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        scale = max(float(np.max(np.abs(x))), 1e-30)
        worst = max(worst, float(np.max(np.abs(x - y))) / scale)
    return worst


class Case:
    """A problem to compare: its system, grid, initial state, parameters and numerics; ``theta`` the
    parameters a gradient is taken with respect to (``with_theta`` puts them into ``params``) and
    ``cell`` the field of the loss ``Σ cell²`` (with ``wrt_cell`` the gradient is also taken with
    respect to its start)."""

    def __init__(self, system, grid, y0, params, numerics, theta, with_theta, cell, wrt_cell=True):
        self.system, self.grid, self.y0, self.params, self.numerics = system, grid, y0, params, numerics
        self.theta, self.with_theta, self.cell, self.wrt_cell = theta, with_theta, cell, wrt_cell
        self.start = tk.initial_frame(system, grid, y0, params, numerics=numerics)  # every run starts here


def place(state, mesh_):
    """A one-device state on ``mesh_``: fields split into slabs along axis 0, scalars replicated."""
    return {
        k: jax.device_put(v, NamedSharding(mesh_, PartitionSpec("x") if v.ndim else PartitionSpec()))
        for k, v in state.items()
    }


def keller_segel(shape, implicit=False, dirichlet=False) -> Case:
    """Chemotaxis up a diffusing attractant ``c`` (spectral, ETDRK2) and a quasi-steady one ``w``, with
    logistic growth: ``u`` local (explicit or split-off implicit diffusion, limited upwind taxis)."""
    grid = tk.Grid(shape, 1.0)
    r2 = sum((x - c) ** 2 for x, c in zip(grid.mesh(), (0.45, 0.55, 0.6), strict=False))
    system = tk.System(
        fields=("u", "c", "w"),
        diffusion={"u": 0.002, "c": 0.05, "w": 0.02},
        decay={"c": 1.0, "w": 2.0},
        taxis=(tk.Taxis("u", "c", chi=lambda s, p: p["chi"]), tk.Taxis("u", "w", chi=0.1)),
        reaction=lambda s, p, t: {"u": p["r"] * s["u"] * (1 - s["u"]), "c": s["u"], "w": s["u"]},
        quasi_steady=("w",),
        dirichlet={"c": 0.2, "w": 0.1} if dirichlet else None,
    )
    y0 = {"u": np.exp(-r2 / 0.02), "c": 0.5 * np.exp(-r2 / 0.05)}
    numerics = tk.Numerics(
        cell_diffusion=tk.ImplicitDiffusion() if implicit else tk.ExplicitDiffusion(),
        substeps=tk.NoSubcycling(),
        dtype="float32",
    )
    params = tk.cast_floats({"r": 1.0, "chi": 0.1}, "float32")
    return Case(system, grid, y0, params, numerics, params, lambda params, theta: theta, "u")


def voloshin(shape, length, diffusion="explicit") -> Case:
    """voloshin2015 from a run config (``[numerics] max_substeps = 1``); gradient with respect to the
    tumour's growth rate, haptotactic sensitivity and motility. (Not the initial tumour: in float32
    that gradient is itself accurate to only 2.4e-3 relative, measured against float64 on one device,
    the limiter's kinks amplifying round-off; 8 devices differ from one by 5.5e-5 in float32 and by
    4e-15 in float64: ``docs/numerics.md`` §11.)"""
    from tumorfield.config import loads
    from tumorfield.problem import Problem

    text = VOLOSHIN.format(shape=list(shape), length=list(length), diffusion=diffusion)
    p = Problem.from_config(loads(text))

    def with_theta(params, theta):
        return eqx.tree_at(lambda q: (q.r_n, q.chi_n, q.D_n), params, theta)

    theta = (p.params.r_n, p.params.chi_n, p.params.D_n)
    return Case(p.system, p.grid, p.y0, p.params, p.numerics, theta, with_theta, "tumor", wrt_cell=False)


def rollout(case: Case, devices: int, gradient: bool):
    """The lowered 100-step rollout (the rollout's step, ``Stepper.step``, in a ``fori_loop``) of
    ``case`` on ``devices`` devices and its arguments; with ``gradient`` it returns
    ``((loss, state), d loss/d (theta, initial cell))``, else ``(loss, state)``."""
    mesh_ = None if devices == 1 else mesh(devices)
    start = case.start if mesh_ is None else place(case.start, mesh_)
    dt = 0.01

    def run(theta, cell0):
        params = case.with_theta(case.params, theta)
        stepper = tk.make_stepper(case.system, case.grid, params, dt, case.numerics, mesh=mesh_)
        state = {**start, case.cell: cell0}

        def step(i, carry):  # spectral coefficients carried between steps, as in the rollout
            new, carried, _ = stepper.step(*carry, i.astype(stepper.dt.dtype) * stepper.dt)
            return new, carried

        state, _ = jax.lax.fori_loop(0, STEPS, step, (state, stepper.prepare(state)))
        return jnp.sum(state[case.cell] ** 2), state

    fn = jax.value_and_grad(run, argnums=(0, 1) if case.wrt_cell else 0, has_aux=True) if gradient else run
    args = (case.theta, start[case.cell])
    return jax.jit(fn).lower(*args), args


PLANS = {
    # (devices, gradient) of each program; the one-device ones are the references. Gradients cost
    # 3–4× a forward program to compile: within the tests' minute, one problem's (docs/numerics.md
    # §11 gives the others', measured with this script's functions)
    "keller_segel_3d": [(1, False), (1, True), (2, False), (4, False), (8, False), (8, True)],
    "keller_segel_2d_implicit_dirichlet": [(1, False), (2, False), (8, False)],
    "voloshin2015_3d": [(1, False), (2, False), (4, False), (8, False)],
}
AUDITED = ("keller_segel_3d", "voloshin2015_3d")


def cases() -> dict:
    return {
        "keller_segel_3d": keller_segel((16, 8, 8)),
        "keller_segel_2d_implicit_dirichlet": keller_segel((16, 8), implicit=True, dirichlet=True),
        "voloshin2015_3d": voloshin((16, 8, 8), (4.0, 4.0, 4.0)),
    }


def compare_all(cases: dict) -> dict:
    """Every program of :data:`PLANS`, lowered here and compiled two at a time (XLA compiles outside
    the GIL: the two cores of CI), then run; the relative differences of each decomposed program's
    state (and gradient) from one device's, and the audit of the 8-device forward programs."""
    lowered = {(name, d, g): rollout(cases[name], d, g) for name, plan in PLANS.items() for d, g in plan}

    def compile_timed(low):
        t = time.thread_time()
        return low.compile(), time.thread_time() - t

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(compile_timed, low) for key, (low, _) in lowered.items()}
        timed = {key: f.result() for key, f in futures.items()}
    compiled = {key: c for key, (c, _) in timed.items()}
    results = {key: jax.block_until_ready(compiled[key](*lowered[key][1])) for key in compiled}
    report = {}
    for name, plan in PLANS.items():
        out = {"devices": {}}
        forward_ref = results[(name, 1, False)][1] if (name, 1, False) in results else results[(name, 1, True)][0][1]
        for d, g in plan:
            if d == 1:
                continue
            entry = out["devices"].setdefault(str(d), {})
            if g:
                (_, state), grad = results[(name, d, True)]
                (_, state_ref), grad_ref = results[(name, 1, True)]
                entry["gradient"] = relative(grad_ref, grad)
                entry["state_of_gradient_program"] = relative(state_ref, state)
            else:
                entry["state"] = relative(forward_ref, results[(name, d, False)][1])
        if name in AUDITED:
            out["devices"]["8"]["audit"] = audit(compiled[(name, 1, False)], compiled[(name, 8, False)],
                                                 cases[name].grid)  # fmt: skip
            if (name, 8, True) in compiled:
                bodies = loop_bodies(compiled[(name, 8, True)].as_text())
                out["devices"]["8"]["audit_gradient"] = {"per_step": [count(b) for b in bodies]}
        out["compile_cpu_seconds"] = {f"{d}{'_gradient' if g else ''}": timed[(name, d, g)][1] for d, g in plan}
        report[name] = out
    return report


def count(text: str) -> dict:
    """How many of each collective the HLO text holds (async pairs counted once, by their start)."""
    return {op: len(re.findall(rf"\s{op}(?:-start)?\(", text)) for op in COLLECTIVES}


def loop_bodies(text: str) -> list[str]:
    """The HLO text of the bodies of the program's while loops (the step loop: one step each; a
    gradient's program has the forward loop and the backward one)."""
    bodies = re.findall(r"\bwhile\([^\n]*body=%?([\w.\-]+)", text)
    out = []
    for name in bodies:
        match = re.search(rf"^%?{re.escape(name)} [^\n]*{{\n(.*?)^}}", text, re.S | re.M)
        out.append(match.group(1))
    return out


def audit(compiled_one, compiled, grid) -> dict:
    """The compiled rollout on a mesh against one device: the collectives of one step (the loop's
    body), the largest array an all-gather yields, the bytes each kind of collective moves per step,
    and ``memory_analysis`` on one device and per device of the mesh."""
    text = compiled.as_text()
    bodies = loop_bodies(text)
    gathers = re.findall(r"= \w+\[([\d,]*)\][^\n]*\sall-gather(?:-start)?\(", text)
    out = {
        "per_step": [count(body) for body in bodies],
        "whole_program": count(text),
        "largest_all_gather": max((int(np.prod([int(d) for d in s.split(",") if d])) for s in gathers), default=0),
        "field_cells": int(np.prod(grid.shape)),
        "bytes_per_step": [halo_and_transpose_bytes(body) for body in bodies],
    }
    for label, c in (("one", compiled_one), ("mesh", compiled)):
        memory = c.memory_analysis()
        out[f"memory_{label}"] = {
            "argument": memory.argument_size_in_bytes,
            "output": memory.output_size_in_bytes,
            "temp": memory.temp_size_in_bytes,
        }
    return out


def halo_and_transpose_bytes(text: str) -> dict:
    """Bytes per device each collective of the HLO text moves (its operand shapes)."""
    sizes = {"f32": 4, "f64": 8, "s32": 4, "pred": 1}
    totals = {}
    for op in ("all-to-all", "collective-permute"):
        total = 0
        for line in text.splitlines():
            if not re.search(rf"\s{op}(?:-start)?\(", line):
                continue
            result = line.split("=", 1)[1].split(op)[0]
            for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", result):
                total += sizes.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d]))
        totals[op] = total
    return totals


def bound_gradient() -> float:
    """The gradient of the positivity bounds (``Stepper.rate_bounds``: the rollout records them, and a
    differentiated ``simulate`` differentiates them) with respect to the state, on 8 devices against
    one: the global maximum of the face speeds is an all-gather of every slab's maxima and a max."""
    case = keller_segel((16, 8))
    out = {}
    for devices in (1, 8):
        mesh_ = None if devices == 1 else mesh(devices)
        stepper = tk.make_stepper(case.system, case.grid, case.params, 0.01, case.numerics, mesh=mesh_)
        start = case.start if mesh_ is None else place(case.start, mesh_)

        def total(state, stepper=stepper):
            return sum(jnp.sum(b) for b in stepper.rate_bounds(state, jnp.zeros((), jnp.float32)).values())

        out[devices] = jax.jit(jax.grad(total))(start)
    return relative(out[1], out[8])


def run_files():
    """A fisher_kpp run with ``[run] devices = 2`` and one with 1: their stored frames and scalars."""
    import h5py

    from tumorfield.config import loads
    from tumorfield.run import Run

    text = """
[model]
name = "fisher_kpp"
[grid]
shape = [16, 16]
length = [1.0, 1.0]
[time]
t_end = 0.2
dt = 0.01
save_every = 0.05
[parameters]
chi = 0.01
[run]
chunk_frames = 2
progress = "none"
compilation_cache = "off"
devices = {devices}
"""
    out, stored = {}, {}
    with tempfile.TemporaryDirectory() as directory:
        for devices in (1, 2):
            path = os.path.join(directory, f"run{devices}.h5")
            config = loads(text.format(devices=devices))
            outcome = Run.start(config, path, overwrite=True, argv=["test"], log=lambda *_: None).execute()
            with h5py.File(outcome.path, "r") as h5:
                n, s = int(h5.attrs["n_committed"]), int(h5.attrs["n_scalars_committed"])
                stored[devices] = {
                    "fields": {k: np.asarray(h5[k][:n]) for k in ("t", "u", "c")},
                    "scalars": {k: np.asarray(v[:s]) for k, v in h5["scalars"].items()},
                    "status": outcome.status,
                }
    out["status"] = [stored[1]["status"], stored[2]["status"]]
    out["fields"] = relative(stored[1]["fields"], stored[2]["fields"])
    out["scalars"] = relative(stored[1]["scalars"], stored[2]["scalars"])
    return out


def main(path):
    started = time.perf_counter()
    report = compare_all(cases())
    report["seconds_compare"] = time.perf_counter() - started
    report["bound_gradient"] = bound_gradient()
    t = time.perf_counter()
    report["run_files"] = run_files()
    report["run_files"]["seconds"] = time.perf_counter() - t
    report["seconds"] = time.perf_counter() - started
    report["cpu_seconds"] = time.process_time()
    with open(path, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
