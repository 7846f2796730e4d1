#!/usr/bin/env bash
# bench.sh — allocation-hook cost of Interposer next to plain glibc and gcc's liblsan.
#
#   bash scripts/bench.sh <libdir>          (build.cake's Bench target passes artifacts/lib)
#
# Builds the programs in scripts/bench/ into artifacts/bench/, then:
#   1. checks: the churn under Interposer with verbosity=2 (must exit 0 and print its statistics),
#      and the backtrace depth each tool records for the churn's malloc (from a leak report);
#   2. churn timings: every workload under every configuration, BENCH_REPS rounds (default 5)
#      interleaved (glibc, interposer, lsan, interposer unwinder=libunwind, unwinder=fp,
#      glibc, ...), medians reported;
#   3. peak RSS per live block: scripts/bench/live.c, glibc vs Interposer vs LSan;
#   4. process start-up and exit: scripts/bench/startup.c spawning /bin/true;
#   5. cross-thread frees: scripts/bench/handoff.c, producers malloc and consumers free.
# Prints markdown tables for scripts/bench/README.md on stdout; every run's raw result goes to
# artifacts/bench/runs.tsv. About 2 minutes on a 2-core VM.
#
# Knobs (environment): BENCH_REPS (5), BENCH_ITER1 (2000000 pairs, 1 thread),
# BENCH_ITER8 (400000 pairs per thread, 8 threads), BENCH_LIVE (1000000 blocks),
# BENCH_HANDOFF (200000 items per producer/consumer pair),
# BENCH_LSAN (/usr/lib/x86_64-linux-gnu/liblsan.so.0), BENCH_LABEL (what the library was built
# from, for the machine line; default: git describe of this checkout), BENCH_COMPARE (a second
# library directory, e.g. an experimental build: its default configuration becomes one more
# interleaved column and one more row in the RSS table).
set -uo pipefail

libdir=${1:-artifacts/lib}
root=$(cd "$(dirname "$0")/.." && pwd)
libdir=$(cd "$libdir" 2>/dev/null && pwd) || { echo "bench.sh: no such libdir: ${1:-artifacts/lib}" >&2; exit 2; }
[ -f "$libdir/libinterposer.so" ] && [ -f "$libdir/libinterposer_core.so" ] ||
    { echo "bench.sh: $libdir/libinterposer.so or libinterposer_core.so missing (build first: ./build.sh --target=Build)" >&2; exit 2; }
lsan=${BENCH_LSAN:-/usr/lib/x86_64-linux-gnu/liblsan.so.0}
have_lsan=1
[ -f "$lsan" ] || { echo "bench.sh: $lsan not found; LSan columns will be n/a" >&2; have_lsan=0; }

reps=${BENCH_REPS:-5}
iter1=${BENCH_ITER1:-2000000}
iter8=${BENCH_ITER8:-400000}
live_blocks=${BENCH_LIVE:-1000000}

src="$root/scripts/bench"
out="$root/artifacts/bench"
mkdir -p "$out/nofp" "$out/fp"
runs="$out/runs.tsv"
: > "$runs"

# Run a private copy of the library: a rebuild that rewrites <libdir> in place while the bench
# runs would otherwise kill the traced programs with SIGBUS (their mapped file was truncated).
# The shim loads libinterposer_core.so from its own directory, so the pair is copied together.
# Each file is copied under a temporary name and renamed, for the same reason.
snapshot() { # <from dir> <to dir>
    local f
    mkdir -p "$2" || return 1
    for f in libinterposer.so libinterposer_core.so; do
        cp "$1/$f" "$2/.$f.$$" && mv -f "$2/.$f.$$" "$2/$f" || return 1
    done
}
snapshot "$libdir" "$out/lib" || { echo "bench.sh: cannot copy the library from $libdir" >&2; exit 2; }
shim="$out/lib/libinterposer.so"
cmp_shim=""
if [ -n "${BENCH_COMPARE:-}" ]; then
    snapshot "$BENCH_COMPARE" "$out/lib-compare" ||
        { echo "bench.sh: cannot copy the library from BENCH_COMPARE=$BENCH_COMPARE" >&2; exit 2; }
    cmp_shim="$out/lib-compare/libinterposer.so"
fi

# ---- build -----------------------------------------------------------------------------------
# The executable keeps frame pointers (as LSan's fast unwinder wants); libbenchchain.so is built
# twice: without frame pointers (the realistic case: Debian's libc and most distro libraries)
# and with them (every tool can walk the whole stack by frame pointers).
cflags=(-O2 -g -fno-optimize-sibling-calls -Wall -Wextra)
build() {
    gcc "${cflags[@]}" -fPIC -shared -fomit-frame-pointer -o "$out/nofp/libbenchchain.so" "$src/chain_lib.c" &&
    gcc "${cflags[@]}" -fPIC -shared -fno-omit-frame-pointer -o "$out/fp/libbenchchain.so" "$src/chain_lib.c" &&
    gcc "${cflags[@]}" -fno-omit-frame-pointer -pthread -o "$out/nofp/churn" "$src/churn.c" \
        -L"$out/nofp" -lbenchchain -Wl,-rpath,'$ORIGIN' &&
    cp "$out/nofp/churn" "$out/fp/churn" &&   # same binary; $ORIGIN picks the lib next to it
    gcc "${cflags[@]}" -fno-omit-frame-pointer -o "$out/live" "$src/live.c" &&
    gcc "${cflags[@]}" -o "$out/startup" "$src/startup.c" &&
    gcc "${cflags[@]}" -pthread -o "$out/handoff" "$src/handoff.c"
}
build || { echo "bench.sh: build failed" >&2; exit 1; }

# ---- configurations --------------------------------------------------------------------------
configs=(glibc interposer lsan ip_libunwind ip_fp)
[ "$have_lsan" = 1 ] || configs=(glibc interposer ip_libunwind ip_fp)
[ -z "$cmp_shim" ] || configs+=(ip_compare)

# run_cfg <config> <extra env...> -- <command...>: runs command under that configuration with a
# clean environment for the tools' own variables, killed after 300 s. (timeout runs outside the
# preload: only the benchmark program is traced.)
run_cfg() {
    local cfg=$1; shift
    local extra=()
    while [ "$1" != "--" ]; do extra+=("$1"); shift; done
    shift
    local base=(timeout 300 env -u LD_PRELOAD -u INTERPOSER_OPTIONS -u LSAN_OPTIONS -u ASAN_OPTIONS)
    case $cfg in
        glibc)        "${base[@]}" "${extra[@]}" "$@" ;;
        interposer)   "${base[@]}" LD_PRELOAD="$shim" "${extra[@]}" "$@" ;;
        ip_libunwind) "${base[@]}" LD_PRELOAD="$shim" INTERPOSER_OPTIONS=unwinder=libunwind "${extra[@]}" "$@" ;;
        ip_fp)        "${base[@]}" LD_PRELOAD="$shim" INTERPOSER_OPTIONS=unwinder=fp "${extra[@]}" "$@" ;;
        ip_compare)   "${base[@]}" LD_PRELOAD="$cmp_shim" "${extra[@]}" "$@" ;;
        lsan)         "${base[@]}" LD_PRELOAD="$lsan" LSAN_OPTIONS=detect_leaks=0 "${extra[@]}" "$@" ;;
    esac
}

median() { # values on stdin (one per line; "nan" ignored) -> median, or nan
    grep -v nan | sort -g | awk '{v[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}

facts="nproc=$(nproc), CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(ldd --version 2>/dev/null | head -1 | sed 's/^ldd //'), gcc $(gcc -dumpfullversion), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
built="${BENCH_LABEL:-$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)}, library built $(date -u -r "$libdir/libinterposer_core.so" '+%H:%M UTC')"
start_s=$SECONDS

# workload key | directory | mode | threads | iterations per thread | label
workloads=(
    "deep1|nofp|deep|1|$iter1|deep, 1 thread"
    "deep8|nofp|deep|8|$iter8|deep, 8 threads"
    "shallow1|nofp|shallow|1|$iter1|shallow, 1 thread"
    "shallow8|nofp|shallow|8|$iter8|shallow, 8 threads"
    "deepfp1|fp|deep|1|$iter1|deep, all frame pointers, 1 thread"
    "deepfp8|fp|deep|8|$iter8|deep, all frame pointers, 8 threads"
)

# ---- 1. checks -------------------------------------------------------------------------------
echo "## Checks" >&2
check_ok=1
for t in 1 8; do
    log="$out/verbosity2-$t.txt"
    run_cfg interposer INTERPOSER_OPTIONS=verbosity=2 -- "$out/nofp/churn" deep "$t" 100000 >"$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && grep -q '^interposer: stacks:' "$log"; then
        echo "verbosity=2, deep churn, $t thread(s): exit 0; $(grep '^interposer: stacks:' "$log" | sed 's/^interposer: //')" >&2
    else
        echo "verbosity=2, deep churn, $t thread(s): FAILED (exit $rc), see $log" >&2
        check_ok=0
    fi
done

# Frames recorded for the churn's malloc, from each tool's report of the blocks `keep` leaks
# (with threads, only the created threads churn, so any such block is theirs; 2 threads stand in
# for 8). Interposer: frames under the first dumped block whose stack contains lib_step (frame 0
# is malloc's caller). LSan: frames of the first such leak report minus #0 (its interceptor).
declare -A depth
depth_check() { # <key> <variant dir> <mode> <threads>
    local key=$1 dir=$2 mode=$3 threads=$4 cfg f opts
    [ "$threads" -gt 1 ] && threads=2
    local ipcfgs=(interposer ip_libunwind ip_fp)
    [ -z "$cmp_shim" ] || ipcfgs+=(ip_compare)
    for cfg in "${ipcfgs[@]}"; do
        f="$out/dump-$key-$cfg.txt"
        rm -f "$f"
        opts="dump_at_exit=$f"
        case $cfg in ip_libunwind) opts+=":unwinder=libunwind" ;; ip_fp) opts+=":unwinder=fp" ;; esac
        run_cfg "$cfg" INTERPOSER_OPTIONS="$opts" -- "$dir/churn" "$mode" "$threads" 1000 keep >/dev/null 2>&1
        depth[$key,$cfg]=$(awk '/^live block/ { if (b ~ /lib_step/) exit; b = "" } { b = b $0 "\n" }
                                END { if (b ~ /lib_step/) printf "%s", b }' "$f" 2>/dev/null | grep -c '\[<0x')
    done
    if [ "$have_lsan" = 1 ]; then
        f="$out/lsan-$key.txt"
        run_cfg lsan LSAN_OPTIONS=detect_leaks=1:exitcode=0 -- "$dir/churn" "$mode" "$threads" 1000 keep >"$f" 2>&1
        depth[$key,lsan]=$(awk -v RS= '/allocated from:/ && /lib_step/ {print; exit}' "$f" | grep -c '^ *#[0-9]' | awk '{print $1 - 1}')
    fi
}

for w in "${workloads[@]}"; do
    IFS='|' read -r key dir mode threads iters label <<<"$w"
    depth_check "$key" "$out/$dir" "$mode" "$threads"
    line="frames recorded, $label:"
    for cfg in "${configs[@]}"; do [ "$cfg" = glibc ] || line+=" $cfg=${depth[$key,$cfg]:-?}"; done
    echo "$line" >&2
done

# ---- 2. churn --------------------------------------------------------------------------------
echo "## Churn: $reps rounds x ${#workloads[@]} workloads x ${#configs[@]} configurations" >&2
for ((rep = 1; rep <= reps; rep++)); do
    for w in "${workloads[@]}"; do
        IFS='|' read -r key dir mode threads iters label <<<"$w"
        for cfg in "${configs[@]}"; do
            line=$(run_cfg "$cfg" -- "$out/$dir/churn" "$mode" "$threads" "$iters" 2>"$out/last-stderr.txt")
            rc=$?
            ns=$(sed -n 's/.*ns_per_pair=\([0-9.]*\).*/\1/p' <<<"$line")
            mp=$(sed -n 's/.*mpairs_per_s=\([0-9.]*\).*/\1/p' <<<"$line")
            if [ $rc -ne 0 ] || [ -z "$ns" ]; then
                echo "run failed: $key $cfg round $rep (exit $rc): $(head -c 300 "$out/last-stderr.txt")" >&2
                ns=nan mp=nan
            fi
            printf '%s\t%s\t%s\t%s\t%s\n' "$key" "$cfg" "$rep" "$ns" "$mp" >>"$runs"
        done
    done
    echo "round $rep done ($((SECONDS - start_s)) s)" >&2
done

med() { # <key> <cfg> <column: 4 = ns, 5 = Mpairs/s>
    awk -F'\t' -v k="$1" -v c="$2" -v col="$3" '$1==k && $2==c {print $col}' "$runs" | median
}
best() { # <key> <cfg>: the fastest run's ns per pair (the least disturbed by other load)
    awk -F'\t' -v k="$1" -v c="$2" '$1==k && $2==c && $4!="nan" {print $4}' "$runs" | sort -g | head -1
}
roundratio() { # <key> <cfg a> <cfg b>: median over rounds of a/b within the same round (the two ran
    # seconds apart, so a slow phase of this shared machine hits both)
    awk -F'\t' -v k="$1" -v a="$2" -v b="$3" '$1==k && $4!="nan" { if ($2==a) x[$3]=$4; if ($2==b) y[$3]=$4 }
        END { for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r] }' "$runs" | median
}
rr() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "n/a"; else printf "%.2f×", v }'; }
fmt() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "n/a"; else printf "%.1f", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f×", a / b }'; }

# Sections 3-5 run each tool with its defaults only: glibc, Interposer, LSan, and the compare build.
tool_configs=(glibc interposer lsan)
[ "$have_lsan" = 1 ] || tool_configs=(glibc interposer)
[ -z "$cmp_shim" ] || tool_configs+=(ip_compare)

# ---- 3. peak RSS per live block --------------------------------------------------------------
rss_configs=("${tool_configs[@]}")
declare -A rss fill
echo "## Peak RSS: $live_blocks live blocks of 32 bytes, 3 rounds" >&2
for n in 0 "$live_blocks"; do
    for cfg in "${rss_configs[@]}"; do
        vals="" times=""
        for r in 1 2 3; do
            line=$(run_cfg "$cfg" -- "$out/live" "$n" 32 2>/dev/null)
            v=$(sed -n 's/.*maxrss_kb=\([0-9]*\).*/\1/p' <<<"$line")
            t=$(sed -n 's/.*ns_per_alloc=\([0-9.]*\).*/\1/p' <<<"$line")
            vals+="${v:-nan}"$'\n'
            times+="${t:-nan}"$'\n'
            printf 'live%s\t%s\t%s\t%s\t%s\n' "$n" "$cfg" "$r" "${v:-nan}" "${t:-nan}" >>"$runs"
        done
        rss[$cfg,$n]=$(printf '%s' "$vals" | median)
        fill[$cfg,$n]=$(printf '%s' "$times" | median)
    done
done

# ---- 4. process start-up ---------------------------------------------------------------------
# /bin/true, spawned one after the other by a parent that loads nothing (as a shell or make does),
# each child with only the configuration's variables; BENCH_STARTUP spawns per round, 3 rounds
# interleaved.
startup_n=${BENCH_STARTUP:-40}
start_configs=("${tool_configs[@]}")
declare -A startup_ms
echo "## Start-up: /bin/true x $startup_n, 3 rounds" >&2
for r in 1 2 3; do
    for cfg in "${start_configs[@]}"; do
        case $cfg in
            glibc)      vars=() ;;
            interposer) vars=("LD_PRELOAD=$shim") ;;
            ip_compare) vars=("LD_PRELOAD=$cmp_shim") ;;
            lsan)       vars=("LD_PRELOAD=$lsan" "LSAN_OPTIONS=detect_leaks=0") ;;
        esac
        line=$(env -u LD_PRELOAD "$out/startup" "$startup_n" "${vars[@]}" -- /bin/true 2>/dev/null)
        v=$(sed -n 's/.*ms_median=\([0-9.]*\).*/\1/p' <<<"$line")
        printf 'startup\t%s\t%s\t%s\n' "$cfg" "$r" "${v:-nan}" >>"$runs"
        startup_ms[$cfg]+="${v:-nan}"$'\n'
    done
done

# ---- 5. cross-thread frees -------------------------------------------------------------------
# One producer/consumer pair (handoff.c, two threads on the two cores): every block is freed by
# another thread than the one that allocated it. BENCH_REPS rounds interleaved, ns per item.
handoff_n=${BENCH_HANDOFF:-200000}
handoff_configs=("${tool_configs[@]}")
declare -A handoff_ns
echo "## Cross-thread frees: 1 producer/consumer pair x $handoff_n items, $reps rounds" >&2
for r in $(seq 1 "$reps"); do
    for pairs in 1; do
        for cfg in "${handoff_configs[@]}"; do
            line=$(run_cfg "$cfg" -- "$out/handoff" "$pairs" "$handoff_n" 2>/dev/null)
            v=$(sed -n 's/.*ns_per_item=\([0-9.]*\).*/\1/p' <<<"$line")
            printf 'handoff%s\t%s\t%s\t%s\n' "$pairs" "$cfg" "$r" "${v:-nan}" >>"$runs"
            handoff_ns[$cfg,$pairs]+="${v:-nan}"$'\n'
        done
    done
done

# ---- tables ----------------------------------------------------------------------------------
elapsed=$((SECONDS - start_s))
echo "Machine: $facts; load average at end: $(cut -d' ' -f1-3 /proc/loadavg); bench wall time ${elapsed} s. Interposer: $built."
echo
echo "### malloc+free pair cost (ns, median of $reps interleaved runs; 8 threads: wall time / pairs per thread)"
echo
echo "| workload | frames recorded (Interposer / LSan) | glibc | Interposer | LSan | Interposer/glibc | LSan/glibc | **Interposer/LSan** | Interposer/LSan, per-round median | Interposer/LSan, best runs | Interposer unwinder=libunwind | Interposer unwinder=fp |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for w in "${workloads[@]}"; do
    IFS='|' read -r key dir mode threads iters label <<<"$w"
    g=$(med "$key" glibc 4); i=$(med "$key" interposer 4); l=$(med "$key" lsan 4)
    u=$(med "$key" ip_libunwind 4); f=$(med "$key" ip_fp 4)
    echo "| $label | ${depth[$key,interposer]:-?} / ${depth[$key,lsan]:-n/a} | $(fmt "$g") | $(fmt "$i") | $(fmt "$l") | $(ratio "$i" "$g") | $(ratio "$l" "$g") | **$(ratio "$i" "$l")** | $(rr "$(roundratio "$key" interposer lsan)") | $(ratio "$(best "$key" interposer)" "$(best "$key" lsan)") | $(fmt "$u") | $(fmt "$f") |"
done
echo
line="Frames recorded (malloc's caller to the outermost frame; max_frames=16) with unwinder=libunwind / unwinder=fp:"
for w in "${workloads[@]}"; do
    IFS='|' read -r key dir mode threads iters label <<<"$w"
    line+=" $label ${depth[$key,ip_libunwind]:-?} / ${depth[$key,ip_fp]:-?};"
done
echo "${line%;}."
if [ -n "$cmp_shim" ]; then
    echo
    echo "#### BENCH_COMPARE=$BENCH_COMPARE (default options), same rounds"
    echo
    echo "| workload | frames recorded | Interposer | compare | compare/Interposer | compare/Interposer, per-round median | compare/glibc | **compare/LSan** | compare/LSan, best runs |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for w in "${workloads[@]}"; do
        IFS='|' read -r key dir mode threads iters label <<<"$w"
        g=$(med "$key" glibc 4); i=$(med "$key" interposer 4); l=$(med "$key" lsan 4); c=$(med "$key" ip_compare 4)
        echo "| $label | ${depth[$key,ip_compare]:-?} | $(fmt "$i") | $(fmt "$c") | $(ratio "$c" "$i") | $(rr "$(roundratio "$key" ip_compare interposer)") | $(ratio "$c" "$g") | **$(ratio "$c" "$l")** | $(ratio "$(best "$key" ip_compare)" "$(best "$key" lsan)") |"
    done
fi
echo
echo "### 8 threads: aggregate throughput (million pairs/s, median)"
echo
echo "| workload | glibc | Interposer | LSan | Interposer unwinder=libunwind | Interposer unwinder=fp |$([ -n "$cmp_shim" ] && echo " compare |")"
echo "|---|---:|---:|---:|---:|---:|$([ -n "$cmp_shim" ] && echo "---:|")"
for w in "${workloads[@]}"; do
    IFS='|' read -r key dir mode threads iters label <<<"$w"
    [ "$threads" = 8 ] || continue
    row="| $label"
    for cfg in glibc interposer lsan ip_libunwind ip_fp $([ -n "$cmp_shim" ] && echo ip_compare); do
        row+=" | $(awk -v v="$(med "$key" "$cfg" 5)" 'BEGIN { if (v == "nan" || v == "") print "n/a"; else printf "%.2f", v }')"
    done
    echo "$row |"
done
echo
echo "### Peak RSS per live block ($live_blocks blocks of 32 bytes, 12 frames deep, 1000 distinct stacks; median of 3)"
echo
echo "| configuration | peak RSS, 0 blocks (MiB) | peak RSS, $live_blocks blocks (MiB) | (RSS_x − RSS_glibc) / L (bytes per block) | marginal: growth_x − growth_glibc, / L (bytes per block) | fill loop, ns per malloc |"
echo "|---|---:|---:|---:|---:|---:|"
for cfg in "${rss_configs[@]}"; do
    awk -v z="${rss[$cfg,0]}" -v n="${rss[$cfg,$live_blocks]}" -v gz="${rss[glibc,0]}" -v gn="${rss[glibc,$live_blocks]}" \
        -v L="$live_blocks" -v name="$cfg" -v t="${fill[$cfg,$live_blocks]}" 'BEGIN {
        printf "| %s | %.1f | %.1f | %.1f | %.1f | %.0f |\n", name, z / 1024, n / 1024, (n - gn) * 1024 / L, ((n - z) - (gn - gz)) * 1024 / L, t }'
done
echo
echo "### Process start-up and exit (/bin/true spawned $startup_n times by a parent that loads nothing; ms, median of 3 rounds of per-spawn medians)"
echo
echo "| configuration | ms per process | minus glibc |"
echo "|---|---:|---:|"
sg=$(printf '%s' "${startup_ms[glibc]}" | median)
for cfg in "${start_configs[@]}"; do
    v=$(printf '%s' "${startup_ms[$cfg]}" | median)
    awk -v v="$v" -v g="$sg" -v name="$cfg" 'BEGIN { if (v == "nan") printf "| %s | n/a | n/a |\n", name; else printf "| %s | %.2f | %.2f |\n", name, v, v - g }'
done
echo
echo "### Cross-thread frees (handoff.c: one thread mallocs 16..512 bytes in batches of 64, another frees them; ns per item, median of $reps interleaved rounds)"
echo
echo "| configuration | ns per item | /glibc | per-round median, /glibc |"
echo "|---|---:|---:|---:|"
g1=$(printf '%s' "${handoff_ns[glibc,1]}" | median)
for cfg in "${handoff_configs[@]}"; do
    v1=$(printf '%s' "${handoff_ns[$cfg,1]}" | median)
    # per-round ratio: the r-th run of cfg against the r-th run of glibc
    pr=$(paste <(printf '%s' "${handoff_ns[$cfg,1]}") <(printf '%s' "${handoff_ns[glibc,1]}") |
         awk '$1 != "nan" && $2 != "nan" && $2 > 0 { print $1 / $2 }' | median)
    awk -v n="$cfg" -v a="$v1" -v r1="$(ratio "$v1" "$g1")" -v pr="$pr" \
        'BEGIN { printf "| %s | %s | %s | %s |\n", n, (a == "nan" ? "n/a" : sprintf("%.0f", a)), r1, (pr == "nan" ? "n/a" : sprintf("%.2f×", pr)) }'
done
echo
[ "$check_ok" = 1 ] && echo "Checks: churn under INTERPOSER_OPTIONS=verbosity=2 exited 0 (1 and 8 threads)." \
                    || echo "Checks: FAILED, see artifacts/bench/verbosity2-*.txt"
echo "Raw runs: artifacts/bench/runs.tsv"
[ "$check_ok" = 1 ]
