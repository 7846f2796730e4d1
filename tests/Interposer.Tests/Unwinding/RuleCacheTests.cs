// RuleCache: exact keying (index + tag identify one PC), eviction on collision, uncacheable keys,
// and torn-entry freedom under concurrent writers and readers. Uses the process-wide table and
// clears it afterwards.

using System;
using System.Collections.Generic;
using System.Threading;
using Interposer.Unwinding;
using NUnit.Framework;

namespace Interposer.Tests.Unwinding;

[TestFixture]
public unsafe class RuleCacheTests
{
    [TearDown]
    public void ClearCache() => RuleCache.Clear();

    private static ulong* Table()
    {
        ulong* table = RuleCache.GetTable();
        Assert.That(table != null, Is.True, "mmap of the rule table failed");
        return table;
    }

    [Test]
    public void StoredRule_IsFoundOnlyForItsKey()
    {
        ulong* table = Table();
        RuleCache.Clear();
        const ulong Key = 0x7f12_3456_789a;
        uint rule = UnwindRule.MakeWalk(false, 48, 8, 16);
        RuleCache.Store(table, Key, rule);

        Assert.That(RuleCache.Lookup(table, Key), Is.EqualTo(rule));
        Assert.That(RuleCache.Lookup(table, Key + 1), Is.Zero);
        Assert.That(RuleCache.Lookup(table, Key + 0x10000), Is.Zero, "same low bits, next tag");
        Assert.That(RuleCache.CountOccupied(), Is.EqualTo(1));
        RuleCache.Clear();
        Assert.That(RuleCache.Lookup(table, Key), Is.Zero);
        Assert.That(RuleCache.CountOccupied(), Is.Zero);
    }

    [Test]
    public void CollidingKey_EvictsAndNeverAliases()
    {
        ulong* table = Table();
        const ulong Key = 0x5555_1234_abcd;
        const ulong Other = Key + 0x10000;   // same slot, next tag
        Assert.That(RuleCache.Index(Other), Is.EqualTo(RuleCache.Index(Key)));

        RuleCache.Store(table, Key, UnwindRule.MakeWalk(false, 16, 8, 0));
        Assert.That(RuleCache.Lookup(table, Other), Is.Zero, "a colliding key must not see another PC's rule");
        RuleCache.Store(table, Other, UnwindRule.Stop);
        Assert.That(RuleCache.Lookup(table, Other), Is.EqualTo(UnwindRule.Stop));
        Assert.That(RuleCache.Lookup(table, Key), Is.Zero, "evicted");
    }

    [TestCase(0x7ffd_fffe_ffffUL)]
    [TestCase(0x0000_0040_1000UL)]
    [TestCase(0xffff_ffff_ffffUL)]
    public void IndexAndTag_AreTheKey(ulong key)
    {
        // The entry's tag (key >> 16) and its slot together give back the key: no aliasing.
        Assert.That(((key >> RuleCache.IndexBits) << RuleCache.IndexBits) | RuleCache.Index(key), Is.EqualTo(key));
        Assert.That(RuleCache.Index(key), Is.LessThan((nuint)RuleCache.EntryCount));
    }

    [Test]
    public void KeysAbove48Bits_AreNeverCached()
    {
        ulong* table = Table();
        const ulong Key = 0x0001_0000_0000_1000;
        RuleCache.Store(table, Key, UnwindRule.Outermost);
        Assert.That(RuleCache.Lookup(table, Key), Is.Zero);
        Assert.That(RuleCache.CountOccupied(), Is.Zero);
    }

    [TestCase(false, 8, 8, 0)]
    [TestCase(true, 16, 8, 16)]
    [TestCase(false, 0x7fff8, 120, 2040)]
    public void WalkRule_DecodesToItsParts(bool fromRbp, int cfaOffset, int raDistance, int rbpDistance)
    {
        uint rule = UnwindRule.MakeWalk(fromRbp, cfaOffset, raDistance, rbpDistance);
        Assert.That(rule & UnwindRule.KindMask, Is.EqualTo(UnwindRule.KindWalk));
        Assert.That((rule & UnwindRule.CfaFromRbp) != 0, Is.EqualTo(fromRbp));
        Assert.That((rule & UnwindRule.RbpSaved) != 0, Is.EqualTo(rbpDistance != 0));
        Assert.That(UnwindRule.CfaOffset(rule), Is.EqualTo((ulong)cfaOffset));
        Assert.That(UnwindRule.RaDistance(rule), Is.EqualTo((ulong)raDistance));
        Assert.That(UnwindRule.RbpDistance(rule), Is.EqualTo((ulong)rbpDistance));
    }

    // Writers store rule(key) for keys that collide heavily; readers check that every hit returns
    // exactly rule(key). A torn or aliased entry would pair a tag with another key's rule.
    [Test]
    public void ConcurrentStoresAndLookups_NeverTear()
    {
        ulong* table = Table();
        static uint RuleFor(ulong key) => UnwindRule.MakeWalk((key & 1) != 0, (long)(key % 4096) * 8, 8, (long)((key >> 3) % 200 + 1) * 8);
        var stop = new ManualResetEventSlim();
        long hits = 0, wrong = 0;
        var threads = new List<Thread>();
        for (int t = 0; t < 4; t++)
        {
            int seed = t;
            threads.Add(new Thread(() =>
            {
                var random = new Random(seed);
                long localHits = 0, localWrong = 0;
                while (!stop.IsSet)
                {
                    for (int i = 0; i < 4096; i++)
                    {
                        // 2^12 slots' worth of low bits x 64 tags: constant eviction.
                        ulong key = 0x7f00_0000_0000 + ((ulong)random.Next(64) << 16) + (ulong)random.Next(4096);
                        if ((i & 1) == 0)
                        {
                            RuleCache.Store(table, key, RuleFor(key));
                        }
                        else
                        {
                            uint found = RuleCache.Lookup(table, key);
                            if (found != 0)
                            {
                                localHits++;
                                if (found != RuleFor(key))
                                    localWrong++;
                            }
                        }
                    }
                }
                Interlocked.Add(ref hits, localHits);
                Interlocked.Add(ref wrong, localWrong);
            }));
        }
        threads.ForEach(t => t.Start());
        Thread.Sleep(300);
        stop.Set();
        threads.ForEach(t => t.Join());

        Assert.That(wrong, Is.Zero);
        Assert.That(hits, Is.GreaterThan(1000));
    }
}
