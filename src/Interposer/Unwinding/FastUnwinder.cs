// FastUnwinder: bounded, allocation-free x86-64 stack walk driven by .eh_frame CFI.
//
// Why: Debian's libc and libstdc++ are built without frame pointers, so a frame-pointer walk from a
// malloc hook sees ~2 frames; libunwind's unw_backtrace sees the real stack but costs ~166 ns per
// call. This walk reads the same CFI as libunwind but caches one 32-bit rule per return address
// (RuleCache), so a warm walk is a hash probe and one or two loads per frame.
//
// THE WALK
//  State per frame: pc (a return address), sp (the CFA of the frame that returned to pc, i.e. the
//  caller's rsp after the return) and bp (the caller's rbp). For each frame:
//    rule = rule for pc - 1   (the call instruction: a call may be the last instruction of a
//                              function, so pc itself can belong to the next function); the
//                              cache is keyed by pc itself, which saves a subtraction on a hit
//    cfa  = (rule says rbp ? bp : sp) + offset
//    ra   = *(cfa - 8*RaSlot);  bp = *(cfa - 8*RbpSlot) if rbp was saved
//    sp   = cfa; pc = ra
//  It stops at: maxFrames; a PC with no usable CFI (UnwindRule.Stop, which includes signal
//  frames and PLT-style CFA expressions); an undefined return address (UnwindRule.Outermost:
//  _start, clone, clone3); a load outside [stackLo, stackHi) or unaligned; a CFA that does not
//  increase; a return address of 0.
//
// INVARIANTS
//  - Memory safety: the only loads from the walked stack go through the bounds check below (the
//    whole 8-byte word inside [stackLo, stackHi), 8-byte aligned). .eh_frame reads on a miss are
//    of mapped module memory that _dl_find_object reported, bounded by the module's mapping.
//  - No GC allocation, no strings, no locks, no exceptions on any path; a miss uses a few hundred
//    bytes of stack (CfiInterpreter's remember_state rows, the dl_find_object result).
//  - Thread safety: any number of threads may walk concurrently (see RuleCache CONCURRENCY).
//  - Signals: a hit is pure loads. A miss calls _dl_find_object, whose ld.so implementation is
//    lock-free and meant for use from signal handlers (only its fallback before ld.so finishes
//    initializing, reachable from audit modules, takes a lock). The first walk in the process
//    maps the cache and binds the P/Invokes (dlopen/dlsym allocate): call Initialize() at startup.
//  - Limits: x86-64 only; stops at signal frames (see UnwindRule); PCs at or above 2^48 are
//    walked but not cached; objects without .eh_frame_hdr have no CFI for us.
//
// COST (NativeAOT, this machine: 2.1 GHz Xeon VM, 2 cores shared with other builds; min of 200
// rounds; scratch benchmark equivalent to FastUnwinderTests.MeasureCost)
//  - hit:  5.2 ns per frame on a 15-frame walk through qsort, 6.5 ns on a 58-frame walk (50-deep
//    recursion down from a C main), call overhead included; ~11-14 cycles, close to the floor of
//    the dependent chain (pc -> cache slot -> rule -> stack load -> pc). Same 58-frame stack,
//    libunwind unw_backtrace: 10.8 ns per frame; 16 frames: ~185 ns per call (ours ~80 ns).
//    Tiered JIT (dotnet test -c Release, after tier-up): ~6.2 ns per frame.
//  - miss: 120-180 ns per distinct return address (_dl_find_object, the hdr binary search, CIE
//    and FDE parsing, the CFA program); a cold 58-frame walk with 9 distinct PCs: ~2 us.
//    Each return address misses once per process, or again after a collision evicts it.

using System.Runtime.CompilerServices;
using System.Threading;

namespace Interposer.Unwinding;

internal static unsafe class FastUnwinder
{
    // Walk state handed between the call-free hit loop and the miss path.
    private struct WalkState
    {
        internal ulong Pc, Sp, Bp;   // see THE WALK
        internal int Count;          // frames written so far
        internal int Hits;           // cache hits, for RuleCache statistics
    }

    // Maps the rule cache and binds mmap and _dl_find_object by resolving one PC, so that the
    // first walk inside a malloc hook does neither. Idempotent; safe to skip (walks then do it).
    internal static void Initialize()
    {
        RuleCache.GetTable();
        ResolveRule((ulong)(delegate*<void>)&Initialize);   // any PC binds; this one has CFI
    }

    // The checks every walk starts with. Writes frames[0] = pc. False when the walk is already
    // over, with its frame count in `early`. lastWord: a word at address a is readable iff
    // (a - stackLo) <= lastWord (one unsigned compare, which also rejects a < stackLo by
    // wrap-around) and a is 8-byte aligned.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool Begin(ulong pc, ulong stackLo, ulong stackHi, ulong* frames, int maxFrames,
                               out int early, out ulong lastWord)
    {
        lastWord = 0;
        early = 0;
        if (pc == 0 || frames == null || maxFrames <= 0)
            return false;
        frames[0] = pc;
        early = 1;
        if (stackHi <= stackLo || stackHi - stackLo < 8)
            return false;
        lastWord = stackHi - stackLo - 8;
        return true;
    }

    // Walks the stack; see the file header. Returns the number of return addresses written to
    // frames (frames[0] = pc), 0 only when pc == 0, frames == null or maxFrames <= 0.
    public static int Unwind(ulong pc, ulong sp, ulong bp, ulong stackLo, ulong stackHi, ulong* frames, int maxFrames)
    {
        if (!Begin(pc, stackLo, stackHi, frames, maxFrames, out int early, out ulong lastWord))
            return early;
        ulong* table = RuleCache.GetTable();
        var walk = new WalkState { Pc = pc, Sp = sp, Bp = bp, Count = 1 };
        while (walk.Count < maxFrames)
        {
            // Runs until the walk ends or a PC misses; then walk.Pc is the PC that missed.
            if (table != null && !WalkCached(ref walk, table, stackLo, lastWord, frames, maxFrames))
                break;
            uint rule = ResolveMiss(table, walk.Pc);
            if (!Step(rule, ref walk.Pc, ref walk.Sp, ref walk.Bp, stackLo, lastWord))
                break;
            frames[walk.Count++] = walk.Pc;
        }

        if (RuleCache.s_collectStats)
            Interlocked.Add(ref RuleCache.s_hits, walk.Hits);
        return walk.Count;
    }

    // The hit loop. Kept call-free and out of Unwind so that its live values stay in registers:
    // with the ResolveMiss call in the same loop, ILC spilled count, maxFrames and lastWord
    // around the call (measured 10.3 -> 8.4 ns per frame when this was split out). Returns true
    // when walk.Pc missed the cache (the walk goes on), false when the walk is over.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool WalkCached(ref WalkState walk, ulong* table, ulong stackLo, ulong lastWord, ulong* frames, int maxFrames)
    {
        ulong pc = walk.Pc, sp = walk.Sp, bp = walk.Bp;
        int count = walk.Count, hits = walk.Hits;
        bool missed = false;
        while (count < maxFrames)
        {
            uint rule = RuleCache.Lookup(table, pc);
            if (rule == 0)
            {
                missed = true;
                break;
            }
            hits++;
            if (!Step(rule, ref pc, ref sp, ref bp, stackLo, lastWord))
                break;
            frames[count++] = pc;
        }
        walk.Pc = pc;
        walk.Sp = sp;
        walk.Bp = bp;
        walk.Count = count;
        walk.Hits = hits;
        return missed;
    }

    // One frame: applies rule to (pc, sp, bp). False when the walk must stop here (the rule is not
    // Walk, a load would leave the bounds, the CFA does not grow, or the return address is 0).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Step(uint rule, ref ulong pc, ref ulong sp, ref ulong bp, ulong stackLo, ulong lastWord) =>
        StepWithSlots(rule, ref pc, ref sp, ref bp, stackLo, lastWord, out _, out _);

    // Step, also reporting the addresses it loaded the return address and rbp from (bpSlot 0 when
    // rbp was carried over), for WalkCache's validity check.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool StepWithSlots(uint rule, ref ulong pc, ref ulong sp, ref ulong bp, ulong stackLo, ulong lastWord,
                                       out ulong raSlot, out ulong bpSlot)
    {
        raSlot = 0;
        bpSlot = 0;
        // (rule & UnwindRule.CfaFromRbp) tells the caller whether this step consumed bp.
        if ((rule & UnwindRule.KindMask) != UnwindRule.KindWalk)
            return false;
        ulong cfa = ((rule & UnwindRule.CfaFromRbp) != 0 ? bp : sp) + UnwindRule.CfaOffset(rule);
        // The stack grows down: a caller's CFA is above its callee's. Rule offsets are multiples
        // of 8, so an aligned CFA makes both save-slot addresses below aligned too. A word at
        // address a is readable iff (a - stackLo) <= lastWord (one unsigned compare).
        if (cfa <= sp || (cfa & 7) != 0)
            return false;
        ulong raAddress = cfa - UnwindRule.RaDistance(rule);
        if (raAddress - stackLo > lastWord)
            return false;
        ulong ra = *(ulong*)raAddress;
        ulong newBp = bp;
        if ((rule & UnwindRule.RbpSaved) != 0)
        {
            ulong bpAddress = cfa - UnwindRule.RbpDistance(rule);
            if (bpAddress - stackLo > lastWord)
                return false;
            newBp = *(ulong*)bpAddress;
            bpSlot = bpAddress;
        }
        if (ra == 0)
            return false;
        raSlot = raAddress;
        bp = newBp;
        sp = cfa;
        pc = ra;
        return true;
    }

    // The miss path for callers outside this file (WalkCache).
    internal static uint ResolveAndCache(ulong* table, ulong pc) => ResolveMiss(table, pc);

    // The rule for a lookup key (a return address - 1) straight from the CFI, bypassing the cache.
    // Never fails: anything we cannot resolve or follow is UnwindRule.Stop.
    internal static uint ResolveRule(ulong key)
    {
        if (!EhFrame.TryFindFde(key, out FdeInfo fde, out CieInfo cie))
            return UnwindRule.Stop;
        if (!CfiInterpreter.TryComputeRow(in cie, in fde, key, out CfiRow row))
            return UnwindRule.Stop;
        return UnwindRule.FromRow(in row, in cie);
    }

    // Slow path, out of line: resolves the return address pc (its call at pc - 1) and caches the
    // rule under pc. Negative results (Stop) are cached too: a PC without CFI (JIT code, stripped
    // objects) would otherwise pay a miss on every walk that reaches it.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static uint ResolveMiss(ulong* table, ulong pc)
    {
        if (RuleCache.s_collectStats)
            Interlocked.Increment(ref RuleCache.s_misses);
        uint rule = ResolveRule(pc - 1);
        if (table != null)
            RuleCache.Store(table, pc, rule);
        return rule;
    }
}
