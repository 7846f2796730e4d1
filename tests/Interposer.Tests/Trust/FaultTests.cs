// FaultTests.cs — the trust suite's fault cases (issue 4): failed allocations, the library's own
// metadata running out, odd frees, a report path on a full disk, a thread that cannot be stopped,
// a program that owns our stop signal, children of every kind, setuid programs.
// tests/programs/trust/faults.c has one mode per case.
using System;
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;
using Interposer.Tests.EndToEnd;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.Trust;

[TestFixture]
public sealed class FaultTests
{
    private static string Faults => Programs.Build("trust/faults.c");

    [Test]
    public void FailedAllocations_PassThroughUnchanged_MetadataConsistent()
    {
        (RunResult plain, RunResult preloaded) = E2E.RunBoth(Faults, "enomem");
        E2E.AssertCleanExit(preloaded, "enomem");
        Assert.That(preloaded.Stdout, Is.EqualTo(plain.Stdout), "same results and errno values");
        Assert.That(preloaded.Stdout, Does.Contain("malloc NULL 12 calloc NULL 12 realloc NULL 12 kept 7 memalign NULL 12 posix_memalign 22"));
        Assert.That(preloaded.Stdout, Does.Contain("records: +1 while the realloc'ed block lives, +0 after its free"),
            "a failed realloc keeps the block's record; its free removes it");
        E2E.AssertNoLibraryMessages(preloaded, "enomem");
    }

    [Test]
    public void MetadataOutOfMemory_TrackingStopsWithOneLine_ProgramGoesOn()
    {
        (RunResult plain, RunResult preloaded) = E2E.RunBoth(Faults, "metadata");
        E2E.AssertCleanExit(preloaded, "metadata");
        Assert.That(preloaded.Stdout, Is.EqualTo(plain.Stdout));
        string[] lines = E2E.LibraryLines(preloaded);
        Assert.That(lines, Has.Length.EqualTo(1), preloaded.Stderr);
        Assert.That(lines[0], Does.StartWith("interposer: tracking disabled: "));
    }

    [Test]
    public void FreeOfNullAndOfAnUnseenBlock_PassThrough()
    {
        (RunResult plain, RunResult preloaded) = E2E.RunBoth(Faults, "frees");
        E2E.AssertCleanExit(preloaded, "frees");
        Assert.That(preloaded.Stdout, Is.EqualTo(plain.Stdout));
        Assert.That(preloaded.Stdout, Does.Contain("live delta 0"));
    }

    [Test]
    public void DoubleFree_IsGlibcsOwnAbort()
    {
        (RunResult plain, RunResult preloaded) = E2E.RunBoth(Faults, "doublefree");
        Assert.That(plain.ExitCode, Is.EqualTo(134), plain.ToString());
        Assert.That(preloaded.ExitCode, Is.EqualTo(plain.ExitCode), preloaded.ToString());
        Assert.That(preloaded.Stderr, Does.Contain("free(): double free detected"));
        Assert.That(preloaded.Stdout, Is.Empty);
    }

    [Test]
    public void ProgramOwnsTheStopSignal_ItsHandlerWorks_ScansAreRefusedWithAMessage()
    {
        (RunResult plain, RunResult preloaded) = E2E.RunBoth(Faults, "rtsig");
        E2E.AssertCleanExit(preloaded, "rtsig");
        Assert.That(preloaded.Stdout, Is.EqualTo(plain.Stdout));
        Assert.That(preloaded.Stdout, Does.Contain("handler ran 2 times, scan refused"));
        Assert.That(E2E.LibraryLines(preloaded).Single(), Does.Contain("SIGRTMIN+3"));
    }

    [Test]
    public void ThreadInVfork_CannotBeStopped_ScanFinishesWithinTheBound_AndNamesIt()
    {
        using var dir = new TempDir("trust-vfork");
        string report = dir.File("report.txt");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        RunResult r = Programs.Run(Faults, new[] { "vfork" }, preload: true, options: $"report_path={report}:stop_timeout_ms=300");
        clock.Stop();
        E2E.AssertCleanExit(r, "vfork");
        Assert.That(r.Stdout, Does.Contain("scan 0 while a thread sat in vfork"));
        string text = File.ReadAllText(report);
        Assert.That(text, Does.Match(@"thread \d+ \(""faults""\) could not be stopped"), text);
        Assert.That(text.TrimEnd().Split('\n').Last(), Does.EndWith("1 not stopped"));
        Assert.That(clock.Elapsed.TotalSeconds, Is.LessThan(30));
    }

    [Test]
    public void Children_ForkVforkExecPosixSpawn_EachWritesItsOwnReport()
    {
        using var dir = new TempDir("trust-children");
        string template = dir.File("r.%p.txt");
        RunResult r = Programs.Run(Faults, new[] { "children" }, preload: true, options: $"report_path={template}:report_at_exit=1");
        E2E.AssertCleanExit(r, "children");
        int[] pids = Regex.Match(r.Stdout, @"children (\d+) (\d+) (\d+)").Groups.Cast<Group>().Skip(1).Select(g => int.Parse(g.Value)).ToArray();
        string[] files = Directory.GetFiles(dir.Path, "r.*.txt");
        Assert.That(files, Has.Length.EqualTo(4), "the parent and three children, one report each: " + string.Join(", ", files));
        string Read(int pid) => File.ReadAllText(dir.File($"r.{pid}.txt"));
        // Hex dumps show the first 16 bytes of each tag per line.
        Assert.That(Read(pids[0]), Does.Contain("leak-of-fork-chi"), "fork child");
        Assert.That(Read(pids[1]), Does.Contain("leak-of-vfork-ch").And.Not.Contain("leak-of-parent"), "vfork+exec child: a new process image");
        Assert.That(Read(pids[2]), Does.Contain("leak-of-spawn-ch").And.Not.Contain("leak-of-parent"), "posix_spawn child");
        string parentFile = files.Single(f => !pids.Any(p => f.EndsWith($"r.{p}.txt", StringComparison.Ordinal)));
        string parentText = File.ReadAllText(parentFile);
        Assert.That(parentText, Does.Contain("leak-of-parent"));
        Assert.That(parentText, Does.Not.Contain("leak-of-fork").And.Not.Contain("leak-of-vfork").And.Not.Contain("leak-of-spawn"),
            "no child wrote into the parent's report");
    }

    [Test]
    public void ReportOnAFullDisk_SaidOnStderr_NextScanTriesAgain()
    {
        // /dev/full: every write fails with ENOSPC, as on a full file system.
        RunResult r = Programs.Run(Faults, new[] { "twoscans" }, preload: true, options: "report_path=/dev/full");
        E2E.AssertCleanExit(r, "twoscans");
        Assert.That(r.Stdout, Does.Contain("scans -1 -1"), "both scans ran and both reported the failure");
        string[] lines = E2E.LibraryLines(r);
        Assert.That(lines, Has.Length.EqualTo(2), r.Stderr);
        Assert.That(lines, Has.All.Contains("/dev/full").And.All.Contains("the next scan tries again"));
    }

    [Test]
    public void LeakFromALibraryDlclosedBeforeTheReport_ItsFramesStillNameTheLibrary()
    {
        using var dir = new TempDir("trust-dlclose");
        string report = dir.File("report.txt");
        string lib = Programs.Build("trust/leaklib.c", "-shared -fPIC");
        RunResult r = Programs.Run(Programs.Build("trust/dlclose_leak.c"), new[] { lib }, preload: true, options: $"report_path={report}");
        E2E.AssertCleanExit(r, "dlclose_leak");
        Assert.That(r.Stdout, Does.Contain("dlclose 0").And.Contain("scan 0"));
        string text = File.ReadAllText(report);
        Assert.That(text, Does.Contain("from-closed-lib"), text);
        Assert.That(text, Does.Match(@"\] leaklib_make_leak\+0x[0-9a-f]+ \(" + Regex.Escape(lib) + @"\)"),
            "the closed library's frame, symbolized from its file:\n" + text);
    }

    [Test]
    public void SetuidProgram_GlibcDropsThePreload_NothingOfOursRuns()
    {
        using var dir = new TempDir("trust-setuid");
        string src = Path.Combine(Artifacts.ProgramsDir, "trust", "whoami.c");
        string exe = dir.File("whoami");
        RunResult cc = Programs.Run("gcc", new[] { "-o", exe, src, "-ldl" }, preload: false);
        Assert.That(cc.ExitCode, Is.Zero, cc.ToString());
        File.SetUnixFileMode(dir.Path, (UnixFileMode)Convert.ToInt32("755", 8));
        string setuidCopy = dir.File("whoami-setuid");
        File.Copy(exe, setuidCopy);
        File.SetUnixFileMode(setuidCopy, (UnixFileMode)Convert.ToInt32("4755", 8));
        // Run both as nobody: the plain copy loads the library, the setuid one (euid 0) must not.
        string Run(string path) => Programs.Run("setpriv",
            new[] { "--reuid=65534", "--regid=65534", "--clear-groups", "env", "LD_PRELOAD=" + Artifacts.Library, path },
            preload: false).Stdout.Trim();
        Assert.That(Run(exe), Is.EqualTo("uid 65534 euid 65534 interposer loaded"), "control: the library loads for nobody");
        Assert.That(Run(setuidCopy), Is.EqualTo("uid 65534 euid 0 interposer not loaded"));
    }
}
