"""The scenarios that ship with tumorfield: the study's arms, its fit and the examples, by name.

``experiments/`` of the source tree is their one definition. Building the wheel copies the files
that :data:`PACKAGED` selects into ``tumorfield/scenarios/data/`` (``setup.py``'s ``build_py``),
keeping their layout, so relative paths between them (a fit's ``arms``, a sweep's ``base``) resolve
in the installed package as they do in a clone. In a clone (or an editable install) the files are
read from ``experiments/`` itself.

A scenario's name is its path below ``experiments/`` without ``.toml`` (``voloshin2015/ptx``); its
description is the first comment line of the file. ``tumorfield scenarios`` lists them,
``tumorfield run voloshin2015/ptx -o ptx.h5`` runs one (a path to an existing file always wins),
``tumorfield scenario voloshin2015/ptx -o ptx.toml`` writes a copy to edit.

This module uses the standard library only: ``setup.py`` loads it by path at build time, and the
CLI's parser imports it without importing JAX.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

PACKAGED = ("examples/*.toml", "voloshin2015/*.toml", "voloshin2015/fit/*.toml")
"""Globs below ``experiments/`` of the files that the wheel ships (and ``tumorfield scenarios`` lists)."""

NOT_PACKAGED = {
    "glioma_atlas/atlas.toml": "reads the MNI152 tissue maps from nilearn's wheel (mni152/…, made absolute by "
    "experiments/glioma_atlas/grow.py); neither the maps nor nilearn ship with tumorfield",
}
"""Scenario files of ``experiments/`` that the wheel leaves out, and why (a test checks that every
TOML file of ``experiments/`` is in one of :data:`PACKAGED` and this)."""

DATA = "data"
"""The folder of this package that holds the packaged files in a built wheel."""


class ScenarioError(Exception):
    """A name that names no packaged scenario, or a copy that would replace a file (exit 2)."""


@dataclass(frozen=True)
class Scenario:
    """One packaged scenario: ``name`` (``voloshin2015/ptx``), its file, kind and description."""

    name: str
    path: Path
    kind: str  # "run", "fit" or "sweep": the file's top-level table
    description: str


def selected(root: str | os.PathLike) -> list[str]:
    """The files below ``root`` (``experiments/``) that :data:`PACKAGED` selects, as sorted POSIX paths."""
    root = Path(root)
    return sorted({p.relative_to(root).as_posix() for pattern in PACKAGED for p in root.glob(pattern) if p.is_file()})


def root() -> Path | None:
    """Where the scenario files are: the wheel's ``data/``, else a clone's ``experiments/``; None if neither."""
    here = Path(__file__).resolve().parent
    for candidate in (here / DATA, here.parents[2] / "experiments"):
        if candidate.is_dir():
            return candidate
    return None


def _kind(text: str) -> str:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return "?"
    return "fit" if "fit" in document else "sweep" if "sweep" in document else "run"


def _description(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def scenarios() -> list[Scenario]:
    """Every packaged scenario, sorted by name."""
    base = root()
    if base is None:
        return []
    out = []
    for relative in selected(base):
        path = base / relative
        text = path.read_text(encoding="utf-8")
        out.append(Scenario(relative.removesuffix(".toml"), path, _kind(text), _description(text)))
    return out


def find(name: str) -> Scenario | None:
    """The packaged scenario ``name`` (``voloshin2015/ptx``; ``.toml`` may be given), else None."""
    name = name.removesuffix(".toml").strip("/")
    return next((s for s in scenarios() if s.name == name), None)


def resolve(argument: str) -> tuple[str, Scenario | None]:
    """A command's config argument: itself when it is an existing file (or no scenario's name), else
    the packaged scenario's path. Returns ``(path, scenario or None)``."""
    if os.path.exists(argument):
        return argument, None
    scenario = find(argument)
    return (argument, None) if scenario is None else (str(scenario.path), scenario)


def unknown(argument: str) -> str:
    """The one-line message for a config argument that is neither a file nor a scenario."""
    names = [s.name for s in scenarios()]
    close = [n for n in names if argument.removesuffix(".toml").split("/")[-1] == n.split("/")[-1]]
    hint = f"; did you mean {close[0]}?" if close else ""
    return (
        f"{argument}: no such file, nor a packaged scenario{hint} "
        f"(`tumorfield scenarios` lists the {len(names)} that ship with tumorfield)"
    )


def _references(document: dict) -> list[str]:
    """The relative paths of a scenario that point at other files (a fit's arms, a sweep's base)."""
    fit, sweep = document.get("fit", {}), document.get("sweep", {})
    refs = list(fit.get("arms", {}).values()) if isinstance(fit.get("arms"), dict) else []
    if isinstance(sweep.get("base"), str):
        refs.append(sweep["base"])
    return [r for r in refs if isinstance(r, str) and not os.path.isabs(r)]


def copy_text(scenario: Scenario) -> str:
    """The scenario's text for a copy elsewhere: paths to other packaged files (a fit's arms, a sweep's
    base) made absolute, so that the copy reads the same files; everything else, comments included,
    as it is (a relative ``fit.data`` then points next to the copy)."""
    text = scenario.path.read_text(encoding="utf-8")
    for reference in _references(tomllib.loads(text)):
        target = (scenario.path.parent / reference).resolve()
        if target.is_file():
            text = text.replace(json.dumps(reference), json.dumps(str(target)))
    return text


def write_copy(name: str, output: str, overwrite: bool = False) -> Path:
    """Write the scenario ``name`` to ``output`` (:func:`copy_text`); refuses an existing file unless
    ``overwrite``. Raises :class:`ScenarioError` before writing anything."""
    scenario = find(name)
    if scenario is None:
        raise ScenarioError(unknown(name))
    path = Path(output)
    if path.is_dir():
        raise ScenarioError(f"{output} is a directory: give the file to write (e.g. {path / Path(name).name}.toml)")
    if path.exists() and not overwrite:
        raise ScenarioError(f"{output} exists: use --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = copy_text(scenario)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path
