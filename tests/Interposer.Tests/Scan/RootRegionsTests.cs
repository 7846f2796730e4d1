// RootRegions: which /proc/self/maps rows become data/bss roots or anonymous roots, junk rows,
// module exclusion, range subtraction, and the real maps of this test process.

using System;
using System.Linq;
using Interposer.Scanner.Scan;
using NUnit.Framework;

namespace Interposer.Tests.Scan;

[TestFixture]
public class RootRegionsTests
{
    // A PIE program whose .bss fits in its file pages, glibc with a bss tail, the Interposer's two
    // objects (data + bss tail, both excluded), a data file mapped rw, pseudo mappings, a named
    // anonymous mapping, a shared mapping, a guard page and a plain anonymous mmap.
    private const string Maps =
        "55d1c0a00000-55d1c0a01000 r--p 00000000 08:01 1311  /usr/bin/prog\n" +
        "55d1c0a01000-55d1c0a02000 r-xp 00001000 08:01 1311  /usr/bin/prog\n" +
        "55d1c0a02000-55d1c0a03000 r--p 00002000 08:01 1311  /usr/bin/prog\n" +
        "55d1c0a03000-55d1c0a04000 rw-p 00002000 08:01 1311  /usr/bin/prog\n" +
        "55d1c1b5e000-55d1c1b7f000 rw-p 00000000 00:00 0     [heap]\n" +
        "7f2c10000000-7f2c10021000 rw-p 00000000 00:00 0 \n" +
        "7f2c10021000-7f2c14000000 ---p 00000000 00:00 0 \n" +
        "7f2c1a200000-7f2c1a226000 r--p 00000000 08:01 2222  /usr/lib/x86_64-linux-gnu/libc.so.6\n" +
        "7f2c1a226000-7f2c1a37c000 r-xp 00026000 08:01 2222  /usr/lib/x86_64-linux-gnu/libc.so.6\n" +
        "7f2c1a37c000-7f2c1a3cf000 r--p 0017c000 08:01 2222  /usr/lib/x86_64-linux-gnu/libc.so.6\n" +
        "7f2c1a3cf000-7f2c1a3d1000 r--p 001cf000 08:01 2222  /usr/lib/x86_64-linux-gnu/libc.so.6\n" +
        "7f2c1a3d1000-7f2c1a3d3000 rw-p 001d1000 08:01 2222  /usr/lib/x86_64-linux-gnu/libc.so.6\n" +
        "7f2c1a3d3000-7f2c1a3e0000 rw-p 00000000 00:00 0 \n" +
        "7f2c1a400000-7f2c1a401000 r--p 00000000 08:01 3333  /opt/ip/libinterposer.so\n" +
        "7f2c1a401000-7f2c1a402000 r-xp 00001000 08:01 3333  /opt/ip/libinterposer.so\n" +
        "7f2c1a402000-7f2c1a403000 rw-p 00002000 08:01 3333  /opt/ip/libinterposer.so\n" +
        "7f2c1a403000-7f2c1a404000 rw-p 00000000 00:00 0 \n" +
        "7f2c1a500000-7f2c1a600000 r-xp 00000000 08:01 4444  /opt/ip/libinterposer_core.so\n" +
        "7f2c1a600000-7f2c1a610000 rw-p 00100000 08:01 4444  /opt/ip/libinterposer_core.so\n" +
        "7f2c1a610000-7f2c1a700000 rw-p 00000000 00:00 0 \n" +
        "7f2c1a800000-7f2c1a900000 rw-p 00000000 08:01 5555  /var/db/cache.bin\n" +
        "7f2c1a900000-7f2c1a901000 rw-s 00000000 00:01 6666  /dev/zero (deleted)\n" +
        "7f2c1aa00000-7f2c1aa10000 rw-p 00000000 00:00 0     [anon:python arena]\n" +
        "7f2c1ab00000-7f2c1ab01000 r-xp 00000000 08:01 7777  /tmp/libgone.so (deleted)\n" +
        "7f2c1ab01000-7f2c1ab02000 rw-p 00001000 08:01 7777  /tmp/libgone.so (deleted)\n" +
        "7f2c1ab02000-7f2c1ab03000 rw-p 00000000 00:00 0 \n" +
        "7f2c1ab04000-7f2c1ab05000 rw-p 00000000 00:00 0 \n" +
        "7ffd5e0c1000-7ffd5e0e2000 rw-p 00000000 00:00 0     [stack]\n" +
        "7ffd5e1f3000-7ffd5e1f7000 r--p 00000000 00:00 0     [vvar]\n" +
        "7ffd5e1f7000-7ffd5e1f9000 r-xp 00000000 00:00 0     [vdso]\n" +
        "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0     [vsyscall]\n";

    private static readonly string[] Excluded = RootRegions.InterposerModules;

    private static string Describe(RootRegion r) => $"{r.Start:x}-{r.End:x} {r.Kind} {r.Path}";

    [Test]
    public void Data_IsObjectsWritableSegmentsAndBssTails_ExceptExcludedModules()
    {
        var roots = RootRegions.Parse(Maps, Excluded);

        Assert.That(roots.Data.Select(Describe), Is.EqualTo(new[]
        {
            "55d1c0a03000-55d1c0a04000 Data /usr/bin/prog",
            "7f2c1a3d1000-7f2c1a3d3000 Data /usr/lib/x86_64-linux-gnu/libc.so.6",
            "7f2c1a3d3000-7f2c1a3e0000 BssTail /usr/lib/x86_64-linux-gnu/libc.so.6",
            "7f2c1ab01000-7f2c1ab02000 Data /tmp/libgone.so (deleted)",
            "7f2c1ab02000-7f2c1ab03000 BssTail /tmp/libgone.so (deleted)",
        }));
        Assert.That(roots.SkippedLines, Is.Zero);
    }

    [Test]
    public void Anonymous_IsOtherReadableWritablePrivateAnonymousMappings()
    {
        var roots = RootRegions.Parse(Maps, Excluded);

        Assert.That(roots.Anonymous.Select(Describe), Is.EqualTo(new[]
        {
            "7f2c10000000-7f2c10021000 Anonymous ",
            "7f2c1aa00000-7f2c1aa10000 Anonymous [anon:python arena]",
            "7f2c1ab04000-7f2c1ab05000 Anonymous ",
        }));
    }

    [TestCase("libinterposer.so", "7f2c1a402000", false)]
    [TestCase("/opt/ip/libinterposer.so", "7f2c1a402000", false)]
    [TestCase("/other/libinterposer.so", "7f2c1a402000", true)]
    [TestCase("interposer.so", "7f2c1a402000", true)]
    [TestCase("libgone.so", "7f2c1ab01000", false)]
    [TestCase("libgone.so", "7f2c1ab02000", false)]
    [TestCase("libc.so.6", "7f2c1a3d3000", false)]
    public void ExcludedModules_MatchBaseNameOrFullPath(string excluded, string start, bool isRoot)
    {
        var roots = RootRegions.Parse(Maps, new[] { excluded });

        Assert.That(roots.Data.Any(r => r.Start == Convert.ToUInt64(start, 16)), Is.EqualTo(isRoot));
    }

    [TestCase("")]
    [TestCase("garbage")]
    [TestCase("zzzz-1000 rw-p 00000000 08:01 1 /lib/x.so")]
    [TestCase("2000-1000 rw-p 00000000 08:01 1 /lib/x.so")]
    [TestCase("1000-2000 rw 00000000 08:01 1 /lib/x.so")]
    [TestCase("1000-2000 rwzp 00000000 08:01 1 /lib/x.so")]
    [TestCase("1000-2000 rw-p 00000000 08:01")]
    [TestCase("1000-2000 rw-p xyz 08:01 1 /lib/x.so")]
    [TestCase("1000-2000 rw-p 00000000 0801 1 /lib/x.so")]
    [TestCase("1000-2000 rw-p 00000000 08:01 -1 /lib/x.so")]
    [TestCase("10000000000000000-10000000000000001 rw-p 0 08:01 1 /lib/x.so")]
    [TestCase("1000-2000")]
    [TestCase("\0\0\0")]
    public void JunkRows_AreSkipped_RestStillParsed(string junk)
    {
        string text = "1000-2000 r-xp 00000000 08:01 1 /lib/x.so\n" + junk + "\n" +
                      "2000-3000 rw-p 00001000 08:01 1 /lib/x.so\n";

        var roots = RootRegions.Parse(text, Excluded);

        Assert.That(roots.Data.Select(Describe), Is.EqualTo(new[] { "2000-3000 Data /lib/x.so" }));
        Assert.That(roots.SkippedLines, Is.EqualTo(junk.Trim().Length == 0 ? 0 : 1));
    }

    [Test]
    public void TruncatedFile_CostsOnlyTheCutLine()
    {
        string cut = Maps[..Maps.IndexOf("7f2c1a3d3000-7f2c1a3e0000", StringComparison.Ordinal)] + "7f2c1a3d3000-7f2c1a3";

        var roots = RootRegions.Parse(cut, Excluded);

        Assert.That(roots.SkippedLines, Is.EqualTo(1));
        Assert.That(roots.Data.Select(r => r.Kind), Is.EqualTo(new[] { RootKind.Data, RootKind.Data }));
    }

    [Test]
    public void RowsOutOfOrder_AreSortedBeforeBssTailsAreMatched()
    {
        string text = "3000-4000 rw-p 00000000 00:00 0\n" +
                      "2000-3000 rw-p 00001000 08:01 1 /lib/x.so\n" +
                      "1000-2000 r-xp 00000000 08:01 1 /lib/x.so\r\n";

        var roots = RootRegions.Parse(text, Excluded);

        Assert.That(roots.Data.Select(Describe), Is.EqualTo(new[] { "2000-3000 Data /lib/x.so", "3000-4000 BssTail /lib/x.so" }));
        Assert.That(roots.Anonymous, Is.Empty);
    }

    [TestCase("0x1000+0x1000", "", "0x1000+0x1000")]
    [TestCase("0x1000+0x1000", "0x1000+0x1000", "")]
    [TestCase("0x1000+0x1000", "0x1400+0x100", "0x1000+0x400 0x1500+0xb00")]
    [TestCase("0x1000+0x1000", "0x800+0x900", "0x1100+0xf00")]
    [TestCase("0x1000+0x1000", "0x1f00+0x900", "0x1000+0xf00")]
    [TestCase("0x1000+0x1000", "0x1100+0x100 0x1180+0x100 0x1800+0x10", "0x1000+0x100 0x1280+0x580 0x1810+0x7f0")]
    [TestCase("0x1000+0x100 0x5000+0x100", "0x1080+0x4000", "0x1000+0x80 0x5080+0x80")]
    [TestCase("0x1000+0x100", "0x9000+0x100 0x100+0x10", "0x1000+0x100")]
    public void Subtract(string ranges, string exclude, string expected)
    {
        var result = RootRegions.Subtract(ParseRanges(ranges), ParseRanges(exclude));

        Assert.That(string.Join(" ", result.Select(r => $"0x{r.Start:x}+0x{r.Length:x}")), Is.EqualTo(expected));
    }

    private static MemoryRange[] ParseRanges(string text) =>
        text.Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(t => t.Split('+'))
            .Select(p => new MemoryRange(Convert.ToUInt64(p[0], 16), Convert.ToUInt64(p[1], 16)))
            .ToArray();

    [Test]
    public void ThisProcess_DataRootsIncludeLibc_AndAreReadable()
    {
        var roots = RootRegions.FromProcSelfMaps(Excluded);

        Assert.That(roots.Data, Is.Not.Empty);
        Assert.That(roots.Data.Concat(roots.Anonymous).Any(r => r.Path is "[heap]" or "[stack]" or "[vvar]" or "[vdso]"), Is.False);
        Assert.That(roots.Data.Any(r => r.Path.EndsWith("libc.so.6", StringComparison.Ordinal)), Is.True);

        // Every data root is readable: scanning them in-process with the direct reader must not fault.
        var index = BlockIndex.Build(new[] { new HeapBlock(0x1000, 16) });
        var marker = new Marker(index);
        var reader = new DirectMemoryReader();
        var ranges = RootRegions.ToRanges(roots.Data, default);
        marker.ScanRoots(ref reader, ranges);
        Assert.That(marker.Stats.RootBytes, Is.GreaterThan(0));
    }
}
