// Marker against a breadth-first reachability model on random heaps: the batched, prefetching
// lookup path with many candidates per batch, checked block by block (colour and direct/indirect).

using System;
using System.Collections.Generic;
using Interposer.Scanner.Scan;
using NUnit.Framework;

namespace Interposer.Tests.Scan;

[TestFixture]
public class MarkerModelTests
{
    // Random graphs against a breadth-first model: many candidates per batch, pointers at random
    // offsets (start, interior, one past the end), self pointers, no_scan blocks, noise words.
    [TestCase(1, 300, 3)]
    [TestCase(2, 3000, 2)]
    [TestCase(3, 3000, 6)]
    [TestCase(4, 20000, 1)]
    public void RandomGraph_AgreesWithReachabilityModel(int seed, int blockCount, int edgesPerBlock)
    {
        var rng = new Random(seed);
        var heap = new FakeHeap();
        var address = new ulong[blockCount];
        var size = new ulong[blockCount];
        var noScan = new bool[blockCount];
        for (int i = 0; i < blockCount; i++)
        {
            size[i] = (ulong)rng.Next(1, 40) * 8;
            noScan[i] = rng.Next(20) == 0;
            address[i] = heap.Alloc(size[i], flags: noScan[i] ? BlockFlags.NoScan : BlockFlags.None);
        }
        var edges = new List<int>[blockCount];
        for (int i = 0; i < blockCount; i++)
        {
            edges[i] = new List<int>();
            int words = (int)(size[i] / 8);
            for (int w = 0; w < words; w++)
            {
                int roll = rng.Next(10);
                int target = rng.Next(blockCount);
                ulong value;
                if (roll < edgesPerBlock)
                {
                    value = address[target] + (ulong)rng.NextInt64(0, (long)size[target]);
                    if (target != i)
                        edges[i].Add(target);
                }
                else if (roll == 9)
                {
                    value = address[target] + size[target]; // one past the end: no edge
                }
                else
                {
                    value = (ulong)rng.NextInt64();
                }
                heap.Store(address[i] + (ulong)w * 8, value);
            }
        }
        var reached = new bool[blockCount];
        var queue = new Queue<int>();
        ulong rootArea = heap.Root(16);
        for (int r = 0; r < 16; r++)
        {
            int target = rng.Next(blockCount);
            heap.Store(rootArea + (ulong)r * 8, address[target] + 1);
            if (!reached[target])
            {
                reached[target] = true;
                queue.Enqueue(target);
            }
        }
        while (queue.Count > 0)
        {
            int b = queue.Dequeue();
            if (noScan[b])
                continue;
            foreach (int t in edges[b])
                if (!reached[t])
                {
                    reached[t] = true;
                    queue.Enqueue(t);
                }
        }
        var pointedFromWhite = new bool[blockCount];
        for (int b = 0; b < blockCount; b++)
            if (!reached[b] && !noScan[b])
                foreach (int t in edges[b])
                    pointedFromWhite[t] = true;

        var scan = heap.Mark();

        var expectedWhite = new List<ulong>();
        int wrongKind = 0;
        for (int b = 0; b < blockCount; b++)
        {
            if (reached[b])
                continue;
            expectedWhite.Add(address[b]);
            if (scan.Color(address[b]) == BlockColor.White && scan.IsIndirect(address[b]) != pointedFromWhite[b])
                wrongKind++;
        }
        Assert.That(scan.WhiteAddresses(), Is.EqualTo(expectedWhite));
        Assert.That(wrongKind, Is.Zero, "direct/indirect disagrees with the model");
    }
}
