// HeapBlock and MemoryRange: the two inputs of a leak scan, independent of where they come from
// (the allocation table's IpRecord snapshot, /proc/self/maps, stopped threads' stacks, a test).

using System;

namespace Interposer.Scanner.Scan;

/// <summary>Per-block annotations that change how marking treats a block (kmemleak's OBJECT_* flags).</summary>
[Flags]
internal enum BlockFlags : ushort
{
    None = 0,
    /// <summary>kmemleak_no_scan: the block holds no pointers. It is marked, but its contents are never read.</summary>
    NoScan = 1,
    /// <summary>kmemleak_scan_area: only the block's scan areas are read (Marker's ScanAreaSet).</summary>
    ScanAreas = 2,
}

/// <summary>One live heap block as the scanner sees it.</summary>
internal struct HeapBlock
{
    /// <summary>First byte. 0 is not a block (an empty table slot) and is dropped by <see cref="BlockIndex.Build"/>.</summary>
    public ulong Address;

    /// <summary>Requested size. A zero-size block still owns its first byte for containment.</summary>
    public ulong Size;

    /// <summary>kmemleak's min_count: -1 = black (ignored: never reported, never scanned), 0 = always
    /// gray (a root, e.g. kmemleak_not_leak), n &gt; 0 = white until n references are found (1 for malloc).</summary>
    public int MinCount;

    /// <summary>Annotations.</summary>
    public BlockFlags Flags;

    /// <summary>The caller's handle for this block (e.g. its index in the IpRecord snapshot): the index
    /// sorts blocks by address, so results come back by sorted position and map home through Id.</summary>
    public int Id;

    public HeapBlock(ulong address, ulong size, int minCount = 1, BlockFlags flags = BlockFlags.None, int id = 0)
    {
        Address = address;
        Size = size;
        MinCount = minCount;
        Flags = flags;
        Id = id;
    }

    public override readonly string ToString() =>
        $"0x{Address:x}+{Size} min_count={MinCount}{(Flags != 0 ? " " + Flags : "")} id={Id}";
}

/// <summary>A range of memory to read as words: a root (data/bss, a stack) or a block's contents.</summary>
internal readonly record struct MemoryRange(ulong Start, ulong Length)
{
    /// <summary>One past the last byte; saturates instead of wrapping.</summary>
    public ulong End => Start + Length < Start ? ulong.MaxValue : Start + Length;

    public static MemoryRange FromBounds(ulong start, ulong end) => new(start, end > start ? end - start : 0);

    public override string ToString() => $"[0x{Start:x}, 0x{End:x})";
}
