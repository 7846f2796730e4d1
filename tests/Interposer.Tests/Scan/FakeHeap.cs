// FakeHeap: a made-up address space for marking tests. Blocks and roots are arrays of words
// "mapped" at chosen addresses; FakeReader hands the marker slices of them, so a test states a
// heap graph in a few lines and the marker reads it exactly as it would read real memory.

using System;
using System.Collections.Generic;
using Interposer.Scanner.Scan;

namespace Interposer.Tests.Scan;

/// <summary>Segments of words at fake addresses. Reads outside every segment return empty (unreadable).</summary>
internal sealed class FakeMemory
{
    // Sorted by start; segments never overlap.
    private readonly List<(ulong Start, ulong[] Words)> _segments = new();

    public void Map(ulong start, ulong bytes)
    {
        int at = FirstAfter(start);
        _segments.Insert(at, (start, new ulong[(bytes + 7) / 8]));
    }

    public void Write(ulong address, ulong value)
    {
        var (start, words) = SegmentOf(address, 8) ?? throw new ArgumentOutOfRangeException(nameof(address), $"0x{address:x} is not mapped");
        words[(address - start) / 8] = value;
    }

    public ReadOnlySpan<ulong> Read(ulong address, int count)
    {
        if (SegmentOf(address, (ulong)count * 8) is not var (start, words))
            return ReadOnlySpan<ulong>.Empty;
        return words.AsSpan((int)((address - start) / 8), count);
    }

    // Index of the first segment starting above address.
    private int FirstAfter(ulong address)
    {
        int lo = 0, hi = _segments.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_segments[mid].Start <= address)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }

    private (ulong Start, ulong[] Words)? SegmentOf(ulong address, ulong bytes)
    {
        int i = FirstAfter(address) - 1;
        if (i < 0)
            return null;
        var s = _segments[i];
        ulong end = s.Start + (ulong)s.Words.Length * 8;
        return address + bytes <= end && (address - s.Start) % 8 == 0 ? s : null;
    }
}

internal readonly struct FakeReader : IMemoryReader
{
    private readonly FakeMemory _memory;

    public FakeReader(FakeMemory memory) => _memory = memory;

    public ReadOnlySpan<ulong> ReadWords(ulong address, int count) => _memory.Read(address, count);
}

/// <summary>Blocks laid out like a malloc heap (16-byte aligned, a 16-byte gap between them) plus root areas.</summary>
internal sealed class FakeHeap
{
    public const ulong HeapBase = 0x5555_0000_0000;
    public const ulong RootBase = 0x7f00_0000_0000;

    private readonly List<HeapBlock> _blocks = new();
    private readonly List<MemoryRange> _roots = new();
    private ulong _nextBlock = HeapBase;
    private ulong _nextRoot = RootBase;

    public FakeMemory Memory { get; } = new();

    public IReadOnlyList<HeapBlock> Blocks => _blocks;

    public List<MemoryRange> Roots => _roots;

    /// <summary>A block; Id is its allocation order.</summary>
    public ulong Alloc(ulong size = 32, int minCount = 1, BlockFlags flags = BlockFlags.None)
    {
        ulong address = _nextBlock;
        Memory.Map(address, Math.Max(size, 1));
        _blocks.Add(new HeapBlock(address, size, minCount, flags, _blocks.Count));
        _nextBlock = (address + Math.Max(size, 1) + 16 + 15) & ~15UL;
        return address;
    }

    /// <summary>A block placed at an exact address (mapping its bytes), for layout tests.</summary>
    public ulong AllocAt(ulong address, ulong size, int minCount = 1)
    {
        Memory.Map(address, Math.Max(size, 1));
        _blocks.Add(new HeapBlock(address, size, minCount, BlockFlags.None, _blocks.Count));
        return address;
    }

    /// <summary>A root area of the given words, registered as a root range. Returns its address.</summary>
    public ulong Root(int words = 1)
    {
        ulong address = _nextRoot;
        Memory.Map(address, (ulong)words * 8);
        _roots.Add(new MemoryRange(address, (ulong)words * 8));
        _nextRoot += (ulong)words * 8 + 4096;
        return address;
    }

    /// <summary>A root holding one pointer.</summary>
    public ulong RootPointingTo(ulong target)
    {
        ulong root = Root();
        Store(root, target);
        return root;
    }

    public void Store(ulong address, ulong value) => Memory.Write(address, value);

    public Scan Mark(ReadOnlySpan<ulong> rootWords = default)
    {
        var index = BlockIndex.Build(_blocks.ToArray());
        var marker = new Marker(index);
        var reader = new FakeReader(Memory);
        marker.Run(ref reader, _roots.ToArray(), rootWords);
        return new Scan(index, marker);
    }

    /// <summary>A finished scan, queried by block address.</summary>
    public sealed record Scan(BlockIndex Index, Marker Marker)
    {
        public BlockColor Color(ulong address) => Marker.ColorOf(At(address));

        public bool IsIndirect(ulong address) => Marker.IsIndirect(At(address));

        public bool IsDirect(ulong address) => Marker.IsDirect(At(address));

        public ulong[] WhiteAddresses()
        {
            var white = Marker.Unreferenced();
            var result = new ulong[white.Length];
            for (int i = 0; i < white.Length; i++)
                result[i] = Index.Blocks[white[i]].Address;
            return result;
        }

        private int At(ulong address)
        {
            int i = Index.IndexOf(address);
            return i >= 0 ? i : throw new ArgumentException($"no block at 0x{address:x}");
        }
    }
}
