// CliTests.cs — artifacts/bin/interposer (src/Cli): run exits 1 with leaks and 0 without, scan
// asks a running process through its control socket, report re-renders a JSON report (and its JSON
// round-trips), diff shows what is new or grown; --help everywhere, bad usage exits 2.
using System;
using System.IO;
using System.Linq;
using System.Text.Json;
using System.Text.Json.Nodes;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class CliTests
{
    private static string Tool => Path.Combine(Artifacts.RepoRoot, "artifacts", "bin", "interposer");
    private static string Roots => Programs.Build("scan/roots.c");

    private static RunResult Cli(params string[] args) =>
        Programs.Run(Tool, args, preload: false, env: new System.Collections.Generic.Dictionary<string, string>
        {
            ["INTERPOSER_LIB_DIR"] = Path.GetDirectoryName(Artifacts.Library)!,
        });

    [Test]
    public void Run_ALeakyProgram_PrintsItsLeaks_Exits1()
    {
        RunResult r = Cli("run", "--color=never", "--", Roots, "exit_leak", "unused");
        Assert.That(r.ExitCode, Is.EqualTo(1), r.ToString());
        Assert.That(r.Stdout, Does.Contain("unreferenced object 0x").And.Contain("make_leak+0x"));
        Assert.That(r.Stdout, Does.Contain("summary: 1 unreferenced blocks"));
        Assert.That(r.Stdout, Does.Not.Contain("\u001b["), "no colour when not on a terminal");
        // The library names the report file on stderr; it must still be there.
        string named = System.Text.RegularExpressions.Regex.Match(r.Stderr, @"\(see (\S+)\)").Groups[1].Value;
        Assert.That(File.Exists(named), Is.True, "the report the library named: " + r.Stderr);
    }

    [Test]
    public void Run_ReportOption_PutsTheReportThere()
    {
        using var dir = new TempDir("cli-run-report");
        RunResult r = Cli("run", "--report=" + dir.File("leaks.%p.txt"), "--", Roots, "exit_leak", "unused");
        Assert.That(r.ExitCode, Is.EqualTo(1), r.ToString());
        string[] files = Directory.GetFiles(dir.Path, "leaks.*.txt");
        Assert.That(files, Has.Length.EqualTo(1));
        Assert.That(File.ReadAllText(files[0]), Does.Contain("make_leak+0x"));
    }

    [Test]
    public void Run_ACleanProgram_Exits0_AndLeakExitcodeIsConfigurable()
    {
        RunResult clean = Cli("run", "--", "/bin/echo", "hello");
        Assert.That(clean.ExitCode, Is.Zero, clean.ToString());
        Assert.That(clean.Stdout, Does.StartWith("hello\n").And.Contain("summary: 0 unreferenced blocks"));
        RunResult custom = Cli("run", "--leak-exitcode=23", "--color=always", "--", Roots, "exit_leak", "unused");
        Assert.That(custom.ExitCode, Is.EqualTo(23));
        Assert.That(custom.Stdout, Does.Contain("\u001b[1;31munreferenced object"), "--color=always");
    }

    [Test]
    public void Scan_ARunningProcess_PrintsItsReport()
    {
        using var dir = new TempDir("cli-scan");
        string sock = dir.File("ctl.sock");
        string script = $"""
            cd {Programs.Quote(dir.Path)}
            mkfifo in.fifo
            env LD_PRELOAD={Programs.Quote(Artifacts.Library)} INTERPOSER_OPTIONS=control_path={Programs.Quote(sock)}:report_path={Programs.Quote(dir.File("r.txt"))} {Programs.Quote(Roots)} serve x < in.fifo > out.txt &
            pid=$!
            exec 3> in.fifo
            for i in $(seq 1 300); do [ -S {Programs.Quote(sock)} ] && grep -q READY out.txt && break; sleep 0.1; done
            INTERPOSER_LIB_DIR={Programs.Quote(Path.GetDirectoryName(Artifacts.Library)!)} {Programs.Quote(Tool)} scan $pid --socket={Programs.Quote(sock)} --color=never
            echo "scan-exit=$?"
            exec 3>&-
            wait $pid
            """;
        RunResult r = Programs.Shell(script, preload: false, timeoutSeconds: 120);
        Assert.That(r.Stdout, Does.Contain("scan-exit=1"), r.ToString());
        Assert.That(r.Stdout, Does.Contain("make_leak+0x").And.Contain("summary: 1 unreferenced blocks"));
        RunResult missing = Cli("scan", "999999", "--socket=/nonexistent.sock");
        Assert.That(missing.ExitCode, Is.EqualTo(2));
        Assert.That(missing.Stderr, Does.Contain("no control socket at /nonexistent.sock"));
    }

    [Test]
    public void Report_JsonRoundTrips_TextAndSummaryRender()
    {
        using var dir = new TempDir("cli-report");
        string json = dir.File("r.json");
        RunResult prog = Programs.Run(Roots, new[] { "tree", json }, preload: true, options: $"report_path={json}:report_format=json");
        E2E.AssertCleanExit(prog, "tree");
        RunResult again = Cli("report", json, "--format=json");
        Assert.That(again.ExitCode, Is.Zero, again.ToString());
        Assert.That(JsonNode.DeepEquals(JsonNode.Parse(File.ReadAllText(json)), JsonNode.Parse(again.Stdout)), Is.True,
            "report --format=json gives back the same document");
        RunResult text = Cli("report", json, "--format=text", "--color=never");
        Assert.That(LeakScanTests.Outcome.Objects(text.Stdout), Has.Length.EqualTo(5));
        Assert.That(text.Stdout, Does.Contain("  indirect: only other unreferenced blocks point to it"));
        RunResult summary = Cli("report", json, "--format=summary", "--color=never");
        Assert.That(summary.Stdout, Does.Not.Contain("unreferenced object").And.Contain("128 bytes in 4 blocks (indirect) allocated from:"));
        RunResult bad = Cli("report", Roots);
        Assert.That(bad.ExitCode, Is.EqualTo(2));
        Assert.That(bad.Stderr, Does.Contain("malformed JSON leak report").Or.Contain("is not a JSON leak report"));
    }

    [Test]
    public void Diff_ShowsNewAndGrownStacks()
    {
        using var dir = new TempDir("cli-diff");
        string a = dir.File("a.json"), b = dir.File("b.json");
        E2E.AssertCleanExit(Programs.Run(Roots, new[] { "leak", a }, preload: true, options: $"report_path={a}:report_format=json"), "leak");
        E2E.AssertCleanExit(Programs.Run(Roots, new[] { "threads16", b }, preload: true, options: $"report_path={b}:report_format=json"), "threads16");
        RunResult same = Cli("diff", a, a);
        Assert.That(same.ExitCode, Is.Zero, same.ToString());
        Assert.That(same.Stdout, Does.Contain("diff: 0 new stacks, 0 grown, 0 gone"));
        RunResult d = Cli("diff", a, b, "--color=never");
        Assert.That(d.ExitCode, Is.EqualTo(1), d.ToString());
        Assert.That(d.Stdout, Does.Contain("new: 768 bytes in 16 blocks (direct), allocated from:"));
        Assert.That(d.Stdout, Does.Contain("diff: 1 new stacks, 0 grown, 1 gone"));
    }

    [TestCase("--help")]
    [TestCase("run", "--help")]
    [TestCase("scan", "--help")]
    [TestCase("report", "--help")]
    [TestCase("diff", "--help")]
    public void Help_Everywhere(params string[] args)
    {
        RunResult r = Cli(args);
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(r.Stdout, Does.Contain("interposer"));
    }

    [TestCase("frobnicate")]
    [TestCase("run", "--bogus", "--", "/bin/true")]
    [TestCase("scan")]
    [TestCase("diff", "one")]
    public void BadUsage_Exits2_WithAMessage(params string[] args)
    {
        RunResult r = Cli(args);
        Assert.That(r.ExitCode, Is.EqualTo(2), r.ToString());
        Assert.That(r.Stderr, Does.StartWith("interposer: "));
    }
}
