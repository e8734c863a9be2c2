#!/usr/bin/env bash
# Issue 21's GPU figures on a lent GPU machine that has python3 with PyTorch and nothing else of ours: no
# install (convolab runs from src/), no internet (Fashion-MNIST travels with the working tree). On this
# machine, once:
#   mkdir -p .data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
# then on the device (.data is git-ignored, so it must be carried; 30 MB):
#   run(command="bash benchmarks/gpu_device.sh", carry=[".data"], timeout_s=600)
# It prints, each from one warm process (benchmarks/speedrun.py: a warm-up run, then 5 seeds timed with CUDA
# events from the first step to the final test accuracy, and the process's phases and whole wall time):
#   1. --recipe speedrun-gpu as it stands (15 epochs), then 6, 8, 10 and 12 epochs: the shortest that keeps a
#      mean of 94.0 % is the record for the 2.0 s target;
#   2. --model fastcnn_wide (every width doubled) at 20, 30 and 40 epochs: the shortest that reaches a mean of
#      95.0 %. fastcnn itself stops short of it: 0.9470 after 30 epochs on the 2-core CPU (seed 0, bf16), where
#      fastcnn_wide reached 0.9510 and 0.9492 after 20 (seeds 0 and 1; 2026-12-07): on the line, hence 30 and 40.
# Each table also goes to $OUT/gpu-speedrun.log. The device gives a command 10 minutes; this stops starting new
# variants after SECONDS_BUDGET (default 480) so that the log comes back whole.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" CONVOLAB_DATA="$PWD/.data" PYTHONUNBUFFERED=1
LOG=${OUT:-/tmp}/gpu-speedrun.log
BUDGET=${SECONDS_BUDGET:-480}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here')" || exit 2
[ -f .data/fashion-mnist/train-images-idx3-ubyte.gz ] || { echo "no .data/fashion-mnist: carry it (see the top of $0)"; exit 2; }
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee "$LOG"
# "epochs model": the 94 % sweep, then the 95 % one
for variant in "15 fastcnn" "8 fastcnn" "10 fastcnn" "12 fastcnn" "6 fastcnn" \
               "20 fastcnn_wide" "30 fastcnn_wide" "40 fastcnn_wide"; do
    read -r epochs model <<< "$variant"
    if (( SECONDS > BUDGET )); then
        echo "== stopped before $model at $epochs epochs: ${SECONDS}s used of the ${BUDGET}s budget" | tee -a "$LOG"
        break
    fi
    echo "== --recipe speedrun-gpu --model $model --epochs $epochs, 5 seeds (${SECONDS}s so far)" | tee -a "$LOG"
    "$PY" benchmarks/speedrun.py --recipe speedrun-gpu --seeds 5 --device cuda -- --model "$model" \
        --epochs "$epochs" 2>&1 | tee -a "$LOG"
done
