// ElfImage: what the symbolizer keeps of one ELF file: its PT_LOAD segments (to turn a runtime
// address into an ELF virtual address) and its function symbols. Read once with LibObjectFile,
// then the ElfFile and the file handle are dropped.
//
// Symbol source, first that exists: the module's own .symtab; the .symtab of its separate debug
// file (build-id or .gnu_debuglink, verified); the module's .dynsym. A module with none of them
// still gets an image (with an empty table) so the bias, and so module+offset, stays exact.
//
// Line source, first that exists: the module's own .debug_line (built with -g, not stripped);
// its verified debug file's. The line table is parsed on the first file:line question only
// (DwarfLineTable: libc6-dbg's 1.3 MB table, 185k rows, in ~70 ms), because a report asks about few modules.

using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;
using LibObjectFile.Elf;

namespace Interposer.Scanner.Symbols;

internal sealed class ElfImage
{
    // A PT_LOAD of the module itself: file offset, file size, vaddr, PF_X.
    private readonly record struct LoadSegment(ulong Offset, ulong FileSize, ulong VirtualAddress, bool Executable);

    // In file order, executable ones first: an executable mapping is matched against them first.
    private readonly LoadSegment[] _loads;

    // The line table, parsed from LineSource on first use (thread-safe: Lazy's default mode).
    private readonly Lazy<DwarfLineTable> _lines;

    private ElfImage(LoadSegment[] loads, bool isFixedAddress, FunctionTable functions, string symbolSource, string? lineSource,
                     long maxLineTableBytes, Action<string>? note)
    {
        _loads = loads;
        IsFixedAddress = isFixedAddress;
        Functions = functions;
        SymbolSource = symbolSource;
        LineSource = lineSource;
        _lines = new Lazy<DwarfLineTable>(() => LoadLines(lineSource, maxLineTableBytes, note));
    }

    /// <summary>The file whose .debug_line gives file:line (the module or its debug file), or null.</summary>
    public string? LineSource { get; }

    /// <summary>The line table (empty without debug info); parsed on first use.</summary>
    public DwarfLineTable Lines => _lines.Value;

    /// <summary>Source file and line of the instruction at ELF virtual address vaddr.</summary>
    public bool TryFindLine(ulong vaddr, out string file, out int line) => Lines.TryFind(vaddr, out file, out line);

    /// <summary>ET_EXEC: virtual addresses are absolute, the load bias is 0.</summary>
    public bool IsFixedAddress { get; }

    public FunctionTable Functions { get; }

    /// <summary>The file the symbols were read from: the module, or its debug file.</summary>
    public string SymbolSource { get; }

    /// <summary>Reads path; null when it is not a readable ELF file. Never throws: LibObjectFile
    /// parses whatever file the host has mapped, and no file may take the scanner down.</summary>
    public static ElfImage? TryLoad(string path, DebugFileLocator locator, long maxLineTableBytes = 0, Action<string>? note = null)
    {
        try
        {
            using var stream = File.OpenRead(path);
            if (!TryReadElf(stream, out var elf))
                return null;

            var loads = ReadLoads(elf);
            var symbols = new List<FunctionTable.Entry>();
            string source = path;
            var symtab = FindSymbolTable(elf, ElfSectionType.SymbolTable);
            bool ownLines = FindSection(elf, ".debug_line") is not null;
            // The debug file is looked for when the module lacks symbols or lines; its symbols are
            // taken only when the module has none of its own.
            string? debugPath = symtab is null || !ownLines
                ? FindDebugFile(elf, path, locator, symtab is null ? symbols : null)
                : null;
            if (symtab is not null)
                AddFunctions(symtab, symbols);
            else if (debugPath is not null && symbols.Count > 0)
                source = debugPath;
            else if (FindSymbolTable(elf, ElfSectionType.DynamicLinkerSymbolTable) is { } dynsym)
                AddFunctions(dynsym, symbols);
            string? lineSource = ownLines ? path : debugPath;
            return new ElfImage(loads, elf.FileType == ElfFileType.Executable, FunctionTable.Build(symbols), source, lineSource,
                                maxLineTableBytes, note);
        }
        catch (Exception)
        {
            return null;
        }
    }

    /// <summary>Runtime address minus ELF virtual address for the executable mapping module.
    /// The kernel maps file offset PAGE_DOWN(p_offset) at bias + PAGE_DOWN(p_vaddr), so the PT_LOAD
    /// whose file range holds the mapping's offset gives the bias exactly, for ET_EXEC (0), ET_DYN,
    /// and layouts whose segments have different vaddr − offset (e.g. node's text at +0x400000).</summary>
    public ulong LoadBias(Module module)
    {
        ulong pageMask = ~((ulong)Environment.SystemPageSize - 1);
        foreach (var load in _loads)
        {
            ulong pageOffset = load.Offset & pageMask;
            if (module.FileOffset >= pageOffset && module.FileOffset < load.Offset + Math.Max(load.FileSize, 1))
            {
                ulong vaddrAtStart = (load.VirtualAddress & pageMask) + (module.FileOffset - pageOffset);
                return unchecked(module.Start - vaddrAtStart);
            }
        }
        if (IsFixedAddress)
            return 0;
        // No segment covers the mapping (odd linker layout): assume the image starts at Base with the
        // lowest PT_LOAD, which is exact for the usual first segment at offset 0.
        ulong lowest = ulong.MaxValue;
        foreach (var load in _loads)
            lowest = Math.Min(lowest, (load.VirtualAddress & pageMask) - (load.Offset & pageMask));
        return unchecked(module.Base - (lowest == ulong.MaxValue ? 0 : lowest));
    }

    private static bool TryReadElf(Stream stream, out ElfFile elf)
    {
        // UseSubStream: section contents stay views of the file instead of copies, so a 100 MB
        // binary costs its symbol tables only. The stream must stay open while we read them.
        var options = new ElfReaderOptions { UseSubStream = true };
        bool ok = ElfFile.TryRead(stream, out ElfFile? read, out _, options);
        elf = read!;
        return ok && read is not null;
    }

    private static LoadSegment[] ReadLoads(ElfFile elf)
    {
        var loads = new List<LoadSegment>();
        foreach (var segment in elf.Segments)
        {
            if (segment.Type != ElfSegmentTypeCore.Load)
                continue;
            bool executable = (segment.Flags.Value & (uint)ElfSegmentFlagsCore.Executable) != 0;
            loads.Add(new LoadSegment(segment.Position, segment.Size, segment.VirtualAddress, executable));
        }
        // Stable: executable segments first, file order otherwise (a page can hold the end of one
        // segment and the start of the next).
        var ordered = new List<LoadSegment>(loads.Count);
        ordered.AddRange(loads.FindAll(static l => l.Executable));
        ordered.AddRange(loads.FindAll(static l => !l.Executable));
        return ordered.ToArray();
    }

    private static ElfSymbolTable? FindSymbolTable(ElfFile elf, ElfSectionType type)
    {
        foreach (var section in elf.Sections)
        {
            if (section is ElfSymbolTable table && section.Type == type)
                return table;
        }
        return null;
    }

    private static void AddFunctions(ElfSymbolTable table, List<FunctionTable.Entry> into)
    {
        foreach (var symbol in table.Entries)
        {
            if (symbol.Type != ElfSymbolType.Function && symbol.Type != ElfSymbolType.GnuIndirectFunction)
                continue;
            // SHN_UNDEF: an import. In a non-PIE executable it may even carry its PLT address as value.
            if (symbol.SectionLink.GetIndex() == 0)
                continue;
            string name = symbol.Name.Value;
            if (string.IsNullOrEmpty(name))
                continue;
            // glibc's .symtab spells default versions into the name (pthread_create@@GLIBC_2.34);
            // the default is what the source called, so drop it. A single '@' marks a compat
            // version, which is worth seeing in a report, so that stays.
            int version = name.IndexOf("@@", StringComparison.Ordinal);
            if (version > 0)
                name = name[..version];
            ulong sectionEnd = symbol.SectionLink is { IsSpecial: false, Section: { } section }
                ? section.VirtualAddress + section.Size
                : ulong.MaxValue;
            into.Add(new FunctionTable.Entry(
                symbol.Value, symbol.Size, name, symbol.Bind == ElfSymbolBind.Local, sectionEnd));
        }
    }

    // The first verified debug-file candidate, or null. With into, the candidate must also have a
    // .symtab, whose functions are added. A bad candidate is skipped, not fatal: the module's own
    // .dynsym and load segments are still good.
    private static string? FindDebugFile(
        ElfFile elf, string modulePath, DebugFileLocator locator, List<FunctionTable.Entry>? into)
    {
        byte[] buildId = ReadBuildId(elf);
        string? link = ReadDebugLink(elf, out uint linkCrc);
        foreach (var candidate in locator.Candidates(modulePath, buildId, link))
        {
            if (candidate == modulePath || !File.Exists(candidate))
                continue;
            if (TryReadDebugFile(candidate, buildId, link, linkCrc, into))
                return candidate;
        }
        return null;
    }

    // Only symbols (and, later, lines) are taken from a debug file, never load segments: its
    // sections are NOBITS, and LibObjectFile then reports segment offsets that differ from the
    // stored p_offset.
    private static bool TryReadDebugFile(
        string candidate, byte[] buildId, string? link, uint linkCrc, List<FunctionTable.Entry>? into)
    {
        try
        {
            using var stream = File.OpenRead(candidate);
            if (!TryReadElf(stream, out var debugElf))
                return false;
            // Same build-id, or (no build-id to compare) the CRC the debuglink recorded.
            bool verified = buildId.Length > 0
                ? buildId.AsSpan().SequenceEqual(ReadBuildId(debugElf))
                : link is not null && DebugFileLocator.Crc32Of(candidate) == linkCrc;
            if (!verified)
                return false;
            if (into is null)
                return true;
            if (FindSymbolTable(debugElf, ElfSectionType.SymbolTable) is not { } symtab)
                return false;
            var symbols = new List<FunctionTable.Entry>();
            AddFunctions(symtab, symbols);
            into.AddRange(symbols);
            return true;
        }
        catch (Exception)
        {
            return false;
        }
    }

    private static ElfSection? FindSection(ElfFile elf, string name)
    {
        foreach (var section in elf.Sections)
        {
            if (section.Name.Value == name)
                return section;
        }
        return null;
    }

    // A section's contents, inflated when SHF_COMPRESSED; empty when absent or NOBITS.
    private static byte[] SectionContents(ElfFile elf, string name) =>
        FindSection(elf, name) is ElfStreamSection { Stream: { } content } section
            ? DwarfLineTable.SectionBytes(ReadAll(content), (ulong)section.Flags)
            : Array.Empty<byte>();

    // The inflated size of a section without inflating it: sh_size, or ch_size for SHF_COMPRESSED.
    private static long SectionSize(ElfFile elf, string name)
    {
        if (FindSection(elf, name) is not ElfStreamSection { Stream: { } content } section)
            return 0;
        const ulong ShfCompressed = 0x800;
        if (((ulong)section.Flags & ShfCompressed) == 0 || content.Length < 16)
            return content.Length;
        Span<byte> header = stackalloc byte[16];
        content.Position = 0;
        content.ReadExactly(header);
        ulong size = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]); // Elf64_Chdr.ch_size
        return size > long.MaxValue ? long.MaxValue : (long)size;
    }

    // Never throws: a file that changed or cannot be read gives no lines, not a failed report.
    // The table is built in the host's memory (~16 bytes a row), so a line table over the limit
    // is not read at all, and the note says so.
    private static DwarfLineTable LoadLines(string? path, long maxBytes, Action<string>? note)
    {
        if (path is null)
            return DwarfLineTable.Empty;
        try
        {
            using var stream = File.OpenRead(path);
            if (!TryReadElf(stream, out var elf))
                return DwarfLineTable.Empty;
            long size = SectionSize(elf, ".debug_line");
            if (maxBytes > 0 && size > maxBytes)
            {
                note?.Invoke($"{path}: its .debug_line is {size >> 20} MiB, over max_line_table_mb={maxBytes >> 20}: " +
                             "its frames get function+offset but no file:line");
                return DwarfLineTable.Empty;
            }
            byte[] lines = SectionContents(elf, ".debug_line");
            if (lines.Length == 0)
                return DwarfLineTable.Empty;
            byte[] lineStr = SectionContents(elf, ".debug_line_str"), str = SectionContents(elf, ".debug_str");
            // DWARF 2-4 line tables need their compilation directory from .debug_info (read only
            // then, and only within the same limit: it is usually the largest debug section).
            Dictionary<long, string>? compDirs = null;
            if (DwarfLineTable.HasPreDwarf5Units(lines) &&
                (maxBytes <= 0 || SectionSize(elf, ".debug_info") <= maxBytes))
            {
                compDirs = DwarfLineTable.ReadCompDirs(SectionContents(elf, ".debug_info"), SectionContents(elf, ".debug_abbrev"),
                                                       str, lineStr);
            }
            return DwarfLineTable.Parse(lines, lineStr, str, compDirs);
        }
        catch (Exception)
        {
            return DwarfLineTable.Empty;
        }
    }

    private static byte[] ReadBuildId(ElfFile elf)
    {
        foreach (var section in elf.Sections)
        {
            if (section is not ElfNoteTable notes)
                continue;
            foreach (var note in notes.Entries)
            {
                if (note is ElfGnuNoteBuildId { BuildId: { } id })
                    return ReadAll(id);
            }
        }
        return Array.Empty<byte>();
    }

    // .gnu_debuglink: NUL-terminated file name, zero padding to 4 bytes, then a CRC-32 in the
    // file's byte order (little-endian on every target we build for).
    private static string? ReadDebugLink(ElfFile elf, out uint crc)
    {
        crc = 0;
        foreach (var section in elf.Sections)
        {
            if (section is not ElfStreamSection { Stream: { } content } || section.Name.Value != ".gnu_debuglink")
                continue;
            byte[] bytes = ReadAll(content);
            int nul = Array.IndexOf(bytes, (byte)0);
            int crcAt = (nul + 4) & ~3;
            if (nul <= 0 || crcAt + 4 > bytes.Length)
                return null;
            crc = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(crcAt));
            return System.Text.Encoding.UTF8.GetString(bytes, 0, nul);
        }
        return null;
    }

    private static byte[] ReadAll(Stream stream)
    {
        stream.Position = 0;
        var bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        return bytes;
    }
}
