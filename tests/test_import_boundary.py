"""``tumorfield_kernels`` is the generic core: it never imports ``tumorfield``."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import tumorfield_kernels

_PACKAGE = pathlib.Path(tumorfield_kernels.__file__).parent


def _imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_no_module_of_the_core_imports_tumorfield():
    modules = sorted(_PACKAGE.rglob("*.py"))
    assert len(modules) >= 4  # the scan found the package's modules
    offenders = [
        f"{path.relative_to(_PACKAGE)} imports {name}"
        for path in modules
        for name in _imported_modules(path)
        if name == "tumorfield" or name.startswith("tumorfield.")
    ]
    assert not offenders, offenders


def test_ast_scan_detects_an_offending_import(tmp_path):
    # the scan itself can fail: a module that imports the application is caught
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy\nfrom tumorfield.models import voloshin2015\n")
    assert "tumorfield.models" in set(_imported_modules(bad))


def test_importing_the_core_does_not_load_tumorfield():
    code = (
        "import sys, tumorfield_kernels\n"
        "loaded = sorted(m for m in sys.modules if m == 'tumorfield' or m.startswith('tumorfield.'))\n"
        "print(repr(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"JAX_PLATFORMS": "cpu", "PATH": ""},
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stdout
