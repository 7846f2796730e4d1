// LeakReport.cs — the leak report in kmemleak's format (mm/kmemleak.c print_unreferenced):
//
//   unreferenced object 0x7f3a5c0012a0 (size 48):
//     comm "worker-3", pid 4242, tid 4250, age 12.345s
//     hex dump (first 32 bytes):
//       61 62 63 00 00 00 00 00 00 00 00 00 00 00 00 00  abc.............
//     backtrace (crc 5f1e0c2a):
//       [<0x55d1c0a01234>] make_leak_a+0x24 (/path/prog)
//
// followed by notes (threads that could not be stopped, blocks referenced again) and, last, the
// summary line that shows the report is complete. Rendering happens after the world resumed:
// symbolizing reads ELF files and allocates freely.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text;
using Interposer.Scanner.Symbols;

namespace Interposer.Scanner.Reports;

/// <summary>One unreferenced block. Head: its first bytes, copied while the world was stopped.</summary>
internal sealed record LeakedBlock(
    ulong Address, ulong Size, double AgeSeconds, int Tid, string ThreadName, uint Crc, ulong[] Frames, byte[] Head,
    bool Indirect, uint StackId = 0);

/// <summary>What one scan did, for the summary line.</summary>
internal sealed record ScanSummary(
    string Kind, int LiveBlocks, int Suppressed, double ScanMs, double StopMs, double StopLatencyMs, int ThreadsStopped, int ThreadsNotStopped,
    long ScannedBytes);

internal static class LeakReport
{
    public const string SummaryPrefix = "summary: ";

    /// <summary>
    /// The report text. maxReported caps the per-block list (0: no cap); the summary by stack and
    /// the summary line always count every block.
    /// </summary>
    public static string Render(IReadOnlyList<LeakedBlock> blocks, int pid, Symbolizer symbolizer,
                                IReadOnlyList<string> notes, ScanSummary summary, int maxReported = 0)
    {
        var c = CultureInfo.InvariantCulture;
        int listed = maxReported > 0 ? Math.Min(maxReported, blocks.Count) : blocks.Count;
        var sb = new StringBuilder(256 + listed * 400);
        var frameText = new Dictionary<ulong, string>();
        string Frame(ulong f)
        {
            if (!frameText.TryGetValue(f, out string? text))
                frameText[f] = text = symbolizer.Symbolize(f).Format();
            return text;
        }
        ulong bytes = 0;
        int indirect = 0;
        foreach (LeakedBlock b in blocks)
        {
            bytes += b.Size;
            if (b.Indirect)
                indirect++;
        }
        for (int i = 0; i < listed; i++)
        {
            LeakedBlock b = blocks[i];
            sb.Append(c, $"unreferenced object 0x{b.Address:x} (size {b.Size}):\n");
            sb.Append(c, $"  comm \"{b.ThreadName}\", pid {pid}, tid {b.Tid}, age {b.AgeSeconds:F3}s\n");
            sb.Append(b.Indirect ? "  indirect: only other unreferenced blocks point to it\n" : "  direct: nothing points to it\n");
            if (b.Head.Length > 0)
            {
                sb.Append(c, $"  hex dump (first {b.Head.Length} bytes):\n");
                AppendHexDump(sb, b.Head);
            }
            sb.Append(c, $"  backtrace (crc {b.Crc:x8}):\n");
            foreach (ulong f in b.Frames)
                sb.Append("    ").Append(Frame(f)).Append('\n');
        }
        if (listed < blocks.Count)
            sb.Append(c, $"... {blocks.Count - listed} more unreferenced blocks not listed (max_reported={maxReported}); the summaries below count them\n");
        AppendStackSummary(sb, blocks, Frame);
        foreach (string note in notes)
            sb.Append(note).Append('\n');
        sb.Append(SummaryPrefix).Append(c,
            $"{blocks.Count} unreferenced blocks ({indirect} indirect), {bytes} bytes, {summary.Suppressed} suppressed, of {summary.LiveBlocks} live; " +
            $"{summary.Kind} scan {summary.ScanMs:F1} ms, world stopped {summary.StopLatencyMs + summary.StopMs:F1} ms " +
            $"(stopping it {summary.StopLatencyMs:F2} ms), " +
            $"{summary.ScannedBytes} bytes scanned; {summary.ThreadsStopped} threads stopped, " +
            $"{summary.ThreadsNotStopped} not stopped\n");
        return sb.ToString();
    }

    /// <summary>
    /// Beyond kmemleak: the unreferenced blocks grouped by allocation stack and kind, largest first
    /// (LeakSanitizer's "N byte(s) in M object(s) allocated from:"). Never capped.
    /// </summary>
    private static void AppendStackSummary(StringBuilder sb, IReadOnlyList<LeakedBlock> blocks, Func<ulong, string> frame)
    {
        if (blocks.Count == 0)
            return;
        var c = CultureInfo.InvariantCulture;
        var groups = new Dictionary<(uint Crc, bool Indirect, string Key), (ulong Bytes, int Count, ulong[] Frames)>();
        foreach (LeakedBlock b in blocks)
        {
            var key = (b.Crc, b.Indirect, b.StackId != 0 ? b.StackId.ToString(c) : string.Join(",", b.Frames));
            groups[key] = groups.TryGetValue(key, out var g) ? (g.Bytes + b.Size, g.Count + 1, g.Frames) : (b.Size, 1, b.Frames);
        }
        sb.Append("unreferenced blocks by allocation stack, largest first:\n");
        foreach (var (key, g) in groups.OrderByDescending(kv => kv.Value.Bytes).ThenByDescending(kv => kv.Value.Count)
                                        .Select(kv => (kv.Key, kv.Value)))
        {
            sb.Append(c, $"  {g.Bytes} bytes in {g.Count} blocks ({(key.Indirect ? "indirect" : "direct")}) allocated from:\n");
            foreach (ulong f in g.Frames)
                sb.Append("    ").Append(frame(f)).Append('\n');
        }
    }

    /// <summary>
    /// The same content as JSON (report_format=json): {"format":"interposer-leaks","version":1,
    /// "pid", "blocks":[{address, size, age_s, comm, tid, kind, crc, head_hex, frames:[{pc,
    /// function, offset, module, module_offset, file, line}]}], "stacks":[{kind, bytes, blocks, crc, frames}],
    /// "notes":[...], "summary":{...}}. Addresses are "0x..." strings (JSON numbers lose 64-bit
    /// precision in many readers). The per-block list honours maxReported like the text.
    /// </summary>
    public static string RenderJson(IReadOnlyList<LeakedBlock> blocks, int pid, Symbolizer symbolizer,
                                    IReadOnlyList<string> notes, ScanSummary summary, int maxReported = 0)
    {
        var frameCache = new Dictionary<ulong, FrameInfo>();
        FrameInfo Frame(ulong f)
        {
            if (!frameCache.TryGetValue(f, out FrameInfo info))
                frameCache[f] = info = symbolizer.Symbolize(f);
            return info;
        }
        var stream = new System.IO.MemoryStream();
        using (var w = new System.Text.Json.Utf8JsonWriter(stream, new System.Text.Json.JsonWriterOptions { Indented = true }))
        {
            void WriteFrames(ulong[] frames)
            {
                w.WriteStartArray("frames");
                foreach (ulong pc in frames)
                {
                    FrameInfo f = Frame(pc);
                    w.WriteStartObject();
                    w.WriteString("pc", Hex(pc));
                    if (f.Function != null) { w.WriteString("function", f.Function); w.WriteString("offset", Hex(f.FunctionOffset)); }
                    if (f.ModulePath != null) { w.WriteString("module", f.ModulePath); w.WriteString("module_offset", Hex(f.ModuleOffset)); }
                    if (f.File != null) { w.WriteString("file", f.File); w.WriteNumber("line", f.Line); }
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            int listed = maxReported > 0 ? Math.Min(maxReported, blocks.Count) : blocks.Count;
            ulong bytes = 0;
            int indirect = 0;
            foreach (LeakedBlock b in blocks) { bytes += b.Size; indirect += b.Indirect ? 1 : 0; }
            w.WriteStartObject();
            w.WriteString("format", "interposer-leaks");
            w.WriteNumber("version", 1);
            w.WriteNumber("pid", pid);
            w.WriteStartArray("blocks");
            for (int i = 0; i < listed; i++)
            {
                LeakedBlock b = blocks[i];
                w.WriteStartObject();
                w.WriteString("address", Hex(b.Address));
                w.WriteNumber("size", b.Size);
                w.WriteNumber("age_s", Math.Round(b.AgeSeconds, 3));
                w.WriteString("comm", b.ThreadName);
                w.WriteNumber("tid", b.Tid);
                w.WriteString("kind", b.Indirect ? "indirect" : "direct");
                w.WriteString("crc", b.Crc.ToString("x8", CultureInfo.InvariantCulture));
                w.WriteString("head_hex", Convert.ToHexString(b.Head).ToLowerInvariant());
                WriteFrames(b.Frames);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("stacks");
            foreach (var g in blocks.GroupBy(b => (b.Crc, b.Indirect, Key: string.Join(",", b.Frames)))
                                    .Select(g => (g.Key, Bytes: g.Aggregate(0UL, (a, b) => a + b.Size), Count: g.Count(), g.First().Frames))
                                    .OrderByDescending(g => g.Bytes).ThenByDescending(g => g.Count))
            {
                w.WriteStartObject();
                w.WriteString("kind", g.Key.Indirect ? "indirect" : "direct");
                w.WriteNumber("bytes", g.Bytes);
                w.WriteNumber("blocks", g.Count);
                w.WriteString("crc", g.Key.Crc.ToString("x8", CultureInfo.InvariantCulture));
                WriteFrames(g.Frames);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("notes");
            foreach (string n in notes)
                w.WriteStringValue(n);
            w.WriteEndArray();
            w.WriteStartObject("summary");
            w.WriteNumber("unreferenced_blocks", blocks.Count);
            w.WriteNumber("listed_blocks", listed);
            w.WriteNumber("indirect_blocks", indirect);
            w.WriteNumber("bytes", bytes);
            w.WriteNumber("suppressed_blocks", summary.Suppressed);
            w.WriteNumber("live_blocks", summary.LiveBlocks);
            w.WriteString("scan", summary.Kind);
            w.WriteNumber("scan_ms", Math.Round(summary.ScanMs, 1));
            w.WriteNumber("world_stopped_ms", Math.Round(summary.StopLatencyMs + summary.StopMs, 1));
            w.WriteNumber("stopping_ms", Math.Round(summary.StopLatencyMs, 2));
            w.WriteNumber("scanned_bytes", summary.ScannedBytes);
            w.WriteNumber("threads_stopped", summary.ThreadsStopped);
            w.WriteNumber("threads_not_stopped", summary.ThreadsNotStopped);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray()) + "\n";
    }

    private static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    /// <summary>kmemleak's hex dump: 16 bytes a row, then their printable ASCII.</summary>
    public static void AppendHexDump(StringBuilder sb, ReadOnlySpan<byte> bytes)
    {
        for (int row = 0; row < bytes.Length; row += 16)
        {
            ReadOnlySpan<byte> line = bytes.Slice(row, Math.Min(16, bytes.Length - row));
            sb.Append("    ");
            for (int i = 0; i < 16; i++)
            {
                if (i < line.Length)
                    sb.Append(line[i].ToString("x2", CultureInfo.InvariantCulture));
                else
                    sb.Append("  ");
                sb.Append(' ');
            }
            sb.Append(' ');
            foreach (byte b in line)
                sb.Append(b >= 0x20 && b < 0x7f ? (char)b : '.');
            sb.Append('\n');
        }
    }
}
