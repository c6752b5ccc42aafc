"""Child process of ``test_integrity_fit_output``: ``tumorfield fit`` with the optimisation replaced by a
made-up result (nothing is computed), and the calibration writer on a made-up calibration, so that
only the writing of ``FIT.h5`` is exercised.

``python _fake_fit.py fit FIT.toml -o OUT [--overwrite]``: the CLI, exit code as its own.
``python _fake_fit.py full DISK FIT.toml FREE...``: on the file system ``DISK`` filled to each
``FREE`` bytes, the fit and the calibration writer (:func:`full`); one JSON line per attempt. A crash
(SIGSEGV) ends the process: the parent sees it in the exit status.
``python _fake_fit.py snapshots FIT.toml OUT DIR``: :func:`snapshots`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import types

import numpy as np

from tumorfield import cli
from tumorfield.fit import _fit, _output
from tumorfield.fit._spec import load_spec

HISTORY = {"n": 3}
"""Length of the made-up loss history (400 000: 3.2 MB, more than the test's 3 MiB disk holds)."""
CALLED = []


def _fake_run(self, log=lambda _: None, values=None):
    CALLED.append(True)
    n = len(self.names)
    minimum = types.SimpleNamespace(status="converged", converged=True, message="made up", loss=1.0, n_iterations=3)
    t = np.arange(21) * 0.01
    history = {"loss": np.random.default_rng(0).random(HISTORY["n"])}
    return _fit.FitResult(self.spec, self.names, np.ones(n), np.full(n, 0.1), np.eye(n), np.eye(n), self.bounds.init,
                          self.bounds.lower, self.bounds.upper, minimum, 1.0, history, {"a": {"t": t, "max_u": t}},
                          self.data, np.ones(len(self.data)), np.zeros(len(self.data)), {"max_u": "1"})  # fmt: skip


_fit.Fit.run = _fake_run


def _calibration(fit_file: str):
    """A calibration result of the fit file's arms, one unknown, no scans or maps: what the writer needs."""
    spec = load_spec(fit_file)
    unknowns = types.SimpleNamespace(init=np.ones(1), lower=np.zeros(1), upper=np.full(1, 2.0))
    calibration = types.SimpleNamespace(spec=spec, unknowns=unknowns, scans=(), origin=None, problems={})
    history = types.SimpleNamespace(loss=np.random.default_rng(1).random(HISTORY["n"]))
    minimum = types.SimpleNamespace(status="converged", converged=True, n_iterations=3, loss=1.0, message="made up",
                                    history=history)  # fmt: skip
    return types.SimpleNamespace(calibration=calibration, minimum=minimum, names=("r",), estimate=np.ones(1),
                                 std_error=np.ones(1), correlation=np.eye(1), hessian=np.eye(1), maps={},
                                 samples=None, sampler={}, forecast={}, predictions={}, metrics={})  # fmt: skip


def _fill(disk: str, free: int) -> None:
    """Leave ``free`` bytes free on ``disk`` (a file ``fill`` takes the rest)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(disk, "fill"))
    st = os.statvfs(disk)
    with open(os.path.join(disk, "fill"), "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - free))


def _report(what: str, free: int, code, err: str, disk: str) -> None:
    files = sorted(p for p in os.listdir(disk) if p != "fill")
    out = os.path.join(disk, "FIT.h5")
    sha = hashlib.sha256(open(out, "rb").read()).hexdigest() if os.path.exists(out) else None
    print(json.dumps({"what": what, "free": free, "code": code, "err": err, "files": files, "sha": sha,
                      "ran": bool(CALLED)}), flush=True)  # fmt: skip
    CALLED.clear()


def _cli(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main([str(a) for a in args])
    return code, err.getvalue()


def full(disk: str, fit_file: str, levels: list[int]) -> None:
    """An older ``FIT.h5`` written on the roomy disk, then every attempt on the full one (a result of
    3.2 MB), then the fit again once the disk has room (0.8 MB)."""
    out = os.path.join(disk, "FIT.h5")
    _report("older fit", -1, *_cli("fit", fit_file, "-o", out), disk)
    HISTORY["n"] = 400_000
    _fill(disk, 0)
    _report("fit, default free-space check", 0, *_cli("fit", fit_file, "-o", out, "--overwrite"), disk)
    _output.MIN_FREE = 0  # from here on the writer meets the full disk
    for free in levels:
        _fill(disk, free)
        _report("fit", free, *_cli("fit", fit_file, "-o", out, "--overwrite"), disk)
    result = _calibration(fit_file)
    for free in levels:
        _fill(disk, free)
        try:
            with _output.reserved(out, overwrite=True) as target:
                _output.write_calibration(target, result, ["tumorfield", "fit"])
            code, err = 0, ""
        except OSError as error:
            code, err = error.errno, f"{type(error).__name__}: {error.strerror}"
        _report("calibration", free, code, err, disk)
    os.unlink(os.path.join(disk, "fill"))
    HISTORY["n"] = 100_000
    _report("fit with room", -1, *_cli("fit", fit_file, "-o", out, "--overwrite"), disk)


def snapshots(fit_file: str, out: str, directory: str) -> None:
    """An older ``FIT.h5``, then the fit again with ``TUMORFIELD_FAULT_SNAPSHOTS=directory``."""
    print(_cli("fit", fit_file, "-o", out)[0], flush=True)
    os.environ["TUMORFIELD_FAULT_SNAPSHOTS"] = directory
    code = _cli("fit", fit_file, "-o", out, "--overwrite")[0]
    del os.environ["TUMORFIELD_FAULT_SNAPSHOTS"]
    print(code, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "full":
        full(sys.argv[2], sys.argv[3], [int(x) for x in sys.argv[4:]])
    elif sys.argv[1] == "snapshots":
        snapshots(*sys.argv[2:5])
    else:
        sys.exit(cli.main(sys.argv[1:]))
