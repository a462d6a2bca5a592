#!/usr/bin/env bash
# The pre-registered experiment of docs/when_rein_helps.md, one run at a time, resumable.
#
#   tools/when_rein_helps.sh            # one worker; start a second one to use both cores
#
# Runs in order (seed-major, so a partial experiment has paired runs): for each (seed, backbone)
# of the plan, Rein, frozen and full (backbone lr x0.1). Each run is one `reinlite sweep` call
# with 1 thread; the sweep skips runs already in results.json and resumes an interrupted run
# from its checkpoint. A worker claims a run by creating CLAIMS/NAME (mkdir is atomic), so two
# workers never train the same run. After each run the worker copies its training log into
# docs/when_rein_helps/logs/ and commits the results on the current branch (run it in a git
# worktree of a fixed commit: `git worktree add ../wrh-runs -b when-rein-helps-runs`).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=docs/when_rein_helps
CLAIMS=${CLAIMS:-/tmp/when_rein_helps_claims}
PY=${PY:-.venv/bin/python}
ITERS=2000
EVAL_AT="250 500 1000 1500"
COMMON=(optim.iters=$ITERS eval.max_images=100 train.log_every=50 threads=1)
# seed:backbone, in the order they are run (the random ViT with one seed; course_vit's third
# seed last, "if the budget allows")
PLAN=(0:course_vit 0:course_vit_mae 1:course_vit 1:course_vit_mae 0:random 2:course_vit)
METHODS=(rein frozen full)
mkdir -p "$CLAIMS" "$OUT/logs"
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg
for item in "${PLAN[@]}"; do
  seed=${item%%:*}; bb=${item#*:}
  for method in "${METHODS[@]}"; do
    name="${method}_s${seed}_${bb}"
    if [ -f "$OUT/results.json" ] && grep -q "\"$name\"" "$OUT/logs/index.txt" 2>/dev/null; then continue; fi
    mkdir "$CLAIMS/$name" 2>/dev/null || continue
    echo "$(date -u +%FT%TZ) start $name (worker $$)"
    # estimate: 2,000 steps x ~0.45 s + 5 evaluations x ~30 s = ~18 min on one free core
    $PY -m reinlite.cli sweep --groups methods --only "$method" --seeds "$seed" --backbones "$bb" \
      --eval-at $EVAL_AT --threads 1 --out "$OUT" "${COMMON[@]}" || { echo "FAILED $name"; continue; }
    cp "$OUT/runs/$name/log.jsonl" "$OUT/logs/$name.jsonl"
    (
      flock 9
      echo "$name" >> "$OUT/logs/index.txt"
      git add "$OUT/results.json" "$OUT/results.md" "$OUT/logs" && \
        git commit -q -m "when_rein_helps: $name (${ITERS} steps, evaluated at $EVAL_AT $ITERS)" -- "$OUT"
    ) 9>"$CLAIMS/.git.lock"
    echo "$(date -u +%FT%TZ) done $name"
  done
done
echo "$(date -u +%FT%TZ) worker $$: nothing left to claim"
