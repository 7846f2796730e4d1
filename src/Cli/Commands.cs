// Commands.cs — run, scan, report and diff.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace Interposer.Cli;

internal static class RunCommand
{
    public static int Execute(string[] args)
    {
        var (o, positional, program) = Program.Parse(args, "options", "leak-exitcode", "color", "report");
        if (o.ContainsKey("help"))
        {
            Console.Out.Write("interposer run [--options=OPTS] [--leak-exitcode=N] [--color=auto|always|never] [--report=FILE] -- prog args...\n" +
                              "  Runs prog under the library with report_at_exit=1 and prints its leak report.\n" +
                              "  The report file stays where the library says (--report=FILE picks it; %p = pid).\n" +
                              "  Exit code: N (default 1) when leaks were found; else the program's own exit code.\n");
            return 0;
        }
        if (program.Count == 0)
            program = positional;
        if (program.Count == 0)
            throw new CliException("run: which program? (interposer run -- prog args...)");
        int leakExit = o.TryGetValue("leak-exitcode", out string? le) && int.TryParse(le, out int n) ? n : 1;
        // The report file is kept: the library names it on stderr, and `interposer report` or a
        // later `diff` may want it (as JSON with --options=report_format=json).
        string report = o.TryGetValue("report", out string? chosen) && chosen.Length > 0
            ? Path.GetFullPath(chosen)
            : Path.Combine(Directory.CreateTempSubdirectory("interposer-run-").FullName, "report.%p.txt");
        if (report.Contains(':'))
            throw new CliException("run: --report may not contain ':' (it separates INTERPOSER_OPTIONS)");
        if (!report.Contains("%p", StringComparison.Ordinal))
        {
            // A fixed name: a report left by an earlier run must not pass for this one's.
            try { File.Delete(report); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new CliException($"run: cannot replace {report}: {e.Message}");
            }
        }
        var psi = new ProcessStartInfo(program[0]) { UseShellExecute = false };
        foreach (string a in program.Skip(1))
            psi.ArgumentList.Add(a);
        psi.Environment["LD_PRELOAD"] = Program.LibraryPath();
        string user = o.TryGetValue("options", out string? opts) && opts.Length > 0 ? ":" + opts : "";
        psi.Environment["INTERPOSER_OPTIONS"] = $"report_at_exit=1:report_path={report}{user}";
        Process p;
        try { p = Process.Start(psi)!; }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            throw new CliException($"run: cannot start {program[0]}: {e.Message}");
        }
        p.WaitForExit();
        string mine = report.Replace("%p", p.Id.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);
        if (!File.Exists(mine))
        {
            Console.Error.WriteLine("interposer: the program wrote no report (it did not exit normally, or tracking was off)");
            return p.ExitCode;
        }
        string text = File.ReadAllText(mine);
        var c = Colors.For(o.GetValueOrDefault("color"));
        Console.Out.Write(Colorize(text, c));
        Match m = Regex.Match(text, @"^summary: (\d+) unreferenced blocks", RegexOptions.Multiline);
        int leaks = m.Success ? int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
        return leaks > 0 ? leakExit : p.ExitCode;
    }

    internal static string Colorize(string text, Colors c)
    {
        var sb = new StringBuilder();
        foreach (string line in text.Split('\n'))
        {
            if (line.Length == 0)
                continue;
            sb.Append(line.StartsWith("unreferenced object ", StringComparison.Ordinal) ? c.Red(line)
                    : line.StartsWith("summary: ", StringComparison.Ordinal) || line.Contains(" allocated from:") ? c.Bold(line)
                    : line).Append('\n');
        }
        return sb.ToString();
    }
}

internal static class ScanCommand
{
    public static int Execute(string[] args)
    {
        var (o, positional, _) = Program.Parse(args, "socket", "timeout", "leak-exitcode", "color");
        if (o.ContainsKey("help"))
        {
            Console.Out.Write("interposer scan <pid> [--socket=PATH] [--timeout=SECONDS]\n" +
                              "  Asks a process running under the library to scan now (its control socket) and prints the report.\n" +
                              "  Exit code: 1 (--leak-exitcode) with leaks, 0 without.\n");
            return 0;
        }
        if (positional.Count != 1 || !int.TryParse(positional[0], NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            throw new CliException("scan: give one process id");
        string tmp = Environment.GetEnvironmentVariable("TMPDIR") is { Length: > 0 } t && t[0] == '/' ? t.TrimEnd('/') : "/tmp";
        string socket = o.GetValueOrDefault("socket") ?? $"{tmp}/interposer.{pid}.sock";
        int timeout = o.TryGetValue("timeout", out string? ts) && int.TryParse(ts, out int s) ? s : 300;
        if (!File.Exists(socket))
            throw new CliException($"scan: no control socket at {socket}: is process {pid} running under the library (with control=1)?");
        using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            client.Connect(new UnixDomainSocketEndPoint(socket));
        }
        catch (SocketException e)
        {
            throw new CliException($"scan: cannot connect to {socket}: {e.Message}");
        }
        client.Send(Encoding.ASCII.GetBytes("scan\n"));
        var answer = new StringBuilder();
        var clock = Stopwatch.StartNew();
        var buffer = new byte[4096];
        client.ReceiveTimeout = 1000;
        bool told = false;
        while (true)
        {
            int got;
            try { got = client.Receive(buffer); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
            {
                if (clock.Elapsed.TotalSeconds > timeout)
                    throw new CliException($"scan: no answer within {timeout} s");
                if (!told)
                {
                    Console.Error.WriteLine($"interposer: waiting for process {pid} to finish its scan...");
                    told = true;
                }
                continue;
            }
            if (got <= 0)
                break;
            answer.Append(Encoding.UTF8.GetString(buffer, 0, got));
        }
        string line = answer.ToString().Trim();
        Match m = Regex.Match(line, @"^ok: (\d+) unreferenced blocks; report in (.+)$");
        if (!m.Success)
            throw new CliException($"scan: the process answered: {line}");
        string path = m.Groups[2].Value;
        string text = File.ReadAllText(path);
        var c = Colors.For(o.GetValueOrDefault("color"));
        Console.Out.Write(text.TrimStart().StartsWith('{') ? text : RunCommand.Colorize(text, c));
        int leakExit = o.TryGetValue("leak-exitcode", out string? le) && int.TryParse(le, out int n) ? n : 1;
        return int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) > 0 ? leakExit : 0;
    }
}

internal static class ReportCommand
{
    public static int Execute(string[] args)
    {
        var (o, positional, _) = Program.Parse(args, "format", "color");
        if (o.ContainsKey("help"))
        {
            Console.Out.Write("interposer report <file.json> [--format=text|summary|json]\n" +
                              "  Re-renders a JSON leak report: text (kmemleak's layout), summary (by allocation stack only) or json.\n");
            return 0;
        }
        if (positional.Count != 1)
            throw new CliException("report: give one report file");
        ReportModel model = ReportModel.Load(positional[0]);
        var c = Colors.For(o.GetValueOrDefault("color"));
        string format = o.GetValueOrDefault("format") ?? "text";
        Console.Out.Write(format switch
        {
            "text" => model.RenderText(withBlocks: true, c),
            "summary" => model.RenderText(withBlocks: false, c),
            "json" => model.RenderJson(),
            _ => throw new CliException($"report: unknown format '{format}' (text, summary or json)"),
        });
        return 0;
    }
}

internal static class DiffCommand
{
    public static int Execute(string[] args)
    {
        var (o, positional, _) = Program.Parse(args, "color");
        if (o.ContainsKey("help"))
        {
            Console.Out.Write("interposer diff <old.json> <new.json>\n" +
                              "  Stacks that are new in the second report, or hold more bytes than in the first, largest growth first.\n" +
                              "  Exit code: 1 when something is new or grown, 0 otherwise.\n");
            return 0;
        }
        if (positional.Count != 2)
            throw new CliException("diff: give two JSON reports, old then new");
        ReportModel before = ReportModel.Load(positional[0]), after = ReportModel.Load(positional[1]);
        var old = before.Stacks.ToDictionary(s => s.Key, s => s);
        var grown = after.Stacks
            .Select(s => (Stack: s, Old: old.GetValueOrDefault(s.Key)))
            .Where(x => x.Old == null || x.Stack.Bytes > x.Old.Bytes || x.Stack.Blocks > x.Old.Blocks)
            .OrderByDescending(x => (long)x.Stack.Bytes - (long)(x.Old?.Bytes ?? 0))
            .ToList();
        var c = Colors.For(o.GetValueOrDefault("color"));
        var sb = new StringBuilder();
        foreach (var (s, prev) in grown)
        {
            string what = prev == null
                ? $"new: {s.Bytes} bytes in {s.Blocks} blocks ({s.Kind})"
                : $"grown: {s.Bytes} bytes in {s.Blocks} blocks ({s.Kind}), was {prev.Bytes} bytes in {prev.Blocks} blocks (+{s.Bytes - prev.Bytes} bytes)";
            sb.Append(c.Bold(what + ", allocated from:")).Append('\n');
            foreach (Frame f in s.Frames)
                sb.Append("    ").Append(f.Text).Append('\n');
        }
        sb.Append(string.Create(CultureInfo.InvariantCulture,
            $"diff: {grown.Count(g => g.Old == null)} new stacks, {grown.Count(g => g.Old != null)} grown, " +
            $"{before.Stacks.Count(s => !after.Stacks.Any(n => n.Key == s.Key))} gone\n"));
        Console.Out.Write(sb.ToString());
        return grown.Count > 0 ? 1 : 0;
    }
}
