#!/usr/bin/env bash
# On a machine with a GPU: run every experiment briefly with trainer=gpu, then measure the
# MNIST CNN's training throughput. Needs nnlab installed (`make setup`); prints one line per
# experiment and the throughput, and exits non-zero if an experiment fails.
#   scripts/gpu_check.sh                 # TRAINER=cpu scripts/gpu_check.sh: the same on the CPU
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
TRAINER=${TRAINER:-gpu}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Synthetic idx files (benchmarks/images.py) stand in for both datasets: no download needed.
"$BIN/python" -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; \
from images import write_dataset; write_dataset(Path('$scratch/data'))" || exit 1
cp -r "$scratch/data/MNIST" "$scratch/data/FashionMNIST"
"$BIN/python" -c "import torch; print('torch', torch.__version__, '| CUDA:', \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"

failed=0
for config in conf/experiment/*.yaml; do
  experiment=$(basename "$config" .yaml)
  data=()
  case "$experiment" in mnist* | fashion*) data=("paths.data_dir=$scratch/data" data.download=false) ;; esac
  SECONDS=0
  if "$BIN/nnlab-train" "experiment=$experiment" "trainer=$TRAINER" trainer.max_steps=50 \
      "paths.log_dir=$scratch/logs" "${data[@]}" > "$scratch/$experiment.log" 2>&1; then
    printf '%-20s ok      %3d s\n' "$experiment" "$SECONDS"
  else
    printf '%-20s FAILED, its last lines:\n' "$experiment"
    tail -5 "$scratch/$experiment.log"
    failed=1
  fi
done
if "$BIN/python" benchmarks/throughput.py --trainer "$TRAINER" > "$scratch/throughput.log" 2>&1; then
  tail -1 "$scratch/throughput.log"
else
  echo "throughput FAILED, its last lines:"
  tail -5 "$scratch/throughput.log"
  failed=1
fi
exit $failed
