"""Config validation: every kind of bad input is refused before compute, naming file, key, value."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tumorfield import config as cfg
from tumorfield._schema import ConfigError, section_keys

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "experiments" / "examples" / "fisher_kpp.toml"

BASE = textwrap.dedent(
    """
    [model]
    name = "fisher_kpp"
    [grid]
    shape = [16, 16]
    length = [1.0, 1.0]
    [time]
    t_end = 1.0
    dt = 0.05
    save_every = 0.25
    [parameters]
    D = 1e-3
    r = 1.0
    """
)


def _error(text: str = BASE, overrides=()) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        cfg.loads(text, "bad.toml", overrides)
    return info.value


def test_example_loads_with_defaults_and_round_trips():
    config = cfg.load(EXAMPLE)
    assert config.source == str(EXAMPLE)
    assert config.grid.shape == (64, 64)
    assert config.n_steps == 200 and config.steps_per_save == 20 and config.n_frames == 11
    assert config.sections["output"]["gzip_level"] == 6  # default filled in
    again = cfg.loads(config.text, "again")
    assert again.sections == config.sections


def test_ints_accepted_for_floats_and_stored_as_floats():
    config = cfg.loads(BASE.replace("t_end = 1.0", "t_end = 1"), "x.toml")
    assert config.time.t_end == 1.0 and isinstance(config.time.t_end, float)


@pytest.mark.parametrize(
    "override, key, fragment",
    [
        ("parameters.rr=2.0", "parameters.rr", "did you mean 'r'"),
        ("time.save_evry=0.5", "time.save_evry", "did you mean 'save_every'"),
        ('grid.shape="16"', "grid.shape", "must be a list"),
        ("parameters.D=true", "parameters.D", "must be a number"),
        ("parameters.D=-1e-3", "parameters.D", "must be ≥ 0"),
        ("parameters.D=nan", "parameters.D", "finite"),
        ("output.compression=zip", "output.compression", "'none', 'lzf', 'gzip'"),
        ("output.precision=float16", "output.precision", "'float32', 'float64'"),
        ("run.chunk_frames=0", "run.chunk_frames", "must be > 0"),
        ("grid.shape=[16, 1]", "grid.shape", "at least 2 cells"),
        ("grid.length=[1.0]", "grid.length", "needs 2 entries"),
        ("time.t_end=1.01", "time.t_end", "whole, positive number of time steps"),
        ("time.save_every=0.26", "time.save_every", "whole, positive number of time steps"),
        ("time.save_every=0.3", "time.t_end", "whole number of save_every"),
        ("time.dt=-0.1", "time.dt", "> 0"),
        ("initial.centre=[5.0, 0.5]", "initial.centre", "must lie in [0, 1.0] mm"),
        ("initial.centre=[0.5]", "initial.centre", "needs 2 coordinates"),
        ("model.name=fisher", "model.name", "allowed models are"),
        ("grid.shape=[200000, 200000]", "grid.shape", "GiB"),
    ],
)
def test_bad_values_name_file_key_value_and_what_is_allowed(override, key, fragment):
    error = _error(overrides=[override])
    message = str(error)
    assert error.key_path == key
    assert message.startswith("bad.toml: " + key + " = ")
    assert fragment in message
    assert "\n" not in message


def test_gzip_level_range():
    error = _error(overrides=["output.compression=gzip", "output.gzip_level=12"])
    assert error.key_path == "output.gzip_level" and "[0, 9]" in str(error)
    assert cfg.loads(BASE, "x", ["output.compression=gzip", "output.gzip_level=9"]).output.gzip_level == 9


def test_unknown_section_and_missing_key_and_syntax_error():
    assert "unknown section" in str(_error(BASE + "\n[parameter]\nD = 1.0\n"))
    assert "did you mean 'parameters'" in str(_error(BASE + "\n[parameter]\nD = 1.0\n"))
    error = _error(BASE.replace("dt = 0.05\n", ""))
    assert error.key_path == "time.dt" and "required" in str(error) and "day" in str(error)
    error = _error(BASE + "\n[grid\n")
    assert str(error).startswith("bad.toml: (TOML syntax)")


def test_override_syntax_errors():
    assert _error(overrides=["parameters.D"]).key_path == "--set"
    assert _error(overrides=["D=1.0"]).key_path == "--set"
    config = cfg.loads(BASE, "x", ["parameters.r=2", "output.compression=gzip"])
    assert config.model.parameters.r == 2.0 and config.output.compression == "gzip"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        cfg.load(tmp_path / "nope.toml")
    assert "nope.toml" in str(info.value) and "cannot be read" in str(info.value)


def test_docs_config_md_is_generated_from_the_schemas():
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == cfg.config_docs(), "docs/config.md is stale: run `tumorfield config-docs > docs/config.md`"
    for section in cfg.GENERIC_SECTIONS.values():
        for key, spec in section_keys(section).items():
            assert f"| `{key}` |" in committed
            if spec.units:
                assert spec.units in committed


def test_cli_bad_config_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text(BASE.replace("r = 1.0", "rr = 1.0"))
    out = tmp_path / "out.h5"
    result = subprocess.run(
        [sys.executable, "-m", "tumorfield.cli", "run", str(path), "-o", str(out), "--set", "run.progress=none"],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "parameters.rr" in lines[0] and "did you mean 'r'" in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "override, key, fragment",
    [
        (
            'dosing.anakinra=[{time=3.005, dose_mg_per_kg=50.0, route="ip", every=1.0, count=1}]',
            "dosing.anakinra[0].time",
            "step boundaries",
        ),
        (
            'dosing.anakinra=[{time=-1.0, dose_mg_per_kg=50.0, route="ip", every=1.0, count=1}]',
            "dosing.anakinra",
            "≥ 0",
        ),
        ("host.genotype=mutant", "host.genotype", "'wild_type'"),
    ],
)
def test_model_sections_and_cross_checks_are_validated_by_the_loader(override, key, fragment):
    """Model-owned sections (here voloshin2015's doses) go through the same loader and messages."""
    from tumorfield import models

    if "voloshin2015" not in models.names():
        pytest.skip("voloshin2015 model not available")
    path = ROOT / "experiments" / "voloshin2015" / "anakinra.toml"
    with pytest.raises(ConfigError) as info:
        cfg.load(path, [override])
    assert info.value.key_path == key
    assert str(info.value).startswith(f"{path}: {key} = ") and fragment in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "kind", "why"),
    [
        ([], "ExplicitDiffusion", "explicit: at t = 0 the step dt = 0.05 day is within the explicit limit"),
        (["parameters.D=1.0"], "ImplicitDiffusion", "implicit: at t = 0 the cells' explicit diffusion would limit"),
        (["parameters.D=1.0", "numerics.cell_diffusion=explicit"], "ExplicitDiffusion", "explicit: as configured"),
    ],
)
def test_cell_diffusion_auto_takes_the_implicit_one_where_diffusion_binds_the_step(overrides, kind, why):
    """The default ``numerics.cell_diffusion = "auto"``: implicit where the explicit diffusion limit (Δx²/4D
    in 2D: 0.00098 day at D = 1 mm²/day on 1/16 mm cells) is below dt, explicit where dt is within it."""
    config = cfg.load(ROOT / "experiments" / "examples" / "fisher_kpp.toml", overrides)
    assert type(config.numerics.cell_diffusion).__name__ == kind
    assert config.cell_diffusion_choice[1].startswith(why), config.cell_diffusion_choice[1]
