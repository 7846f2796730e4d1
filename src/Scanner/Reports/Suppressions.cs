// Suppressions.cs — LeakSanitizer's suppression files: one `leak:<pattern>` per line, '#'
// comments, blank lines ignored. A pattern matches a frame's function name, module path or
// source file (from the DWARF line table): `*` matches any run of characters, a leading `^`
// and a trailing `$` anchor it, and without anchors it matches anywhere in the name (LSan's
// TemplateMatch). A leaked block is suppressed when any frame of its allocation stack matches.
// Parsing never throws: a bad line gets one error naming its line number and is skipped.
using System;
using System.Collections.Generic;
using System.IO;
using Interposer.Scanner.Symbols;

namespace Interposer.Scanner.Reports;

internal sealed class Suppressions
{
    public sealed class Rule
    {
        public Rule(string pattern) => Pattern = pattern;
        public string Pattern { get; }
        public int Blocks { get; set; }
        public ulong Bytes { get; set; }
    }

    private readonly List<Rule> _rules;

    private Suppressions(List<Rule> rules) => _rules = rules;

    public IReadOnlyList<Rule> Rules => _rules;

    public static Suppressions Empty { get; } = new(new List<Rule>());

    /// <summary>Reads a suppressions file; problems (unreadable file, bad lines) go to errors.</summary>
    public static Suppressions Load(string path, List<string> errors)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            errors.Add($"cannot read the suppressions file {path}: {e.Message}");
            return Empty;
        }
        return Parse(text, path, errors);
    }

    public static Suppressions Parse(string text, string source, List<string> errors)
    {
        var rules = new List<Rule>();
        int lineNo = 0;
        foreach (string raw in text.Split('\n'))
        {
            lineNo++;
            string line = raw.Trim(' ', '\t', '\r');
            if (line.Length == 0 || line[0] == '#')
                continue;
            int colon = line.IndexOf(':');
            string kind = colon < 0 ? line : line[..colon].Trim();
            string pattern = colon < 0 ? "" : line[(colon + 1)..].Trim();
            if (kind != "leak")
            {
                errors.Add($"{source}:{lineNo}: unknown suppression type '{Clip(kind)}' (only leak:<pattern> applies); line ignored");
                continue;
            }
            if (pattern.Length == 0 || pattern == "^" || pattern == "$" || pattern == "^$")
            {
                errors.Add($"{source}:{lineNo}: empty pattern; line ignored");
                continue;
            }
            rules.Add(new Rule(pattern));
        }
        return new Suppressions(rules);
    }

    private static string Clip(string s)
    {
        var chars = new char[Math.Min(s.Length, 40)];
        for (int i = 0; i < chars.Length; i++)
            chars[i] = char.IsControl(s[i]) ? '?' : s[i];
        return new string(chars) + (s.Length > 40 ? "..." : "");
    }

    /// <summary>Zeroes every rule's counts (each report counts its own).</summary>
    public void ResetCounts()
    {
        foreach (Rule r in _rules)
        {
            r.Blocks = 0;
            r.Bytes = 0;
        }
    }

    /// <summary>The first rule matching any frame, or null. Counts the block against it.</summary>
    public Rule? Match(IReadOnlyList<FrameInfo> frames, ulong size)
    {
        foreach (Rule rule in _rules)
        {
            foreach (FrameInfo f in frames)
            {
                if ((f.Function != null && TemplateMatch(rule.Pattern, f.Function)) ||
                    (f.ModulePath != null && TemplateMatch(rule.Pattern, f.ModulePath)) ||
                    (f.File != null && TemplateMatch(rule.Pattern, f.File)))
                {
                    rule.Blocks++;
                    rule.Bytes += size;
                    return rule;
                }
            }
        }
        return null;
    }

    /// <summary>LeakSanitizer's template: '*' any run, '^'/'$' anchors, else a substring match.</summary>
    public static bool TemplateMatch(string template, string text)
    {
        bool start = template.StartsWith('^'), end = template.EndsWith('$') && template.Length > (start ? 1 : 0);
        string body = template[(start ? 1 : 0)..(end ? template.Length - 1 : template.Length)];
        string[] parts = body.Split('*');
        if (parts.Length == 1)
            return start && end ? text == body
                 : start ? text.StartsWith(body, StringComparison.Ordinal)
                 : end ? text.EndsWith(body, StringComparison.Ordinal)
                 : text.Contains(body, StringComparison.Ordinal);
        int pos = 0;
        for (int i = 0; i < parts.Length; i++)
        {
            string part = parts[i];
            if (i == 0 && start)
            {
                if (!text.AsSpan(pos).StartsWith(part, StringComparison.Ordinal))
                    return false;
                pos += part.Length;
                continue;
            }
            if (i == parts.Length - 1 && end)
            {
                int at = text.Length - part.Length;
                return at >= pos && text.AsSpan(at).SequenceEqual(part);
            }
            int found = text.IndexOf(part, pos, StringComparison.Ordinal);
            if (found < 0)
                return false;
            pos = found + part.Length;
        }
        return true;
    }
}
