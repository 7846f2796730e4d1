// HazardTests.cs — programs that stress the places a preloaded allocator hook usually breaks:
// thread start and exit, TLS and thread-exit destructors, fork under load, exit handlers, and
// the managed core's garbage collector running while host threads allocate. Each must finish
// (no crash, no hang), exit 0 and print what it prints without the library.
// (Requirement 2 of the end-to-end suite.)
using System.Collections.Generic;
using System.Linq;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class HazardTests
{
    /// <summary>Runs a hazard program with and without the library: both exit 0 in time, with the
    /// same stdout and no library message.</summary>
    private static RunResult RunHazard(string program, string arguments = "", string? options = null,
                                       IDictionary<string, string>? env = null)
    {
        var (plain, preloaded) = E2E.RunBoth(program, arguments, env: env, options: options,
                                             timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(plain, "without the library");
        E2E.AssertCleanExit(preloaded, "with the library");
        Assert.That(preloaded.Stdout, Is.EqualTo(plain.Stdout), "stdout changed under the library");
        E2E.AssertNoLibraryMessages(preloaded, program);
        return preloaded;
    }

    /// <summary>RunHazard with DUMP_PATH set (the program dumps its live blocks at the end, under
    /// the library only); returns the run and the dump's text.</summary>
    private static (RunResult Run, string Dump) RunHazardWithDump(string program, string arguments)
    {
        string dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "hazard-" + System.Guid.NewGuid().ToString("N"));
        System.IO.Directory.CreateDirectory(dir);
        try
        {
            string dump = System.IO.Path.Combine(dir, "dump.txt");
            RunResult r = RunHazard(program, arguments, env: new Dictionary<string, string> { ["DUMP_PATH"] = dump });
            return (r, System.IO.File.ReadAllText(dump));
        }
        finally
        {
            System.IO.Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>How many of a dump's frames name function (as "] function+0x...").</summary>
    private static int FramesNamed(string dump, string function) =>
        System.Text.RegularExpressions.Regex.Matches(dump, @"\] " + System.Text.RegularExpressions.Regex.Escape(function) + @"\+").Count;

    // Threads with PTHREAD_STACK_MIN stacks that use 7000 of their 16384 bytes, then allocate.
    // glibc carves static TLS out of each thread's stack: with the walk cache in the shim's TLS
    // (3.9 KB of it) these threads died with SIGSEGV from 5000 bytes up; without the library they
    // run to 8000. The blocks they keep must be recorded, allocated by small_thread.
    [Test]
    public void SmallStackThreads_KeepTheStackTheyHadWithoutTheLibrary()
    {
        var (r, dump) = RunHazardWithDump(E2E.Build("small_stack.c"), "7000 4");
        Assert.That(r.Stdout, Does.Contain("thread 3: rc 0, stack 16384, used 7000"));
        Assert.That(FramesNamed(dump, "small_thread"), Is.GreaterThanOrEqualTo(4),
                    "the kept blocks are recorded with their allocating function");
    }

    // Threads that allocate with 1000 bytes of stack left, at a call site they used before (glibc
    // needs ~0.25 KB there). The hook needs ~1.4 KB below malloc: before the stack check in
    // route() these threads died of SIGSEGV. Now the event goes to the deferred log; the kept
    // blocks are recorded, allocated by allocate_here.
    [Test]
    public void ThreadsAllocatingWithLittleStackLeft_LiveAsTheyDoWithoutTheLibrary()
    {
        var (r, dump) = RunHazardWithDump(E2E.Build("stack_left.c"), "1000 4");
        Assert.That(r.Stdout, Does.Contain("thread 3: rc 0, left 1000, result 0"));
        Assert.That(FramesNamed(dump, "allocate_here"), Is.GreaterThanOrEqualTo(8),
                    "the kept blocks (4 with the whole stack, 4 with 1000 bytes left) are recorded with their allocating function");
    }

    // Threads whose first allocation is glibc's own, inside pthread_getattr_np on themselves (as
    // Rust's std, the JVM and Boehm GC do at thread start): glibc holds the thread's lock there,
    // and registering the thread asks pthread_getattr_np for its stack. Before the fix the first
    // thread hung for ever. The kept blocks, allocated after, must be recorded by getattr_thread.
    [Test]
    public void ThreadsWhoseFirstMallocIsInsidePthreadGetattrNp_DoNotHang()
    {
        var (r, dump) = RunHazardWithDump(E2E.Build("getattr_first.c"), "4");
        Assert.That(r.Stdout, Does.Contain("thread 3: rc 0, stack found 1"));
        Assert.That(FramesNamed(dump, "getattr_thread"), Is.GreaterThanOrEqualTo(4),
                    "the kept blocks are recorded with their allocating function");
    }

    // The main thread calls pthread_exit; the process must end when its last worker returns.
    // Before the fix our own threads (scanner, drainer, the runtime's finalizer) were counted as
    // live by glibc, so the process never ended (and, as they block SIGTERM, ignored it too).
    [Test]
    public void MainThreadPthreadExit_ProcessEndsWithTheLastWorker()
    {
        RunResult r = RunHazard(E2E.Build("main_pthread_exit.c"), "4");
        Assert.That(r.Stdout, Does.StartWith("main exits\nworker 0: sum "));
        Assert.That(r.Stdout, Does.Contain("worker 3: sum "));
    }

    /// <summary>Threads that end with the raw exit syscall (seccomp strict mode's only way out)
    /// run no destructor: they stay published, and attached to the runtime, while glibc unmaps
    /// or reuses their stacks. The next scan read their TLS and died of SIGSEGV; past that, the
    /// runtime's GC waited for them for ever (gc_window.c, RAW EXITS). Now the program runs as
    /// without us, and the library says once that scans are off.</summary>
    [Test]
    public void ThreadsThatExitWithTheRawSyscall_ThenAScan_NoCrashNoHang_ScansOffWithAReason()
    {
        string program = E2E.Build("raw_exit.c");
        var (plain, preloaded) = E2E.RunBoth(program, "", timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(plain, "without the library");
        E2E.AssertCleanExit(preloaded, "with the library");
        Assert.That(preloaded.Stdout, Is.EqualTo(plain.Stdout), "stdout changed under the library");
        Assert.That(preloaded.Stdout, Is.EqualTo("threads 40\nscan done\n"));
        Assert.That(preloaded.Stderr.Split('\n').Count(l => l.Contains("ended without its destructors")), Is.EqualTo(1),
                    "one message saying why scans are off:\n" + preloaded.Stderr);
        Assert.That(preloaded.Stderr, Does.Contain("leak scans, dumps and at-exit work are off for this process"));
    }

    // The same kind of thread, with frees pending in its batch, then other threads that take its
    // freed addresses back: each such insert asks every thread's batch. The batch used to be in
    // the dead thread's TLS, unmapped after the join: SIGSEGV on every run, with no scan at all.
    [Test]
    public void ThreadsThatExitWithTheRawSyscall_ThenTheirAddressesComeBack_NoCrash()
    {
        RunResult r = RunHazard(E2E.Build("raw_exit_reuse.c")); // same stdout as without us, no messages
        Assert.That(r.Stdout, Is.EqualTo("reused some\ndone\n"), "the second wave must get the first wave's addresses back");
    }

    [Test]
    public void HundredsOfShortLivedThreads_MallocAndFree()
    {
        RunResult r = RunHazard(E2E.Build("short_threads.c"));
        Assert.That(r.Stdout, Does.Contain("threads 400 checksum "));
        // Every block was freed by the thread that made it. What may stay live is one DTV per
        // thread stack glibc caches for reuse (at most one per thread alive at once, 16).
        long delta = E2E.Number(r.Stderr, @"^record delta (-?\d+)$");
        Assert.That(delta, Is.InRange(0, 16), "live records drifted across 400 thread lifetimes");
    }

    [Test]
    public void TlsPointerAndKeyDestructors_FreeAtThreadExit()
    {
        RunResult r = RunHazard(E2E.Build("tls_key_destructors.c"));
        Assert.That(r.Stdout, Is.EqualTo("rounds 12 threads 8 destructor-frees 480\n"));
        long delta = E2E.Number(r.Stderr, @"^record delta (-?\d+)$");
        Assert.That(delta, Is.InRange(0, 8), "frees done by thread-exit destructors were lost (or double-counted)");
    }

    [Test]
    public void CxxThreadLocalDestructors_FreeBeforeAndAfterTheFirstMalloc()
    {
        RunResult r = RunHazard(E2E.Build("thread_local_dtors.cpp"));
        Assert.That(r.Stdout, Is.EqualTo("threads 80 destructors 160\n"));
        long delta = E2E.Number(r.Stderr, @"^record delta (-?\d+)$");
        Assert.That(delta, Is.InRange(0, 8), "frees done by thread_local destructors were lost");
    }

    [TestCase("fork", "forks 20 ok 20")]
    [TestCase("exec", "forks 20 ok 20")]
    public void ForkUnderMultithreadedLoad_ChildrenRunAndExit0(string mode, string expected)
    {
        RunResult r = RunHazard(E2E.Build("fork_under_load.c"), mode);
        Assert.That(r.Stdout, Is.EqualTo($"mode {mode}\n{expected}\nchurn stopped\n"));
        long delta = E2E.Number(r.Stderr, @"^record delta (-?\d+)$");
        Assert.That(delta, Is.InRange(0, 8), "the parent's record count drifted across the forks");
    }

    [TestCase(null)]
    [TestCase("dump_at_exit=-")]
    public void MallocInAtexitHandlersAndDestructors(string? options)
    {
        RunResult r = RunHazard(E2E.Build("exit_handlers.c"), options: options);
        Assert.That(r.Stdout, Is.EqualTo(
            "main returns\natexit (registered last) allocated\natexit (registered first) 999\ndestructor 42 allocated\n"));
        if (options != null)
        {
            // The at-exit dump ran after the atexit handlers: it lists the block the last-registered
            // handler leaked (recorded through the deferred log, the main thread was exiting).
            LiveDumpFile dump = LiveDumpFile.Parse(r.Stderr);
            Assert.That(dump.Blocks.Exists(b => b.Size == 77 && b.Frames.Exists(f => f.Function == "handler_registered_last")),
                        Is.True, $"the at-exit dump lacks the block leaked by the atexit handler:\n{r.Stderr}");
        }
    }

    /// <summary>A C++ program whose global container is destroyed at exit: after the main thread
    /// is marked exiting, every free goes to the deferred log. 150,000 entries make 300,000 frees,
    /// more than the log's 65,536 slots, with nobody draining it: tracking must neither switch
    /// itself off with a message nor lose the at-exit report.</summary>
    [Test]
    public void GlobalContainerDestroyedAtExit_ManyDeferredFrees()
    {
        using var dir = new TempDir("massexit");
        string program = E2E.Build("mass_free_at_exit.cpp");
        RunResult plain = Programs.Run(program, "global 150000", preload: false, timeoutSeconds: E2E.HazardTimeoutSeconds);
        RunResult r = Programs.Run(program, "global 150000", preload: true, options: $"dump_at_exit={dir.File("exit.txt")}",
                                   timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(plain, "without the library");
        E2E.AssertCleanExit(r, "with the library");
        Assert.That(r.Stdout, Is.EqualTo(plain.Stdout));
        E2E.AssertNoLibraryMessages(r, "mass_free_at_exit global");
        LiveDumpFile dump = LiveDumpFile.Read(dir.File("exit.txt"));
        Assert.That(dump.Statistic("deferred events lost"), Is.EqualTo(0), dump.StatisticsLine);
        Assert.That(dump.Statistic("live blocks"), Is.LessThan(100), "the map's blocks are still listed as live at exit");
    }

    /// <summary>The same on a secondary thread: a pthread key destructor frees a 150,000-node list
    /// while the main thread waits in pthread_join.</summary>
    [Test]
    public void KeyDestructorFreeingAHugeList_ManyDeferredFrees()
    {
        RunResult r = RunHazard(E2E.Build("mass_free_at_exit.cpp"), "thread 150000");
        Assert.That(r.Stdout, Is.EqualTo("filled 150000\n"));
        Assert.That(E2E.Number(r.Stderr, @"^record delta (-?\d+)$"), Is.InRange(0, 1),
                    "the list's frees were lost (or tracking stopped)");
    }

    /// <summary>A fork child (no exec) that exit()s destroys its copy of a 150,000-entry global
    /// map: 300,000 deferred frees in a process where the library's helper threads were not
    /// forked. The child must not switch tracking off with a message either.</summary>
    [Test]
    public void ForkChildDestroyingAGlobalContainerAtExit_ManyDeferredFrees()
    {
        RunResult r = RunHazard(E2E.Build("mass_free_at_exit.cpp"), "fork 150000");
        Assert.That(r.Stdout, Is.EqualTo("filled 150000\nchild status 0\n"));
    }

    /// <summary>pthread_cancel of threads churning malloc/free while another thread keeps the
    /// core's GC busy. malloc/free are not cancellation points; under the library a deferred
    /// cancel must not act inside them (it does when the hook waits for the GC in
    /// pthread_cond_wait: double free abort, or a deadlock on a runtime lock the cancelled
    /// thread held).</summary>
    [Test]
    public void PthreadCancelWhileTheCollectorRuns()
    {
        using var dir = new TempDir("cancel");
        string program = E2E.Build("cancel_during_gc.c");
        string args = Programs.Quote(dir.File("dump.txt")) + " 400";
        RunResult plain = Programs.Run(program, args, preload: false, timeoutSeconds: 30);
        RunResult r = Programs.Run(program, args, preload: true, timeoutSeconds: 30);
        E2E.AssertCleanExit(plain, "without the library");
        E2E.AssertCleanExit(r, "with the library");
        Assert.That(r.Stdout, Is.EqualTo("rounds 400\n"));
        E2E.AssertNoLibraryMessages(r, "cancel_during_gc");
    }

    [Test]
    public void ManagedGcsWhileHostThreadsAllocate()
    {
        using var dir = new TempDir("gc");
        string program = E2E.Build("gc_while_allocating.c");
        RunResult r = Programs.Run(program, Programs.Quote(dir.File("dump.txt")) + " 25", preload: true,
                                        timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "gc_while_allocating");
        E2E.AssertNoLibraryMessages(r, "gc_while_allocating");
        Assert.That(r.Stdout, Does.Contain("dumps 25 failed 0\n"), "dump_live failed while threads churned");
        long[] delta = E2E.Numbers(r.Stdout, @"^delta (-?\d+) expected (\d+)$");
        Assert.That(delta[0], Is.EqualTo(delta[1]), "live_blocks() is not exact after GCs under churn");
    }
}
