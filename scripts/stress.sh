#!/usr/bin/env bash
# Run the subprocess and signal tests N times in a row (issue 8's check), e.g. beside a
# `make test` that keeps the machine busy:
#     scripts/stress.sh 20 > stress.log    # one line per run: status, counts, load, seconds
# It stops at nothing: read the lines, and the per-run logs it names, afterwards.
set -u
cd "$(dirname "$0")/.."
runs=${1:-20}
logs=${STRESS_LOGS:-/tmp/tidal-stress}
mkdir -p "$logs"
tests=(
  tests/io/log/test_log_feed.py tests/io/log/test_log_concurrency.py tests/io/log/test_log_cli.py
  tests/io/log/test_log_corruption.py tests/runtime/test_exactly_once.py
  tests/runtime/test_executor.py tests/test_demo_resume.py tests/test_cli.py
  tests/test_disk_errors.py tests/runtime/workers tests/observe/test_observe_cli.py
  tests/integration/test_kafka_group.py tests/integration/test_kafka_workers.py
)
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  .venv/bin/python -m pytest -q -p no:cacheprovider -o addopts="" "${tests[@]}" \
    > "$logs/run-$i.log" 2>&1
  rc=$?
  echo "run $i rc=$rc $(tail -1 "$logs/run-$i.log") load=$(cut -d' ' -f1 /proc/loadavg)" \
    "secs=$(( $(date +%s) - start )) log=$logs/run-$i.log"
done
