// DwarfLineTable against binutils' addr2line as the oracle: small C programs built by gcc at
// several DWARF versions, optimisation levels and layouts (a header with a function body, a
// second file in a subdirectory, a shared object, 64-bit DWARF, gc-sections), libc's debug file,
// hand-built units for what gcc never emits, and damaged sections that must not throw.
//
// The ELF section headers are read by hand here (ELF64, little-endian) so the oracle side shares
// no code with the scanner.

using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.IO.Compression;
using System.Linq;
using System.Text;
using Interposer.Scanner.Symbols;
using NUnit.Framework;

namespace Interposer.Tests.Symbols;

public class DwarfLineTableTests
{
    private LineTestWorkspace _work = null!;

    [OneTimeSetUp]
    public void CreateWorkspace() => _work = new LineTestWorkspace();

    [OneTimeTearDown]
    public void RemoveWorkspace() => _work.Dispose();

    // gcc arguments, whether the sources are named by absolute path, output name. DWARF 2-4 keep
    // the compilation directory out of the line table, so those builds use absolute paths here
    // (RelativeSources_WithTheUnitsCompDir_AgreeWithAddr2line reads it from .debug_info;
    // Dwarf4_RelativeSources_LackOnlyTheCompilationDirectory pins the line table alone).
    // -gno-as-loc-support makes gcc write .debug_line itself instead of gas: the only way to get
    // DWARF 2 and 64-bit DWARF line tables out of this toolchain.
    private static readonly object[] s_builds =
    {
        new object[] { "-O0 -g -gdwarf-5", false, "o0-dwarf5" },
        new object[] { "-O2 -g -gdwarf-5", false, "o2-dwarf5" },
        new object[] { "-O0 -g -gdwarf-4", true, "o0-dwarf4" },
        new object[] { "-O2 -g -gdwarf-4", true, "o2-dwarf4" },
        new object[] { "-O2 -g -gdwarf-3", true, "o2-dwarf3" },
        new object[] { "-O2 -g -gdwarf-2 -gno-as-loc-support", true, "o2-dwarf2-gcc" },
        new object[] { "-O2 -g -gdwarf-5 -gno-as-loc-support", false, "o2-dwarf5-gcc" },
        new object[] { "-O2 -g -gdwarf-5 -gdwarf64 -gno-as-loc-support", false, "o2-dwarf5-64" },
        new object[] { "-O1 -g -gdwarf-4 -gdwarf64 -gno-as-loc-support", true, "o1-dwarf4-64" },
        new object[] { "-O2 -g -gdwarf-5 -ffunction-sections -Wl,--gc-sections", false, "o2-gc-sections" },
        new object[] { "-O2 -g -gdwarf-5 -shared -fPIC", false, "libo2-dwarf5.so" },
        new object[] { "-O0 -g -gdwarf-4 -shared -fPIC", true, "libo0-dwarf4.so" },
    };

    [TestCaseSource(nameof(s_builds))]
    public void EveryByteOfEveryFunction_AgreesWithAddr2line(string gccArguments, bool absolutePaths, string output)
    {
        string binary = _work.Build(output, gccArguments, absolutePaths);
        var table = LineSections.Read(binary).Parse();
        var addresses = LineTestWorkspace.FunctionBytes(binary);

        var mismatches = Compare(table, binary, addresses, out var filesSeen);

        Assert.That(mismatches, Is.Empty);
        // Not vacuous: rows were found in all three source files, the header's included.
        Assert.That(filesSeen, Has.Some.EndsWith("/main.c"));
        Assert.That(filesSeen, Has.Some.EndsWith("/inc/other.h"));
        Assert.That(filesSeen, Has.Some.EndsWith("/second.c"));
    }

    // With .debug_info, DWARF 2-4 units get their DW_AT_comp_dir: the paths are addr2line's exactly.
    [TestCase("-O2 -g -gdwarf-4", "o2-dwarf4-rel-units")]
    [TestCase("-O0 -g -gdwarf-3", "o0-dwarf3-rel-units")]
    [TestCase("-O2 -g -gdwarf-2 -gno-as-loc-support", "o2-dwarf2-rel-units")]
    [TestCase("-O1 -g -gdwarf-4 -gdwarf64 -gno-as-loc-support", "o1-dwarf4-64-rel-units")]
    [TestCase("-O2 -g -gdwarf-5", "o2-dwarf5-rel-units")]
    public void RelativeSources_WithTheUnitsCompDir_AgreeWithAddr2line(string gccArguments, string output)
    {
        string binary = _work.Build(output, gccArguments, absolutePaths: false);
        var sections = LineSections.Read(binary);
        var table = sections.ParseWithUnits();
        var addresses = LineTestWorkspace.FunctionBytes(binary);

        var mismatches = Compare(table, binary, addresses, out var filesSeen);

        Assert.That(mismatches, Is.Empty);
        Assert.That(filesSeen, Has.Some.EqualTo(_work.Directory + "/main.c"), "the relative name got its directory");
        Assert.That(filesSeen, Has.Some.EndsWith("/inc/other.h"));
    }

    [Test]
    public void Dwarf4_RelativeSources_LackOnlyTheCompilationDirectory()
    {
        string binary = _work.Build("o2-dwarf4-relative", "-O2 -g -gdwarf-4", absolutePaths: false);
        var table = LineSections.Read(binary).Parse();
        var addresses = LineTestWorkspace.FunctionBytes(binary);
        var expected = LineTestWorkspace.Addr2line(binary, addresses);

        int found = 0;
        var mismatches = new List<string>();
        for (int i = 0; i < addresses.Count; i++)
        {
            bool ok = table.TryFind(addresses[i], out string file, out int line);
            if (!ok)
                continue;
            found++;
            // DW_AT_comp_dir is in .debug_info: addr2line puts it in front, the line table cannot.
            if (expected[i].Line != line || expected[i].File != _work.Directory + "/" + file)
                mismatches.Add($"0x{addresses[i]:x}: ours {file}:{line}, addr2line {expected[i]}");
        }

        Assert.That(mismatches, Is.Empty);
        Assert.That(found, Is.GreaterThan(addresses.Count / 2));
    }

    [Test]
    public void CompressedDebugSections_ParseLikeTheUncompressedOnes()
    {
        string plain = _work.Build("o2-plain", "-O2 -g -gdwarf-5", absolutePaths: false);
        string compressed = _work.PathOf("o2-zlib");
        LineTestWorkspace.Run("objcopy", $"--compress-debug-sections=zlib \"{plain}\" \"{compressed}\"");
        var sections = LineSections.Read(compressed);
        Assert.That(sections.LineFlags & 0x800, Is.EqualTo(0x800UL), "objcopy did not set SHF_COMPRESSED");

        var expected = Compare(LineSections.Read(plain).Parse(), plain, LineTestWorkspace.FunctionBytes(plain), out _);
        var mismatches = Compare(sections.Parse(), compressed, LineTestWorkspace.FunctionBytes(compressed), out var files);

        Assert.That(expected, Is.Empty);
        Assert.That(mismatches, Is.Empty);
        Assert.That(files, Is.Not.Empty);
    }

    [Test]
    public void LibcDebugFile_AgreesWithAddr2line()
    {
        string debugFile = LibcDebugFile();
        var sections = LineSections.Read(debugFile);

        // First parse pays for the JIT; the second is what a long-running scanner sees.
        var clock = Stopwatch.StartNew();
        var inflated = sections.Inflate();
        double inflateMs = clock.Elapsed.TotalMilliseconds;
        clock.Restart();
        var table = DwarfLineTable.Parse(inflated.Line, inflated.LineStr, inflated.Str);
        double firstMs = clock.Elapsed.TotalMilliseconds;
        clock.Restart();
        DwarfLineTable.Parse(inflated.Line, inflated.LineStr, inflated.Str);
        double secondMs = clock.Elapsed.TotalMilliseconds;
        TestContext.Out.WriteLine(
            $"libc .debug_line: {sections.Line.Length} bytes raw (flags 0x{sections.LineFlags:x}), {inflated.Line.Length} inflated " +
            $"in {inflateMs:F1} ms (all three sections); Parse {firstMs:F1} ms first, {secondMs:F1} ms second; {table.Count} rows");

        var addresses = LibcSampleAddresses(debugFile);
        var mismatches = Compare(table, debugFile, addresses, out var files);

        Assert.That(mismatches, Is.Empty);
        Assert.That(files, Has.Some.EqualTo("./malloc/./malloc/malloc.c"));
        Assert.That(addresses.Count, Is.GreaterThanOrEqualTo(100));
    }

    [TestCase("-O2 -g -gdwarf-5", false)]
    [TestCase("-O2 -g -gdwarf-4", true)]
    public void EveryPrefixOfTheSections_ParsesToPartOfTheWholeTable(string gccArguments, bool absolutePaths)
    {
        string binary = _work.Build(absolutePaths ? "prefix-dwarf4" : "prefix-dwarf5", gccArguments, absolutePaths);
        var s = LineSections.Read(binary).Inflate();
        var addresses = LineTestWorkspace.FunctionBytes(binary);
        var whole = Answers(DwarfLineTable.Parse(s.Line, s.LineStr, s.Str), addresses);
        Assert.That(whole.Count(a => a is not null), Is.GreaterThan(addresses.Count / 2));

        // A prefix loses whole units or sequences, never changes an answer.
        for (int n = 0; n <= s.Line.Length; n++)
            AssertPartOf(whole, Answers(DwarfLineTable.Parse(s.Line.AsSpan(0, n), s.LineStr, s.Str), addresses), $".debug_line[..{n}]");
        for (int n = 0; n <= s.LineStr.Length; n++)
            AssertPartOf(whole, Answers(DwarfLineTable.Parse(s.Line, s.LineStr.AsSpan(0, n), s.Str), addresses), $".debug_line_str[..{n}]");
        Assert.That(Answers(DwarfLineTable.Parse(s.Line, s.LineStr, s.Str), addresses), Is.EqualTo(whole));
    }

    [TestCase("-O2 -g -gdwarf-5", false, "flip-dwarf5")]
    [TestCase("-O0 -g -gdwarf-4", true, "flip-dwarf4")]
    [TestCase("-O2 -g -gdwarf-5 -gdwarf64 -gno-as-loc-support", false, "flip-dwarf5-64")]
    public void RandomByteFlips_NeverThrow(string gccArguments, bool absolutePaths, string output)
    {
        string binary = _work.Build(output, gccArguments, absolutePaths);
        var s = LineSections.Read(binary).Inflate();
        var addresses = LineTestWorkspace.FunctionBytes(binary);
        var random = new Random(20240611);
        int rowsSeen = 0;

        for (int round = 0; round < 4000; round++)
        {
            byte[] line = (byte[])s.Line.Clone();
            byte[] lineStr = (byte[])s.LineStr.Clone();
            for (int flips = random.Next(1, 9); flips > 0; flips--)
            {
                byte[] target = random.Next(8) == 0 && lineStr.Length > 0 ? lineStr : line;
                target[random.Next(target.Length)] ^= (byte)random.Next(1, 256);
            }
            var table = DwarfLineTable.Parse(line, lineStr, s.Str);
            rowsSeen += table.Count;
            foreach (ulong address in addresses)
                table.TryFind(address, out _, out _);
            table.TryFind(0, out _, out _);
            table.TryFind(ulong.MaxValue, out _, out _);
        }

        Assert.That(rowsSeen, Is.GreaterThan(0), "every damaged copy parsed to nothing: the flips never reached a line program");
    }

    // The .debug_info reader of DWARF 2-4 compilation directories, damaged: never throws, and the
    // undamaged copy does find the directory.
    [TestCase("-O0 -g -gdwarf-4", "units-flip-dwarf4")]
    [TestCase("-O2 -g -gdwarf-5", "units-flip-dwarf5")]
    public void CompDirReader_RandomByteFlipsAndPrefixes_NeverThrow(string gccArguments, string output)
    {
        string binary = _work.Build(output, gccArguments, absolutePaths: false);
        var sections = LineSections.Read(binary);
        var (_, lineStr, str) = sections.Inflate();
        var (info, abbrev) = sections.UnitSections;
        Assert.That(DwarfLineTable.ReadCompDirs(info, abbrev, str, lineStr).Values, Has.Some.EqualTo(_work.Directory));
        var random = new Random(20261126);
        for (int round = 0; round < 3000; round++)
        {
            byte[] i = (byte[])info.Clone(), a = (byte[])abbrev.Clone();
            for (int flips = random.Next(1, 6); flips > 0; flips--)
            {
                byte[] target = random.Next(3) == 0 ? a : i;
                target[random.Next(target.Length)] ^= (byte)random.Next(1, 256);
            }
            DwarfLineTable.ReadCompDirs(i, a, str, lineStr);
        }
        for (int cut = 0; cut < info.Length; cut += Math.Max(1, info.Length / 500))
            DwarfLineTable.ReadCompDirs(info.AsSpan(0, cut), abbrev, str, lineStr);
        for (int cut = 0; cut < abbrev.Length; cut++)
            DwarfLineTable.ReadCompDirs(info, abbrev.AsSpan(0, cut), str, lineStr);
    }

    [Test]
    public void EmptyOrGarbageInput_GivesAnEmptyTable()
    {
        var empty = DwarfLineTable.Parse(ReadOnlySpan<byte>.Empty, ReadOnlySpan<byte>.Empty, ReadOnlySpan<byte>.Empty);
        byte[] noise = new byte[4096];
        new Random(7).NextBytes(noise);

        Assert.That(empty.Count, Is.EqualTo(0));
        Assert.That(empty.TryFind(0x1000, out string file, out int line), Is.False);
        Assert.That((file, line), Is.EqualTo((string.Empty, 0)));
        Assert.That(DwarfLineTable.Empty.Count, Is.EqualTo(0));
        Assert.That(DwarfLineTable.Empty.TryFind(0, out _, out _), Is.False);
        Assert.That(DwarfLineTable.Parse(new byte[] { 0xff, 0xff, 0xff, 0xff }, default, default).Count, Is.EqualTo(0));
        Assert.That(DwarfLineTable.Parse(noise, noise, noise).TryFind(0x1000, out _, out _), Is.False);
    }

    // ---- hand-built units: what gcc does not emit ----

    [Test]
    public void Dwarf5_StrpUdataMd5AndBlockForms_UnknownOpcodesSkipped()
    {
        byte[] debugStr = Encoding.ASCII.GetBytes("xx\0a.c\0b.h\0");
        var unit = new LineUnit(version: 5, opcodeBase: 14, standardLengths: new byte[] { 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1, 2 });
        unit.Header.U8(1).Uleb(1).Uleb(0x08);                           // directories: path as DW_FORM_string
        unit.Header.Uleb(2).CString("/src").CString("lib");
        unit.Header.U8(4).Uleb(1).Uleb(0x0e).Uleb(2).Uleb(0x0f)          // files: path strp, dir udata,
            .Uleb(5).Uleb(0x1e).Uleb(0x2001).Uleb(0x09);                 // MD5 data16, vendor type as block
        unit.Header.Uleb(2)
            .U32(3).Uleb(0).Bytes(new byte[16]).Uleb(3).Bytes(new byte[] { 1, 2, 3 })
            .U32(7).Uleb(1).Bytes(new byte[16]).Uleb(0);
        unit.Program
            .SetAddress(0x0ff0).AdvanceLine(4).Op(1)                     // file register starts at 1: b.h:5
            .Op(2).Uleb(0x10).Op(4).Uleb(0).AdvanceLine(5).Op(1)         // 0x1000 file 0, line 10
            .Op(13).Uleb(0x81).Uleb(5)                                   // unknown standard opcode, 2 operands
            .Bytes(new byte[] { 0, 3, 0x80, 0xaa, 0xbb })                 // unknown extended opcode
            .Special(unit, address: 4, line: 1)                          // 0x1004 line 11
            .Op(4).Uleb(1).Op(2).Uleb(8).AdvanceLine(20).Op(1)           // b.h, 0x100c line 31
            .Op(2).Uleb(4).EndSequence();                                // ends at 0x1010

        var table = DwarfLineTable.Parse(unit.ToArray(), default, debugStr);

        Assert.That(Find(table, 0x0fef), Is.Null);
        Assert.That(Find(table, 0x0ff0), Is.EqualTo("/src/lib/b.h:5"), "DWARF 5 6.2.2: the file register starts at 1, not 0");
        Assert.That(Find(table, 0x0fff), Is.EqualTo("/src/lib/b.h:5"));
        Assert.That(Find(table, 0x1000), Is.EqualTo("/src/a.c:10"));
        Assert.That(Find(table, 0x1003), Is.EqualTo("/src/a.c:10"));
        Assert.That(Find(table, 0x1004), Is.EqualTo("/src/a.c:11"));
        Assert.That(Find(table, 0x100b), Is.EqualTo("/src/a.c:11"));
        Assert.That(Find(table, 0x100c), Is.EqualTo("/src/lib/b.h:31"), "relative directory goes under directory 0");
        Assert.That(Find(table, 0x100f), Is.EqualTo("/src/lib/b.h:31"));
        Assert.That(Find(table, 0x1010), Is.Null);
        Assert.That(table.Count, Is.EqualTo(5));
    }

    [Test]
    public void Dwarf2_64BitUnit_OldOpcodeBase_AndDefineFile()
    {
        // opcode_base 10 (DWARF 2's): 10..12 are special opcodes here, not prologue_end and friends.
        var unit = new LineUnit(version: 2, opcodeBase: 10, standardLengths: new byte[] { 0, 1, 1, 1, 1, 0, 0, 0, 1 }, dwarf64: true);
        unit.Header.CString("/inc").CString("rel").U8(0);
        unit.Header.CString("x.c").Uleb(0).Uleb(0).Uleb(0).CString("y.h").Uleb(2).Uleb(0).Uleb(0).U8(0);
        unit.Program
            .SetAddress(0x400000, size: 4).Op(1)                               // x.c:1
            .Op(12)                                                             // special: +0 address, line += -5 + 2
            .Op(3).Sleb(10).Op(8)                                               // line 8, const_add_pc: +(255-10)/14 = 17
            .Op(1)                                                              // 0x400011 x.c:8
            .Bytes(new byte[] { 0, 10, 3 }).CString("gen.c").Uleb(1).Uleb(0).Uleb(0) // define_file 3 in /inc
            .Op(4).Uleb(3).Op(9).U16(0x20).Op(1)                                // 0x400031 /inc/gen.c:8
            .Op(4).Uleb(2).Op(2).Uleb(0x10).Op(1)                               // 0x400041 rel/y.h:8
            .Op(2).Uleb(1).EndSequence();

        var table = DwarfLineTable.Parse(unit.ToArray(), default, default);

        Assert.That(Find(table, 0x400000), Is.EqualTo("x.c:0"), "opcode 12 was taken as a special opcode at the same address");
        Assert.That(Find(table, 0x400010), Is.EqualTo("x.c:0"));
        Assert.That(Find(table, 0x400011), Is.EqualTo("x.c:8"));
        Assert.That(Find(table, 0x400031), Is.EqualTo("/inc/gen.c:8"));
        Assert.That(Find(table, 0x400041), Is.EqualTo("rel/y.h:8"));
        Assert.That(Find(table, 0x400042), Is.Null);
    }

    [Test]
    public void DiscardedSequences_AtZeroOrAllOnes_AreDropped_AndBadUnitsSkipped()
    {
        var real = SimpleUnit(version: 3, (0x10, 1), (0x20, 2), (0x40, 0));
        var badVersion = SimpleUnit(version: 9, (0x100, 7), (0x110, 0));
        var zeroLineRange = SimpleUnit(version: 4, (0x100, 7), (0x110, 0));
        zeroLineRange[4 + 2 + 4 + 4] = 0; // v4: unit_length, version, header_length, min_inst, max_ops, is_stmt, line_base, then line_range
        var discarded = SimpleUnit(version: 4, (0, 30), (0x30, 0));
        // lld marks discarded code with an all-ones address; 4 bytes wide so the rows do not wrap.
        var tombstone = SimpleUnit(version: 5, addressSize: 4, (0xffffffff, 40), (0x1_0000_000f, 0));
        var after = SimpleUnit(version: 4, (0x100, 50), (0x120, 0));
        byte[] section = Concat(real, badVersion, zeroLineRange, discarded, tombstone, after);

        var table = DwarfLineTable.Parse(section, default, default);
        var alone = DwarfLineTable.Parse(discarded, default, default);

        Assert.That(Find(table, 0x08), Is.Null, "the linker's leftover at 0 is gone");
        Assert.That(Find(table, 0x20), Is.EqualTo("f.c:2"), "and does not shadow real code");
        Assert.That(Find(table, 0x105), Is.EqualTo("f.c:50"), "units after bad ones are still read");
        Assert.That(Find(table, 0x1_0000_0000), Is.Null, "tombstoned sequence is gone");
        Assert.That(table.Count, Is.EqualTo(3 + 2));
        Assert.That(Find(alone, 0x08), Is.EqualTo("f.c:30"), "at 0 and alone: an object file, kept");
    }

    [Test]
    public void UnitEndingInsideASequence_LeavesNoRowsForTheNextUnit()
    {
        byte[] open = SimpleUnit(version: 4, (0x500, 5), (0x580, 6), (0x700, 0));
        open = open[..^3]; // drop DW_LNE_end_sequence (00 01 01) ...
        BinaryPrimitives.WriteUInt32LittleEndian(open, BinaryPrimitives.ReadUInt32LittleEndian(open) - 3); // ... from unit_length
        byte[] section = Concat(open, SimpleUnit(version: 4, (0x600, 60), (0x620, 0)));

        var table = DwarfLineTable.Parse(section, default, default);

        Assert.That(Find(table, 0x500), Is.Null, "an unended sequence has no extent");
        Assert.That(Find(table, 0x5ff), Is.Null);
        Assert.That(Find(table, 0x600), Is.EqualTo("f.c:60"));
        Assert.That(table.Count, Is.EqualTo(2));
    }

    [Test]
    public void OverlappingSequences_AreTrimmedOrDroppedLikeAddr2line()
    {
        byte[] section = Concat(
            SimpleUnit(version: 4, (0x100, 1), (0x180, 2), (0x200, 0)),
            SimpleUnit(version: 4, (0x150, 10), (0x250, 11), (0x300, 0)),
            SimpleUnit(version: 4, (0x120, 20), (0x140, 0)));

        var table = DwarfLineTable.Parse(section, default, default);

        Assert.That(Find(table, 0x130), Is.EqualTo("f.c:1"), "nested sequence dropped");
        Assert.That(Find(table, 0x160), Is.EqualTo("f.c:1"));
        Assert.That(Find(table, 0x1ff), Is.EqualTo("f.c:2"));
        Assert.That(Find(table, 0x200), Is.EqualTo("f.c:10"), "overlapping sequence starts where the first ends");
        Assert.That(Find(table, 0x250), Is.EqualTo("f.c:11"));
        Assert.That(Find(table, 0x300), Is.Null);
    }

    [Test]
    public void SectionBytes_InflatesZlib_AndRefusesWhatItCannotTrust()
    {
        byte[] content = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("line table ", 500)));
        byte[] stream = ZlibOf(content);

        Assert.That(DwarfLineTable.SectionBytes(content, 0x0), Is.EqualTo(content), "not compressed: as is");
        Assert.That(DwarfLineTable.SectionBytes(Chdr(1, content.Length, stream), 0x800), Is.EqualTo(content));
        Assert.That(DwarfLineTable.SectionBytes(Chdr(2, content.Length, stream), 0x800), Is.Empty, "zstd is not supported");
        Assert.That(DwarfLineTable.SectionBytes(Chdr(1, long.MaxValue, stream), 0x800), Is.Empty, "ch_size beyond any array");
        Assert.That(DwarfLineTable.SectionBytes(Chdr(1, (stream.Length * 1032L) + 1, stream), 0x800), Is.Empty, "ch_size beyond deflate's ratio");
        Assert.That(DwarfLineTable.SectionBytes(Chdr(1, content.Length, new byte[] { 0x78, 0x9c, 0xff, 0xff, 0xff }), 0x800), Is.Empty);
        Assert.That(DwarfLineTable.SectionBytes(new byte[10], 0x800), Is.Empty, "shorter than Elf64_Chdr");
        byte[] cut = DwarfLineTable.SectionBytes(Chdr(1, content.Length, stream[..(stream.Length / 2)]), 0x800);
        Assert.That(cut, Has.Length.InRange(1, content.Length - 1), "a cut stream gives the prefix it held");
        Assert.That(cut, Is.EqualTo(content[..cut.Length]));
    }

    // ---- helpers ----

    // Compares TryFind with addr2line at each address; returns the disagreements, and the files named.
    //
    // One known addr2line bug is let through, and only with a second witness: binutils 2.40 starts
    // every DWARF 5 sequence with file 0 (the unit's primary file) where DWARF 5 6.2.2 says the file
    // register starts at 1, so rows before a sequence's first DW_LNS_set_file get the primary file's
    // name (libdwarf had the same bug, davea42/libdwarf-code#137; gdb, llvm-addr2line and readelf
    // follow the spec). Such a disagreement passes only when the lines are equal, addr2line named
    // the unit's primary file, and readelf's decoder names our file and line at that address.
    private static List<string> Compare(DwarfLineTable table, string binary, List<ulong> addresses, out HashSet<string> filesSeen)
    {
        var expected = LineTestWorkspace.Addr2line(binary, addresses);
        var mismatches = new List<string>();
        filesSeen = new HashSet<string>(StringComparer.Ordinal);
        ReadelfLines? readelf = null; // loaded on the first disagreement only
        int initialFileBug = 0;
        for (int i = 0; i < addresses.Count; i++)
        {
            bool found = table.TryFind(addresses[i], out string file, out int line);
            if (found)
                filesSeen.Add(file);
            var want = expected[i];
            bool agree = want.File is null
                ? !found
                : want.Line == 0
                    // "name:?": a row with line 0, or no row and a name from an STT_FILE symbol.
                    ? !found || (file == want.File && line == 0)
                    : found && file == want.File && line == want.Line;
            if (!agree && found && want.File is not null && want.Line == line)
            {
                readelf ??= ReadelfLines.Load(binary);
                agree = readelf.ShowsInitialFileBug(addresses[i], want.File, file, line);
                initialFileBug += agree ? 1 : 0;
            }
            if (!agree)
                mismatches.Add($"0x{addresses[i]:x}: ours {(found ? $"{file}:{line}" : "none")}, addr2line {want}");
        }
        TestContext.Out.WriteLine(
            $"{Path.GetFileName(binary)}: {addresses.Count} addresses, {mismatches.Count} disagreements, " +
            $"{initialFileBug} where addr2line 2.40 took file 0 for file 1 and readelf sides with us");
        return mismatches;
    }

    private static string?[] Answers(DwarfLineTable table, List<ulong> addresses)
    {
        var answers = new string?[addresses.Count];
        for (int i = 0; i < addresses.Count; i++)
            answers[i] = table.TryFind(addresses[i], out string file, out int line) ? $"{file}:{line}" : null;
        return answers;
    }

    private static void AssertPartOf(string?[] whole, string?[] part, string what)
    {
        for (int i = 0; i < whole.Length; i++)
        {
            if (part[i] is not null && part[i] != whole[i])
                Assert.Fail($"{what}: answer {i} is {part[i]}, the whole section says {whole[i] ?? "none"}");
        }
    }

    private static string? Find(DwarfLineTable table, ulong address) =>
        table.TryFind(address, out string file, out int line) ? $"{file}:{line}" : null;

    // One unit, one file "f.c", one sequence: rows (address, line); the last row is the end.
    private static byte[] SimpleUnit(int version, params (ulong Address, int Line)[] rows) => SimpleUnit(version, 8, rows);

    private static byte[] SimpleUnit(int version, int addressSize, params (ulong Address, int Line)[] rows)
    {
        var unit = new LineUnit(version, opcodeBase: 13, standardLengths: new byte[] { 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1 });
        if (version >= 5)
        {
            unit.Header.U8(1).Uleb(1).Uleb(0x08).Uleb(1).CString("/d");
            unit.Header.U8(1).Uleb(1).Uleb(0x08).Uleb(2).CString("f.c").CString("f.c");
        }
        else
        {
            unit.Header.U8(0).CString("f.c").Uleb(0).Uleb(0).Uleb(0).U8(0);
        }
        unit.Program.SetAddress(rows[0].Address, addressSize);
        long line = 1;
        for (int i = 0; i < rows.Length; i++)
        {
            if (i > 0)
                unit.Program.Op(2).Uleb(rows[i].Address - rows[i - 1].Address);
            if (i == rows.Length - 1)
                break;
            unit.Program.AdvanceLine(rows[i].Line - line).Op(1);
            line = rows[i].Line;
        }
        unit.Program.EndSequence();
        return unit.ToArray();
    }

    private static byte[] Concat(params byte[][] parts) => parts.SelectMany(static p => p).ToArray();

    private static byte[] ZlibOf(byte[] content)
    {
        using var buffer = new MemoryStream();
        using (var zlib = new ZLibStream(buffer, CompressionLevel.Optimal, leaveOpen: true))
            zlib.Write(content);
        return buffer.ToArray();
    }

    // Elf64_Chdr then the stream.
    private static byte[] Chdr(uint type, long size, byte[] stream)
    {
        byte[] section = new byte[24 + stream.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(section, type);
        BinaryPrimitives.WriteInt64LittleEndian(section.AsSpan(8), size);
        BinaryPrimitives.WriteUInt64LittleEndian(section.AsSpan(16), 1);
        stream.CopyTo(section, 24);
        return section;
    }

    private static string LibcDebugFile()
    {
        const string libc = "/lib/x86_64-linux-gnu/libc.so.6";
        string notes = LineTestWorkspace.Run("readelf", $"-n {libc}");
        string? id = notes.Split('\n').Select(static l => l.Trim())
            .Where(static l => l.StartsWith("Build ID:", StringComparison.Ordinal))
            .Select(static l => l["Build ID:".Length..].Trim()).FirstOrDefault();
        Assert.That(id, Is.Not.Null.And.Length.GreaterThan(2), $"readelf -n {libc}: no build id");
        string path = $"/usr/lib/debug/.build-id/{id![..2]}/{id[2..]}.debug";
        Assert.That(File.Exists(path), Is.True, $"{path} missing: this test needs the libc6-dbg package for the installed libc");
        return path;
    }

    // The allocation entry points, then every 60th function of the file, each at a few offsets.
    private static List<ulong> LibcSampleAddresses(string debugFile)
    {
        var functions = LineTestWorkspace.Functions(debugFile);
        var picked = functions.Where(static f => f.Name is "malloc" or "free" or "calloc" or "realloc" or "strdup" or "fopen64").ToList();
        Assert.That(picked.Select(static f => f.Name), Is.SupersetOf(new[] { "malloc", "free", "strdup" }));
        for (int i = 0; i < functions.Count; i += 60)
            picked.Add(functions[i]);
        var addresses = new SortedSet<ulong>();
        foreach (var f in picked)
        {
            foreach (ulong offset in new ulong[] { 0, 1, f.Size / 3, f.Size / 2, f.Size - 1 })
                addresses.Add(f.Address + Math.Min(offset, f.Size - 1));
        }
        return addresses.ToList();
    }

    // ---- test support: the oracle side ----

    /// <summary>readelf --debug-dump=decodedline: per unit its primary file (the "CU:" heading) and
    /// rows of (file name as in the table, line, address), a sequence ending at a "-" line.</summary>
    private sealed class ReadelfLines
    {
        private readonly record struct Row(string Name, int Line, ulong Address);

        private readonly record struct Sequence(string Unit, List<Row> Rows);

        // In output order (readelf dumps a debug file's line section twice; the first copy is found first).
        private readonly List<Sequence> _sequences = new();

        public static ReadelfLines Load(string binary)
        {
            var lines = new ReadelfLines();
            string unit = string.Empty;
            var rows = new List<Row>();
            foreach (string text in LineTestWorkspace.Run("readelf", $"-W --debug-dump=decodedline \"{binary}\"").Split('\n'))
            {
                if (text.StartsWith("CU: ", StringComparison.Ordinal))
                {
                    unit = text[4..].TrimEnd(':');
                    continue;
                }
                // "other.h   3   0x11b0   1   x", or "main.c   -   0x11cc" for the end of a sequence
                string[] f = text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length < 3 || !f[2].StartsWith("0x", StringComparison.Ordinal))
                    continue;
                ulong address = ulong.Parse(f[2].AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
                if (f[1] == "-")
                {
                    rows.Add(new Row(f[0], -1, address));
                    lines._sequences.Add(new Sequence(unit, rows));
                    rows = new List<Row>();
                }
                else if (int.TryParse(f[1], NumberStyles.None, CultureInfo.InvariantCulture, out int line))
                {
                    rows.Add(new Row(f[0], line, address));
                }
            }
            return lines;
        }

        /// <summary>True when addr2line's answer is the primary file of the unit covering address,
        /// and readelf has the row there in ourFile (by the name the table gives it) at ourLine.</summary>
        public bool ShowsInitialFileBug(ulong address, string addr2lineFile, string ourFile, int ourLine)
        {
            foreach (var sequence in _sequences)
            {
                var rows = sequence.Rows;
                if (address < rows[0].Address || address >= rows[^1].Address)
                    continue;
                var row = rows.Last(r => r.Address <= address && r.Line >= 0);
                return addr2lineFile.EndsWith(sequence.Unit, StringComparison.Ordinal)
                    && (ourFile == row.Name || ourFile.EndsWith("/" + row.Name, StringComparison.Ordinal))
                    && row.Line == ourLine;
            }
            return false;
        }
    }

    /// <summary>The three sections a line table needs, as stored in an ELF64 file, with sh_flags.</summary>
    private sealed record LineSections(byte[] Line, ulong LineFlags, byte[] LineStr, ulong LineStrFlags, byte[] Str, ulong StrFlags)
    {
        /// <summary>.debug_info and .debug_abbrev (inflated), for DWARF 2-4 compilation directories.</summary>
        public (byte[] Info, byte[] Abbrev) UnitSections { get; init; } = (Array.Empty<byte>(), Array.Empty<byte>());

        public static LineSections Read(string path)
        {
            byte[] elf = File.ReadAllBytes(path);
            Assert.That(elf.Length > 64 && elf[4] == 2 && elf[5] == 1, Is.True, $"{path}: not ELF64 little-endian");
            ulong shoff = BinaryPrimitives.ReadUInt64LittleEndian(elf.AsSpan(0x28));
            int entsize = BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(0x3a));
            int count = BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(0x3c));
            int names = BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(0x3e));

            Span<byte> Header(int i) => elf.AsSpan((int)shoff + (i * entsize), entsize);
            byte[] Contents(Span<byte> h) => BinaryPrimitives.ReadUInt32LittleEndian(h[4..]) == 8 // SHT_NOBITS
                ? Array.Empty<byte>()
                : elf.AsSpan((int)BinaryPrimitives.ReadUInt64LittleEndian(h[0x18..]), (int)BinaryPrimitives.ReadUInt64LittleEndian(h[0x20..])).ToArray();

            byte[] nameTable = Contents(Header(names));
            var found = new Dictionary<string, (byte[] Bytes, ulong Flags)>(StringComparer.Ordinal);
            for (int i = 0; i < count; i++)
            {
                var h = Header(i);
                int nameAt = (int)BinaryPrimitives.ReadUInt32LittleEndian(h);
                string name = Encoding.ASCII.GetString(nameTable, nameAt, Array.IndexOf(nameTable, (byte)0, nameAt) - nameAt);
                found[name] = (Contents(h), BinaryPrimitives.ReadUInt64LittleEndian(h[8..]));
            }
            Assert.That(found.ContainsKey(".debug_line"), Is.True, $"{path}: no .debug_line");
            (byte[] Bytes, ulong Flags) none = (Array.Empty<byte>(), 0UL);
            var line = found[".debug_line"];
            var lineStr = found.GetValueOrDefault(".debug_line_str", none);
            var str = found.GetValueOrDefault(".debug_str", none);
            var info = found.GetValueOrDefault(".debug_info", none);
            var abbrev = found.GetValueOrDefault(".debug_abbrev", none);
            return new LineSections(line.Bytes, line.Flags, lineStr.Bytes, lineStr.Flags, str.Bytes, str.Flags)
            {
                UnitSections = (DwarfLineTable.SectionBytes(info.Bytes, info.Flags), DwarfLineTable.SectionBytes(abbrev.Bytes, abbrev.Flags)),
            };
        }

        /// <summary>Parse with the compilation directories of DWARF 2-4 units, as ElfImage does.</summary>
        public DwarfLineTable ParseWithUnits()
        {
            var (line, lineStr, str) = Inflate();
            var compDirs = DwarfLineTable.ReadCompDirs(UnitSections.Info, UnitSections.Abbrev, str, lineStr);
            return DwarfLineTable.Parse(line, lineStr, str, compDirs);
        }

        public (byte[] Line, byte[] LineStr, byte[] Str) Inflate() => (
            DwarfLineTable.SectionBytes(Line, LineFlags),
            DwarfLineTable.SectionBytes(LineStr, LineStrFlags),
            DwarfLineTable.SectionBytes(Str, StrFlags));

        public DwarfLineTable Parse()
        {
            var (line, lineStr, str) = Inflate();
            return DwarfLineTable.Parse(line, lineStr, str);
        }
    }

    /// <summary>A private temp directory holding main.c, inc/other.h (a header with function bodies)
    /// and sub/second.c, built with gcc on demand, plus the binutils queries used as the oracle.</summary>
    private sealed class LineTestWorkspace : IDisposable
    {
        private const string MainSource = """
            #include <stdio.h>
            #include "inc/other.h"

            int second_entry(int i);

            int never_called(int x)
            {
                return other_mix(x) * 5;
            }

            int main(int argc, char **argv)
            {
                int total = other_scale(argc);
                for (int i = 0; i < argc; i++)
                    total += second_entry(i) + other_mix(i);
                printf("%d %s\n", total, argv[0]);
                return total == 42;
            }
            """;

        private const string HeaderSource = """
            __attribute__((noinline)) static int other_scale(int x)
            {
                int y = x * 3;
                if (y > 10)
                    y -= 4;
                return y + 1;
            }

            static inline int other_mix(int x)
            {
                int z = x ^ 0x5a;
                z += x << 2;
                return z;
            }
            """;

        private const string SecondSource = """
            #include "../inc/other.h"

            int second_entry(int i)
            {
                int acc = 0;
                for (int k = 0; k <= i; k++)
                    acc += other_mix(k);
                return acc + other_scale(i);
            }
            """;

        // Output name -> path, so tests sharing a build compile it once.
        private readonly Dictionary<string, string> _built = new(StringComparer.Ordinal);

        public LineTestWorkspace()
        {
            Directory = Path.Combine(Path.GetTempPath(), "interposer-lines-" + Guid.NewGuid().ToString("N"));
            System.IO.Directory.CreateDirectory(Path.Combine(Directory, "inc"));
            System.IO.Directory.CreateDirectory(Path.Combine(Directory, "sub"));
            File.WriteAllText(Path.Combine(Directory, "main.c"), MainSource + "\n");
            File.WriteAllText(Path.Combine(Directory, "inc", "other.h"), HeaderSource + "\n");
            File.WriteAllText(Path.Combine(Directory, "sub", "second.c"), SecondSource + "\n");
        }

        /// <summary>The compilation directory of every build.</summary>
        public string Directory { get; }

        public string PathOf(string name) => Path.Combine(Directory, name);

        public string Build(string output, string gccArguments, bool absolutePaths)
        {
            if (_built.TryGetValue(output, out string? done))
                return done;
            string prefix = absolutePaths ? Directory + "/" : string.Empty;
            Run("gcc", $"{gccArguments} -o \"{PathOf(output)}\" \"{prefix}main.c\" \"{prefix}sub/second.c\"", Directory);
            _built[output] = PathOf(output);
            return PathOf(output);
        }

        public readonly record struct Function(string Name, ulong Address, ulong Size);

        public readonly record struct Location(string? File, int Line)
        {
            public override string ToString() => $"{File ?? "??"}:{(Line == 0 ? "?" : Line.ToString(CultureInfo.InvariantCulture))}";
        }

        /// <summary>Defined, sized function symbols (nm -S), by address.</summary>
        public static List<Function> Functions(string binary)
        {
            var functions = new List<Function>();
            foreach (string line in Run("nm", $"-S --defined-only \"{binary}\"").Split('\n'))
            {
                // "0000000000001139 0000000000000019 t other_scale"
                string[] f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length == 4 && f[2] is "t" or "T" or "w" or "W" or "i")
                    functions.Add(new Function(f[3], Hex(f[0]), Hex(f[1])));
            }
            functions.RemoveAll(static f => f.Size == 0);
            functions.Sort(static (a, b) => a.Address.CompareTo(b.Address));
            return functions;
        }

        /// <summary>Every byte of every function, and the byte after each (padding or the next one).</summary>
        public static List<ulong> FunctionBytes(string binary)
        {
            var addresses = new SortedSet<ulong>();
            foreach (var f in Functions(binary))
            {
                for (ulong a = f.Address; a <= f.Address + f.Size; a++)
                    addresses.Add(a);
            }
            Assert.That(addresses, Is.Not.Empty, $"nm found no functions in {binary}");
            return addresses.ToList();
        }

        /// <summary>addr2line's answer per address: File null for "??", Line 0 for "?".</summary>
        public static List<Location> Addr2line(string binary, List<ulong> addresses)
        {
            var input = new StringBuilder();
            foreach (ulong a in addresses)
                input.Append(CultureInfo.InvariantCulture, $"{a:x}\n");
            string output = Run("addr2line", $"-e \"{binary}\"", stdin: input.ToString());
            var locations = new List<Location>();
            foreach (string raw in output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                // "file:line", "file:line (discriminator 3)", "file:?", "??:0", "??:?"
                int discriminator = raw.IndexOf(" (discriminator ", StringComparison.Ordinal);
                string text = discriminator >= 0 ? raw[..discriminator] : raw;
                int colon = text.LastIndexOf(':');
                string file = text[..colon], line = text[(colon + 1)..];
                locations.Add(new Location(file == "??" ? null : file, line == "?" ? 0 : int.Parse(line, CultureInfo.InvariantCulture)));
            }
            Assert.That(locations, Has.Count.EqualTo(addresses.Count), "addr2line gave one line per address");
            return locations;
        }

        /// <summary>Runs a tool and returns its stdout; fails the test on a non-zero exit.</summary>
        public static string Run(string program, string arguments, string? workingDirectory = null, string? stdin = null)
        {
            var start = new ProcessStartInfo(program, arguments)
            {
                RedirectStandardInput = stdin is not null,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
                WorkingDirectory = workingDirectory ?? string.Empty,
            };
            using var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {program}");
            var stderr = process.StandardError.ReadToEndAsync();
            var stdout = process.StandardOutput.ReadToEndAsync();
            if (stdin is not null)
            {
                process.StandardInput.Write(stdin);
                process.StandardInput.Close();
            }
            process.WaitForExit();
            Assert.That(process.ExitCode, Is.EqualTo(0), $"{program} {arguments} failed: {stderr.Result}");
            return stdout.Result;
        }

        private static ulong Hex(string s) => ulong.Parse(s, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);

        public void Dispose()
        {
            try
            {
                System.IO.Directory.Delete(Directory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>Writes one .debug_line unit by hand: Header holds what follows standard_opcode_lengths
    /// (the directory and file tables), Program the opcodes; ToArray fills in both lengths.</summary>
    private sealed class LineUnit
    {
        public const sbyte LineBase = -5;
        public const byte LineRange = 14;

        private readonly int _version;
        private readonly bool _dwarf64;
        private readonly byte _opcodeBase;
        private readonly byte[] _standardLengths;

        public LineUnit(int version, byte opcodeBase, byte[] standardLengths, bool dwarf64 = false)
        {
            _version = version;
            _opcodeBase = opcodeBase;
            _standardLengths = standardLengths;
            _dwarf64 = dwarf64;
        }

        public ByteWriter Header { get; } = new();

        public ByteWriter Program { get; } = new();

        public byte OpcodeBase => _opcodeBase;

        public byte[] ToArray()
        {
            var afterHeaderLength = new ByteWriter().U8(1); // minimum_instruction_length
            if (_version >= 4)
                afterHeaderLength.U8(1); // maximum_operations_per_instruction
            afterHeaderLength.U8(1).U8(unchecked((byte)LineBase)).U8(LineRange).U8(_opcodeBase).Bytes(_standardLengths).Bytes(Header.ToArray());
            byte[] tables = afterHeaderLength.ToArray();

            var body = new ByteWriter().U16((ushort)_version);
            if (_version >= 5)
                body.U8(8).U8(0);
            Offset(body, (ulong)tables.Length).Bytes(tables).Bytes(Program.ToArray());
            byte[] rest = body.ToArray();

            var unit = new ByteWriter();
            if (_dwarf64)
                unit.U32(0xffffffff);
            return Offset(unit, (ulong)rest.Length).Bytes(rest).ToArray();
        }

        private ByteWriter Offset(ByteWriter w, ulong value) => _dwarf64 ? w.U64(value) : w.U32((uint)value);
    }

    private sealed class ByteWriter
    {
        private readonly List<byte> _bytes = new();

        public ByteWriter U8(byte value)
        {
            _bytes.Add(value);
            return this;
        }

        public ByteWriter U16(ushort value) => Bytes(BitConverter.GetBytes(value));

        public ByteWriter U32(uint value) => Bytes(BitConverter.GetBytes(value));

        public ByteWriter U64(ulong value) => Bytes(BitConverter.GetBytes(value));

        public ByteWriter Bytes(byte[] bytes)
        {
            _bytes.AddRange(bytes);
            return this;
        }

        public ByteWriter CString(string text) => Bytes(Encoding.UTF8.GetBytes(text)).U8(0);

        public ByteWriter Uleb(ulong value)
        {
            do
            {
                byte b = (byte)(value & 0x7f);
                value >>= 7;
                U8(value != 0 ? (byte)(b | 0x80) : b);
            }
            while (value != 0);
            return this;
        }

        public ByteWriter Sleb(long value)
        {
            while (true)
            {
                byte b = (byte)(value & 0x7f);
                value >>= 7;
                bool done = (value == 0 && (b & 0x40) == 0) || (value == -1 && (b & 0x40) != 0);
                U8(done ? b : (byte)(b | 0x80));
                if (done)
                    return this;
            }
        }

        public ByteWriter Op(byte opcode) => U8(opcode);

        public ByteWriter AdvanceLine(long delta) => U8(3).Sleb(delta);

        public ByteWriter SetAddress(ulong address, int size = 8)
        {
            U8(0).Uleb((ulong)size + 1).U8(2);
            for (int i = 0; i < size; i++)
                U8((byte)(address >> (8 * i)));
            return this;
        }

        public ByteWriter EndSequence() => U8(0).Uleb(1).U8(1);

        public ByteWriter Special(LineUnit unit, int address, int line) =>
            U8((byte)(line - LineUnit.LineBase + (LineUnit.LineRange * address) + unit.OpcodeBase));

        public byte[] ToArray() => _bytes.ToArray();
    }
}
