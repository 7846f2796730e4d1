// In-process walks of live C call chains (see UnwindProbe), compared with glibc backtrace() and
// libunwind, plus bounds and cache behaviour. frames[0] differs from the references by design
// (different call sites in the same function); frames[1..] must match exactly.
//
// The chains end in the test's JIT-compiled code, which has no CFI: the walk stops at the first
// return address into it, which is the probe's own return address (OuterRa).

using System;
using System.Diagnostics;
using System.Linq;
using System.Threading;
using Interposer.Unwinding;
using NUnit.Framework;

namespace Interposer.Tests.Unwinding;

[TestFixture]
public unsafe class FastUnwinderTests
{
    [Test]
    public void Qsort_WalksThroughLibcFramesWithoutFramePointers()
    {
        ProbeResult r = UnwindProbe.Run(ProbeKind.Qsort);

        int outer = Array.IndexOf(r.Frames, r.OuterRa);
        Assert.That(outer, Is.GreaterThanOrEqualTo(4),
            "comparator, libc's msort/qsort_r frames and probe_qsort must all be recovered: " + Format(r));
        AssertMatchesReference(r, r.Reference, outer + 1, "glibc backtrace()");
        if (r.Libunwind != null)
            AssertMatchesReference(r, r.Libunwind, outer + 1, "libunwind");
    }

    [Test]
    public void Recursion_StopsAtMaxFrames()
    {
        ulong[]? capped = null;
        ProbeResult r = UnwindProbe.Run(ProbeKind.Recurse, 50, p =>
        {
            capped = p.Walk(16);
            return p.Walk(ProbeCapture.Max);
        });

        Assert.That(capped!, Has.Length.EqualTo(16));
        Assert.That(capped!, Is.EqualTo(r.Frames.Take(16)));
        AssertMatchesReference(r, r.Reference, 16, "glibc backtrace()");
        // capture_here <- recurse(0) <- 50 x recurse <- probe_recurse <- test: OuterRa at 53.
        Assert.That(Array.IndexOf(r.Frames, r.OuterRa), Is.EqualTo(50 + 3), Format(r));
        AssertMatchesReference(r, r.Reference, 50 + 4, "glibc backtrace()");
    }

    [Test]
    public void Alloca_FollowsRbpBasedCfaAndRestoresRbp()
    {
        ProbeResult r = UnwindProbe.Run(ProbeKind.Alloca, 200);

        // capture_here <- with_alloca(depth 0) <- with_alloca(depth 1) <- probe_alloca <- test.
        // Both with_alloca frames have rbp-based CFAs; reaching the outer one needs the rbp the
        // inner one saved.
        Assert.That(r.Frames.Length, Is.GreaterThanOrEqualTo(5), Format(r));
        Assert.That(FastUnwinder.ResolveRule(r.Frames[1] - 1) & UnwindRule.CfaFromRbp, Is.Not.Zero, "inner with_alloca");
        Assert.That(FastUnwinder.ResolveRule(r.Frames[2] - 1) & UnwindRule.CfaFromRbp, Is.Not.Zero, "outer with_alloca");
        Assert.That(r.Frames[4], Is.EqualTo(r.OuterRa), Format(r));
        AssertMatchesReference(r, r.Reference, 5, "glibc backtrace()");
    }

    [Test]
    public void CallAsLastInstruction_IsLookedUpAtReturnAddressMinusOne()
    {
        ProbeResult r = UnwindProbe.Run(ProbeKind.CallAtEnd);

        // capture_here <- probe_last_call_target <- probe_last_call <- probe_call_at_end <- test.
        // probe_last_call's return address is the first byte of probe_after_last_call, whose own
        // rule (CFA = rsp+8) is wrong for it; the right one is at the call (CFA = rsp+16).
        Assert.That(r.Frames.Length, Is.GreaterThanOrEqualTo(5), Format(r));
        Assert.That(r.Frames[2], Is.EqualTo(UnwindProbe.Export("probe_after_last_call")), Format(r));
        Assert.That(r.Frames[4], Is.EqualTo(r.OuterRa), Format(r));
        AssertMatchesReference(r, r.Reference, 5, "glibc backtrace()");
    }

    [Test]
    public void NewThread_EndsAtOutermostFrame()
    {
        ProbeResult r = UnwindProbe.Run(ProbeKind.Thread);

        // capture_here <- thread_main <- start_thread <- clone3 (RA undefined): the whole stack.
        Assert.That(r.Frames, Has.Length.EqualTo(r.Reference.Length), Format(r));
        AssertMatchesReference(r, r.Reference, r.Reference.Length, "glibc backtrace()");
        Assert.That(FastUnwinder.ResolveRule(r.Frames[^1] - 1), Is.EqualTo(UnwindRule.Outermost));
    }

    [Test]
    public void SignalHandler_StopsAtSignalTrampoline()
    {
        ProbeResult r = UnwindProbe.Run(ProbeKind.Signal);

        // capture_here is tail-called from the handler, so frame 1 is __restore_rt. Its CFI is a
        // CFA expression in an 'S' CIE: we stop there, where glibc and libunwind go on.
        Assert.That(r.Frames, Has.Length.EqualTo(2), Format(r));
        Assert.That(r.Frames[1], Is.EqualTo(r.Reference[1]));
        Assert.That(FastUnwinder.ResolveRule(r.Frames[1] - 1), Is.EqualTo(UnwindRule.Stop));
        Assert.That(r.Reference.Length, Is.GreaterThan(2));
    }

    [Test]
    public void StackHiJustAboveSp_StopsWithoutReadingFurther()
    {
        ulong[][] truncated = Array.Empty<ulong[]>();
        ProbeResult r = UnwindProbe.Run(ProbeKind.Recurse, 10, p =>
        {
            truncated = Enumerable.Range(0, 256).Select(i => p.Walk(64, p.StackLo, p.Sp + (ulong)(8 * i))).ToArray();
            return p.Walk(64);
        });

        Assert.That(truncated[0], Has.Length.EqualTo(1), "stackHi == sp: nothing above sp may be read");
        Assert.That(truncated[1], Has.Length.EqualTo(1), "stackHi == sp + 8: capture_here's RA is above that");
        for (int i = 1; i < truncated.Length; i++)
        {
            Assert.That(truncated[i].Length, Is.GreaterThanOrEqualTo(truncated[i - 1].Length), "monotonic in stackHi");
            Assert.That(truncated[i], Is.EqualTo(r.Frames.Take(truncated[i].Length)), "a prefix of the full walk");
        }
        Assert.That(truncated.Select(t => t.Length).Distinct().Count(), Is.GreaterThan(10), "each frame appears as stackHi rises");
        Assert.That(truncated[^1], Is.EqualTo(r.Frames), "2 KiB above sp hold the whole 10-deep chain");
    }

    [Test]
    public void StackLoAboveSp_StopsImmediately()
    {
        ProbeResult r = UnwindProbe.Run(ProbeKind.Qsort, 0, p => p.Walk(64, p.StackHi - 8, p.StackHi));
        Assert.That(r.Frames, Has.Length.EqualTo(1));
    }

    [Test]
    public void Initialize_MapsTheCacheAndIsIdempotent()
    {
        FastUnwinder.Initialize();
        FastUnwinder.Initialize();
        Assert.That(RuleCache.GetTable() != null, Is.True);
    }

    [Test]
    public void ArgumentEdges()
    {
        ulong* frames = stackalloc ulong[4];
        Assert.That(FastUnwinder.Unwind(0, 0x1000, 0, 0x1000, 0x2000, frames, 4), Is.EqualTo(0), "pc 0");
        Assert.That(FastUnwinder.Unwind(0x1234, 0x1000, 0, 0x1000, 0x2000, frames, 0), Is.EqualTo(0), "maxFrames 0");
        Assert.That(FastUnwinder.Unwind(0x1234, 0x1000, 0, 0x1000, 0x2000, null, 4), Is.EqualTo(0), "no buffer");
        Assert.That(FastUnwinder.Unwind(0x1234, 0x1000, 0, 0x2000, 0x1000, frames, 4), Is.EqualTo(1), "empty stack");
        Assert.That(frames[0], Is.EqualTo(0x1234UL));
        // A PC in no loaded object: frame 0 only, and nothing on the (bogus) stack is touched.
        Assert.That(FastUnwinder.Unwind(0x1234, 0x1000, 0, 0x1000, 0x2000, frames, 4), Is.EqualTo(1), "no CFI");
    }

    // Random stacks in a buffer fenced by PROT_NONE pages: real return addresses (so walks go on
    // for several frames), pointers at and across the edges, misaligned values and junk. Any read
    // outside [lo, hi) kills the test process.
    [Test]
    public void RandomStacks_NeverReadOutsideBounds()
    {
        ulong[] pcs = UnwindProbe.Run(ProbeKind.Qsort).Frames
            .Concat(UnwindProbe.Run(ProbeKind.Alloca, 64).Frames)
            .Concat(UnwindProbe.Run(ProbeKind.Thread).Frames)
            .Distinct().ToArray();
        const int Size = 8192;
        byte* buffer = UnwindProbe.GuardedAlloc(Size);
        Assert.That((nint)buffer, Is.Not.Zero);
        try
        {
            ulong lo = (ulong)buffer, hi = lo + Size;
            var random = new Random(12345);
            ulong Pick() => random.Next(6) switch
            {
                0 or 1 => pcs[random.Next(pcs.Length)],
                2 => lo + (ulong)random.Next(Size / 8) * 8,
                3 => hi - 64 + (ulong)random.Next(128),           // across the top edge
                4 => lo - 64 + (ulong)random.Next(128),           // across the bottom edge
                _ => (ulong)random.NextInt64(),
            };

            ulong* frames = stackalloc ulong[64];
            long totalFrames = 0;
            const int Walks = 20000;
            for (int i = 0; i < Walks; i++)
            {
                if (i % 64 == 0)
                {
                    for (int w = 0; w < Size / 8; w++)
                        ((ulong*)buffer)[w] = Pick();
                }
                ulong sp = random.Next(4) == 0 ? hi - 8 * (ulong)random.Next(4) : lo + (ulong)random.Next(Size / 8) * 8;
                int n = FastUnwinder.Unwind(pcs[random.Next(pcs.Length)], sp, Pick(), lo, hi, frames, 64);
                Assert.That(n, Is.InRange(1, 64));
                totalFrames += n;
            }
            Assert.That(totalFrames, Is.GreaterThan(Walks * 3 / 2), "the walks should usually go past frame 1");
        }
        finally
        {
            UnwindProbe.GuardedFree(buffer, Size);
        }
    }

    [Test]
    public void SecondWalk_IsServedFromCache()
    {
        ulong[] first = Array.Empty<ulong>();
        long firstMisses = 0, secondMisses = 0, secondHits = 0;
        RuleCache.Clear();
        RuleCache.ResetStats();
        RuleCache.s_collectStats = true;
        try
        {
            ProbeResult r = UnwindProbe.Run(ProbeKind.Recurse, 20, p =>
            {
                first = p.Walk(64);
                firstMisses = RuleCache.s_misses;
                RuleCache.ResetStats();
                ulong[] second = p.Walk(64);
                secondMisses = RuleCache.s_misses;
                secondHits = RuleCache.s_hits;
                return second;
            });

            Assert.That(r.Frames, Is.EqualTo(first));
            Assert.That(firstMisses, Is.GreaterThan(0));
            // 20 recursion frames share a return address: far fewer misses than frames.
            Assert.That(firstMisses, Is.LessThan(first.Length / 2));
            Assert.That(secondMisses, Is.Zero);
            // One lookup per frame, including the last one, which returned Stop (JIT code).
            Assert.That(secondHits, Is.EqualTo(first.Length));
            foreach (ulong pc in r.Frames)
                Assert.That(RuleCache.Lookup(RuleCache.GetTable(), pc), Is.EqualTo(FastUnwinder.ResolveRule(pc - 1)), "keyed by return address");
        }
        finally
        {
            RuleCache.s_collectStats = false;
        }
    }

    // Reports the cost per frame; asserts nothing about time (run with -c Release for real numbers).
    [Test]
    public void MeasureCost()
    {
        double hitNs = 0, missNs = 0;
        int frameCount = 0;
        UnwindProbe.Run(ProbeKind.Recurse, 50, p =>
        {
            ulong[] frames = p.Walk(64);
            frameCount = frames.Length;
            ulong* buffer = stackalloc ulong[64];
            // Warm the cache and let tiered JIT install optimized code (it tiers up in the
            // background after ~100 ms); NativeAOT has no tiers, this is what it runs from the start.
            for (int round = 0; round < 5; round++)
            {
                for (int i = 0; i < 2000; i++)
                    FastUnwinder.Unwind(p.Pc, p.Sp, p.Bp, p.StackLo, p.StackHi, buffer, 64);
                Thread.Sleep(150);
            }
            RuleCache.ResetStats();
            RuleCache.s_collectStats = true;
            FastUnwinder.Unwind(p.Pc, p.Sp, p.Bp, p.StackLo, p.StackHi, buffer, 64);
            RuleCache.s_collectStats = false;
            TestContext.Out.WriteLine($"warm walk: {RuleCache.s_hits} hits, {RuleCache.s_misses} misses");

            // Minimum over rounds: the machine is shared, the minimum is the code's cost.
            hitNs = double.MaxValue;
            for (int round = 0; round < 50; round++)
            {
                const int Iterations = 2000;
                long start = Stopwatch.GetTimestamp();
                for (int i = 0; i < Iterations; i++)
                    FastUnwinder.Unwind(p.Pc, p.Sp, p.Bp, p.StackLo, p.StackHi, buffer, 64);
                hitNs = Math.Min(hitNs, Stopwatch.GetElapsedTime(start).TotalNanoseconds / ((double)Iterations * frames.Length));
            }

            missNs = double.MaxValue;
            for (int round = 0; round < 20; round++)
            {
                const int Rounds = 50;
                long start = Stopwatch.GetTimestamp();
                for (int i = 0; i < Rounds; i++)
                {
                    foreach (ulong pc in frames)
                        FastUnwinder.ResolveRule(pc - 1);
                }
                missNs = Math.Min(missNs, Stopwatch.GetElapsedTime(start).TotalNanoseconds / ((double)Rounds * frames.Length));
            }
            return frames;
        });
        TestContext.Out.WriteLine($"FastUnwinder: {frameCount} frames; hit {hitNs:F2} ns/frame; miss (resolve) {missNs:F1} ns/frame");
        Assert.That(frameCount, Is.GreaterThan(50));
    }

    private static void AssertMatchesReference(ProbeResult r, ulong[] reference, int count, string what)
    {
        Assert.That(r.Frames.Length, Is.GreaterThanOrEqualTo(count), Format(r));
        Assert.That(reference.Length, Is.GreaterThanOrEqualTo(count), what + " is shorter: " + Format(r));
        Assert.That(r.Frames.Skip(1).Take(count - 1), Is.EqualTo(reference.Skip(1).Take(count - 1)),
            $"frames 1..{count - 1} vs {what}: " + Format(r));
    }

    private static string Format(ProbeResult r)
    {
        string Hex(ulong[]? a) => a == null ? "(none)" : string.Join(" ", a.Select(x => x.ToString("x")));
        return $"\n  ours:      {Hex(r.Frames)}\n  backtrace: {Hex(r.Reference)}\n  libunwind: {Hex(r.Libunwind)}\n  outer RA:  {r.OuterRa:x}";
    }
}
