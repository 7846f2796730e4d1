// OptionsTests.cs — INTERPOSER_OPTIONS seen from a program: help=1, unknown and malformed
// options, enabled=0, max_frames, dump_at_exit. (Requirement 7 of the end-to-end suite.)
using System.Linq;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class OptionsTests
{
    private static string Probe => E2E.Build("options_probe.c");

    private static RunResult s_plain = null!;

    private static RunResult Plain()
    {
        if (s_plain == null)
        {
            s_plain = Programs.Run(Probe, "", preload: false, timeoutSeconds: E2E.HazardTimeoutSeconds);
            E2E.AssertCleanExit(s_plain, "options_probe without the library");
            Assert.That(s_plain.Stdout, Does.StartWith("options probe checksum "));
        }
        return s_plain;
    }

    private static RunResult RunWith(string options, string arguments = "")
    {
        RunResult r = Programs.Run(Probe, arguments, preload: true, options: options, timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, $"options_probe with INTERPOSER_OPTIONS={options}");
        Assert.That(r.Stdout, Is.EqualTo(Plain().Stdout), $"stdout changed with INTERPOSER_OPTIONS={options}");
        return r;
    }

    [Test]
    public void Help_PrintsEveryOptionOnStderr_AndTheProgramRuns()
    {
        RunResult r = RunWith("help=1");
        Assert.Multiple(() =>
        {
            foreach (string name in new[] { "enabled", "max_frames", "unwinder", "verbosity", "dump_at_exit", "help" })
                Assert.That(r.Stderr, Does.Match(@"(?m)^\s+" + name + @"\s"), $"help=1 does not list '{name}':\n{r.Stderr}");
            Assert.That(E2E.Number(r.Stderr, @"^live_blocks (-?\d+)$"), Is.GreaterThan(0), "tracking is off after help=1");
        });
    }

    [TestCase("foo=1", "foo")]
    [TestCase("max_frames=abc", "max_frames")]
    [TestCase("max_frames=0", "max_frames")]
    [TestCase("unwinder=magic", "unwinder")]
    [TestCase("enabled=maybe", "enabled")]
    [TestCase("justaword", "justaword")]
    public void BadOption_OneStderrLineNamingIt_StdoutUnchanged(string options, string named)
    {
        RunResult r = RunWith(options);
        string[] lines = E2E.LibraryLines(r);
        Assert.That(lines, Has.Length.EqualTo(1), $"expected one line about '{options}':\n{r.Stderr}");
        Assert.That(lines[0], Does.Contain(named));
        Assert.That(E2E.Number(r.Stderr, @"^live_blocks (-?\d+)$"), Is.GreaterThan(0), "a bad option turned tracking off");
    }

    [Test]
    public void TwoBadOptions_TwoLines_TheGoodOneStillApplies()
    {
        using var dir = new TempDir("opts");
        string dumpPath = dir.File("dump.txt");
        RunResult r = RunWith("foo=1:max_frames=abc:max_frames=3", Programs.Quote(dumpPath));
        string[] lines = E2E.LibraryLines(r);
        Assert.That(lines, Has.Length.EqualTo(2), r.Stderr);
        Assert.That(lines[0], Does.Contain("foo"));
        Assert.That(lines[1], Does.Contain("max_frames").And.Contain("abc"));
        LiveDumpFile dump = LiveDumpFile.Read(dumpPath);
        Assert.That(dump.Blocks.Max(b => b.Frames.Count), Is.EqualTo(3), "max_frames=3 after a bad max_frames did not apply");
    }

    [Test]
    public void EnabledZero_PassThrough_LiveBlocksIsMinusOne()
    {
        RunResult r = RunWith("enabled=0");
        Assert.That(E2E.Number(r.Stderr, @"^live_blocks (-?\d+)$"), Is.EqualTo(-1));
        Assert.That(E2E.LibraryLines(r), Is.Empty, r.Stderr);
    }

    [Test]
    public void Default_TracksAndSaysNothing()
    {
        RunResult r = RunWith("");
        Assert.That(E2E.Number(r.Stderr, @"^live_blocks (-?\d+)$"), Is.GreaterThan(0));
        Assert.That(E2E.LibraryLines(r), Is.Empty, r.Stderr);
    }

    [TestCase(4)]
    [TestCase(1)]
    [TestCase(64)]
    public void MaxFrames_LimitsDumpedBacktraces(int maxFrames)
    {
        using var dir = new TempDir("maxframes");
        string dumpPath = dir.File("dump.txt");
        RunResult r = RunWith($"max_frames={maxFrames}", Programs.Quote(dumpPath));
        Assert.That(r.Stderr, Does.Contain("dump 0"), r.ToString());
        LiveDumpFile dump = LiveDumpFile.Read(dumpPath);
        Assert.That(dump.Blocks, Is.Not.Empty);
        Assert.That(dump.Blocks.Select(b => b.Frames.Count), Has.All.InRange(1, maxFrames), dump.Text);
        // The block allocated 13 calls deep reaches the limit (or shows its whole stack).
        DumpBlock deep = dump.Blocks.Single(b => b.Size == 99);
        Assert.That(deep.Frames.Count, Is.EqualTo(System.Math.Min(maxFrames, 17)).Or.EqualTo(System.Math.Min(maxFrames, 16)), deep.ToString());
        Assert.That(deep.Frames[0].Function, Is.EqualTo("descend"), deep.ToString());
    }

    [Test]
    public void DumpAtExit_ExpandsPid_AndListsTheLiveBlocks()
    {
        using var dir = new TempDir("dumpexit");
        RunResult r = RunWith($"dump_at_exit={dir.File("leaks.%p.txt")}");
        string[] files = System.IO.Directory.GetFiles(dir.Path, "leaks.*.txt");
        Assert.That(files, Has.Length.EqualTo(1));
        LiveDumpFile dump = LiveDumpFile.Read(files[0]);
        int pid = dump.Blocks.First().Pid;
        Assert.That(System.IO.Path.GetFileName(files[0]), Is.EqualTo($"leaks.{pid}.txt"));
        // 25 of the 50 strings plus the deep block are still live at exit.
        Assert.That(dump.Blocks.Count(b => b.Size == 32), Is.EqualTo(25), dump.Text);
        Assert.That(dump.Blocks.Count(b => b.Size == 99), Is.EqualTo(1), dump.Text);
        Assert.That(dump.Statistic("live blocks"), Is.EqualTo(dump.Blocks.Count));
    }

    [Test]
    public void Verbosity1_PrintsStartupFacts()
    {
        RunResult r = RunWith("verbosity=1:unwinder=libunwind:max_frames=8");
        string[] lines = E2E.LibraryLines(r);
        Assert.That(lines, Has.Length.EqualTo(1), r.Stderr);
        Assert.That(lines[0], Does.Contain("unwinder=libunwind").And.Contain("max_frames=8"));
    }
}
