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

internal enum OptionType { Bool, Int, String, Choice }

internal sealed record OptionSpec(string Name, OptionType Type, string Default, string Help,
                                  int Min = 0, int Max = int.MaxValue, string[]? Choices = null);

internal sealed class Settings
{
    public bool Enabled = true;
    public int MaxFrames = 16;
    public string Unwinder = "fast";
    public int Verbosity;
    public string DumpAtExit = "";
    public bool Help;
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
        new("unwinder", OptionType.Choice, "fast",
            "How backtraces are taken: fast (DWARF CFI with a per-PC rule cache), libunwind (unw_backtrace; slower reference), fp (frame pointers only; ~2 frames on Debian's libc).",
            Choices: new[] { "fast", "libunwind", "fp" }),
        new("verbosity", OptionType.Int, "0",
            "1 prints start-up facts on stderr; 2 adds statistics at exit.", Min: 0, Max: 2),
        new("dump_at_exit", OptionType.String, "",
            "At exit, write every live recorded block with its symbolized backtrace to this file (%p = pid, '-' = stderr)."),
        new("help", OptionType.Bool, "0",
            "Print this table on stderr at start-up, then run normally."),
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
            case "help": s.Help = v; break;
        }
    }

    private static void SetInt(Settings s, string name, int v)
    {
        switch (name)
        {
            case "max_frames": s.MaxFrames = v; break;
            case "verbosity": s.Verbosity = v; break;
        }
    }

    private static void SetString(Settings s, string name, string v)
    {
        switch (name)
        {
            case "unwinder": s.Unwinder = v; break;
            case "dump_at_exit": s.DumpAtExit = v; break;
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
                _ => "string",
            };
            sb.Append($"  {o.Name,-14} {type,-20} default {(o.Default.Length == 0 ? "(empty)" : o.Default),-8} {o.Help}\n");
        }
        return sb.ToString();
    }
}
