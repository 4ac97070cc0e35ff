#!/usr/bin/env bash
# Wall time of the README's demo command from a clean clone of this repository's HEAD.
#   bash benchmarks/demo_wall_time.sh [OUT_JSON]
# Clones HEAD into a temporary folder, runs `make demo` there (venv creation + the whole run) and
# writes the timings as JSON (default benchmarks/results/demo_wall_time.json).
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
out=${1:-$repo/benchmarks/results/demo_wall_time.json}
work=$(mktemp -d)
git clone -q "$repo" "$work/mmdistill"
cd "$work/mmdistill"
t0=$(date +%s.%N)
make venv > "$work/venv.log" 2>&1
t1=$(date +%s.%N)
make demo > "$work/demo.log" 2>&1
t2=$(date +%s.%N)
run_s=$(grep -o 'run finished in [0-9.]* s' "$work/demo.log" | grep -o '[0-9.]*' | head -1 || true)
mkdir -p "$(dirname "$out")"
python3 - "$out" "$t0" "$t1" "$t2" "${run_s:-null}" "$(git rev-parse HEAD)" <<'PY'
import json, os, platform, sys, datetime
out, t0, t1, t2, run_s, commit = sys.argv[1:]
res = {"benchmark": "demo_wall_time", "date": datetime.date.today().isoformat(), "commit": commit,
       "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
       "venv_setup_s": float(t1) - float(t0), "make_demo_s": float(t2) - float(t1),
       "total_s": float(t2) - float(t0), "pipeline_reported_s": None if run_s == "null" else float(run_s)}
open(out, "w").write(json.dumps(res, indent=2))
print(json.dumps(res, indent=2))
PY
echo "logs: $work/venv.log $work/demo.log"
