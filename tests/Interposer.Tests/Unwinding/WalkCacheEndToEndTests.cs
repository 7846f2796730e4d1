// WalkCacheEndToEndTests.cs — the per-thread walk reuse (WalkCache) must give exactly the stacks
// a fresh walk gives: same-depth calls from different sites, alternating callers, recursion of
// varying depth. libunwind (no reuse) is the reference.
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.Unwinding;

public class WalkCacheEndToEndTests
{
    private static List<string> LeafStacks(string dumpPath, string leaf = "leaf_alloc")
    {
        var stacks = new List<string>();
        List<string>? current = null;
        foreach (string line in File.ReadLines(dumpPath))
        {
            if (line.StartsWith("live block", System.StringComparison.Ordinal))
            {
                if (current != null) stacks.Add(string.Join(" < ", current));
                current = new List<string>();
                continue;
            }
            Match m = Regex.Match(line, @"\] (\S+) \(");
            if (m.Success && current != null)
                current.Add(m.Groups[1].Value);
        }
        if (current != null) stacks.Add(string.Join(" < ", current));
        return stacks.Where(s => s.StartsWith(leaf, System.StringComparison.Ordinal)).OrderBy(s => s).ToList();
    }

    private static string NewDumpDirectory()
    {
        string dir = Path.Combine(Path.GetTempPath(), "walkcache-" + System.Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    // Runs program with the options under test, then with the reference's, each writing its
    // live-block dump into dir (fast.txt, reference.txt); both must exit 0.
    private static void RunFastAndReference(string program, string dir, string fastOptions, string referenceOptions)
    {
        var env = new Dictionary<string, string> { ["DUMP_PATH"] = Path.Combine(dir, "fast.txt") };
        RunResult fast = Programs.Run(program, "", preload: true, options: fastOptions, env: env);
        env["DUMP_PATH"] = Path.Combine(dir, "reference.txt");
        RunResult reference = Programs.Run(program, "", preload: true, options: referenceOptions, env: env);
        Assert.That(fast.ExitCode, Is.EqualTo(0), fast.ToString());
        Assert.That(reference.ExitCode, Is.EqualTo(0), reference.ToString());
    }

    // The dump's statistics: "backtraces walked: W, remembered: R", events whose backtrace the
    // core walked, and those it found in the walk cache or the memo (the rest were whole hits the
    // shim found).
    private static (long Walked, long Remembered) Backtraces(string dumpPath)
    {
        Match m = Regex.Match(File.ReadAllText(dumpPath), @"backtraces walked: (\d+), remembered: (\d+)");
        Assert.That(m.Success, Is.True, $"{dumpPath} has the statistics line");
        return (long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture),
                long.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture));
    }

    [TestCase("fast")]
    [TestCase("fast:max_frames=3")]
    public void ReusedWalks_MatchFreshWalks(string options)
    {
        string program = Programs.Build("walkcache/same_depth.c");
        string dir = NewDumpDirectory();
        try
        {
            string maxFrames = options.Contains("max_frames") ? ":max_frames=3" : "";
            RunFastAndReference(program, dir, "unwinder=" + options, "unwinder=libunwind" + maxFrames);

            List<string> got = LeafStacks(Path.Combine(dir, "fast.txt"));
            List<string> want = LeafStacks(Path.Combine(dir, "reference.txt"));
            Assert.That(got, Has.Count.EqualTo(22), "every allocation of the program is listed");
            Assert.That(got, Is.EqualTo(want));
            if (maxFrames.Length == 0)
            {
                // The distinct call sites in main really are told apart.
                Assert.That(got.Where(s => !s.Contains("outer_")).Select(s => s.Split(" < ").First(f => f.StartsWith("main+", System.StringComparison.Ordinal))).Distinct().Count(),
                            Is.EqualTo(8));
                Assert.That(got.Count(s => s.Contains("via_vla")), Is.EqualTo(6), "the rbp-framed allocations");
                Assert.That(got.Count(s => s.Contains("outer_x")), Is.EqualTo(2), "differ only in the outer frames");
                Assert.That(got.Count(s => s.Contains("outer_y")), Is.EqualTo(2), "differ only in the outer frames");
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    // Random chains, 0..45 levels deep (past the cache's 32): every stack the reusing walker
    // records equals libunwind's, at the cache's depth limit, the default and a tiny one.
    [TestCase(32)]
    [TestCase(16)]
    [TestCase(3)]
    public void RandomDepthChains_MatchFreshWalks(int maxFrames)
    {
        string program = Programs.Build("walkcache/random_depth.c");
        string dir = NewDumpDirectory();
        try
        {
            RunFastAndReference(program, dir, $"unwinder=fast:max_frames={maxFrames}", $"unwinder=libunwind:max_frames={maxFrames}");

            List<string> got = LeafStacks(Path.Combine(dir, "fast.txt"));
            List<string> want = LeafStacks(Path.Combine(dir, "reference.txt"));
            Assert.That(got, Has.Count.EqualTo(600), "every allocation of the program is listed");
            Assert.That(got.Max(s => s.Split(" < ").Length), Is.EqualTo(maxFrames), "the deepest chains reach the limit");
            Assert.That(got.Distinct().Count(), Is.GreaterThan(maxFrames == 3 ? 4 : 100), "the chains really differ");
            Assert.That(got, Is.EqualTo(want));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    // Two chains through one call site at one stack pointer, told apart only by rbp: the reuse
    // of the previous walk and the memo must both check it (libunwind is the reference).
    [Test]
    public void SameStackPointerOtherFramePointer_IsToldApart()
    {
        string program = Programs.Build("walkcache/same_sp_other_rbp.c");
        string dir = NewDumpDirectory();
        try
        {
            RunFastAndReference(program, dir, "unwinder=fast", "unwinder=libunwind");

            List<string> Stacks(string file) => LeafStacks(Path.Combine(dir, file), "inner");
            List<string> got = Stacks("fast.txt");
            List<string> want = Stacks("reference.txt");
            Assert.That(got, Has.Count.EqualTo(8), "every allocation from inner is listed");
            Assert.That(got.Count(s => s.Contains(" < padded+")), Is.EqualTo(4), "chain A");
            Assert.That(got.Count(s => s.Contains(" < direct+")), Is.EqualTo(4), "chain B");
            Assert.That(got, Is.EqualTo(want));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
    // One call chain, 5000 mallocs: the shim finds the stored walk still valid (WHOLE HIT in
    // interposer_abi.h) and hands the core its stack id, so the core walks only a handful of
    // times; the stacks are still exactly libunwind's. With libunwind (no walk cache) the core
    // takes every backtrace itself: the count is real.
    [Test]
    public void RepeatedCallChain_IsAWholeHitInTheShim()
    {
        string program = Programs.Build("walkcache/repeat.c");
        string dir = NewDumpDirectory();
        try
        {
            RunFastAndReference(program, dir, "unwinder=fast", "unwinder=libunwind");

            List<string> got = LeafStacks(Path.Combine(dir, "fast.txt"));
            Assert.That(got, Has.Count.EqualTo(100), "the blocks kept");
            Assert.That(got.Distinct().Count(), Is.EqualTo(1), "one call chain");
            Assert.That(got[0], Does.Contain("leaf_alloc").And.Contain(" < middle+").And.Contain(" < outer+").And.Contain(" < main+"));
            Assert.That(got, Is.EqualTo(LeafStacks(Path.Combine(dir, "reference.txt"))));

            (long walked, long remembered) = Backtraces(Path.Combine(dir, "fast.txt"));
            Assert.That(walked + remembered, Is.LessThan(100), "5000 mallocs from one chain: whole hits in the shim");
            Assert.That(Backtraces(Path.Combine(dir, "reference.txt")).Walked, Is.GreaterThanOrEqualTo(5000),
                        "libunwind: the core walks every backtrace");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
    // Six outer chains through one call site at one depth, in turn (sqlite3's shape): the walk
    // memo holds them all (eight ways a set; with four, the six evicted one another and every
    // malloc walked), and the stacks are libunwind's.
    [Test]
    public void ManyChainsThroughOneCallSite_AreRemembered()
    {
        string program = Programs.Build("walkcache/many_chains.c");
        string dir = NewDumpDirectory();
        try
        {
            RunFastAndReference(program, dir, "unwinder=fast", "unwinder=libunwind");
            List<string> got = LeafStacks(Path.Combine(dir, "fast.txt"));
            Assert.That(got, Has.Count.EqualTo(60), "the blocks kept");
            Assert.That(got.Select(s => s.Split(" < ").First(f => f.StartsWith("chain_", System.StringComparison.Ordinal))[..7]).Distinct().Count(),
                        Is.EqualTo(6), "six chains");
            Assert.That(got, Is.EqualTo(LeafStacks(Path.Combine(dir, "reference.txt"))));
            (long walked, long remembered) = Backtraces(Path.Combine(dir, "fast.txt"));
            Assert.That(walked, Is.LessThan(1000), "18000 mallocs through six recurring chains: few walks");
            Assert.That(remembered, Is.GreaterThan(17000), "the rest were remembered");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
