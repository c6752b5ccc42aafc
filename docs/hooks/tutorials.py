"""mkdocs hook: run the tutorials (``docs/tutorials/*.md``) while the site builds, and show their output.

A fenced block opened with ```` ```bash exec ```` or ```` ```python exec ```` is executed, in the
order of the page, in a fresh temporary working directory per page: ``bash`` blocks with ``bash -e``,
``python`` blocks in one namespace per page. Both run this clone's code: ``src/`` and ``kernels/``
come first on the path, and ``tumorfield`` in a bash block is ``python -m tumorfield.cli`` of the
Python that runs mkdocs (whatever ``tumorfield`` script is installed). The page shows each block as
code followed by what it printed (stdout and stderr). ``show(figure_or_png_path, alt)`` in a Python
block embeds a figure (a matplotlib figure, or a PNG a command wrote) as a data URI, so no file
outside ``docs/`` is linked. A block that fails fails the build, with its output. Paths of the
temporary directory and of the clone are shortened (``./``, ``…/``) in the shown output. Timings
per page go to the build log.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mkdocs.exceptions import PluginError

FENCE = re.compile(r"^```(python|bash) exec[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
ROOT = Path(__file__).resolve().parents[2]
SOURCES = [str(ROOT / "src"), str(ROOT / "kernels")]
sys.path[:0] = [p for p in SOURCES if p not in sys.path]
log = logging.getLogger("mkdocs.hooks.tutorials")


def _env(shims: Path) -> dict[str, str]:
    python_path = os.pathsep.join([*SOURCES, os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": python_path,
            "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), "COLUMNS": "100"}  # fmt: skip


def _png(figure_or_path) -> bytes:
    if isinstance(figure_or_path, str | os.PathLike):
        return Path(figure_or_path).read_bytes()
    buffer = io.BytesIO()
    figure_or_path.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure_or_path)
    return buffer.getvalue()


class _Page:
    """One tutorial being run: its working directory, namespace and the figures of the current block."""

    def __init__(self, name: str):
        self.name = name
        self.workdir = Path(tempfile.mkdtemp(prefix="tumorfield-tutorial-"))
        self.shims = Path(tempfile.mkdtemp(prefix="tumorfield-tutorial-bin-"))
        script = self.shims / "tumorfield"
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tumorfield.cli "$@"\n')
        script.chmod(0o755)
        self.images: list[str] = []
        self.namespace = {"__name__": "__tutorial__", "show": self.show}

    def show(self, figure_or_path, alt: str = "") -> None:
        data = base64.b64encode(_png(figure_or_path)).decode()
        self.images.append(f"![{alt}](data:image/png;base64,{data})")

    def shorten(self, text: str) -> str:
        text = text.replace(str(self.workdir) + "/", "./").replace(str(self.workdir), ".")
        return text.replace(str(ROOT) + "/", "…/")

    def run(self, language: str, code: str) -> str:
        if language == "bash":
            command = ["bash", "-e", "-o", "pipefail", "-c", code]
            result = subprocess.run(command, cwd=self.workdir, env=_env(self.shims), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)  # fmt: skip
            if result.returncode != 0:
                raise PluginError(f"tutorial {self.name}: exit {result.returncode} of\n{code}\n{result.stdout}")
            return result.stdout
        out = io.StringIO()
        cwd = os.getcwd()
        os.chdir(self.workdir)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                exec(compile(code, f"<{self.name}>", "exec"), self.namespace)
        except Exception as error:
            message = f"tutorial {self.name}: {type(error).__name__}: {error} in\n{code}\n{out.getvalue()}"
            raise PluginError(message) from error
        finally:
            os.chdir(cwd)
        return out.getvalue()


def on_page_markdown(markdown: str, page, config, files) -> str:
    if not page.file.src_uri.startswith("tutorials/") or not FENCE.search(markdown):
        return markdown
    tutorial = _Page(page.file.src_uri)
    start = time.perf_counter()

    def execute(match: re.Match) -> str:
        language, code = match.group(1), match.group(2)
        tutorial.images = []
        output = tutorial.shorten(tutorial.run(language, code)).rstrip()
        shown = f"```{language}\n{code}```\n"
        if output:
            shown += f"\n```text\n{output}\n```\n"
        return shown + "".join(f"\n{image}\n" for image in tutorial.images)

    try:
        markdown = FENCE.sub(execute, markdown)
    finally:
        shutil.rmtree(tutorial.workdir, ignore_errors=True)
        shutil.rmtree(tutorial.shims, ignore_errors=True)
    log.info(f"tutorial {page.file.src_uri}: executed in {time.perf_counter() - start:.1f} s")
    return markdown
