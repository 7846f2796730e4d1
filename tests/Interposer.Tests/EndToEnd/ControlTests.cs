// ControlTests.cs — the control socket (kmemleak's debugfs commands, issue 5; other users refused,
// issue 4). A leaking program waits on stdin while tests/programs/control/ctl.py sends commands.
using System;
using System.IO;
using System.Linq;
using Interposer.Control;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class ControlTests
{
    private static string Q(string s) => Programs.Quote(s);

    /// <summary>Runs `roots serve` with its control socket in dir, then `commands` (bash; $ctl
    /// sends one command), then ends the program. Returns the script's output.</summary>
    private static RunResult Session(TempDir dir, string commands, string extraOptions = "")
    {
        string roots = Programs.Build("scan/roots.c");
        string sock = dir.File("ctl.sock");
        string ctl = Path.Combine(Artifacts.ProgramsDir, "control", "ctl.py");
        string options = $"report_path={dir.File("report.txt")}:control_path={sock}{extraOptions}";
        string script = $"""
            cd {Q(dir.Path)}
            mkfifo in.fifo || exit 90
            env LD_PRELOAD={Q(Artifacts.Library)} INTERPOSER_OPTIONS={Q(options)} {Q(roots)} serve {Q(dir.File("report.txt"))} < in.fifo > out.txt 2> err.txt &
            pid=$!
            exec 3> in.fifo
            for i in $(seq 1 300); do grep -q READY out.txt 2>/dev/null && [ -S {Q(sock)} ] && break; sleep 0.1; done
            ctl() {"{"} python3 {Q(ctl)} {Q(sock)} "$1"; {"}"}
            {commands}
            exec 3>&-
            wait $pid
            echo "exit=$?"
            [ -e {Q(sock)} ] && echo "socket left behind" || echo "socket removed"
            """;
        return Programs.Shell(script.Replace("\r\n", "\n"), preload: false, timeoutSeconds: 120);
    }

    [Test]
    public void EveryCommandWorks_ABadOneIsRefusedAndChangesNothing()
    {
        using var dir = new TempDir("ctl");
        RunResult r = Session(dir, """
            echo "[stat] $(stat -c %a ctl.sock)"
            echo "[scan] $(ctl scan)"
            leak=$(grep '^LEAK ' out.txt | cut -d' ' -f2)
            echo "[dump] $(ctl dump=$leak | tr '\n' '|')"
            echo "[bad] $(ctl 'frobnicate=1')"
            echo "[bad2] $(ctl 'scan=0')"
            echo "[stack] $(ctl stack=off) $(ctl stack=on)"
            echo "[period] $(ctl scan=3600) $(ctl scan=off)"
            echo "[clear] $(ctl clear)"
            echo "[after clear] $(ctl scan)"
            echo "[off] $(ctl off)"
            echo "[after off] $(ctl scan)"
            """);
        string o = r.Stdout;
        Assert.That(o, Does.Contain("exit=0"), r + File.ReadAllText(dir.File("err.txt")));
        Assert.Multiple(() =>
        {
            Assert.That(o, Does.Contain("[stat] 600"), "created 0600");
            Assert.That(o, Does.Contain("[scan] ok: 1 unreferenced blocks; report in " + dir.File("report.txt")));
            Assert.That(o, Does.Match(@"\[dump\] ok: object 0x[0-9a-f]+ \(size 48\):\|  comm ""roots"".*\|  min_count 1, flags \w+\|  backtrace \(crc [0-9a-f]+\):\|    \[<0x[0-9a-f]+>\] make_leak\+0x"));
            Assert.That(o, Does.Contain("[bad] error: unknown command 'frobnicate=1'; commands: scan, clear, dump=<addr>, stack=on|off, scan=on|off|<secs>, off"));
            Assert.That(o, Does.Contain("[bad2] error: scan= takes on, off or a number of seconds 1..86400, not '0'"));
            Assert.That(o, Does.Contain("[stack] ok: stack scanning off ok: stack scanning on"));
            Assert.That(o, Does.Contain("[period] ok: scanning every 3600 s ok: periodic scans off"));
            Assert.That(o, Does.Contain("[clear] ok: 1 unreferenced blocks marked as seen"));
            Assert.That(o, Does.Contain("[after clear] ok: 0 unreferenced blocks"), "clear: the leak is not reported again");
            Assert.That(o, Does.Contain("[off] ok: tracking is off for good"));
            Assert.That(o, Does.Contain("[after off] error: tracking is off in this process"));
            Assert.That(o, Does.Contain("socket removed"), "the socket goes with the process");
        });
    }

    // A program that closes every descriptor above 2 (as daemons do at start) and then opens a
    // pipe, which takes the numbers our wake descriptor and control socket had (3, 4). Before
    // OUR DESCRIPTORS (fds.c) the scanner polled and read the program's pipe: it took the first
    // 8 bytes the program wrote there (and the program then hung reading it), and kill -USR2 woke
    // nothing. The runtime's own /dev/urandom, kept open after the first scan, sat at a low number
    // too. Now nothing of ours is below 900 (nor near the descriptor limit: the table stays at 1024
    // slots, see high_base in fds.c), the program reads back all its bytes, the
    // scan signal still scans, and the control socket comes back.
    [Test]
    public void AProgramThatClosesEveryDescriptor_KeepsItsOwnPipe_AndScansStillWork()
    {
        using var dir = new TempDir("closefds");
        string program = Programs.Build("e2e/close_all_fds.c");
        string sock = dir.File("ctl.sock");
        string ctl = Path.Combine(Artifacts.ProgramsDir, "control", "ctl.py");
        string options = $"report_path={dir.File("report.txt")}:control_path={sock}";
        string script = $"""
            cd {Q(dir.Path)}
            mkfifo in.fifo || exit 90
            ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
            echo "[limit] $(ulimit -n)"
            env LD_PRELOAD={Q(Artifacts.Library)} INTERPOSER_OPTIONS={Q(options)} {Q(program)} < in.fifo > out.txt 2> err.txt &
            pid=$!
            exec 3> in.fifo
            for i in $(seq 1 300); do grep -q READY out.txt 2>/dev/null && break; sleep 0.1; done
            kill -USR2 $pid
            for i in $(seq 1 100); do [ -s report.txt ] && break; sleep 0.1; done
            [ -s report.txt ] && echo "[signal] report written" || echo "[signal] no report"
            for i in $(seq 1 100); do
                answer=$(python3 {Q(ctl)} {Q(sock)} scan 2>/dev/null) && break
                sleep 0.1
            done
            echo "[scan] $answer"
            exec 3>&-
            wait $pid
            echo "exit=$?"
            """;
        RunResult r = Programs.Shell(script.Replace("\r\n", "\n"), preload: false, timeoutSeconds: 120);
        string o = r.Stdout;
        string output = File.ReadAllText(dir.File("out.txt"));
        string leak = output.Split('\n').Single(l => l.StartsWith("LEAK ")).Substring(5);
        Assert.Multiple(() =>
        {
            Assert.That(o, Does.Contain("exit=0"), r + File.ReadAllText(dir.File("err.txt")));
            Assert.That(output, Does.Contain("LOW 0\n"), "after a scan, a descriptor of ours sits where the program's next open lands");
            int fdSize = int.Parse(output.Split('\n').Single(l => l.StartsWith("FDSIZE ")).Substring(7));
            Assert.That(fdSize, Is.LessThanOrEqualTo(1024), $"the descriptor table was grown toward the soft limit ({o.Split('\n').FirstOrDefault(l => l.StartsWith("[limit]"))})");
            Assert.That(output, Does.Contain("FDS 3 4\n"), "the program's pipe took the lowest numbers");
            Assert.That(output, Does.Contain("PIPE 40 the program's own bytes, all 40 of them!\n"), "the program's pipe was read by someone else");
            Assert.That(o, Does.Contain("[signal] report written"), "the scan signal no longer scans");
            Assert.That(o, Does.Contain("[scan] ok: 1 unreferenced blocks; report in " + dir.File("report.txt")), "the control socket did not come back");
            Assert.That(LeakScanTests.Outcome.Objects(File.ReadAllText(dir.File("report.txt"))), Is.EquivalentTo(new[] { leak }));
            Assert.That(File.ReadAllText(dir.File("err.txt")), Is.Empty, "nothing to say at verbosity 0");
        });
    }

    [Test]
    public void AnotherUser_IsRefused()
    {
        using var dir = new TempDir("ctl-user");
        File.SetUnixFileMode(dir.Path, (UnixFileMode)Convert.ToInt32("755", 8)); // nobody may look in
        string ctl = Path.Combine(Artifacts.ProgramsDir, "control", "ctl.py");
        RunResult r = Session(dir, $"""
            echo "[nobody] $(setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 {Q(ctl)} {Q(dir.File("ctl.sock"))} scan 2>&1 | tail -1)"
            echo "[owner] $(ctl scan)"
            """);
        Assert.That(r.Stdout, Does.Contain("[nobody] PermissionError"), r.ToString());
        Assert.That(r.Stdout, Does.Contain("[owner] ok: 1 unreferenced blocks"));
        Assert.That(File.Exists(dir.File("report.txt")), Is.True);
    }

    [Test]
    public void PlantedFileAtTheSocketPath_IsNotReplaced()
    {
        using var dir = new TempDir("ctl-planted");
        File.WriteAllText(dir.File("ctl.sock"), "not a socket");
        RunResult r = Session(dir, "echo \"[content] $(cat ctl.sock)\"");
        Assert.That(r.Stdout, Does.Contain("[content] not a socket"));
        Assert.That(File.ReadAllText(dir.File("err.txt")), Does.Contain("not replacing an existing file with the control socket"));
    }

    // ---- the parser ----------------------------------------------------------------------------

    [TestCase("scan", "Scan")]
    [TestCase("  scan  ", "Scan")]
    [TestCase("clear", "Clear")]
    [TestCase("off", "Off")]
    [TestCase("dump=0x7f00deadbeef", "Dump")]
    [TestCase("dump=7f00deadbeef", "Dump")]
    [TestCase("stack=on", "Stack")]
    [TestCase("scan=on", "Periodic")]
    [TestCase("scan=86400", "Periodic")]
    public void Parse_Valid(string line, string verb)
    {
        Assert.That(ControlCommand.TryParse(line, out ControlCommand c, out string error), Is.True, error);
        Assert.That(c.Verb.ToString(), Is.EqualTo(verb));
    }

    [TestCase("")]
    [TestCase("scanx")]
    [TestCase("scan=86401")]
    [TestCase("scan=-1")]
    [TestCase("dump=")]
    [TestCase("dump=0xZZ")]
    [TestCase("dump=0x11112222333344445")]
    [TestCase("stack=maybe")]
    [TestCase("off=1")]
    [TestCase("clear=now")]
    public void Parse_Invalid_OneLineError(string line)
    {
        Assert.That(ControlCommand.TryParse(line, out _, out string error), Is.False);
        Assert.That(error, Does.StartWith("error: ").And.Not.Contain("\n"));
    }
}
