#!/bin/bash
# The demo end to end on prepared data v1 and v2, alternating, each from a fresh data and run
# directory (issue 19; figures in docs/BENCHMARKS.md, "The demo on prepared data v1 and v2").
#   bash bench/demo_formats.sh [OUT_DIR] [ROUNDS]     (from the repository root)
out=${1:-/tmp/demo_formats}
rounds=${2:-2}
for round in $(seq 1 "$rounds"); do
  for fmt in v1 v2; do
    d=$out/$fmt-$round
    rm -rf "$d" && mkdir -p "$d"
    before=$(cut -d' ' -f1 /proc/loadavg)
    start=$(date +%s.%N)
    python train.py --config configs/demo.yaml --run-dir "$d/run" --quiet \
      --set data.root="$d/videos" --set data.prepared_dir="$d/prepared" \
      --set data.format=$fmt > "$d/out.log" 2>&1
    rc=$?
    seconds=$(echo "$(date +%s.%N) - $start" | bc)
    top1=$(python -c "import json; print(json.load(open('$d/run/metrics.json'))['top1'])" 2>/dev/null)
    echo "$fmt round $round: rc $rc, $seconds s, load $before -> $(cut -d' ' -f1 /proc/loadavg), top-1 $top1"
  done
done
