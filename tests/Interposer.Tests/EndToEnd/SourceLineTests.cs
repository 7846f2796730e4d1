// SourceLineTests.cs — frames carry file:line from the DWARF line tables (issue 5): a leak
// allocated in a C file compiled with -g is reported with that file and line, at every
// optimisation level and DWARF version gcc offers here, in a header-defined function too; libc's
// frames get theirs from libc6-dbg's separate debug file; suppressions match the file; the JSON
// report carries file and line and `interposer report` renders them back.
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class SourceLineTests
{
    // (address, "file:line") of each LEAK line the program printed.
    private static (string Address, string Where)[] Leaks(string stdout) =>
        stdout.Split('\n').Where(l => l.StartsWith("LEAK ", System.StringComparison.Ordinal))
              .Select(l => l.Split(' ')).Select(p => (p[1], p[2])).ToArray();

    // The report's text for one block: from its header to the next block (or the summary).
    private static string BlockText(string report, string address)
    {
        int at = report.IndexOf($"unreferenced object {address} ", System.StringComparison.Ordinal);
        Assert.That(at, Is.GreaterThanOrEqualTo(0), $"{address} is not reported:\n{report}");
        int next = report.IndexOf("\nunreferenced object ", at + 1, System.StringComparison.Ordinal);
        int summary = report.IndexOf("\nsummary by allocation stack", at + 1, System.StringComparison.Ordinal);
        int end = new[] { next, summary, report.Length }.Where(i => i > 0).Min();
        return report[at..end];
    }

    [TestCase("")]
    [TestCase("-O0")]
    [TestCase("-O2")]
    [TestCase("-gdwarf-4")]
    [TestCase("-O2 -gdwarf-5")]
    public void LeakInACFileBuiltWithG_IsReportedWithItsFileAndLine(string flags)
    {
        using var dir = new TempDir("lines");
        string report = dir.File("r.txt");
        RunResult r = Programs.Run(Programs.Build("symbols/lines.c", flags), System.Array.Empty<string>(), preload: true,
            options: "report_path=" + report);
        E2E.AssertCleanExit(r, "lines " + flags);
        string text = File.ReadAllText(report);
        var leaks = Leaks(r.Stdout);
        Assert.That(leaks, Has.Length.EqualTo(3));
        foreach (var (address, where) in leaks)
        {
            string block = BlockText(text, address);
            Assert.That(block, Does.Match(@"\] \S+\+0x[0-9a-f]+ \(\S+lines[^ )]*\) " + Regex.Escape(where) + "\n"),
                $"the block allocated at {where} names that line");
        }
        Assert.That(leaks.Select(l => l.Where), Has.Some.Contains("lines_helper.h:"), "a function defined in a header");
        // strdup's own frame is in libc: its line comes from libc6-dbg (build-id debug file).
        string strdupBlock = BlockText(text, leaks[1].Address);
        Assert.That(strdupBlock, Does.Match(@"\] (__)?strdup\+0x[0-9a-f]+ \(\S+libc\.so\.6\) \S*strdup\.c:\d+\n"), strdupBlock);
    }

    // The table is built in the host's memory, so a big one is refused. libc6-dbg's .debug_line is
    // 1.3 MiB inflated: over a 1 MiB limit; the program's own is a few hundred bytes.
    [Test]
    public void LineTableOverTheLimit_IsNotRead_AndSaidOnce()
    {
        using var dir = new TempDir("lines-limit");
        string report = dir.File("r.txt");
        RunResult r = Programs.Run(Programs.Build("symbols/lines.c"), System.Array.Empty<string>(), preload: true,
            options: $"report_path={report}:max_line_table_mb=1");
        E2E.AssertCleanExit(r, "lines with max_line_table_mb=1");
        string text = File.ReadAllText(report);
        var (address, where) = Leaks(r.Stdout)[1]; // the strdup leak
        string block = BlockText(text, address);
        Assert.That(block, Does.Contain(" " + where + "\n"), "the program's own line table is small: still read");
        Assert.That(block, Does.Match(@"\] (__)?strdup\+0x[0-9a-f]+ \(\S+libc\.so\.6\)\n"), "libc's frame: no file:line\n" + block);
        Assert.That(Regex.Matches(r.Stderr, @"\.debug_line is \d+ MiB, over max_line_table_mb=1").Count, Is.EqualTo(1), r.Stderr);
    }

    [Test]
    public void SuppressionMatchesTheSourceFile()
    {
        using var dir = new TempDir("lines-supp");
        string report = dir.File("r.txt"), rules = dir.File("supp.txt");
        File.WriteAllText(rules, "leak:lines_helper.h\n");
        RunResult r = Programs.Run(Programs.Build("symbols/lines.c"), System.Array.Empty<string>(), preload: true,
            options: $"report_path={report}:suppressions={rules}");
        E2E.AssertCleanExit(r, "lines with a file suppression");
        string text = File.ReadAllText(report);
        var leaks = Leaks(r.Stdout);
        string helper = leaks.Single(l => l.Where.Contains("lines_helper.h")).Address;
        Assert.That(LeakScanTests.Outcome.Objects(text), Is.EquivalentTo(leaks.Select(l => l.Address).Where(a => a != helper)), text);
        Assert.That(text, Does.Contain("suppressed by leak:lines_helper.h: 1 blocks"));
    }

    [Test]
    public void JsonCarriesFileAndLine_AndTheCliRendersThem()
    {
        using var dir = new TempDir("lines-json");
        string report = dir.File("r.json");
        RunResult r = Programs.Run(Programs.Build("symbols/lines.c"), System.Array.Empty<string>(), preload: true,
            options: $"report_path={report}:report_format=json");
        E2E.AssertCleanExit(r, "lines json");
        var (_, where) = Leaks(r.Stdout)[0];
        string file = where[..where.LastIndexOf(':')];
        int line = int.Parse(where[(where.LastIndexOf(':') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(report));
        var frames = doc.RootElement.GetProperty("blocks").EnumerateArray().SelectMany(b => b.GetProperty("frames").EnumerateArray());
        Assert.That(frames.Any(f => f.TryGetProperty("file", out var fl) && fl.GetString() == file &&
                                    f.GetProperty("line").GetInt32() == line), Is.True, "a frame with file and line");
        RunResult text = Programs.Run(Path.Combine(Artifacts.RepoRoot, "artifacts", "bin", "interposer"), new[] { "report", report }, preload: false);
        Assert.That(text.Stdout, Does.Contain(" " + where + "\n"), text.ToString());
    }
}
