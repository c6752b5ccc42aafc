"""Model metadata and the registry: every field and observable has units and a long name where it is
computed; the writer refuses one without; a third-party model runs from a config through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

import tumorfield as tf
from tumorfield import models
from tumorfield._schema import ConfigError
from tumorfield.config import OutputSection
from tumorfield.io._writer import TrajectoryFile
from tumorfield.models import Field, Observable, Observables

CONFIGURATIONS = [
    ("fisher_kpp", {}, (8, 8)),
    ("fisher_kpp", {"parameters": {"chi": 0.1}}, (8, 8)),
    ("fisher_kpp", {"parameters": {"chi": 0.1}}, (4, 4, 4)),
    ("voloshin2015", {}, (16, 16)),
]


@pytest.mark.parametrize(("name", "sections", "shape"), CONFIGURATIONS)
def test_every_field_and_observable_has_units_and_a_long_name(name, sections, shape):
    model = models.get(name).from_sections(sections)
    grid = tf.Grid(shape=shape, length=tuple(2.0 for _ in shape))
    state = {k: np.asarray(v) for k, v in model.initial_state(grid).items()}
    for field in model.system.fields:
        assert field not in state or np.shape(state[field]) in ((), grid.shape)
        state.setdefault(field, np.zeros(grid.shape))  # quasi-steady fields
    keys = model.observe(state, model.params(grid), 0.0, grid)
    for table, names in (("fields", model.system.fields), ("observables", keys)):
        declared = getattr(model, table)
        for key in names:
            assert isinstance(declared[key], Field if table == "fields" else Observable), (name, key)
            assert declared[key].units.strip() and declared[key].long_name.strip(), (name, key)
    assert set(model.observables) == set(keys)  # none declared that observe does not return


def test_declarations_are_checked():
    with pytest.raises(ValueError, match="units must be a non-empty string"):
        Observable("", "nothing")
    table = Observables(a=Observable("1", "a"))
    with pytest.raises(ValueError, match="'a' is declared twice"):
        table.declare(a=Observable("mm", "a again"))
    with pytest.raises(TypeError, match="Observable"):
        table.declare(b=Field("1", "a field"))


def test_the_writer_refuses_an_undeclared_observable(tmp_path):
    grid = tf.Grid(shape=(4, 4), length=(1.0, 1.0))
    model = SimpleNamespace(
        name="sloppy", fields={"u": Field("1", "u")}, observables={"total": Observable("mm^d", "total")}
    )
    path = tmp_path / "sloppy.h5"
    with pytest.raises(ValueError, match="model 'sloppy' declares no units for observable 'peak'"):
        TrajectoryFile.create(
            str(path), grid=grid, system=SimpleNamespace(fields=("u",), scalars=()), model=model,
            output=OutputSection(), metadata={"config": ""}, scalar_names=("total", "peak"),
            state_dtypes={"u": np.dtype("float64")},
        )  # fmt: skip
    assert not path.exists()


def test_unknown_and_broken_models_are_named(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no such model; available models are fisher_kpp, glioma, voloshin2015"):
        models.get("nope")
    _dist_info(tmp_path, "broken_plugin", "broken = no_such_package_here:Model")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "broken" in models.names()
    with pytest.raises(ConfigError, match="loading entry point broken = 'no_such_package_here:Model'.*failed"):
        models.get("broken")


DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def _documented_example() -> str:
    """The first Python block of ``docs/models.md``: the example the docs promise works."""
    text = DOCS.read_text()
    start = text.index("```python\n") + len("```python\n")
    return text[start : text.index("```", start)]


def _dist_info(root, distribution: str, entry_point: str) -> None:
    """An installed distribution as importlib.metadata sees it: ``<name>-1.0.dist-info`` on sys.path."""
    info = root / f"{distribution}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tumorfield.models]\n{entry_point}\n")


def test_a_third_party_model_runs_from_a_config_through_its_entry_point(tmp_path):
    (tmp_path / "mylogistic.py").write_text(_documented_example())
    _dist_info(tmp_path, "mylogistic", "mylogistic = mylogistic:Logistic")
    config = tmp_path / "cfg.toml"
    config.write_text(textwrap.dedent(f"""
        [model]
        name = "mylogistic"
        [grid]
        shape = [16, 16]
        length = [1.0, 1.0]
        [time]
        t_end = 0.2
        dt = 0.05
        save_every = 0.1
        [parameters]
        r = 2.0
        [run]
        progress = "none"
        compilation_cache = "{tmp_path / "cache"}"
    """))  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    out = tmp_path / "out.h5"
    proc = subprocess.run([sys.executable, "-m", "tumorfield.cli", "run", str(config), "-o", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out, "r") as h5:
        assert h5["u"].shape == (3, 16, 16) and int(h5.attrs["n_committed"]) == 3
        assert (h5["u"].attrs["units"], h5["u"].attrs["long_name"]) == (
            "1",
            "tumour cell density (fraction of carrying capacity)",
        )
        mass = h5["scalars/mass"]
        assert (mass.attrs["units"], mass.attrs["long_name"]) == ("mm2", "tumour mass ∫ u")
        assert h5["scalars/peak"].attrs["units"] == "1"
        assert mass.shape == (5,) and mass[-1] > mass[0] > 0  # logistic growth
