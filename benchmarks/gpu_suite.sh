#!/usr/bin/env bash
# The GPU suite for one lease (issue 24): ten stages in order of value, each under its own timeout and
# all under one deadline, each writing its JSON into its folder.
#
#   bash benchmarks/gpu_suite.sh [--quick] [OUTDIR]     (OUTDIR defaults to $OUT, then out/gpu_suite)
#
#  #  stage         full-form timeout  what it measures
#  1  device          30 s  jax.devices(), device_kind, nvidia-smi; which optional modules are missing
#  2  model_3d       150 s  voloshin2015 at 256³ (bench_model.py): cell-steps/s, XLA bytes per cell-step,
#                           fraction of the peak HBM bandwidth and of a triad measured in the same process
#  3  ensemble       110 s  bench_ensemble.py: a vmapped sweep of 64 members × 256² (4.2 M cells per batch)
#  4  fit             90 s  bench_fit.py --parts gradient at 256², 21 days: gradient ÷ forward, median of 5
#                           interleaved pairs
#  5  calibrate      100 s  bench_calibrate.py at 64³, ≤ 30 L-BFGS iterations: gradient ÷ forward, time to
#                           solution (its JSON is written after the gradient part, so a timeout keeps it)
#  6  verification    90 s  pytest tests/test_core_verification.py (stopped with SIGINT: the JUnit XML of the
#                           tests done is still written)
#  7  bench_model    120 s  the PTX arm at 512² to day 21 against 2e64a49: time to solution, speed-up
#  8  budget          60 s  bench_budget.py: XLA's bytes per cell-step of the 2D and glioma steps on this device
#  9  decomposed      90 s  bench_decomposed.py: one 256³ grid over the node's devices, on paper
# 10  glioma          75 s  bench_glioma.py: the MNI152 atlas at 2 mm and 1 mm for a year (needs nilearn)
#
# Stages 1–6 sum to the deadline; 7–10 run in the time the others leave. A stage starts only when at
# least its minimum is left before SUITE_DEADLINE (seconds from the suite's start, default 570: the full
# form ends within it, Python start-ups and compiles included), and its timeout is cut to what is left;
# otherwise it is skipped with the reason. bench_simulate.py is not a stage (py-pde is not on the GPU
# image, and bench_model.py measures the full model).
#
# Writes under OUTDIR: suite.log (everything), stages.jsonl and suite.json (per stage: ran / failed /
# timeout / skipped / dry-run, the reason, seconds, timeout, command, JSON outputs and the key figures
# read from them), and one folder per stage. Exit 0 when every stage ran or was skipped with a reason.
# --quick: every stage at tiny sizes on CPU, in two lanes side by side, with a shared persistent
# compilation cache (tests/test_gpu_suite.py runs it in CI).
#
# Environment: PYTHON (default .venv/bin/python if present, else python3); SUITE_DEADLINE (s; full 570,
# quick 1200); SUITE_DRY_RUN=1 (log and record each stage's command, run nothing; =sleep:N: each stage
# sleeps N s in place of its command, to try the deadline logic); SUITE_CACHE=DIR (a
# persistent compilation cache for the full form too; off by default: see the README); BASELINE_TREE (an
# exported tree of 2e64a49 where the checkout has no git history); T_<STAGE> (its timeout, s: T_DEVICE,
# T_MODEL3D, T_ENSEMBLE, T_FIT, T_CALIBRATE, T_VERIFY, T_MODEL, T_BUDGET, T_DECOMPOSED, T_GLIOMA);
# <STAGE>_ARGS (its arguments instead of the defaults: MODEL3D_ARGS, ENSEMBLE_ARGS, FIT_ARGS,
# CALIBRATE_ARGS, VERIFY_ARGS, BENCH_MODEL_ARGS, BUDGET_ARGS, DECOMPOSED_ARGS, GLIOMA_ARGS).
set -u -o pipefail
export PYTHONUNBUFFERED=1

QUICK=0
OUTDIR=""
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) sed -n '2,42p' "$0"; exit 0 ;;
        -*) echo "gpu_suite.sh: unknown option $arg" >&2; exit 2 ;;
        *) OUTDIR="$arg" ;;
    esac
done
START=$(date +%s)
DEADLINE="${SUITE_DEADLINE:-$([ "$QUICK" = 1 ] && echo 1200 || echo 570)}"
DRY="${SUITE_DRY_RUN:-0}"
KILL_AFTER=10        # s between a stage's timeout signal and its SIGKILL
RESERVE=15           # s kept before the deadline: KILL_AFTER and the summary
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
q() { [ "$QUICK" = 1 ]; }

log() { echo "[gpu_suite $(date -u +%H:%M:%S) +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }

# record NAME STATUS RC SECONDS TIMEOUT REASON OUTDIR [COMMAND...]: one line of stages.jsonl (JSON by
# Python: commands hold quotes and newlines), with the CPU seconds of the stage's processes (CPU_S)
record() {
    CPU_S="${CPU_S:-}" "$PYTHON" -c '
import json, os, sys
name, status, rc, seconds, limit, reason, out, *command = sys.argv[1:]
number = lambda s: None if s in ("", "null") else int(s)
cpu = float(os.environ["CPU_S"]) if os.environ.get("CPU_S") else None
print(json.dumps({"stage": name, "status": status, "rc": number(rc), "seconds": number(seconds), "cpu_s": cpu,
                  "timeout_s": number(limit), "reason": reason, "dir": f"{out}/{name}", "command": command}))
' "$@" >>"$STAGES" 2>>"$LOG" || echo "{\"stage\": \"$1\", \"status\": \"$2\", \"reason\": \"record failed\"}" >>"$STAGES"
}

# children_cpu: CPU_NOW = user + system seconds of this shell's finished children so far (`times` runs in
# this shell, into a file: in a $(…) subshell it would count the subshell's children)
children_cpu() {
    local file="$OUTDIR/.times.$BASHPID"
    times >"$file"
    CPU_NOW="$(awk 'NR == 2 { s = 0; for (i = 1; i <= NF; i++) { split($i, b, "m"); sub("s", "", b[2]); s += 60 * b[1] + b[2] }
        printf "%.1f", s }' "$file")"
    rm -f "$file"
}

skip() {
    mkdir -p "$OUTDIR/$1"
    record "$1" skipped null 0 null "$2" "$OUTDIR"
    log "stage $1: SKIPPED: $2"
}

# plan NAME TIMEOUT MIN: sets LIMIT to the stage's timeout, cut to the time left before the deadline;
# false (the stage recorded as skipped, with the reason) when less than MIN seconds are left
plan() {
    local name="$1" limit="$2" min="$3" left
    left=$((DEADLINE - ($(date +%s) - START) - RESERVE))
    CUT=""
    if [ "$left" -lt "$min" ]; then
        skip "$name" "deadline: ${left} s left before SUITE_DEADLINE=${DEADLINE} s (less ${RESERVE} s kept), under the stage's minimum of ${min} s"
        return 1
    fi
    LIMIT="$limit"
    if [ "$limit" -gt "$left" ]; then
        LIMIT="$left"
        CUT="timeout cut from ${limit} s to the ${left} s left before the deadline"
        log "stage $name: $CUT"
    fi
    return 0
}

# stage NAME SIGNAL COMMAND...: runs under `timeout LIMIT` (from plan), output to the log and NAME/stage.log,
# status to stages.jsonl
stage() {
    local name="$1" signal="$2"
    shift 2
    local dir="$OUTDIR/$name"
    mkdir -p "$dir"
    log "stage $name (timeout ${LIMIT} s): $*"
    if [ "$DRY" = 1 ]; then
        record "$name" dry-run null 0 "$LIMIT" "SUITE_DRY_RUN=1${CUT:+; $CUT}" "$OUTDIR" "$@"
        return 0
    fi
    local run=("$@")
    if [[ "$DRY" == sleep:* ]]; then run=(sleep "${DRY#sleep:}"); fi # the deadline logic, without the work
    local t0 rc dt c0
    t0=$(date +%s)
    children_cpu
    c0="$CPU_NOW"
    timeout --signal="$signal" --kill-after="$KILL_AFTER" "$LIMIT" "${run[@]}" 2>&1 | tee -a "$LOG" "$dir/stage.log" >/dev/null
    rc=$?
    dt=$(($(date +%s) - t0))
    local CPU_S
    children_cpu
    CPU_S="$(awk -v a="$CPU_NOW" -v b="$c0" 'BEGIN { printf "%.1f", a - b }')"
    if [ "$rc" -eq 0 ]; then
        record "$name" ran 0 "$dt" "$LIMIT" "$CUT" "$OUTDIR" "$@"
        log "stage $name: ran in ${dt} s (${CPU_S} s of CPU)"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        record "$name" timeout "$rc" "$dt" "$LIMIT" "stopped after the stage timeout of ${LIMIT} s${CUT:+ ($CUT)}" "$OUTDIR" "$@"
        log "stage $name: TIMEOUT after ${LIMIT} s (what it wrote before is kept)"
    else
        record "$name" failed "$rc" "$dt" "$LIMIT" "exit status $rc; see $name/stage.log" "$OUTDIR" "$@"
        log "stage $name: FAILED (exit $rc)"
    fi
}

# args NAME DEFAULT...: the stage's arguments, from the environment variable NAME if set (word-split)
args() {
    local var="$1"
    shift
    if [ -n "${!var:-}" ]; then read -r -a ARGS <<<"${!var}"; else ARGS=("$@"); fi
}

# which optional modules this Python has (found, not imported: importing vtk or numba takes seconds)
MODULES="$("$PYTHON" -c "
import importlib.util as u
names = ['pytest', 'scipy', 'h5py', 'pde', 'numba', 'imageio_ffmpeg', 'h5netcdf', 'netCDF4', 'vtk', 'nilearn']
print(' '.join(n for n in names if u.find_spec(n) is not None))" 2>/dev/null)"
has_module() { [[ " $MODULES " == *" $1 "* ]]; }

log "tumorfield GPU suite, $(q && echo quick || echo full)$([ "$DRY" = 1 ] && echo ', dry run'), deadline ${DEADLINE} s, output in $OUTDIR"
log "python: $PYTHON ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])' 2>&1))"
log "git: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo 'no git history in this checkout')"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv,noheader 2>&1 | tee -a "$LOG"
fi
for module in pytest scipy h5py pde numba imageio_ffmpeg h5netcdf netCDF4 vtk nilearn; do
    if has_module "$module"; then log "python module $module: present"; else log "python module $module: MISSING"; fi
done

# Compilation caches. --quick: one persistent cache for every stage (stage 7 loads stage 2's rollout and
# step programs: the same grid, steps and options), removed at the end. The full form compiles afresh
# and reports compile apart: its stages share no program (other grids, models or step counts), so a
# cache would only add its writes, and a warm one left by an earlier run would turn the compile figures
# into cache loads. SUITE_CACHE=DIR turns it on (e.g. for a second run on a warm machine).
if q; then
    export JAX_COMPILATION_CACHE_DIR="${SUITE_CACHE:-$OUTDIR/jax_cache}"
elif [ -n "${SUITE_CACHE:-}" ]; then
    export JAX_COMPILATION_CACHE_DIR="$SUITE_CACHE"
fi
if [ -n "${JAX_COMPILATION_CACHE_DIR:-}" ]; then
    export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
    log "persistent compilation cache: $JAX_COMPILATION_CACHE_DIR"
fi
# --quick measures nothing (a smoke run of every stage): XLA compiles without its LLVM optimisations
# (bench_fit.py --quick: 63 → 52 s of CPU, one comparison; the HLO, and so bench_budget.py's figures,
# are the same)
if q; then
    export JAX_DISABLE_MOST_OPTIMIZATIONS="${JAX_DISABLE_MOST_OPTIMIZATIONS:-1}"
    log "JAX_DISABLE_MOST_OPTIMIZATIONS=$JAX_DISABLE_MOST_OPTIMIZATIONS"
fi

# --- 1. device -------------------------------------------------------------------------------------
if plan device "${T_DEVICE:-$(q && echo 120 || echo 30)}" 5; then
    mkdir -p "$OUTDIR/device"
    cat >"$OUTDIR/device/device_probe.py" <<'EOF_PROBE'
import json, sys, jax
devices = jax.devices()
d = devices[0]
kind = getattr(d, "device_kind", None) or ""
print("jax", jax.__version__, "devices", devices, "kind", kind)
platforms = {"gpu": "cuda" if "NVIDIA" in kind.upper() else "rocm"}.get(d.platform, d.platform)
info = {"jax_version": jax.__version__, "devices": [str(x) for x in devices], "device_count": len(devices),
        "platform": d.platform, "device_kind": kind, "jax_platforms": platforms}
try:
    info["memory_stats"] = d.memory_stats()
except Exception as error:
    info["memory_stats"] = repr(error)
json.dump(info, open(sys.argv[1], "w"), indent=2)
EOF_PROBE
    stage device TERM "$PYTHON" "$OUTDIR/device/device_probe.py" "$OUTDIR/device/device.json"
fi
# what later stages need from it: the device count (stage 9) and JAX_PLATFORMS for subprocesses that
# would otherwise default to the CPU (bench_ensemble.py's one process per member)
read -r DEVICES PLATFORMS < <("$PYTHON" -c "
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    print(d['device_count'], d['jax_platforms'])
except Exception:
    print(1, '')" "$OUTDIR/device/device.json" 2>/dev/null || echo "1 ")
DEVICES="${DEVICES:-1}"
if [ "$DEVICES" -lt 2 ] 2>/dev/null; then DEVICES=8; fi # one device: the decomposed HLO on 8 CPU host devices

# --- the stages, one function each ---------------------------------------------------------------------

model_3d() { # 2. the full model in 3D at 256³
    if q; then
        plan model_3d "${T_MODEL3D:-240}" 5 || return 0
        args MODEL3D_ARGS --quick --sizes 8x3 --t-end 0.5 --lean --dt-from-t0 --no-reference --no-baseline \
            --cell-diffusion implicit --no-limits
    else
        plan model_3d "${T_MODEL3D:-150}" 60 || return 0
        args MODEL3D_ARGS --sizes 256x3 --t-end 2 --dt-from-t0 --no-reference --no-baseline --repeats 2 \
            --cell-diffusion implicit --no-limits
    fi
    # the worker stops first, so that the driver writes what it measured into the JSON
    stage model_3d TERM "$PYTHON" benchmarks/bench_model.py --out "$OUTDIR/model_3d" "${ARGS[@]}" \
        --worker-timeout $((LIMIT > 30 ? LIMIT - 15 : LIMIT * 2 / 3))
}

ensemble() { # 3. a vmapped ensemble of 64 members × 256²
    if q; then
        plan ensemble "${T_ENSEMBLE:-240}" 5 || return 0
        args ENSEMBLE_ARGS --sizes 8 --members 4 --t-end 0.5 --per-process 1
    else
        plan ensemble "${T_ENSEMBLE:-110}" 45 || return 0
        args ENSEMBLE_ARGS --sizes 256 --members 64 --t-end 0.5 --per-process 1
    fi
    # its per-process members run `tumorfield run` with JAX_PLATFORMS defaulting to cpu: the device's
    JAX_PLATFORMS="${JAX_PLATFORMS:-$PLATFORMS}" stage ensemble TERM \
        "$PYTHON" benchmarks/bench_ensemble.py --out "$OUTDIR/ensemble" "${ARGS[@]}"
}

fit() { # 4. the fit's gradient ÷ forward
    if q; then
        plan fit "${T_FIT:-240}" 5 || return 0
        args FIT_ARGS --quick --repeats 5
    else
        plan fit "${T_FIT:-90}" 45 || return 0
        args FIT_ARGS --parts gradient --shape 256 --days 21 --repeats 5
    fi
    stage fit TERM "$PYTHON" benchmarks/bench_fit.py --out "$OUTDIR/fit" "${ARGS[@]}"
}

calibrate() { # 5. the calibration from two scans
    if q; then
        plan calibrate "${T_CALIBRATE:-240}" 5 || return 0
        args CALIBRATE_ARGS --size 8 --quick --max-iterations 2 --repeats 3 --uncertainty none
    else
        plan calibrate "${T_CALIBRATE:-100}" 45 || return 0
        args CALIBRATE_ARGS --size 64 --max-iterations 30 --repeats 5 --uncertainty none
    fi
    stage calibrate TERM "$PYTHON" benchmarks/bench_calibrate.py --out "$OUTDIR/calibrate" "${ARGS[@]}"
}

verification() { # 6. the verification tests
    if ! has_module pytest; then
        skip verification "pytest is not installed"
        return 0
    fi
    if q; then
        plan verification "${T_VERIFY:-240}" 5 || return 0
        args VERIFY_ARGS tests/test_core_verification.py -k dt_beyond_limit_refused_naming_the_limit
    else
        plan verification "${T_VERIFY:-90}" 30 || return 0
        args VERIFY_ARGS tests/test_core_verification.py --durations=0
    fi
    # SIGINT: pytest stops as after ^C and still writes the JUnit XML of the tests it ran
    stage verification INT "$PYTHON" -m pytest -v -p no:cacheprovider "${ARGS[@]}" \
        --junitxml "$OUTDIR/verification/junit.xml"
}

bench_model() { # 7. the PTX arm at 512² against the commit before issue 14
    local baseline=()
    if git -C "$ROOT" cat-file -e 2e64a49^{commit} 2>/dev/null; then
        baseline=(--baseline 2e64a49)
    elif [ -n "${BASELINE_TREE:-}" ] && [ -d "$BASELINE_TREE/src/tumorfield" ]; then
        baseline=(--baseline-tree "$BASELINE_TREE")
    elif [ -d "$ROOT/benchmarks/.baseline_2e64a49/src/tumorfield" ]; then
        baseline=(--baseline-tree "$ROOT/benchmarks/.baseline_2e64a49")
    else
        baseline=(--no-baseline)
        log "bench_model: no git history and no BASELINE_TREE: the commit before issue 14 is not run"
    fi
    if q; then
        plan bench_model "${T_MODEL:-240}" 5 || return 0
        # the baseline is the same worker on another tree (a minute of compiles on CPU): not in CI
        args BENCH_MODEL_ARGS --quick --sizes 8x3 --t-end 0.5 --lean --dt-from-t0 --no-reference --no-baseline \
            --cell-diffusion implicit
        stage bench_model TERM "$PYTHON" benchmarks/bench_model.py --out "$OUTDIR/bench_model" "${ARGS[@]}"
    else
        plan bench_model "${T_MODEL:-120}" 60 || return 0
        args BENCH_MODEL_ARGS --sizes 512 --t-end 21 --cell-diffusion implicit --no-baseline-reference --repeats 2
        # two workers (this checkout, then the baseline): each stops in time for the driver to write
        stage bench_model TERM "$PYTHON" benchmarks/bench_model.py --out "$OUTDIR/bench_model" "${baseline[@]}" \
            "${ARGS[@]}" --worker-timeout $(((LIMIT - 10) / 2))
    fi
}

budget() { # 8. what XLA compiles one step into on this device (bench_budget.py; no --check: its budget is XLA:CPU's)
    if [ ! -f "$ROOT/benchmarks/bench_budget.py" ]; then
        skip budget "benchmarks/bench_budget.py is not in this checkout"
        return 0
    fi
    if q; then
        plan budget "${T_BUDGET:-240}" 5 || return 0
        args BUDGET_ARGS --cases voloshin2015_ptx_256x256
    else
        # stage 2 reads the 3D step the same way; these are the 2D step of the fit and ensemble and the glioma step
        # of the calibration (its JSON is written at the end: a timeout keeps only the log)
        plan budget "${T_BUDGET:-60}" 30 || return 0
        args BUDGET_ARGS --cases voloshin2015_ptx_256x256 glioma_atlas_99x117x95
    fi
    stage budget TERM "$PYTHON" benchmarks/bench_budget.py --out "$OUTDIR/budget" "${ARGS[@]}"
}

decomposed() { # 9. one grid over the node's devices (on paper where the machine has one)
    if q; then
        plan decomposed "${T_DECOMPOSED:-240}" 5 || return 0
        args DECOMPOSED_ARGS --quick --devices 2
    else
        plan decomposed "${T_DECOMPOSED:-90}" 45 || return 0
        args DECOMPOSED_ARGS --sizes 256x3 --devices "$DEVICES"
    fi
    stage decomposed TERM "$PYTHON" benchmarks/bench_decomposed.py --out "$OUTDIR/decomposed" "${ARGS[@]}"
}

glioma() { # 10. the glioma model on the MNI152 atlas
    if ! has_module nilearn; then
        skip glioma "nilearn is not installed (its wheel ships the MNI152 tissue maps)"
        return 0
    fi
    if q; then
        plan glioma "${T_GLIOMA:-240}" 5 || return 0
        args GLIOMA_ARGS --quick --no-reference
    else
        plan glioma "${T_GLIOMA:-75}" 30 || return 0
        args GLIOMA_ARGS --resample 2 1 --t-end 365 --repeats 1 --no-reference
    fi
    stage glioma TERM "$PYTHON" benchmarks/bench_glioma.py --out "$OUTDIR/glioma" "${ARGS[@]}"
}

ORDER="device model_3d ensemble fit calibrate verification bench_model budget decomposed glioma"
if q && [ "$DRY" != 1 ]; then
    # two lanes of about equal CPU time (each stage is compile-bound and mostly single-threaded);
    # bench_model follows model_3d in its lane, to load its programs from the cache. Each lane is a
    # subshell, so that its `times` counts its own stages' processes only.
    (model_3d; bench_model; fit; glioma; budget) &
    lane_a=$!
    (verification; ensemble; calibrate; decomposed) &
    lane_b=$!
    wait "$lane_a" "$lane_b"
else # the full form: one stage at a time, each with the device to itself, in order of value
    model_3d
    ensemble
    fit
    calibrate
    verification
    bench_model
    budget
    decomposed
    glioma
fi

# --- summary: suite.json, with each stage's outputs and key figures -----------------------------------
"$PYTHON" - "$OUTDIR" "$ORDER" "$DEADLINE" "$START" <<'EOF' 2>&1 | tee -a "$LOG"
import json, math, pathlib, sys, time
out, order = pathlib.Path(sys.argv[1]), sys.argv[2].split()
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
elif (out / "verification" / "stage.log").exists():  # no XML (killed): the counts from pytest -v's lines
    import re
    found = re.findall(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)", (out / "verification" / "stage.log").read_text(), re.M)
    if found:
        word = [w for _, w in found]
        counts = {"tests": len(found), "failures": word.count("FAILED"), "errors": word.count("ERROR"),
                  "skipped": word.count("SKIPPED"), "failed": [t for t, w in found if w in ("FAILED", "ERROR")]}
        (out / "verification" / "verification.json").write_text(json.dumps({**counts, "partial": True}, indent=2))


def load(stage, pattern):
    found = sorted((out / stage).glob(pattern))
    return json.loads(found[-1].read_text()) if found else None


def runs(result):
    return [(f"{size} {key}", r) for size, e in (result or {}).get("sizes", {}).items() for key, r in e["runs"].items()]


def figures(name):  # the numbers to record after a lease (None: not measured)
    if name == "device":
        d = load("device", "device.json") or {}
        return {k: d.get(k) for k in ("platform", "device_kind", "device_count", "jax_version")}
    if name in ("model_3d", "bench_model"):
        result, found = load(name, "bench_model_*.json"), {}
        for key, r in runs(result):
            x = r.get("xla_cost", {})
            found[key] = {"status": r.get("status"), "cell_steps_per_s": r.get("cell_steps_per_s"),
                          "s_per_simulated_day": r.get("s_per_simulated_day"), "compile_s": r.get("compile_s"),
                          "xla_bytes_per_cell_step": r.get("xla_bytes_per_cell_step"),
                          "bytes_per_cell_step": r.get("bytes_per_cell_step"), "bytes_basis": x.get("bytes_basis"),
                          "substeps": r.get("substeps"),
                          "fraction_of_peak_bandwidth": r.get("fraction_of_peak_bandwidth"),
                          "fraction_of_triad_bandwidth": r.get("fraction_of_triad_bandwidth"),
                          "triad_bytes_per_s": r.get("bandwidth", {}).get("triad_bytes_per_s"),
                          "cell_steps_per_s_at_issue_bandwidth": x.get("cell_steps_per_s_at_issue_bandwidth"),
                          "device_peak_bytes": r.get("memory", {}).get("device_peak_bytes_in_use")}
        for size, e in (result or {}).get("sizes", {}).items():
            for key, c in e.get("comparisons", {}).items():
                found[f"{size} {key}"] = c
        return found
    if name == "ensemble":
        result = load(name, "bench_ensemble_*.json") or {}
        return {size: {"members_per_s": row["batched"]["members_per_s"],
                       "members_per_s_without_compile": row["batched"]["members_per_s_without_compile"],
                       "compile_s": row["batched"]["compile_s"],
                       "speedup_vs_process_per_member": row.get("speedup_batched_vs_process_per_member"),
                       "member_throughput_vs_single": row.get("batch_member_throughput_vs_single")}
                for size, row in result.get("sizes", {}).items()}
    if name == "fit":
        g = (load(name, "bench_fit_*.json") or {}).get("gradient", {})
        return {k: g.get(k) for k in ("ratio", "ratio_median", "forward_median_s", "value_and_grad_median_s",
                                      "forward_compile_s", "value_and_grad_compile_s", "steps")}
    if name == "calibrate":
        result = load(name, "bench_calibrate_*.json") or {}
        g, s = result.get("gradient", {}), result.get("solution", {})
        return {"status": result.get("status"), "ratio_best": g.get("ratio_best"), "ratio_median": g.get("ratio_median"),
                "wall_s": s.get("wall_s"), "compile_s": s.get("compile_s"), "iterations": s.get("iterations"),
                "solution_status": s.get("status"), "errors": result.get("errors")}
    if name == "verification":
        return load(name, "verification.json")
    if name == "budget":
        result = load(name, "bench_budget_*.json") or {}
        return {case: {k: e.get("step", {}).get(k) for k in ("bytes_per_cell_step", "common_bytes_per_cell_step",
                                                             "fusions", "kernels", "ffts", "compile_s")}
                for case, e in result.get("cases", {}).items()}
    if name == "glioma":
        result = load(name, "bench_glioma_*.json") or {}
        return {size: {k: e.get(k) for k in ("cell_steps_per_s", "wall_s", "compile_s")}
                for size, e in result.get("sizes", {}).items()}
    if name == "decomposed":
        result = load(name, "decomposed_*.json") or {}
        return {"x".join(map(str, e["shape"])): {"one_device_step_s": e.get("one_device_step_s"),
                                                  "predicted_step_s": e.get("predicted", {}).get("step_s"),
                                                  "one_device_bytes_accessed": e.get("one_device_bytes_accessed")}
                for e in result.get("sizes", [])}
    return None


for s in stages:
    s["outputs"] = sorted(str(p.relative_to(out)) for p in pathlib.Path(s["dir"]).rglob("*.json"))
    try:
        s["figures"] = figures(s["stage"]) if s["outputs"] else None
    except Exception as error:  # a figure missing from a partial JSON: say so, keep the summary
        s["figures"] = {"error": f"{type(error).__name__}: {error}"}
elapsed = time.time() - float(sys.argv[4])
cpu = sum(s.get("cpu_s") or 0 for s in stages)
summary = {"outdir": str(out), "deadline_s": float(sys.argv[3]), "elapsed_s": round(elapsed, 1),
           "stages_cpu_s": round(cpu, 1), "stages": stages}
(out / "suite.json").write_text(json.dumps(summary, indent=2, default=str))
for s in stages:
    print(f"{s['stage']:>13}: {s['status']:<8} {s['seconds']!s:>5} s of {s['timeout_s']!s:>4} "
          f"(CPU {s.get('cpu_s')!s:>6} s)  {s['reason']}  {' '.join(s['outputs'])}")
print(f"elapsed {elapsed:.0f} s of the {float(sys.argv[3]):.0f} s deadline; the stages used {cpu:.0f} s of CPU")
EOF
if q && [ -z "${SUITE_CACHE:-}" ]; then rm -rf "$OUTDIR/jax_cache"; fi
log "done: $OUTDIR/suite.json"
# exit 0 when every stage ran or was skipped with a reason (or, dry run, was listed); 1 when one failed or timed out
! grep -q '"status": "\(failed\|timeout\)"' "$STAGES"
