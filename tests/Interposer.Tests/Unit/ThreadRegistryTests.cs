// ThreadRegistry: increasing indices from 1, NameOf/TidOf round trip, TASK_COMM_LEN truncation
// (15 bytes + NUL), the unknown index 0, concurrent registration and the capacity limit.

using System;
using System.Collections.Concurrent;
using System.Linq;
using System.Text;
using System.Threading;
using Interposer.Recording;
using NUnit.Framework;

namespace Interposer.Tests.Unit;

[TestFixture]
public unsafe class ThreadRegistryTests
{
    private static int Register(ThreadRegistry r, int tid, string? name)
    {
        if (name == null)
            return r.Register(tid, null);
        byte[] bytes = Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* p = bytes)
            return r.Register(tid, p);
    }

    [Test]
    public void Register_ReturnsIncreasingIndicesFromOne()
    {
        var r = new ThreadRegistry();
        Assert.That(r.Count, Is.EqualTo(1), "index 0 is the unknown thread");
        int[] indices = Enumerable.Range(0, 50).Select(i => Register(r, 1000 + i, "worker-" + i)).ToArray();
        Assert.That(indices, Is.EqualTo(Enumerable.Range(1, 50)));
        Assert.That(r.Count, Is.EqualTo(51));
    }

    [TestCase(4242, "main")]
    [TestCase(1, "a")]
    [TestCase(int.MaxValue, "kworker/0:1")]
    [TestCase(77, "")]
    [TestCase(78, "dotnet-tp:é")]
    public void NameAndTid_RoundTrip(int tid, string name)
    {
        var r = new ThreadRegistry();
        Register(r, 1, "first");
        int index = Register(r, tid, name);
        Register(r, 2, "third");
        Assert.That(r.TidOf((uint)index), Is.EqualTo(tid));
        Assert.That(r.NameOf((uint)index), Is.EqualTo(name));
        Assert.That(r.NameOf(1), Is.EqualTo("first"), "a neighbour is untouched");
        Assert.That(r.NameOf(3), Is.EqualTo("third"));
    }

    [TestCase("exactly15bytes!", "exactly15bytes!")]
    [TestCase("sixteen-bytes-16", "sixteen-bytes-1")]
    [TestCase("a-very-long-thread-name-indeed", "a-very-long-thr")]
    public void Name_IsTruncatedTo15Bytes(string name, string expected)
    {
        var r = new ThreadRegistry();
        int index = Register(r, 9, name);
        string got = r.NameOf((uint)index);
        Assert.That(got, Is.EqualTo(expected));
        Assert.That(Encoding.UTF8.GetByteCount(got), Is.LessThanOrEqualTo(15));
        // The next entry is not polluted by the long name.
        int next = Register(r, 10, "x");
        Assert.That(r.NameOf((uint)next), Is.EqualTo("x"));
        Assert.That(r.TidOf((uint)next), Is.EqualTo(10));
    }

    [Test]
    public void NullName_IsEmpty()
    {
        var r = new ThreadRegistry();
        int index = Register(r, 5, null);
        Assert.That(index, Is.EqualTo(1));
        Assert.That(r.NameOf(1), Is.Empty);
        Assert.That(r.TidOf(1), Is.EqualTo(5));
    }

    [TestCase(0u)]
    [TestCase(2u)]
    [TestCase(uint.MaxValue)]
    public void UnknownIndex_IsQuestionMarkAndTidZero(uint index)
    {
        var r = new ThreadRegistry();
        Register(r, 5, "one");
        Assert.That(r.NameOf(index), Is.EqualTo("?"));
        Assert.That(r.TidOf(index), Is.Zero);
    }

    [Test]
    public void ConcurrentRegistration_GivesDistinctIndices()
    {
        const int Threads = 8, Each = 1000;
        var r = new ThreadRegistry();
        var got = new ConcurrentBag<(int Index, int Tid)>();
        using var start = new Barrier(Threads);
        var threads = Enumerable.Range(0, Threads).Select(k => new Thread(() =>
        {
            start.SignalAndWait();
            for (int i = 0; i < Each; i++)
            {
                int tid = k * 100_000 + i;
                got.Add((Register(r, tid, "t" + tid), tid));
            }
        })).ToArray();
        foreach (Thread t in threads) t.Start();
        foreach (Thread t in threads) Assert.That(t.Join(TimeSpan.FromMinutes(1)), Is.True);

        Assert.That(r.Count, Is.EqualTo(1 + Threads * Each));
        Assert.That(got.Select(g => g.Index), Is.EquivalentTo(Enumerable.Range(1, Threads * Each)));
        foreach ((int index, int tid) in got)
        {
            if (r.TidOf((uint)index) != tid || r.NameOf((uint)index) != "t" + tid)
                Assert.Fail($"index {index}: tid {r.TidOf((uint)index)} name {r.NameOf((uint)index)}, expected {tid}");
        }
    }

    [Test]
    public void PastCapacity_ThreadsShareIndexZero()
    {
        var r = new ThreadRegistry();
        for (int i = 1; i < ThreadRegistry.Capacity; i++)
            Assert.That(Register(r, i, "n"), Is.EqualTo(i));
        Assert.That(r.Count, Is.EqualTo(ThreadRegistry.Capacity));
        Assert.That(Register(r, 999_999, "late"), Is.Zero);
        Assert.That(Register(r, 999_998, "later"), Is.Zero);
        Assert.That(r.Count, Is.EqualTo(ThreadRegistry.Capacity));
        Assert.That(r.NameOf(0), Is.EqualTo("?"));
        Assert.That(r.TidOf(0), Is.Zero, "index 0 never takes a late thread's tid");
        Assert.That(r.TidOf((uint)ThreadRegistry.Capacity - 1), Is.EqualTo(ThreadRegistry.Capacity - 1));
    }
}
