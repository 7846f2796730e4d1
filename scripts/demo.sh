#!/usr/bin/env bash
# demo.sh — the README's main job: run the bundled leaky program under the library and print
# what Interposer recorded. Usage: scripts/demo.sh <libdir>
set -euo pipefail
libdir=${1:-artifacts/lib}
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/artifacts/demo"
mkdir -p "$out"
gcc -O1 -g -pthread -o "$out/leaky" "$root/scripts/demo/leaky.c"
report="$out/leaky-live.txt"
rm -f "$report"
INTERPOSER_OPTIONS="dump_at_exit=$report" LD_PRELOAD="$libdir/libinterposer.so" "$out/leaky"
echo
echo "== $report: blocks still live at exit, with their allocation backtraces =="
echo "   (the leak scan that tells referenced from unreferenced blocks is issue 3)"
# The demo's own blocks first; the full file also lists libc's and the loader's.
awk -v RS= '/leaky\.c|\/leaky\)/' "$report" | head -60
echo "..."
tail -n 1 "$report"
