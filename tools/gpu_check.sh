#!/usr/bin/env bash
# The GPU machine's one command (device tool), from the repository root:
#   bash tools/gpu_check.sh            (with .whl carried: PyAV + pydantic wheels for that machine's Python)
# Installs the carried wheels into /tmp/site, runs the gpu-marked tests of the PyTorch backend, then
# tools/gpu_check.py; report and logs go to $OUT (or ./gpu_check_out). Extra arguments go to gpu_check.
set -o pipefail
out=${OUT:-./gpu_check_out}
wheels=${WHEELS:-.whl}
site=${SITE:-/tmp/site}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G "$wheels/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl \
    && export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} || echo "gpu_check.sh: wheel install failed; going on without"
fi
nvidia-smi 2>&1 | head -20 | tee "$out/nvidia_smi.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/engines/test_torch_backend.py tests/engines/test_recurrent.py tests/engines/test_tensorrt_gpu.py 2>&1 | tee "$out/gpu_tests.log"
timeout 420 python3 -m tools.gpu_check --out "$out/gpu_check" "$@" 2>&1 | tee "$out/gpu_check.log"
