// RootRegions: the memory-mapping part of the root set, from /proc/self/maps (DESIGN.md "Root set").
//
//   Data       the writable, readable, private file-backed mappings of loaded objects (an object is
//              a file with at least one executable mapping: that tells a library's .data from a
//              data file the program mapped), plus each object's bss tail: the anonymous rw
//              mapping that starts exactly where the object's last rw file-backed mapping ends
//              (.bss beyond the last file page is mapped anonymous by ld.so).
//   Anonymous  the other readable, writable anonymous mappings (plain and [anon:name]): the
//              optional use_mmap_regions root set, off by default as in LSan. These include malloc
//              arenas, large malloc blocks, thread stacks and the managed GC heap: the caller must
//              exclude those before scanning them as roots (see Subtract, BlockIndex.AnyBlockIn).
// Never roots: [heap] (blocks are found through pointers, not scanned wholesale), [stack] and
// thread stacks (scanned from the saved SP by the thread walker), [vvar], [vdso], [vsyscall] and
// every other kernel-named mapping, unreadable or shared mappings, and the excluded modules (the
// Interposer's own .so files: their data points at every block and would hide every leak), bss
// tails included.
//
// Known gap: the kernel merges adjacent anonymous mappings with equal flags, so an mmap placed
// right after a bss tail (say a large malloc block) reads as part of the tail. Subtract the
// blocks' ranges from the data set, or take exact segment sizes from dl_iterate_phdr.
//
// Parsing never throws on content: malformed rows are skipped and counted.

using System;
using System.Collections.Generic;
using System.IO;

namespace Interposer.Scanner.Scan;

internal enum RootKind : byte
{
    /// <summary>A writable file-backed segment of a loaded object (.data, .got, writable relro-less parts).</summary>
    Data,
    /// <summary>The anonymous mapping continuing an object's last writable segment (.bss past the file's end).</summary>
    BssTail,
    /// <summary>Any other readable, writable anonymous mapping (use_mmap_regions).</summary>
    Anonymous,
}

/// <summary>One mapping chosen as a root. Path is the object's (for a bss tail too); empty or [anon:..] for anonymous.</summary>
internal readonly record struct RootRegion(ulong Start, ulong End, RootKind Kind, string Path)
{
    public MemoryRange Range => MemoryRange.FromBounds(Start, End);
}

internal sealed class RootRegions
{
    private const string ProcSelfMaps = "/proc/self/maps";

    /// <summary>The Interposer's own objects: never roots.</summary>
    public static readonly string[] InterposerModules = { "libinterposer.so", "libinterposer_core.so" };

    private RootRegions(RootRegion[] data, RootRegion[] anonymous, int skippedLines)
    {
        Data = data;
        Anonymous = anonymous;
        SkippedLines = skippedLines;
    }

    /// <summary>Data and bss-tail roots, in address order.</summary>
    public IReadOnlyList<RootRegion> Data { get; }

    /// <summary>Anonymous writable mappings that are not bss tails, in address order.</summary>
    public IReadOnlyList<RootRegion> Anonymous { get; }

    /// <summary>Lines that did not parse (blank lines are not counted).</summary>
    public int SkippedLines { get; }

    /// <summary>Reads /proc/self/maps. An unreadable file gives no regions, never an exception.</summary>
    public static RootRegions FromProcSelfMaps(IReadOnlyCollection<string> excludedModules)
    {
        string text;
        try
        {
            // ReadAllText reads procfs files to EOF although they report a length of 0.
            text = File.ReadAllText(ProcSelfMaps);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new RootRegions(Array.Empty<RootRegion>(), Array.Empty<RootRegion>(), 0);
        }
        return Parse(text, excludedModules);
    }

    /// <summary>
    /// Classifies maps text. excludedModules: a name without '/' matches a file's base name
    /// ("libinterposer.so"); one with '/' matches the full path. " (deleted)" is ignored for matching.
    /// </summary>
    public static RootRegions Parse(string mapsText, IReadOnlyCollection<string> excludedModules)
    {
        var rows = new List<MapsRow>();
        int skipped = 0;
        foreach (var range in mapsText.AsSpan().Split('\n'))
        {
            var line = mapsText.AsSpan()[range];
            if (line.Trim(" \t\r").IsEmpty)
                continue;
            if (MapsRow.TryParse(line, out var row))
                rows.Add(row);
            else
                skipped++;
        }
        // The kernel prints in address order; tests and odd sources may not.
        rows.Sort(static (a, b) => a.Start.CompareTo(b.Start));

        var objects = new HashSet<string>(StringComparer.Ordinal);
        foreach (var row in rows)
            if (row.Executable && row.IsFile)
                objects.Add(row.FilePath);

        var data = new List<RootRegion>();
        var anonymous = new List<RootRegion>();
        // The previous row when it was a rw segment of an object: a bss tail may follow it.
        MapsRow? lastSegment = null;
        bool lastSegmentExcluded = false;
        foreach (var row in rows)
        {
            bool readWrite = row.Readable && row.Writable && !row.Shared;
            MapsRow? previous = lastSegment;
            lastSegment = null;
            if (!readWrite)
                continue;

            if (row.IsFile)
            {
                if (!objects.Contains(row.FilePath))
                    continue; // a data file mapped writable by the program, not a loaded object
                lastSegment = row;
                lastSegmentExcluded = IsExcluded(row.FilePath, excludedModules);
                if (!lastSegmentExcluded)
                    data.Add(new RootRegion(row.Start, row.End, RootKind.Data, row.Path));
            }
            else if (row.IsAnonymous && previous is { } segment && segment.End == row.Start)
            {
                if (!lastSegmentExcluded)
                    data.Add(new RootRegion(row.Start, row.End, RootKind.BssTail, segment.Path));
            }
            else if (row.IsAnonymous || IsNamedAnonymous(row.Path))
            {
                anonymous.Add(new RootRegion(row.Start, row.End, RootKind.Anonymous, row.Path));
            }
            // else: [heap], [stack], [vvar], ... and anything else the kernel names: never a root.
        }
        return new RootRegions(data.ToArray(), anonymous.ToArray(), skipped);
    }

    // prctl(PR_SET_VMA_ANON_NAME) names: "[anon:name]", "[anon_shmem:name]" (shared: filtered earlier).
    private static bool IsNamedAnonymous(string path) =>
        path.StartsWith("[anon:", StringComparison.Ordinal) || path.StartsWith("[anon_shmem:", StringComparison.Ordinal);

    private static bool IsExcluded(string filePath, IReadOnlyCollection<string> excludedModules)
    {
        int slash = filePath.LastIndexOf('/');
        ReadOnlySpan<char> baseName = filePath.AsSpan(slash + 1);
        foreach (var excluded in excludedModules)
        {
            if (excluded.Contains('/')
                    ? string.Equals(excluded, filePath, StringComparison.Ordinal)
                    : baseName.SequenceEqual(excluded))
                return true;
        }
        return false;
    }

    /// <summary>The regions' ranges minus the exclusions (e.g. the Interposer's metadata mappings, thread stacks).</summary>
    public static MemoryRange[] ToRanges(IReadOnlyList<RootRegion> regions, ReadOnlySpan<MemoryRange> exclude)
    {
        var ranges = new MemoryRange[regions.Count];
        for (int i = 0; i < ranges.Length; i++)
            ranges[i] = regions[i].Range;
        return Subtract(ranges, exclude);
    }

    /// <summary>
    /// ranges minus the union of exclude: the pieces of each range that no exclusion covers, in the
    /// order of the input ranges, empty pieces dropped. Allocates; not for the stopped world.
    /// </summary>
    public static MemoryRange[] Subtract(ReadOnlySpan<MemoryRange> ranges, ReadOnlySpan<MemoryRange> exclude)
    {
        // Exclusions sorted and merged into disjoint runs, so their ends are sorted too.
        var cuts = new List<(ulong Start, ulong End)>(exclude.Length);
        foreach (var e in exclude)
            if (e.Length > 0)
                cuts.Add((e.Start, e.End));
        cuts.Sort(static (a, b) => a.Start.CompareTo(b.Start));
        var merged = new List<(ulong Start, ulong End)>(cuts.Count);
        foreach (var c in cuts)
        {
            if (merged.Count > 0 && c.Start <= merged[^1].End)
                merged[^1] = (merged[^1].Start, Math.Max(merged[^1].End, c.End));
            else
                merged.Add(c);
        }

        var result = new List<MemoryRange>(ranges.Length);
        foreach (var r in ranges)
        {
            ulong cursor = r.Start, end = r.End;
            if (cursor >= end)
                continue;
            // First run that ends after the range starts.
            int lo = 0, hi = merged.Count;
            while (lo < hi)
            {
                int mid = (lo + hi) >>> 1;
                if (merged[mid].End <= cursor)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            for (int k = lo; k < merged.Count && merged[k].Start < end; k++)
            {
                if (merged[k].Start > cursor)
                    result.Add(MemoryRange.FromBounds(cursor, merged[k].Start));
                cursor = Math.Max(cursor, merged[k].End);
                if (cursor >= end)
                    break;
            }
            if (cursor < end)
                result.Add(MemoryRange.FromBounds(cursor, end));
        }
        return result.ToArray();
    }
}
