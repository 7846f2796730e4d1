// NativeProgram.cs — compile a tiny C/C++ test program with gcc/g++ and run programs with or
// without the library preloaded, capturing everything a test compares.
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Text;
using System.Threading.Tasks;
using NUnit.Framework;

namespace Interposer.Tests.Support;

/// <summary>What a finished process left behind. ExitCode is 128+N when it died of signal N
/// (as a shell reports it).</summary>
internal sealed record RunResult(int ExitCode, string Stdout, string Stderr, bool TimedOut, byte[] StdoutBytes)
{
    public override string ToString() =>
        $"exit {ExitCode}{(TimedOut ? " (timed out)" : "")}\n--- stdout ---\n{Clip(Stdout)}\n--- stderr ---\n{Clip(Stderr)}";

    private static string Clip(string s) => s.Length > 4000 ? s.Substring(0, 4000) + "\n[...]" : s;
}

internal static class NativeProgram
{
    private static readonly ConcurrentDictionary<string, string> s_built = new();
    private static readonly string s_buildDir =
        Path.Combine(Path.GetTempPath(), "interposer-tests-" + Environment.ProcessId);

    /// <summary>Compiles tests/programs/&lt;relativePath&gt; (C or C++ by extension) once per test run.</summary>
    public static string Build(string relativePath, string extraFlags = "")
    {
        string key = relativePath + "|" + extraFlags;
        return s_built.GetOrAdd(key, _ =>
        {
            string source = Path.Combine(Artifacts.ProgramsDir, relativePath);
            Directory.CreateDirectory(s_buildDir);
            string output = Path.Combine(s_buildDir,
                Path.GetFileNameWithoutExtension(relativePath) + "-" + (uint)key.GetHashCode() + (extraFlags.Contains("-shared") ? ".so" : ""));
            bool cpp = source.EndsWith(".cpp", StringComparison.Ordinal) || source.EndsWith(".cc", StringComparison.Ordinal);
            string compiler = cpp ? "g++" : "gcc";
            string args = $"-O1 -g -Wall -o {Quote(output)} {Quote(source)} -I {Quote(Artifacts.ShimDir)} -pthread -ldl {extraFlags}";
            RunResult r = Run(compiler, args, preload: false, timeoutSeconds: 120);
            if (r.ExitCode != 0)
                Assert.Fail($"{compiler} {args} failed:\n{r}");
            return output;
        });
    }

    public static RunResult Run(string file, string arguments, bool preload, string? options = null,
                                IDictionary<string, string>? env = null, string? stdin = null,
                                int timeoutSeconds = 120, string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo(file, arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Path.GetTempPath(),
        };
        psi.Environment.Remove("LD_PRELOAD");
        psi.Environment.Remove("INTERPOSER_OPTIONS");
        if (preload)
            psi.Environment["LD_PRELOAD"] = Artifacts.Library;
        if (options != null)
            psi.Environment["INTERPOSER_OPTIONS"] = options;
        if (env != null)
            foreach (var kv in env)
                psi.Environment[kv.Key] = kv.Value;
        using var p = Process.Start(psi)!;
        var stdoutBuffer = new MemoryStream();
        Task copyOut = p.StandardOutput.BaseStream.CopyToAsync(stdoutBuffer);
        Task<string> err = p.StandardError.ReadToEndAsync();
        try
        {
            if (stdin != null)
                p.StandardInput.Write(stdin);
            p.StandardInput.Close();
        }
        catch (IOException) { /* the program exited without reading its input */ }
        bool exited = p.WaitForExit(timeoutSeconds * 1000);
        if (!exited)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            p.WaitForExit();
        }
        copyOut.Wait(10_000);
        err.Wait(10_000);
        byte[] bytes = stdoutBuffer.ToArray();
        return new RunResult(p.ExitCode, Encoding.UTF8.GetString(bytes), err.IsCompleted ? err.Result : "", !exited, bytes);
    }

    /// <summary>Runs a shell command line (for pipelines such as `yes | head -1`).</summary>
    public static RunResult Shell(string command, bool preload, string? options = null, int timeoutSeconds = 120,
                                  string? workingDirectory = null, IDictionary<string, string>? env = null) =>
        Run("/bin/bash", "-c " + Quote(command), preload, options, env, null, timeoutSeconds, workingDirectory);

    /// <summary>Quotes one argument for ProcessStartInfo.Arguments, whose parser follows the
    /// Windows rules on every platform: double quotes group, and backslashes are literal except
    /// in front of a double quote.</summary>
    public static string Quote(string s)
    {
        var sb = new StringBuilder("\"");
        int backslashes = 0;
        foreach (char c in s)
        {
            if (c == '\\') { backslashes++; continue; }
            if (c == '"') { sb.Append('\\', backslashes * 2 + 1).Append('"'); backslashes = 0; continue; }
            sb.Append('\\', backslashes).Append(c);
            backslashes = 0;
        }
        sb.Append('\\', backslashes * 2).Append('"');
        return sb.ToString();
    }
}
