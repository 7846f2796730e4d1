// ApiTests.cs — the annotation API (native-shim/interposer.h): LeakSanitizer's interface behaves
// as under gcc's liblsan (same program, same printed results), kmemleak's annotations do what
// kmemleak's do, and a program built with the header runs without the library.
using System;
using System.IO;
using System.Linq;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class ApiTests
{
    private static string Annotations => Programs.Build("api/annotations.c");

    private static string Liblsan
    {
        get
        {
            RunResult r = Programs.Run("gcc", new[] { "-print-file-name=liblsan.so.0" }, preload: false);
            string path = r.Stdout.Trim();
            Assert.That(File.Exists(path), Is.True, "gcc's liblsan.so.0 (package liblsan0) is needed for the side-by-side run");
            return path;
        }
    }

    [Test]
    public void LsanInterface_BehavesAsUnderLiblsan()
    {
        using var dir = new TempDir("api-lsan");
        RunResult lsan = Programs.Run("env", new[] { "LSAN_OPTIONS=exitcode=0", "LD_PRELOAD=" + Liblsan, Annotations, "lsan" }, preload: false);
        // LeakSanitizer does not scan mmap'ed memory; with use_mmap_regions=0 neither do we, so the
        // unregistered root region leaks under both.
        RunResult ours = Programs.Run(Annotations, new[] { "lsan" }, preload: true,
            options: $"report_path={dir.File("r.txt")}:use_mmap_regions=0");
        E2E.AssertCleanExit(ours, "annotations lsan");
        Assert.That(lsan.ExitCode, Is.Zero, lsan.ToString());
        Assert.That(ours.Stdout, Is.EqualTo(lsan.Stdout), "the same answers as liblsan");
        Assert.That(ours.Stdout, Does.Contain("a leak: 1\nafter __lsan_ignore_object: 0\nleaked between __lsan_disable and __lsan_enable: 0\n" +
            "held only by an unregistered region: 1\nheld by a registered root region: 0\nafter __lsan_unregister_root_region: 1\nall freed: 0\n"));
    }

    [Test]
    public void LsanDoLeakCheck_WithALeak_ExitsWith23LikeLiblsan()
    {
        using var dir = new TempDir("api-leakcheck");
        RunResult lsan = Programs.Run("env", new[] { "LD_PRELOAD=" + Liblsan, Annotations, "leakcheck" }, preload: false);
        RunResult ours = Programs.Run(Annotations, new[] { "leakcheck" }, preload: true, options: $"report_path={dir.File("r.txt")}");
        Assert.That(lsan.ExitCode, Is.EqualTo(23), lsan.ToString());
        Assert.That(ours.ExitCode, Is.EqualTo(23), ours.ToString());
        Assert.That(ours.Stdout, Is.Empty);
        Assert.That(LeakScanTests.Outcome.Objects(File.ReadAllText(dir.File("r.txt"))), Has.Length.EqualTo(1));
    }

    // Runs one mode of annotations.c under the library: the run, its report, the reported
    // addresses, and the addresses the program printed under a tag (LEAK, KEEP, FREED...).
    private static (RunResult Run, string Report, string[] Reported, Func<string, string[]> Tag) RunMode(string mode)
    {
        using var dir = new TempDir("api-" + mode);
        string report = dir.File("r.txt");
        RunResult r = Programs.Run(Annotations, new[] { mode }, preload: true, options: $"report_path={report}");
        E2E.AssertCleanExit(r, "annotations " + mode);
        string text = File.ReadAllText(report);
        string[] Tag(string tag) => r.Stdout.Split('\n').Where(l => l.StartsWith(tag + " ")).Select(l => l.Substring(tag.Length + 1)).ToArray();
        return (r, text, LeakScanTests.Outcome.Objects(text), Tag);
    }

    [Test]
    public void KmemleakAnnotations_NotLeakIgnoreNoScan_AndACustomAllocator()
    {
        var (_, text, reported, Tag) = RunMode("kmemleak");
        Assert.That(reported, Is.EquivalentTo(Tag("LEAK")), text);
        Assert.That(reported, Has.None.AnyOf(Tag("KEEP").Concat(Tag("FREED")).ToArray()));
        Assert.That(text, Does.Contain("pool_alloc+0x"), "a custom allocator's block carries its caller's backtrace");
    }

    [Test]
    public void KmemleakScanArea_OnlyTheAreasOfABlockAreScanned()
    {
        var (r, text, reported, Tag) = RunMode("scanarea");
        Assert.That(Tag("LEAK"), Has.Length.EqualTo(3));
        Assert.That(reported, Is.EquivalentTo(Tag("LEAK")), r.Stdout + text);
        Assert.That(reported, Has.None.AnyOf(Tag("KEEP")));
        Assert.That(r.Stderr, Does.Contain("the area is not inside a tracked block; ignored"));
        Assert.That(r.Stderr, Does.Contain("the area runs past the end of its block; ignored"));
        TestContext.Out.WriteLine(Tag("REUSED").Single());
    }

    [Test]
    public void ProgramBuiltWithTheHeader_RunsWithoutTheLibrary()
    {
        RunResult r = Programs.Run(Annotations, new[] { "lsan" }, preload: false);
        E2E.AssertCleanExit(r, "without the library");
        Assert.That(r.Stdout, Does.Contain("a leak: -1"), "the weak calls are skipped");
        string cxx = Programs.Build("api/header_cxx.cpp");
        E2E.AssertCleanExit(Programs.Run(cxx, Array.Empty<string>(), preload: false), "C++ build of the header");
    }
}
