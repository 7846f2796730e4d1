// WalkCache.cs — reuse of the previous walk's outer frames, per thread.
//
// Why: a program allocates from a handful of places inside a long-lived call chain; walking the
// same 12 outer frames again costs a dependent chain of ~6 ns per frame (RuleCache lookup ->
// stack load -> next pc). Instead, each thread keeps its last walk (ip_walk_cache, in a page the
// shim maps for the thread) and a new walk stops at the first level whose (pc, sp, bp) equals a level of
// the last walk, then checks that the rest is still valid and copies it.
//
// WHY IT IS EXACT. A step is a pure function of (pc, sp, bp) and of the stack words it loads (the
// return address slot and, when the rule saves rbp, the rbp slot). The cache stores, for every
// step, the addresses of the words it loaded and the values it got (the next level's pc and bp).
// If the current walk reaches a level with the same (pc, sp, bp) as cached level j, and every word
// loaded by the cached steps j.. still holds the value it held, the remaining steps would compute
// exactly the cached levels. The check is a few independent loads (no dependent chain, no rule
// lookups), so a reused suffix costs ~1 ns per frame.
//
// RBP. Code built without frame pointers keeps arbitrary data in rbp, so requiring equal rbp
// at a level would defeat the cache at the level that matters most (malloc's caller). A level's
// rbp only matters if a later step consumes it (a CFA computed from rbp) before a step reloads it
// from a saved slot; BpNeeded checks exactly that, so unequal rbp is accepted when it is dead.
//
// LAYOUT. Level k of the stored walk sits at index Base + k of each array, in arrays twice the
// deepest walk: a splice that keeps cached levels j.. and puts `level` new inner levels in front
// only writes those new levels (at Base + j - level) and moves Base; the kept suffix stays where
// it is. (Shifting the suffix in five arrays on every partial hit was ~15% of sqlite3's run under
// the library, perf.) Only when a side runs out of room is the walk moved back to the middle.
//
// THE MEMO. The arrays hold one walk; a program that allocates from many places in turn (sqlite3:
// a few dozen call sites per statement, each at its own depth) makes each walk differ from the
// last one, so it pays the walk down to the common levels and a splice every time. Each thread
// therefore also keeps its recent final walks (WalkMemo: 64 KiB, 16 sets of 8 entries, the set
// chosen by level 0's (pc, sp)), each as the flattened check of a whole hit plus its depot id.
// An entry is exact for the same reason as a whole hit: same (pc, sp), rbp where a step consumes
// it, and every word the steps loaded still holding its value; the steps are limited to the
// frames returned. Built after the depot id is known (Learned), looked up after the arrays'
// whole hit. The memo is mmap'ed only once the thread has walked WalkMemo.After times without a
// whole hit, and the shim unmaps it when the thread exits; it rests while its hits do not pay for
// its lookups and entries (WalkMemo's score). Measured (a counting build): sqlite3, 200k inserts:
// 4.37M mallocs, 99.9% memo hits, 2.6k walks; python3 with threads, json and sqlite3: 98.6% hits
// (the arrays alone: 0.1% and 0.5% whole hits). Eight ways, not four: sqlite3 reaches one call
// site at one depth through five or more outer chains, and with four ways its hit rate depended
// on where ASLR put the stack (the set comes from sp): 27% to 99.9% over six runs of 20k inserts
// (a counting build); with eight, 99.9% in every run.
//
// SAFETY. Slot addresses were inside this thread's [stackLo, stackHi) when stored, and the cache
// belongs to that thread alone (a zeroed page the shim maps when the thread registers and unmaps
// when it exits), so the stack they point into is still mapped and they are reloaded without a
// new bounds check. A hook never runs nested on its thread
// (the guard), so no walk interrupts another on the same cache.
using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Interposer.Unwinding;

/// <summary>Mirror of ip_walk_cache (native-shim/interposer_abi.h).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IpWalkCache
{
    public const int Levels = 32;        // the deepest walk stored
    public const int Capacity = 2 * Levels; // array length: room to grow inwards and outwards

    public int Count;                 // levels stored
    public int Complete;              // 1: the stored walk ended by itself, not at a limit
    public uint StackId;              // depot id of the last frames returned; 0 = unknown
    public uint UsesRbp;              // bit k: step k computed its CFA from rbp
    public fixed ulong Pc[Capacity];    // level k, at index Base + k: the return address (frames[k])
    public fixed ulong Sp[Capacity];    //          the CFA of the frame below (caller's sp)
    public fixed ulong Bp[Capacity];    //          the caller's rbp
    public fixed ulong RaSlot[Capacity];// step k -> k+1: where Pc[k+1] was loaded from
    public fixed ulong BpSlot[Capacity];// step k -> k+1: where Bp[k+1] was loaded from; 0 = carried
    public int CheckValid;            // 1: the flattened whole-hit check below matches the arrays;
                                      // 2: it does not, but the last walk reused the whole cached
                                      // one, so build it on the next call; 0: skip the fast path
    public int CheckCount;
    public int Bp0Needed;             // level 0's rbp is consumed by a later step
    public int Base;                  // index of level 0 in the arrays above
    public fixed ulong CheckAddr[2 * Levels]; // the words SuffixStillValid(c, 0, Count) loads...
    public fixed ulong CheckVal[2 * Levels];  // ...and the values they must hold
    public WalkMemo* Memo;            // THE MEMO; null until Walks reaches WalkMemo.After
    public int Walks;                 // before the memo: walks without a whole hit (-1: never);
                                      // then the memo's score (hits earn, misses spend)
    public int MemoOff;               // > 0: the memo is resting for this many more walks
}

/// <summary>One remembered final walk (THE MEMO in the file header). 512 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct WalkMemoEntry
{
    public const int MaxPairs = 28;
    public ulong Pc, Sp, Bp;          // level 0
    public uint StackId;              // depot id of the frames; 0 = empty entry
    public int Count;                 // frames returned
    public int PairCount;             // checks below (a multiple of 4)
    public int Bp0Needed;             // a step consumes level 0's rbp: Bp must match too
    public ulong Turn;                // way 0 only: the set's next way to replace
    public fixed ulong Reserved[2];
    public fixed ulong Addr[MaxPairs];// *Addr[i] == Val[i] for every i: the walk is unchanged
    public fixed ulong Val[MaxPairs];
}

/// <summary>A thread's walk memo (ip_walk_cache.memo): IP_WALK_MEMO_BYTES of entries in sets of
/// Ways, the set chosen by level 0's (pc, sp). Several ways per set because one (pc, sp) often
/// has several outer chains: a wrapper called at the same depth from different callers.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct WalkMemo
{
    public const int Bytes = 65536;
    public const int Ways = 8;
    public const int SetBits = 4;
    public const int Entries = Ways << SetBits;
    public const int After = 64;      // walks without a whole hit before a thread gets a memo
    // The memo pays off only when call chains recur. A memo hit earns HitCredit (up to MaxScore),
    // a walk it could not spare costs 1; at 0 the memo rests for Rest walks (no lookups, no
    // entries), then gets a trial with TrialScore. Recurrence below ~1 in 5 walks thus turns it
    // off: 1000 call paths in rotation (scripts/bench/live.c) missed every time and paid ~15% per
    // malloc for the lookups and the entries.
    public const int HitCredit = 4;
    public const int MaxScore = 256;
    public const int TrialScore = 32;
    public const int Rest = 1024;

    /// <summary>The first way of (pc, sp)'s set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static WalkMemoEntry* Set(WalkMemo* m, ulong pc, ulong sp) =>
        (WalkMemoEntry*)m + Ways * (int)(((pc ^ (sp << 17)) * 0x9E3779B97F4A7C15UL) >> (64 - SetBits));
}

internal static unsafe class FastUnwinderCached
{
    /// <summary>FastUnwinder.Unwind with reuse of this thread's previous walks (see file header).
    /// knownId: non-zero when the frames are a remembered walk's, whose depot id it is; then only
    /// frames[0] is written. Otherwise the caller interns the frames and reports the id to Learned.
    /// shimTried: the shim already made the whole-hit test of a built check (CheckValid 1) for
    /// this event and it failed (WHOLE HIT in interposer_abi.h); it is not made twice.</summary>
    // The whole hit is tried here, in a frame of its own size; the rest of the walk (with its
    // 1.3 KB of level arrays and stack cookie) only when it misses (callgrind: the shared frame
    // cost ~30 instructions per hit).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Unwind(ulong pc, ulong sp, ulong bp, ulong stackLo, ulong stackHi,
                             ulong* frames, int maxFrames, IpWalkCache* c, out uint knownId,
                             bool shimTried = false)
    {
        if (c != null && maxFrames <= IpWalkCache.Levels && c->CheckValid != 0 &&
            !(shimTried && c->CheckValid == 1) && c->Count > 0 &&
            c->Pc[c->Base] == pc && c->Sp[c->Base] == sp && c->StackId != 0 && pc != 0 && frames != null &&
            maxFrames > 0 && WholeHit(c, bp))
        {
            int whole = c->Count < maxFrames ? c->Count : maxFrames;
            if (whole >= maxFrames || c->Complete != 0)
            {
                // Exactly Splice's outcome for level 0 = cached level 0, without the walk.
                frames[0] = pc;
                c->Bp[c->Base] = bp;
                knownId = c->StackId;
                return whole;
            }
        }
        return UnwindMiss(pc, sp, bp, stackLo, stackHi, frames, maxFrames, c, out knownId);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int UnwindMiss(ulong pc, ulong sp, ulong bp, ulong stackLo, ulong stackHi,
                                  ulong* frames, int maxFrames, IpWalkCache* c, out uint knownId)
    {
        knownId = 0;
        if (c == null || maxFrames > IpWalkCache.Levels)
            return FastUnwinder.Unwind(pc, sp, bp, stackLo, stackHi, frames, maxFrames);
        if (c->Memo != null && c->MemoOff == 0 && pc != 0 && frames != null && maxFrames > 0)
        {
            WalkMemoEntry* m = WalkMemo.Set(c->Memo, pc, sp);
            for (int w = 0; w < WalkMemo.Ways; w++, m++)
            {
                if (m->Pc == pc && m->Sp == sp && m->StackId != 0 && m->Count <= maxFrames &&
                    (m->Bp == bp || m->Bp0Needed == 0) && PairsHold(m->Addr, m->Val, m->PairCount))
                {
                    frames[0] = pc;
                    knownId = m->StackId;
                    if (c->Walks < WalkMemo.MaxScore)
                        c->Walks += WalkMemo.HitCredit;
                    return m->Count;
                }
            }
        }
        int checkBefore = c->CheckValid;
        c->CheckValid = 0; // the general path may change the arrays
        if (!FastUnwinder.Begin(pc, stackLo, stackHi, frames, maxFrames, out int early, out ulong lastWord))
            return early;
        ulong* table = RuleCache.GetTable();

        // The levels walked before a match (usually one or two), kept aside until the end: the
        // cached levels must stay intact while they are compared.
        const int L = IpWalkCache.Levels;
        ulong* lPc = stackalloc ulong[L], lSp = stackalloc ulong[L], lBp = stackalloc ulong[L];
        ulong* lRa = stackalloc ulong[L], lBs = stackalloc ulong[L];
        int prevCount = c->Count;
        ulong* cPc = c->Pc + c->Base, cSp = c->Sp + c->Base, cBp = c->Bp + c->Base;
        int j = 0;
        int level = 0;
        ulong usesRbp = 0;                 // bit k: this walk's step k used rbp
        bool complete = false;
        ulong curPc = pc, curSp = sp, curBp = bp;
        while (true)
        {
            lPc[level] = curPc;
            lSp[level] = curSp;
            lBp[level] = curBp;
            while (j < prevCount && cSp[j] < curSp)
                j++;
            if (j < prevCount && cSp[j] == curSp && cPc[j] == curPc &&
                (cBp[j] == curBp || !BpNeeded(c, j, prevCount, c->Complete == 0)) &&
                SuffixStillValid(c, j, prevCount))
                return Splice(c, level, j, lPc, lSp, lBp, lRa, lBs, usesRbp, frames, maxFrames, table, stackLo, lastWord,
                              checkBefore, out knownId);
            if (level + 1 >= maxFrames)
                break;
            uint rule = table != null ? RuleCache.Lookup(table, curPc) : 0;
            if (rule == 0)
                rule = FastUnwinder.ResolveAndCache(table, curPc);
            if (!FastUnwinder.StepWithSlots(rule, ref curPc, ref curSp, ref curBp, stackLo, lastWord,
                                            out ulong raSlot, out ulong bpSlot))
            {
                complete = true;
                break;
            }
            lRa[level] = raSlot;
            lBs[level] = bpSlot;
            if ((rule & UnwindRule.CfaFromRbp) != 0)
                usesRbp |= 1UL << level;
            level++;
            frames[level] = curPc;
        }

        // No reusable suffix: this walk replaces the cache.
        int n = level + 1;
        c->Base = (IpWalkCache.Capacity - n) / 2; // room on both sides
        CopyLevels(c, c->Base, lPc, lSp, lBp, lRa, lBs, n);
        c->Count = n;
        c->Complete = complete ? 1 : 0;
        c->StackId = 0;
        c->UsesRbp = (uint)usesRbp;
        return n;
    }

    // THE WHOLE HIT. Most mallocs come from the call site, at the stack depth, of this thread's
    // previous one. Then the general path matches at level 0 against cached level 0 and runs
    // BpNeeded(c, 0, Count) and SuffixStillValid(c, 0, Count) over arrays that have not changed
    // since the last walk. Both are flattened once per cache state into a list of (word, value)
    // pairs and a flag, so the hit is one branch-free pass of independent loads (perf: the
    // per-level loop with its slot-kind branch was ~20% of a malloc+free pair at 15 frames).
    // The list is exactly the loads SuffixStillValid makes from level 0, so the outcome is the same.
    // It is only tried once a walk has reused the whole cached one (CheckValid): where the chain
    // changes from call to call, building a list for a check that fails was pure cost.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool WholeHit(IpWalkCache* c, ulong bp)
    {
        if (c->CheckValid != 1)
            BuildCheck(c);
        if (c->Bp[c->Base] != bp && c->Bp0Needed != 0)
            return false;
        return PairsHold(c->CheckAddr, c->CheckVal, c->CheckCount);
    }

    // Every *addr[i] == val[i], i < count (a multiple of 4: the lists are padded by repeating
    // their first pair). Pointer walks unrolled by 4: no index arithmetic, no tail loop.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool PairsHold(ulong* addr, ulong* val, int count)
    {
        ulong diff = 0;
        ulong* end = addr + count;
        for (; addr < end; addr += 4, val += 4)
        {
            diff |= (*(ulong*)addr[0] ^ val[0]) | (*(ulong*)addr[1] ^ val[1])
                  | (*(ulong*)addr[2] ^ val[2]) | (*(ulong*)addr[3] ^ val[3]);
        }
        return diff == 0;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void BuildCheck(IpWalkCache* c)
    {
        int count = c->Count;
        bool raOnly = c->UsesRbp == 0 && c->Complete != 0; // SuffixStillValid's first branch at j = 0
        int k = Flatten(c, count - 1, raOnly, c->CheckAddr, c->CheckVal, 2 * IpWalkCache.Levels);
        c->CheckCount = k;
        c->Bp0Needed = BpNeeded(c, 0, count, c->Complete == 0) ? 1 : 0;
        c->CheckValid = 1;
    }

    // The (word, value) pairs of steps 0..steps-1, as SuffixStillValid loads them from level 0:
    // each step's return-address slot and, unless raOnly, its saved-rbp slot. Padded to a multiple
    // of 4 by repeating the first pair (checking it twice changes nothing; no steps: no pairs).
    // Returns the count, or -1 when more than max would be needed.
    private static int Flatten(IpWalkCache* c, int steps, bool raOnly, ulong* addr, ulong* val, int max)
    {
        int b = c->Base;
        ulong* pc = c->Pc + b, bp = c->Bp + b, ra = c->RaSlot + b, bs = c->BpSlot + b;
        int n = 0;
        for (int i = 0; i < steps; i++)
        {
            if (n + 2 > max)
                return -1;
            addr[n] = ra[i];
            val[n++] = pc[i + 1];
            if (!raOnly && bs[i] != 0)
            {
                addr[n] = bs[i];
                val[n++] = bp[i + 1];
            }
        }
        while ((n & 3) != 0)
        {
            addr[n] = addr[0];
            val[n++] = val[0];
        }
        return n;
    }

    /// <summary>Whether cached level j's rbp is consumed by the cached steps j.. before a saved
    /// slot reloads it (or by a future extension of an incomplete walk).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool BpNeeded(IpWalkCache* c, int j, int count, bool extendable)
    {
        ulong* bs = c->BpSlot + c->Base;
        for (int k = j; k + 1 < count; k++)
        {
            if ((c->UsesRbp & (1u << k)) != 0)
                return true;
            if (bs[k] != 0)
                return false;
        }
        return extendable;
    }

    // This walk's level `level` is the cached level j, and the cached levels j.. are valid: keep
    // them where they are, put this walk's own levels 0..level-1 in front (LAYOUT), emit the frames.
    private static int Splice(IpWalkCache* c, int level, int j, ulong* lPc, ulong* lSp, ulong* lBp,
                              ulong* lRa, ulong* lBs, ulong usesRbp, ulong* frames, int maxFrames, ulong* table,
                              ulong stackLo, ulong lastWord, int checkBefore, out uint knownId)
    {
        int prevCount = c->Count;
        int newCount = level + (prevCount - j);
        bool clamped = newCount > IpWalkCache.Levels;
        if (clamped)
            newCount = IpWalkCache.Levels; // the outermost levels drop off the end
        bool unchanged = level == 0 && j == 0;
        int newBase = c->Base + j - level;
        if (newBase < 0)
        {
            // No room below the kept levels: move them up, to the middle.
            int to = (IpWalkCache.Capacity - newCount) / 2 + level;
            MoveLevels(c, c->Base + j, to, newCount - level);
            newBase = to - level;
        }
        c->Base = newBase;
        if (level > 0)
            CopyLevels(c, newBase, lPc, lSp, lBp, lRa, lBs, level);
        // This level's rbp may differ from the cached one when it is dead (BpNeeded); store the
        // real value so the cache describes this walk.
        c->Bp[newBase + level] = lBp[level];
        ulong low = level == 0 ? 0 : usesRbp & ((1UL << level) - 1);
        c->UsesRbp = (uint)(low | (((ulong)c->UsesRbp >> j) << level));
        c->Count = newCount;
        if (clamped)
            c->Complete = 0;

        int count = newCount < maxFrames ? newCount : maxFrames;
        if (unchanged && c->StackId != 0 && (count >= maxFrames || c->Complete != 0))
        {
            // The same frames as this thread's last call, whose depot id we have: the frames
            // buffer is not needed (Recorder reads it only when the id is unknown).
            knownId = c->StackId;
            c->CheckValid = checkBefore == 1 ? 1 : 2; // the arrays did not change (see CheckValid)
            return count;
        }
        ulong* pc = c->Pc + newBase;
        for (int k = level + 1; k < count; k++)
            frames[k] = pc[k];
        if (count < maxFrames && c->Complete == 0 && newCount < IpWalkCache.Levels)
        {
            count = Extend(c, frames, count, maxFrames, table, stackLo, lastWord);
            unchanged = false;
        }
        knownId = unchanged ? c->StackId : 0;
        if (!unchanged)
            c->StackId = 0;
        else
            c->CheckValid = checkBefore == 1 ? 1 : 2; // the arrays did not change (see CheckValid)
        return count;
    }

    // The cached walk stopped at a limit that this walk does not have: walk on from its last level.
    private static int Extend(IpWalkCache* c, ulong* frames, int count, int maxFrames, ulong* table,
                              ulong stackLo, ulong lastWord)
    {
        if (c->Base + IpWalkCache.Levels > IpWalkCache.Capacity)
        {
            // Not enough room above for the deepest walk: move the levels down.
            int to = IpWalkCache.Capacity - IpWalkCache.Levels;
            MoveLevels(c, c->Base, to, c->Count);
            c->Base = to;
        }
        int b = c->Base;
        int last = c->Count - 1;
        ulong pc = c->Pc[b + last], sp = c->Sp[b + last], bp = c->Bp[b + last];
        while (count < maxFrames && last + 1 < IpWalkCache.Levels)
        {
            uint rule = table != null ? RuleCache.Lookup(table, pc) : 0;
            if (rule == 0)
                rule = FastUnwinder.ResolveAndCache(table, pc);
            if (!FastUnwinder.StepWithSlots(rule, ref pc, ref sp, ref bp, stackLo, lastWord, out ulong ra, out ulong bs))
            {
                c->Complete = 1;
                break;
            }
            c->RaSlot[b + last] = ra;
            c->BpSlot[b + last] = bs;
            if ((rule & UnwindRule.CfaFromRbp) != 0)
                c->UsesRbp |= 1u << last;
            else
                c->UsesRbp &= ~(1u << last);
            last++;
            c->Pc[b + last] = pc;
            c->Sp[b + last] = sp;
            c->Bp[b + last] = bp;
            frames[count++] = pc;
        }
        c->Count = last + 1;
        return count;
    }

    /// <summary>The caller interned the `count` frames Unwind just returned for (pc, sp) without a
    /// known id: remember their id, for the arrays' whole hit and, when the walk is final, in
    /// the memo (allocated once the thread has walked WalkMemo.After times without a hit).</summary>
    public static void Learned(IpWalkCache* c, ulong pc, ulong sp, uint stackId, int count, int maxFrames)
    {
        if (c == null || stackId == 0)
            return;
        // Only a walk the arrays describe (not an early-out or the plain walker's: those left the
        // arrays and their id alone), and for the memo only a final one: its check covers the
        // steps to the frames returned and nothing after.
        int b = c->Base;
        if (c->Count <= 0 || c->Pc[b] != pc || c->Sp[b] != sp || maxFrames > IpWalkCache.Levels ||
            count != (c->Count < maxFrames ? c->Count : maxFrames))
            return;
        c->StackId = stackId;
        if (count < maxFrames && c->Complete == 0)
            return;
        if (c->Memo == null)
        {
            if (c->Walks < 0 || ++c->Walks < WalkMemo.After)
                return;
            c->Memo = (WalkMemo*)Native.Interop.Libc.MapAnonymous(WalkMemo.Bytes);
            if (c->Memo == null)
            {
                c->Walks = -1; // no memory: never again on this thread
                return;
            }
            c->Walks = WalkMemo.TrialScore;
        }
        else if (c->MemoOff > 0)
        {
            if (--c->MemoOff == 0)
                c->Walks = WalkMemo.TrialScore; // rested: try again
            return;
        }
        else if (--c->Walks <= 0)
        {
            c->MemoOff = WalkMemo.Rest; // this thread's chains do not recur enough
            return;
        }
        Remember(c, Victim(WalkMemo.Set(c->Memo, pc, sp)), stackId, count);
    }

    // The way to write in a set: an empty one, else the next in the set's turn (kept in way 0).
    // (Not "the way with this (pc, sp)": its checks fail because this is another chain through
    // the same call site, and the two chains would evict each other.)
    private static WalkMemoEntry* Victim(WalkMemoEntry* set)
    {
        for (int w = 0; w < WalkMemo.Ways; w++)
            if (set[w].StackId == 0)
                return set + w;
        return set + (int)(set->Turn++ % WalkMemo.Ways);
    }

    // The memo entry for the arrays' walk, cut to its first `count` frames: the loads of steps
    // 0..count-2, chosen as BuildCheck and BpNeeded choose them for a whole hit (a walk that ends
    // here is never extended). Frame k+1 comes from RaSlot[k]; when one of the steps computes its
    // CFA from rbp, every saved-rbp word is checked too, and level 0's rbp when a step consumes
    // it before the first reload.
    private static void Remember(IpWalkCache* c, WalkMemoEntry* m, uint stackId, int count)
    {
        int b = c->Base;
        ulong* pc = c->Pc + b, bp = c->Bp + b;
        int steps = count - 1;
        uint stepMask = steps >= 32 ? uint.MaxValue : (1u << steps) - 1;
        m->StackId = 0; // invalid while it is rewritten
        int n = Flatten(c, steps, (c->UsesRbp & stepMask) == 0, m->Addr, m->Val, WalkMemoEntry.MaxPairs);
        if (n < 0)
            return; // too many words to check: not remembered
        m->Pc = pc[0];
        m->Sp = c->Sp[b];
        m->Bp = bp[0];
        m->Bp0Needed = BpNeeded(c, 0, count, extendable: false) ? 1 : 0;
        m->Count = count;
        m->PairCount = n;
        m->StackId = stackId;
    }

    // n walked levels (usually one or two) into the arrays at index `at`: plain stores, no memmove
    // call (perf: the calls were a third of a splice).
    private static void CopyLevels(IpWalkCache* c, int at, ulong* pc, ulong* sp, ulong* bp, ulong* ra, ulong* bs, int n)
    {
        for (int k = 0; k < n; k++)
        {
            c->Pc[at + k] = pc[k];
            c->Sp[at + k] = sp[k];
            c->Bp[at + k] = bp[k];
            c->RaSlot[at + k] = ra[k];
            c->BpSlot[at + k] = bs[k];
        }
    }

    // The rare re-centring (LAYOUT): n levels from index `from` to index `to`; the ranges may overlap.
    private static void MoveLevels(IpWalkCache* c, int from, int to, int n)
    {
        long bytes = (long)n * sizeof(ulong);
        Buffer.MemoryCopy(c->Pc + from, c->Pc + to, bytes, bytes);
        Buffer.MemoryCopy(c->Sp + from, c->Sp + to, bytes, bytes);
        Buffer.MemoryCopy(c->Bp + from, c->Bp + to, bytes, bytes);
        Buffer.MemoryCopy(c->RaSlot + from, c->RaSlot + to, bytes, bytes);
        Buffer.MemoryCopy(c->BpSlot + from, c->BpSlot + to, bytes, bytes);
    }

    // Every stored slot was inside this thread's stack when it was loaded, and the cache is this
    // thread's alone (see SAFETY), so the slots need no new bounds check. The
    // loads are independent: accumulate differences and branch once (perf: the per-level
    // branches were 40% of this function).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool SuffixStillValid(IpWalkCache* c, int j, int prevCount)
    {
        ulong diff = 0;
        int b = c->Base;
        ulong* ra = c->RaSlot + b + j;
        ulong* end = c->RaSlot + b + (prevCount - 1);
        ulong* nextPc = c->Pc + b + (j + 1);
        if ((c->UsesRbp >> j) == 0 && c->Complete != 0)
        {
            // No remaining step computes a CFA from rbp and nothing will extend the walk: the
            // frames depend on the return-address slots alone. (Stale cached rbp values are then
            // never compared: BpNeeded is false at every level from here.) This is the common
            // case of distribution code built without frame pointers.
            for (; ra < end; ra++, nextPc++)
                diff |= *(ulong*)*ra ^ *nextPc;
            return diff == 0;
        }
        ulong* bs = c->BpSlot + b + j;
        ulong* nextBp = c->Bp + b + (j + 1);
        for (; ra < end; ra++, nextPc++, bs++, nextBp++)
        {
            diff |= *(ulong*)*ra ^ *nextPc;
            if (*bs != 0)
                diff |= *(ulong*)*bs ^ *nextBp;
        }
        return diff == 0;
    }
}
