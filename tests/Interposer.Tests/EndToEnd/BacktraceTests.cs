// BacktraceTests.cs — every block's backtrace names the C function that allocated it, also when
// the allocation went through strdup, operator new or std::string (the function then appears
// below the library frames), for each unwinder. (Requirement 4 of the end-to-end suite.)
//
// backtrace_names.cpp allocates one block in each bt_* function, prints "<function> <address>"
// and dumps; the tests find each address in the dump.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text.RegularExpressions;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class BacktraceTests
{
    private static readonly Dictionary<string, (Dictionary<string, ulong> Addresses, LiveDumpFile Dump)> s_runs = new();

    /// <summary>Runs backtrace_names once per (unwinder, build flags) and caches the result.</summary>
    private static (Dictionary<string, ulong> Addresses, LiveDumpFile Dump) Run(string unwinder, string flags = "")
    {
        string key = unwinder + "|" + flags;
        lock (s_runs)
        {
            if (s_runs.TryGetValue(key, out var cached))
                return cached;
            using var dir = new TempDir("bt");
            string program = E2E.Build("backtrace_names.cpp", flags);
            string dumpPath = dir.File("dump.txt");
            RunResult r = Programs.Run(program, Programs.Quote(dumpPath), preload: true,
                                            options: "unwinder=" + unwinder, timeoutSeconds: E2E.HazardTimeoutSeconds);
            E2E.AssertCleanExit(r, "backtrace_names");
            E2E.AssertNoLibraryMessages(r, "backtrace_names");
            Assert.That(r.Stdout, Does.Contain("dump 0\n"), r.ToString());
            var addresses = new Dictionary<string, ulong>();
            foreach (Match m in Regex.Matches(r.Stdout, @"^(bt_\w+) 0x([0-9a-f]+)$", RegexOptions.Multiline))
                addresses[m.Groups[1].Value] = ulong.Parse(m.Groups[2].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
            var result = (addresses, LiveDumpFile.Read(dumpPath));
            s_runs[key] = result;
            return result;
        }
    }

    private static DumpBlock BlockOf(string unwinder, string function, string flags = "")
    {
        var (addresses, dump) = Run(unwinder, flags);
        Assert.That(addresses.ContainsKey(function), Is.True, $"backtrace_names printed no address for {function}");
        return dump.BlockAt(addresses[function]);
    }

    private static bool IsLibraryAllocator(DumpFrame f) =>
        f.Function is "strdup" or "__strdup" or "_Znwm" or "_Znam" || f.Function.StartsWith("operator new", StringComparison.Ordinal);

    // Direct calls: the first frame is the function itself.
    [TestCase("fast", "bt_malloc")]
    [TestCase("fast", "bt_calloc")]
    [TestCase("fast", "bt_realloc")]
    [TestCase("fast", "bt_posix_memalign")]
    [TestCase("fast", "bt_in_thread")]
    [TestCase("libunwind", "bt_malloc")]
    [TestCase("libunwind", "bt_calloc")]
    [TestCase("libunwind", "bt_realloc")]
    [TestCase("libunwind", "bt_posix_memalign")]
    [TestCase("libunwind", "bt_in_thread")]
    [TestCase("fp", "bt_malloc")]
    [TestCase("fp", "bt_calloc")]
    [TestCase("fp", "bt_realloc")]
    [TestCase("fp", "bt_posix_memalign")]
    [TestCase("fp", "bt_in_thread")]
    public void FirstFrame_IsTheAllocatingFunction(string unwinder, string function)
    {
        DumpBlock b = BlockOf(unwinder, function);
        Assert.That(b.Frames, Is.Not.Empty, b.ToString());
        Assert.That(b.Frames[0].Function, Is.EqualTo(function), b.ToString());
    }

    // Through libc / libstdc++: the allocator's frame comes first, the user's function right below.
    [TestCase("fast", "bt_strdup")]
    [TestCase("fast", "bt_operator_new")]
    [TestCase("fast", "bt_std_string")]
    [TestCase("libunwind", "bt_strdup")]
    [TestCase("libunwind", "bt_operator_new")]
    [TestCase("libunwind", "bt_std_string")]
    public void FunctionBelowStrdupOrOperatorNew_IsNamed(string unwinder, string function)
    {
        DumpBlock b = BlockOf(unwinder, function);
        int library = b.IndexOf(IsLibraryAllocator);
        int user = b.IndexOf(f => f.Function == function);
        Assert.That(library, Is.EqualTo(0), $"the first frame should be strdup / operator new:\n{b}");
        Assert.That(user, Is.GreaterThan(library), $"{function} is not named below the allocator:\n{b}");
        Assert.That(b.Frames.Skip(user + 1).Any(f => f.Function == "main"), Is.True, $"main is missing below {function}:\n{b}");
    }

    [TestCase("fast")]
    [TestCase("libunwind")]
    public void NestedCallers_AreAllNamed_InOrder(string unwinder)
    {
        DumpBlock b = BlockOf(unwinder, "bt_outer");
        string[] names = b.Frames.Select(f => f.Function).ToArray();
        Assert.That(names.Take(3), Is.EqualTo(new[] { "bt_inner", "bt_outer", "main" }), b.ToString());
    }

    [TestCase("fast")]
    [TestCase("libunwind")]
    public void ThreadBacktrace_ReachesTheThreadStart(string unwinder)
    {
        DumpBlock b = BlockOf(unwinder, "bt_in_thread");
        Assert.That(b.Frames.Any(f => f.Function == "start_thread"), Is.True, b.ToString());
        Assert.That(b.Tid, Is.Not.EqualTo(b.Pid), "the thread's block carries the main thread's tid");
    }

    [Test]
    public void FramePointerUnwinder_WalksProgramsBuiltWithFramePointers()
    {
        DumpBlock b = BlockOf("fp", "bt_outer", "-fno-omit-frame-pointer");
        string[] names = b.Frames.Select(f => f.Function).ToArray();
        Assert.That(names.Take(3), Is.EqualTo(new[] { "bt_inner", "bt_outer", "main" }), b.ToString());
    }

    /// <summary>Six call paths, recursion depths 0..5, alloca'd frames, three allocators, five
    /// threads, interleaved for 40 rounds: every kept block's backtrace must be exactly
    /// common x (depth+1), path&lt;P&gt;, one, rounds, main|thread_main — the path and depth its size names
    /// (size = 1000 + 100*P + depth). Guards the fast unwinder's per-thread walk cache against a
    /// stale reused suffix, and checks both DWARF unwinders agree with the program's structure.</summary>
    [TestCase("fast")]
    [TestCase("libunwind")]
    public void InterleavedCallPaths_EveryBacktraceMatchesItsPath(string unwinder)
    {
        using var dir = new TempDir("paths");
        string dumpPath = dir.File("dump.txt");
        RunResult r = Programs.Run(E2E.Build("backtrace_paths.c"), Programs.Quote(dumpPath), preload: true,
                                   options: "unwinder=" + unwinder + ":max_frames=32", timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "backtrace_paths");
        E2E.AssertNoLibraryMessages(r, "backtrace_paths");
        LiveDumpFile dump = LiveDumpFile.Read(dumpPath);
        var blocks = dump.Blocks.Where(b => b.Size >= 1000 && b.Size < 1600).ToList();
        Assert.That(blocks, Has.Count.EqualTo(5 * 6 * 6), "expected 5 threads x 6 paths x 6 depths kept blocks");
        var wrong = new List<string>();
        foreach (DumpBlock b in blocks)
        {
            int path = (int)(b.Size - 1000) / 100, depth = (int)(b.Size - 1000) % 100;
            var expected = Enumerable.Repeat("common", depth + 1).Append("path" + path).Append("one").Append("rounds")
                                     .Append(b.Tid == b.Pid ? "main" : "thread_main").ToArray();
            string[] actual = b.Frames.Select(f => f.Function).Take(expected.Length).ToArray();
            if (!actual.SequenceEqual(expected))
                wrong.Add($"size {b.Size}: expected {string.Join(" < ", expected)}\n  got {string.Join(" < ", actual)}");
        }
        Assert.That(wrong, Is.Empty, $"{wrong.Count} backtraces do not match their call path:\n" + string.Join("\n", wrong.Take(10)));
    }

    /// <summary>Allocations on a makecontext coroutine stack (a heap block) and in a signal
    /// handler on a sigaltstack: outside the thread's registered stack. No crash, and the first
    /// frame names the allocating function whatever the unwinder.</summary>
    [TestCase("fast")]
    [TestCase("libunwind")]
    [TestCase("fp")]
    public void OffStackAllocations_CoroutineAndSigaltstack_FirstFrameNamed(string unwinder)
    {
        using var dir = new TempDir("altstack");
        string dumpPath = dir.File("dump.txt");
        RunResult r = Programs.Run(E2E.Build("alt_stacks.c"), Programs.Quote(dumpPath), preload: true,
                                   options: "unwinder=" + unwinder, timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "alt_stacks");
        E2E.AssertNoLibraryMessages(r, "alt_stacks");
        Assert.That(r.Stdout, Does.EndWith("dump 0\n"), r.ToString());
        LiveDumpFile dump = LiveDumpFile.Read(dumpPath);
        Assert.Multiple(() =>
        {
            Assert.That(dump.Blocks.Single(b => b.Size == 333).Frames.FirstOrDefault()?.Function, Is.EqualTo("co_alloc"), dump.Text);
            Assert.That(dump.Blocks.Single(b => b.Size == 444).Frames.FirstOrDefault()?.Function, Is.EqualTo("sig_alloc"), dump.Text);
        });
    }

    [TestCase("fast")]
    [TestCase("libunwind")]
    [TestCase("fp")]
    public void NoFrameInsideTheLibrary(string unwinder)
    {
        var (_, dump) = Run(unwinder);
        Assert.That(dump.Blocks, Is.Not.Empty);
        var offending = dump.Blocks.Where(b => b.Frames.Any(f => f.Module.Contains("libinterposer"))).ToList();
        Assert.That(offending, Is.Empty, "backtraces start inside the library:\n" + string.Join("\n", offending));
    }
}
