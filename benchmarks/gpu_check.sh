#!/usr/bin/env bash
# The GPU path in one run of at most 8 minutes (benchmarks/gpu_check.py says what it measures).
#   benchmarks/gpu_check.sh                     on a lent GPU machine (the repository only)
#   benchmarks/gpu_check.sh --device cpu --small  the rehearsal here, about 2 minutes
# Prints one table; exit 1 when a step failed. Never part of CI.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
# the package from this checkout; its dependencies must be on the machine already
missing=$("$PY" - <<'PY'
import importlib.util as u
names = ["torch", "torchvision", "timm", "numpy", "scipy", "sklearn", "jinja2", "PIL",
         "safetensors", "filelock", "pydicom", "nibabel", "pytest"]
print(" ".join(n for n in names if u.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then
    echo "missing Python packages: $missing (install them, or carry their wheels: ../.library/device/README.md)"
    exit 2
fi
timeout --signal=INT 480 "$PY" benchmarks/gpu_check.py "$@"
