// GuardRuleTests.cs — one test per guard rule of /work/shared/DESIGN.md, each built on the
// scenario that breaks when the rule is switched off. (Each was checked against a shim built
// with that rule removed: abort, hang, drift or changed behaviour, as noted per test.)
// Rules 6 (stop-the-world) and 7 (SIGUSR2 only posts) have no test yet: there is no scanner.
using System.Collections.Generic;
using System.Linq;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class GuardRuleTests
{
    /// <summary>Rule 1 — guard around every call into managed code. The core's dumps make the
    /// runtime malloc (and collect) inside a hook; without the guard those nested mallocs re-enter
    /// managed code and the runtime fails fast ("attempted to call a UnmanagedCallersOnly method
    /// from managed code"). Nested mallocs are internal: the record count must not move.</summary>
    [Test]
    public void Rule1_Guard_NestedRuntimeMallocsNeitherReenterNorCount()
    {
        using var dir = new TempDir("rule1");
        RunResult r = Programs.Run(E2E.Build("runtime_quiet.c"), Programs.Quote(dir.File("dump.txt")) + " 20",
                                        preload: true, timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "runtime_quiet");
        E2E.AssertNoLibraryMessages(r, "runtime_quiet");
        Assert.That(r.Stdout, Does.Contain("dumps 21 failed 0\n"));
        long[] delta = E2E.Numbers(r.Stdout, @"^delta (-?\d+) expected (\d+)$");
        Assert.That(delta[0], Is.EqualTo(delta[1]), "the runtime's own mallocs were recorded as the host's");
    }

    /// <summary>Rule 1 under load — managed GCs while 8 host threads allocate (also in
    /// HazardTests); here with glibc's per-thread cache off so every thread hits the arena
    /// locks the runtime also takes.</summary>
    [Test]
    public void Rule1_Guard_GcsWhileThreadsAllocate_NoTcache()
    {
        using var dir = new TempDir("rule1gc");
        var env = new Dictionary<string, string> { ["GLIBC_TUNABLES"] = "glibc.malloc.tcache_count=0" };
        RunResult r = Programs.Run(E2E.Build("gc_while_allocating.c"), Programs.Quote(dir.File("dump.txt")) + " 10",
                                        preload: true, env: env, timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "gc_while_allocating");
        E2E.AssertNoLibraryMessages(r, "gc_while_allocating");
        long[] delta = E2E.Numbers(r.Stdout, @"^delta (-?\d+) expected (\d+)$");
        Assert.That(delta[0], Is.EqualTo(delta[1]));
    }

    /// <summary>Rule 2 — threads created under the guard are internal for life. Without it the
    /// runtime's threads (finalizer, ...) get registered as host threads: their mallocs show up
    /// as the program's blocks (with frames inside libinterposer_core.so and a foreign tid).</summary>
    [Test]
    public void Rule2_RuntimeThreads_AreInternal_NoForeignBlocks()
    {
        using var dir = new TempDir("rule2");
        string dumpPath = dir.File("dump.txt");
        RunResult r = Programs.Run(E2E.Build("runtime_quiet.c"), Programs.Quote(dumpPath) + " 10",
                                        preload: true, timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "runtime_quiet");
        LiveDumpFile dump = LiveDumpFile.Read(dumpPath);
        Assert.That(dump.Blocks, Has.Count.GreaterThanOrEqualTo(3), dump.Text);
        var foreign = dump.Blocks.Where(b => b.Tid != b.Pid || b.Frames.Any(f => f.Module.Contains("libinterposer"))).ToList();
        Assert.That(foreign, Is.Empty, "blocks of the library's own threads in a single-threaded program:\n" +
                                       string.Join("\n", foreign));
        Assert.That(dump.Statistic("threads"), Is.EqualTo(1), dump.StatisticsLine);
    }

    /// <summary>Rule 2 — the at-exit worker is created under the guard. Without the rule, its
    /// first malloc registers it as a host thread while the main thread waits in exit(): the
    /// process hangs.</summary>
    [Test]
    public void Rule2_ExitWorkerThread_IsInternal_DumpAtExitFinishes()
    {
        using var dir = new TempDir("rule2exit");
        RunResult r = Programs.Run(E2E.Build("exit_handlers.c"), "", preload: true,
                                        options: $"dump_at_exit={dir.File("exit-%p.txt")}", timeoutSeconds: 30);
        E2E.AssertCleanExit(r, "exit_handlers with dump_at_exit");
        E2E.AssertNoLibraryMessages(r, "exit_handlers");
        string[] dumps = System.IO.Directory.GetFiles(dir.Path, "exit-*.txt");
        Assert.That(dumps, Has.Length.EqualTo(1), "dump_at_exit did not write exactly one file");
        LiveDumpFile dump = LiveDumpFile.Read(dumps[0]);
        Assert.That(dump.Blocks.Any(b => b.Size == 77), Is.True, dump.Text);
        Assert.That(dump.Blocks.All(b => b.Tid == b.Pid), Is.True, "the exit worker's blocks were recorded:\n" + dump.Text);
    }

    /// <summary>Rule 3 — a thread-exit key marks the thread exiting; afterwards its frees go to the
    /// deferred log. Without it, a free from a pthread key destructor enters managed code after
    /// the runtime detached the thread: abort (exit 134).</summary>
    [Test]
    public void Rule3_ThreadExitKey_FreesInKeyDestructorsAreDeferred()
    {
        string program = E2E.Build("tls_key_destructors.c");
        RunResult r = Programs.Run(program, "", preload: true, timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "tls_key_destructors");
        E2E.AssertNoLibraryMessages(r, "tls_key_destructors");
        Assert.That(r.Stdout, Is.EqualTo("rounds 12 threads 8 destructor-frees 480\n"));
        // ...and the deferred frees are applied: the count returns (up to cached-stack DTVs).
        Assert.That(E2E.Number(r.Stderr, @"^record delta (-?\d+)$"), Is.InRange(0, 8));
    }

    /// <summary>Rule 4 — pthread_atfork takes and releases every metadata lock. Without it the
    /// child of a fork taken while a churning thread held a shard lock spins forever on it
    /// (the test program hangs on the first or second fork).</summary>
    [Test]
    public void Rule4_AtforkLocks_ChildOfABusyProcessDoesNotDeadlock()
    {
        RunResult r = Programs.Run(E2E.Build("fork_under_load.c"), "fork", preload: true, timeoutSeconds: 30);
        E2E.AssertCleanExit(r, "fork_under_load");
        E2E.AssertNoLibraryMessages(r, "fork_under_load");
        Assert.That(r.Stdout, Is.EqualTo("mode fork\nforks 20 ok 20\nchurn stopped\n"));
    }

    /// <summary>Rule 5 — remove the record before the real free. One arena and no tcache (glibc
    /// tunables) so a freed address goes straight back to the shared bins and another thread gets
    /// it at once. With the removal after the free, the other thread's insert finds the old
    /// record ("stale records replaced" &gt; 0) and the late removal then deletes the new owner's
    /// record (the count comes out one or more short).</summary>
    /// <remarks>With batch_frees (the default) the removal comes after the real free, stamped
    /// before it: the same program checks that a late removal never takes the new owner's record
    /// (a mutant that ignores the stamp fails it).</remarks>
    [TestCase("")]
    [TestCase("batch_frees=0")]
    public void Rule5_RemoveBeforeFree_AddressReuseAcrossThreadsKeepsCountExact(string options)
    {
        using var dir = new TempDir("rule5");
        string dumpPath = dir.File("dump.txt");
        var env = new Dictionary<string, string> { ["GLIBC_TUNABLES"] = "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1" };
        RunResult r = Programs.Run(E2E.Build("address_reuse.c"), Programs.Quote(dumpPath), preload: true,
                                        options: options.Length > 0 ? options : null, env: env,
                                        timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "address_reuse");
        E2E.AssertNoLibraryMessages(r, "address_reuse");
        long[] delta = E2E.Numbers(r.Stdout, @"^delta (-?\d+) expected (\d+) dump (-?\d+)$");
        LiveDumpFile dump = LiveDumpFile.Read(dumpPath);
        Assert.Multiple(() =>
        {
            Assert.That(delta[2], Is.EqualTo(0), "dump_live failed");
            Assert.That(delta[0], Is.EqualTo(delta[1]), "live_blocks() drifted under address reuse");
            Assert.That(dump.Statistic("stale records replaced"), Is.EqualTo(0), dump.StatisticsLine);
        });
    }

    /// <summary>Rule 5 with 300 threads: past 256 registered threads an insert that replaces a
    /// record does not walk every batch to ask whether that removal is pending; it counts it as
    /// unchecked. The count must stay exact all the same.</summary>
    [Test]
    public void Rule5_ThreeHundredThreads_CountStaysExact_ReplacementsUnchecked()
    {
        using var dir = new TempDir("rule5-300");
        string dumpPath = dir.File("dump.txt");
        var env = new Dictionary<string, string> { ["GLIBC_TUNABLES"] = "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1" };
        RunResult r = Programs.Run(E2E.Build("address_reuse.c"), Programs.Quote(dumpPath) + " 300", preload: true,
                                   env: env, timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "address_reuse 300");
        E2E.AssertNoLibraryMessages(r, "address_reuse 300");
        long[] delta = E2E.Numbers(r.Stdout, @"^delta (-?\d+) expected (\d+) dump (-?\d+)$");
        LiveDumpFile dump = LiveDumpFile.Read(dumpPath);
        Assert.Multiple(() =>
        {
            Assert.That(delta[1], Is.EqualTo(300 * 50));
            Assert.That(delta[2], Is.EqualTo(0), "dump_live failed");
            Assert.That(delta[0], Is.EqualTo(delta[1]), "live_blocks() drifted under address reuse");
            Assert.That(dump.Statistic("stale records replaced"), Is.EqualTo(0), dump.StatisticsLine);
            Assert.That(dump.StatisticsLine, Does.Contain("records replaced unchecked"), "the scenario needs cross-thread reuse past 256 threads");
        });
    }

    /// <summary>SIGPIPE rule — the runtime sets SIGPIPE to SIG_IGN; the shim restores the host's
    /// disposition. Without it `yes | head -1` exits 1 (EPIPE) instead of dying of SIGPIPE (141),
    /// and a program sees "ignored" where its parent left "default". An inherited SIG_IGN must
    /// stay SIG_IGN.</summary>
    [TestCase("", "SIGPIPE default\n", 141)]
    [TestCase("trap '' PIPE; ", "SIGPIPE ignored\nwrite: EPIPE\n", 0)]
    public void SigpipeRule_HostDispositionIsRestored(string shellPrefix, string expectedStdout, int expectedExit)
    {
        string program = E2E.Build("sigpipe_probe.c");
        string command = shellPrefix + Programs.Quote(program);
        RunResult plain = Programs.Shell(command, preload: false, timeoutSeconds: 30);
        RunResult preloaded = Programs.Shell(command, preload: true, timeoutSeconds: 30);
        Assert.That(plain.ExitCode, Is.EqualTo(expectedExit), "baseline:\n" + plain);
        Assert.That(plain.Stdout, Is.EqualTo(expectedStdout), "baseline:\n" + plain);
        Assert.That(preloaded.ExitCode, Is.EqualTo(expectedExit), preloaded.ToString());
        Assert.That(preloaded.Stdout, Is.EqualTo(expectedStdout), preloaded.ToString());
        E2E.AssertNoLibraryMessages(preloaded, "sigpipe_probe");
    }

    [Test]
    public void SigpipeRule_YesPipedIntoHead_Exits141()
    {
        RunResult r = Programs.Shell("yes | head -1; exit ${PIPESTATUS[0]}", preload: true, timeoutSeconds: 30);
        Assert.That(r.TimedOut, Is.False, r.ToString());
        Assert.That(r.ExitCode, Is.EqualTo(141), "yes did not die of SIGPIPE under the library:\n" + r);
    }
}
