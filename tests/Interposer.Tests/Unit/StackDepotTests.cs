// StackDepot: interning (same frames -> same id, different -> different), Get, 100k distinct
// stacks, stacks whose CRC-32C collides, and concurrent interning from 8 threads.
// Each depot maps ~1 GiB of MAP_NORESERVE address space and is never unmapped; the tests make a
// handful.

using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using Interposer.Recording;
using NUnit.Framework;

namespace Interposer.Tests.Unit;

[TestFixture]
public unsafe class StackDepotTests
{
    private static uint Intern(StackDepot d, ulong[] frames)
    {
        fixed (ulong* f = frames)
            return d.Intern(f, frames.Length);
    }

    private static uint Crc(ulong[] frames)
    {
        fixed (ulong* f = frames)
            return StackDepot.Crc(f, frames.Length);
    }

    private static ulong[] RandomStack(Random rng, int minDepth = 1, int maxDepth = 32)
    {
        var frames = new ulong[rng.Next(minDepth, maxDepth + 1)];
        for (int i = 0; i < frames.Length; i++)
            frames[i] = 0x5500_0000_0000UL + (ulong)rng.NextInt64(0, 1L << 32);
        return frames;
    }

    [Test]
    public void SameFrames_SameId_DifferentFrames_DifferentId()
    {
        var d = new StackDepot();
        ulong[] a = { 0x401000, 0x401234, 0x7f00_0000_1000 };
        ulong[] aCopy = (ulong[])a.Clone();
        ulong[] b = { 0x401000, 0x401234, 0x7f00_0000_1008 };
        ulong[] prefix = { 0x401000, 0x401234 };
        ulong[] reversed = a.Reverse().ToArray();

        uint ia = Intern(d, a);
        Assert.That(ia, Is.Not.Zero);
        Assert.That(Intern(d, aCopy), Is.EqualTo(ia), "equal frames in another buffer");
        Assert.That(Intern(d, a), Is.EqualTo(ia));
        uint ib = Intern(d, b);
        uint ip = Intern(d, prefix);
        uint ir = Intern(d, reversed);
        Assert.That(new[] { ia, ib, ip, ir }, Is.Unique);
        Assert.That(new[] { ia, ib, ip, ir }, Has.None.Zero);
        Assert.That(d.Count, Is.EqualTo(4));
        Assert.That(d.DroppedStacks, Is.Zero);
    }

    [TestCase(0)]
    [TestCase(-1)]
    public void EmptyStack_IsIdZero(int count)
    {
        var d = new StackDepot();
        ulong frame = 0x1234;
        Assert.That(d.Intern(&frame, count), Is.Zero);
        Assert.That(d.Count, Is.Zero);
    }

    [Test]
    public void Get_ReturnsFramesAndCrc()
    {
        var d = new StackDepot();
        ulong[] a = { 0x1111, 0x2222, 0x3333, 0x4444 };
        ulong[] one = { 0xabcdef };
        uint ia = Intern(d, a);
        uint io = Intern(d, one);

        ReadOnlySpan<ulong> got = d.Get(ia, out uint crc);
        Assert.That(got.ToArray(), Is.EqualTo(a));
        Assert.That(crc, Is.EqualTo(Crc(a)));
        got = d.Get(io, out crc);
        Assert.That(got.ToArray(), Is.EqualTo(one));
        Assert.That(crc, Is.EqualTo(Crc(one)));

        Assert.That(d.Get(0, out crc).Length, Is.Zero, "id 0 = no backtrace");
        Assert.That(crc, Is.Zero);
        Assert.That(d.Get(3, out crc).Length, Is.Zero, "an id never handed out");
        Assert.That(d.Get(uint.MaxValue, out _).Length, Is.Zero);
    }

    [Test]
    public void Crc_DependsOnCountAndEveryFrame()
    {
        ulong[] a = { 1, 2, 3 };
        Assert.That(Crc(a), Is.EqualTo(Crc(new ulong[] { 1, 2, 3 })));
        Assert.That(Crc(a), Is.Not.EqualTo(Crc(new ulong[] { 1, 2, 4 })));
        Assert.That(Crc(a), Is.Not.EqualTo(Crc(new ulong[] { 1, 2 })));
        Assert.That(Crc(new ulong[] { 0 }), Is.Not.EqualTo(Crc(new ulong[] { 0, 0 })), "zero frames still count");
    }

    [Test]
    public void HundredThousandDistinctStacks_AllRetrievable()
    {
        const int N = 100_000;
        var d = new StackDepot();
        var rng = new Random(77);
        var seen = new HashSet<string>();
        var stacks = new List<ulong[]>(N);
        while (stacks.Count < N)
        {
            ulong[] s = RandomStack(rng);
            if (seen.Add(string.Join(",", s)))
                stacks.Add(s);
        }
        uint[] ids = stacks.Select(s => Intern(d, s)).ToArray();

        Assert.That(ids, Has.None.Zero);
        Assert.That(ids.Distinct().Count(), Is.EqualTo(N));
        Assert.That(d.Count, Is.EqualTo(N));
        Assert.That(d.DroppedStacks, Is.Zero);
        Assert.That(d.ArenaUsed, Is.EqualTo(8 + stacks.Sum(s => 8L + 8L * s.Length)), "arena: header + frames per stack");
        int bad = 0;
        for (int i = 0; i < N; i++)
        {
            ReadOnlySpan<ulong> got = d.Get(ids[i], out uint crc);
            if (!got.SequenceEqual(stacks[i]) || crc != Crc(stacks[i]))
                bad++;
            if (Intern(d, stacks[i]) != ids[i])
                bad++;
        }
        Assert.That(bad, Is.Zero);
        Assert.That(d.Count, Is.EqualTo(N), "re-interning adds nothing");
    }

    /// <summary>Two different stacks with the same CRC-32C (and so the same home slot) must still
    /// get different ids: the depot compares the frames, not only the hash.</summary>
    [TestCase(2)]
    [TestCase(5)]
    public void CrcCollision_StillDistinguished(int depth)
    {
        (ulong[] x, ulong[] y) = CollidingPair(depth, new Random(depth));
        Assert.That(x, Is.Not.EqualTo(y));
        Assert.That(Crc(x), Is.EqualTo(Crc(y)), "precondition: a CRC collision");

        var d = new StackDepot();
        uint ix = Intern(d, x);
        uint iy = Intern(d, y);
        Assert.That(ix, Is.Not.Zero);
        Assert.That(iy, Is.Not.Zero);
        Assert.That(iy, Is.Not.EqualTo(ix));
        Assert.That(Intern(d, x), Is.EqualTo(ix));
        Assert.That(Intern(d, y), Is.EqualTo(iy));
        Assert.That(d.Get(ix, out _).ToArray(), Is.EqualTo(x));
        Assert.That(d.Get(iy, out _).ToArray(), Is.EqualTo(y));
    }

    /// <summary>CRC-32C is affine over GF(2): for a fixed length, crc(x ^ delta) ^ crc(x) is
    /// linear in delta. 33 single-bit deltas in a 32-bit space are linearly dependent; XORing a
    /// dependent subset gives a delta whose CRC difference is 0.</summary>
    private static (ulong[], ulong[]) CollidingPair(int depth, Random rng)
    {
        ulong[] x = RandomStack(rng, depth, depth);
        uint crcX = Crc(x);
        // rows: (CRC difference, mask of the bits (0..32) used), Gaussian elimination on the first.
        var basis = new List<(uint Diff, ulong Bits)>();
        for (int bit = 0; bit < 33; bit++)
        {
            ulong[] flipped = (ulong[])x.Clone();
            flipped[bit / 64] ^= 1UL << (bit % 64);
            uint diff = Crc(flipped) ^ crcX;
            ulong bits = 1UL << bit;
            foreach ((uint bd, ulong bb) in basis)
                if ((diff ^ bd) < diff) { diff ^= bd; bits ^= bb; }
            if (diff == 0)
            {
                ulong[] y = (ulong[])x.Clone();
                for (int b = 0; b < 33; b++)
                    if ((bits >> b & 1) != 0)
                        y[b / 64] ^= 1UL << (b % 64);
                return (x, y);
            }
            basis.Add((diff, bits));
            basis.Sort((p, q) => q.Diff.CompareTo(p.Diff));   // highest leading bit first
        }
        throw new InvalidOperationException("33 vectors in a 32-bit space cannot all be independent");
    }

    [Test]
    public void ConcurrentInterning_OfTheSameStacks_GivesConsistentIds()
    {
        const int Threads = 8, N = 20_000;
        var rng = new Random(4242);
        var stacks = new List<ulong[]>(N);
        var seen = new HashSet<string>();
        while (stacks.Count < N)
        {
            ulong[] s = RandomStack(rng, 1, 12);
            if (seen.Add(string.Join(",", s)))
                stacks.Add(s);
        }
        var d = new StackDepot();
        var results = new uint[Threads][];
        using var start = new Barrier(Threads);
        var threads = Enumerable.Range(0, Threads).Select(k => new Thread(() =>
        {
            int[] order = Enumerable.Range(0, N).ToArray();
            new Random(k * 7919).Shuffle(order);   // each thread meets the stacks in its own order
            var ids = new uint[N];
            start.SignalAndWait();
            foreach (int i in order)
                ids[i] = Intern(d, stacks[i]);
            results[k] = ids;
        })).ToArray();
        foreach (Thread t in threads) t.Start();
        foreach (Thread t in threads) Assert.That(t.Join(TimeSpan.FromMinutes(2)), Is.True, "a thread hung");

        for (int k = 1; k < Threads; k++)
            Assert.That(results[k], Is.EqualTo(results[0]), $"thread {k} saw other ids than thread 0");
        Assert.That(results[0], Has.None.Zero);
        Assert.That(results[0].Distinct().Count(), Is.EqualTo(N), "one id per distinct stack");
        Assert.That(d.Count, Is.EqualTo(N), "each stack stored once");
        for (int i = 0; i < N; i++)
            if (!d.Get(results[0][i], out _).SequenceEqual(stacks[i]))
                Assert.Fail($"stack {i} (id {results[0][i]}) reads back wrong");
    }
}
