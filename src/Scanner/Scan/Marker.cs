// Marker: kmemleak's marking over one BlockIndex (mm/kmemleak.c: scan_block, update_refs,
// scan_gray_list), with LeakSanitizer's direct/indirect split of what stays white.
//
// Colours are predicates over (count, min_count), defined once below:
//   white  count <  min_count          unreferenced so far: reported if still white at the end
//   gray   count >= min_count >= 0     referenced enough (or min_count 0: a root): its contents are scanned
//   black  min_count == -1             ignored: never reported, never scanned
// A scan: Reset (count = 0; blocks gray from the start - min_count 0 - go on the gray list), scan
// the roots, drain the gray list (a block's contents are scanned once, when it turns gray, which
// happens at most once), then ClassifyUnreferenced. Only white blocks gain counts, so a count
// never exceeds min_count and every block enters the gray list at most once: the list is one
// array of Count entries, allocated up front.
//
// Speed (the scan runs with the world stopped): words that pass the [Min, Min + Span) filter are
// queued without a branch and looked up 64 at a time, one BlockIndex stage over the whole batch
// before the next, so their cache misses overlap; the next gray block's first lines and, when
// the gray list is empty (pointer chasing), the targets of the pending words are prefetched.
// Measured on 2M blocks / 491 MB (ScanRateTests; Release JIT and NativeAOT, quiet machine),
// against liblsan's leak check on the same heap built with malloc: dense contents 1.5-1.7 s vs
// LSan 3.0-3.2 s; a zeroed heap (one random-order list: pure pointer chasing) 0.94-1.05 s vs
// LSan 1.14-1.36 s.
//
// THREADING: one scan at a time on one thread (the scanner's); nothing here locks. Everything
// between Reset and the end of ClassifyUnreferenced allocates nothing, takes no lock and calls
// nothing but the reader: it may run while every other thread is stopped. The constructor and
// Unreferenced() allocate: call them before the stop and after the resume.

using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Interposer.Scanner.Scan;

internal enum BlockColor : byte
{
    White,
    Gray,
    Black,
}

/// <summary>Counters of one scan, for the report header and for measuring scan rate.</summary>
internal struct MarkStats
{
    public long RootBytes;      // bytes of roots read (ranges and loose words)
    public long BlockBytes;     // bytes of gray blocks read
    public long IndirectBytes;  // bytes of white blocks read by ClassifyUnreferenced
    public long Words;          // words examined
    public long Candidates;     // words inside [Min, Min + Span): a lookup was needed
    public long Hits;           // lookups that found a block other than the one being scanned
    public int BlocksScanned;   // gray blocks whose contents were read
}

internal sealed class Marker
{
    /// <summary>Largest piece a reader is asked for (512 KiB): bounds a copying reader's buffer.</summary>
    public const int MaxReadWords = 1 << 16;

    private const int NoBlock = -1; // "scanning a root": no self-reference to skip

    // Everything marking needs to know about a block besides its place, in 8 bytes: a hit
    // touches one line, and a gray block is scanned without touching its HeapBlock (32 bytes, a
    // separate miss on every hop of a linked list).
    [StructLayout(LayoutKind.Sequential)]
    private struct RefCount
    {
        public int Count;
        public short MinCount;   // -1 black; HeapBlock.MinCount clamped to short
        public BlockFlags Flags;
    }

    private readonly BlockIndex _index;
    private readonly ScanAreaSet _areas;   // kmemleak_scan_area: blocks read only in part
    private readonly RefCount[] _refs;     // per block; MinCount copied from the block, -1 after Ignore
    private readonly int[] _grayList;      // stack of gray blocks whose contents are still to scan
    private int _grayCount;                // entries in _grayList
    private readonly bool[] _indirect;     // white and pointed to from another white block
    private bool _classified;              // ClassifyUnreferenced ran since Reset
    private MarkStats _stats;

    // The candidate batch: words that passed the [Min, Min + Span) filter, with the block whose
    // contents they came from, waiting for the staged lookup in FlushCandidates. Batching across
    // blocks matters: a gray block holds ~10 candidates on average, too few to overlap misses.
    private const int Batch = 64;
    private readonly ulong[] _candidate = new ulong[Batch];   // the word
    private readonly int[] _candidateOwner = new int[Batch];  // block it was read from, or NoBlock
    private readonly int[] _candidateEntry = new int[Batch];  // stage 1: page entry; stage 3: block
    private readonly int[] _candidateLo = new int[Batch];     // stage 2: run
    private readonly int[] _candidateHi = new int[Batch];
    private int _pending;                                      // candidates in the batch

    // Cache lines prefetched from a block about to be read (the next gray block; a chased pointer).
    // Malloc blocks average a few lines; 1, 2, 4 and 8 were tried on the synthetic heap: 2-8 were
    // equal within noise, all ~10% better than 1 when pointer-chasing.
    private const int PrefetchLines = 4;
    private bool _indirectPass;                                // what a hit does: count, or flag indirect

    public Marker(BlockIndex index, ScanAreaSet? areas = null)
    {
        _index = index;
        _areas = areas ?? ScanAreaSet.Empty;
        _refs = GC.AllocateUninitializedArray<RefCount>(index.Count, pinned: true); // prefetched by address
        _grayList = new int[index.Count];
        _indirect = new bool[index.Count];
        var blocks = index.Blocks;
        for (int i = 0; i < blocks.Length; i++)
        {
            _refs[i].MinCount = (short)Math.Clamp(blocks[i].MinCount, -1, short.MaxValue);
            _refs[i].Flags = blocks[i].Flags;
        }
        foreach (int i in _areas.Blocks)
            if ((uint)i < (uint)_refs.Length)
                _refs[i].Flags |= BlockFlags.ScanAreas;
        Reset();
    }

    public BlockIndex Index => _index;

    public MarkStats Stats => _stats;

    // ---- colours (kmemleak: color_white / color_gray; black is min_count == KMEMLEAK_BLACK) ----

    private static bool IsWhite(in RefCount r) => r.Count < r.MinCount;

    private static bool IsGray(in RefCount r) => r.MinCount >= 0 && r.Count >= r.MinCount;

    public BlockColor ColorOf(int i)
    {
        ref readonly RefCount r = ref _refs[i];
        return r.MinCount < 0 ? BlockColor.Black : IsWhite(r) ? BlockColor.White : BlockColor.Gray;
    }

    /// <summary>White and referenced from another white block (LSan's "indirect leak"). Valid after ClassifyUnreferenced.</summary>
    public bool IsIndirect(int i) => _classified && _indirect[i] && IsWhite(_refs[i]);

    /// <summary>White and not indirect (LSan's "direct leak"): no other white block points to it. Before ClassifyUnreferenced every white block is direct.</summary>
    public bool IsDirect(int i) => IsWhite(_refs[i]) && !IsIndirect(i);

    /// <summary>References found to block i in this scan (capped at its min_count).</summary>
    public int CountOf(int i) => _refs[i].Count;

    // ---- phases ----

    /// <summary>Starts a new scan: counts to 0, min_count-0 blocks on the gray list. No allocation.</summary>
    public void Reset()
    {
        _grayCount = 0;
        _pending = 0;
        _indirectPass = false;
        _classified = false;
        _stats = default;
        Array.Clear(_indirect);
        for (int i = 0; i < _refs.Length; i++)
        {
            _refs[i].Count = 0;
            if (IsGray(_refs[i]))
                _grayList[_grayCount++] = i;
        }
    }

    /// <summary>
    /// Makes block i black for this marker (e.g. freed between the snapshot and the stop, so its
    /// memory must not be read). Call before scanning any root.
    /// </summary>
    public void Ignore(int i) => _refs[i].MinCount = -1;

    /// <summary>
    /// Scans root ranges (data/bss, stacks from SP to the top, TLS): every aligned word inside.
    /// Scan every root before DrainGrayList; a root scanned after it needs another DrainGrayList.
    /// </summary>
    public void ScanRoots<TReader>(ref TReader reader, ReadOnlySpan<MemoryRange> roots)
        where TReader : struct, IMemoryReader
    {
        foreach (var root in roots)
            _stats.RootBytes += ScanRange(ref reader, root.Start, root.End, NoBlock);
        FlushCandidates();
    }

    /// <summary>Scans words that are not in memory the reader can see, e.g. saved registers.</summary>
    public void ScanRootWords(ReadOnlySpan<ulong> words)
    {
        _stats.RootBytes += (long)words.Length * sizeof(ulong);
        ScanWords(words, NoBlock);
        FlushCandidates();
    }

    /// <summary>Scans gray blocks' contents until no gray block is left unscanned (kmemleak's scan_gray_list).</summary>
    public void DrainGrayList<TReader>(ref TReader reader) where TReader : struct, IMemoryReader
    {
        while (true)
        {
            if (_grayCount == 0)
            {
                // Candidates still in the batch may turn more blocks gray.
                FlushCandidates();
                if (_grayCount == 0)
                    break;
            }
            int i = _grayList[--_grayCount];
            // Gray blocks come in no useful address order: start the next one's misses now.
            if (_grayCount > 0)
                PrefetchContents(_grayList[_grayCount - 1]);
            if (_refs[i].MinCount < 0 || (_refs[i].Flags & BlockFlags.NoScan) != 0)
                continue; // ignored after it was listed, or holds no pointers by annotation
            _stats.BlockBytes += ScanContents(ref reader, i);
            _stats.BlocksScanned++;
        }
    }

    /// <summary>
    /// LeakSanitizer's second pass (MarkIndirectlyLeakedCb): reads every white block (except
    /// no_scan ones) and flags the other white blocks it points to as indirect. Not transitive and
    /// not counting: it changes no colour. A leaked cycle with nothing outside pointing into it is
    /// therefore all indirect. Run it while the world is still stopped: a white block may be freed
    /// by its owner through a hidden pointer as soon as threads run again.
    /// </summary>
    public void ClassifyUnreferenced<TReader>(ref TReader reader) where TReader : struct, IMemoryReader
    {
        FlushCandidates(); // marking's last candidates count, not flag
        _indirectPass = true;
        for (int i = 0; i < _refs.Length; i++)
        {
            if (!IsWhite(_refs[i]) || (_refs[i].Flags & BlockFlags.NoScan) != 0)
                continue;
            _stats.IndirectBytes += ScanContents(ref reader, i);
        }
        FlushCandidates();
        _indirectPass = false;
        _classified = true;
    }

    /// <summary>One whole scan over roots and root words, for callers with no stop in between.</summary>
    public void Run<TReader>(ref TReader reader, ReadOnlySpan<MemoryRange> roots, ReadOnlySpan<ulong> rootWords = default)
        where TReader : struct, IMemoryReader
    {
        ScanRoots(ref reader, roots);
        ScanRootWords(rootWords);
        DrainGrayList(ref reader);
        ClassifyUnreferenced(ref reader);
    }

    /// <summary>Number of white blocks. No allocation.</summary>
    public int UnreferencedCount
    {
        get
        {
            int white = 0;
            for (int i = 0; i < _refs.Length; i++)
                if (IsWhite(_refs[i]))
                    white++;
            return white;
        }
    }

    /// <summary>Positions (in Index.Blocks) of the white blocks, ascending. Allocates: call after the world resumes.</summary>
    public int[] Unreferenced()
    {
        var result = new int[UnreferencedCount];
        int n = 0;
        for (int i = 0; i < _refs.Length; i++)
            if (IsWhite(_refs[i]))
                result[n++] = i;
        return result;
    }

    // ---- the loop ----

    // The first lines of block i, up to its end.
    private void PrefetchContents(int i)
    {
        _index.GetContents(i, out ulong start, out ulong end);
        ulong stop = end - start > PrefetchLines * 64 ? start + PrefetchLines * 64 : end;
        for (ulong line = start; line < stop; line += 64)
            BlockIndex.Prefetch(line);
    }

    // Block i's contents: all of it, or only its scan areas (clipped to the block).
    private long ScanContents<TReader>(ref TReader reader, int i) where TReader : struct, IMemoryReader
    {
        _index.GetContents(i, out ulong start, out ulong end);
        if ((_refs[i].Flags & BlockFlags.ScanAreas) == 0)
            return ScanRange(ref reader, start, end, i);
        long bytes = 0;
        foreach (MemoryRange area in _areas.AreasOf(i))
        {
            ulong from = Math.Max(area.Start, start), to = Math.Min(area.End, end);
            if (from < to)
                bytes += ScanRange(ref reader, from, to, i);
        }
        return bytes;
    }

    // Reads [start, end) as aligned words (a trailing partial word is not a pointer: LSan's and
    // kmemleak's rule), in pieces of at most MaxReadWords. Returns the bytes handed to ScanWords.
    private long ScanRange<TReader>(ref TReader reader, ulong start, ulong end, int owner)
        where TReader : struct, IMemoryReader
    {
        ulong word = (start + 7) & ~7UL;
        if (word < start || end <= word)
            return 0;
        ulong words = (end - word) >> 3;
        long bytes = 0;
        while (words > 0)
        {
            int piece = words > MaxReadWords ? MaxReadWords : (int)words;
            var span = reader.ReadWords(word, piece);
            if (span.Length == piece)
            {
                ScanWords(span, owner);
                bytes += (long)piece * sizeof(ulong);
            }
            word += (ulong)piece * sizeof(ulong);
            words -= (ulong)piece;
        }
        return bytes;
    }

    // kmemleak's scan_block, first half: per word one subtract-compare, and the word joins the
    // candidate batch without a branch (the filter's outcome is data-random; a mispredict per word
    // costs more than the store). The lookup happens in FlushCandidates.
    private void ScanWords(ReadOnlySpan<ulong> words, int owner)
    {
        ulong min = _index.Min, span = _index.Span;
        ref ulong candidate = ref MemoryMarshal.GetArrayDataReference(_candidate);
        ref int candidateOwner = ref MemoryMarshal.GetArrayDataReference(_candidateOwner);
        int pending = _pending;
        for (int w = 0; w < words.Length; w++)
        {
            ulong value = words[w];
            Unsafe.Add(ref candidate, pending) = value;
            Unsafe.Add(ref candidateOwner, pending) = owner;
            pending += value - min < span ? 1 : 0;
            if (pending == Batch)
            {
                _pending = pending;
                FlushCandidates();
                pending = 0;
            }
        }
        _pending = pending;
        _stats.Words += words.Length;
    }

    // kmemleak's scan_block, second half, over the whole batch one lookup stage at a time, so the
    // cache misses of different candidates overlap instead of queueing (see BlockIndex stages).
    // Per hit: kmemleak's update_refs, or in the indirect pass LSan's "indirectly leaked" flag.
    private void FlushCandidates()
    {
        int n = _pending;
        _pending = 0;
        if (n == 0)
            return;
        var index = _index;
        ref ulong candidate = ref MemoryMarshal.GetArrayDataReference(_candidate);
        ref int owner = ref MemoryMarshal.GetArrayDataReference(_candidateOwner);
        ref int entry = ref MemoryMarshal.GetArrayDataReference(_candidateEntry);
        ref int runLo = ref MemoryMarshal.GetArrayDataReference(_candidateLo);
        ref int runHi = ref MemoryMarshal.GetArrayDataReference(_candidateHi);
        ref RefCount refs = ref MemoryMarshal.GetArrayDataReference(_refs);

        // Nothing left to scan while this batch resolves (a linked list: one candidate, the next
        // node): fetch what the candidates point at now, in parallel with their lookups, instead
        // of after. Prefetching never faults. Not done for full batches: most of their hits are
        // blocks already gray, and the extra traffic slowed the dense synthetic heap.
        if (_grayCount == 0)
        {
            for (int c = 0; c < n; c++)
            {
                ulong target = Unsafe.Add(ref candidate, c);
                for (int line = 0; line < PrefetchLines; line++)
                    BlockIndex.Prefetch(target + (ulong)line * 64);
            }
        }
        for (int c = 0; c < n; c++)
            Unsafe.Add(ref entry, c) = index.LocatePage(Unsafe.Add(ref candidate, c));
        for (int c = 0; c < n; c++)
        {
            int e = Unsafe.Add(ref entry, c);
            if (e < 0)
                continue;
            int lo = index.LocateRun(e, out Unsafe.Add(ref runHi, c));
            Unsafe.Add(ref runLo, c) = lo;
            // The block found is usually lo or a neighbour (a run is a few blocks): fetching its
            // count now takes a miss off the chain of a linked list's marking.
            BlockIndex.Prefetch(ref Unsafe.Add(ref refs, lo));
        }
        for (int c = 0; c < n; c++)
        {
            if (Unsafe.Add(ref entry, c) < 0)
                continue;
            int k = index.LocateBlock(Unsafe.Add(ref candidate, c), Unsafe.Add(ref runLo, c), Unsafe.Add(ref runHi, c));
            Unsafe.Add(ref entry, c) = k;
        }

        long hits = 0;
        for (int c = 0; c < n; c++)
        {
            int j = Unsafe.Add(ref entry, c);
            if (j < 0 || j == Unsafe.Add(ref owner, c) || !index.Contains(j, Unsafe.Add(ref candidate, c)))
                continue; // not a block, or a pointer to itself: kmemleak and LSan both ignore those
            hits++;
            ref RefCount r = ref Unsafe.Add(ref refs, j);
            if (_indirectPass)
            {
                if (IsWhite(r))
                    _indirect[j] = true;
            }
            else if (r.Count < r.MinCount && ++r.Count == r.MinCount)
            {
                // update_refs: only a white block counts references; it turns gray exactly once.
                _grayList[_grayCount++] = j;
            }
        }
        _stats.Candidates += n;
        _stats.Hits += hits;
    }
}
