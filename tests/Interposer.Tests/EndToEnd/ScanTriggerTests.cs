// ScanTriggerTests.cs — what starts a scan (issue 3): the scan signal (kill -USR2), another signal
// chosen with scan_signal, scan_interval_s (periodic scans that log only new leaks and say when a
// block is referenced again), report_at_exit; and what happens when the trigger cannot work: the
// program ignores or blocks the signal, the report path cannot be written.
// Also: python3 and sqlite3 under load, scanned 50 times each, stay healthy.
using System;
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class ScanTriggerTests
{
    private static string Roots => Programs.Build("scan/roots.c");
    private static string Q(string s) => Programs.Quote(s);

    /// <summary>
    /// Starts `roots serve`-like modes in the background with stdin held open by a FIFO, waits for
    /// READY, runs `then` (with $pid set), closes stdin, and waits. Output goes to out.txt/err.txt.
    /// </summary>
    private static RunResult Serve(TempDir dir, string mode, string options, string then)
    {
        string script = $"""
            cd {Q(dir.Path)}
            mkfifo in.fifo || exit 90
            env LD_PRELOAD={Q(Artifacts.Library)} INTERPOSER_OPTIONS={Q(options)} {Q(Roots)} {mode} {Q(dir.File("report.txt"))} < in.fifo > out.txt 2> err.txt &
            pid=$!
            exec 3> in.fifo
            for i in $(seq 1 300); do grep -q READY out.txt 2>/dev/null && break; sleep 0.1; done
            grep -q READY out.txt || ( echo "never ready"; kill $pid; exit 91 ) || exit 91
            {then}
            exec 3>&-
            wait $pid
            echo "exit=$?"
            """;
        return Programs.Shell(script.Replace("\r\n", "\n"), preload: false, timeoutSeconds: 120);
    }

    private static string WaitForFile(string name) =>
        $"for i in $(seq 1 300); do [ -s {name} ] && break; sleep 0.1; done";

    [Test]
    public void ScanSignal_WritesTheReport_AndTheProgramGoesOn()
    {
        using var dir = new TempDir("trigger-usr2");
        RunResult r = Serve(dir, "serve", "report_path=" + dir.File("report.txt"),
            $"kill -USR2 $pid\n{WaitForFile("report.txt")}");
        Assert.That(r.Stdout, Does.Contain("exit=0"), r + File.ReadAllText(dir.File("err.txt")));
        string report = File.ReadAllText(dir.File("report.txt"));
        string leak = File.ReadAllLines(dir.File("out.txt")).Single(l => l.StartsWith("LEAK ")).Substring(5);
        Assert.That(LeakScanTests.Outcome.Objects(report), Is.EquivalentTo(new[] { leak }), report);
        LeakScanTests.AssertSummary(report, 1);
        Assert.That(File.ReadAllText(dir.File("err.txt")), Is.Empty, "a scan is silent on stderr");
    }

    [Test]
    public void ScanSignalOption_ChoosesAnotherSignal()
    {
        using var dir = new TempDir("trigger-usr1");
        RunResult r = Serve(dir, "serve", "scan_signal=USR1:report_path=" + dir.File("report.txt"),
            $"kill -USR1 $pid\n{WaitForFile("report.txt")}");
        Assert.That(r.Stdout, Does.Contain("exit=0"), r.ToString());
        Assert.That(LeakScanTests.Outcome.Objects(File.ReadAllText(dir.File("report.txt"))), Has.Length.EqualTo(1));
    }

    [Test]
    public void ScanSignalOff_LeavesUsr2ToTheProgram()
    {
        using var dir = new TempDir("trigger-off");
        // With no handler of ours, SIGUSR2's default action ends the program, as without the library.
        RunResult r = Serve(dir, "serve", "scan_signal=off:report_path=" + dir.File("report.txt"), "kill -USR2 $pid; sleep 0.5");
        Assert.That(r.Stdout, Does.Contain("exit=" + (128 + 12)), r.ToString());
        Assert.That(File.Exists(dir.File("report.txt")), Is.False);
    }

    [Test]
    public void ProgramIgnoresTheSignal_SaidOnceOnStderr()
    {
        using var dir = new TempDir("trigger-ignored");
        RunResult r = Serve(dir, "ignore_signal", "report_path=" + dir.File("report.txt"),
            "kill -USR2 $pid; sleep 5; kill -USR2 $pid; sleep 0.5");
        Assert.That(r.Stdout, Does.Contain("exit=0"), r.ToString());
        string err = File.ReadAllText(dir.File("err.txt"));
        Assert.That(Regex.Matches(err, "ignores the scan signal").Count, Is.EqualTo(1), err);
        Assert.That(err, Does.Contain("scan_signal="), "the message says what to do");
    }

    [Test]
    public void ProgramBlocksTheSignal_SaidOnceOnStderr_AndItStaysPendingForTheProgram()
    {
        using var dir = new TempDir("trigger-blocked");
        RunResult r = Serve(dir, "block_signal", "report_path=" + dir.File("report.txt"),
            "kill -USR2 $pid; sleep 5; grep ShdPnd /proc/$pid/status");
        Assert.That(r.Stdout, Does.Contain("exit=0"), r.ToString());
        string err = File.ReadAllText(dir.File("err.txt"));
        Assert.That(Regex.Matches(err, "blocks the scan signal").Count, Is.EqualTo(1), err);
        Assert.That(r.Stdout, Does.Match(@"ShdPnd:\s*0*800\b"), "SIGUSR2 is still pending for the program (our threads never take it)");
        Assert.That(File.Exists(dir.File("report.txt")), Is.False);
    }

    [Test]
    public void Periodic_LogsOnlyNewLeaks_AndReferencedAgain()
    {
        using var dir = new TempDir("trigger-periodic");
        string report = dir.File("report.txt");
        RunResult r = Programs.Run(Roots, new[] { "periodic", report }, preload: true,
            options: $"scan_interval_s=1:report_path={report}", timeoutSeconds: 60);
        E2E.AssertCleanExit(r, "periodic");
        string first = r.Stdout.Split('\n').Single(l => l.StartsWith("LEAK ")).Substring(5);
        string second = r.Stdout.Split('\n').Single(l => l.StartsWith("LEAK2 ")).Substring(6);
        string[] news = E2E.LibraryLines(r).Where(l => l.Contains("new suspected memory leaks")).ToArray();
        Assert.That(news, Has.Length.EqualTo(2), "one stderr line per scan that found something new:\n" + r.Stderr);
        Assert.That(news, Has.All.Contains("1 new suspected memory leaks"));
        string text = File.ReadAllText(report);
        // The last report written is the one that saw LEAK2 come back; neither leak is listed again.
        Assert.That(text, Does.Contain($"referenced again: object {second} (size 99)"), text);
        Assert.That(LeakScanTests.Outcome.Objects(text), Has.None.EqualTo(first), "a periodic scan lists a leak once");
    }

    [Test]
    public void ReportAtExit_ListsTheLeaksAtExit()
    {
        using var dir = new TempDir("trigger-exit");
        string report = dir.File("report.txt");
        RunResult r = Programs.Run(Roots, new[] { "exit_leak", report }, preload: true,
            options: $"report_at_exit=1:report_path={report}", timeoutSeconds: 60);
        E2E.AssertCleanExit(r, "exit_leak");
        string leak = r.Stdout.Split('\n').Single(l => l.StartsWith("LEAK ")).Substring(5);
        string text = File.ReadAllText(report);
        Assert.That(LeakScanTests.Outcome.Objects(text), Is.EquivalentTo(new[] { leak }), text);
        Assert.That(text.TrimEnd().Split('\n').Last(), Does.Contain("exit scan"));
        Assert.That(r.Stderr, Does.Contain("interposer: 1 unreferenced blocks at exit (see " + report + ")"));
    }

    [Test]
    public void NoTrigger_NoReport()
    {
        using var dir = new TempDir("trigger-none");
        string report = dir.File("report.txt");
        RunResult r = Programs.Run(Roots, new[] { "exit_leak", report }, preload: true, options: $"report_path={report}");
        E2E.AssertCleanExit(r, "exit_leak");
        Assert.That(File.Exists(report), Is.False, "report_at_exit is off by default");
        E2E.AssertNoLibraryMessages(r, "exit_leak");
    }

    [Test]
    public void UnwritableReportPath_SaidOnStderr_ProgramUnchanged()
    {
        using var dir = new TempDir("trigger-unwritable");
        string report = dir.File("missing-dir/report.txt");
        RunResult r = Programs.Run(Roots, new[] { "leak", report }, preload: true, options: $"report_path={report}");
        E2E.AssertCleanExit(r, "leak");
        Assert.That(r.Stdout, Does.Contain("SCANNED -1"), "interposer_scan reports the failure");
        Assert.That(E2E.LibraryLines(r), Has.Some.Contains(report).And.Some.Contains("the next scan tries again"), r.Stderr);
    }

    [Test]
    public void DefaultReportPath_IsUnderTmpdir()
    {
        using var dir = new TempDir("trigger-default");
        RunResult r = Programs.Run(Roots, new[] { "leak", "unused" }, preload: true,
            env: new System.Collections.Generic.Dictionary<string, string> { ["TMPDIR"] = dir.Path });
        E2E.AssertCleanExit(r, "leak");
        string pid = r.Stdout.Split('\n').Single(l => l.StartsWith("PID ")).Substring(4);
        string expected = Path.Combine(dir.Path, $"interposer-leaks.{pid}.txt");
        Assert.That(File.Exists(expected), Is.True, $"{expected} missing; directory has: {string.Join(", ", Directory.GetFiles(dir.Path))}");
        Assert.That(File.GetUnixFileMode(expected), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite), "0600");
    }

    // ---- real programs under load ---------------------------------------------------------------

    [Test]
    public void Python3WithSqlite_Scanned50TimesUnderLoad_StaysHealthy()
    {
        using var dir = new TempDir("trigger-python");
        string report = dir.File("report.txt");
        // A worker thread keeps sqlite3 busy while the main thread asks for 50 scans (interposer_scan
        // through ctypes waits for each one). The final answer checks sqlite's data is intact.
        string code = """
            import ctypes, sqlite3, threading
            lib = ctypes.CDLL(None)
            stop = False
            def work():
                c = sqlite3.connect(":memory:")
                c.execute("create table t(k integer primary key, v text)")
                i = 0
                while not stop:
                    c.execute("insert into t(v) values (?)", ("x" * (i % 300),))
                    if i % 500 == 0:
                        c.execute("delete from t where k % 3 = 0")
                    i += 1
                print("rows", c.execute("select count(*) from t").fetchone()[0] > 0)
            t = threading.Thread(target=work)
            t.start()
            rcs = [lib.interposer_scan() for _ in range(50)]
            stop = True
            t.join()
            print("scans", rcs.count(0))
            """;
        RunResult r = Programs.Run("python3", new[] { "-c", code }, preload: true,
            options: $"report_path={report}", timeoutSeconds: 300);
        E2E.AssertCleanExit(r, "python3");
        Assert.That(r.Stdout, Does.Contain("scans 50"), r.ToString());
        Assert.That(r.Stdout, Does.Contain("rows True"), r.ToString());
        E2E.AssertNoLibraryMessages(r, "python3");
        LeakScanTests.AssertSummary(File.ReadAllText(report), 0);
    }

    [Test]
    public void Sqlite3Cli_Signalled50Times_StaysHealthy()
    {
        using var dir = new TempDir("trigger-sqlite");
        string report = dir.File("report.txt");
        // sqlite3 reads SQL from a FIFO we keep open; between statements the test sends USR2 and
        // waits for each scan's stderr line (verbosity=1), so all 50 scans run, none coalesced.
        string script = $"""
            cd {Q(dir.Path)}
            mkfifo in.fifo || exit 90
            env LD_PRELOAD={Q(Artifacts.Library)} INTERPOSER_OPTIONS={Q("verbosity=1:report_path=" + report)} sqlite3 :memory: < in.fifo > out.txt 2> err.txt &
            pid=$!
            exec 3> in.fifo
            # Signals sent before the library installed its handler would kill sqlite3: wait for it.
            for i in $(seq 1 300); do
              cgt=$(grep '^SigCgt' /proc/$pid/status 2>/dev/null | cut -f2)
              [ -n "$cgt" ] && [ $(( 0x$cgt & 0x800 )) -ne 0 ] && break
              sleep 0.05
            done
            echo "create table t(k integer primary key, v text);" >&3
            for i in $(seq 1 50); do
              echo "insert into t(v) select hex(randomblob(100)) from (select 1 union select 2 union select 3);" >&3
              echo "delete from t where k % 4 = 0;" >&3
              kill -USR2 $pid
              for j in $(seq 1 200); do [ $(grep -c 'interposer: scan:' err.txt) -ge $i ] && break; sleep 0.05; done
            done
            echo "select count(*) > 0 from t;" >&3
            exec 3>&-
            wait $pid
            echo "exit=$?"
            echo "scans=$(grep -c 'interposer: scan:' err.txt)"
            cat out.txt
            """;
        RunResult r = Programs.Shell(script.Replace("\r\n", "\n"), preload: false, timeoutSeconds: 300);
        Assert.That(r.Stdout, Does.Contain("exit=0"), r + File.ReadAllText(dir.File("err.txt")));
        Assert.That(r.Stdout, Does.Contain("scans=50"), r + File.ReadAllText(dir.File("err.txt")));
        Assert.That(r.Stdout.TrimEnd(), Does.EndWith("1"), "sqlite3 answered the last query");
        LeakScanTests.AssertSummary(File.ReadAllText(report), Outcome(report));
    }

    private static int Outcome(string report) => LeakScanTests.Outcome.Objects(File.ReadAllText(report)).Length;
}
