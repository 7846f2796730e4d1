// ScanAreas: kmemleak_scan_area(ptr, size). A block with scan areas has only those ranges read
// when it is scanned (kmemleak's object->area_list), so a large block whose pointers sit in a
// known header does not keep alive whatever its payload happens to look like.
//
// An area is given by an address that may be anywhere inside its block (the kernel's usage is
// kmemleak_scan_area(&obj->field, sizeof(obj->field))), so it cannot be filed under its block when
// it is made: the allocation table is hashed by block start. Areas are kept here, sorted by start,
// and matched to blocks by the scanner (LeakScanner), which has the sorted block index. They die
// with their block: OnFree drops every area inside a freed block, so an area never carries over to
// a later block at the same address. realloc removes the block first (native-shim/malloc.c,
// resize), so it drops the areas too, as krealloc does in the kernel; if the realloc then fails,
// the block is scanned whole again, which can only hide a leak, never invent one.
//
// Size SIZE_MAX means "from ptr to the end of the block", as in the kernel.
//
// Cost: the free path reads one static word (s_count) while no area exists, which is every
// program that never calls kmemleak_scan_area; with areas, a free takes the lock and does one
// binary search.
//
// LOCKING
//  s_lock  guards s_entries and s_count. A leaf: taken with no other lock held (OnFree runs after
//          the shard lock is released), never held across a call out, a managed allocation or a
//          park point, so a stopped world never finds it held by a parked thread.

using System;
using System.Runtime.CompilerServices;
using System.Threading;
using Interposer.Native;

namespace Interposer.Recording;

internal static unsafe class ScanAreas
{
    /// <summary>Areas kept at most (kmemleak has no cap, but it allocates; we run inside malloc).</summary>
    public const int Capacity = 16384; // the message in Add says this number

    public struct Area
    {
        public ulong Start;
        public ulong End; // exclusive; ulong.MaxValue = to the end of the block (size SIZE_MAX)
    }

    private static int s_lock;
    private static nint s_map;      // Capacity entries, mmap'ed on the first Add; sorted by Start
    private static int s_count;
    private static int s_fullSaid;

    /// <summary>Adds [start, start+size). 1 when kept (or already present), 0 when the table is full or size is 0.</summary>
    public static int Add(ulong start, ulong size)
    {
        if (size == 0)
            return 0;
        ulong end = size == ulong.MaxValue || start + size < start ? ulong.MaxValue : start + size;
        if (s_entries == null && !Map())
            return 0;
        int kept = 1;
        SpinLockWord.Enter(ref s_lock);
        int i = LowerBound(start);
        bool present = false;
        for (int k = i; k < s_count && s_entries[k].Start == start; k++)
            present |= s_entries[k].End == end;
        if (!present)
        {
            if (s_count == Capacity)
            {
                kept = 0;
            }
            else
            {
                new Span<Area>(s_entries + i, s_count - i).CopyTo(new Span<Area>(s_entries + i + 1, s_count - i));
                s_entries[i] = new Area { Start = start, End = end };
                Volatile.Write(ref s_count, s_count + 1);
            }
        }
        SpinLockWord.Exit(ref s_lock);
        // A host thread inside the annotation call: no managed allocation (a GC outside the
        // shim's window), so a literal.
        if (kept == 0 && Interlocked.Exchange(ref s_fullSaid, 1) == 0)
            Diagnostics.RawBytes("interposer: kmemleak_scan_area: more than 16384 scan areas; later ones are ignored and their blocks scanned whole\n"u8);
        return kept;
    }

    /// <summary>Drops the areas that start inside the freed block [address, address + size).</summary>
    public static void OnFree(ulong address, ulong size)
    {
        if (Volatile.Read(ref s_count) == 0)
            return;
        ulong end = address + (size == 0 ? 1 : size);
        SpinLockWord.Enter(ref s_lock);
        int lo = LowerBound(address);
        int hi = lo;
        while (hi < s_count && s_entries[hi].Start < end)
            hi++;
        if (hi > lo)
        {
            new Span<Area>(s_entries + hi, s_count - hi).CopyTo(new Span<Area>(s_entries + lo, s_count - hi));
            Volatile.Write(ref s_count, s_count - (hi - lo));
        }
        SpinLockWord.Exit(ref s_lock);
    }

    /// <summary>Removes exactly [start, end) if it is still kept. True when it was (so no free took it).</summary>
    public static bool Remove(Area area)
    {
        bool found = false;
        SpinLockWord.Enter(ref s_lock);
        for (int k = LowerBound(area.Start); k < s_count && s_entries[k].Start == area.Start; k++)
        {
            if (s_entries[k].End != area.End)
                continue;
            new Span<Area>(s_entries + k + 1, s_count - k - 1).CopyTo(new Span<Area>(s_entries + k, s_count - k - 1));
            Volatile.Write(ref s_count, s_count - 1);
            found = true;
            break;
        }
        SpinLockWord.Exit(ref s_lock);
        return found;
    }

    /// <summary>A copy of every area, sorted by start. Allocates: the scanner calls it before the stop.</summary>
    public static Area[] Copy()
    {
        if (Volatile.Read(ref s_count) == 0)
            return Array.Empty<Area>();
        SpinLockWord.Enter(ref s_lock);
        var copy = new Area[s_count];
        new ReadOnlySpan<Area>(s_entries, s_count).CopyTo(copy);
        SpinLockWord.Exit(ref s_lock);
        return copy;
    }

    public static int Count
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Volatile.Read(ref s_count);
    }

    // First entry whose Start >= start (under s_lock).
    private static int LowerBound(ulong start)
    {
        int lo = 0, hi = s_count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (s_entries[mid].Start < start)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }

    private static Area* s_entries => (Area*)Volatile.Read(ref s_map);

    // Two threads may race here; the loser unmaps its copy.
    private static bool Map()
    {
        void* mapped = Interop.Libc.MapAnonymous((nuint)(sizeof(Area) * Capacity));
        if (mapped == null)
            return false;
        if (Interlocked.CompareExchange(ref s_map, (nint)mapped, 0) != 0)
            Interop.Libc.Munmap(mapped, (nuint)(sizeof(Area) * Capacity));
        return true;
    }
}
