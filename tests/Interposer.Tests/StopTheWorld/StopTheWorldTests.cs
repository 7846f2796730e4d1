// Stop-the-world (native-shim/stw.c) driven through tests/programs/stw/stw_probe.c, which compiles
// stw.c straight into the probe (no libinterposer.so, no managed core). Each probe mode prints one
// "<tag> key=value ..." line per fact; the tests assert on those facts. Timings are printed to
// the test output, never asserted, except the contract bound "returns within the timeout"
// (checked with a generous margin).
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.StopTheWorld;

/// <summary>The probe's output: lines of "tag key=value key=value ...".</summary>
internal sealed class ProbeOutput
{
    private readonly List<(string Tag, Dictionary<string, string> Fields, string Text)> _lines = new();

    public string Text { get; }

    public ProbeOutput(string stdout)
    {
        Text = stdout;
        foreach (string raw in stdout.Split('\n'))
        {
            string line = raw.Trim();
            if (line.Length == 0) continue;
            string[] parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var fields = new Dictionary<string, string>();
            foreach (string p in parts.Skip(1))
            {
                int eq = p.IndexOf('=');
                if (eq > 0) fields[p.Substring(0, eq)] = p.Substring(eq + 1);
                else fields[p] = "";
            }
            _lines.Add((parts[0], fields, line));
        }
    }

    public IEnumerable<Dictionary<string, string>> All(string tag) =>
        _lines.Where(l => l.Tag == tag).Select(l => l.Fields);

    /// <summary>The one line with this tag (and, for "E" lines, this first word).</summary>
    public Dictionary<string, string> One(string tag, string? name = null)
    {
        var hits = _lines.Where(l => l.Tag == tag && (name == null || l.Fields.ContainsKey(name))).ToList();
        Assert.That(hits, Has.Count.EqualTo(1), $"exactly one '{tag} {name}' line expected in:\n{Text}");
        return hits[0].Fields;
    }

    public static long Int(Dictionary<string, string> f, string key)
    {
        Assert.That(f.ContainsKey(key), Is.True, $"field {key} missing in {string.Join(' ', f.Select(kv => kv.Key + "=" + kv.Value))}");
        return long.Parse(f[key], CultureInfo.InvariantCulture);
    }

    public static double Double(Dictionary<string, string> f, string key) =>
        double.Parse(f[key], CultureInfo.InvariantCulture);
}

[TestFixture]
public class StopTheWorldTests
{
    private const int BasicTimeoutMs = 300;

    private static string Probe =>
        Programs.Build("stw/stw_probe.c",
            "-O2 -Wextra -Werror " + Path.Combine(Artifacts.ShimDir, "stw.c"));

    private static ProbeOutput RunProbe(string args, int timeoutSeconds = 120)
    {
        RunResult r = Programs.Run(Probe, args, preload: false, timeoutSeconds: timeoutSeconds);
        TestContext.Out.WriteLine($"stw_probe {args}:\n{r.Stdout}");
        Assert.That(r.TimedOut, Is.False, "the probe hung:\n" + r);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.Stdout, Does.Contain("end rc=0"), r.ToString());
        return new ProbeOutput(r.Stdout);
    }

    // One run of the basic scenario serves several tests (it takes ~0.5 s).
    private static readonly Lazy<ProbeOutput> s_basic = new(() => RunProbe("basic"));
    private static readonly Lazy<ProbeOutput> s_errors = new(() => RunProbe("errors"));

    private static List<Dictionary<string, string>> Threads(string kind) =>
        s_basic.Value.All("T").Where(t => t["kind"] == kind).ToList();

    private static void AssertFields(Dictionary<string, string> t, params (string Key, long Value)[] expected)
    {
        string all = string.Join(' ', t.Select(kv => kv.Key + "=" + kv.Value));
        Assert.Multiple(() =>
        {
            foreach (var (key, value) in expected)
                Assert.That(ProbeOutput.Int(t, key), Is.EqualTo(value), $"{key} of: {all}");
        });
    }

    [Test]
    public void InitPicksARealTimeSignalThatIsNeitherTheGcSignalNorSigusr2()
    {
        var init = s_basic.Value.One("init");
        long signo = ProbeOutput.Int(init, "signo"), rtmin = ProbeOutput.Int(init, "rtmin");
        Assert.That(ProbeOutput.Int(init, "rc"), Is.EqualTo(0));
        Assert.That(signo, Is.EqualTo(rtmin + 3));
        Assert.That(signo, Is.Not.EqualTo(12 /* SIGUSR2 */));
    }

    [Test]
    public void SpinningThreadsAreStoppedWithEveryRegisterCaptured()
    {
        var busy = Threads("busy");
        Assert.That(busy, Has.Count.EqualTo(6));
        foreach (var t in busy)
            // regs_ok: rax..r14 hold the thread's markers, r15 its counter's address, rip is inside
            // the asm loop, sp == regs[rsp] and lies inside the thread's stack, and the marker the
            // loop left at sp-120 (red zone) is intact: scanning from sp-128 is safe and needed.
            AssertFields(t, ("listed", 1), ("state", 0), ("regs_ok", 1), ("sp_in_stack", 1),
                         ("sp_eq_rsp", 1), ("frozen", 1), ("resumed", 1));
    }

    [Test]
    public void ThreadWithSigaltstackReportsTheStackPointerOfItsOwnStack()
    {
        var alt = Threads("alt").Single();
        AssertFields(alt, ("alt_set", 1), ("state", 0), ("regs_ok", 1), ("sp_in_stack", 1), ("sp_in_alt", 0),
                     ("frozen", 1), ("resumed", 1));
    }

    [Test]
    public void SleepingThreadsAreStopped_NanosleepReturnsEintr_ReadIsRestarted()
    {
        var sleepers = Threads("sleep");
        Assert.That(sleepers, Has.Count.EqualTo(3));
        foreach (var t in sleepers)
        {
            AssertFields(t, ("state", 0), ("sp_in_stack", 1), ("frozen", 1), ("resumed", 1));
            // The documented cost: nanosleep is never restarted after a handled signal (signal(7)).
            Assert.That(ProbeOutput.Int(t, "eintr"), Is.GreaterThanOrEqualTo(1), "nanosleep should have seen EINTR");
        }
        // SA_RESTART: a read() blocked on a pipe is restarted, never fails with EINTR.
        AssertFields(Threads("read").Single(), ("state", 0), ("sp_in_stack", 1), ("eintr", 0));
    }

    [Test]
    public void ThreadBlockingEverySignalIsReportedRunning_AndNeverParksLater()
    {
        var stop = s_basic.Value.One("stop");
        var blocked = Threads("blocked").Single();
        // state 1, no registers, and it kept running during the stop (it was not stopped)
        AssertFields(blocked, ("listed", 1), ("state", 1), ("regs_zero", 1), ("frozen", 0),
                     // after unblocking, its queued stop signal ran the handler outside any stop:
                     // the handler returned at once instead of parking forever
                     ("done", 1));
        Assert.That(ProbeOutput.Double(stop, "stop_ms"), Is.LessThan(BasicTimeoutMs + 2000),
                    "ip_stw_stop must return within its timeout");
        // the next stop finds it unblocked and stops it like any other thread
        Assert.That(ProbeOutput.Int(s_basic.Value.One("second"), "blocked_state"), Is.EqualTo(0));
    }

    [Test]
    public void ThreadExitingAfterItWasListedIsReportedExited()
    {
        // The probe's "exit" thread blocks the stop signal and exits as soon as one is pending,
        // i.e. after ip_stw_stop listed and signalled it.
        AssertFields(Threads("exit").Single(), ("listed", 1), ("state", 2), ("regs_zero", 1), ("done", 1));
    }

    [Test]
    public void InternalThreadIsNeverStopped()
    {
        AssertFields(Threads("internal").Single(), ("listed", 0), ("frozen", 0), ("resumed", 1));
    }

    [Test]
    public void ThreadMarkedInternalAfterItWasListed_IsLeftOutAndNotWaitedFor()
    {
        // It was signalled (listed) while blocking the signal, then marked itself internal and
        // unblocked: the handler must not park it, and the stop must not report it (as state 1,
        // which would also have cost the whole timeout).
        AssertFields(Threads("late_internal").Single(), ("listed", 0), ("frozen", 0), ("resumed", 1));
    }

    [Test]
    public void ErrnoOfAStoppedThreadIsPreserved()
    {
        AssertFields(Threads("errno").Single(), ("state", 0), ("frozen", 1), ("eintr", 0 /* clobbers */));
    }

    [Test]
    public void EveryThreadOfTheProcessIsListedExceptTheCallerAndInternalOnes()
    {
        var stop = s_basic.Value.One("stop");
        var tasks = s_basic.Value.One("tasks");
        int workers = s_basic.Value.All("T").Count();
        Assert.Multiple(() =>
        {
            Assert.That(ProbeOutput.Int(stop, "n"), Is.EqualTo(workers - 2), "every worker but the two internal ones");
            Assert.That(ProbeOutput.Int(tasks, "unaccounted"), Is.EqualTo(0));
            Assert.That(ProbeOutput.Int(tasks, "extra_listed"), Is.EqualTo(0));
            Assert.That(ProbeOutput.Int(tasks, "self_listed"), Is.EqualTo(0));
        });
        TestContext.Out.WriteLine($"basic stop ({stop["n"]} threads, one blocking every signal): {stop["stop_ms"]} ms; resume {stop["resume_ms"]} ms");
    }

    [TestCase(15, 0, TestName = "HundredCycles_16Threads_Spinning")]
    [TestCase(0, 15, TestName = "HundredCycles_16Threads_BlockedInRead")]
    public void HundredStopResumeCyclesInARow(int spinning, int readers)
    {
        // + one errno-checking thread = 16 threads stopped per cycle
        var o = RunProbe($"cycles {spinning} {readers} 100");
        var c = o.One("cycles");
        AssertFields(c, ("n", 100), ("threads", 16), ("ok", 100), ("bad_count", 0), ("bad_state", 0), ("bad_regs", 0),
                     ("not_frozen", 0), ("not_resumed", 0), ("errno_clobbered", 0), ("read_eintr", 0));
        foreach (var l in o.All("latency"))
            TestContext.Out.WriteLine($"{l["name"]}: median {l["median_us"]} us, p90 {l["p90_us"]} us, max {l["max_us"]} us, min {l["min_us"]} us");
    }

    [Test]
    public void ThreadBlockingEverySignal_RepeatedStops_QueueOneSignalNotOnePerStop()
    {
        const int timeoutMs = 200;
        var b = RunProbe($"blocked 100 {timeoutMs}").One("blocked");
        AssertFields(b, ("bad", 0), ("blocked_running", 100), ("busy_stopped", 100), ("unblocked_done", 1),
                     ("state_after_unblock", 0),
                     // a given-up thread whose stop signal is still pending is not signalled again
                     ("queued", 1));
        Assert.That(ProbeOutput.Double(b, "max_stop_ms"), Is.LessThan(timeoutMs + 2000));
        TestContext.Out.WriteLine($"stop with a thread blocking every signal: max {b["max_stop_ms"]} ms (timeout {timeoutMs} ms)");
    }

    [Test]
    public void ThreadBlockingEverySignal_TimeoutShorterThanTheGrace_StillReturns()
    {
        // 1 ms is shorter than the 2 ms "blocked for good" grace: only the deadline ends the wait.
        // (On a loaded machine a spinning thread may not make it within 1 ms either: that is
        // state 1 too, so busy_stopped is only printed.)
        var b = RunProbe("blocked 20 1").One("blocked");
        AssertFields(b, ("bad", 0), ("blocked_running", 20), ("unblocked_done", 1), ("queued", 1));
        Assert.That(ProbeOutput.Double(b, "max_stop_ms"), Is.LessThan(1 + 2000));
    }

    [Test]
    public void ThreadInUninterruptibleSleep_IsReportedRunningAtTheTimeout()
    {
        // A vfork parent sleeps uninterruptibly (state D) until its child exits: no signal can be
        // taken, and it does not block the signal either, so only the timeout ends the wait.
        const int timeoutMs = 100;
        var d = RunProbe($"dstate {timeoutMs}").One("dstate");
        AssertFields(d, ("vfork_state", 1), ("busy_state", 0), ("vfork_done", 1), ("n_after", 2),
                     // once the child is gone, its pending signal ran the handler outside any stop
                     // (no hang), and the next stop stops it normally
                     ("vfork_state_after", 0));
        double ms = ProbeOutput.Double(d, "stop_ms");
        Assert.That(ms, Is.GreaterThanOrEqualTo(timeoutMs * 0.9).And.LessThan(timeoutMs + 2000));
    }

    [Test]
    public void ThreadsCreatedWhileStopping_AreStoppedToo()
    {
        var s = RunProbe("spawner 50").One("spawner");
        AssertFields(s, ("bad", 0), ("missing", 0), ("spawner_stopped", 50), ("spawned_during_stop", 0));
        Assert.That(ProbeOutput.Int(s, "stopped"), Is.GreaterThan(100));
        TestContext.Out.WriteLine($"spawned {s["spawned"]}; listed stopped={s["stopped"]} running={s["running"]} exited={s["exited"]}");
    }

    [Test]
    public void KnownCost_SleepsAndMultiplexersSeeEintr_RestartableCallsDoNot()
    {
        // One thread blocked in each call, three stops. signal(7): the first group is never
        // restarted (EINTR whatever SA_RESTART says); the second is restarted transparently.
        var o = RunProbe("eintr");
        AssertFields(o.One("eintr"), ("stopped_all", 1));
        var calls = o.All("call").ToDictionary(c => c["name"], c => ProbeOutput.Int(c, "eintr"));
        Assert.Multiple(() =>
        {
            foreach (string name in new[] { "nanosleep", "usleep", "poll", "select", "epoll_wait", "sem_timedwait" })
                Assert.That(calls[name], Is.GreaterThanOrEqualTo(1), $"{name} should return EINTR");
            foreach (string name in new[] { "read", "sem_wait", "cond_wait", "cond_timedwait", "futex_wait", "waitpid" })
                Assert.That(calls[name], Is.EqualTo(0), $"{name} should be restarted (SA_RESTART)");
        });
    }

    [Test]
    public void ParkCheck_ThreadsNeverParkWhileInsideTheCore()
    {
        // Two threads alternate 100 us inside "the core" (the park check says no) and 100 us
        // outside; one calls ip_stw_poll() when it leaves the core, the other relies on the
        // stopper's resends. A third never leaves the core: state 1 at every timeout.
        const int cycles = 30; // 200 ms timeout each (the stuck thread)
        var v = RunProbe($"veto {cycles}").One("veto");
        AssertFields(v, ("bad", 0), ("busy_stopped", cycles), ("polled_stopped", cycles),
                     ("in_core_while_stopped", 0), ("stuck_running", cycles));
        long resent = ProbeOutput.Int(v, "resent_stopped");
        Assert.Multiple(() =>
        {
            // Resends are the fallback: on a saturated machine a few stops may miss that thread
            // (state 1, never parked inside the core), which ip_stw_poll avoids.
            Assert.That(resent + ProbeOutput.Int(v, "resent_running"), Is.EqualTo(cycles));
            Assert.That(resent, Is.GreaterThanOrEqualTo(cycles / 2));
            Assert.That(ProbeOutput.Int(v, "frozen"), Is.EqualTo(cycles + resent));
            Assert.That(ProbeOutput.Int(v, "vetoes"), Is.GreaterThan(0));
        });
    }

    [Test]
    public void Init_RefusesTheGcSignal_Sigusr2_UncatchableFaultAndGlibcSignals()
    {
        var e = s_errors.Value;
        Assert.Multiple(() =>
        {
            foreach (string name in new[] { "init_rtmin", "init_usr2", "init_kill", "init_segv", "init_glibc_internal" })
                Assert.That(ProbeOutput.Int(e.One("E", name), "rc"), Is.EqualTo(-1), name);
        });
    }

    [Test]
    public void Init_LeavesASignalTheHostOwnsAlone_AndRefusesASecondSignal()
    {
        var e = s_errors.Value;
        AssertFields(e.One("E", "init_host_owned"), ("rc", -1), ("errno", 16), ("host_kept", 1), ("signal_after", 0));
        AssertFields(e.One("E", "init_default"), ("rc", 0));
        AssertFields(e.One("E", "init_same"), ("rc", 0));
        AssertFields(e.One("E", "init_other"), ("rc", -1), ("errno", 16));
    }

    [Test]
    public void Stop_BeforeInit_OutOfRoom_Nested_HandlerReplaced_FailCleanly()
    {
        var e = s_errors.Value;
        AssertFields(e.One("E", "before_init"), ("rc", -1), ("errno", 22));
        // more threads than `max`: ENOSPC and every thread runs on
        AssertFields(e.One("E", "small_max"), ("rc", -1), ("errno", 28), ("running_after", 1));
        // a second stop while one is in progress: EBUSY, the first stays in force until resume
        AssertFields(e.One("E", "nested"), ("rc", 2), ("rc2", -1), ("errno", 16), ("frozen", 1), ("running_after", 1));
        AssertFields(e.One("E", "mark_internal"), ("rc", 0), ("again", 0));
        // the host reset the signal to SIG_DFL: sending it would kill the process
        AssertFields(e.One("E", "handler_replaced"), ("rc", -1), ("errno", 16), ("alive", 1));
    }

    [Test]
    public void ForkChild_StartsAfreshAndCanStopItsOwnThreads()
    {
        AssertFields(s_errors.Value.One("E", "fork_child"), ("exited", 1), ("code", 0));
    }
}
