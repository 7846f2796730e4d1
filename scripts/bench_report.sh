#!/usr/bin/env bash
# bench_report.sh — how long a big report takes to symbolize and write (issue 5: "a 10,000-block
# report must take seconds, not minutes"), and what the process-wide image cache saves on later
# scans of the same process.
#
#   scripts/bench_report.sh <libdir>        (env: REPORT_BLOCKS=10000 REPORT_SCANS=3 REPORT_RUNS=3)
#
# reportheap leaks REPORT_BLOCKS blocks (half through strdup, 1-12 frames deep), then scans
# REPORT_SCANS times. Per scan we take the "report" phase of verbosity=2's timing line (every
# frame symbolized with function, module and file:line, the text written); medians over
# REPORT_RUNS processes. Every report must list all the blocks (max_reported=0).
set -euo pipefail
libdir=$(cd "${1:-artifacts/lib}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/artifacts/bench"
mkdir -p "$out"
blocks=${REPORT_BLOCKS:-10000}
scans=${REPORT_SCANS:-3}
runs=${REPORT_RUNS:-3}
gcc -O1 -g -o "$out/reportheap" "$root/scripts/bench/reportheap.c"

. "$root/scripts/bench/common.sh"

echo "## Report: $blocks leaked blocks, $scans scans per process, $runs processes" >&2
: > "$out/report-times.tsv"
for run in $(seq "$runs"); do
    INTERPOSER_OPTIONS="report_path=$out/report-bench.txt:verbosity=2:max_reported=0" \
        LD_PRELOAD="$libdir/libinterposer.so" "$out/reportheap" "$blocks" "$scans" > /dev/null 2> "$out/report-bench.err"
    listed=$(grep -c '^unreferenced object' "$out/report-bench.txt")
    if [ "$listed" -ne "$blocks" ]; then
        echo "bench_report.sh: the report lists $listed blocks, not $blocks" >&2
        exit 1
    fi
    grep -o 'report [0-9.]* ms' "$out/report-bench.err" | awk -v r="$run" '{ print r "\t" NR "\t" $2 }' >> "$out/report-times.tsv"
done
lines=$(grep -cE ' [^ ]+:[0-9]+$' "$out/report-bench.txt" || true)
echo
echo "### Symbolizing and writing a report of $blocks blocks (ms, median of $runs processes)"
echo
echo "| scan in the process | report phase (ms) |"
echo "|---|---:|"
for k in $(seq "$scans"); do
    echo "| $k | $(awk -v k="$k" '$2 == k { print $3 }' "$out/report-times.tsv" | median) |"
done
echo
echo "Frames with file:line in the last report: $lines."
