"""The PDE system of the Voloshin 2015 model: fields, diffusion, decay, taxis, quasi-steady
fields and scalar ODE variables. One module-level :data:`SYSTEM` serves every instance, so
compiled rollouts are shared between arms."""

from __future__ import annotations

from tumorfield_kernels import StateDependent, System, Taxis, WithGrid

from .._quantities import Field
from .kinetics import macrophage_chi, reaction, tumor_chi, tumor_motility


def _coef(name):
    """The coefficient ``params.<name>`` (a function of the parameters, so it stays a traced leaf)."""

    def get(p):
        return getattr(p, name)

    get.__name__ = f"params.{name}"
    return get


def _free_paclitaxel_loss(p):
    """``λ_P + k_on`` (1/day): tissue clearance and uptake into cells of free paclitaxel."""
    return p.lambda_p + p.ptx_kappa * p.ptx_k_off


_free_paclitaxel_loss.__name__ = "params.lambda_p + params.ptx_kappa * params.ptx_k_off"

FIELDS = {
    "tumor": Field("1", "tumour cell density (fraction of carrying capacity)"),
    "ecm": Field("1", "extracellular matrix density (fraction of normal matrix density)"),
    "mde": Field("1", "matrix-degrading enzyme (normalised)"),
    "chemo": Field("1", "macrophage chemoattractant CCL2/CSF-1 (normalised)"),
    "m1": Field("1", "M1 (anti-tumour) macrophage density (fraction of carrying capacity)"),
    "m2": Field("1", "M2 (pro-tumour, pro-angiogenic) macrophage density (fraction of carrying capacity)"),
    "il1b": Field("pM", "IL1β concentration"),
    "vegf": Field("pM", "VEGF-A concentration"),
    "leakiness": Field("1", "fraction of leaky vessel wall"),
    "paclitaxel": Field("nM", "free (interstitial) paclitaxel concentration"),
    "paclitaxel_bound": Field("nM", "cell-bound paclitaxel (per tissue volume)"),
    "anakinra": Field("nM", "tissue anakinra concentration"),
    "circulating": Field("cells", "circulating tumour cells"),
    "burden": Field("cells", "metastatic burden"),
    "seeded": Field("cells", "cumulative seeded cells"),
}
"""Every field of :data:`SYSTEM` (in its order) with units and long name."""
SCALARS = ("circulating", "burden", "seeded")

SYSTEM = System(
    fields=tuple(FIELDS),
    diffusion={
        "tumor": StateDependent(tumor_motility),
        "mde": _coef("D_e"),
        "chemo": _coef("D_c"),
        "m1": _coef("D_m"),
        "m2": _coef("D_m"),
        "il1b": _coef("D_i"),
        "vegf": _coef("D_g"),
        "paclitaxel": _coef("D_p"),
        "anakinra": _coef("D_a"),
    },
    decay={
        "mde": _coef("lambda_e"),
        "chemo": _coef("lambda_c"),
        "vegf": _coef("lambda_g"),
        "il1b": _coef("lambda_i"),
        "leakiness": _coef("r_l"),
        "paclitaxel": _free_paclitaxel_loss,
        "paclitaxel_bound": _coef("ptx_k_off"),
        "anakinra": _coef("lambda_a"),
        "m1": _coef("d_m"),
        "m2": _coef("d_m"),
        "circulating": _coef("k_circ"),
    },
    taxis=(
        Taxis(field="tumor", attractant="ecm", chi=tumor_chi),
        Taxis(field="m1", attractant="chemo", chi=macrophage_chi),
        Taxis(field="m2", attractant="chemo", chi=macrophage_chi),
    ),
    reaction=WithGrid(reaction),
    quasi_steady=("mde", "chemo", "vegf"),
    scalars=SCALARS,
)
"""One System object for every instance, so compiled rollouts are shared between arms."""
