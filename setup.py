"""Build step of the wheel that pyproject.toml cannot express: the packaged scenarios.

``experiments/`` stays their one definition; ``build_py`` copies the files that
``tumorfield.scenarios.PACKAGED`` selects into ``tumorfield/scenarios/data/`` of the build, keeping
their layout (so a fit's relative ``arms`` resolve). Everything else is in pyproject.toml.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _scenarios_module():
    """``src/tumorfield/scenarios/__init__.py`` loaded by path (standard library only; no JAX)."""
    path = ROOT / "src" / "tumorfield" / "scenarios" / "__init__.py"
    spec = importlib.util.spec_from_file_location("_tumorfield_scenarios", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class BuildWithScenarios(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads experiments/ in place
            return
        scenarios = _scenarios_module()
        source = ROOT / "experiments"
        files = scenarios.selected(source)
        if not files:
            raise SystemExit(f"no scenario files under {source}: an sdist must include experiments/ (MANIFEST.in)")
        target = Path(self.build_lib) / "tumorfield" / "scenarios" / scenarios.DATA
        shutil.rmtree(target, ignore_errors=True)  # build/ is reused: no file of an earlier build stays
        for relative in files:
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / relative, destination)


setup(cmdclass={"build_py": BuildWithScenarios})
