// BlockIndex: the live blocks of one scan, sorted by address, and the "which block contains this
// word" lookup that marking runs on every candidate word of every root and every gray block.
//
// The lookup is the scan's cost, so its shape follows measurements (DESIGN.md, one core here): a
// binary search per word runs at 0.05-0.16 GB/s, a hash probe 0.5-1.2 GB/s, a sequential read
// 6-13 GB/s. A word goes through filters, cheapest first:
//   1. [Min, Min + Span) of all blocks: one subtract and compare; small integers, most text and
//      pointers below or above the heap stop here.
//   2. its 256 KiB chunk in a small open-addressed hash (one slot per chunk that holds a block:
//      ~4000 per GB of heap, 16 bytes each); pointers into libraries, stacks and the gaps between
//      heaps stop here.
//   3. its 512-byte page in a direct array per chunk (PageFirst), giving the short run of blocks
//      that can contain the word (a few for malloc-sized blocks), whose starts are compared
//      without branches (bisecting first only in pages of many tiny blocks).
// Page size, measured marking the dense synthetic heap (2M blocks of ~250 bytes, ScanRateTests,
// best of 2 runs, quiet machine): 4 KiB 3.6 s, 1 KiB 1.7 s, 512 B 1.6 s, 256 B 1.7 s; pointer
// chasing (zeroed heap) ~1.0 s for all. Smaller pages mean shorter runs (fewer lines, fewer
// compares) but a larger table.
// Memory: 16 bytes per block (BlockSpan) + 4 bytes per 512 bytes spanned by blocks (0.8% of the
// heap) + the HeapBlock array. (A chunk wholly inside one huge block could skip its 512 entries;
// not done.)
//
// The lookup is cut into stages (LocatePage, LocateRun, LocateBlock, Contains) so that Marker can
// run each stage over a batch of words, every stage prefetching what the next one loads.
//
// Built before the world stops (it allocates); read-only afterwards, so it needs no lock.
// Blocks of a consistent snapshot never overlap. If a table bug ever produces overlap, lookups
// resolve the overlap to the later block (see Build), and OverlapCount says it happened.

using System;
using System.Collections.Generic;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Interposer.Scanner.Scan;

internal sealed class BlockIndex
{
    private const int PageShift = 9;                    // 512-byte "pages": runs of a few blocks (see header)
    private const int ChunkShift = 9;                   // pages per chunk = 512 (256 KiB chunks)
    private const ulong PageInChunkMask = (1UL << ChunkShift) - 1;
    private const ulong EmptyKey = ulong.MaxValue;      // no chunk number is this large
    private const int LinearSearchLimit = 32;           // longer runs (pages of tiny blocks) bisect first

    // One chunk that holds blocks: the pages [Lo, Lo + Count) of it are covered by PageFirst
    // entries starting at Offset. PageFirst has Count + 1 entries for the chunk (see LocateRun).
    [StructLayout(LayoutKind.Sequential)]
    private struct ChunkSlot
    {
        public ulong Key;    // chunk number (address >> (PageShift + ChunkShift)), or EmptyKey
        public int Offset;   // first PageFirst entry of page Lo
        public ushort Lo;    // first page (within the chunk) that a block touches
        public ushort Count; // pages from Lo to the last page a block touches, inclusive
    }

    // Start and lookup end together: the search reads starts, the containment check the end of
    // the block found, usually in the same cache line.
    [StructLayout(LayoutKind.Sequential)]
    private struct BlockSpan
    {
        public ulong Start; // _blocks[i].Address
        public ulong End;   // start + max(size, 1), clipped to the next start
    }

    private readonly HeapBlock[] _blocks;  // sorted by Address, no duplicates, no Address 0
    private readonly BlockSpan[] _spans;   // per block: start, and lookup end (pinned: prefetched by address)
    private readonly ChunkSlot[] _chunks;  // open addressing, linear probing, power-of-two length
    private readonly int _chunkHashShift;  // 64 - log2(_chunks.Length)
    private readonly int[] _pageFirst;     // per page: first block whose lookup end is above the page base
    private readonly ulong _min;           // lowest block start
    private readonly ulong _span;          // highest lookup end - _min (0 when empty)

    private BlockIndex(HeapBlock[] blocks, BlockSpan[] spans, ChunkSlot[] chunks, int chunkHashShift,
        int[] pageFirst, int droppedCount, int overlapCount)
    {
        _blocks = blocks;
        _spans = spans;
        _chunks = chunks;
        _chunkHashShift = chunkHashShift;
        _pageFirst = pageFirst;
        _min = blocks.Length > 0 ? spans[0].Start : 0;
        _span = blocks.Length > 0 ? spans[^1].End - spans[0].Start : 0;
        DroppedCount = droppedCount;
        OverlapCount = overlapCount;
    }

    /// <summary>The blocks sorted by address. Marking results are indexed by position in this array.</summary>
    public ReadOnlySpan<HeapBlock> Blocks => _blocks;

    public int Count => _blocks.Length;

    /// <summary>Lowest block address; with <see cref="Span"/> the cheapest filter of a word.</summary>
    public ulong Min => _min;

    /// <summary>A word w can be a pointer into a block only if w - Min &lt; Span (unsigned).</summary>
    public ulong Span => _span;

    /// <summary>Input blocks left out: Address 0, a range that wraps, or a duplicate address (first kept).</summary>
    public int DroppedCount { get; }

    /// <summary>Blocks that start inside the previous block: a table bug; lookups give the later block.</summary>
    public int OverlapCount { get; }

    /// <summary>Number of hash slots and page entries; for diagnostics and tests.</summary>
    public int ChunkSlotCount => _chunks.Length;

    public int PageEntryCount => _pageFirst.Length;

    /// <summary>
    /// Builds the index of one scan. Allocates (arrays sized from the input): call it before the
    /// world stops. The input array is not modified.
    /// </summary>
    public static BlockIndex Build(ReadOnlySpan<HeapBlock> input)
    {
        // Sort by address through a key array: Array.Sort on ulong keys is several times faster
        // than a comparer over 32-byte structs, and a radix sort faster again on millions of
        // blocks (2M: ~230 ms introsort vs ~40 ms radix, measured in the scan benchmark).
        var keys = new ulong[input.Length];
        var order = new int[input.Length];
        for (int i = 0; i < input.Length; i++)
        {
            keys[i] = input[i].Address;
            order[i] = i;
        }
        if (keys.Length >= RadixThreshold)
            RadixSort(keys, order);
        else
            Array.Sort(keys, order);

        var blocks = new HeapBlock[input.Length];
        int n = 0, dropped = 0;
        for (int i = 0; i < keys.Length; i++)
        {
            ref readonly HeapBlock b = ref input[order[i]];
            bool wraps = b.Size > 0 && b.Address + b.Size - 1 < b.Address; // last byte past 2^64
            bool duplicate = n > 0 && blocks[n - 1].Address == b.Address;
            if (b.Address == 0 || wraps || duplicate || b.Address == ulong.MaxValue)
            {
                dropped++;
                continue;
            }
            blocks[n++] = b;
        }
        if (n != blocks.Length)
            Array.Resize(ref blocks, n);

        // Pinned: lookups prefetch into it by address.
        var spans = GC.AllocateUninitializedArray<BlockSpan>(n, pinned: true);
        int overlaps = 0;
        for (int i = 0; i < n; i++)
        {
            spans[i].Start = blocks[i].Address;
            ulong size = blocks[i].Size == 0 ? 1 : blocks[i].Size;    // a zero-size block owns its first byte
            ulong end = blocks[i].Address + size;
            spans[i].End = end == 0 ? ulong.MaxValue : end;            // ends exactly at 2^64
        }
        for (int i = 0; i + 1 < n; i++)
        {
            if (spans[i].End > spans[i + 1].Start)
            {
                overlaps++;
                spans[i].End = spans[i + 1].Start; // keeps starts and ends both sorted: the page search relies on it
            }
        }

        BuildPageTable(spans, out var chunks, out int shift, out var pageFirst);
        return new BlockIndex(blocks, spans, chunks, shift, pageFirst, dropped, overlaps);
    }

    private const int RadixThreshold = 1 << 15;

    /// <summary>LSD radix sort of keys (carrying order along), 16 bits a pass over the bits that
    /// vary. Stable, so equal addresses keep their input order, as the duplicate check needs.</summary>
    internal static void RadixSort(ulong[] keys, int[] order)
    {
        int n = keys.Length;
        ulong or = 0, and = ulong.MaxValue;
        foreach (ulong k in keys)
        {
            or |= k;
            and &= k;
        }
        ulong varying = or ^ and; // bits that differ somewhere: only those need passes
        ulong[] fromKeys = keys, toKeys = new ulong[n];
        int[] fromOrder = order, toOrder = new int[n];
        var counts = new int[1 << 16];
        for (int shift = 0; shift < 64; shift += 16)
        {
            if (((varying >> shift) & 0xFFFF) == 0)
                continue;
            Array.Clear(counts);
            for (int i = 0; i < n; i++)
                counts[(int)((fromKeys[i] >> shift) & 0xFFFF)]++;
            int sum = 0;
            for (int b = 0; b < counts.Length; b++)
            {
                int c = counts[b];
                counts[b] = sum;
                sum += c;
            }
            for (int i = 0; i < n; i++)
            {
                int slot = counts[(int)((fromKeys[i] >> shift) & 0xFFFF)]++;
                toKeys[slot] = fromKeys[i];
                toOrder[slot] = fromOrder[i];
            }
            (fromKeys, toKeys) = (toKeys, fromKeys);
            (fromOrder, toOrder) = (toOrder, fromOrder);
        }
        if (!ReferenceEquals(fromKeys, keys)) // an odd number of passes: the result is in the scratch arrays
        {
            Array.Copy(fromKeys, keys, n);
            Array.Copy(fromOrder, order, n);
        }
    }

    // Chunks in address order, each with the page range its blocks touch; then one PageFirst entry
    // per page of each range plus one for the page after it, filled by a single moving pointer.
    private static void BuildPageTable(BlockSpan[] spans, out ChunkSlot[] slots, out int shift, out int[] pageFirst)
    {
        int n = spans.Length;
        var ranges = new List<(ulong Chunk, ulong LoPage, ulong HiPage)>();
        for (int i = 0; i < n; i++)
        {
            ulong firstPage = spans[i].Start >> PageShift;
            ulong lastPage = (spans[i].End - 1) >> PageShift;
            for (ulong chunk = firstPage >> ChunkShift; chunk <= lastPage >> ChunkShift; chunk++)
            {
                ulong lo = Math.Max(firstPage, chunk << ChunkShift);
                ulong hi = Math.Min(lastPage, (chunk << ChunkShift) | PageInChunkMask);
                if (ranges.Count > 0 && ranges[^1].Chunk == chunk)
                    ranges[^1] = (chunk, ranges[^1].LoPage, Math.Max(ranges[^1].HiPage, hi));
                else
                    ranges.Add((chunk, lo, hi));
            }
        }

        int bits = 4;
        while ((1 << bits) < ranges.Count * 2)
            bits++;
        slots = new ChunkSlot[1 << bits];
        shift = 64 - bits;
        for (int i = 0; i < slots.Length; i++)
            slots[i].Key = EmptyKey;

        long entries = 0;
        foreach (var r in ranges)
            entries += (long)(r.HiPage - r.LoPage) + 2;
        pageFirst = GC.AllocateUninitializedArray<int>(checked((int)entries), pinned: true);

        int offset = 0, k = 0;
        foreach (var r in ranges)
        {
            uint h = Hash(r.Chunk, shift);
            while (slots[h].Key != EmptyKey)
                h = (h + 1) & (uint)(slots.Length - 1);
            slots[h] = new ChunkSlot
            {
                Key = r.Chunk,
                Offset = offset,
                Lo = (ushort)(r.LoPage & PageInChunkMask),
                Count = (ushort)(r.HiPage - r.LoPage + 1),
            };
            for (ulong page = r.LoPage; page <= r.HiPage + 1; page++)
            {
                ulong pageBase = page << PageShift;
                while (k < n && spans[k].End <= pageBase)
                    k++;
                pageFirst[offset++] = k;
            }
        }
    }

    // Fibonacci hashing: consecutive chunk numbers (one brk heap) spread over the table.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Hash(ulong chunk, int shift) => (uint)((chunk * 0x9E3779B97F4A7C15UL) >> shift);

    /// <summary>Position of the block containing address ([start, start + max(size, 1))), or -1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Find(ulong address) => address - _min < _span ? FindInHeap(address) : -1;

    /// <summary>
    /// <see cref="Find"/> for a word already known to be in [Min, Min + Span): the four lookup
    /// stages in a row. Allocates nothing, takes no lock, never throws: safe while the world is
    /// stopped. Marking runs the same stages over a batch of words instead (see Marker).
    /// </summary>
    public int FindInHeap(ulong address)
    {
        int entry = LocatePage(address);
        if (entry < 0)
            return -1;
        int lo = LocateRun(entry, out int hi);
        int k = LocateBlock(address, lo, hi);
        return k >= 0 && Contains(k, address) ? k : -1;
    }

    // ---- lookup stages ----
    // Each stage's loads were prefetched by the stage before, so a batch of words looked up stage
    // by stage keeps many cache misses in flight. Measured on the dense synthetic heap (20M
    // candidate words, 1 KiB pages, quiet machine): Find one word at a time 124-140 ns per candidate (a chain
    // of dependent misses behind mispredicted branches); the stages over batches of 64, 35-40 ns.

    /// <summary>Stage 1: the PageFirst entry of address's page, or -1 when no block touches the
    /// page. Probes only the chunk hash (small: L1/L2) and prefetches the entry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int LocatePage(ulong address)
    {
        ulong page = address >> PageShift;
        ulong chunk = page >> ChunkShift;
        ref ChunkSlot slot0 = ref MemoryMarshal.GetArrayDataReference(_chunks);
        uint mask = (uint)_chunks.Length - 1;
        uint h = Hash(chunk, _chunkHashShift);
        ref ChunkSlot slot = ref Unsafe.Add(ref slot0, h);
        while (slot.Key != chunk)
        {
            if (slot.Key == EmptyKey)
                return -1;
            h = (h + 1) & mask;
            slot = ref Unsafe.Add(ref slot0, h);
        }
        uint pageInRange = (uint)(page & PageInChunkMask) - slot.Lo;
        if (pageInRange >= slot.Count)
            return -1;
        int entry = slot.Offset + (int)pageInRange;
        Prefetch(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_pageFirst), entry));
        return entry;
    }

    /// <summary>Stage 2: the run [lo, hi] of blocks that can contain an address of the entry's
    /// page. Blocks before lo end at or below the page; a block after hi starts after the end of
    /// block hi, which is past the page. Prefetches the run.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int LocateRun(int entry, out int hi)
    {
        ref int first = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_pageFirst), entry);
        int lo = first;
        hi = Unsafe.Add(ref first, 1);
        int last = _spans.Length - 1;
        if (hi > last)
            hi = last;
        ref BlockSpan spans = ref MemoryMarshal.GetArrayDataReference(_spans);
        Prefetch(ref Unsafe.Add(ref spans, lo));
        Prefetch(ref Unsafe.Add(ref spans, hi));
        return lo;
    }

    /// <summary>Stage 3: the last block of the run that starts at or below address, or -1.
    /// Bisects long runs (pages of many tiny blocks), then counts.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int LocateBlock(ulong address, int lo, int hi)
    {
        ref BlockSpan spans = ref MemoryMarshal.GetArrayDataReference(_spans);
        if (Unsafe.Add(ref spans, lo).Start > address)
            return -1;
        // Invariant: start[lo] <= address; the answer is the last such index in [lo, hi].
        while (hi - lo > LinearSearchLimit)
        {
            int mid = (lo + hi + 1) >> 1;
            if (Unsafe.Add(ref spans, mid).Start <= address)
                lo = mid;
            else
                hi = mid - 1;
        }
        // Starts are sorted: the answer is lo plus the number of later starts <= address, counted
        // without a data-dependent branch (a mispredict here costs more than the extra compares).
        int k = lo;
        for (int i = lo + 1; i <= hi; i++)
            k += Unsafe.Add(ref spans, i).Start <= address ? 1 : 0;
        return k;
    }

    /// <summary>Stage 4: whether block k (from LocateBlock) reaches address. Its end shares a cache line with its start.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Contains(int k, ulong address) => address < Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_spans), k).End;

    /// <summary>A hint to bring the line holding value into the cache; never faults, no effect off x86.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void Prefetch<T>(ref T value)
    {
        // The arrays prefetched from are on the pinned object heap; a stale address would only
        // waste the hint anyway.
        if (Sse.IsSupported)
            Sse.Prefetch0(Unsafe.AsPointer(ref value));
    }

    /// <summary>Prefetch of an address in the scanned process (a gray block's first line).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void Prefetch(ulong address)
    {
        if (Sse.IsSupported)
            Sse.Prefetch0((void*)address);
    }

    /// <summary>Position of the block that starts exactly at address, or -1 (binary search: not for hot paths).</summary>
    public int IndexOf(ulong address)
    {
        int lo = 0, hi = _spans.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_spans[mid].Start == address)
                return mid;
            if (_spans[mid].Start < address)
                lo = mid + 1;
            else
                hi = mid - 1;
        }
        return -1;
    }

    /// <summary>True when any block overlaps [start, end): e.g. to keep malloc arenas out of the mmap root set.</summary>
    public bool AnyBlockIn(ulong start, ulong end)
    {
        if (start >= end || _spans.Length == 0)
            return false;
        // First block whose lookup end is above start (ends are sorted).
        int lo = 0, hi = _spans.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_spans[mid].End <= start)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo < _spans.Length && _spans[lo].Start < end;
    }

    /// <summary>The bytes of block i to read as words (its real size, not the lookup size).</summary>
    public MemoryRange ContentsOf(int i) => new(_blocks[i].Address, _blocks[i].Size);

    /// <summary>Block i's first byte, from the lookup array (hot in cache right after a hit).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong StartOf(int i) => _spans[i].Start;

    /// <summary>
    /// [start, end) of block i's contents, from the lookup array: the lookup end differs from
    /// start + size only for a zero-size block (start + 1: no whole word either way) and for a
    /// block clipped by an overlap, which falls back to the HeapBlock.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void GetContents(int i, out ulong start, out ulong end)
    {
        ref BlockSpan span = ref _spans[i];
        start = span.Start;
        end = OverlapCount == 0 ? span.End : start + _blocks[i].Size;
    }
}
