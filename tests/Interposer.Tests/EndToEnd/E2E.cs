// E2E.cs — shared helpers for the end-to-end tests: building the programs in tests/programs/e2e,
// private temporary directories, running a program with and without the library, reading the
// live-block dump (interposer_dump / dump_at_exit) and pulling numbers out of program output.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

internal static class E2E
{
    /// <summary>Timeout for a program that should finish in well under a second: long enough for
    /// a loaded 2-core machine, short enough that a hang does not eat the whole test run.</summary>
    public const int HazardTimeoutSeconds = 60;

    /// <summary>Compiles tests/programs/e2e/&lt;file&gt; once per test run.</summary>
    public static string Build(string file, string extraFlags = "") => Programs.Build("e2e/" + file, extraFlags);

    /// <summary>Runs the same command with and without the library.</summary>
    public static (RunResult Plain, RunResult Preloaded) RunBoth(string file, string arguments, string? stdin = null,
        IDictionary<string, string>? env = null, string? workingDirectory = null, int timeoutSeconds = 120,
        string? options = null)
    {
        RunResult plain = Programs.Run(file, arguments, preload: false, env: env, stdin: stdin,
                                            timeoutSeconds: timeoutSeconds, workingDirectory: workingDirectory);
        RunResult preloaded = Programs.Run(file, arguments, preload: true, options: options, env: env, stdin: stdin,
                                                timeoutSeconds: timeoutSeconds, workingDirectory: workingDirectory);
        return (plain, preloaded);
    }

    /// <summary>A run that finished by itself with exit status 0.</summary>
    public static void AssertCleanExit(RunResult r, string what)
    {
        Assert.That(r.TimedOut, Is.False, $"{what} hung (killed after the timeout):\n{r}");
        Assert.That(r.ExitCode, Is.EqualTo(0), $"{what} failed:\n{r}");
    }

    /// <summary>The library printed nothing (every message of the shim and the core starts "interposer:").</summary>
    public static void AssertNoLibraryMessages(RunResult r, string what) =>
        Assert.That(r.Stderr, Does.Not.Contain("interposer:"), $"{what}: the library wrote on stderr:\n{r}");

    /// <summary>Lines of stderr that the library wrote.</summary>
    public static string[] LibraryLines(RunResult r) =>
        r.Stderr.Split('\n').Where(l => l.StartsWith("interposer:", StringComparison.Ordinal)).ToArray();

    /// <summary>The integers captured by the regex's groups in the first matching line of text.</summary>
    public static long[] Numbers(string text, string pattern)
    {
        Match m = Regex.Match(text, pattern, RegexOptions.Multiline);
        Assert.That(m.Success, Is.True, $"no line matches /{pattern}/ in:\n{text}");
        return m.Groups.Cast<Group>().Skip(1)
                .Select(g => long.Parse(g.Value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture)).ToArray();
    }

    public static long Number(string text, string pattern) => Numbers(text, pattern)[0];
}

/// <summary>A private directory under /tmp, removed when disposed.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir(string tag)
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"interposer-e2e-{tag}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

/// <summary>One frame of a dumped backtrace: "[&lt;0x...&gt;] symbol+0xoff (module) file:line".</summary>
internal sealed record DumpFrame(ulong Pc, string Symbol, string Module, string Where = "")
{
    /// <summary>The symbol without its "+0x..." offset ("??" when unknown).</summary>
    public string Function => Symbol.Contains('+') ? Symbol.Substring(0, Symbol.LastIndexOf('+')) : Symbol;

    public override string ToString() => $"{Symbol} ({Module}) {Where}";
}

/// <summary>One "live block" entry of a dump.</summary>
internal sealed record DumpBlock(ulong Address, ulong Size, string Comm, int Pid, int Tid, List<DumpFrame> Frames)
{
    public int IndexOf(Func<DumpFrame, bool> match) => Frames.FindIndex(f => match(f));

    public override string ToString() =>
        $"block 0x{Address:x} (size {Size}) tid {Tid}:\n    " + string.Join("\n    ", Frames);
}

/// <summary>A parsed live-block dump:
/// <code>
/// live block 0x55c91b6d9200 (size 11):
///   comm "count", pid 17841, tid 17841, age 0.004s
///   backtrace (crc e1d145b8):
///     [&lt;0x7fab31da89aa&gt;] strdup+0x1a (/usr/lib/x86_64-linux-gnu/libc.so.6)
/// ...
/// live blocks: 62, bytes: 9237; stacks: 3, threads: 1, ..., stale records replaced: 0, table bytes: 2621440
/// </code></summary>
internal sealed class LiveDumpFile
{
    private static readonly Regex s_block = new(@"^live block 0x([0-9a-f]+) \(size (\d+)\):$");
    private static readonly Regex s_comm = new(@"^\s+comm ""(.*)"", pid (\d+), tid (\d+),");
    // The symbol may hold spaces and parentheses (demangled C++: "operator new(unsigned long)+0x1c");
    // the module is the last parenthesized group.
    private static readonly Regex s_frame = new(@"^\s+\[<0x([0-9a-f]+)>\] (.+?)(?: \(([^()]*)\))?(?: (\S+:\d+))?$");

    public List<DumpBlock> Blocks { get; } = new();
    public string StatisticsLine { get; private set; } = "";
    public string Text { get; private set; } = "";

    public static LiveDumpFile Read(string path)
    {
        Assert.That(System.IO.File.Exists(path), Is.True, $"the dump {path} was not written");
        return Parse(System.IO.File.ReadAllText(path));
    }

    public static LiveDumpFile Parse(string text)
    {
        var dump = new LiveDumpFile { Text = text };
        DumpBlock? current = null;
        foreach (string line in text.Split('\n'))
        {
            Match m;
            if ((m = s_block.Match(line)).Success)
            {
                current = new DumpBlock(ulong.Parse(m.Groups[1].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture),
                                        ulong.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture), "", 0, 0, new List<DumpFrame>());
                dump.Blocks.Add(current);
            }
            else if (current != null && (m = s_comm.Match(line)).Success)
            {
                var updated = current with
                {
                    Comm = m.Groups[1].Value,
                    Pid = int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture),
                    Tid = int.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture),
                };
                dump.Blocks[^1] = updated;
                current = updated;
            }
            else if (current != null && (m = s_frame.Match(line)).Success)
            {
                current.Frames.Add(new DumpFrame(ulong.Parse(m.Groups[1].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture),
                                                 m.Groups[2].Value, m.Groups[3].Value, m.Groups[4].Value));
            }
            else if (line.StartsWith("live blocks:", StringComparison.Ordinal))
            {
                dump.StatisticsLine = line.Trim();
                current = null;
            }
        }
        return dump;
    }

    /// <summary>A number from the statistics line, e.g. Statistic("stale records replaced").</summary>
    public long Statistic(string name)
    {
        Match m = Regex.Match(StatisticsLine, Regex.Escape(name) + @": (\d+)");
        Assert.That(m.Success, Is.True, $"the dump's statistics line has no '{name}': '{StatisticsLine}'");
        return long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    public DumpBlock BlockAt(ulong address)
    {
        DumpBlock? b = Blocks.Find(x => x.Address == address);
        Assert.That(b, Is.Not.Null, $"no live block at 0x{address:x} in the dump ({Blocks.Count} blocks)");
        return b!;
    }
}
