// Programs.cs — the one way tests compile and run native programs, passing every argument
// through ProcessStartInfo.ArgumentList.
//
// SIGPIPE. The test host is a .NET process, and the .NET runtime sets SIGPIPE to SIG_IGN, which
// every child inherits across exec. A program started from a terminal has SIG_DFL. So every
// program here starts through `env --default-signal=PIPE` (coreutils >= 8.31): otherwise
// `yes | head -1` exits 1 even without the library, and the SIGPIPE rule cannot be tested.
// env itself runs without the library (it would print the library's option messages a second
// time); it puts LD_PRELOAD and INTERPOSER_OPTIONS into the program's environment.
//
// Arguments go through ProcessStartInfo.ArgumentList; a command-line string is split with POSIX
// shell rules (SplitWords).
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading.Tasks;
using NUnit.Framework;

namespace Interposer.Tests.Support;

internal static class Programs
{
    private static readonly ConcurrentDictionary<string, Lazy<string>> s_built = new();
    private static readonly string s_buildDir =
        Path.Combine(Path.GetTempPath(), "interposer-e2e-build-" + Environment.ProcessId);

    /// <summary>Compiles tests/programs/&lt;relativePath&gt; (C or C++ by extension) once per test run
    /// with gcc/g++ -O1 -g -Wall -pthread -ldl plus extraFlags (space-separated).</summary>
    public static string Build(string relativePath, string extraFlags = "")
    {
        string key = relativePath + "|" + extraFlags;
        return s_built.GetOrAdd(key, _ => new Lazy<string>(() => Compile(relativePath, extraFlags))).Value;
    }

    private static string Compile(string relativePath, string extraFlags)
    {
        string source = Path.Combine(Artifacts.ProgramsDir, relativePath);
        Assert.That(File.Exists(source), Is.True, $"{source} does not exist");
        Directory.CreateDirectory(s_buildDir);
        string tag = extraFlags.Length == 0 ? "" : "-" + (uint)StringComparer.Ordinal.GetHashCode(extraFlags);
        string output = Path.Combine(s_buildDir, Path.GetFileNameWithoutExtension(relativePath) + tag);
        bool cpp = source.EndsWith(".cpp", StringComparison.Ordinal) || source.EndsWith(".cc", StringComparison.Ordinal);
        var args = new List<string> { "-O1", "-g", "-Wall", "-o", output, source, "-I", Artifacts.ShimDir, "-pthread", "-ldl" };
        args.AddRange(extraFlags.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        string compiler = cpp ? "g++" : "gcc";
        RunResult r = Run(compiler, args, preload: false, timeoutSeconds: 120);
        if (r.ExitCode != 0)
            Assert.Fail($"{compiler} {string.Join(' ', args)} failed:\n{r}");
        return output;
    }

    public static RunResult Run(string file, IEnumerable<string> arguments, bool preload, string? options = null,
                                IDictionary<string, string>? env = null, string? stdin = null,
                                int timeoutSeconds = 120, string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo("/usr/bin/env")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Path.GetTempPath(),
        };
        // env itself runs without the library; it sets LD_PRELOAD and INTERPOSER_OPTIONS for the
        // program only (otherwise env would print the library's option messages a second time).
        psi.ArgumentList.Add("--default-signal=PIPE");
        psi.Environment.Remove("LD_PRELOAD");
        psi.Environment.Remove("INTERPOSER_OPTIONS");
        if (env != null)
            foreach (var kv in env)
                psi.Environment[kv.Key] = kv.Value;
        if (preload)
            psi.ArgumentList.Add("LD_PRELOAD=" + Artifacts.Library);
        if (options != null)
            psi.ArgumentList.Add("INTERPOSER_OPTIONS=" + options);
        psi.ArgumentList.Add(file);
        foreach (string a in arguments)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdoutBuffer = new MemoryStream();
        Task copyOut = p.StandardOutput.BaseStream.CopyToAsync(stdoutBuffer);
        Task<string> err = p.StandardError.ReadToEndAsync();
        Task feed = Task.Run(() =>
        {
            try
            {
                if (stdin != null)
                    p.StandardInput.Write(stdin);
                p.StandardInput.Close();
            }
            catch (IOException) { /* the program exited without reading all its input */ }
        });
        bool exited = p.WaitForExit(timeoutSeconds * 1000);
        if (!exited)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            p.WaitForExit();
        }
        copyOut.Wait(10_000);
        err.Wait(10_000);
        feed.Wait(10_000);
        byte[] bytes = stdoutBuffer.ToArray();
        return new RunResult(p.ExitCode, Encoding.UTF8.GetString(bytes), err.IsCompleted ? err.Result : "", !exited, bytes);
    }

    /// <summary>Runs file with a command line split as a POSIX shell splits words (blanks separate,
    /// '...' and "..." quote, backslash escapes), without any expansion.</summary>
    public static RunResult Run(string file, string arguments, bool preload, string? options = null,
                                IDictionary<string, string>? env = null, string? stdin = null,
                                int timeoutSeconds = 120, string? workingDirectory = null) =>
        Run(file, SplitWords(arguments), preload, options, env, stdin, timeoutSeconds, workingDirectory);

    public static List<string> SplitWords(string line)
    {
        var words = new List<string>();
        var current = new StringBuilder();
        bool inWord = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (c == '\'')
            {
                int end = line.IndexOf('\'', i + 1);
                if (end < 0) throw new ArgumentException("unterminated ' in " + line);
                current.Append(line, i + 1, end - i - 1);
                i = end;
                inWord = true;
            }
            else if (c == '"')
            {
                inWord = true;
                for (i++; i < line.Length && line[i] != '"'; i++)
                {
                    if (line[i] == '\\' && i + 1 < line.Length && (line[i + 1] is '"' or '\\' or '$' or '`'))
                        i++;
                    current.Append(line[i]);
                }
                if (i >= line.Length) throw new ArgumentException("unterminated \" in " + line);
            }
            else if (c == '\\' && i + 1 < line.Length)
            {
                current.Append(line[++i]);
                inWord = true;
            }
            else if (char.IsWhiteSpace(c))
            {
                if (inWord) words.Add(current.ToString());
                current.Clear();
                inWord = false;
            }
            else
            {
                current.Append(c);
                inWord = true;
            }
        }
        if (inWord) words.Add(current.ToString());
        return words;
    }

    /// <summary>Runs a bash command line (pipelines such as `yes | head -1`).</summary>
    public static RunResult Shell(string command, bool preload, string? options = null, int timeoutSeconds = 120,
                                  string? workingDirectory = null, IDictionary<string, string>? env = null) =>
        Run("/bin/bash", new[] { "-c", command }, preload, options, env, null, timeoutSeconds, workingDirectory);

    /// <summary>POSIX shell quoting: for Shell command lines and for Run's argument string.</summary>
    public static string Quote(string s) => "'" + s.Replace("'", "'\\''") + "'";
}
