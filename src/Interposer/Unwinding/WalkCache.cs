// WalkCache.cs — reuse of the previous walk's outer frames, per thread.
//
// Why: a program allocates from a handful of places inside a long-lived call chain; walking the
// same 12 outer frames again costs a dependent chain of ~6 ns per frame (RuleCache lookup ->
// stack load -> next pc). Instead, each thread keeps its last walk (ip_walk_cache, in the shim's
// initial-exec TLS) and a new walk stops at the first level whose (pc, sp, bp) equals a level of
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
// SAFETY. Slot addresses were inside this thread's [stackLo, stackHi) when stored and are checked
// against the bounds again before each load. The cache belongs to one thread; a hook never runs
// nested on its thread (the guard), so no walk interrupts another on the same cache.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Interposer.Unwinding;

/// <summary>Mirror of ip_walk_cache (native-shim/interposer_abi.h).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IpWalkCache
{
    public const int Levels = 32;

    public int Count;                 // levels stored
    public int Complete;              // 1: that walk ended by itself, not at maxFrames
    public fixed ulong Pc[Levels];    // level k: the return address (frames[k])
    public fixed ulong Sp[Levels];    //          the CFA of the frame below (caller's sp)
    public fixed ulong Bp[Levels];    //          the caller's rbp
    public fixed ulong RaSlot[Levels];// step k -> k+1: where Pc[k+1] was loaded from
    public fixed ulong BpSlot[Levels];// step k -> k+1: where Bp[k+1] was loaded from; 0 = carried
}

internal static unsafe partial class FastUnwinderCached
{
    /// <summary>FastUnwinder.Unwind with reuse of this thread's previous walk (see file header).</summary>
    public static int Unwind(ulong pc, ulong sp, ulong bp, ulong stackLo, ulong stackHi,
                             ulong* frames, int maxFrames, IpWalkCache* cache)
    {
        if (cache == null || maxFrames > IpWalkCache.Levels)
            return FastUnwinder.Unwind(pc, sp, bp, stackLo, stackHi, frames, maxFrames);
        if (pc == 0 || frames == null || maxFrames <= 0)
            return 0;
        frames[0] = pc;
        if (stackHi <= stackLo || stackHi - stackLo < 8)
            return 1;
        ulong lastWord = stackHi - stackLo - 8;
        ulong* table = RuleCache.GetTable();

        IpWalkCache* c = cache;
        int prevCount = c->Count;
        int j = 0;                         // cursor in the cached levels, by increasing sp
        int count = 1;                     // frames written == levels recorded in `next`
        bool complete = false;
        IpWalkCache next;                  // the new walk's levels; copied to the cache at the end
        next.Count = 0;
        ulong curPc = pc, curSp = sp, curBp = bp;
        int level = 0;
        while (true)
        {
            next.Pc[level] = curPc;
            next.Sp[level] = curSp;
            next.Bp[level] = curBp;

            while (j < prevCount && c->Sp[j] < curSp)
                j++;
            if (j < prevCount && c->Sp[j] == curSp && c->Pc[j] == curPc && c->Bp[j] == curBp &&
                SuffixStillValid(c, j, prevCount, stackLo, lastWord))
            {
                // Levels j+1.. of the cached walk are this walk's levels level+1..
                int k = j;
                while (k + 1 < prevCount && count < maxFrames)
                {
                    next.RaSlot[level] = c->RaSlot[k];
                    next.BpSlot[level] = c->BpSlot[k];
                    k++;
                    level++;
                    next.Pc[level] = c->Pc[k];
                    next.Sp[level] = c->Sp[k];
                    next.Bp[level] = c->Bp[k];
                    frames[count++] = c->Pc[k];
                }
                if (count >= maxFrames)
                    break;
                if (k + 1 >= prevCount && c->Complete != 0)
                {
                    complete = true;
                    break;
                }
                // The cached walk was cut short: go on walking from its last level.
                curPc = c->Pc[k];
                curSp = c->Sp[k];
                curBp = c->Bp[k];
                j = prevCount;   // nothing further to match
            }

            if (count >= maxFrames)
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
            next.RaSlot[level] = raSlot;
            next.BpSlot[level] = bpSlot;
            level++;
            frames[count++] = curPc;
            if (level >= IpWalkCache.Levels)
                break;
        }

        next.Count = level + 1;
        next.Complete = complete ? 1 : 0;
        Store(c, &next);
        return count;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool SuffixStillValid(IpWalkCache* c, int j, int prevCount, ulong stackLo, ulong lastWord)
    {
        for (int k = j; k + 1 < prevCount; k++)
        {
            ulong ra = c->RaSlot[k];
            if (ra - stackLo > lastWord || *(ulong*)ra != c->Pc[k + 1])
                return false;
            ulong bs = c->BpSlot[k];
            if (bs != 0 && (bs - stackLo > lastWord || *(ulong*)bs != c->Bp[k + 1]))
                return false;
        }
        return true;
    }

    private static void Store(IpWalkCache* c, IpWalkCache* next)
    {
        int n = next->Count;
        uint bytes = (uint)(n * sizeof(ulong));
        c->Count = n;
        c->Complete = next->Complete;
        Unsafe.CopyBlockUnaligned(c->Pc, next->Pc, bytes);
        Unsafe.CopyBlockUnaligned(c->Sp, next->Sp, bytes);
        Unsafe.CopyBlockUnaligned(c->Bp, next->Bp, bytes);
        Unsafe.CopyBlockUnaligned(c->RaSlot, next->RaSlot, bytes);
        Unsafe.CopyBlockUnaligned(c->BpSlot, next->BpSlot, bytes);
    }
}
