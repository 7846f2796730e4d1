// ReportModel.cs — a JSON leak report (report_format=json) read back, and rendered as text, as
// the summary by stack, or as JSON again (the round trip the tests check).
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.Json;

namespace Interposer.Cli;

internal sealed record Frame(string Pc, string? Function, string? Offset, string? Module, string? ModuleOffset,
                            string? File = null, int Line = 0)
{
    // The same text as FrameInfo.Format in the library's own text report.
    public string Text => Function != null
        ? $"[<{Pc}>] {Function}+{Offset} ({Module ?? "??"}){Where}"
        : Module != null ? $"[<{Pc}>] ?? ({Module}+{ModuleOffset}){Where}" : $"[<{Pc}>] ??";

    private string Where => File != null ? string.Create(CultureInfo.InvariantCulture, $" {File}:{Line}") : "";

    /// <summary>A frame's identity across processes (addresses differ with ASLR).</summary>
    public string Key => Function != null ? $"{Function}+{Offset}@{Path.GetFileName(Module)}" : $"{Path.GetFileName(Module)}+{ModuleOffset}";
}

internal sealed record Block(string Address, ulong Size, double AgeS, string Comm, int Tid, string Kind, string Crc, string HeadHex, Frame[] Frames);

internal sealed record Stack(string Kind, ulong Bytes, int Blocks, string Crc, Frame[] Frames)
{
    public string Key => Kind + "|" + string.Join(";", Frames.Select(f => f.Key));
}

internal sealed class ReportModel
{
    public int Pid { get; init; }
    public List<Block> Blocks { get; init; } = new();
    public List<Stack> Stacks { get; init; } = new();
    public List<string> Notes { get; init; } = new();
    public JsonElement Summary { get; init; }

    public static ReportModel Load(string path)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"cannot read {path}: {e.Message}");
        }
        try
        {
            using var doc = JsonDocument.Parse(text);
            JsonElement root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("format", out var f) || f.GetString() != "interposer-leaks")
                throw new CliException($"{path} is not a JSON leak report (write one with INTERPOSER_OPTIONS=report_format=json)");
            return new ReportModel
            {
                Pid = root.GetProperty("pid").GetInt32(),
                Blocks = root.GetProperty("blocks").EnumerateArray().Select(b => new Block(
                    b.GetProperty("address").GetString()!, b.GetProperty("size").GetUInt64(), b.GetProperty("age_s").GetDouble(),
                    b.GetProperty("comm").GetString()!, b.GetProperty("tid").GetInt32(), b.GetProperty("kind").GetString()!,
                    b.GetProperty("crc").GetString()!, b.GetProperty("head_hex").GetString()!, Frames(b))).ToList(),
                Stacks = root.GetProperty("stacks").EnumerateArray().Select(s => new Stack(
                    s.GetProperty("kind").GetString()!, s.GetProperty("bytes").GetUInt64(), s.GetProperty("blocks").GetInt32(),
                    s.GetProperty("crc").GetString()!, Frames(s))).ToList(),
                Notes = root.GetProperty("notes").EnumerateArray().Select(n => n.GetString()!).ToList(),
                Summary = root.GetProperty("summary").Clone(),
            };
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new CliException($"{path}: malformed JSON leak report: {e.Message}");
        }
    }

    private static Frame[] Frames(JsonElement e) => e.GetProperty("frames").EnumerateArray().Select(f => new Frame(
        f.GetProperty("pc").GetString()!, Opt(f, "function"), Opt(f, "offset"), Opt(f, "module"), Opt(f, "module_offset"),
        Opt(f, "file"), f.TryGetProperty("line", out var line) ? line.GetInt32() : 0)).ToArray();

    private static string? Opt(JsonElement e, string name) => e.TryGetProperty(name, out var v) ? v.GetString() : null;

    public string RenderText(bool withBlocks, Colors c)
    {
        var sb = new StringBuilder();
        if (withBlocks)
        {
            foreach (Block b in Blocks)
            {
                sb.Append(c.Red($"unreferenced object {b.Address} (size {b.Size}):")).Append('\n');
                sb.Append(CultureInfo.InvariantCulture, $"  comm \"{b.Comm}\", pid {Pid}, tid {b.Tid}, age {b.AgeS:F3}s\n");
                sb.Append(b.Kind == "indirect" ? "  indirect: only other unreferenced blocks point to it\n" : "  direct: nothing points to it\n");
                if (b.HeadHex.Length > 0)
                {
                    byte[] head = Convert.FromHexString(b.HeadHex);
                    sb.Append(CultureInfo.InvariantCulture, $"  hex dump (first {head.Length} bytes):\n");
                    for (int row = 0; row < head.Length; row += 16)
                    {
                        var line = head.AsSpan(row, Math.Min(16, head.Length - row));
                        sb.Append("    ");
                        for (int i = 0; i < 16; i++)
                            sb.Append(i < line.Length ? line[i].ToString("x2", CultureInfo.InvariantCulture) + " " : "   ");
                        sb.Append(' ');
                        foreach (byte x in line)
                            sb.Append(x >= 0x20 && x < 0x7f ? (char)x : '.');
                        sb.Append('\n');
                    }
                }
                sb.Append(CultureInfo.InvariantCulture, $"  backtrace (crc {b.Crc}):\n");
                foreach (Frame f in b.Frames)
                    sb.Append("    ").Append(f.Text).Append('\n');
            }
        }
        if (Stacks.Count > 0)
        {
            sb.Append("unreferenced blocks by allocation stack, largest first:\n");
            foreach (Stack s in Stacks)
            {
                sb.Append(c.Bold($"  {s.Bytes} bytes in {s.Blocks} blocks ({s.Kind}) allocated from:")).Append('\n');
                foreach (Frame f in s.Frames)
                    sb.Append("    ").Append(f.Text).Append('\n');
            }
        }
        foreach (string n in Notes)
            sb.Append(n).Append('\n');
        JsonElement m = Summary;
        sb.Append(c.Bold(string.Create(CultureInfo.InvariantCulture,
            $"summary: {m.GetProperty("unreferenced_blocks").GetInt32()} unreferenced blocks ({m.GetProperty("indirect_blocks").GetInt32()} indirect), " +
            $"{m.GetProperty("bytes").GetUInt64()} bytes, {m.GetProperty("suppressed_blocks").GetInt32()} suppressed, of {m.GetProperty("live_blocks").GetInt32()} live"))).Append('\n');
        return sb.ToString();
    }

    public string RenderJson()
    {
        var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            void WriteFrames(Frame[] frames)
            {
                w.WriteStartArray("frames");
                foreach (Frame f in frames)
                {
                    w.WriteStartObject();
                    w.WriteString("pc", f.Pc);
                    if (f.Function != null) { w.WriteString("function", f.Function); w.WriteString("offset", f.Offset); }
                    if (f.Module != null) { w.WriteString("module", f.Module); w.WriteString("module_offset", f.ModuleOffset); }
                    if (f.File != null) { w.WriteString("file", f.File); w.WriteNumber("line", f.Line); }
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            w.WriteStartObject();
            w.WriteString("format", "interposer-leaks");
            w.WriteNumber("version", 1);
            w.WriteNumber("pid", Pid);
            w.WriteStartArray("blocks");
            foreach (Block b in Blocks)
            {
                w.WriteStartObject();
                w.WriteString("address", b.Address);
                w.WriteNumber("size", b.Size);
                w.WriteNumber("age_s", b.AgeS);
                w.WriteString("comm", b.Comm);
                w.WriteNumber("tid", b.Tid);
                w.WriteString("kind", b.Kind);
                w.WriteString("crc", b.Crc);
                w.WriteString("head_hex", b.HeadHex);
                WriteFrames(b.Frames);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("stacks");
            foreach (Stack s in Stacks)
            {
                w.WriteStartObject();
                w.WriteString("kind", s.Kind);
                w.WriteNumber("bytes", s.Bytes);
                w.WriteNumber("blocks", s.Blocks);
                w.WriteString("crc", s.Crc);
                WriteFrames(s.Frames);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("notes");
            foreach (string n in Notes)
                w.WriteStringValue(n);
            w.WriteEndArray();
            w.WritePropertyName("summary");
            Summary.WriteTo(w);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray()) + "\n";
    }
}

/// <summary>ANSI colour when writing to a terminal (or when asked).</summary>
internal sealed class Colors(bool on)
{
    public string Red(string s) => on ? "\u001b[1;31m" + s + "\u001b[0m" : s;
    public string Bold(string s) => on ? "\u001b[1m" + s + "\u001b[0m" : s;

    public static Colors For(string? mode) => new(mode switch
    {
        "always" => true,
        "never" => false,
        _ => !Console.IsOutputRedirected && Environment.GetEnvironmentVariable("NO_COLOR") == null,
    });
}
