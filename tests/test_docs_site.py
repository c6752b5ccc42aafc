"""The documentation site's sources (issue 26): every page is in the nav, the API pages cover the
public names. (`make docs` builds it with --strict and runs the tutorials; CI runs that.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _all(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "__all__")
    return [ast.literal_eval(e) for e in node.value.elts]


def test_every_docs_page_is_in_the_nav():
    nav = set(re.findall(r":\s*([\w/-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages - nav == set(), f"pages missing from mkdocs.yml's nav: {sorted(pages - nav)}"
    assert nav - pages == set(), f"nav entries without a page: {sorted(nav - pages)}"


def test_the_api_pages_document_every_public_name():
    application = _all(ROOT / "src" / "tumorfield" / "__init__.py")
    kernels = _all(ROOT / "kernels" / "tumorfield_kernels" / "__init__.py")
    assert "::: tumorfield\n" in (ROOT / "docs" / "api.md").read_text()  # its whole __all__
    listed = re.findall(r"^\s+- (\w+)$", (ROOT / "docs" / "api-kernels.md").read_text(), re.M)
    missing = sorted(set(kernels) - set(application) - set(listed))
    assert not missing, f"docs/api-kernels.md does not list {missing}"
    assert not set(listed) - set(kernels), sorted(set(listed) - set(kernels))
