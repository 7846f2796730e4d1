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
using System.Text;
using Interposer.Scanner.Symbols;

namespace Interposer.Scanner.Reports;

/// <summary>One unreferenced block. Head: its first bytes, copied while the world was stopped.</summary>
internal sealed record LeakedBlock(
    ulong Address, ulong Size, double AgeSeconds, int Tid, string ThreadName, uint Crc, ulong[] Frames, byte[] Head,
    bool Indirect);

/// <summary>What one scan did, for the summary line.</summary>
internal sealed record ScanSummary(
    string Kind, int LiveBlocks, double ScanMs, double StopMs, double StopLatencyMs, int ThreadsStopped, int ThreadsNotStopped,
    long ScannedBytes);

internal static class LeakReport
{
    public const string SummaryPrefix = "summary: ";

    public static string Render(IReadOnlyList<LeakedBlock> blocks, int pid, Symbolizer symbolizer,
                                IReadOnlyList<string> notes, ScanSummary summary)
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder(256 + blocks.Count * 400);
        var frameText = new Dictionary<ulong, string>();
        ulong bytes = 0;
        int indirect = 0;
        foreach (LeakedBlock b in blocks)
        {
            bytes += b.Size;
            if (b.Indirect)
                indirect++;
            sb.Append(c, $"unreferenced object 0x{b.Address:x} (size {b.Size}):\n");
            sb.Append(c, $"  comm \"{b.ThreadName}\", pid {pid}, tid {b.Tid}, age {b.AgeSeconds:F3}s\n");
            if (b.Head.Length > 0)
            {
                sb.Append(c, $"  hex dump (first {b.Head.Length} bytes):\n");
                AppendHexDump(sb, b.Head);
            }
            sb.Append(c, $"  backtrace (crc {b.Crc:x8}):\n");
            foreach (ulong f in b.Frames)
            {
                if (!frameText.TryGetValue(f, out string? text))
                    frameText[f] = text = symbolizer.Symbolize(f).Format();
                sb.Append("    ").Append(text).Append('\n');
            }
        }
        foreach (string note in notes)
            sb.Append(note).Append('\n');
        sb.Append(SummaryPrefix).Append(c,
            $"{blocks.Count} unreferenced blocks ({indirect} indirect), {bytes} bytes, of {summary.LiveBlocks} live; " +
            $"{summary.Kind} scan {summary.ScanMs:F1} ms, world stopped {summary.StopLatencyMs + summary.StopMs:F1} ms " +
            $"(stopping it {summary.StopLatencyMs:F2} ms), " +
            $"{summary.ScannedBytes} bytes scanned; {summary.ThreadsStopped} threads stopped, " +
            $"{summary.ThreadsNotStopped} not stopped\n");
        return sb.ToString();
    }

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
