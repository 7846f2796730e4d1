// MapsRow: one row of /proc/<pid>/maps, for the root set.
//   start-end perms offset dev inode [path]
//   7f2c1a3cf000-7f2c1a3d3000 rw-p 001cf000 08:01 2222  /usr/lib/x86_64-linux-gnu/libc.so.6
// The path is everything after the inode's trailing blanks, spaces and " (deleted)" included.
// Used by the symbolizer (Symbols/ModuleMap.cs); the scan's own reader is MapsSnapshot.
//
// TryParse never throws on content: the scanner runs inside arbitrary hosts, and one odd line (a
// kernel we have not seen, a truncated read) must cost that line only.

using System;
using System.Globalization;

namespace Interposer.Scanner.Scan;

internal readonly record struct MapsRow(
    ulong Start, ulong End, bool Readable, bool Writable, bool Executable, bool Shared, ulong Offset, ulong Inode,
    string Path)
{
    private const string DeletedSuffix = " (deleted)";

    /// <summary>No path at all: a plain anonymous mapping (MAP_ANONYMOUS|MAP_PRIVATE, or a bss tail).</summary>
    public bool IsAnonymous => Path.Length == 0;

    /// <summary>A kernel-named mapping: [heap], [stack], [vdso], [anon:name], ...</summary>
    public bool IsPseudo => Path.StartsWith('[');

    /// <summary>A path naming a file (possibly deleted since it was mapped).</summary>
    public bool IsFile => Path.StartsWith('/');

    /// <summary>The path without the kernel's " (deleted)" suffix.</summary>
    public string FilePath => Path.EndsWith(DeletedSuffix, StringComparison.Ordinal) ? Path[..^DeletedSuffix.Length] : Path;

    public MemoryRange Range => MemoryRange.FromBounds(Start, End);

    public static bool TryParse(ReadOnlySpan<char> text, out MapsRow row)
    {
        row = default;
        text = text.TrimEnd('\r');

        if (!TakeField(ref text, out var range) || !TakeField(ref text, out var perms) ||
            !TakeField(ref text, out var offset) || !TakeField(ref text, out var dev) ||
            !TakeField(ref text, out var inode))
            return false;

        int dash = range.IndexOf('-');
        if (dash <= 0 || !TryHex(range[..dash], out ulong start) || !TryHex(range[(dash + 1)..], out ulong end) ||
            start >= end)
            return false;
        if (perms.Length != 4 || !IsFlag(perms[0], 'r') || !IsFlag(perms[1], 'w') || !IsFlag(perms[2], 'x') ||
            (perms[3] != 'p' && perms[3] != 's'))
            return false;
        if (!TryHex(offset, out ulong fileOffset) || dev.IndexOf(':') <= 0 ||
            !ulong.TryParse(inode, NumberStyles.None, CultureInfo.InvariantCulture, out ulong inodeNumber))
            return false;

        string path = text.Trim(" \t").ToString();
        row = new MapsRow(start, end, perms[0] == 'r', perms[1] == 'w', perms[2] == 'x', perms[3] == 's',
            fileOffset, inodeNumber, path);
        return true;
    }

    private static bool IsFlag(char c, char set) => c == set || c == '-';

    // Splits off the next blank-separated field; false when none is left.
    private static bool TakeField(ref ReadOnlySpan<char> text, out ReadOnlySpan<char> field)
    {
        text = text.TrimStart(" \t");
        int blank = text.IndexOfAny(' ', '\t');
        field = blank < 0 ? text : text[..blank];
        text = blank < 0 ? ReadOnlySpan<char>.Empty : text[blank..];
        return field.Length > 0;
    }

    private static bool TryHex(ReadOnlySpan<char> s, out ulong value) =>
        ulong.TryParse(s, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);
}
