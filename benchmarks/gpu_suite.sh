#!/usr/bin/env bash
# The GPU suite: verification tests, bench_simulate.py, bench_model.py, a 3D voloshin2015 run at
# 256³, (full form only) bench_glioma.py and bench_calibrate.py, and bench_decomposed.py (one grid
# over the machine's devices), each stage under its own timeout.
#
#   bash benchmarks/gpu_suite.sh [--quick] [OUTDIR]     (OUTDIR defaults to $OUT, then out/gpu_suite)
#
# Runs the project from this checkout (PYTHONPATH=src:kernels), installs nothing, and needs no
# network. Writes under OUTDIR: suite.log (everything), suite.json (each stage: ran / failed /
# timeout / skipped, with its reason, seconds and outputs), and one folder per stage with its JSON.
# --quick: tiny grids and short runs, for CPU (tests/test_gpu_suite.py runs it in CI).
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3), BASELINE_TREE (an
# exported tree of the commit before issue 14, where the checkout has no git history),
# T_DEVICE, T_VERIFY, T_SIMULATE, T_MODEL, T_MODEL3D, T_GLIOMA, T_CALIBRATE, T_DECOMPOSED (stage timeouts,
# s; full: 30 + 100 + 80 + 180 + 60 + 120 + 180 + 120 = 870 s at most; --quick: 240 each, generous for a
# loaded CI machine), BENCH_MODEL_ARGS, MODEL3D_ARGS, GLIOMA_ARGS, CALIBRATE_ARGS, DECOMPOSED_ARGS (replace
# the stage's default arguments).
# The glioma stage is not part of --quick (its smallest form, `bench_glioma.py --quick`, reads the 1 mm
# maps: seconds of CPU in CI), nor is the calibration stage (`bench_calibrate.py --size 24 --quick`
# compiles for a minute on CPU).
set -u -o pipefail
export PYTHONUNBUFFERED=1

QUICK=0
OUTDIR=""
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "gpu_suite.sh: unknown option $arg" >&2; exit 2 ;;
        *) OUTDIR="$arg" ;;
    esac
done
OUTDIR="${OUTDIR:-${OUT:-out/gpu_suite}}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
mkdir -p "$OUTDIR" || exit 2
OUTDIR="$(cd "$OUTDIR" && pwd)"
LOG="$OUTDIR/suite.log"
STAGES="$OUTDIR/stages.jsonl"
: >"$LOG"
: >"$STAGES"

if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT/src:$ROOT/kernels${PYTHONPATH:+:$PYTHONPATH}"

log() { echo "[gpu_suite $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# record NAME STATUS RC SECONDS REASON OUTPUT_DIR
record() {
    local reason="${5//\"/\'}"
    printf '{"stage": "%s", "status": "%s", "rc": %s, "seconds": %s, "reason": "%s", "dir": "%s"}\n' \
        "$1" "$2" "$3" "$4" "$reason" "$6" >>"$STAGES"
}

# stage NAME TIMEOUT_S COMMAND...: runs under `timeout`, output to the log, status to stages.jsonl
stage() {
    local name="$1" limit="$2"
    shift 2
    local dir="$OUTDIR/$name"
    mkdir -p "$dir"
    log "stage $name (timeout ${limit} s): $*"
    local t0=$SECONDS rc
    timeout --signal=TERM --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$LOG" "$dir/stage.log" >/dev/null
    rc=$?
    local dt=$((SECONDS - t0))
    if [ "$rc" -eq 0 ]; then
        record "$name" ran 0 "$dt" "" "$dir"
        log "stage $name: ran in ${dt} s"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        record "$name" timeout "$rc" "$dt" "stopped after the stage timeout of ${limit} s" "$dir"
        log "stage $name: TIMEOUT after ${limit} s (what it wrote before is kept)"
    else
        record "$name" failed "$rc" "$dt" "exit status $rc; see $name/stage.log" "$dir"
        log "stage $name: FAILED (exit $rc)"
    fi
}

skip() {
    mkdir -p "$OUTDIR/$1"
    record "$1" skipped null 0 "$2" "$OUTDIR/$1"
    log "stage $1: SKIPPED: $2"
}

# which optional modules this Python has (found, not imported: importing vtk or numba takes seconds)
MODULES="$("$PYTHON" -c "
import importlib.util as u
names = ['pytest', 'scipy', 'h5py', 'pde', 'numba', 'imageio_ffmpeg', 'h5netcdf', 'netCDF4', 'vtk', 'nilearn']
print(' '.join(n for n in names if u.find_spec(n) is not None))" 2>/dev/null)"
has_module() { [[ " $MODULES " == *" $1 "* ]]; }

log "tumorfield GPU suite, $([ "$QUICK" = 1 ] && echo quick || echo full), output in $OUTDIR"
log "python: $PYTHON ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])' 2>&1))"
log "git: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo 'no git history in this checkout')"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
fi

# --- stage 0: the device ------------------------------------------------------------------------
stage device "${T_DEVICE:-$([ "$QUICK" = 1 ] && echo 240 || echo 30)}" "$PYTHON" -c "
import json, sys, jax
devices = jax.devices()
print('jax', jax.__version__, 'devices', devices)
info = {'jax_version': jax.__version__, 'devices': [str(d) for d in devices],
        'platform': devices[0].platform, 'device_kind': getattr(devices[0], 'device_kind', None)}
json.dump(info, open(sys.argv[1], 'w'), indent=2)
" "$OUTDIR/device/device.json"
for module in pytest scipy h5py pde numba imageio_ffmpeg h5netcdf netCDF4 vtk nilearn; do
    if has_module "$module"; then log "python module $module: present"; else log "python module $module: MISSING"; fi
done

# Quick runs share a persistent compilation cache, so the 3D stage reuses the bench_model stage's
# programs (same grid and steps); full runs compile afresh and report compile time apart.
if [ "$QUICK" = 1 ]; then
    export JAX_COMPILATION_CACHE_DIR="$OUTDIR/jax_cache"
    export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
    export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
fi

verification_and_simulate() {
# --- stage 1: verification tests ----------------------------------------------------------------
if ! has_module pytest; then
    skip verification "pytest is not installed"
elif [ "$QUICK" = 1 ]; then
    stage verification "${T_VERIFY:-240}" "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_core_verification.py \
        -k "dt_beyond_limit_refused_naming_the_limit" --junitxml "$OUTDIR/verification/junit.xml"
else
    stage verification "${T_VERIFY:-100}" "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_core_verification.py \
        --junitxml "$OUTDIR/verification/junit.xml"
fi

# --- stage 2: bench_simulate.py (reference problem; py-pde peers where installed) ----------------
if ! has_module pde || ! has_module numba; then
    log "py-pde/numba not installed: bench_simulate runs without its py-pde peers"
fi
if [ "$QUICK" = 1 ]; then
    stage bench_simulate "${T_SIMULATE:-240}" "$PYTHON" benchmarks/bench_simulate.py --out "$OUTDIR/bench_simulate" \
        --quick --sizes 16 --t-end 0.02 --no-pypde --throughput-cells 2e3
else
    stage bench_simulate "${T_SIMULATE:-80}" "$PYTHON" benchmarks/bench_simulate.py --out "$OUTDIR/bench_simulate" \
        --sizes 512 128x3 256 1024 64x3
fi
}

model_stage() {
# --- stage 3: bench_model.py (PTX arm to day 21, now and at the commit before issue 14) ----------
BASELINE_ARGS=()
if git -C "$ROOT" cat-file -e 2e64a49^{commit} 2>/dev/null; then
    BASELINE_ARGS=(--baseline 2e64a49)
elif [ -n "${BASELINE_TREE:-}" ] && [ -d "$BASELINE_TREE/src/tumorfield" ]; then
    BASELINE_ARGS=(--baseline-tree "$BASELINE_TREE")
elif [ -d "$ROOT/benchmarks/.baseline_2e64a49/src/tumorfield" ]; then
    BASELINE_ARGS=(--baseline-tree "$ROOT/benchmarks/.baseline_2e64a49")
else
    BASELINE_ARGS=(--no-baseline)
    log "bench_model: no git history and no BASELINE_TREE: the commit before issue 14 is not run"
fi
if [ "$QUICK" = 1 ]; then
    # CI: this checkout only (the baseline is the same worker on another tree), no dt/4 reference
    read -r -a MODEL_ARGS <<<"${BENCH_MODEL_ARGS:---quick --sizes 8x3 --t-end 0.5 --lean --dt-from-t0 --no-reference --no-baseline --cell-diffusion implicit}"
    stage bench_model "${T_MODEL:-240}" "$PYTHON" benchmarks/bench_model.py --out "$OUTDIR/bench_model" "${MODEL_ARGS[@]}"
else
    read -r -a MODEL_ARGS <<<"${BENCH_MODEL_ARGS:---sizes 512 128x3 256 64x3 --cell-diffusion implicit --worker-timeout 100}"
    stage bench_model "${T_MODEL:-180}" "$PYTHON" benchmarks/bench_model.py --out "$OUTDIR/bench_model" \
        "${BASELINE_ARGS[@]}" "${MODEL_ARGS[@]}"
fi
}

# --quick (CI, 2 cores): stages 1–2 beside stage 3, all compile-bound and mostly single-threaded;
# a full run keeps them one after another, so each has the device to itself.
if [ "$QUICK" = 1 ]; then
    verification_and_simulate &
    side=$!
    model_stage
    wait "$side"
else
    verification_and_simulate
    model_stage
fi

# --- stage 4: a 3D voloshin2015 run at 256³ (time per simulated day, peak device memory) ---------
if [ "$QUICK" = 1 ]; then
    read -r -a M3_ARGS <<<"${MODEL3D_ARGS:---quick --sizes 8x3 --t-end 0.5 --lean --dt-from-t0 --no-reference --no-baseline --cell-diffusion implicit}"
    stage model_3d "${T_MODEL3D:-240}" "$PYTHON" benchmarks/bench_model.py --out "$OUTDIR/model_3d" "${M3_ARGS[@]}"
else
    read -r -a M3_ARGS <<<"${MODEL3D_ARGS:---sizes 256x3 --t-end 2 --dt-from-t0 --no-reference --no-baseline --repeats 1}"
    stage model_3d "${T_MODEL3D:-60}" "$PYTHON" benchmarks/bench_model.py --out "$OUTDIR/model_3d" "${M3_ARGS[@]}"
fi

# --- stage 5 (full form only): bench_glioma.py (glioma on the MNI152 atlas, 2 mm and 1 mm, a year) ---
if [ "$QUICK" != 1 ]; then
    if ! has_module nilearn; then
        skip bench_glioma "nilearn is not installed (its wheel ships the MNI152 tissue maps)"
    else
        read -r -a GLIOMA_ARGS_A <<<"${GLIOMA_ARGS:---resample 2 1 --t-end 365 --repeats 2}"
        stage bench_glioma "${T_GLIOMA:-120}" "$PYTHON" benchmarks/bench_glioma.py --out "$OUTDIR/bench_glioma" \
            "${GLIOMA_ARGS_A[@]}"
    fi
fi

# --- stage 6 (full form only): bench_calibrate.py (origin + D_w + rho from two scans, 128³) ---------
if [ "$QUICK" != 1 ]; then
    read -r -a CALIBRATE_ARGS_A <<<"${CALIBRATE_ARGS:---size 128 --max-iterations 30 --repeats 3}"
    stage bench_calibrate "${T_CALIBRATE:-180}" "$PYTHON" benchmarks/bench_calibrate.py \
        --out "$OUTDIR/bench_calibrate" "${CALIBRATE_ARGS_A[@]}"
fi

# --- stage 7: bench_decomposed.py (one grid over all the machine's devices) -----------------------
# The step on one device measured; the decomposed step's collectives and bytes from its HLO on as many
# devices as the machine has (at least 2: on a one-GPU machine, 8 CPU host devices give the HLO and
# the one-device GPU step is measured); the step predicted for an 8-GPU NVLink node from them.
DEVICES="$("$PYTHON" -c "import jax; print(len(jax.devices()))" 2>/dev/null || echo 1)"
if [ "${DEVICES:-1}" -lt 2 ] 2>/dev/null; then DEVICES=8; fi
if [ "$QUICK" = 1 ]; then
    read -r -a DECOMPOSED_ARGS_A <<<"${DECOMPOSED_ARGS:---quick --devices 2}"
    stage decomposed "${T_DECOMPOSED:-240}" "$PYTHON" benchmarks/bench_decomposed.py --out "$OUTDIR/decomposed" \
        "${DECOMPOSED_ARGS_A[@]}"
else
    read -r -a DECOMPOSED_ARGS_A <<<"${DECOMPOSED_ARGS:---sizes 128x3 256x3 --devices $DEVICES}"
    stage decomposed "${T_DECOMPOSED:-120}" "$PYTHON" benchmarks/bench_decomposed.py --out "$OUTDIR/decomposed" \
        "${DECOMPOSED_ARGS_A[@]}"
fi

# --- summary ------------------------------------------------------------------------------------
"$PYTHON" - "$OUTDIR" <<'EOF' 2>&1 | tee -a "$LOG"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
order = ["device", "verification", "bench_simulate", "bench_model", "model_3d", "bench_glioma", "bench_calibrate",
         "decomposed"]
stages = [json.loads(line) for line in (out / "stages.jsonl").read_text().splitlines() if line.strip()]
stages.sort(key=lambda s: order.index(s["stage"]) if s["stage"] in order else len(order))
junit = out / "verification" / "junit.xml"
if junit.exists():  # the verification tests' counts as JSON, beside pytest's JUnit XML
    import xml.etree.ElementTree as ET
    suites = ET.parse(junit).getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    counts = {k: float(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped", "time")}
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    (out / "verification" / "verification.json").write_text(json.dumps({**counts, "failed": failed}, indent=2))
for s in stages:
    s["outputs"] = sorted(str(p.relative_to(out)) for p in pathlib.Path(s["dir"]).rglob("*.json"))
summary = {"outdir": str(out), "stages": stages}
(out / "suite.json").write_text(json.dumps(summary, indent=2))
for s in stages:
    print(f"{s['stage']:>15}: {s['status']:<8} {s['seconds']:>5} s  {s['reason']}  {' '.join(s['outputs'])}")
EOF
rm -rf "$OUTDIR/jax_cache"
log "done: $OUTDIR/suite.json"
# exit 0 when every stage ran or was skipped with a reason; 1 when one failed or timed out
! grep -q '"status": "\(failed\|timeout\)"' "$STAGES"
