#!/usr/bin/env bash
# bench_scan.sh — the leak scan on a big live heap (issue 3's performance targets), side by side
# with gcc's LeakSanitizer (liblsan.so.0) on the same program in the same run.
#
#   scripts/bench_scan.sh <libdir>        (env: SCAN_BLOCKS=2000000 SCAN_LEAKED=1000 SCAN_THREADS=16 SCAN_CHECKS=5)
#
# scanheap builds ~2M linked blocks (~500 MB), leaks SCAN_LEAKED more, parks SCAN_THREADS threads
# in read(), then runs SCAN_CHECKS leak checks: interposer_scan() under Interposer,
# __lsan_do_recoverable_leak_check() under liblsan. Per check we take the wall time; Interposer's
# report adds the time the world stayed stopped, the time stopping it took, and the bytes it
# scanned. Results must be exact: SCAN_LEAKED blocks reported, nothing else.
set -euo pipefail
libdir=$(cd "${1:-artifacts/lib}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/artifacts/bench"
mkdir -p "$out"
blocks=${SCAN_BLOCKS:-2000000}
leaked=${SCAN_LEAKED:-1000}
threads=${SCAN_THREADS:-16}
checks=${SCAN_CHECKS:-5}
lsan=$(gcc -print-file-name=liblsan.so.0)
gcc -O2 -g -pthread -o "$out/scanheap" "$root/scripts/bench/scanheap.c" -ldl

echo "## Leak scan: $blocks live blocks (+$leaked leaked), $threads blocked threads, $checks checks each" >&2

# Interposer
rm -f "$out"/scan-report.txt*
SCANHEAP_REPORT="$out/scan-report.txt" INTERPOSER_OPTIONS="report_path=$out/scan-report.txt" \
    LD_PRELOAD="$libdir/libinterposer.so" "$out/scanheap" "$blocks" "$leaked" "$threads" "$checks" > "$out/scan-interposer.txt"
# LeakSanitizer (its report goes to stderr; exitcode=0: the at-exit check must not fail the run)
if [ -f "$lsan" ]; then
    LSAN_OPTIONS="exitcode=0:detect_leaks=1" LD_PRELOAD="$lsan" "$out/scanheap" "$blocks" "$leaked" "$threads" "$checks" \
        > "$out/scan-lsan.txt" 2> "$out/scan-lsan.err" || true
fi

. "$root/scripts/bench/common.sh"

i_wall=$(sed -n 's/.*wall_ms=\([0-9.]*\).*/\1/p' "$out/scan-interposer.txt" | median)
i_stop=$(cat "$out"/scan-report.txt.* | sed -n 's/.*world stopped \([0-9.]*\) ms.*/\1/p' | median)
i_stopping=$(cat "$out"/scan-report.txt.* | sed -n 's/.*(stopping it \([0-9.]*\) ms).*/\1/p' | median)
i_bytes=$(sed -n 's/.*, \([0-9]*\) bytes scanned.*/\1/p' "$out/scan-report.txt.0")
i_found=$(for f in "$out"/scan-report.txt.*; do sed -n 's/^summary: \([0-9]*\) unreferenced.*/\1/p' "$f"; done | sort -u | tr '\n' ' ')
i_stopped=$(sed -n 's/.*; \([0-9]*\) threads stopped.*/\1/p' "$out/scan-report.txt.0")
l_wall=$(sed -n 's/.*wall_ms=\([0-9.]*\).*/\1/p' "$out/scan-lsan.txt" 2>/dev/null | median)
l_found=$(sed -n 's/.*leaked in \([0-9]*\) allocation.*/\1/p' "$out/scan-lsan.err" 2>/dev/null | sort -u | tr '\n' ' ')

awk -v iw="$i_wall" -v lw="$l_wall" -v is="$i_stop" -v ist="$i_stopping" -v ib="$i_bytes" -v if_="$i_found" -v lf="$l_found" \
    -v n="$blocks" -v L="$leaked" -v T="$threads" -v ts="$i_stopped" 'BEGIN {
    printf "| | Interposer | LeakSanitizer |\n|---|---:|---:|\n"
    printf "| leak check, wall time (median) | %.0f ms | %.0f ms |\n", iw, lw
    printf "| world stopped (median) | %.0f ms | whole check |\n", is
    printf "| stopping %d threads (median) | %.2f ms | n/a |\n", ts, ist
    printf "| scanned | %.0f MB | |\n", ib / 1e6
    printf "| throughput (scanned MB / wall s) | %.0f MB/s | %.0f MB/s (same bytes) |\n", ib / 1e6 / (iw / 1e3), ib / 1e6 / (lw / 1e3)
    printf "| blocks reported (expected %d) | %s | %s |\n", L, if_, lf
}'
