// Per-PC unwind rule cache: a fixed, direct-mapped table of 2^16 64-bit entries in mmap'd memory.
//
// ENTRY (one ulong, read and written whole)
//   bits 32-63  tag = key >> 16, i.e. bits 16..47 of the key, a return address (its rule is
//               the one for the call at key - 1; see FastUnwinder)
//   bits  0-31  the UnwindRule word (never 0 for a stored rule)
// The slot index is the key's low 16 bits (see Index), so (index, tag) is the key itself: a hit
// can never return another PC's rule. Keys at or above 2^48 (not user-space PCs on x86-64
// with 4-level paging; possible only with 5-level paging and an explicit high mmap hint) have a
// tag wider than 32 bits, are never stored and never hit: they just take the miss path.
//
// CONCURRENCY (lock-free; no locks anywhere in this file)
//  - A writer publishes tag and rule with one aligned 64-bit store, and a reader loads the word
//    once, so a racing reader sees the old entry or the new one, never half of each.
//  - Collisions overwrite (last writer wins); a loser re-resolves on its next miss. Racy, fine.
//  - The table pointer is published with a CAS on first use; a thread that loses the race unmaps
//    its own table.
//  - Stale entries: the cache is never invalidated when a library is dlclose'd and another one is
//    mapped at the same addresses. A stale rule can only produce wrong frames, never an
//    out-of-bounds read (the walk bounds every load). Clear() is the hook for a dlclose interposer.
//
// MEMORY
//  512 KiB of address space from mmap (not malloc: we run inside malloc), touched lazily page by
//  page; a typical program's hot return addresses touch a few dozen pages.

using System.Runtime.CompilerServices;
using System.Threading;

namespace Interposer.Unwinding;

internal static unsafe class RuleCache
{
    internal const int IndexBits = 16;
    internal const int EntryCount = 1 << IndexBits;
    private const ulong IndexMask = EntryCount - 1;
    private const nuint TableBytes = EntryCount * sizeof(ulong);

    // The table (a ulong*), or 0 until first use and if mmap failed (walks then run uncached).
    // Stored as nint so Interlocked.CompareExchange can publish it.
    private static nint s_table;

    // Set after a failed mmap so we do not retry the syscall on every walk.
    private static bool s_mapFailed;

    // Statistics for tests and diagnostics, off by default: counting on every walk would put one
    // shared cache line in every malloc of every thread. Approximate when toggled concurrently.
    internal static bool s_collectStats;
    internal static long s_hits;
    internal static long s_misses;

    // The table for this walk, mapping it on first use. Returns null if it cannot be mapped.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong* GetTable()
    {
        ulong* table = (ulong*)s_table;
        return table != null ? table : MapTable();
    }

    // The cached rule for key, or 0 on a miss. Cost on a hit: a multiply, a load, a compare.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint Lookup(ulong* table, ulong key)
    {
        ulong tag = key >> IndexBits;
        ulong entry = Volatile.Read(ref table[Index(key)]);
        return (entry >> 32) == tag ? (uint)entry : 0;
    }

    // Publishes rule for key (rule != 0). Keys >= 2^48 are not cacheable.
    internal static void Store(ulong* table, ulong key, uint rule)
    {
        ulong tag = key >> IndexBits;
        if ((tag >> 32) != 0 || rule == 0)
            return;
        Volatile.Write(ref table[Index(key)], (tag << 32) | rule);
    }

    // Empties the cache (tests; a future dlclose hook). Racing walks see old or empty entries.
    internal static void Clear()
    {
        ulong* table = (ulong*)s_table;
        if (table == null)
            return;
        for (int i = 0; i < EntryCount; i++)
            Volatile.Write(ref table[i], 0UL);
    }

    internal static void ResetStats()
    {
        Interlocked.Exchange(ref s_hits, 0);
        Interlocked.Exchange(ref s_misses, 0);
    }

    // Number of occupied entries (tests and diagnostics; walks the whole table).
    internal static int CountOccupied()
    {
        ulong* table = (ulong*)s_table;
        int count = 0;
        if (table != null)
        {
            for (int i = 0; i < EntryCount; i++)
            {
                if (Volatile.Read(ref table[i]) != 0)
                    count++;
            }
        }
        return count;
    }

    // index = the key's low 16 bits: an identity hash. Return addresses are spread over the table
    // by their offsets inside functions and by ASLR (libraries are mapped at random page
    // addresses, so bits 12-15 differ between objects), which is as uniform as a real hash for
    // this input. tag = the bits above, so (index, tag) is the key itself. Measured: folding the
    // tag into the index (key ^ tag ^ tag >> 16) cost ~1 ns of the ~6 ns per frame, because the
    // index is on the walk's dependent chain (pc -> slot -> rule -> stack load -> next pc);
    // a multiplicative hash cost ~2 ns.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static nuint Index(ulong key) => (nuint)(key & IndexMask);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ulong* MapTable()
    {
        if (s_mapFailed)
            return null;
        void* mapped = Interop.Libc.Mmap(null, TableBytes, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE,
            Interop.Libc.MAP_PRIVATE | Interop.Libc.MAP_ANONYMOUS, -1, 0);
        if ((nint)mapped == Interop.Libc.MAP_FAILED)
        {
            s_mapFailed = true;
            return null;
        }
        // Anonymous pages are zero: every entry starts empty.
        ulong* previous = (ulong*)Interlocked.CompareExchange(ref s_table, (nint)mapped, 0);
        if (previous == null)
            return (ulong*)mapped;
        Interop.Libc.Munmap(mapped, TableBytes);
        return previous;
    }
}
