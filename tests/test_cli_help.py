"""The CLI's front door (issue 26): help without JAX, help text for every argument, a section of
docs/cli.md per command, and the packaged scenarios by name (list, run, copy)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tumorfield import cli, scenarios

ROOT = Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_parser_and_help_do_not_import_jax():
    # a new process: importing the CLI, building the parser, an argument error and every --help
    code = (
        "import sys, contextlib, io\n"
        "import tumorfield.cli as cli\n"
        "parser = cli._parser()\n"
        "commands = [[]] + [[name] for name in parser._subparsers._group_actions[0].choices]\n"
        "for argv in [['run'], ['plot', 'x.h5'], *[c + ['--help'] for c in commands]]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try:\n"
        "            cli.main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "heavy = ('jax', 'jaxlib', 'numpy', 'h5py')\n"
        "print(len(commands), sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    env = {"PATH": "", "JAX_PLATFORMS": "cpu", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'kernels'}"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.split(" ", 1)
    assert int(count) >= 12  # the top level and every subcommand's help ran
    assert loaded.strip() == "[]", loaded


def test_every_positional_argument_has_help_and_every_command_an_example():
    missing = [
        f"{name} {action.dest}"
        for name, sub in _subparsers(cli._parser()).items()
        for action in sub._actions
        if not action.option_strings and not action.help
    ]
    assert not missing, missing
    assert all("example:" in sub.format_help() for sub in _subparsers(cli._parser()).values())


def test_top_level_help_is_plain_text_listing_every_command_and_the_exit_codes():
    text = cli._parser().format_help()
    assert "``" not in text and ":class:" not in text
    for name in _subparsers(cli._parser()):
        assert re.search(rf"^\s+{re.escape(name)}\b", text, re.M), name
    assert "exit codes:" in text and "75" in text and "tumorfield scenarios" in text


def test_docs_cli_has_a_section_for_every_command():
    headings = [line for line in (ROOT / "docs" / "cli.md").read_text().splitlines() if line.startswith("#")]
    named = {name for line in headings for name in re.findall(r"`([a-z-]+)`", line)}
    missing = sorted(set(_subparsers(cli._parser())) - named)
    assert not missing, f"docs/cli.md has no section for {missing}"


def test_every_scenario_file_of_experiments_is_packaged_or_left_out_with_a_reason():
    experiments = ROOT / "experiments"
    every = sorted(p.relative_to(experiments).as_posix() for p in experiments.rglob("*.toml"))
    packaged = scenarios.selected(experiments)
    assert "voloshin2015/ptx.toml" in packaged and "voloshin2015/fit/fit.toml" in packaged
    assert sorted(packaged + list(scenarios.NOT_PACKAGED)) == every
    assert not set(packaged) & set(scenarios.NOT_PACKAGED)


def test_scenarios_lists_name_kind_and_description(capsys):
    assert cli.main(["scenarios"]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(scenarios.selected(ROOT / "experiments"))
    ptx = next(line.split(None, 2) for line in lines if line.startswith("voloshin2015/ptx "))
    assert ptx[1] == "run" and "Paclitaxel" in ptx[2]
    assert any(line.split()[:2] == ["voloshin2015/fit/fit", "fit"] for line in lines)


def test_scenario_writes_a_copy_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "my" / "ptx.toml"
    assert cli.main(["scenario", "voloshin2015/ptx", "-o", str(out)]) == cli.EXIT_OK
    assert out.read_text() == (ROOT / "experiments" / "voloshin2015" / "ptx.toml").read_text()
    out.write_text("# mine\n")
    capsys.readouterr()
    assert cli.main(["scenario", "voloshin2015/ptx", "-o", str(out)]) == cli.EXIT_INPUT
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--overwrite" in error and str(out) in error
    assert out.read_text() == "# mine\n"  # refused: untouched
    assert cli.main(["scenario", "voloshin2015/ptx.toml", "-o", str(out), "--overwrite"]) == cli.EXIT_OK
    assert "[dosing]" in out.read_text()


def test_a_copied_fit_reads_the_packaged_arms(tmp_path):
    out = tmp_path / "fit.toml"
    assert cli.main(["scenario", "voloshin2015/fit/fit", "-o", str(out)]) == cli.EXIT_OK
    document = tomllib.loads(out.read_text())
    arms = document["fit"]["arms"]
    assert len(arms) == 6 and all(Path(p).is_absolute() and Path(p).is_file() for p in arms.values())
    assert document["fit"]["data"] == "observations.csv"  # the user's data, next to the copy
    assert out.read_text().startswith("# Four parameters")  # comments kept


def test_a_name_that_is_neither_a_file_nor_a_scenario_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "voloshin2015/ptxx", "-o", "x.h5"]) == cli.EXIT_INPUT
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "voloshin2015/ptxx" in error and "tumorfield scenarios" in error
    assert cli.main(["scenario", "nope", "-o", "x.toml"]) == cli.EXIT_INPUT
    assert not (tmp_path / "x.toml").exists() and not (tmp_path / "x.h5").exists()


def test_an_existing_file_wins_over_a_scenario_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "voloshin2015").mkdir()
    (tmp_path / "voloshin2015" / "ptx").write_text("[model]\n")
    assert scenarios.resolve("voloshin2015/ptx") == ("voloshin2015/ptx", None)
    path, scenario = scenarios.resolve("voloshin2015/vehicle")
    assert scenario.name == "voloshin2015/vehicle" and Path(path).is_file()


@pytest.mark.parametrize("value", ["obs.csv", '"obs.csv"', "sub/obs.csv"])
def test_a_packaged_fit_reads_relative_data_from_the_working_directory(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    (item,) = cli._here_relative([f"fit.data={value}"])
    assert tomllib.loads(item.replace("fit.data", "v", 1))["v"] == str(tmp_path / value.strip('"'))
    assert cli._here_relative(["fit.data=/abs/obs.csv", "fit.max_iterations=3"]) == [
        "fit.data=/abs/obs.csv",
        "fit.max_iterations=3",
    ]
