// Options.cs — every run-time option, defined once (LeakSanitizer's lsan_flags.inc, in C#).
// Parsing, defaults, `help=1` and the README's option section all come from Table.
//
// INTERPOSER_OPTIONS holds name=value pairs separated by ':' (as LSAN_OPTIONS). A value may be
// quoted with '...' or "..." to contain ':'. An unknown name or a malformed value produces one
// stderr line naming it; that option keeps its default and the others still apply (as LSan does).
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace Interposer.Options;

internal enum OptionType { Bool, Int, String, Choice, Signal }

internal sealed record OptionSpec(string Name, OptionType Type, string Default, string Help,
                                  int Min = 0, int Max = int.MaxValue, string[]? Choices = null);

internal sealed class Settings
{
    public bool Enabled = true;
    public int MaxFrames = 16;
    public bool BatchFrees = true;
    public string Unwinder = "fast";
    public int Verbosity;
    public string DumpAtExit = "";
    public bool Help;
    public string ReportPath = "";          // "" = the default under $TMPDIR (ReportPathOrDefault)
    public int ScanSignal = Signals.Usr2;   // 0 = no scan signal
    public int ScanIntervalS;
    public bool ReportAtExit;
    public int MinAgeMs;
    public int StopTimeoutMs = 1000;
    public int MaxReported = 1000;
    public int MaxLineTableMb = 16;
    public string ReportFormat = "text";
    public string Suppressions = ""; // the suppressions file
    public bool Control = true;
    public string ControlPath = "";

    /// <summary>control_path, or $TMPDIR/interposer.%p.sock (TMPDIR unset or relative: /tmp).</summary>
    public string ControlPathOrDefault()
    {
        if (ControlPath.Length > 0)
            return ControlPath;
        string? tmp = Environment.GetEnvironmentVariable("TMPDIR");
        if (string.IsNullOrEmpty(tmp) || tmp[0] != '/')
            tmp = "/tmp";
        return tmp.TrimEnd('/') + "/interposer.%p.sock";
    }
    public bool UseGlobals = true;
    public bool UseStacks = true;
    public bool UseRegisters = true;
    public bool UseTls = true;
    public bool UseMmapRegions = true;

    /// <summary>report_path, or $TMPDIR/interposer-leaks.%p.txt (TMPDIR unset or relative: /tmp).</summary>
    public string ReportPathOrDefault()
    {
        if (ReportPath.Length > 0)
            return ReportPath;
        string? tmp = Environment.GetEnvironmentVariable("TMPDIR");
        if (string.IsNullOrEmpty(tmp) || tmp[0] != '/')
            tmp = "/tmp";
        return tmp.TrimEnd('/') + "/interposer-leaks.%p.txt";
    }
}

/// <summary>Signal names for scan_signal. SIGRTMIN (the runtime's GC signal) and SIGRTMIN+3 (the
/// stop-the-world signal) are ours to keep; faults and uncatchable signals cannot be used.</summary>
internal static class Signals
{
    public const int Usr1 = 10, Usr2 = 12, RtMin = 34, RtMax = 64, StopTheWorld = RtMin + 3;

    private static readonly (string Name, int Number)[] s_names =
    {
        ("HUP", 1), ("INT", 2), ("QUIT", 3), ("USR1", 10), ("USR2", 12), ("ALRM", 14), ("TERM", 15),
        ("CHLD", 17), ("CONT", 18), ("TSTP", 20), ("TTIN", 21), ("TTOU", 22), ("URG", 23), ("XCPU", 24),
        ("XFSZ", 25), ("VTALRM", 26), ("PROF", 27), ("WINCH", 28), ("IO", 29), ("PWR", 30),
    };

    /// <summary>Parses "USR2", "SIGUSR2", "12", "RTMIN+5", "0"/"off" (no signal). Null error = ok.</summary>
    public static string? TryParse(string text, out int signo)
    {
        signo = 0;
        string t = text.Trim().ToUpperInvariant();
        if (t is "0" or "OFF" or "NONE")
            return null;
        if (t.StartsWith("SIG", StringComparison.Ordinal))
            t = t.Substring(3);
        if (int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out int n))
            signo = n;
        else if (t.StartsWith("RTMIN", StringComparison.Ordinal))
        {
            int off = 0;
            if (t.Length > 5 && (t[5] != '+' || !int.TryParse(t.AsSpan(6), NumberStyles.None, CultureInfo.InvariantCulture, out off)))
                return "expected RTMIN+n";
            signo = RtMin + off;
        }
        else
        {
            foreach ((string name, int number) in s_names)
                if (name == t)
                    signo = number;
            if (signo == 0)
                return "expected a signal name (USR2, USR1, RTMIN+5, ...), a number, or off";
        }
        if (signo is 9 or 19 or 4 or 5 or 6 or 7 or 8 or 11 or 13 or 31 || signo < 1 || signo > RtMax ||
            signo is 32 or 33)
            return "that signal cannot be caught, is a fault signal, or is reserved by glibc";
        if (signo == RtMin)
            return "SIGRTMIN is the .NET runtime's GC signal";
        if (signo == StopTheWorld)
            return "SIGRTMIN+3 is Interposer's stop-the-world signal";
        return null;
    }
}

internal static class OptionTable
{
    public const string EnvironmentVariable = "INTERPOSER_OPTIONS";

    public static readonly OptionSpec[] Table =
    {
        new("enabled", OptionType.Bool, "1",
            "0 turns Interposer off for this process (kmemleak's `off`): every call is passed straight to glibc."),
        new("max_frames", OptionType.Int, "16",
            "Frames kept per allocation backtrace (kmemleak's MAX_TRACE is 16).", Min: 1, Max: 64),
        new("batch_frees", OptionType.Bool, "1",
            "1: a free's record removal waits in a per-thread batch of 16 (the block itself is freed at once) and is applied later, exactly, to the record it meant; 0: every free enters the core."),
        new("unwinder", OptionType.Choice, "fast",
            "How backtraces are taken: fast (DWARF CFI with a per-PC rule cache), libunwind (unw_backtrace; slower reference), fp (frame pointers only; ~2 frames on Debian's libc).",
            Choices: new[] { "fast", "libunwind", "fp" }),
        new("verbosity", OptionType.Int, "0",
            "1 prints start-up facts on stderr; 2 adds statistics at exit.", Min: 0, Max: 2),
        new("dump_at_exit", OptionType.String, "",
            "At exit, write every live recorded block with its symbolized backtrace to this file (%p = pid, '-' = stderr)."),
        new("help", OptionType.Bool, "0",
            "Print this table on stderr at start-up, then run normally."),
        new("report_path", OptionType.String, "",
            "Where each scan writes its leak report, atomically (%p = pid). Default: $TMPDIR/interposer-leaks.%p.txt (/tmp when TMPDIR is unset)."),
        new("scan_signal", OptionType.Signal, "USR2",
            "The signal that starts a scan (kill -USR2 <pid>): USR2, USR1, RTMIN+n, a number, or off. Its handler only wakes the scanner thread."),
        new("scan_interval_s", OptionType.Int, "0",
            "Scan automatically every N seconds (kmemleak's scan=<secs>); such scans report only blocks not reported before. 0 = off.", Min: 0, Max: 86400),
        new("report_at_exit", OptionType.Bool, "0",
            "Run a final scan at exit and write its report."),
        new("min_age_ms", OptionType.Int, "0",
            "Blocks younger than this are never reported (they are scanned as roots instead: a block being filled in).", Min: 0, Max: int.MaxValue),
        new("stop_timeout_ms", OptionType.Int, "1000",
            "How long a scan waits for a thread to stop before it scans that thread's stack as it runs and names it in the report.", Min: 10, Max: 60000),
        new("report_format", OptionType.Choice, "text",
            "text: kmemleak's layout; json: the same content as one JSON document (blocks, stacks, notes, summary; see README).",
            Choices: new[] { "text", "json" }),
        new("max_reported", OptionType.Int, "1000",
            "Blocks listed one by one in a report, oldest first (kmemleak's REPORTS_NR is 50); the summary by stack counts all of them. 0 = no cap.", Min: 0, Max: int.MaxValue),
        new("max_line_table_mb", OptionType.Int, "16",
            "Largest .debug_line (inflated, MiB) read for file:line; a module with a larger one gets function+offset only, said once on stderr. The table lives in the host's memory (~16 bytes a row, ~2 rows per 7 bytes of section). 0 = no limit.", Min: 0, Max: 65536),
        new("suppressions", OptionType.String, "",
            "A file of LeakSanitizer-style suppressions, one leak:<pattern> per line ('*' wildcard, ^ and $ anchors), matched against every frame's function, module and source file. Suppressed blocks are counted in the summary, not listed."),
        new("control", OptionType.Bool, "1",
            "Open the control socket (kmemleak's debugfs commands: scan, clear, dump=<addr>, stack=on|off, scan=on|off|<secs>, off)."),
        new("control_path", OptionType.String, "",
            "The control socket's path (%p = pid), created 0600 and removed at exit. Default: $TMPDIR/interposer.%p.sock (/tmp when TMPDIR is unset)."),
        new("use_globals", OptionType.Bool, "1",
            "Roots: the writable segments (.data, .bss) of every loaded object, dlopen'ed ones included."),
        new("use_stacks", OptionType.Bool, "1",
            "Roots: every thread's stack, from its saved stack pointer (minus the red zone) to the end of the mapping."),
        new("use_registers", OptionType.Bool, "1",
            "Roots: each stopped thread's general registers."),
        new("use_tls", OptionType.Bool, "1",
            "Roots: static TLS, the thread control block (pthread_setspecific values) and the DTV (dynamic TLS of dlopen'ed libraries)."),
        new("use_mmap_regions", OptionType.Bool, "1",
            "Roots: the writable anonymous regions the program mapped itself with mmap/mremap (LeakSanitizer does not scan them)."),
    };

    /// <summary>Parses text into settings; every problem is appended to errors, one line each.</summary>
    public static Settings Parse(string? text, List<string> errors)
    {
        var settings = new Settings();
        if (string.IsNullOrEmpty(text))
            return settings;
        foreach (string item in Split(text, errors))
        {
            if (item.Length == 0)
                continue;
            int eq = item.IndexOf('=');
            if (eq <= 0)
            {
                errors.Add($"malformed option '{Printable(item)}' in {EnvironmentVariable} (expected name=value); ignored");
                continue;
            }
            string name = item.Substring(0, eq).Trim();
            string value = Unquote(item.Substring(eq + 1).Trim());
            OptionSpec? spec = Array.Find(Table, s => s.Name == name);
            if (spec == null)
            {
                errors.Add($"unknown option '{Printable(name)}' in {EnvironmentVariable}; ignored (INTERPOSER_OPTIONS=help=1 lists them)");
                continue;
            }
            string? problem = Apply(settings, spec, value);
            if (problem != null)
                errors.Add($"bad value '{Printable(value)}' for option '{name}': {problem}; keeping the default {spec.Default}");
        }
        return settings;
    }

    private static string? Apply(Settings s, OptionSpec spec, string value)
    {
        switch (spec.Type)
        {
            case OptionType.Bool:
                bool? b = value switch { "1" or "true" or "yes" => true, "0" or "false" or "no" => false, _ => null };
                if (b == null) return "expected 0 or 1";
                SetBool(s, spec.Name, b.Value);
                return null;
            case OptionType.Int:
                if (!int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n))
                    return "expected an integer";
                if (n < spec.Min || n > spec.Max)
                    return $"expected {spec.Min}..{spec.Max}";
                SetInt(s, spec.Name, n);
                return null;
            case OptionType.Choice:
                if (Array.IndexOf(spec.Choices!, value) < 0)
                    return "expected one of " + string.Join("|", spec.Choices!);
                SetString(s, spec.Name, value);
                return null;
            case OptionType.Signal:
                string? bad = Signals.TryParse(value, out int signo);
                if (bad != null) return bad;
                s.ScanSignal = signo;
                return null;
            default:
                if (value.IndexOf('\0') >= 0) return "contains a NUL byte";
                SetString(s, spec.Name, value);
                return null;
        }
    }

    private static void SetBool(Settings s, string name, bool v)
    {
        switch (name)
        {
            case "enabled": s.Enabled = v; break;
            case "batch_frees": s.BatchFrees = v; break;
            case "help": s.Help = v; break;
            case "report_at_exit": s.ReportAtExit = v; break;
            case "control": s.Control = v; break;
            case "use_globals": s.UseGlobals = v; break;
            case "use_stacks": s.UseStacks = v; break;
            case "use_registers": s.UseRegisters = v; break;
            case "use_tls": s.UseTls = v; break;
            case "use_mmap_regions": s.UseMmapRegions = v; break;
        }
    }

    private static void SetInt(Settings s, string name, int v)
    {
        switch (name)
        {
            case "max_frames": s.MaxFrames = v; break;
            case "verbosity": s.Verbosity = v; break;
            case "scan_interval_s": s.ScanIntervalS = v; break;
            case "min_age_ms": s.MinAgeMs = v; break;
            case "stop_timeout_ms": s.StopTimeoutMs = v; break;
            case "max_reported": s.MaxReported = v; break;
            case "max_line_table_mb": s.MaxLineTableMb = v; break;
        }
    }

    private static void SetString(Settings s, string name, string v)
    {
        switch (name)
        {
            case "unwinder": s.Unwinder = v; break;
            case "report_format": s.ReportFormat = v; break;
            case "dump_at_exit": s.DumpAtExit = v; break;
            case "report_path": s.ReportPath = v; break;
            case "control_path": s.ControlPath = v; break;
            case "suppressions": s.Suppressions = v; break;
        }
    }

    /// <summary>Splits on ':' outside quotes. An unterminated quote is an error; the rest is dropped.</summary>
    private static List<string> Split(string text, List<string> errors)
    {
        var items = new List<string>();
        var current = new StringBuilder();
        char quote = '\0';
        foreach (char c in text)
        {
            if (quote != '\0')
            {
                current.Append(c);
                if (c == quote) quote = '\0';
            }
            else if (c == '\'' || c == '"')
            {
                quote = c;
                current.Append(c);
            }
            else if (c == ':')
            {
                items.Add(current.ToString());
                current.Clear();
            }
            else
            {
                current.Append(c);
            }
        }
        if (quote != '\0')
        {
            errors.Add($"unterminated quote in {EnvironmentVariable} near '{Printable(current.ToString())}'; that option is ignored");
            return items;
        }
        items.Add(current.ToString());
        return items;
    }

    private static string Unquote(string v) =>
        v.Length >= 2 && (v[0] == '\'' || v[0] == '"') && v[^1] == v[0] ? v.Substring(1, v.Length - 2) : v;

    /// <summary>Keeps error lines one line long and readable whatever bytes the user passed.</summary>
    private static string Printable(string s)
    {
        var sb = new StringBuilder(Math.Min(s.Length, 80));
        foreach (char c in s)
        {
            if (sb.Length >= 80) { sb.Append("..."); break; }
            sb.Append(char.IsControl(c) || c == '\u2028' || c == '\u2029' ? '?' : c);
        }
        return sb.ToString();
    }

    /// <summary>The table as printed by help=1 (and copied into the README).</summary>
    public static string HelpText()
    {
        var sb = new StringBuilder();
        sb.Append("Interposer options (INTERPOSER_OPTIONS=name=value:name=value):\n");
        foreach (OptionSpec o in Table)
        {
            string type = o.Type switch
            {
                OptionType.Bool => "bool",
                OptionType.Int => $"int {o.Min}..{o.Max}",
                OptionType.Choice => string.Join("|", o.Choices!),
                OptionType.Signal => "signal",
                _ => "string",
            };
            sb.Append($"  {o.Name,-14} {type,-20} default {(o.Default.Length == 0 ? "(empty)" : o.Default),-8} {o.Help}\n");
        }
        return sb.ToString();
    }
}
