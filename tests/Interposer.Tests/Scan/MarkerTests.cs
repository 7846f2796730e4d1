// Marker: kmemleak's colours and gray list, LSan's direct/indirect split, one heap shape per test
// (after LSan's tests: pointer_to_self, a leaked cycle, a leaked tree, a deep list from a root).

using System;
using Interposer.Scanner.Scan;
using NUnit.Framework;

namespace Interposer.Tests.Scan;

[TestFixture]
public class MarkerTests
{
    private const bool Held = true;   // ends gray
    private const bool Leaked = false; // ends white

    [TestCase(32UL)]
    [TestCase(1UL)]
    [TestCase(0UL)]
    [TestCase(3 * 4096UL)]
    public void LeakedBlock_IsWhiteAndDirect(ulong size)
    {
        var heap = new FakeHeap();
        ulong held = heap.Alloc();
        ulong leaked = heap.Alloc(size);
        heap.RootPointingTo(held);

        var scan = heap.Mark();

        Assert.That(scan.WhiteAddresses(), Is.EqualTo(new[] { leaked }));
        Assert.That(scan.IsDirect(leaked), Is.True);
        Assert.That(scan.Color(held), Is.EqualTo(BlockColor.Gray));
    }

    // Any address in [start, start + size) holds the block: interior pointers and low-bit tags.
    // start + size is the next byte after the block and holds nothing. A zero-size block owns one byte.
    [TestCase(64UL, 0UL, Held, TestName = "Pointer to start")]
    [TestCase(64UL, 1UL, Held, TestName = "Tagged pointer p|1")]
    [TestCase(64UL, 7UL, Held, TestName = "Tagged pointer p|7")]
    [TestCase(64UL, 40UL, Held, TestName = "Interior pointer")]
    [TestCase(64UL, 63UL, Held, TestName = "Pointer to last byte")]
    [TestCase(64UL, 64UL, Leaked, TestName = "Pointer to start+size")]
    [TestCase(64UL, 1000UL, Leaked, TestName = "Pointer past the block")]
    [TestCase(13UL, 12UL, Held, TestName = "Odd size, last byte")]
    [TestCase(13UL, 13UL, Leaked, TestName = "Odd size, start+size")]
    [TestCase(0UL, 0UL, Held, TestName = "Zero size, start")]
    [TestCase(0UL, 1UL, Leaked, TestName = "Zero size, start+1")]
    public void HeldByRoot_ThroughPointerAtOffset(ulong size, ulong offset, bool held)
    {
        var heap = new FakeHeap();
        ulong block = heap.Alloc(size);
        heap.Alloc(); // a block after it, so that [Min, Max) alone cannot reject start + size
        heap.RootPointingTo(block + offset);

        var scan = heap.Mark();

        Assert.That(scan.Color(block), Is.EqualTo(held ? BlockColor.Gray : BlockColor.White));
    }

    [Test]
    public void PointerToEndOfBlock_CountsForTheAdjacentBlockOnly()
    {
        var heap = new FakeHeap();
        ulong a = heap.AllocAt(FakeHeap.HeapBase, 48);
        ulong b = heap.AllocAt(FakeHeap.HeapBase + 48, 16);
        heap.RootPointingTo(a + 48);

        var scan = heap.Mark();

        Assert.That(scan.Color(a), Is.EqualTo(BlockColor.White));
        Assert.That(scan.Color(b), Is.EqualTo(BlockColor.Gray));
    }

    [Test]
    public void LeakedCycle_BothWhite_AndIndirect()
    {
        var heap = new FakeHeap();
        ulong a = heap.Alloc();
        ulong b = heap.Alloc();
        heap.Store(a, b);
        heap.Store(b + 8, a);
        heap.Root(4); // roots exist, they just hold nothing

        var scan = heap.Mark();

        Assert.That(scan.WhiteAddresses(), Is.EquivalentTo(new[] { a, b }));
        // LSan's rule: each is pointed to by another leaked block, so a pure cycle has no direct leak.
        Assert.That(scan.IsIndirect(a) && scan.IsIndirect(b), Is.True);
    }

    [Test]
    public void HeldCycle_NeitherWhite()
    {
        var heap = new FakeHeap();
        ulong a = heap.Alloc();
        ulong b = heap.Alloc();
        heap.Store(a, b);
        heap.Store(b, a);
        heap.RootPointingTo(b + 5);

        var scan = heap.Mark();

        Assert.That(scan.WhiteAddresses(), Is.Empty);
    }

    [Test]
    public void LeakedTree_RootDirect_DescendantsIndirect()
    {
        var heap = new FakeHeap();
        ulong root = heap.Alloc(24);
        ulong left = heap.Alloc(16);
        ulong right = heap.Alloc(16);
        ulong grandchild = heap.Alloc(8);
        heap.Store(root, left);
        heap.Store(root + 8, right);
        heap.Store(left, grandchild);

        var scan = heap.Mark();

        Assert.That(scan.WhiteAddresses(), Is.EquivalentTo(new[] { root, left, right, grandchild }));
        Assert.That(scan.IsDirect(root), Is.True);
        Assert.That(scan.IsIndirect(left), Is.True);
        Assert.That(scan.IsIndirect(right), Is.True);
        Assert.That(scan.IsIndirect(grandchild), Is.True);
    }

    [Test]
    public void DeepListFromRoot_NothingWhite_EachNodeScannedOnce()
    {
        const int depth = 1000;
        var heap = new FakeHeap();
        var nodes = new ulong[depth];
        for (int i = 0; i < depth; i++)
            nodes[i] = heap.Alloc(16);
        for (int i = 0; i + 1 < depth; i++)
            heap.Store(nodes[i] + 8, nodes[i + 1]);
        heap.RootPointingTo(nodes[0]);

        var scan = heap.Mark();

        Assert.That(scan.WhiteAddresses(), Is.Empty);
        Assert.That(scan.Marker.Stats.BlocksScanned, Is.EqualTo(depth));
    }

    [Test]
    public void DeepListWithLeakedTail_TailWhite_FirstTailNodeDirect()
    {
        var heap = new FakeHeap();
        var nodes = new ulong[10];
        for (int i = 0; i < nodes.Length; i++)
            nodes[i] = heap.Alloc(16);
        for (int i = 0; i + 1 < nodes.Length; i++)
            if (i != 4)
                heap.Store(nodes[i], nodes[i + 1]);
        heap.RootPointingTo(nodes[0]);

        var scan = heap.Mark();

        Assert.That(scan.WhiteAddresses(), Is.EqualTo(nodes[5..]));
        Assert.That(scan.IsDirect(nodes[5]), Is.True);
        Assert.That(scan.IsIndirect(nodes[9]), Is.True);
    }

    [TestCase(0UL, TestName = "Self pointer to start")]
    [TestCase(17UL, TestName = "Self pointer to interior")]
    public void SelfReference_IsIgnored(ulong offset)
    {
        var heap = new FakeHeap();
        ulong block = heap.Alloc(32);
        heap.Store(block + 8, block + offset);

        var scan = heap.Mark();

        Assert.That(scan.Color(block), Is.EqualTo(BlockColor.White));
        Assert.That(scan.IsDirect(block), Is.True, "a pointer to itself does not make a block indirect");
    }

    [Test]
    public void MinCountZero_NeverReported_AndScannedAsARoot()
    {
        var heap = new FakeHeap();
        ulong notLeak = heap.Alloc(minCount: 0);
        ulong child = heap.Alloc();
        heap.Store(notLeak, child);

        var scan = heap.Mark();

        Assert.That(scan.Color(notLeak), Is.EqualTo(BlockColor.Gray));
        Assert.That(scan.Color(child), Is.EqualTo(BlockColor.Gray));
        Assert.That(scan.WhiteAddresses(), Is.Empty);
    }

    [Test]
    public void MinCountMinusOne_Black_NotScanned_ChildOnlyItHoldsIsWhite()
    {
        var heap = new FakeHeap();
        ulong ignored = heap.Alloc(minCount: -1);
        ulong child = heap.Alloc();
        heap.Store(ignored, child);
        heap.RootPointingTo(ignored);

        var scan = heap.Mark();

        Assert.That(scan.Color(ignored), Is.EqualTo(BlockColor.Black));
        Assert.That(scan.WhiteAddresses(), Is.EqualTo(new[] { child }));
        Assert.That(scan.IsDirect(child), Is.True, "a black block is not a leak, so its child is not indirect");
    }

    // kmemleak's min_count > 1: a block needs that many references to turn gray.
    [TestCase(2, 1, Leaked)]
    [TestCase(2, 2, Held)]
    [TestCase(2, 3, Held)]
    [TestCase(1, 0, Leaked)]
    [TestCase(3, 2, Leaked)]
    public void MinCount_NeedsThatManyReferences(int minCount, int references, bool held)
    {
        var heap = new FakeHeap();
        ulong block = heap.Alloc(minCount: minCount);
        for (int i = 0; i < references; i++)
            heap.RootPointingTo(block + (ulong)i);

        var scan = heap.Mark();

        Assert.That(scan.Color(block), Is.EqualTo(held ? BlockColor.Gray : BlockColor.White));
        Assert.That(scan.Marker.CountOf(scan.Index.IndexOf(block)), Is.LessThanOrEqualTo(Math.Max(minCount, 0)));
    }

    [Test]
    public void NoScan_BlockIsMarkedButItsContentsAreNotRead()
    {
        var heap = new FakeHeap();
        ulong opaque = heap.Alloc(flags: BlockFlags.NoScan);
        ulong child = heap.Alloc();
        heap.Store(opaque, child);
        heap.RootPointingTo(opaque);

        var scan = heap.Mark();

        Assert.That(scan.Color(opaque), Is.EqualTo(BlockColor.Gray));
        Assert.That(scan.Color(child), Is.EqualTo(BlockColor.White));
        Assert.That(scan.IsDirect(child), Is.True);
    }

    [Test]
    public void LeakedNoScanBlock_DoesNotMakeWhatItHoldsIndirect()
    {
        var heap = new FakeHeap();
        ulong opaque = heap.Alloc(flags: BlockFlags.NoScan);
        ulong child = heap.Alloc();
        heap.Store(opaque, child);

        var scan = heap.Mark();

        Assert.That(scan.WhiteAddresses(), Is.EquivalentTo(new[] { opaque, child }));
        Assert.That(scan.IsDirect(child), Is.True);
    }

    [Test]
    public void RootWords_LikeRegisters_HoldBlocks()
    {
        var heap = new FakeHeap();
        ulong inRegister = heap.Alloc();
        ulong leaked = heap.Alloc();

        var scan = heap.Mark(new[] { 42UL, inRegister + 3, ulong.MaxValue });

        Assert.That(scan.WhiteAddresses(), Is.EqualTo(new[] { leaked }));
    }

    // Roots are read as aligned words wholly inside the range: an unaligned start skips to the
    // next word; a partial word at the end is not read.
    [TestCase(0UL, 0UL, 8UL, Held)]
    [TestCase(0UL, 0UL, 7UL, Leaked)]
    [TestCase(0UL, 1UL, 23UL, Leaked)]
    [TestCase(8UL, 1UL, 15UL, Held)]
    [TestCase(8UL, 1UL, 14UL, Leaked)]
    public void RootRange_AlignedWholeWordsOnly(ulong pointerAt, ulong skip, ulong length, bool held)
    {
        var heap = new FakeHeap();
        ulong block = heap.Alloc();
        ulong area = heap.Root(4);
        heap.Roots.Clear();
        heap.Store(area + pointerAt, block);
        heap.Roots.Add(new MemoryRange(area + skip, length));

        var scan = heap.Mark();

        Assert.That(scan.Color(block), Is.EqualTo(held ? BlockColor.Gray : BlockColor.White));
    }

    // A block is read like a root: a pointer in a trailing partial word (size 12, word at 8) is not read.
    [TestCase(16UL, Held)]
    [TestCase(12UL, Leaked)]
    public void BlockContents_WholeWordsOnly(ulong parentSize, bool held)
    {
        var heap = new FakeHeap();
        ulong parent = heap.Alloc(parentSize);
        ulong child = heap.Alloc();
        heap.Store(parent + 8, child);
        heap.RootPointingTo(parent);

        var scan = heap.Mark();

        Assert.That(scan.Color(child), Is.EqualTo(held ? BlockColor.Gray : BlockColor.White));
    }

    [Test]
    public void UnreadableRoot_IsSkipped()
    {
        var heap = new FakeHeap();
        ulong block = heap.Alloc();
        heap.Roots.Add(new MemoryRange(0x1000, 4096)); // nothing mapped there
        heap.RootPointingTo(block);

        var scan = heap.Mark();

        Assert.That(scan.Color(block), Is.EqualTo(BlockColor.Gray));
        Assert.That(scan.Marker.Stats.RootBytes, Is.EqualTo(8));
    }

    [Test]
    public void Ignore_MakesABlockBlackAndUnread()
    {
        var heap = new FakeHeap();
        ulong freedMeanwhile = heap.Alloc();
        ulong child = heap.Alloc();
        heap.Store(freedMeanwhile, child);
        heap.RootPointingTo(freedMeanwhile);
        var index = BlockIndex.Build(new System.Collections.Generic.List<HeapBlock>(heap.Blocks).ToArray());
        var marker = new Marker(index);
        var reader = new FakeReader(heap.Memory);

        marker.Ignore(index.IndexOf(freedMeanwhile));
        marker.Run(ref reader, heap.Roots.ToArray());

        Assert.That(marker.ColorOf(index.IndexOf(freedMeanwhile)), Is.EqualTo(BlockColor.Black));
        Assert.That(marker.ColorOf(index.IndexOf(child)), Is.EqualTo(BlockColor.White));
    }

    [Test]
    public void BlockReachedManyWays_IsScannedOnce_AndResetRestartsTheScan()
    {
        var heap = new FakeHeap();
        ulong shared = heap.Alloc();
        for (int i = 0; i < 5; i++)
        {
            ulong parent = heap.Alloc();
            heap.Store(parent, shared);
            heap.RootPointingTo(parent);
        }
        var scan = heap.Mark();
        Assert.That(scan.Marker.Stats.BlocksScanned, Is.EqualTo(6));

        scan.Marker.Reset();
        Assert.That(scan.Marker.UnreferencedCount, Is.EqualTo(6), "after Reset every min_count-1 block is white again");
        var reader = new FakeReader(heap.Memory);
        scan.Marker.Run(ref reader, heap.Roots.ToArray());
        Assert.That(scan.WhiteAddresses(), Is.Empty);
    }

    [Test]
    public void EmptyHeap_ScansRootsWithoutLookups()
    {
        var heap = new FakeHeap();
        ulong root = heap.Root(2);
        heap.Store(root, FakeHeap.HeapBase);

        var scan = heap.Mark();

        Assert.That(scan.Marker.Unreferenced(), Is.Empty);
        Assert.That(scan.Marker.Stats.Candidates, Is.EqualTo(0));
    }
}
