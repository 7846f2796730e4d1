// ScanAreaSet: the kmemleak_scan_area ranges of one scan, filed under the blocks they belong to
// (positions in a BlockIndex). A block listed here has only these ranges read when it is scanned
// (kmemleak's scan_object with a non-empty area_list); every other block is read whole.
//
// Built before the stop (allocates); Marker only reads it.

using System;
using System.Collections.Generic;

namespace Interposer.Scanner.Scan;

internal sealed class ScanAreaSet
{
    public static readonly ScanAreaSet Empty = new(Array.Empty<int>(), new[] { 0 }, Array.Empty<MemoryRange>());

    private readonly int[] _blocks;          // block positions, ascending, distinct
    private readonly int[] _first;           // _blocks.Length + 1 entries: block k's ranges are [_first[k], _first[k+1])
    private readonly MemoryRange[] _ranges;  // per block sorted by start, overlaps merged

    private ScanAreaSet(int[] blocks, int[] first, MemoryRange[] ranges)
    {
        _blocks = blocks;
        _first = first;
        _ranges = ranges;
    }

    /// <summary>Blocks that have scan areas.</summary>
    public int BlockCount => _blocks.Length;

    /// <summary>Positions of the blocks that have scan areas, ascending.</summary>
    public ReadOnlySpan<int> Blocks => _blocks;

    /// <summary>Files each (block position, range) pair; ranges of one block are sorted and merged
    /// (a word in two overlapping areas must count once toward its target's min_count).</summary>
    public static ScanAreaSet Build(IEnumerable<(int Block, MemoryRange Range)> areas)
    {
        var list = new List<(int Block, MemoryRange Range)>();
        foreach (var a in areas)
            if (a.Block >= 0 && a.Range.Length > 0)
                list.Add(a);
        if (list.Count == 0)
            return Empty;
        list.Sort(static (a, b) => a.Block != b.Block ? a.Block.CompareTo(b.Block) : a.Range.Start.CompareTo(b.Range.Start));
        var blocks = new List<int>();
        var first = new List<int>();
        var ranges = new List<MemoryRange>();
        foreach (var (block, range) in list)
        {
            if (blocks.Count == 0 || blocks[^1] != block)
            {
                blocks.Add(block);
                first.Add(ranges.Count);
                ranges.Add(range);
                continue;
            }
            MemoryRange last = ranges[^1];
            if (range.Start <= last.End)
                ranges[^1] = MemoryRange.FromBounds(last.Start, Math.Max(last.End, range.End));
            else
                ranges.Add(range);
        }
        first.Add(ranges.Count);
        return new ScanAreaSet(blocks.ToArray(), first.ToArray(), ranges.ToArray());
    }

    /// <summary>Block i's areas; empty when it has none (or is not listed). No allocation.</summary>
    public ReadOnlySpan<MemoryRange> AreasOf(int block)
    {
        int k = Array.BinarySearch(_blocks, block);
        return k < 0 ? default : _ranges.AsSpan(_first[k], _first[k + 1] - _first[k]);
    }
}
