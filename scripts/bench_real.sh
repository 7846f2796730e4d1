#!/usr/bin/env bash
# bench_real.sh — what real programs pay for the library: wall time of sqlite3 and python3 runs
# under plain glibc, Interposer and gcc's liblsan, interleaved, medians and per-round ratios.
#
#   scripts/bench_real.sh <libdir>      (env: REAL_REPS=5, REAL_ROWS=200000, BENCH_LSAN,
#                                        REAL_COMPARE=<another libdir>: one more column)
#
# sqlite3: the CLI inserts REAL_ROWS rows in one transaction, counts them and builds an index
#   (~4.4 M mallocs from a few dozen call sites, each at its own depth: the case the walk memo
#   is for). python3: four threads build and round-trip JSON, then sqlite3 in memory. Run by the
#   interpreter's real path (not a pyenv shim, whose bash processes would each start the runtime).
# A configuration whose run fails (LSan cannot start sqlite3 on Debian 12: SIGSEGV) is reported
# with its exit status instead of a time. Prints markdown on stdout; raw runs in
# artifacts/bench/real-runs.tsv.
set -uo pipefail
libdir=$(cd "${1:-artifacts/lib}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/artifacts/bench"
mkdir -p "$out"
reps=${REAL_REPS:-5}
rows=${REAL_ROWS:-200000}
lsan=${BENCH_LSAN:-/usr/lib/x86_64-linux-gnu/liblsan.so.0}
# The median of the numbers on stdin, at full precision ("nan" when there are none).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

sqlite=$(command -v sqlite3) || { echo "bench_real.sh: sqlite3 not found" >&2; exit 2; }
python=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || { echo "bench_real.sh: python3 not found" >&2; exit 2; }
[ -f "$lsan" ] || { echo "bench_real.sh: $lsan not found; LSan column will be n/a" >&2; lsan=""; }

# The workloads' inputs.
python3 - "$rows" > "$out/real-sqlite.sql" <<'EOF'
import sys
rows = int(sys.argv[1])
print("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c REAL);")
print("BEGIN;")
for i in range(rows):
    print(f"INSERT INTO t(b, c) VALUES('row{i}-{'x' * (i % 50)}', {i * 0.5});")
print("COMMIT;")
print("SELECT count(*), sum(length(b)) FROM t;")
print("CREATE INDEX ib ON t(b);")
EOF
cat > "$out/real-python.py" <<'EOF'
import json, sqlite3, threading
def work():
    d = [{"a": i, "b": str(i) * 3} for i in range(20000)]
    assert json.loads(json.dumps(d)) == d
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
c = sqlite3.connect(":memory:")
c.execute("create table t(a, b)")
c.executemany("insert into t values(?, ?)", [(i, str(i)) for i in range(50000)])
print(c.execute("select count(*) from t").fetchone()[0])
EOF

configs=(glibc interposer)
[ -z "$lsan" ] || configs+=(lsan)
[ -z "${REAL_COMPARE:-}" ] || configs+=(compare)

# run <config> <workload>: prints "<seconds>" or "exit <status>"
run() {
    local pre=""
    case $1 in
        interposer) pre="$libdir/libinterposer.so" ;;
        lsan) pre="$lsan" ;;
        compare) pre="$(cd "$REAL_COMPARE" && pwd)/libinterposer.so" ;;
    esac
    rm -f "$out/real-sqlite.db"
    local cmd
    case $2 in
        sqlite) cmd=("$sqlite" "$out/real-sqlite.db") ; exec 3<"$out/real-sqlite.sql" ;;
        python) cmd=("$python" "$out/real-python.py") ; exec 3</dev/null ;;
    esac
    local start end rc
    start=$(date +%s.%N)
    env -u INTERPOSER_OPTIONS LD_PRELOAD="$pre" LSAN_OPTIONS=detect_leaks=0 timeout 300 "${cmd[@]}" <&3 >/dev/null 2>"$out/real-last-stderr.txt"
    rc=$?
    end=$(date +%s.%N)
    exec 3<&-
    if [ $rc -ne 0 ]; then echo "exit $rc"; else awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'; fi
}

echo "## Real programs: $reps rounds x (sqlite3, python3) x ${#configs[@]} configurations" >&2
runs="$out/real-runs.tsv"
: > "$runs"
for ((rep = 1; rep <= reps; rep++)); do
    for w in sqlite python; do
        for cfg in "${configs[@]}"; do
            printf '%s\t%s\t%s\t%s\n' "$w" "$cfg" "$rep" "$(run "$cfg" "$w")" >> "$runs"
        done
    done
    echo "round $rep done" >&2
done

med() { awk -F'\t' -v w="$1" -v c="$2" '$1 == w && $2 == c && $4 !~ /exit/ { print $4 }' "$runs" | median; }
failed() { awk -F'\t' -v w="$1" -v c="$2" '$1 == w && $2 == c && $4 ~ /exit/ { print $4; exit }' "$runs"; }
ratio() { # per-round median of <cfg a> / <cfg b>
    awk -F'\t' -v w="$1" -v a="$2" -v b="$3" '$1 == w && $4 !~ /exit/ { if ($2 == a) x[$3] = $4; if ($2 == b) y[$3] = $4 }
        END { for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r] }' "$runs" | median
}
cell() { local f; f=$(failed "$1" "$2"); if [ -n "$f" ]; then echo "fails ($f)"; else printf '%.2f' "$(med "$1" "$2")"; fi; }

echo
echo "### Real programs (wall seconds, median of $reps interleaved rounds; ratios: per-round medians)"
echo
header="| program | glibc | Interposer | Interposer/glibc |"
sep="|---|---:|---:|---:|"
[ -z "$lsan" ] || { header+=" LSan | LSan/glibc | Interposer/LSan |"; sep+="---:|---:|---:|"; }
[ -z "${REAL_COMPARE:-}" ] || { header+=" compare | compare/glibc |"; sep+="---:|---:|"; }
echo "$header"
echo "$sep"
for w in sqlite python; do
    label=$([ "$w" = sqlite ] && echo "sqlite3, $rows inserts + index" || echo "python3: 4 threads of json, sqlite3")
    line="| $label | $(cell "$w" glibc) | $(cell "$w" interposer) | $(printf '%.2f' "$(ratio "$w" interposer glibc)")× |"
    if [ -n "$lsan" ]; then
        if [ -n "$(failed "$w" lsan)" ]; then
            line+=" $(cell "$w" lsan) | – | – |"
        else
            line+=" $(cell "$w" lsan) | $(printf '%.2f' "$(ratio "$w" lsan glibc)")× | $(printf '%.2f' "$(ratio "$w" interposer lsan)")× |"
        fi
    fi
    [ -z "${REAL_COMPARE:-}" ] || line+=" $(cell "$w" compare) | $(printf '%.2f' "$(ratio "$w" compare glibc)")× |"
    echo "$line"
done
