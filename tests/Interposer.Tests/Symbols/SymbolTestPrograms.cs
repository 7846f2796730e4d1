// Builds tests/programs/symbols/symtest.c with gcc into a private temp directory, and runs the
// small binutils queries the tests use as an independent oracle (nm), so a test does not check
// the symbolizer against its own ELF reader.

using System;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using NUnit.Framework;

namespace Interposer.Tests.Symbols;

internal sealed class SymbolTestPrograms : IDisposable
{
    private const string SourceRelativePath = "tests/programs/symbols/symtest.c";

    // Private to this fixture run: parallel runs or stale builds never share outputs.
    private readonly string _directory;

    public SymbolTestPrograms()
    {
        _directory = Path.Combine(Path.GetTempPath(), "interposer-symbols-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_directory);
        Source = FindSource();
    }

    public string Source { get; }

    /// <summary>Compiles symtest.c with the given gcc arguments into outputName; fails the test on error.</summary>
    public string Build(string outputName, string gccArguments)
    {
        string output = Path.Combine(_directory, outputName);
        var (exit, _, stderr) = Run("gcc", $"{gccArguments} -o \"{output}\" \"{Source}\"");
        Assert.That(exit, Is.EqualTo(0), $"gcc {gccArguments} failed: {stderr}");
        return output;
    }

    /// <summary>Runs a binutils tool (objcopy, strip) on files in the build directory; fails on error.</summary>
    public void Tool(string program, string arguments)
    {
        var (exit, _, stderr) = Run(program, arguments);
        Assert.That(exit, Is.EqualTo(0), $"{program} {arguments} failed: {stderr}");
    }

    public string PathOf(string name) => Path.Combine(_directory, name);

    /// <summary>st_value of a symbol as nm reports it.</summary>
    public static ulong NmAddress(string binary, string symbol)
    {
        var (exit, stdout, stderr) = Run("nm", $"-P \"{binary}\"");
        Assert.That(exit, Is.EqualTo(0), $"nm failed: {stderr}");
        foreach (string line in stdout.Split('\n'))
        {
            // POSIX format: "name type value [size]"
            string[] fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length >= 3 && fields[0] == symbol)
                return ulong.Parse(fields[2], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
        }
        Assert.Fail($"nm: no symbol {symbol} in {binary}");
        return 0;
    }

    /// <summary>/proc/self/maps lines for binary as the kernel would map it at bias, built from
    /// readelf's PT_LOAD list, so on-disk executables can be symbolized without running them.</summary>
    public static string FakeMaps(string binary, ulong bias)
    {
        var (exit, stdout, stderr) = Run("readelf", $"-lW \"{binary}\"");
        Assert.That(exit, Is.EqualTo(0), $"readelf failed: {stderr}");
        const ulong page = 0x1000;
        var maps = new System.Text.StringBuilder();
        foreach (string line in stdout.Split('\n'))
        {
            // "LOAD 0x001000 0x0000000000401000 0x0000000000401000 0x000155 0x000155 R E 0x1000"
            string[] f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 8 || f[0] != "LOAD")
                continue;
            ulong offset = Hex(f[1]), vaddr = Hex(f[2]), memsz = Hex(f[5]);
            string flags = string.Concat(f[6..^1]);
            ulong start = bias + (vaddr & ~(page - 1));
            ulong end = bias + ((vaddr + memsz + page - 1) & ~(page - 1));
            string perms = (flags.Contains('R') ? "r" : "-") + (flags.Contains('W') ? "w" : "-") +
                           (flags.Contains('E') ? "x" : "-") + "p";
            maps.Append(CultureInfo.InvariantCulture,
                $"{start:x}-{end:x} {perms} {offset & ~(page - 1):x8} 08:01 77 {binary}\n");
        }
        return maps.ToString();
    }

    private static ulong Hex(string s) =>
        ulong.Parse(s.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);

    public void Dispose()
    {
        // Libraries loaded from here stay mapped (as "(deleted)"); only the directory goes.
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static (int Exit, string Stdout, string Stderr) Run(string program, string arguments)
    {
        var start = new ProcessStartInfo(program, arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {program}");
        var stderrTask = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout, stderrTask.Result);
    }

    // The test assembly runs from artifacts/…; the source is found by walking up to the repo root.
    private static string FindSource()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, SourceRelativePath);
            if (File.Exists(candidate))
                return candidate;
        }
        Assert.Fail($"{SourceRelativePath} not found above {TestContext.CurrentContext.TestDirectory}");
        return string.Empty;
    }
}
