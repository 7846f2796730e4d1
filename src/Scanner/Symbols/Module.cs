// Module: one executable, file-backed (or [vdso]-style) mapping of this process, as read from
// /proc/self/maps, together with the start of its image so a return address can be turned into
// "module + offset" without opening any file.
//
// A module whose text is split into several executable mappings (rare: mprotect or huge-page
// splits) appears once per mapping; all of them share Path and Base.

namespace Interposer.Scanner.Symbols;

internal sealed class Module
{
    // The kernel appends this to the path when the mapped inode was unlinked, e.g. after a package
    // upgrade renamed a new file over it. The file on disk is then a different build.
    private const string DeletedSuffix = " (deleted)";

    public Module(string path, ulong @base, ulong start, ulong end, ulong fileOffset)
    {
        Path = path;
        Base = @base;
        Start = start;
        End = end;
        FileOffset = fileOffset;
    }

    /// <summary>Path exactly as /proc/self/maps prints it, " (deleted)" suffix included.</summary>
    public string Path { get; }

    /// <summary>Start of the image: the mapping of the same path with file offset 0 that precedes
    /// this one (Start − FileOffset when there is none). Equals the load bias for the usual ET_DYN
    /// object whose first PT_LOAD has p_vaddr 0; Symbolizer computes the exact bias from the ELF.</summary>
    public ulong Base { get; }

    /// <summary>First address of this executable mapping.</summary>
    public ulong Start { get; }

    /// <summary>One past the last address of this executable mapping.</summary>
    public ulong End { get; }

    /// <summary>File offset at which this mapping starts (the maps "offset" column).</summary>
    public ulong FileOffset { get; }

    /// <summary>True when Path names a file we may open: absolute and not unlinked. Pseudo
    /// mappings ([vdso], [vsyscall]) and deleted files get module+offset only.</summary>
    public bool IsReadableFile =>
        Path.StartsWith('/') && !Path.EndsWith(DeletedSuffix, System.StringComparison.Ordinal);

    public bool Contains(ulong address) => address >= Start && address < End;

    public override string ToString() => $"{Path} [0x{Start:x}-0x{End:x}) base 0x{Base:x}";
}
