#!/usr/bin/env bash
# The GPU figures the README quotes, in one go, on a machine with one CUDA GPU and Fashion-MNIST
# where convolab finds it (`convolab datasets`):
#   0. the speed-run record: --recipe speedrun-gpu, 5 seeds in one warm process after a warm-up run, timed
#      with CUDA events from the first step to the final test accuracy, phases and whole process printed
#      (benchmarks/speedrun.py), then the same in 8 epochs (a shorter variant toward the <= 2 s goal);
#   1. the speed-run recipe to 94 % as whole processes: fastcnn, 5 seeds (time_to_accuracy.py --recipe fast);
#   2. the tutorial recipe against `convolab train` with the same hyper-parameters (tutorial_speed.py);
#   3. convolab's default recipe against the tutorial recipe, to 91 % (time_to_accuracy.py);
#   4. training epochs with and without --cuda-graphs (cuda_graphs.py).
# Usage: bash benchmarks/gpu.sh [python]        (each step prints its own table; about 10 minutes)
set -euo pipefail
PY=${1:-python3}
cd "$(dirname "$0")/.."
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here')"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
echo "== 0/4 speed run (warm process, CUDA events), 5 seeds"
"$PY" benchmarks/speedrun.py --recipe speedrun-gpu --seeds 5 --device cuda
"$PY" benchmarks/speedrun.py --recipe speedrun-gpu --seeds 5 --device cuda -- --epochs 8
echo "== 1/4 speed-run recipe, 5 seeds"
"$PY" benchmarks/time_to_accuracy.py --device cuda --recipe fast --seeds 5 --skip-tutorial
echo "== 2/4 tutorial recipe against convolab train, same hyper-parameters"
"$PY" benchmarks/tutorial_speed.py --device cuda --repeats 2
echo "== 3/4 default recipe against the tutorial recipe, to 91 %"
"$PY" benchmarks/time_to_accuracy.py --device cuda --seeds 1
echo "== 4/4 training epochs with and without --cuda-graphs"
"$PY" benchmarks/cuda_graphs.py --epochs 5
