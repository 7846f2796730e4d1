// LoadTests.cs — the trust suite's load cases (issue 4): the host never crashes, hangs or gets a
// wrong report while scans run back to back against 16 churning threads, thousands of short
// threads, fork() and dlopen()/dlclose() loops. Each program checks every report itself against
// what it knows it leaked (tests/programs/trust/) and exits 0 only when all were exact.
//
// CI runs each load for TRUST_SECONDS (default 30); the soak mode is the same tests with a longer
// time: `TRUST_SECONDS=1800 ./build.sh --target=Test --filter=FullyQualifiedName~Trust`.
using System;
using System.Globalization;
using System.Text.RegularExpressions;
using Interposer.Tests.EndToEnd;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.Trust;

[TestFixture]
public sealed class LoadTests
{
    internal static int Seconds =>
        int.TryParse(Environment.GetEnvironmentVariable("TRUST_SECONDS"), NumberStyles.None, CultureInfo.InvariantCulture, out int s) && s > 0 ? s : 30;

    private static string ChurnProgram => Programs.Build("trust/churn.c");
    private static string Lifecycle => Programs.Build("trust/lifecycle.c");

    private static long Field(string stdout, string name) =>
        long.Parse(Regex.Match(stdout, $@"\b{name} (\d+)").Groups[1].Value, CultureInfo.InvariantCulture);

    [TestCase(0, TestName = "Churn16Threads_BackToBackScans_NoFalseReport")]
    [TestCase(20000, TestName = "Churn16Threads_KnownLeakRate_ExactlyItsLeaks")]
    public void Churn(int leakEvery)
    {
        using var dir = new TempDir("trust-churn");
        string report = dir.File("report.txt");
        RunResult r = Programs.Run(ChurnProgram, new[] { "16", Seconds.ToString(CultureInfo.InvariantCulture), leakEvery.ToString(CultureInfo.InvariantCulture), report },
            preload: true, options: "max_reported=0:report_path=" + report, timeoutSeconds: Seconds + 240);
        TestContext.Out.WriteLine(r.Stdout.Trim());
        E2E.AssertCleanExit(r, "churn");
        Assert.Multiple(() =>
        {
            Assert.That(Field(r.Stdout, "false"), Is.Zero, "blocks reported that the program still holds");
            Assert.That(Field(r.Stdout, "missing"), Is.Zero, "leaks the last scan did not report");
            Assert.That(Field(r.Stdout, "failed"), Is.Zero, "scans that did not complete");
            Assert.That(Field(r.Stdout, "scans"), Is.GreaterThan(0));
            if (leakEvery > 0)
                Assert.That(Field(r.Stdout, "final_reported"), Is.EqualTo(Field(r.Stdout, "leaked")).And.GreaterThan(0));
        });
    }

    [Test]
    public void ThousandsOfThreads_CreatedAndJoinedDuringScans()
    {
        using var dir = new TempDir("trust-threads");
        string report = dir.File("report.txt");
        RunResult r = Programs.Run(Lifecycle, new[] { "threads", "3000", report }, preload: true,
            options: "max_reported=0:report_path=" + report, timeoutSeconds: 240);
        TestContext.Out.WriteLine(r.Stdout.Trim());
        E2E.AssertCleanExit(r, "lifecycle threads");
        Assert.That(Field(r.Stdout, "leaked"), Is.GreaterThanOrEqualTo(3000));
    }

    [Test]
    public void ScansWhileOtherThreadsFork_AndDlopenDlclose()
    {
        using var dir = new TempDir("trust-forkdl");
        string report = dir.File("report.txt");
        string lib = Programs.Build("scan/tls_lib.c", "-shared -fPIC");
        int seconds = Math.Min(Seconds, 15);
        RunResult r = Programs.Run(Lifecycle, new[] { "forkdl", seconds.ToString(CultureInfo.InvariantCulture), report, lib },
            preload: true, options: "max_reported=0:report_path=" + report, timeoutSeconds: seconds + 240);
        TestContext.Out.WriteLine(r.Stdout.Trim());
        E2E.AssertCleanExit(r, "lifecycle forkdl");
        Assert.That(Field(r.Stdout, "forks"), Is.GreaterThan(0));
        Assert.That(Field(r.Stdout, "dlopens"), Is.GreaterThan(0));
        Assert.That(Field(r.Stdout, "scans"), Is.GreaterThan(1));
    }

    // A fork while the core collected (inside a scan's GC window) used to leave the child stuck in
    // its first hook, waiting for a GC thread that did not follow the fork (found by the forkdl
    // load above, once in many runs; fork_scan.c hit it within 20 s every time).
    [Test]
    public void ForksDuringScansThatRenderBigReports_NoChildHangs()
    {
        using var dir = new TempDir("trust-forkscan");
        int seconds = Math.Min(Seconds, 15);
        RunResult r = Programs.Run(Programs.Build("trust/fork_scan.c"), new[] { seconds.ToString(CultureInfo.InvariantCulture) },
            preload: true, options: "report_path=" + dir.File("report.txt"), timeoutSeconds: seconds + 240);
        TestContext.Out.WriteLine(r.Stdout.Trim());
        E2E.AssertCleanExit(r, "fork_scan");
        Assert.That(Field(r.Stdout, "hung"), Is.Zero, "fork children that never exited");
        Assert.That(Field(r.Stdout, "forks"), Is.GreaterThan(0));
        Assert.That(Field(r.Stdout, "scans"), Is.GreaterThan(1));
        // A child may still run untracked if a scan outlasted the 2 s bound (a very slow machine):
        // that is the designed way out, so it is counted, not failed.
        TestContext.Out.WriteLine($"children that ran untracked: {Regex.Matches(r.Stderr, "tracking disabled").Count}");
    }

    [Test]
    public void DlopenDlcloseOfATlsLibrary_RunsAsWithoutTheLibrary()
    {
        // The dynamic linker frees a closed module's TLS block from inside __tls_get_addr; if our
        // hook entered the core there (whose own TLS access re-runs that update), the block was
        // freed twice and glibc aborted. Events called by ld.so are deferred instead.
        string lib = Programs.Build("scan/tls_lib.c", "-shared -fPIC");
        string program = Programs.Build("trust/dlcycle.c");
        (RunResult plain, RunResult preloaded) = E2E.RunBoth(program, Programs.Quote(lib) + " 2000");
        E2E.AssertCleanExit(plain, "plain");
        E2E.AssertCleanExit(preloaded, "preloaded");
        Assert.That(preloaded.Stdout, Is.EqualTo(plain.Stdout));
        E2E.AssertNoLibraryMessages(preloaded, "dlcycle");
    }
}
