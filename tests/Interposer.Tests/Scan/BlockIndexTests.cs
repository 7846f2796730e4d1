// BlockIndex: containment lookups against a brute-force model (random layouts with tiny, page-sized
// and chunk-spanning blocks), boundaries, and what Build drops.

using System;
using System.Collections.Generic;
using System.Linq;
using Interposer.Scanner.Scan;
using NUnit.Framework;

namespace Interposer.Tests.Scan;

[TestFixture]
public class BlockIndexTests
{
    [TestCase(0, 1)]
    [TestCase(1, 2)]
    [TestCase(100_000, 3)]
    [TestCase(70_000, 4)]
    public void RadixSort_MatchesArraySort_AndIsStable(int n, int seed)
    {
        var rng = new System.Random(seed);
        var keys = new ulong[n];
        for (int i = 0; i < n; i++)
            keys[i] = seed == 4 ? (ulong)rng.Next(0, 50) << 4 : 0x7f00_0000_0000UL + ((ulong)rng.NextInt64(0, 1L << 40) << 4);
        var order = System.Linq.Enumerable.Range(0, n).ToArray();
        var expectedKeys = (ulong[])keys.Clone();
        var expectedOrder = (int[])order.Clone();
        System.Array.Sort(expectedKeys, expectedOrder);
        BlockIndex.RadixSort(keys, order);
        Assert.That(keys, Is.EqualTo(expectedKeys));
        for (int i = 1; i < n; i++)
            if (keys[i] == keys[i - 1])
                Assert.That(order[i], Is.GreaterThan(order[i - 1]), "equal keys keep their input order");
        Assert.That(order.Select(o => o).OrderBy(o => o), Is.EqualTo(System.Linq.Enumerable.Range(0, n)));
    }

    // Brute force: the block whose [start, start + max(size,1)) contains address.
    private static int ModelFind(HeapBlock[] sorted, ulong address)
    {
        for (int i = 0; i < sorted.Length; i++)
        {
            ulong size = Math.Max(sorted[i].Size, 1);
            if (address >= sorted[i].Address && address - sorted[i].Address < size)
                return i;
        }
        return -1;
    }

    // A heap-like layout: mostly small blocks packed with gaps, some large ones, some far away.
    private static HeapBlock[] RandomLayout(Random rng, int count)
    {
        var blocks = new HeapBlock[count];
        ulong next = 0x5555_0000_0000UL + (ulong)rng.Next(0, 1 << 20) * 16;
        for (int i = 0; i < count; i++)
        {
            int kind = rng.Next(100);
            ulong size = kind < 70 ? (ulong)rng.Next(0, 64)
                : kind < 95 ? (ulong)rng.Next(64, 9000)
                : (ulong)rng.Next(1 << 20, 5 << 20);          // spans pages and 2 MiB chunks
            if (rng.Next(50) == 0)
                next += (ulong)rng.Next(1, 1 << 30) & ~15UL;   // a far region (another arena, an mmap)
            blocks[i] = new HeapBlock(next, size, id: i);
            next = (next + Math.Max(size, 1) + (ulong)rng.Next(0, 3) * 16 + 15) & ~15UL;
        }
        return blocks;
    }

    [TestCase(1, 50)]
    [TestCase(2, 2000)]
    [TestCase(3, 20000)]
    public void Find_AgreesWithBruteForce(int seed, int count)
    {
        var rng = new Random(seed);
        var input = RandomLayout(rng, count);
        // Shuffle: Build must sort.
        var shuffled = (HeapBlock[])input.Clone();
        rng.Shuffle(shuffled);

        var index = BlockIndex.Build(shuffled);
        var sorted = index.Blocks.ToArray();

        Assert.That(index.Count, Is.EqualTo(count));
        Assert.That(index.OverlapCount, Is.Zero);
        var probes = new List<ulong>();
        foreach (var b in sorted)
        {
            ulong size = Math.Max(b.Size, 1);
            probes.AddRange(new[] { b.Address - 1, b.Address, b.Address | 1, b.Address + size / 2, b.Address + size - 1, b.Address + size });
        }
        for (int i = 0; i < 2000; i++)
            probes.Add(sorted[0].Address + (ulong)rng.NextInt64(0, (long)(sorted[^1].Address - sorted[0].Address + (1 << 22))));
        probes.AddRange(new[] { 0UL, 8UL, ulong.MaxValue, sorted[0].Address - 4096, sorted[^1].Address + (6 << 20) });

        int mismatches = 0;
        string first = "";
        // The model is quadratic: check a sample of probes on the large layout.
        int step = count > 5000 ? 7 : 1;
        for (int p = 0; p < probes.Count; p += step)
        {
            int expected = ModelFind(sorted, probes[p]);
            int actual = index.Find(probes[p]);
            if (expected != actual && mismatches++ == 0)
                first = $"0x{probes[p]:x}: expected {expected}, got {actual}";
        }
        Assert.That(mismatches, Is.Zero, first);
    }

    [Test]
    public void Build_SortsAndKeepsIds()
    {
        var index = BlockIndex.Build(new[]
        {
            new HeapBlock(0x3000, 16, id: 30),
            new HeapBlock(0x1000, 16, id: 10),
            new HeapBlock(0x2000, 16, id: 20),
        });

        Assert.That(index.Blocks.ToArray(), Has.Exactly(3).Items);
        Assert.That(new[] { index.Blocks[0].Id, index.Blocks[1].Id, index.Blocks[2].Id }, Is.EqualTo(new[] { 10, 20, 30 }));
        Assert.That(index.Min, Is.EqualTo(0x1000UL));
        Assert.That(index.Span, Is.EqualTo(0x2010UL));
    }

    [Test]
    public void Build_DropsAddressZeroDuplicatesAndWrappingRanges()
    {
        var index = BlockIndex.Build(new[]
        {
            new HeapBlock(0, 16, id: 1),
            new HeapBlock(0x1000, 16, id: 2),
            new HeapBlock(0x1000, 32, id: 3),
            new HeapBlock(ulong.MaxValue - 8, 64, id: 4),
        });

        Assert.That(index.Count, Is.EqualTo(1));
        Assert.That(index.Blocks[0].Id, Is.EqualTo(2));
        Assert.That(index.DroppedCount, Is.EqualTo(3));
        Assert.That(index.Find(8), Is.EqualTo(-1), "address 0 must not widen [Min, Max) down to small integers");
    }

    [Test]
    public void OverlappingBlocks_AreCounted_AndResolveToTheLaterBlock()
    {
        var index = BlockIndex.Build(new[] { new HeapBlock(0x1000, 0x100), new HeapBlock(0x1080, 0x10) });

        Assert.That(index.OverlapCount, Is.EqualTo(1));
        Assert.That(index.Find(0x107f), Is.EqualTo(0));
        Assert.That(index.Find(0x1080), Is.EqualTo(1));
        Assert.That(index.ContentsOf(0).Length, Is.EqualTo(0x100UL), "the scan still reads the whole block");
    }

    [Test]
    public void ManyTinyBlocksInOnePage_FoundByTheBisectingPath()
    {
        var blocks = new HeapBlock[256];
        for (int i = 0; i < blocks.Length; i++)
            blocks[i] = new HeapBlock(0x10000 + (ulong)i * 16, 8);
        var index = BlockIndex.Build(blocks);

        for (int i = 0; i < blocks.Length; i++)
        {
            Assert.That(index.Find(blocks[i].Address + 7), Is.EqualTo(i));
            Assert.That(index.Find(blocks[i].Address + 8), Is.EqualTo(-1));
        }
    }

    [TestCase(0x1000UL, 0x1010UL, true)]
    [TestCase(0x0f00UL, 0x1001UL, true)]
    [TestCase(0x0f00UL, 0x1000UL, false)]
    [TestCase(0x1010UL, 0x2000UL, false)]
    [TestCase(0x100fUL, 0x1010UL, true)]
    [TestCase(0x3000UL, 0x2000UL, false)]
    [TestCase(0x1fffUL, 0x9000UL, true)]
    public void AnyBlockIn(ulong start, ulong end, bool expected)
    {
        var index = BlockIndex.Build(new[] { new HeapBlock(0x1000, 16), new HeapBlock(0x2000, 0) });

        Assert.That(index.AnyBlockIn(start, end), Is.EqualTo(expected));
    }

    [Test]
    public void HugeBlock_CostsFourBytesPer512Bytes()
    {
        const ulong size = 1UL << 30;
        var index = BlockIndex.Build(new[] { new HeapBlock(0x7f00_0000_0000, size), new HeapBlock(0x5555_0000_0000, 16) });

        Assert.That(index.Find(0x7f00_0000_0000 + size - 1), Is.EqualTo(1));
        Assert.That(index.Find(0x7f00_0000_0000 + size), Is.EqualTo(-1));
        Assert.That(index.Find(0x6000_0000_0000), Is.EqualTo(-1));
        // One entry per 512-byte page, plus one per 256 KiB chunk and a few for the small block.
        Assert.That(index.PageEntryCount, Is.LessThanOrEqualTo((int)(size / 512 + size / (256 * 1024)) + 4));
    }
}
