// MapsSnapshot (the allocation-free maps reader used while the world is stopped), LoadedSegments
// (exact writable segments, glibc's main_arena by shape) and the kmemleak hex dump.
using System;
using System.Linq;
using System.Runtime.InteropServices;
using System.Text;
using Interposer.Scanner.Reports;
using Interposer.Scanner.Scan;
using NUnit.Framework;

namespace Interposer.Tests.Scan;

[TestFixture]
public unsafe class MapsSnapshotTests
{
    private const string Maps =
        "55d000000000-55d000001000 r--p 00000000 08:01 100 /usr/bin/prog\n" +
        "55d000001000-55d000002000 r-xp 00001000 08:01 100 /usr/bin/prog\n" +
        "55d000003000-55d000004000 rw-p 00003000 08:01 100 /usr/bin/prog\n" +
        "55d000004000-55d000006000 rw-p 00000000 00:00 0 \n" +
        "55d001000000-55d001100000 rw-p 00000000 00:00 0                          [heap]\n" +
        "7f0000000000-7f0000001000 rw-p 00000000 08:01 200 /tmp/data.bin\n" +
        "7f0000100000-7f0000101000 r-xp 00000000 08:01 300 /work/artifacts/lib/libinterposer.so\n" +
        "7f0000101000-7f0000102000 rw-p 00001000 08:01 300 /work/artifacts/lib/libinterposer.so\n" +
        "7f0000102000-7f0000103000 rw-p 00000000 00:00 0 \n" +
        "7f0000200000-7f0000201000 r-xp 00000000 08:01 400 /usr/lib/libc.so.6 (deleted)\n" +
        "7f0000201000-7f0000202000 rw-p 00001000 08:01 400 /usr/lib/libc.so.6 (deleted)\n" +
        "7f0000202000-7f0000203000 rw-s 00000000 00:01 9 /dev/zero (deleted)\n" +
        "7f0000203000-7f0000204000 ---p 00000000 00:00 0 \n" +
        "7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]\n";

    private static MapsSnapshot Parse(string text)
    {
        var m = new MapsSnapshot();
        m.Prepare();
        m.Parse(Encoding.ASCII.GetBytes(text));
        return m;
    }

    private static string[] DataRows(MapsSnapshot m) =>
        m.Rows.ToArray().Where(r => r.Has(MapFlags.Data)).Select(r => $"{r.Start:x}-{r.End:x}").ToArray();

    [Test]
    public void Classify_ObjectsDataAndBssTail_NotDataFilesHeapStackOrOurs()
    {
        MapsSnapshot m = Parse(Maps);
        Assert.That(m.Count, Is.EqualTo(14));
        Assert.That(m.SkippedRows, Is.Zero);
        Assert.That(DataRows(m), Is.EqualTo(new[]
        {
            "55d000003000-55d000004000", "55d000004000-55d000006000", // prog's .data and its bss tail
            "7f0000201000-7f0000202000",                              // a deleted (upgraded) libc is still an object
        }));
        Assert.That(m.Rows[m.Find(0x7ffc00000100)].Has(MapFlags.MainStack), Is.True);
        Assert.That(m.Rows[m.Find(0x7f0000101800)].Has(MapFlags.Interposer), Is.True);
    }

    [TestCase(0x55d000003000UL, 0x55d000006000UL, true)]   // two adjacent readable rows
    [TestCase(0x55d000003000UL, 0x55d000006001UL, false)]  // runs past the end
    [TestCase(0x55d000002000UL, 0x55d000002008UL, false)]  // a gap
    [TestCase(0x7f0000203000UL, 0x7f0000203008UL, false)]  // ---p
    [TestCase(0x7ffc00020ff8UL, 0x7ffc00021000UL, true)]
    public void IsReadable(ulong start, ulong end, bool expected) =>
        Assert.That(Parse(Maps).IsReadable(start, end), Is.EqualTo(expected));

    [Test]
    public void ClipReadable_StopsAtAGapOrAnUnreadableRow()
    {
        MapsSnapshot m = Parse(Maps);
        Assert.That(m.ClipReadable(0x55d000003800, 0x55d000009000), Is.EqualTo(MemoryRange.FromBounds(0x55d000003800, 0x55d000006000)));
        Assert.That(m.ClipReadable(0x7f0000203000, 0x7f0000204000).Length, Is.Zero);
        Assert.That(m.ClipReadable(0x1000, 0x2000).Length, Is.Zero);
    }

    [TestCase("")]
    [TestCase("garbage\n\n\n")]
    [TestCase("1000-0800 rw-p 0 0:0 0\n")]             // end before start
    [TestCase("1000-2000 rwxq 0 0:0 0\n")]             // bad perms
    [TestCase("1000-2000 rw-p\n")]                     // truncated
    [TestCase("10000000000000000-2 rw-p 0 0:0 0\n")]   // 17 hex digits
    [TestCase("zz-2000 rw-p 0 0:0 0\n")]
    public void MalformedRows_AreSkipped_NeverThrow(string text)
    {
        MapsSnapshot m = Parse(text + "2000-3000 rw-p 00000000 00:00 0 \n");
        Assert.That(m.Count, Is.EqualTo(1));
        Assert.That(m.Rows[0].Start, Is.EqualTo(0x2000UL));
    }

    [Test]
    public void RandomBytes_NeverThrow()
    {
        var rng = new Random(12345);
        byte[] lines = Encoding.ASCII.GetBytes(Maps);
        var m = new MapsSnapshot();
        m.Prepare();
        for (int i = 0; i < 2000; i++)
        {
            byte[] b = (byte[])lines.Clone();
            for (int k = rng.Next(1, 20); k > 0; k--)
                b[rng.Next(b.Length)] = (byte)rng.Next(256);
            m.Parse(b);
            for (int r = 1; r < m.Count; r++)
                Assert.That(m.Rows[r].Start, Is.GreaterThanOrEqualTo(m.Rows[r - 1].End), "rows stay ordered and disjoint");
        }
    }

    [Test]
    public void Read_ProcSelfMaps_FindsThisProcessStackAndLibc()
    {
        var m = new MapsSnapshot();
        m.Prepare();
        Assert.That(m.Read(), Is.True);
        Assert.That(m.Truncated, Is.False);
        Assert.That(m.Rows.ToArray().Any(r => r.Has(MapFlags.MainStack)), Is.True);
        Assert.That(DataRows(m), Is.Not.Empty);
        int local = 0;
        Assert.That(m.Find((ulong)&local), Is.GreaterThanOrEqualTo(0), "this thread's stack is mapped");
    }

    [Test]
    public void Clip_KnownSegmentLimitsTheRow_UnknownRowIsNotKnown()
    {
        MemoryRange[] segments = { MemoryRange.FromBounds(0x3000, 0x5000), MemoryRange.FromBounds(0x9000, 0xa000) };
        var pieces = new MemoryRange[8];
        int n = LoadedSegments.Clip(segments, 0x4000, 0x8000, pieces, out bool known);
        Assert.That(known, Is.True);
        Assert.That(pieces.Take(n), Is.EqualTo(new[] { MemoryRange.FromBounds(0x4000, 0x5000) }));
        n = LoadedSegments.Clip(segments, 0x6000, 0x8000, pieces, out known);
        Assert.That((n, known), Is.EqualTo((0, false)));
    }

    [Test]
    public void Collect_ThisProcess_HasLibcAndTheLoader()
    {
        MemoryRange[] all = LoadedSegments.Collect(Array.Empty<string>(), out MemoryRange[] libc, out MemoryRange[] loader);
        Assert.That(all, Is.Not.Empty);
        Assert.That(libc, Is.Not.Empty, "libc.so.6 has writable segments");
        Assert.That(loader, Is.Not.Empty, "ld-linux's code");
        for (int i = 1; i < all.Length; i++)
            Assert.That(all[i].Start, Is.GreaterThanOrEqualTo(all[i - 1].Start));
    }

    [Test]
    public void FindMainArena_InThisProcessLibc()
    {
        LoadedSegments.Collect(Array.Empty<string>(), out MemoryRange[] libc, out _);
        MemoryRange arena = LoadedSegments.FindMainArena(libc);
        Assert.That(arena.Length, Is.EqualTo(112UL + 254 * 8 + 16 + 40));
        Assert.That(libc.Any(s => s.Start <= arena.Start && arena.End <= s.End), Is.True);
        // malloc_state.next (after the bins and binmap) links the arenas in a ring through main_arena.
        ulong next = *(ulong*)(arena.Start + 112 + 254 * 8 + 16);
        Assert.That(next, Is.Not.Zero, "main_arena.next");
        // main_arena.top is set once anything was allocated from it, which the test host has.
        Assert.That(*(ulong*)(arena.Start + 96), Is.Not.Zero, "main_arena.top");
    }

    [Test]
    public void FindMainArena_Synthetic()
    {
        // A fake segment: some words, then a malloc_state whose bins are all empty but three.
        const int Words = 2048;
        ulong* seg = (ulong*)NativeMemory.AllocZeroed(Words * 8);
        try
        {
            ulong state = (ulong)seg + 800;
            ulong bins = state + 112;
            *(ulong*)(state + 112 + 254 * 8 + 16) = state; // next: a ring of one arena
            for (int k = 0; k < 127; k++)
            {
                ulong pair = bins + (ulong)k * 16;
                bool used = k is 0 or 5 or 40;
                ((ulong*)pair)[0] = used ? 0xdead0 : pair - 16;
                ((ulong*)pair)[1] = used ? 0xbeef0 : pair - 16;
            }
            MemoryRange found = LoadedSegments.FindMainArena(new[] { new MemoryRange((ulong)seg, Words * 8) });
            Assert.That(found.Start, Is.EqualTo(state));
        }
        finally
        {
            NativeMemory.Free(seg);
        }
    }

    [Test]
    public void HexDump_IsKmemleaks()
    {
        var sb = new StringBuilder();
        LeakReport.AppendHexDump(sb, Encoding.ASCII.GetBytes("leaked-string\0\u0001\u007f0123456789"));
        Assert.That(sb.ToString(), Is.EqualTo(
            "    6c 65 61 6b 65 64 2d 73 74 72 69 6e 67 00 01 7f  leaked-string...\n" +
            "    30 31 32 33 34 35 36 37 38 39                    0123456789\n"));
    }
}
