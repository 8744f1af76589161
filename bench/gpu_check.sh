#!/usr/bin/env bash
# The GPU check: the real pipeline (the tune stage of both families, then evaluate) with the
# gpu profile (params-gpu.yaml) on the full prepared CIFAR-10, on a machine that has JAX with
# CUDA but no TensorFlow, Keras, KerasTuner, MLflow or DVC; and the training loop's images/s
# against a bare training step. Everything it writes stays under .gpurun/ (ignored by git);
# what comes back lands in $OUT (default .gpurun/out).
#
# Here, on the CPU machine, once (needs data/prepared: `dvc repro prepare`):
#     bash bench/gpu_check.sh prepare
# fetches the missing wheels (Python 3.12) into .whl/ and cuts data/prepared (train, val, test:
# 161 MiB) into .gpudata/part-00..02 of at most 56 MiB, as a call carries 64 MiB at most.
# Then with the device tool, back to back (a machine stays warm 30 s between calls; what a
# call leaves under .gpurun/ is there for the next):
#   1. carry [".whl", ".gpudata/part-00"]   bash bench/gpu_check.sh receive           ~30 s
#   2. carry [".gpudata/part-01"]            bash bench/gpu_check.sh receive           ~20 s
#   3. carry [".gpudata/part-02"]            bash bench/gpu_check.sh receive tune-cnn  timeout_s 590
#   4. nothing carried                       bash bench/gpu_check.sh tune-fc evaluate throughput
#                                                                                     timeout_s 420
# Steps run in the order given; any step can be rerun on its own. Tracking is off (MLflow is
# not there): the results are files. Back from call 3: log.txt, gpu.txt, cnn-trials.csv,
# cnn-best_hparams.json; from call 4: fc-trials.csv, fc-best_hparams.json, metrics.json,
# timings.json, throughput.json and log.txt. bench/README.md records them.
#
# Without a GPU (CI, tests/test_gpu_profile.py): GPU_CHECK_PARAMS names a smaller params file,
# GPU_CHECK_PARTS the parts folder, GPU_CHECK_RUN the run folder and GPU_CHECK_WHEELS the
# wheels (none there: the packages at hand); the same steps then run on the CPU in float32.
# Run it from the repository's root.
set -euo pipefail

WHEELS=(keras==3.15.1 keras-tuner==1.4.8 kt-legacy==1.0.5 namex==0.1.0 optree==0.20.0
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
        typing-inspection==0.4.5 typing-extensions==4.16.0)
RUN=${GPU_CHECK_RUN:-.gpurun}
mkdir -p "$RUN" && RUN=$(cd "$RUN" && pwd)
PARAMS=${GPU_CHECK_PARAMS:-params-gpu.yaml}
PARTS=${GPU_CHECK_PARTS:-.gpudata}
WHEELS_DIR=${GPU_CHECK_WHEELS:-.whl}
OUT=${OUT:-$RUN/out}
PYTHON_SET=${PYTHON:-}
PYTHON=${PYTHON:-python3}

prepare() {  # here: wheels and data parts, with the project's environment
  if [ -z "${PYTHON_SET:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
  rm -rf .whl && mkdir -p .whl
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
  "$PYTHON" -m pipeline split-parts --data data/prepared --out "$PARTS" --max-mib 56
  du -sh .whl "$PARTS"/part-*
}

receive() {  # keep what this call carried where later calls find it; install the wheels once
  mkdir -p "$RUN/parts"
  for part in "$PARTS"/part-*; do
    [ -d "$part" ] || continue
    rm -rf "$RUN/parts/$(basename "$part")" && cp -r "$part" "$RUN/parts/"
  done
  if [ -d "$WHEELS_DIR" ] && [ ! -f "$RUN/site/.installed" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$RUN/site" "$WHEELS_DIR"/*.whl
    touch "$RUN/site/.installed"
  fi
  ls "$RUN/parts"
}

environment() {  # the run's settings: JAX, the carried packages, tracking off, no source
  export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 JAX_COMPILATION_CACHE_DIR=$RUN/jax-cache
  export PYTHONPATH=$RUN/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
  mkdir -p "$OUT"
  if [ ! -f "$RUN/params.yaml" ] || [ "$PARAMS" -nt "$RUN/params.yaml" ]; then
    "$PYTHON" -c 'import sys, yaml
params = yaml.safe_load(open(sys.argv[1]))
params.setdefault("tracking", {})["uri"] = "off"
params["prepare"]["source"] = "keras-cache"  # not read: the prepared data comes as parts
yaml.safe_dump(params, open(sys.argv[2], "w"), sort_keys=False)' "$PARAMS" "$RUN/params.yaml"
  fi
}

probe() {  # what the run ran on
  { command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
      --format=csv || echo "no nvidia-smi"
    "$PYTHON" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras',
keras.__version__)"; } > "$OUT/gpu.txt"
  cat "$OUT/gpu.txt"
}

join() {  # the prepared data, once
  if [ ! -f "$RUN/data/meta.json" ]; then
    "$PYTHON" -m pipeline join-parts --parts "$RUN/parts" --data "$RUN/data"
  fi
}

stage() {  # python -m pipeline COMMAND with the run's folders
  local command=$1; shift
  "$PYTHON" -m pipeline "$command" --params "$RUN/params.yaml" --data "$RUN/data" \
    --models "$RUN/models" --results "$RUN/results" "$@"
}

tune() {  # family
  join
  probe
  local started=$SECONDS
  stage tune --family "$1" --tuning-dir "$RUN/tuning/$1"
  echo "tune $1: $((SECONDS - started)) s wall"
  cp "$RUN/results/$1/trials.csv" "$OUT/$1-trials.csv"
  cp "$RUN/results/$1/best_hparams.json" "$OUT/$1-best_hparams.json"
}

evaluate() {
  join
  stage evaluate --metrics "$RUN/metrics.json" --timings "$RUN/timings.json"
  cp "$RUN/metrics.json" "$RUN/timings.json" "$OUT/"
}

throughput() {  # the training loop against a bare step, the profile's precision
  "$PYTHON" bench/bench_throughput.py --synthetic 20000 --epochs 3 --precision profile-gpu \
    --families cnn --base-filters 64 --batch-sizes 512 1024 --out "$OUT/throughput.json"
}

[ $# -gt 0 ] || { sed -n '2,30p' "$0"; exit 2; }
if [ "$1" = prepare ]; then prepare; exit 0; fi
environment
for step in "$@"; do
  echo "== $step $(date +%T)" | tee -a "$OUT/log.txt"
  case $step in
    receive) receive ;;
    tune-cnn) tune cnn ;;
    tune-fc) tune fc ;;
    evaluate) evaluate ;;
    throughput) throughput ;;
    *) echo "unknown step $step (receive, tune-cnn, tune-fc, evaluate, throughput)" >&2; exit 2 ;;
  esac 2>&1 | tee -a "$OUT/log.txt"
done
