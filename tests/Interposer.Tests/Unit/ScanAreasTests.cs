// kmemleak_scan_area's two halves: the recorder's store (areas die with their block) and the
// scanner's per-block set (sorted, overlaps merged so a word is read once).

using System;
using System.Linq;
using Interposer.Recording;
using Interposer.Scanner.Scan;
using Interposer.Tests.Scan;
using NUnit.Framework;

namespace Interposer.Tests.Unit;

[TestFixture]
public class ScanAreasTests
{
    // The store is process-wide: each test uses its own address range.
    private static int Count(ulong lo, ulong hi)
    {
        int n = 0;
        foreach (var a in ScanAreas.Copy())
            if (a.Start >= lo && a.Start < hi)
                n++;
        return n;
    }

    [Test]
    public void Free_DropsTheAreasInsideTheBlockOnly()
    {
        const ulong block = 0x7a00_0000_1000;
        Assert.That(ScanAreas.Add(block, 16), Is.EqualTo(1));
        Assert.That(ScanAreas.Add(block + 64, ulong.MaxValue), Is.EqualTo(1));
        Assert.That(ScanAreas.Add(block + 128, 8), Is.EqualTo(1)); // the next block's
        Assert.That(ScanAreas.Add(block, 16), Is.EqualTo(1), "a repeat is kept once");
        Assert.That(Count(block, block + 256), Is.EqualTo(3));

        ScanAreas.OnFree(block, 128);

        Assert.That(Count(block, block + 256), Is.EqualTo(1));
        Assert.That(ScanAreas.Remove(new ScanAreas.Area { Start = block + 128, End = block + 136 }), Is.True);
        Assert.That(ScanAreas.Remove(new ScanAreas.Area { Start = block + 128, End = block + 136 }), Is.False);
    }

    [Test]
    public void SizeMax_MeansToTheEndOfTheBlock_AndSizeZeroIsRefused()
    {
        const ulong at = 0x7a00_0000_9000;
        ScanAreas.Add(at, ulong.MaxValue);
        Assert.That(Array.Find(ScanAreas.Copy(), a => a.Start == at).End, Is.EqualTo(ulong.MaxValue));
        Assert.That(ScanAreas.Add(at + 8, 0), Is.Zero);
        ScanAreas.OnFree(at, 1);
        Assert.That(Count(at, at + 16), Is.Zero);
    }

    [Test]
    public void FullTable_RefusesMore_AndFreeingMakesRoom()
    {
        const ulong block = 0x7b00_0000_0000;
        int free = ScanAreas.Capacity - ScanAreas.Count;
        for (int i = 0; i < free; i++)
            Assert.That(ScanAreas.Add(block + (ulong)i * 16, 8), Is.EqualTo(1));
        Assert.That(ScanAreas.Add(block + (ulong)free * 16, 8), Is.Zero, "the table is full");

        ScanAreas.OnFree(block, (ulong)free * 16); // one big block holding them all

        Assert.That(Count(block, block + (ulong)free * 16 + 16), Is.Zero);
        Assert.That(ScanAreas.Add(block, 8), Is.EqualTo(1));
        ScanAreas.OnFree(block, 16);
    }

    [Test]
    public void AreaSet_SortsAndMergesPerBlock()
    {
        var set = ScanAreaSet.Build(new[]
        {
            (7, new MemoryRange(0x1010, 16)),
            (3, new MemoryRange(0x500, 8)),
            (7, new MemoryRange(0x1000, 24)),  // overlaps the first: one range [0x1000, 0x1020)
            (7, new MemoryRange(0x1040, 8)),
            (-1, new MemoryRange(0x9000, 8)),  // no block: dropped
        });

        Assert.That(set.Blocks.ToArray(), Is.EqualTo(new[] { 3, 7 }));
        Assert.That(set.AreasOf(7).ToArray(), Is.EqualTo(new[] { new MemoryRange(0x1000, 0x20), new MemoryRange(0x1040, 8) }));
        Assert.That(set.AreasOf(3).ToArray(), Is.EqualTo(new[] { new MemoryRange(0x500, 8) }));
        Assert.That(set.AreasOf(5).Length, Is.Zero);
    }

    [Test]
    public void Marker_ReadsOnlyTheAreas()
    {
        var heap = new FakeHeap();
        ulong holder = heap.Alloc(256);
        ulong inArea = heap.Alloc();
        ulong outside = heap.Alloc();
        heap.Store(holder, inArea);
        heap.Store(holder + 128, outside);
        heap.RootPointingTo(holder);
        var index = BlockIndex.Build(heap.Blocks.ToArray());
        int pos = index.Find(holder);

        var marker = new Marker(index, ScanAreaSet.Build(new[] { (pos, new MemoryRange(holder, 64)) }));
        var reader = new FakeReader(heap.Memory);
        marker.Run(ref reader, heap.Roots.ToArray());

        Assert.That(marker.ColorOf(index.Find(inArea)), Is.EqualTo(BlockColor.Gray));
        Assert.That(marker.ColorOf(index.Find(outside)), Is.EqualTo(BlockColor.White));
    }
}
