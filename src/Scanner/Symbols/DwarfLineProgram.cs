// DwarfLineProgram: the reading half of DwarfLineTable — the DWARF constants, the unit header
// and line-number program interpreter (UnitParser) and the bounds-checked byte reader
// (LineReader). DwarfLineTable.cs holds the table, its lookup and the Builder that sorts and
// trims the sequences the parser emits. See DwarfLineTable.cs for the rules and the costs.

using System;
using System.Collections.Generic;
using System.Text;

namespace Interposer.Scanner.Symbols;

internal sealed partial class DwarfLineTable
{
    // DWARF constants: standard opcodes (DW_LNS_*), extended opcodes (DW_LNE_*), the content
    // types of DWARF 5 directory and file entries (DW_LNCT_*) and the forms they come in (DW_FORM_*).
    private const byte LnsCopy = 1, LnsAdvancePc = 2, LnsAdvanceLine = 3, LnsSetFile = 4, LnsSetColumn = 5,
        LnsNegateStmt = 6, LnsSetBasicBlock = 7, LnsConstAddPc = 8, LnsFixedAdvancePc = 9,
        LnsSetPrologueEnd = 10, LnsSetEpilogueBegin = 11, LnsSetIsa = 12;
    private const byte LneEndSequence = 1, LneSetAddress = 2, LneDefineFile = 3;
    private const ulong LnctPath = 1, LnctDirectoryIndex = 2;
    private const ulong FormBlock2 = 0x03, FormBlock4 = 0x04, FormData2 = 0x05, FormData4 = 0x06,
        FormData8 = 0x07, FormString = 0x08, FormBlock = 0x09, FormBlock1 = 0x0a, FormData1 = 0x0b,
        FormFlag = 0x0c, FormSdata = 0x0d, FormStrp = 0x0e, FormUdata = 0x0f, FormSecOffset = 0x17,
        FormFlagPresent = 0x19, FormStrx = 0x1a, FormData16 = 0x1e, FormLineStrp = 0x1f,
        FormStrx1 = 0x25, FormStrx2 = 0x26, FormStrx3 = 0x27, FormStrx4 = 0x28;

    // Where a name's bytes are; None when its form points somewhere we cannot read (strx, an
    // offset past the section, no NUL).
    private enum StringSection : byte { None, DebugLine, DebugLineStr, DebugStr }

    private readonly record struct StringRef(StringSection Section, int Offset, int Length);

    // A file table entry: its name and its index in the directory table, as the unit numbers them.
    private readonly record struct FileEntry(StringRef Name, ulong Directory);

    // The fixed part of a unit header that the line program needs.
    private readonly record struct ProgramHeader(
        byte MinInstructionLength, byte MaxOpsPerInstruction, sbyte LineBase, byte LineRange,
        byte OpcodeBase, int StandardOpcodeLengths);

    // The state-machine registers a report needs (column, is_stmt and the rest are read and dropped).
    private struct Registers
    {
        public ulong Address;
        public ulong OpIndex;
        public ulong File;
        public long Line;

        public static Registers Initial => new() { File = 1, Line = 1 };

        // Operation advance per DWARF 4 6.2.5.1; OpIndex stays 0 on everything but VLIW targets.
        public void Advance(ulong operationAdvance, in ProgramHeader header)
        {
            if (header.MaxOpsPerInstruction <= 1)
            {
                Address += header.MinInstructionLength * operationAdvance;
                return;
            }
            ulong total = OpIndex + operationAdvance;
            Address += header.MinInstructionLength * (total / header.MaxOpsPerInstruction);
            OpIndex = total % header.MaxOpsPerInstruction;
        }
    }

    /// <summary>Reads one unit at a time: its header and directory / file tables, then runs its line
    /// program into the Builder. The tables are reused from unit to unit.</summary>
    private ref struct UnitParser
    {
        private readonly ReadOnlySpan<byte> _debugLine;
        private readonly ReadOnlySpan<byte> _debugLineStr;
        private readonly ReadOnlySpan<byte> _debugStr;
        private readonly Builder _builder;

        // The current unit's directory and file tables, in the unit's own order.
        private readonly List<StringRef> _directories = new();
        private readonly List<FileEntry> _fileEntries = new();

        // _fileEntries index -> Builder path id; NotResolved until a row names the entry, so a
        // unit's dozens of headers without code cost no path string.
        private readonly List<int> _fileIds = new();
        private const int NotResolved = int.MinValue;

        private int _version;

        // DWARF 2-4: the compilation directory of each line table, by its offset (DwarfCompDirs),
        // and the current unit's.
        private readonly IReadOnlyDictionary<long, string>? _compDirs;
        private string? _unitCompDir;

        public UnitParser(ReadOnlySpan<byte> debugLine, ReadOnlySpan<byte> debugLineStr, ReadOnlySpan<byte> debugStr, Builder builder,
                          IReadOnlyDictionary<long, string>? compDirs = null)
        {
            _debugLine = debugLine;
            _debugLineStr = debugLineStr;
            _debugStr = debugStr;
            _builder = builder;
            _version = 0;
            _compDirs = compDirs;
            _unitCompDir = null;
        }

        /// <summary>The unit at unitStart (its unit_length), whose header starts at position and
        /// which ends at unitEnd (all within .debug_line). Malformed or unsupported: adds nothing.</summary>
        public void Parse(int unitStart, int position, int unitEnd, int offsetSize)
        {
            _unitCompDir = _compDirs is not null && _compDirs.TryGetValue(unitStart, out string? dir) ? dir : null;
            var reader = new LineReader(_debugLine[..unitEnd], position);
            if (TryReadHeader(ref reader, offsetSize, out var header))
                RunProgram(ref reader, header);
        }

        private bool TryReadHeader(ref LineReader r, int offsetSize, out ProgramHeader header)
        {
            header = default;
            _directories.Clear();
            _fileEntries.Clear();
            _fileIds.Clear();
            _version = r.U16();
            if (_version < 2 || _version > 5)
                return false;
            if (_version >= 5)
            {
                r.U8(); // address_size: DW_LNE_set_address carries its own operand size
                r.U8(); // segment_selector_size
            }
            ulong headerLength = r.Unsigned(offsetSize);
            if (r.Failed || headerLength > (ulong)r.Remaining)
                return false;
            int programStart = r.Position + (int)headerLength;

            // The tables are read within header_length, so a bad one cannot run into the program.
            var h = new LineReader(_debugLine[..programStart], r.Position);
            byte minInstructionLength = h.U8();
            byte maxOps = _version >= 4 ? h.U8() : (byte)1;
            h.U8(); // default_is_stmt
            sbyte lineBase = (sbyte)h.U8();
            byte lineRange = h.U8();
            byte opcodeBase = h.U8();
            int standardOpcodeLengths = h.Position;
            // line_range divides every special opcode; opcode_base 0 has no room for opcode 0.
            if (h.Failed || lineRange == 0 || opcodeBase == 0)
                return false;
            h.Skip((ulong)opcodeBase - 1);
            bool tables = _version >= 5
                ? ReadEntries(ref h, offsetSize, directories: true) && ReadEntries(ref h, offsetSize, directories: false)
                : ReadPreDwarf5Tables(ref h);
            if (!tables)
                return false;
            header = new ProgramHeader(minInstructionLength, maxOps, lineBase, lineRange, opcodeBase, standardOpcodeLengths);
            r.Position = programStart;
            return true;
        }

        // DWARF 2-4: include_directories then file_names, each ended by an empty name.
        private bool ReadPreDwarf5Tables(ref LineReader h)
        {
            while (true)
            {
                var directory = h.CString();
                if (h.Failed)
                    return false;
                if (directory.Length == 0)
                    break;
                _directories.Add(directory);
            }
            while (true)
            {
                var name = h.CString();
                if (h.Failed)
                    return false;
                if (name.Length == 0)
                    break;
                ulong directory = h.Uleb();
                h.Uleb(); // modification time
                h.Uleb(); // length
                _fileEntries.Add(new FileEntry(name, directory));
            }
            return !h.Failed;
        }

        // DWARF 5: an entry format (content type, form pairs), a count, then the entries.
        private bool ReadEntries(ref LineReader h, int offsetSize, bool directories)
        {
            int formatCount = h.U8();
            Span<ulong> format = stackalloc ulong[2 * byte.MaxValue];
            for (int i = 0; i < formatCount; i++)
            {
                format[2 * i] = h.Uleb();
                format[(2 * i) + 1] = h.Uleb();
            }
            ulong count = h.Uleb();
            // Each entry holds a path, so takes at least a byte: a larger count is garbage.
            if (h.Failed || count > (ulong)h.Remaining)
                return false;
            for (ulong e = 0; e < count; e++)
            {
                StringRef path = default;
                ulong directory = 0;
                for (int i = 0; i < formatCount; i++)
                {
                    if (!ReadForm(ref h, format[(2 * i) + 1], offsetSize, out ulong value, out var text))
                        return false;
                    if (format[2 * i] == LnctPath)
                        path = text;
                    else if (format[2 * i] == LnctDirectoryIndex)
                        directory = value;
                }
                if (path.Section == StringSection.None)
                    return false;
                if (directories)
                    _directories.Add(path);
                else
                    _fileEntries.Add(new FileEntry(path, directory));
            }
            return true;
        }

        // One attribute value. False for a form whose size we do not know: nothing after it can be read.
        private readonly bool ReadForm(ref LineReader h, ulong form, int offsetSize, out ulong value, out StringRef text)
        {
            value = 0;
            text = default;
            switch (form)
            {
                case FormString: text = h.CString(); break;
                case FormLineStrp: text = StringAt(StringSection.DebugLineStr, _debugLineStr, h.Unsigned(offsetSize)); break;
                case FormStrp: text = StringAt(StringSection.DebugStr, _debugStr, h.Unsigned(offsetSize)); break;
                case FormUdata: value = h.Uleb(); break;
                case FormSdata: value = (ulong)h.Sleb(); break;
                case FormData1: case FormFlag: value = h.U8(); break;
                case FormData2: value = h.Unsigned(2); break;
                case FormData4: value = h.Unsigned(4); break;
                case FormData8: value = h.Unsigned(8); break;
                case FormData16: h.Skip(16); break;
                case FormBlock: h.Skip(h.Uleb()); break;
                case FormBlock1: h.Skip(h.U8()); break;
                case FormBlock2: h.Skip(h.Unsigned(2)); break;
                case FormBlock4: h.Skip(h.Unsigned(4)); break;
                case FormSecOffset: h.Unsigned(offsetSize); break;
                case FormFlagPresent: break;
                // Indexes into .debug_str_offsets, which a line table alone cannot resolve.
                case FormStrx: h.Uleb(); break;
                case FormStrx1: h.Skip(1); break;
                case FormStrx2: h.Skip(2); break;
                case FormStrx3: h.Skip(3); break;
                case FormStrx4: h.Skip(4); break;
                default: return false;
            }
            return !h.Failed;
        }

        private static StringRef StringAt(StringSection section, ReadOnlySpan<byte> bytes, ulong offset)
        {
            if (offset >= (ulong)bytes.Length)
                return default;
            int length = bytes[(int)offset..].IndexOf((byte)0);
            return length < 0 ? default : new StringRef(section, (int)offset, length);
        }

        private void RunProgram(ref LineReader r, in ProgramHeader h)
        {
            var state = Registers.Initial;
            while (r.Remaining > 0 && !r.Failed)
            {
                byte opcode = r.U8();
                if (opcode >= h.OpcodeBase)
                {
                    int adjusted = opcode - h.OpcodeBase;
                    state.Advance((ulong)(adjusted / h.LineRange), h);
                    state.Line += h.LineBase + (adjusted % h.LineRange);
                    AddRow(state);
                    continue;
                }
                switch (opcode)
                {
                    case 0:
                        RunExtended(ref r, ref state);
                        break;
                    case LnsCopy: AddRow(state); break;
                    case LnsAdvancePc: state.Advance(r.Uleb(), h); break;
                    case LnsAdvanceLine: state.Line += r.Sleb(); break;
                    case LnsSetFile: state.File = r.Uleb(); break;
                    case LnsSetColumn: r.Uleb(); break;
                    case LnsNegateStmt: case LnsSetBasicBlock: case LnsSetPrologueEnd: case LnsSetEpilogueBegin: break;
                    case LnsConstAddPc: state.Advance((ulong)((255 - h.OpcodeBase) / h.LineRange), h); break;
                    case LnsFixedAdvancePc:
                        state.Address += r.Unsigned(2);
                        state.OpIndex = 0;
                        break;
                    case LnsSetIsa: r.Uleb(); break;
                    default:
                        // A standard opcode newer than us: its operand count is in the header
                        // (within it: opcode < opcode_base was checked by the header's Skip).
                        for (int i = _debugLine[h.StandardOpcodeLengths + opcode - 1]; i > 0; i--)
                            r.Uleb();
                        break;
                }
            }
            // Rows after the last end_sequence (a truncated unit) have no end address.
            _builder.AbandonSequence();
        }

        private void RunExtended(ref LineReader r, ref Registers state)
        {
            ulong length = r.Uleb();
            if (r.Failed || length == 0)
                return;
            if (length > (ulong)r.Remaining)
            {
                r.Skip(length); // fails: the unit's program ends here
                return;
            }
            int end = r.Position + (int)length;
            switch (r.U8())
            {
                case LneEndSequence:
                    _builder.EndSequence(state.Address);
                    state = Registers.Initial;
                    break;
                case LneSetAddress:
                    int size = (int)length - 1;
                    if (size is < 1 or > 8)
                        break;
                    state.Address = r.Unsigned(size);
                    state.OpIndex = 0;
                    // All ones: lld's mark for code the linker discarded.
                    if (state.Address == ulong.MaxValue >> (64 - (8 * size)))
                        _builder.MarkTombstone();
                    break;
                case LneDefineFile when _version < 5:
                    var name = r.CString();
                    ulong directory = r.Uleb();
                    if (!r.Failed && r.Position <= end)
                        _fileEntries.Add(new FileEntry(name, directory));
                    break;
                default:
                    break; // set_discriminator, vendor extensions: nothing a report prints
            }
            if (!r.Failed)
                r.Position = end;
        }

        private void AddRow(in Registers state) =>
            _builder.Add(state.Address, FileId(state.File), (int)Math.Clamp(state.Line, 0, int.MaxValue));

        // The path id of the file register's entry. DWARF 5 numbers files from 0, earlier versions
        // from 1 with 0 meaning "no file".
        private int FileId(ulong register)
        {
            ulong index = _version >= 5 ? register : register - 1;
            if (index >= (ulong)_fileEntries.Count)
                return UnknownFile;
            int i = (int)index;
            while (_fileIds.Count <= i)
                _fileIds.Add(NotResolved);
            if (_fileIds[i] == NotResolved)
                _fileIds[i] = _builder.Intern(FullPath(_fileEntries[i]));
            return _fileIds[i];
        }

        // bfd's concat_filename. The compilation directory: DWARF 5's directory 0, or for DWARF 2-4
        // the DW_AT_comp_dir of the unit that owns this line table (when .debug_info was read).
        private readonly string FullPath(FileEntry entry)
        {
            string name = Decode(entry.Name);
            if (name.StartsWith('/'))
                return name;
            string? compDir = _version >= 5 ? (_directories.Count > 0 ? Decode(_directories[0]) : null) : _unitCompDir;
            ulong index = _version >= 5 ? entry.Directory : entry.Directory - 1;
            string? subdir = index < (ulong)_directories.Count ? Decode(_directories[(int)index]) : null;
            string? dir = subdir is null || !subdir.StartsWith('/') ? compDir : null;
            if (dir is null)
            {
                dir = subdir;
                subdir = null;
            }
            return dir is null ? name : subdir is null ? $"{dir}/{name}" : $"{dir}/{subdir}/{name}";
        }

        private readonly string Decode(StringRef text)
        {
            var section = text.Section switch
            {
                StringSection.DebugLine => _debugLine,
                StringSection.DebugLineStr => _debugLineStr,
                StringSection.DebugStr => _debugStr,
                _ => ReadOnlySpan<byte>.Empty,
            };
            return Encoding.UTF8.GetString(section.Slice(text.Offset, text.Length));
        }
    }

    /// <summary>A little-endian cursor over a span that never throws: a read past the end returns
    /// 0, sets Failed and moves Position to the end, so every loop over it stops.</summary>
    private ref struct LineReader
    {
        private readonly ReadOnlySpan<byte> _data;
        public int Position;
        public bool Failed;

        public LineReader(ReadOnlySpan<byte> data, int position)
        {
            _data = data;
            Position = Math.Clamp(position, 0, data.Length);
            Failed = false;
        }

        public readonly int Remaining => _data.Length - Position;

        public byte U8()
        {
            if (Position < _data.Length)
                return _data[Position++];
            Fail();
            return 0;
        }

        public ushort U16() => (ushort)Unsigned(2);

        public uint U32() => (uint)Unsigned(4);

        public ulong U64() => Unsigned(8);

        /// <summary>A size-byte little-endian unsigned value, size 1..8 (an offset, an address).</summary>
        public ulong Unsigned(int size)
        {
            if (size < 1 || size > 8 || size > Remaining)
            {
                Fail();
                return 0;
            }
            ulong value = 0;
            for (int i = size - 1; i >= 0; i--)
                value = (value << 8) | _data[Position + i];
            Position += size;
            return value;
        }

        public ulong Uleb()
        {
            ulong result = 0;
            int shift = 0;
            while (Position < _data.Length)
            {
                byte b = _data[Position++];
                if (shift < 64)
                {
                    result |= (ulong)(b & 0x7f) << shift;
                    shift += 7;
                }
                if ((b & 0x80) == 0)
                    return result;
            }
            Fail();
            return 0;
        }

        public long Sleb()
        {
            long result = 0;
            int shift = 0;
            while (Position < _data.Length)
            {
                byte b = _data[Position++];
                if (shift < 64)
                {
                    result |= (long)(b & 0x7f) << shift;
                    shift += 7;
                }
                if ((b & 0x80) == 0)
                    return shift < 64 && (b & 0x40) != 0 ? result | (-1L << shift) : result;
            }
            Fail();
            return 0;
        }

        public void Skip(ulong count)
        {
            if (count > (ulong)Remaining)
                Fail();
            else
                Position += (int)count;
        }

        /// <summary>A unit's unit_length: 32-bit DWARF, or 0xffffffff then a 64-bit length; offsetSize
        /// is 4 or 8 to match. False when it cannot be read or is reserved (0xfffffff0..0xfffffffe):
        /// nothing after it can be found.</summary>
        public bool UnitLength(out ulong length, out int offsetSize)
        {
            length = U32();
            offsetSize = 4;
            if (length == 0xffffffff)
            {
                length = U64();
                offsetSize = 8;
            }
            return !Failed && (offsetSize == 8 || length < 0xfffffff0);
        }

        /// <summary>The bytes of a string read from this reader's data (CString).</summary>
        public readonly ReadOnlySpan<byte> Bytes(StringRef text) => _data.Slice(text.Offset, text.Length);

        /// <summary>A NUL-terminated string in place; its bytes stay in the section until a row needs them.</summary>
        public StringRef CString()
        {
            int length = _data[Position..].IndexOf((byte)0);
            if (length < 0)
            {
                Fail();
                return default;
            }
            var text = new StringRef(StringSection.DebugLine, Position, length);
            Position += length + 1;
            return text;
        }

        private void Fail()
        {
            Failed = true;
            Position = _data.Length;
        }
    }
}
