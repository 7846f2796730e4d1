// ModuleMap: parsing of /proc/self/maps text, module bases, lookup, and survival of junk lines.

using System.Linq;
using Interposer.Scanner.Symbols;
using NUnit.Framework;

namespace Interposer.Tests.Symbols;

public class ModuleMapTests
{
    // A PIE program, glibc, ld.so, a deleted library, a path with spaces, and the pseudo mappings,
    // as printed by Linux 6.x (columns padded with spaces, anonymous lines without a path).
    private const string RealisticMaps =
        "55d1c0a00000-55d1c0a01000 r--p 00000000 08:01 1311  /usr/bin/prog\n" +
        "55d1c0a01000-55d1c0a02000 r-xp 00001000 08:01 1311  /usr/bin/prog\n" +
        "55d1c0a02000-55d1c0a03000 r--p 00002000 08:01 1311  /usr/bin/prog\n" +
        "55d1c0a03000-55d1c0a04000 rw-p 00002000 08:01 1311  /usr/bin/prog\n" +
        "55d1c1b5e000-55d1c1b7f000 rw-p 00000000 00:00 0     [heap]\n" +
        "7f2c1a200000-7f2c1a226000 r--p 00000000 08:01 2222  /usr/lib/x86_64-linux-gnu/libc.so.6\n" +
        "7f2c1a226000-7f2c1a37c000 r-xp 00026000 08:01 2222  /usr/lib/x86_64-linux-gnu/libc.so.6\n" +
        "7f2c1a37c000-7f2c1a3cf000 r--p 0017c000 08:01 2222  /usr/lib/x86_64-linux-gnu/libc.so.6\n" +
        "7f2c1a3cf000-7f2c1a3d3000 rw-p 001cf000 08:01 2222  /usr/lib/x86_64-linux-gnu/libc.so.6\n" +
        "7f2c1a3d3000-7f2c1a3e0000 rw-p 00000000 00:00 0 \n" +
        "7f2c1a400000-7f2c1a401000 r--p 00000000 08:01 3333  /opt/my app/libspace.so\n" +
        "7f2c1a401000-7f2c1a402000 r-xp 00001000 08:01 3333  /opt/my app/libspace.so\n" +
        "7f2c1a500000-7f2c1a501000 r-xp 00000000 08:01 4444  /tmp/libgone.so (deleted)\n" +
        "7f2c1a600000-7f2c1a610000 rwxp 00000000 00:00 0 \n" +
        "7f2c1a7f0000-7f2c1a7f1000 r--p 00000000 08:01 5555  /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\n" +
        "7f2c1a7f1000-7f2c1a816000 r-xp 00001000 08:01 5555  /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\n" +
        "7ffd5e0c1000-7ffd5e0e2000 rw-p 00000000 00:00 0     [stack]\n" +
        "7ffd5e1f3000-7ffd5e1f7000 r--p 00000000 00:00 0     [vvar]\n" +
        "7ffd5e1f7000-7ffd5e1f9000 r-xp 00000000 00:00 0     [vdso]\n" +
        "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0     [vsyscall]\n";

    [Test]
    public void Parse_KeepsOnlyExecutableMappingsWithAPath()
    {
        var map = ModuleMap.Parse(RealisticMaps);

        Assert.That(map.Modules.Select(m => m.Path), Is.EqualTo(new[]
        {
            "/usr/bin/prog",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/opt/my app/libspace.so",
            "/tmp/libgone.so (deleted)",
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "[vdso]",
            "[vsyscall]",
        }));
    }

    [TestCase(0x55d1c0a01234UL, "/usr/bin/prog", 0x55d1c0a00000UL)]
    [TestCase(0x7f2c1a226000UL, "/usr/lib/x86_64-linux-gnu/libc.so.6", 0x7f2c1a200000UL)]
    [TestCase(0x7f2c1a37bfffUL, "/usr/lib/x86_64-linux-gnu/libc.so.6", 0x7f2c1a200000UL)]
    [TestCase(0x7f2c1a401010UL, "/opt/my app/libspace.so", 0x7f2c1a400000UL)]
    [TestCase(0x7f2c1a500010UL, "/tmp/libgone.so (deleted)", 0x7f2c1a500000UL)]
    [TestCase(0x7ffd5e1f7100UL, "[vdso]", 0x7ffd5e1f7000UL)]
    public void Find_ReturnsTheModuleAndTheStartOfItsImage(ulong address, string path, ulong expectedBase)
    {
        var module = ModuleMap.Parse(RealisticMaps).Find(address);

        Assert.That(module, Is.Not.Null);
        Assert.That(module!.Path, Is.EqualTo(path));
        Assert.That(module.Base, Is.EqualTo(expectedBase));
    }

    [TestCase(0x10UL, Description = "below every mapping")]
    [TestCase(0x55d1c0a00010UL, Description = "read-only part of the program, not code")]
    [TestCase(0x7f2c1a37c000UL, Description = "End is exclusive")]
    [TestCase(0x7f2c1a600010UL, Description = "anonymous executable memory (JIT)")]
    [TestCase(0x55d1c1b5e010UL, Description = "heap")]
    [TestCase(0xffffffffffffffffUL, Description = "top of the address space")]
    public void Find_ReturnsNullOutsideExecutableFileMappings(ulong address)
    {
        Assert.That(ModuleMap.Parse(RealisticMaps).Find(address), Is.Null);
    }

    [Test]
    public void Parse_RecordsFileOffsetAndDeletion()
    {
        var map = ModuleMap.Parse(RealisticMaps);
        var libc = map.Find(0x7f2c1a300000UL)!;
        var gone = map.Find(0x7f2c1a500000UL)!;

        Assert.That(libc.FileOffset, Is.EqualTo(0x26000UL));
        Assert.That(libc.IsReadableFile, Is.True);
        Assert.That(gone.IsReadableFile, Is.False);
        Assert.That(map.Find(0x7ffd5e1f7000UL)!.IsReadableFile, Is.False);
    }

    [Test]
    public void Parse_SortsLinesThatAreOutOfOrder()
    {
        var lines = RealisticMaps.TrimEnd('\n').Split('\n').Reverse();
        var map = ModuleMap.Parse(string.Join("\n", lines));

        Assert.That(map.Find(0x7f2c1a300000UL)?.Base, Is.EqualTo(0x7f2c1a200000UL));
        Assert.That(map.Modules.Select(m => m.Start), Is.Ordered);
    }

    [TestCase("")]
    [TestCase("garbage")]
    [TestCase("   ")]
    [TestCase("7f00-7f10")]
    [TestCase("7f0000001000-7f0000002000 r-xp")]
    [TestCase("7f0000001000-7f0000002000 r-xp 00000000")]
    [TestCase("7f0000001000-7f0000002000 r-xp 00000000 08:01")]
    [TestCase("zzzz-7f0000002000 r-xp 00000000 08:01 1 /junk/a.so")]
    [TestCase("7f0000001000-zzzz r-xp 00000000 08:01 1 /junk/a.so")]
    [TestCase("7f0000001000 7f0000002000 r-xp 00000000 08:01 1 /junk/a.so")]
    [TestCase("-7f0000002000 r-xp 00000000 08:01 1 /junk/a.so")]
    [TestCase("7f0000002000-7f0000001000 r-xp 00000000 08:01 1 /junk/a.so")]
    [TestCase("7f0000001000-7f0000001000 r-xp 00000000 08:01 1 /junk/a.so")]
    [TestCase("7f0000001000-7f0000002000 r-x 00000000 08:01 1 /junk/a.so")]
    [TestCase("7f0000001000-7f0000002000 r-xpp 00000000 08:01 1 /junk/a.so")]
    [TestCase("7f0000001000-7f0000002000 r-xp 0000000g 08:01 1 /junk/a.so")]
    [TestCase("7f0000001000-7f0000002000 r-xp 00000000 0801 1 /junk/a.so")]
    [TestCase("7f0000001000-7f0000002000 r-xp 00000000 08:01 -1 /junk/a.so")]
    [TestCase("7f0000001000-7f0000002000 r-xp 00000000 08:01 x1 /junk/a.so")]
    [TestCase("10000000000000000-10000000000001000 r-xp 00000000 08:01 1 /junk/overflow.so")]
    [TestCase("7f0000001000-7f0000002000 r-xp 100000000000000000 08:01 1 /junk/a.so")]
    [TestCase("0x7f0000001000-0x7f0000002000 r-xp 00000000 08:01 1 /junk/a.so")]
    [TestCase("\0\0\0\0\0")]
    [TestCase("7f0000001000-7f0000002000 r-xp 00000000 08:01 1 /junk/a.so\0garbage")]
    public void Parse_SkipsAMalformedLineAndKeepsTheRest(string junk)
    {
        const string good = "7f2c1a226000-7f2c1a37c000 r-xp 00026000 08:01 2222  /usr/lib/libgood.so";

        var map = ModuleMap.Parse(junk + "\n" + good + "\n" + junk);

        // A junk line either vanishes or, if the kernel could print it, parses into a module that
        // does not disturb the good one.
        Assert.That(map.Find(0x7f2c1a300000UL)?.Path, Is.EqualTo("/usr/lib/libgood.so"));
        Assert.That(map.Modules.Count(m => m.Path.StartsWith("/junk/overflow")), Is.Zero);
    }

    [TestCase("7f0000001000-7f0000002000 r-xp 00000000 08:01 1")]
    [TestCase("7f0000001000-7f0000002000 r-xp 00000000 08:01 1 ")]
    public void Parse_SkipsExecutableMappingsWithoutAPath(string line)
    {
        Assert.That(ModuleMap.Parse(line).Modules, Is.Empty);
    }

    [Test]
    public void Parse_AcceptsCrLfLineEndings()
    {
        var map = ModuleMap.Parse(RealisticMaps.Replace("\n", "\r\n"));

        Assert.That(map.Find(0x55d1c0a01234UL)?.Path, Is.EqualTo("/usr/bin/prog"));
    }

    [Test]
    public void FromProcSelfMaps_FindsTheCodeOfThisProcess()
    {
        var map = ModuleMap.FromProcSelfMaps();

        Assert.That(map.Modules, Is.Not.Empty);
        Assert.That(map.Modules.Any(m => m.Path.Contains("libc.so")), Is.True);
        Assert.That(map.Modules.Any(m => m.Path == "[vdso]"), Is.True);
    }
}
