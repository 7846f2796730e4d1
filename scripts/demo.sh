#!/usr/bin/env bash
# demo.sh — the README's main job: run the bundled leaky program under the library, send it
# SIGUSR2 as a user would, and print the leak report it writes. Usage: scripts/demo.sh <libdir>
set -euo pipefail
libdir=${1:-artifacts/lib}
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/artifacts/demo"
mkdir -p "$out"
gcc -O1 -g -pthread -o "$out/leaky" "$root/scripts/demo/leaky.c"
rm -f "$out"/leaks.*.txt "$out/leaky.out"

INTERPOSER_OPTIONS="report_path=$out/leaks.%p.txt" LD_PRELOAD="$libdir/libinterposer.so" "$out/leaky" > "$out/leaky.out" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q ready "$out/leaky.out" 2>/dev/null && break; sleep 0.1; done
cat "$out/leaky.out"
report="$out/leaks.$pid.txt"

echo "\$ kill -USR2 $pid"
kill -USR2 "$pid"
for _ in $(seq 1 300); do [ -s "$report" ] && break; sleep 0.1; done
[ -s "$report" ] || { echo "demo: no report appeared at $report" >&2; exit 1; }
kill "$pid"
wait "$pid" 2>/dev/null || true
trap - EXIT

echo "\$ cat $report"
cat "$report"
