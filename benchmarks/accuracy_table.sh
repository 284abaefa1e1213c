#!/usr/bin/env bash
# The Omniglot accuracy table of issue 4: every algorithm's preset, 5-way and 20-way 1-shot,
# each run under the same wall-clock budget (trainer.max_time), tested on 600 fixed tasks
# (mean +- 95% CI), then one markdown table from the results.json files.
#
#   benchmarks/accuracy_table.sh                      # 30 minutes per run, 12 runs
#   BUDGET=00:00:05:00 benchmarks/accuracy_table.sh    # a quicker, weaker table
#   WAYS="5" ALGORITHMS="maml reptile" benchmarks/accuracy_table.sh algorithm.meta_batch=8
#
# Extra arguments are Hydra overrides added to every run (EVAL_TASKS changes the 600).
# Annealing (MAML++ cosine/MSL, Reptile eps) runs over trainer.max_steps: to finish it
# within the budget, also pass trainer.max_steps=<steps that fit>. Run on a quiet machine: the
# budget is wall-clock, so a loaded machine trains less. Results: $OUT/<algo>_<ways>w1s/.
set -euo pipefail
BUDGET=${BUDGET:-00:00:30:00}
ALGORITHMS=${ALGORITHMS:-"maml fomaml reptile anil metasgd mamlpp"}
WAYS=${WAYS:-"5 20"}
OUT=${OUT:-outputs/accuracy_table/$(date +%Y-%m-%d_%H-%M-%S)}
mkdir -p "$OUT"
for ways in $WAYS; do
  for algorithm in $ALGORITHMS; do
    run="$OUT/${algorithm}_${ways}w1s"
    if [ -f "$run/results.json" ]; then echo "kept $run"; continue; fi
    echo "== $algorithm ${ways}-way 1-shot, budget $BUDGET -> $run"
    metalab-train "experiment=${algorithm}_omniglot_${ways}w1s" \
      "trainer.max_time=$BUDGET" "eval.tasks=${EVAL_TASKS:-600}" logger=csv \
      trainer.enable_progress_bar=false "hydra.run.dir=$run" "$@" \
      > "$run.log" 2>&1 || echo "FAILED: see $run.log"
  done
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

# ../shared/README.md's published Omniglot 1-shot numbers (5-way, 20-way); none there for
# ANIL or Meta-SGD.
PUBLISHED = {
    "maml": ("98.7 ± 0.4", "95.8 ± 0.3"),
    "fomaml": ("98.3 ± 0.5", "89.4 ± 0.5"),
    "reptile": ("97.68 ± 0.04", "89.43 ± 0.14"),
    "mamlpp": ("99.47", "97.65"),
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
