#!/usr/bin/env bash
# The GPU measurements of bench/README.md in one run: training and inference images/s of the
# default CNN and FC at GPU batch sizes, without and with mixed precision, on the JAX backend
# (the GPU machine has JAX with CUDA but no TensorFlow, and TensorFlow's wheel is too large to
# carry). About 5 minutes on one H200; results as JSON and a log under $OUT.
#
# 1. Here, on the CPU machine, once: fetch the missing wheels (Python 3.12) into .whl/ and one
#    CIFAR-10 batch file (10,000 images, 31 MB) into .gpudata/, both ignored by git:
#        bash bench/gpu_check.sh --prepare
# 2. With the device tool: command "bash bench/gpu_check.sh", carry [".whl", ".gpudata"],
#    timeout_s 540.
set -euo pipefail

WHEELS=(keras==3.15.1 namex==0.1.0 optree==0.20.0 rich==15.0.0 markdown-it-py==4.3.0
        mdurl==0.1.2 pygments==2.21.0 absl-py==2.5.1 pydantic==2.14.4 pydantic-core==2.50.5
        annotated-types==0.8.0 typing-extensions==4.16.0 typing-inspection==0.4.5 pyyaml==6.0.4)

if [ "${1:-}" = "--prepare" ]; then
  grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
  grep -qx '/.gpudata/' .git/info/exclude || echo '/.gpudata/' >> .git/info/exclude
  rm -rf .whl && mkdir -p .whl .gpudata/cifar-10-batches-py
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
  cp ../shared/data/cifar-10-batches-py/data_batch_1 .gpudata/cifar-10-batches-py/
  du -sh .whl .gpudata
  exit 0
fi

OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" \
  | tee -a "$OUT/gpu.txt"

run() {  # name, extra flags...
  local name=$1; shift
  timeout 200 python3 bench/bench_throughput.py --source .gpudata/cifar-10-batches-py \
    --images 10000 --epochs 3 --batch-sizes 256 512 1024 --out "$OUT/$name.json" "$@" \
    2>&1 | tee -a "$OUT/log.txt"
}
run float32
run mixed --mixed-precision
