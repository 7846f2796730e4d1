// PendingFreeTests.cs — batched frees (BATCHED FREES in native-shim/interposer_abi.h): a block the
// program freed is never reported, whether its record removal still waits in the freeing thread's
// batch (that thread stopped by the scan, or the scanning thread itself), was logged at the
// thread's exit, or was left behind by a thread that did not follow a fork; and a pending removal
// never takes the record of a block that glibc handed out again at the same address.
using System.IO;
using System.Linq;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class PendingFreeTests
{
    private static string Program => Programs.Build("scan/pending_frees.c");

    private static string[] Tagged(string stdout, string tag) =>
        stdout.Split('\n').Where(l => l.StartsWith(tag + " ", System.StringComparison.Ordinal))
              .Select(l => l.Substring(tag.Length + 1).Trim()).ToArray();

    [TestCase("same")]
    [TestCase("thread")]
    [TestCase("exit")]
    [TestCase("fork")]
    [TestCase("reuse")]
    [TestCase("thread", "batch_frees=0")]
    public void FreedBlocks_InABatchOrLeftBehind_AreNotReported(string mode, string extra = "")
    {
        using var dir = new TempDir("pending-" + mode);
        // reuse: no tcache and one arena, so main's mallocs get the worker's freed chunks back.
        var env = mode == "reuse"
            ? new System.Collections.Generic.Dictionary<string, string> { ["GLIBC_TUNABLES"] = "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1" }
            : null;
        string options = $"report_path={dir.File("r.%p.txt")}:max_reported=0" + (extra.Length > 0 ? ":" + extra : "");
        RunResult r = Programs.Run(Program, new[] { mode }, preload: true, options: options, env: env,
                                   timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "pending_frees " + mode);
        string[] reports = Directory.GetFiles(dir.Path, "r.*.txt");
        Assert.That(reports, Has.Length.EqualTo(1), r.ToString());
        string report = File.ReadAllText(reports[0]);
        string[] freed = Tagged(r.Stdout, "FREED"), leaked = Tagged(r.Stdout, "LEAK");
        Assert.That(freed, Has.Length.EqualTo(5));
        Assert.That(leaked, Has.Length.EqualTo(mode == "same" ? 3 : mode == "reuse" ? 11 : 6));
        Assert.That(Tagged(r.Stdout, "SCANNED"), Has.Length.EqualTo(1), r.Stdout);
        string[] reported = LeakScanTests.Outcome.Objects(report);
        Assert.That(reported, Is.SupersetOf(leaked), report);
        if (mode == "reuse")
            Assert.That(leaked.Intersect(freed), Is.Not.Empty, "the scenario needs main to get a freed address back:\n" + r.Stdout);
        else
            Assert.That(reported, Has.None.AnyOf(freed), "a freed block was reported:\n" + report);
    }
}
