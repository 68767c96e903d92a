#!/usr/bin/env bash
# npm run test:busy: the whole suite (npm test) RUNS times in a row (default 3)
# while a busy loop keeps one core (core 0) fully loaded, as on a busy CI
# machine. Stops at the first failing run, with its exit status. Prints each
# run's duration, result and tap totals; each run's full output is kept in
# BUSY_LOG_DIR (default: a new directory under $TMPDIR).
#
# The busy loop is this script's own child, stopped by its pid when the script
# ends however it ends (trap on EXIT; INT and TERM exit through it). Should the
# script itself be SIGKILLed, the loop notices that its parent changed and exits.
set -uo pipefail

runs=${RUNS:-3}
if ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then
  echo "test-busy: RUNS must be a positive integer (got '$runs')" >&2
  exit 2
fi
command -v taskset >/dev/null || { echo 'test-busy: taskset (util-linux) is required' >&2; exit 2; }
cd "$(dirname "$0")/.."
logs=${BUSY_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/privydrop-test-busy.XXXXXX")}
mkdir -p "$logs"

busy=''
stop_busy () {
  if [ -n "$busy" ]; then
    kill "$busy" 2>/dev/null
    wait "$busy" 2>/dev/null
    busy=''
  fi
}
trap stop_busy EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# for(;;){} on core 0; every 2^24 turns it checks that its parent is still this script.
taskset -c 0 node -e 'const parent = process.ppid; for (let i = 1; ; i++) if ((i & 0xffffff) === 0 && process.ppid !== parent) process.exit(0)' &
busy=$!
echo "test-busy: busy loop pid $busy pinned to core 0; $runs run(s) of npm test; logs in $logs"

summary=()
status=0
for ((run = 1; run <= runs; run++)); do
  log="$logs/run-$run.log"
  echo "test-busy: run $run/$runs started $(date -u +%H:%M:%SZ)"
  started=$(date +%s)
  npm test 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  took=$(($(date +%s) - started))
  result=pass
  [ "$status" -eq 0 ] || result="FAIL (exit $status)"
  # tap's totals: the unit/integration suite, then the browser suite.
  totals=$(grep -aE '^# \{ total|^Asserts:|^Suites:' "$log" | sed 's/\x1b\[[0-9;]*m//g' | tr -s ' ' | paste -sd ';' -)
  line="run $run/$runs: $result in $((took / 60)) min $((took % 60)) s${totals:+ [$totals]}"
  summary+=("$line")
  echo "test-busy: $line"
  [ "$status" -eq 0 ] || break
done

echo 'test-busy: summary'
printf '  %s\n' "${summary[@]}"
if [ "$status" -ne 0 ]; then
  echo "test-busy: stopped at the first failure; its output: $log" >&2
  exit "$status"
fi
