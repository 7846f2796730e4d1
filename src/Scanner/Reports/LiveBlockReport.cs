// LiveBlockReport.cs — the list of live recorded blocks with their backtraces, in kmemleak's
// per-object layout. This is what the library prints until the scan decides which blocks are
// unreferenced (then the same layout heads every "unreferenced object").
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;
using Interposer.Scanner.Symbols;

namespace Interposer.Scanner.Reports;

/// <summary>One block as a report sees it.</summary>
internal readonly record struct BlockInfo(
    ulong Address, ulong Size, double AgeSeconds, int Tid, string ThreadName, uint StackId, uint Crc, ulong[] Frames);

internal static class LiveBlockReport
{
    public static string Render(IReadOnlyList<BlockInfo> blocks, int pid, Symbolizer symbolizer, string summary)
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder(256 + blocks.Count * 256);
        var frameText = new Dictionary<ulong, string>();
        ulong bytes = 0;
        foreach (BlockInfo b in blocks)
        {
            bytes += b.Size;
            sb.Append(c, $"live block 0x{b.Address:x} (size {b.Size}):\n");
            sb.Append(c, $"  comm \"{b.ThreadName}\", pid {pid}, tid {b.Tid}, age {b.AgeSeconds:F3}s\n");
            sb.Append(c, $"  backtrace (crc {b.Crc:x8}):\n");
            foreach (ulong f in b.Frames)
            {
                if (!frameText.TryGetValue(f, out string? text))
                    frameText[f] = text = symbolizer.Symbolize(f).Format();
                sb.Append("    ").Append(text).Append('\n');
            }
        }
        sb.Append(c, $"live blocks: {blocks.Count}, bytes: {bytes}; {summary}\n");
        return sb.ToString();
    }
}
