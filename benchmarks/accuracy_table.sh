#!/usr/bin/env bash
# The Omniglot accuracy table of issue 4: every algorithm's preset, 5-way and 20-way 1-shot,
# each run under the same CPU budget (trainer.max_cpu_seconds: CPU time of the run's process,
# all threads), tested on 600 fixed tasks (mean +- 95% CI), then one markdown table from the
# results.json files with the published numbers beside them: the paper's value, the gap in
# points (metalab minus paper) and whether metalab's mean lies outside the paper's interval,
# all from metalab.compare.published (python -m metalab.compare.published --markdown lists it).
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
"""One row per run: metalab's test accuracy beside the paper's, read from metalab's one table
of published numbers (metalab.compare.published, the same one metalab-compare uses)."""
import json, sys
from pathlib import Path

from metalab.compare.published import gap, lookup, outside_published_ci, value_text

print("| algorithm | setting | metalab % (outer steps) | paper % | gap (pts) | flag | source |")
print("|---|---|---|---|---|---|---|")
for path in sorted(Path(sys.argv[1]).glob("*/results.json")):
    r = json.loads(path.read_text())
    if r.get("status", "completed") != "completed":
        continue
    test, config, protocol = r["metrics"]["test/acc"], r["config"], r["protocol"]
    ours = 100 * test["mean"]
    cell = f"{ours:.1f} ± {100 * test['ci95']:.1f} ({r['train']['steps']} steps)"
    setting = f"{protocol['ways']}-way {protocol['shots']}-shot"
    paper = lookup(config, protocol)  # the config picks the row (Reptile: transductive or not)
    if paper is None:
        print(f"| {config['algorithm']['name']} | {setting} | {cell} | - | - | - | none published |")
        continue
    outside = outside_published_ci(ours, paper)
    flag = {None: "no CI published", True: "OUTSIDE", False: "within"}[outside]
    print(f"| {config['algorithm']['name']} | {setting} | {cell} | {value_text(paper)} | "
          f"{gap(ours, paper):+.2f} | {flag} | {paper.method}: {paper.source} |")
PY
