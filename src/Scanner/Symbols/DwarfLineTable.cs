// DwarfLineTable: the DWARF line-number programs of one ELF image (.debug_line, DWARF 2 to 5,
// 32- and 64-bit DWARF), run once into one sorted array of address rows, looked up by binary
// search. Addresses are ELF virtual addresses, as in FunctionTable. Our own reader because
// LibObjectFile 2.3.1 rejects .debug_line version 5, and gcc 12 emits version 5 by default.
//
// Agreement with binutils' addr2line (the oracle the tests compare against, bfd dwarf2.c):
//  - Paths are joined like concat_filename: an absolute name stands alone; otherwise the entry's
//    directory, and when that is relative the compilation directory goes in front of it. DWARF 5
//    has the compilation directory as directory 0, so glibc's "./malloc" directory and file
//    malloc.c print as "./malloc/./malloc/malloc.c", exactly as addr2line prints them. DWARF 2-4
//    keep the compilation directory in .debug_info (DW_AT_comp_dir): Parse takes it per line
//    table (DwarfCompDirs.cs reads each unit's first DIE); without it a relative path stays
//    relative ("main.c" where addr2line prints "/build/main.c").
//  - Several rows at one address: the last one wins. Overlapping sequences: sorted by start
//    (longest first), a sequence nested in an earlier one is dropped and one that overlaps it is
//    trimmed to start where the earlier one ends.
//  - Unlike addr2line 2.40, the file register starts at 1 in DWARF 5 too (DWARF 5 6.2.2; gdb,
//    readelf and llvm-addr2line agree). 2.40 starts it at file 0, the unit's primary file, so rows
//    before a sequence's first DW_LNS_set_file (a function from a header) get the wrong name there.
//  - Unlike addr2line, sequences the linker discarded are dropped first: ld leaves a discarded
//    function's sequence at address 0, lld at -1 (the "tombstone"). Zero-start sequences are kept
//    only when no other sequence exists (an unlinked object file, where every sequence is at 0).
//
// Untrusted input: the sections come from whatever file the host mapped. Parse is total by
// construction rather than by a catch-all: every read goes through LineReader, which returns
// zeros and sets Failed instead of indexing out of range, and every loop either consumes a byte
// per turn or is bounded by the bytes left. A unit that fails is dropped and the next one is found
// through its unit_length. The tests run Parse over every prefix of a real section and over
// random byte flips.
//
// Cost (DwarfLineTableTests.LibcDebugFile_AgreesWithAddr2line, Debug build, this 2-core box):
// libc6-dbg's .debug_line, 0.5 MB zlib -> 1.3 MB, inflates in ~9 ms and parses in ~70 ms into
// 185k rows (16 bytes each, ~3 MB). Paths are built only for files a row names, once per unit.

using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;
using System.IO.Compression;

namespace Interposer.Scanner.Symbols;

internal sealed partial class DwarfLineTable
{
    public static readonly DwarfLineTable Empty = new(Array.Empty<Row>(), Array.Empty<string>());

    // Row.File of the row that closes a sequence: addresses from it on belong to no row of it.
    private const int EndOfSequence = -1;

    // Row.File when the file register named no entry of its unit's file table.
    private const int UnknownFile = -2;

    /// <summary>One row of the line-number matrix, reduced to what a report prints. File indexes
    /// _files, or is EndOfSequence / UnknownFile.</summary>
    private readonly record struct Row(ulong Address, int File, int Line);

    // Sorted by Address; sequences do not overlap, each ends with its EndOfSequence row, and an
    // end row sorts before a sequence that starts at the same address.
    private readonly Row[] _rows;

    // Distinct full paths, shared by all rows of the table.
    private readonly string[] _files;

    private DwarfLineTable(Row[] rows, string[] files)
    {
        _rows = rows;
        _files = files;
    }

    /// <summary>Number of rows kept, end-of-sequence rows included.</summary>
    public int Count => _rows.Length;

    /// <summary>Parses a whole .debug_line section. debugLineStr = .debug_line_str contents,
    /// debugStr = .debug_str (either may be empty). Never throws: a malformed or unsupported unit
    /// is skipped, and the units after it are still read when its unit_length lets us find them.</summary>
    public static DwarfLineTable Parse(ReadOnlySpan<byte> debugLine, ReadOnlySpan<byte> debugLineStr, ReadOnlySpan<byte> debugStr,
                                       IReadOnlyDictionary<long, string>? compDirs = null)
    {
        var builder = new Builder();
        var parser = new UnitParser(debugLine, debugLineStr, debugStr, builder, compDirs);
        int offset = 0;
        while (offset < debugLine.Length)
        {
            var header = new LineReader(debugLine, offset);
            if (!header.UnitLength(out ulong length, out int offsetSize))
                break;
            // A unit longer than the section is truncated: its complete sequences are still good.
            ulong left = (ulong)(debugLine.Length - header.Position);
            int unitEnd = length > left ? debugLine.Length : header.Position + (int)length;
            parser.Parse(offset, header.Position, unitEnd, offsetSize);
            offset = unitEnd;
        }
        return builder.Build();
    }

    /// <summary>The row covering ELF virtual address vaddr: the row with the greatest address
    /// &lt;= vaddr in a sequence whose end address is &gt; vaddr. file is the full path as addr2line
    /// prints it (see the file comment for DWARF 2-4); line 0 means "no line" (addr2line's "?").</summary>
    public bool TryFind(ulong vaddr, out string file, out int line)
    {
        file = string.Empty;
        line = 0;
        // The last row at or below vaddr: on equal addresses the later row (a sequence's start
        // after the previous sequence's end) is the one that covers vaddr.
        int lo = 0, hi = _rows.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = lo + ((hi - lo) >> 1);
            if (_rows[mid].Address <= vaddr)
            {
                found = mid;
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }
        if (found < 0 || _rows[found].File < 0)
            return false;
        file = _files[_rows[found].File];
        line = _rows[found].Line;
        return true;
    }

    // SHF_COMPRESSED in sh_flags, ELFCOMPRESS_ZLIB in ch_type, sizeof(Elf64_Chdr).
    private const ulong ShfCompressed = 0x800;
    private const uint ElfCompressZlib = 1;
    private const int Elf64ChdrSize = 24;

    // Deflate cannot expand data more than 1032:1, so a larger ch_size is a lie, not a size to allocate.
    private const ulong MaxDeflateRatio = 1032;

    /// <summary>The contents of an ELF64 section: raw itself, or for SHF_COMPRESSED the zlib stream
    /// after the Elf64_Chdr inflated to ch_size bytes. Never throws: an unknown ch_type (zstd), a
    /// corrupt stream or an impossible ch_size give an empty array, a short stream what it held.</summary>
    public static byte[] SectionBytes(ReadOnlySpan<byte> raw, ulong shFlags)
    {
        if ((shFlags & ShfCompressed) == 0)
            return raw.ToArray();
        if (raw.Length < Elf64ChdrSize || BinaryPrimitives.ReadUInt32LittleEndian(raw) != ElfCompressZlib)
            return Array.Empty<byte>();
        ulong size = BinaryPrimitives.ReadUInt64LittleEndian(raw[8..]);
        if (size > (ulong)Array.MaxLength || size > (ulong)(raw.Length - Elf64ChdrSize) * MaxDeflateRatio)
            return Array.Empty<byte>();
        try
        {
            using var zlib = new ZLibStream(new MemoryStream(raw[Elf64ChdrSize..].ToArray()), CompressionMode.Decompress);
            var bytes = new byte[size];
            int read = zlib.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
            if (read < bytes.Length)
                Array.Resize(ref bytes, read);
            return bytes;
        }
        catch (InvalidDataException)
        {
            return Array.Empty<byte>();
        }
    }

    /// <summary>Collects the rows of closed sequences and the interned paths, then sorts them into
    /// a table. Rows of the sequence being run are kept at the end of _rows from _sequenceFirst.</summary>
    private sealed class Builder
    {
        // A closed sequence: _rows[First .. First + Count), the last row its end row.
        private readonly record struct Sequence(int First, int Count, ulong Start, ulong End);

        private readonly List<Row> _rows = new();
        private readonly List<Sequence> _sequences = new();
        private readonly List<string> _files = new();
        private readonly Dictionary<string, int> _fileIds = new(StringComparer.Ordinal);

        // Index in _rows of the open sequence's first row; _rows.Count when it has none yet.
        private int _sequenceFirst;

        // The open sequence went backwards (DWARF forbids it) or was set to a tombstone address.
        private bool _sequenceBad;

        public int Intern(string path)
        {
            if (!_fileIds.TryGetValue(path, out int id))
            {
                id = _files.Count;
                _files.Add(path);
                _fileIds.Add(path, id);
            }
            return id;
        }

        public void MarkTombstone() => _sequenceBad = true;

        /// <summary>Appends a row to the open sequence; a row at the address of the previous one
        /// replaces it (addr2line keeps the last row of an address).</summary>
        public void Add(ulong address, int file, int line)
        {
            var row = new Row(address, file, line);
            if (_rows.Count > _sequenceFirst)
            {
                ulong previous = _rows[^1].Address;
                if (previous == address)
                {
                    _rows[^1] = row;
                    return;
                }
                if (previous > address)
                    _sequenceBad = true;
            }
            _rows.Add(row);
        }

        /// <summary>DW_LNE_end_sequence at address: closes the open sequence. One that covers no
        /// bytes, went backwards or was tombstoned leaves nothing behind.</summary>
        public void EndSequence(ulong address)
        {
            Add(address, EndOfSequence, 0);
            int count = _rows.Count - _sequenceFirst;
            if (_sequenceBad || count < 2)
                _rows.RemoveRange(_sequenceFirst, count);
            else
                _sequences.Add(new Sequence(_sequenceFirst, count, _rows[_sequenceFirst].Address, address));
            _sequenceFirst = _rows.Count;
            _sequenceBad = false;
        }

        /// <summary>A unit ended inside a sequence (truncated or malformed): its rows have no end.</summary>
        public void AbandonSequence()
        {
            _rows.RemoveRange(_sequenceFirst, _rows.Count - _sequenceFirst);
            _sequenceBad = false;
        }

        public DwarfLineTable Build()
        {
            bool anyNonZero = _sequences.Exists(static s => s.Start != 0);
            var kept = anyNonZero ? _sequences.FindAll(static s => s.Start != 0) : _sequences;
            if (kept.Count == 0)
                return Empty;
            // Start ascending, longest first on a tie, then section order (List.Sort is unstable).
            kept.Sort(static (a, b) =>
                a.Start != b.Start ? a.Start.CompareTo(b.Start) :
                a.End != b.End ? b.End.CompareTo(a.End) : a.First.CompareTo(b.First));

            var rows = new List<Row>(_rows.Count);
            ulong lastEnd = 0;
            bool first = true;
            foreach (var sequence in kept)
            {
                int from = sequence.First, end = sequence.First + sequence.Count;
                if (!first && sequence.Start < lastEnd)
                {
                    if (sequence.End <= lastEnd)
                        continue; // nested in the previous sequence
                    // Trim: start at lastEnd with the row in effect there. The end row is past
                    // lastEnd, so the row found is a real one.
                    while (_rows[from + 1].Address <= lastEnd)
                        from++;
                    rows.Add(_rows[from] with { Address = lastEnd });
                    from++;
                }
                for (int i = from; i < end; i++)
                    rows.Add(_rows[i]);
                lastEnd = sequence.End;
                first = false;
            }
            return new DwarfLineTable(rows.ToArray(), _files.ToArray());
        }
    }
}
