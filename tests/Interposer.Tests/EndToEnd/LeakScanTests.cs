// LeakScanTests.cs — the leak scan end to end (issue 3): tests/programs/scan/roots.c and cxx.cpp
// run under the library, print "KEEP 0x.." for blocks something still points to and "LEAK 0x.."
// for blocks nothing does, then scan (interposer_scan, the scan signal, a timer, or exit). Every
// case checks the report exactly: each LEAK listed, no KEEP listed, and no other block either.
// Each root-set rule is switched off once to show that the block it holds then appears.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class LeakScanTests
{
    private static string Roots => Programs.Build("scan/roots.c");
    private static string TlsLib => Programs.Build("scan/tls_lib.c", "-shared -fPIC");

    internal sealed record Outcome(RunResult Run, string Report, string[] Keep, string[] Leak, string Path)
    {
        public int Pid => int.Parse(Tagged(Run.Stdout, "PID").Single());

        /// <summary>Addresses listed as "unreferenced object 0x... (size N):".</summary>
        public string[] Reported => Objects(Report);

        public static string[] Objects(string report) =>
            Regex.Matches(report, @"^unreferenced object (0x[0-9a-f]+) \(size \d+\):", RegexOptions.Multiline)
                 .Select(m => m.Groups[1].Value).ToArray();
    }

    private static string[] Tagged(string stdout, string tag) =>
        stdout.Split('\n').Where(l => l.StartsWith(tag + " ", StringComparison.Ordinal))
              .Select(l => l.Substring(tag.Length + 1).Trim()).ToArray();

    internal static Outcome RunRoots(TempDir dir, string mode, string options = "", string program = "")
    {
        string report = dir.File("report.txt");
        string exe = program.Length > 0 ? program : Roots;
        var args = new List<string> { mode, report };
        if (mode == "tls_dlopen")
            args.Add(TlsLib);
        RunResult r = Programs.Run(exe, args, preload: true,
            options: "report_path=" + report + (options.Length > 0 ? ":" + options : ""), timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, mode);
        Assert.That(File.Exists(report), Is.True, $"no report was written:\n{r}");
        return new Outcome(r, File.ReadAllText(report), Tagged(r.Stdout, "KEEP"), Tagged(r.Stdout, "LEAK"), report);
    }

    private static void AssertExactly(Outcome o, string what)
    {
        Assert.That(o.Run.Stdout, Does.Contain("SCANNED 0"), $"{what}: the scan did not run:\n{o.Run}");
        Assert.Multiple(() =>
        {
            foreach (string leak in o.Leak)
                Assert.That(o.Reported, Does.Contain(leak), $"{what}: leaked block {leak} is not reported:\n{o.Report}");
            foreach (string keep in o.Keep)
                Assert.That(o.Reported, Does.Not.Contain(keep), $"{what}: block {keep} is still referenced but reported:\n{o.Report}");
            Assert.That(o.Reported, Is.EquivalentTo(o.Leak), $"{what}: the report lists exactly the leaks:\n{o.Report}");
        });
        AssertSummary(o.Report, o.Leak.Length);
    }

    internal static void AssertSummary(string report, int blocks)
    {
        string last = report.TrimEnd('\n').Split('\n').Last();
        Assert.That(last, Does.Match(@"^summary: \d+ unreferenced blocks \(\d+ indirect\), \d+ bytes, \d+ suppressed, of \d+ live; \w+ scan [\d.]+ ms, world stopped [\d.]+ ms \(stopping it [\d.]+ ms\), \d+ bytes scanned; \d+ threads stopped, \d+ not stopped$"),
            "the report ends with its summary line");
        Assert.That(last, Does.StartWith($"summary: {blocks} unreferenced blocks"));
    }

    // ---- what is and is not a leak -------------------------------------------------------------

    [TestCase("leak")]
    [TestCase("global")]
    [TestCase("stack")]
    [TestCase("thread_stack")]
    [TestCase("register")]
    [TestCase("tls_static")]
    [TestCase("tls_dlopen")]
    [TestCase("specific")]
    [TestCase("cycle")]
    [TestCase("tree")]
    [TestCase("list")]
    [TestCase("realloc")]
    [TestCase("libc")]
    [TestCase("freed")]
    [TestCase("threads16")]
    [TestCase("mmap")]
    public void Report_ListsExactlyTheUnreferencedBlocks(string mode)
    {
        using var dir = new TempDir("scan-" + mode);
        Outcome o = RunRoots(dir, mode);
        if (mode != "freed")
            Assert.That(o.Keep.Length + o.Leak.Length, Is.GreaterThan(0), "the program printed its blocks");
        AssertExactly(o, mode);
    }

    [Test]
    public void CxxAllocations_LeakedAreReported_HeldAreNot()
    {
        using var dir = new TempDir("scan-cxx");
        string report = dir.File("report.txt");
        RunResult r = Programs.Run(Programs.Build("scan/cxx.cpp"), Array.Empty<string>(), preload: true,
            options: "report_path=" + report, timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "cxx");
        var o = new Outcome(r, File.ReadAllText(report), Tagged(r.Stdout, "KEEP"), Tagged(r.Stdout, "LEAK"), report);
        Assert.That(o.Leak, Has.Length.EqualTo(6));
        AssertExactly(o, "cxx");
        Assert.That(o.Report, Does.Contain("] operator new(unsigned long)+0x"), "operator new, demangled, appears in the backtraces");
        Assert.That(o.Report, Does.Contain("] make_leaks()+0x"), "C++ functions are demangled");
    }

    // ---- each root-set rule switched off once ----------------------------------------------------

    [TestCase("global", "use_globals")]
    [TestCase("list", "use_globals")]
    [TestCase("stack", "use_stacks")]
    [TestCase("thread_stack", "use_stacks")]
    [TestCase("register", "use_registers")]
    [TestCase("tls_static", "use_tls")]
    [TestCase("tls_dlopen", "use_tls")]
    [TestCase("specific", "use_tls")]
    [TestCase("mmap", "use_mmap_regions")]
    public void RootSwitchedOff_ItsBlocksAreReported(string mode, string option)
    {
        using var dir = new TempDir("scan-off-" + mode);
        Outcome o = RunRoots(dir, mode, option + "=0:max_reported=0");
        Assert.That(o.Keep, Is.Not.Empty);
        foreach (string keep in o.Keep)
            Assert.That(o.Reported, Does.Contain(keep), $"with {option}=0 the block {keep} held only there must be reported:\n{o.Report}");
    }

    // ---- the report's content --------------------------------------------------------------------

    [Test]
    public void Report_HasKmemleakLayout()
    {
        using var dir = new TempDir("scan-layout");
        Outcome o = RunRoots(dir, "leak");
        string leak = o.Leak.Single();
        string pattern =
            $@"unreferenced object {leak} \(size 48\):\n" +
            $@"  comm ""roots"", pid {o.Pid}, tid \d+, age \d+\.\d{{3}}s\n" +
            @"  direct: nothing points to it\n" +
            @"  hex dump \(first 32 bytes\):\n" +
            @"    6c 65 61 6b 65 64 20 62 79 20 6d 61 6b 65 5f 6c  leaked by make_l\n" +
            @"    65 61 6b 00 [0-9a-f ]+ eak\.[^\n]*\n" +
            @"  backtrace \(crc [0-9a-f]{8}\):\n" +
            @"    \[<0x[0-9a-f]+>\] make_leak\+0x[0-9a-f]+ \(\S*/roots\) \S*/roots\.c:\d+\n" +
            @"    \[<0x[0-9a-f]+>\] main\+0x[0-9a-f]+ \(\S*/roots\) \S*/roots\.c:\d+\n";
        Assert.That(o.Report, Does.Match(pattern), o.Report);
    }

    [Test]
    public void Tree_RootIsDirect_ChildrenIndirect_CycleIsIndirect()
    {
        using var dir = new TempDir("scan-tree");
        Outcome tree = RunRoots(dir, "tree");
        Assert.That(tree.Report.TrimEnd().Split('\n').Last(), Does.StartWith("summary: 5 unreferenced blocks (4 indirect)"));
        Outcome cycle = RunRoots(dir, "cycle");
        Assert.That(cycle.Report.TrimEnd().Split('\n').Last(), Does.StartWith("summary: 2 unreferenced blocks (2 indirect)"),
            "a leaked cycle is all indirect, as in LeakSanitizer");
    }

    [Test]
    public void Tree_EachBlockSaysDirectOrIndirect_SummaryGroupsByStack()
    {
        using var dir = new TempDir("scan-tree-kinds");
        Outcome tree = RunRoots(dir, "tree");
        string root = tree.Leak[0];
        string[] children = tree.Leak.Skip(1).ToArray();
        string KindOf(string address) =>
            Regex.Match(tree.Report, $@"unreferenced object {address} \(size \d+\):\n  comm [^\n]*\n  (direct|indirect):").Groups[1].Value;
        Assert.That(KindOf(root), Is.EqualTo("direct"), tree.Report);
        Assert.That(children.Select(KindOf), Has.All.EqualTo("indirect"), tree.Report);
        // The summary by stack: the root's stack (32 bytes, direct) and the children's (4 x 32, indirect).
        Assert.That(tree.Report, Does.Contain("unreferenced blocks by allocation stack, largest first:\n  128 bytes in 4 blocks (indirect) allocated from:\n"), tree.Report);
        Assert.That(tree.Report, Does.Contain("  32 bytes in 1 blocks (direct) allocated from:\n"));
    }

    [Test]
    public void JsonReport_ParsesAndCarriesTheSameContent()
    {
        using var dir = new TempDir("scan-json");
        string report = dir.File("report.json");
        RunResult r = Programs.Run(Roots, new[] { "tree", report }, preload: true, options: $"report_path={report}:report_format=json");
        E2E.AssertCleanExit(r, "tree json");
        string[] leaks = Tagged(r.Stdout, "LEAK");
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(report));
        var root = doc.RootElement;
        Assert.That(root.GetProperty("format").GetString(), Is.EqualTo("interposer-leaks"));
        var blocks = root.GetProperty("blocks").EnumerateArray().ToArray();
        Assert.That(blocks.Select(b => b.GetProperty("address").GetString()), Is.EquivalentTo(leaks));
        Assert.That(blocks.Single(b => b.GetProperty("address").GetString() == leaks[0]).GetProperty("kind").GetString(), Is.EqualTo("direct"));
        Assert.That(blocks.Count(b => b.GetProperty("kind").GetString() == "indirect"), Is.EqualTo(4));
        Assert.That(blocks[0].GetProperty("frames")[0].GetProperty("function").GetString(), Is.EqualTo("make_tree"));
        var stacks = root.GetProperty("stacks").EnumerateArray().ToArray();
        Assert.That(stacks[0].GetProperty("bytes").GetUInt64(), Is.EqualTo(128UL));
        Assert.That(stacks[0].GetProperty("kind").GetString(), Is.EqualTo("indirect"));
        var summary = root.GetProperty("summary");
        Assert.That(summary.GetProperty("unreferenced_blocks").GetInt32(), Is.EqualTo(5));
        Assert.That(summary.GetProperty("indirect_blocks").GetInt32(), Is.EqualTo(4));
        Assert.That(summary.GetProperty("threads_stopped").GetInt32(), Is.GreaterThanOrEqualTo(1));
    }

    [Test]
    public void MaxReported_CapsTheList_NotTheSummaries()
    {
        using var dir = new TempDir("scan-max");
        Outcome o = RunRoots(dir, "threads16", "max_reported=5");
        Assert.That(o.Reported, Has.Length.EqualTo(5), "five blocks listed");
        Assert.That(o.Report, Does.Contain("... 11 more unreferenced blocks not listed (max_reported=5)"));
        Assert.That(o.Report, Does.Contain("768 bytes in 16 blocks (direct) allocated from:"), "the summary by stack counts all sixteen");
        AssertSummary(o.Report, 16);
    }

    [Test]
    public void Threads16_EachThreadsLeakIsReportedWithItsTid()
    {
        using var dir = new TempDir("scan-threads");
        Outcome o = RunRoots(dir, "threads16");
        int[] tids = Regex.Matches(o.Report, @"comm ""roots"", pid \d+, tid (\d+),").Select(m => int.Parse(m.Groups[1].Value)).ToArray();
        Assert.That(tids, Has.Length.EqualTo(16));
        Assert.That(tids.Distinct().Count(), Is.EqualTo(16), "sixteen threads, sixteen tids");
        Assert.That(tids, Has.None.EqualTo(o.Pid), "none of them is the main thread");
    }

    [Test]
    public void PointerWrittenBack_ReportedThenNot()
    {
        using var dir = new TempDir("scan-writeback");
        Outcome o = RunRoots(dir, "writeback");
        string block = o.Leak.Single();
        string first = File.ReadAllText(o.Path + ".1");
        Assert.That(Outcome.Objects(first), Is.EquivalentTo(new[] { block }), "first scan: unreferenced\n" + first);
        Assert.That(o.Reported, Is.Empty, "second scan: referenced again\n" + o.Report);
    }

    [Test]
    public void ThreadBlockingEverySignal_IsNamed_ItsStackStillScanned_ScanBounded()
    {
        using var dir = new TempDir("scan-blocker");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Outcome o = RunRoots(dir, "blocker", "stop_timeout_ms=5000");
        clock.Stop();
        string tid = Tagged(o.Run.Stdout, "BLOCKER").Single();
        AssertExactly(o, "blocker");
        Assert.That(o.Report, Does.Contain($"thread {tid} (\"roots\") could not be stopped"), o.Report);
        Assert.That(o.Report.TrimEnd().Split('\n').Last(), Does.EndWith("1 not stopped"));
        // The stopper sees the signal blocked in /proc and gives up long before stop_timeout_ms.
        Assert.That(clock.Elapsed.TotalSeconds, Is.LessThan(4.5), "the scan did not wait for the whole stop timeout");
    }

    /// <summary>A thread in seccomp strict mode, or under a filter of its own that kills it on
    /// gettid, is not sent the stop signal (its handler's first syscall would kill it: strict mode
    /// lost the thread before this check). It is named in the report, its stack is scanned as it
    /// runs, and it lives on to print ALIVE.</summary>
    [TestCase("seccomp_strict")]
    [TestCase("seccomp_filter")]
    public void ThreadUnderItsOwnSeccomp_IsNotSignalled_NamedAndScanned(string mode)
    {
        using var dir = new TempDir("scan-" + mode);
        Outcome o = RunRoots(dir, mode);
        string tid = Tagged(o.Run.Stdout, "SECCOMP").Single();
        AssertExactly(o, mode);
        Assert.That(o.Run.Stdout, Does.Contain("ALIVE"), $"the seccomp thread died:\n{o.Run}");
        Assert.That(o.Report, Does.Contain($"thread {tid} (\"roots\") runs under a seccomp filter of its own"), o.Report);
        Assert.That(o.Report.TrimEnd().Split('\n').Last(), Does.EndWith("1 not stopped"));
    }

    [Test]
    public void MinAge_YoungBlocksAreNotReported()
    {
        using var dir = new TempDir("scan-minage");
        Outcome young = RunRoots(dir, "leak", "min_age_ms=600000");
        Assert.That(young.Reported, Is.Empty, young.Report);
        AssertSummary(young.Report, 0);
    }
}
