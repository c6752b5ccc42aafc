"""Small real runs shared by ``test_viewers.py`` and ``test_plot.py``: each is made once per test
process (``tumorfield run`` in-process, one persistent compilation cache), in a temporary directory
removed at exit."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from tumorfield import cli

ROOT = Path(__file__).resolve().parents[1]
_DIR = Path(tempfile.mkdtemp(prefix="tumorfield-viewer-runs-"))
atexit.register(shutil.rmtree, _DIR, True)

FISHER = """
[model]
name = "fisher_kpp"
[grid]
shape = {shape}
length = {length}
[time]
t_end = 0.4
dt = 0.05
save_every = 0.1
[parameters]
D = 2e-2
r = 1.0
chi = 0.01
[initial]
radius = 0.6
[run]
chunk_frames = 2
progress = "none"
"""

RUNS = {
    # name: (config, its grid, overrides); a 2D fisher_kpp run is test_cli_run's. The second of each
    # pair differs only where the compiled rollout does not (a filter, traced host parameters):
    # it reuses the first one's compilation from the persistent cache.
    "fisher_3d": ("fisher", {"shape": [8, 8, 8], "length": [4.0, 4.0, 4.0]}, []),
    "fisher_3d_lzf": ("fisher", {"shape": [8, 8, 8], "length": [4.0, 4.0, 4.0]}, ['output.compression="lzf"']),
    "fisher_3d_fast": ("fisher", {"shape": [8, 8, 8], "length": [4.0, 4.0, 4.0]}, ["parameters.r=2.0"]),
    "voloshin_ptx": ("experiments/voloshin2015/ptx.toml", {}, []),
    "voloshin_il1b_ko": ("experiments/voloshin2015/il1b_ko_ptx.toml", {}, []),
}
VOLOSHIN_SMALL = ["grid.shape=[16,16]", "time.t_end=0.6", "time.save_every=0.2", "run.chunk_frames=2",
                  'run.progress="none"', 'output.compression="gzip"']  # fmt: skip


@functools.cache
def run(name: str) -> Path:
    """The trajectory file of the run ``name`` of :data:`RUNS` (made on first use)."""
    source, grid, overrides = RUNS[name]
    if source == "fisher":
        config = _DIR / f"{name}.toml"
        config.write_text(FISHER.format(**grid))
    else:
        config, overrides = ROOT / source, VOLOSHIN_SMALL + overrides
    out = _DIR / f"{name}.h5"
    argv = ["run", str(config), "-o", str(out), "--set", f'run.compilation_cache="{_DIR / "jax-cache"}"']
    for item in overrides:
        argv += ["--set", item]
    code = cli.main(argv)
    assert code == 0, f"tumorfield {' '.join(argv)} exited {code}"
    return out
