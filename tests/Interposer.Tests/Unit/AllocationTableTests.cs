// AllocationTable: insert/get/remove, the stash on remove, replacement, growth, backward-shift
// deletion against a Dictionary model (random workload and hand-made wrapping probe runs),
// concurrent use from 8 threads, the fork locks, and the stamped removals of batched frees
// (record times strictly increasing per shard; a removal only takes a record as old as its stamp).
// The table sets each record's TimeNs (max(given, shard's last + 1)), so records compare with
// NoTime: every field but TimeNs.
// Each test uses its own table (mmap'ed, never unmapped: a few MiB of address space per test).

using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Interposer.Native;
using Interposer.Recording;
using NUnit.Framework;

namespace Interposer.Tests.Unit;

[TestFixture]
public unsafe class AllocationTableTests
{
    private static IpRecord Rec(ulong address, ulong size = 16, uint stack = 7, int tid = 100) => new()
    {
        Address = address,
        Size = size,
        TimeNs = address ^ 0x5555,
        Tid = tid,
        StackId = stack,
        ThreadIndex = (uint)tid + 1,
        Flags = (ushort)(size & 1),
        MinCount = 1,
    };

    /// <summary>r without its TimeNs (the table assigns it).</summary>
    private static IpRecord NoTime(IpRecord r)
    {
        r.TimeNs = 0;
        return r;
    }

    /// <summary>A heap-like address: non-zero, 16-byte aligned, below 2^47.</summary>
    private static ulong RandomAddress(Random rng) => ((ulong)rng.NextInt64(1, 1L << 43)) << 4;

    private static HashSet<ulong> DistinctAddresses(Random rng, int n)
    {
        var set = new HashSet<ulong>(n);
        while (set.Count < n)
            set.Add(RandomAddress(rng));
        return set;
    }

    [Test]
    public void InsertGetRemove()
    {
        var t = new AllocationTable();
        Assert.That(t.Count, Is.Zero);
        Assert.That(t.TryGet(0x1000, out _), Is.False);

        Assert.That(t.Insert(Rec(0x1000, 32)), Is.False, "a new address replaces nothing");
        Assert.That(t.Insert(Rec(0x2000, 64)), Is.False);
        Assert.That(t.Count, Is.EqualTo(2));

        Assert.That(t.TryGet(0x1000, out IpRecord r), Is.True);
        Assert.That(NoTime(r), Is.EqualTo(NoTime(Rec(0x1000, 32))));
        Assert.That(t.TryGet(0x1010, out _), Is.False, "a neighbouring address is another block");

        Assert.That(t.Remove(0x1000, null), Is.True);
        Assert.That(t.TryGet(0x1000, out _), Is.False);
        Assert.That(t.Remove(0x1000, null), Is.False, "double remove");
        Assert.That(t.Count, Is.EqualTo(1));
        Assert.That(t.TryGet(0x2000, out r), Is.True);
        Assert.That(r.Size, Is.EqualTo(64UL));
        Assert.That(t.Failed, Is.False);
    }

    [Test]
    public void Remove_StashesTheRecord_AndRestoreWorks()
    {
        var t = new AllocationTable();
        IpRecord original = Rec(0x7f00_1234_5670, 4096, stack: 99, tid: 4242);
        original.MinCount = -1;
        original.Flags = (ushort)RecordFlags.Deferred;
        t.Insert(original);

        IpRecord stash = default;
        Assert.That(t.Remove(original.Address, &stash), Is.True);
        Assert.That(NoTime(stash), Is.EqualTo(NoTime(original)), "every field of the record comes back");
        Assert.That(t.Count, Is.Zero);

        // A realloc that failed puts it back.
        Assert.That(t.Insert(stash), Is.False);
        Assert.That(t.TryGet(original.Address, out IpRecord back), Is.True);
        Assert.That(NoTime(back), Is.EqualTo(NoTime(original)));
    }

    [Test]
    public void Remove_OfUnknownAddress_LeavesTheStashAlone()
    {
        var t = new AllocationTable();
        t.Insert(Rec(0x1000));
        IpRecord stash = Rec(0xdead0);
        Assert.That(t.Remove(0x2000, &stash), Is.False);
        Assert.That(NoTime(stash), Is.EqualTo(NoTime(Rec(0xdead0))));
        Assert.That(t.Count, Is.EqualTo(1));
    }

    [Test]
    public void Insert_OfExistingAddress_ReplacesAndReturnsTrue()
    {
        var t = new AllocationTable();
        Assert.That(t.Insert(Rec(0x4000, 10)), Is.False);
        Assert.That(t.Insert(Rec(0x4000, 20, stack: 3)), Is.True);
        Assert.That(t.Count, Is.EqualTo(1), "replacement does not count twice");
        Assert.That(t.TryGet(0x4000, out IpRecord r), Is.True);
        Assert.That(NoTime(r), Is.EqualTo(NoTime(Rec(0x4000, 20, stack: 3))));
        Assert.That(t.Remove(0x4000, null), Is.True);
        Assert.That(t.Remove(0x4000, null), Is.False, "only one copy was stored");
    }

    [Test]
    public void Growth_PastInitialCapacity_KeepsEveryRecord()
    {
        var t = new AllocationTable();
        long initialBytes = t.SlotBytes;
        var rng = new Random(1234);
        ulong[] addresses = DistinctAddresses(rng, 200_000).ToArray();
        foreach (ulong a in addresses)
            Assert.That(t.Insert(Rec(a, a & 0xfff)), Is.False);

        Assert.That(t.Count, Is.EqualTo(200_000));
        Assert.That(t.Failed, Is.False);
        Assert.That(t.SlotBytes, Is.GreaterThan(initialBytes), "the shards grew");
        // 70% maximum load: at least count / 0.7 slots.
        Assert.That(t.SlotBytes, Is.GreaterThanOrEqualTo(200_000L * sizeof(IpRecord) * 10 / 7));
        int missing = 0, wrong = 0;
        foreach (ulong a in addresses)
        {
            if (!t.TryGet(a, out IpRecord r)) missing++;
            else if (!NoTime(r).Equals(NoTime(Rec(a, a & 0xfff)))) wrong++;
        }
        Assert.That(missing, Is.Zero);
        Assert.That(wrong, Is.Zero);
        IpRecord[] snap = t.Snapshot();
        Assert.That(snap, Has.Length.EqualTo(200_000));
        Assert.That(snap.Select(r => r.Address), Is.EquivalentTo(addresses));
    }

    [TestCase(1, 2_000)]      // few live blocks: long stretches at low load
    [TestCase(2, 30_000)]     // pool around the first growth thresholds (64 shards x 716)
    [TestCase(3, 200_000)]    // many live blocks
    public void RandomWorkload_MatchesADictionary(int seed, int poolSize)
    {
        const int Ops = 500_000;
        var rng = new Random(seed);
        ulong[] pool = DistinctAddresses(rng, poolSize).ToArray();
        var model = new Dictionary<ulong, IpRecord>();
        var t = new AllocationTable();
        for (int op = 0; op < Ops; op++)
        {
            ulong a = pool[rng.Next(pool.Length)];
            int kind = rng.Next(100);
            if (kind < 48)
            {
                IpRecord rec = Rec(a, (ulong)op, (uint)op);
                bool replaced = t.Insert(rec);
                bool existed = model.ContainsKey(a);
                model[a] = rec;
                if (replaced != existed)
                    Assert.Fail($"op {op}: Insert({a:x}) returned {replaced}, model says {existed}");
            }
            else if (kind < 96)
            {
                IpRecord got = default;
                bool found = t.Remove(a, &got);
                bool existed = model.Remove(a, out IpRecord expected);
                if (found != existed || found && !NoTime(got).Equals(NoTime(expected)))
                    Assert.Fail($"op {op}: Remove({a:x}) = {found} size {got.Size}, model {existed} size {expected.Size}");
            }
            else
            {
                bool found = t.TryGet(a, out IpRecord got);
                bool existed = model.TryGetValue(a, out IpRecord expected);
                if (found != existed || found && !NoTime(got).Equals(NoTime(expected)))
                    Assert.Fail($"op {op}: TryGet({a:x}) = {found}, model {existed}");
            }
            if (op % 100_000 == 99_999)
                AssertSame(t, model, $"after op {op}");
        }
        AssertSame(t, model, "at the end");
        foreach (ulong a in pool)
            if (t.TryGet(a, out IpRecord got) != model.TryGetValue(a, out IpRecord expected) || !NoTime(got).Equals(NoTime(expected)))
                Assert.Fail($"TryGet({a:x}) disagrees with the model at the end");
        Assert.That(t.Failed, Is.False);
    }

    private static void AssertSame(AllocationTable t, Dictionary<ulong, IpRecord> model, string when)
    {
        Assert.That(t.Count, Is.EqualTo(model.Count), $"Count {when}");
        IpRecord[] snap = t.Snapshot();
        Assert.That(snap, Has.Length.EqualTo(model.Count), $"Snapshot length {when}");
        foreach (IpRecord r in snap)
            if (!model.TryGetValue(r.Address, out IpRecord m) || !NoTime(m).Equals(NoTime(r)))
                Assert.Fail($"{when}: the table holds {r.Address:x} (size {r.Size}) that the model does not");
    }

    // ---- probe runs that wrap around the end of a shard ------------------------------------------
    // These replicate AllocationTable's layout (the shard from the address's 4 MiB region, the
    // home slot of a fresh 1024-slot shard from the bits below the top ShardBits of the Fibonacci
    // hash of address >> 4) to build runs of colliding addresses that cross the end of the slot
    // array, where backward-shift deletion needs its cyclic range test. (Addresses below 4 MiB
    // are one region, so one shard.)

    private static ulong Hash(ulong address) => (address >> 4) * 0x9E3779B97F4A7C15UL;
    private static int HomeOf(ulong address) => (int)((Hash(address) << AllocationTable.ShardBits) >> 54);

    /// <summary>Addresses in region 0 whose home slot is one of homes, count of each.</summary>
    private static List<ulong> Colliding(int[] homes, int each)
    {
        var want = homes.ToDictionary(h => h, _ => each);
        var found = new List<ulong>();
        for (ulong k = 1; want.Values.Any(v => v > 0); k++)
        {
            ulong a = k << 4;
            if ((a >> Interposer.Native.Abi.ShardRegionShift) != 0)
                Assert.Fail("region 0 has too few addresses with those home slots");
            int home = HomeOf(a);
            if (want.TryGetValue(home, out int left) && left > 0)
            {
                want[home] = left - 1;
                found.Add(a);
            }
        }
        return found;
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    [TestCase(4)]
    [TestCase(5)]
    public void WrappingProbeRuns_SurviveEveryRemovalOrder(int seed)
    {
        // Homes 1021..1023 and 0..2: one run of 18 entries from slot 1021 through slot 14.
        List<ulong> run = Colliding(new[] { 1021, 1022, 1023, 0, 1, 2 }, 3);
        var rng = new Random(seed);
        var t = new AllocationTable();
        foreach (ulong a in run.OrderBy(_ => rng.Next()))
            t.Insert(Rec(a));
        var live = new HashSet<ulong>(run);
        foreach (ulong a in run.OrderBy(_ => rng.Next()))
        {
            Assert.That(t.Remove(a, null), Is.True, $"remove {a:x} (home {HomeOf(a)})");
            live.Remove(a);
            foreach (ulong b in run)
                Assert.That(t.TryGet(b, out _), Is.EqualTo(live.Contains(b)),
                            $"after removing {a:x} (home {HomeOf(a)}): {b:x} (home {HomeOf(b)})");
            Assert.That(t.Count, Is.EqualTo(live.Count));
            // Re-insert now and then, so holes are refilled mid-run.
            if (rng.Next(4) == 0 && live.Count > 0)
            {
                ulong again = run.First(x => !live.Contains(x));
                Assert.That(t.Insert(Rec(again)), Is.False);
                live.Add(again);
            }
        }
        foreach (ulong b in live.ToArray())
            Assert.That(t.Remove(b, null), Is.True);
        Assert.That(t.Count, Is.Zero);
        Assert.That(t.Snapshot(), Is.Empty);
    }

    // ---- the shard map ----------------------------------------------------------------------------

    private const ulong Region = 1UL << Interposer.Native.Abi.ShardRegionShift;

    [Test]
    public void Regions_GetShardsRoundRobin_InTheOrderTheyAreFirstUsed()
    {
        var t = new AllocationTable();
        const ulong Base = 0x7f0000000000UL;
        const int Usable = AllocationTable.ShardCount - 1;
        Assert.That(t.ShardOfAddress(Base + 0x10), Is.EqualTo(-1), "a region never used has no shard");
        for (int i = 0; i < Usable + 3; i++)
        {
            // Region i in reverse address order (first use decides, not the address), two blocks each.
            ulong region = Base + (ulong)(Usable + 3 - i) * Region;
            t.Insert(Rec(region + 0x40));
            t.Insert(Rec(region + Region - 0x40));
            Assert.That(t.ShardOfAddress(region + 0x40), Is.EqualTo(i % Usable), $"region {i}");
            Assert.That(t.ShardOfAddress(region + 0x123450), Is.EqualTo(i % Usable), $"region {i}, anywhere in it");
        }
        Assert.That(t.Count, Is.EqualTo(2 * (Usable + 3)));
        Assert.That(t.TryGet(Base + 0x40, out _), Is.False, "region 0 of Base was never used");
    }

    [Test]
    public void UnusedRegion_RemovesFindsAndUpdatesNothing()
    {
        var t = new AllocationTable();
        t.Insert(Rec(0x5000_0000_0040UL));
        ulong other = 0x6000_0000_0040UL;
        Assert.That(t.Remove(other, null), Is.False);
        Assert.That(t.RemoveStamped(other, ulong.MaxValue, null), Is.False);
        Assert.That(t.TryGet(other, out _), Is.False);
        Assert.That(t.Update(other, 0, 1), Is.False);
        Assert.That(t.UpdateFlags(other, 1, 1, 0), Is.False);
        var entries = new IpFreeEntry[] { new() { Address = other, Stamp = ulong.MaxValue }, new() { Address = 0x5000_0000_0040UL, Stamp = ulong.MaxValue } };
        fixed (IpFreeEntry* e = entries)
            Assert.That(t.RemoveStamped(e, entries.Length), Is.EqualTo(1), "the entry in a used region is applied, the other skipped");
        Assert.That(t.Count, Is.Zero);
        Assert.That(t.ShardOfAddress(other), Is.EqualTo(-1), "a removal does not assign a shard");
    }

    [Test]
    public void ConcurrentFirstUse_OfOneRegion_GivesEveryThreadTheSameShard()
    {
        // 8 threads race to insert the first blocks of the same fresh regions: each region must end
        // with one shard, and every record must be found through it.
        const int Threads = 8, Regions = 600;
        var t = new AllocationTable();
        using var start = new Barrier(Threads);
        var threads = new Thread[Threads];
        for (int k = 0; k < Threads; k++)
        {
            int id = k;
            threads[k] = new Thread(() =>
            {
                start.SignalAndWait();
                for (int r = 0; r < Regions; r++)
                    t.Insert(Rec(0x10_0000_0000UL + (ulong)r * Region + (ulong)(id + 1) * 0x100, tid: id));
            });
            threads[k].Start();
        }
        foreach (Thread th in threads)
            th.Join();
        Assert.That(t.Count, Is.EqualTo(Threads * Regions));
        for (int r = 0; r < Regions; r++)
        {
            ulong region = 0x10_0000_0000UL + (ulong)r * Region;
            int shard = t.ShardOfAddress(region);
            Assert.That(shard, Is.InRange(0, AllocationTable.ShardCount - 2), $"region {r}");
            for (int id = 0; id < Threads; id++)
                Assert.That(t.TryGet(region + (ulong)(id + 1) * 0x100, out _), Is.True, $"region {r}, thread {id}");
        }
    }

    // ---- concurrency ----------------------------------------------------------------------------

    [Test]
    public void ConcurrentInsertRemove_OnDisjointSets_EndsExact()
    {
        const int Threads = 8, PerThread = 40_000;
        var t = new AllocationTable();
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var start = new Barrier(Threads);
        var threads = new Thread[Threads];
        for (int k = 0; k < Threads; k++)
        {
            int id = k;
            threads[k] = new Thread(() =>
            {
                var rng = new Random(100 + id);
                // Thread id in bits 40..43: the sets are disjoint, the shards shared.
                ulong[] mine = Enumerable.Range(0, PerThread)
                    .Select(_ => ((ulong)id << 40) | ((ulong)rng.NextInt64(1, 1L << 36) << 4)).Distinct().ToArray();
                start.SignalAndWait();
                // Insert all, remove every other one, re-insert a quarter, check.
                foreach (ulong a in mine)
                    if (t.Insert(Rec(a, tid: id)))
                        errors.Enqueue($"thread {id}: {a:x} replaced something");
                for (int i = 0; i < mine.Length; i += 2)
                    if (!t.Remove(mine[i], null))
                        errors.Enqueue($"thread {id}: {mine[i]:x} not found for removal");
                for (int i = 0; i < mine.Length; i += 8)
                    t.Insert(Rec(mine[i], tid: id));
                for (int i = 0; i < mine.Length; i++)
                {
                    bool expected = i % 2 == 1 || i % 8 == 0;
                    if (t.TryGet(mine[i], out IpRecord r) != expected || expected && r.Tid != id)
                        errors.Enqueue($"thread {id}: {mine[i]:x} present={!expected}, expected {expected}");
                }
                Interlocked.Add(ref s_expected, mine.Length - (mine.Length + 1) / 2 + (mine.Length + 7) / 8);
            });
        }
        s_expected = 0;
        foreach (Thread th in threads) th.Start();
        foreach (Thread th in threads) Assert.That(th.Join(TimeSpan.FromMinutes(2)), Is.True, "a thread hung");
        Assert.That(errors.Take(10), Is.Empty);
        Assert.That(t.Count, Is.EqualTo(Interlocked.Read(ref s_expected)));
        Assert.That(t.Snapshot(), Has.Length.EqualTo(Interlocked.Read(ref s_expected)));
        Assert.That(t.Failed, Is.False);
    }

    private static long s_expected;

    [Test]
    public void LockAll_BlocksOtherThreads_UnlockAllReleasesThem()
    {
        var t = new AllocationTable();
        t.Insert(Rec(0x1000));
        t.LockAll();
        Task writer;
        try
        {
            writer = Task.Factory.StartNew(() =>
            {
                t.Insert(Rec(0x2000));
                t.Remove(0x1000, null);
            }, TaskCreationOptions.LongRunning);
            Assert.That(writer.Wait(300), Is.False, "an insert went through while every shard was locked");
        }
        finally
        {
            t.UnlockAll();
        }
        Assert.That(writer.Wait(TimeSpan.FromSeconds(30)), Is.True, "UnlockAll did not release the shards");
        Assert.That(t.TryGet(0x2000, out _), Is.True);
        Assert.That(t.TryGet(0x1000, out _), Is.False);

        // A second round trip on the same thread: every shard lock was really released.
        t.LockAll();
        t.UnlockAll();
        var rng = new Random(5);
        foreach (ulong a in DistinctAddresses(rng, 5_000))   // reaches every shard
            t.Insert(Rec(a));
        Assert.That(t.Count, Is.EqualTo(5_001));
    }

    // ---- batched frees: record times and stamped removals -----------------------------------

    private static ulong TimeOf(AllocationTable t, ulong address)
    {
        Assert.That(t.TryGet(address, out IpRecord r), Is.True, $"no record at {address:x}");
        return r.TimeNs;
    }

    [Test]
    public void RecordTimes_AreStrictlyIncreasingWithinAShard_AndNeverBelowTheGivenTime()
    {
        var t = new AllocationTable();
        // One 4 MiB region: one shard. Given times go down, repeat and jump.
        ulong[] given = { 5000, 5000, 10, 0, 9000, 9000, 1 };
        ulong previous = 0;
        for (int i = 0; i < given.Length; i++)
        {
            IpRecord r = Rec(0x7f0000000000 + (ulong)i * 64);
            r.TimeNs = given[i];
            t.Insert(r);
            ulong time = TimeOf(t, r.Address);
            Assert.That(time, Is.GreaterThanOrEqualTo(given[i]), $"insert {i}");
            Assert.That(time, Is.GreaterThan(previous), $"insert {i}");
            previous = time;
        }
        Assert.That(TimeOf(t, 0x7f0000000000), Is.EqualTo(5000), "a time above the shard's last is kept as given");
        // Replacing a record at the same address gives it a later time too.
        t.Insert(Rec(0x7f0000000000));
        Assert.That(TimeOf(t, 0x7f0000000000), Is.GreaterThan(previous));
    }

    [Test]
    public void RemoveStamped_TakesOnlyARecordAsOldAsItsStamp()
    {
        var t = new AllocationTable();
        const ulong p = 0x7f0000001000;
        t.Insert(Rec(p, 32));
        ulong stamp = TimeOf(t, p);                    // what free(p) would read: the shard's last time
        t.Insert(Rec(p, 48, stack: 9));                // glibc hands p out again before the removal
        Assert.That(t.RemoveStamped(p, stamp, null), Is.False, "the new owner's record must stay");
        Assert.That(t.TryGet(p, out IpRecord r), Is.True);
        Assert.That(r.Size, Is.EqualTo(48));
        Assert.That(t.RemoveStamped(p, TimeOf(t, p), null), Is.True, "its own free's stamp takes it");
        Assert.That(t.RemoveStamped(p, ulong.MaxValue - 1, null), Is.False, "applied twice: nothing left to take");
        Assert.That(t.Count, Is.Zero);
    }

    [Test]
    public void RemoveStampedThenInsert_AppliesTheBatchAcrossShards_ThenInserts()
    {
        var t = new AllocationTable();
        ulong[] live = { 0x7f0000002000, 0x7f1000002000, 0x7f2000002000, 0x7f0000002040 }; // three regions
        foreach (ulong a in live)
            t.Insert(Rec(a));
        var entries = stackalloc IpFreeEntry[5];
        for (int i = 0; i < live.Length; i++)
            entries[i] = new IpFreeEntry { Address = live[i], Stamp = TimeOf(t, live[i]) };
        entries[4] = new IpFreeEntry { Address = 0, Stamp = ulong.MaxValue };   // a cancelled entry
        // The last freed address comes back before the batch is applied: its new record stays.
        t.Insert(Rec(0x7f0000002040, 99));
        IpRecord old;
        ReplacedKind kind;
        bool replaced = t.RemoveStampedThenInsert(entries, 5, Rec(0x7f0000002080, 7), &old, &kind);
        Assert.That(replaced, Is.False);
        Assert.That(t.Count, Is.EqualTo(2), "three removals applied, one skipped, one insert");
        Assert.That(t.TryGet(0x7f0000002040, out IpRecord kept), Is.True);
        Assert.That(kept.Size, Is.EqualTo(99));
        Assert.That(t.TryGet(0x7f0000002080, out _), Is.True);
        Assert.That(t.TryGet(0x7f1000002000, out _), Is.False);
    }

    [Test]
    public void RemoveStampedThenInsert_OfTheFreedAddressItself_OverwritesInPlace()
    {
        var t = new AllocationTable();
        const ulong p = 0x7f0000003000;
        t.Insert(Rec(p, 32));
        t.Insert(Rec(p + 0x40, 32));
        var entry = new IpFreeEntry { Address = p, Stamp = TimeOf(t, p + 0x40) };  // free(p), then malloc -> p
        IpRecord old;
        ReplacedKind kind = (ReplacedKind)42;
        Assert.That(t.RemoveStampedThenInsert(&entry, 1, Rec(p, 64, stack: 5), &old, &kind), Is.False,
                    "the thread's own freed block is not a replaced record");
        Assert.That(kind, Is.EqualTo((ReplacedKind)42), "no stale check for it");
        Assert.That(t.Count, Is.EqualTo(2));
        Assert.That(t.TryGet(p, out IpRecord r), Is.True);
        Assert.That(r.Size, Is.EqualTo(64));
        Assert.That(r.TimeNs, Is.GreaterThan(entry.Stamp), "the new block is younger than the free");

        // A record at p newer than the stamp is someone else's: replaced, and asked about.
        t.Insert(Rec(p, 80));
        var stale = new IpFreeEntry { Address = p, Stamp = entry.Stamp };
        Assert.That(t.RemoveStampedThenInsert(&stale, 1, Rec(p, 96), &old, &kind), Is.True);
        Assert.That(old.Size, Is.EqualTo(80));
        Assert.That(kind, Is.EqualTo(ReplacedKind.Stale), "no batch holds its removal (no shim here)");
    }
}
