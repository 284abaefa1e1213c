#!/usr/bin/env bash
# Omniglot 5-way 1-shot reproduction of MAML and Prototypical Networks on one CUDA GPU in
# about 10 minutes: the reproduce=omniglot_5w1s sweep cut to those two presets, each under a
# wall-clock budget on the GPU instead of the CPU table's 2 CPU-hours, then metalab-compare's
# table (metalab vs paper, time to accuracy) and the training throughput in tasks/s.
#
#   METALAB_DATA=/path/holding/omniglot benchmarks/reproduce_gpu.sh
#   MINUTES=8 EXPERIMENTS=maml_omniglot_5w1s benchmarks/reproduce_gpu.sh trainer.precision=bf16-mixed
#
# MINUTES (default 4) is each run's training budget; the 600-task test, validation and start-up
# come on top. Extra arguments are Hydra overrides for every run. Results: $OUT. TRAINER=cpu
# runs the same script without a GPU (the test suite does, with tiny overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-4}
EXPERIMENTS=${EXPERIMENTS:-maml_omniglot_5w1s,protonet_omniglot_5w1s}
OUT=${OUT:-outputs/reproduce_gpu/$(date +%Y-%m-%d_%H-%M-%S)}
TRAINER=${TRAINER:-gpu}
if [ "$TRAINER" = gpu ] && ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "reproduce_gpu.sh: no CUDA GPU is visible to torch; run it on a GPU machine" \
    "(the CPU table is: metalab-train -m reproduce=omniglot_5w1s)." >&2
  exit 2
fi
printf -v budget '00:00:%02d:00' "$MINUTES"
metalab-train -m reproduce=omniglot_5w1s "hydra.sweeper.params.experiment=\"$EXPERIMENTS\"" \
  "trainer=$TRAINER" trainer.max_cpu_seconds=null "trainer.max_time=$budget" \
  trainer.checkpoint_every_n_steps=null logger=csv "hydra.sweep.dir=$OUT" "$@"
metalab-compare "$OUT" --out "$OUT/comparison"
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

print(f"\n{'job':<24}{'steps':>8}{'train s':>10}{'tasks/s':>10}{'test acc %':>14}  gpu")
for results in sorted(Path(sys.argv[1]).glob("*/results.json")):
    r = json.loads(results.read_text())
    if r.get("status") != "completed":
        print(f"{results.parent.name:<24} {r.get('status')}: {r.get('error', '')[:60]}")
        continue
    train, batch = r["train"], r["config"]["algorithm"]["meta_batch"]
    tasks_per_s = train["steps"] * batch / max(train["wall_seconds"], 1e-9)
    acc = r["metrics"]["test/acc"]
    print(f"{results.parent.name:<24}{train['steps']:>8}{train['wall_seconds']:>10.0f}"
          f"{tasks_per_s:>10.1f}{100 * acc['mean']:>9.2f} ± {100 * acc['ci95']:.2f}"
          f"  {r['hardware'].get('gpu', '?')}")
PY
