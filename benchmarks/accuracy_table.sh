#!/usr/bin/env bash
# The Omniglot accuracy table of issue 4: every algorithm's preset, 5-way and 20-way 1-shot,
# each run under the same CPU budget (trainer.max_cpu_seconds: CPU time of the run's process,
# all threads), tested on 600 fixed tasks (mean +- 95% CI), then one markdown table from the
# results.json files with the published numbers beside them.
#
#   benchmarks/accuracy_table.sh                         # 30 CPU-minutes per run, 12 runs
#   CPU_SECONDS=240 JOBS=2 THREADS=1 benchmarks/accuracy_table.sh   # 2 runs at a time, 1 thread each
#   WAYS="5" ALGORITHMS="maml reptile" benchmarks/accuracy_table.sh algorithm.meta_batch=8
#   ALGORITHMS="protonet matchingnet siamese metalstm" CPU_SECONDS=240 JOBS=2 THREADS=1 \
#     benchmarks/accuracy_table.sh                     # the other families' table
#
# Extra arguments are Hydra overrides added to every run (EVAL_TASKS changes the 600). A CPU
# budget stays fair when runs share the machine; with THREADS=1 and JOBS=cores no run waits on
# another's OpenMP threads. Annealing (MAML++ cosine/MSL, Reptile eps) runs over
# trainer.max_steps: a budget that ends first leaves it part-way. Results: $OUT/<algo>_<ways>w1s/.
set -euo pipefail
CPU_SECONDS=${CPU_SECONDS:-1800}
JOBS=${JOBS:-1}
THREADS=${THREADS:-2}
ALGORITHMS=${ALGORITHMS:-"maml fomaml reptile anil metasgd mamlpp"}
WAYS=${WAYS:-"5 20"}
OUT=${OUT:-outputs/accuracy_table/$(date +%Y-%m-%d_%H-%M-%S)}
mkdir -p "$OUT"
export OUT CPU_SECONDS THREADS EVAL_TASKS=${EVAL_TASKS:-600}

one_run() {  # $1 = algorithm, $2 = ways, then extra overrides
  local algorithm=$1 ways=$2 run="$OUT/${1}_${2}w1s"
  shift 2
  if [ -f "$run/results.json" ]; then echo "kept $run"; return; fi
  echo "== $algorithm ${ways}-way 1-shot, $CPU_SECONDS CPU seconds, $THREADS thread(s) -> $run"
  OMP_NUM_THREADS=$THREADS metalab-train "experiment=${algorithm}_omniglot_${ways}w1s" \
    "trainer.max_cpu_seconds=$CPU_SECONDS" "eval.tasks=$EVAL_TASKS" logger=csv \
    trainer.enable_progress_bar=false "hydra.run.dir=$run" "$@" \
    > "$run.log" 2>&1 || echo "FAILED: see $run.log"
}
export -f one_run
extra=""  # the extra overrides, quoted for the shell that xargs starts
[ $# -eq 0 ] || extra=$(printf '%q ' "$@")
for ways in $WAYS; do
  for algorithm in $ALGORITHMS; do
    printf '%s\0%s\0' "$algorithm" "$ways"
  done
done | xargs -0 -n 2 -P "$JOBS" bash -c "one_run \"\$@\" $extra" _
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

# ../shared/README.md's published Omniglot 1-shot numbers (5-way, 20-way); none there for
# ANIL, Meta-SGD or Meta-LSTM (mini-ImageNet only).
PUBLISHED = {
    "maml": ("98.7 ± 0.4", "95.8 ± 0.3"),
    "fomaml": ("98.3 ± 0.5", "89.4 ± 0.5"),
    "reptile": ("97.68 ± 0.04", "89.43 ± 0.14"),
    "mamlpp": ("99.47", "97.65"),
    "protonet": ("98.8", "96.0"),
    "matchingnet": ("98.1", "93.8"),
    "siamese": ("97.3", "88.2"),
}
rows = {}
for path in sorted(Path(sys.argv[1]).glob("*/results.json")):
    r = json.loads(path.read_text())
    if r.get("status", "completed") != "completed":
        continue
    test = r["metrics"]["test/acc"]
    name, ways = r["config"]["algorithm"]["name"], r["protocol"]["ways"]
    cell = f"{100 * test['mean']:.1f} ± {100 * test['ci95']:.1f}"
    rows.setdefault(name, {})[ways] = f"{cell} ({r['train']['steps']} steps)"
print("| algorithm | 5-way 1-shot % (outer steps) | 20-way 1-shot % (outer steps) | published 5w / 20w |")
print("|---|---|---|---|")
for name, cells in rows.items():
    published = " / ".join(PUBLISHED.get(name, ("-", "-")))
    print(f"| {name} | {cells.get(5, '-')} | {cells.get(20, '-')} | {published} |")
PY
