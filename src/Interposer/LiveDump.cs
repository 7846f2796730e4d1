// LiveDump.cs — writes the live-block list (dump_at_exit, interposer_dump) and the statistics
// line. Runs outside the hot path; allocates freely.
using System;
using System.Collections.Generic;
using Interposer.Native;
using Interposer.Recording;
using Interposer.Scanner.Reports;
using Interposer.Scanner.Symbols;

namespace Interposer;

internal static unsafe class LiveDump
{
    public static int Write(string pathTemplate)
    {
        int pid = Interop.Libc.GetPid();
        IpRecord[] records = Recorder.Table.Snapshot();
        // Oldest first; the coarse clock ties often, so the address breaks ties for a stable order.
        Array.Sort(records, (a, b) => a.TimeNs != b.TimeNs ? a.TimeNs.CompareTo(b.TimeNs) : a.Address.CompareTo(b.Address));
        ulong now = Interop.Libc.MonotonicCoarseNs();
        var blocks = new List<BlockInfo>(records.Length);
        foreach (IpRecord r in records)
        {
            ReadOnlySpan<ulong> frames = Recorder.Depot.Get(r.StackId, out uint crc);
            blocks.Add(new BlockInfo(r.Address, r.Size, now > r.TimeNs ? (now - r.TimeNs) / 1e9 : 0,
                                     r.Tid, Recorder.Threads.NameOf(r.ThreadIndex), r.StackId, crc, frames.ToArray()));
        }
        var symbolizer = Scanning.LeakScanner.NewSymbolizer();
        string text = LiveBlockReport.Render(blocks, pid, symbolizer, Statistics());
        string? error = ReportFile.WriteAtomically(ReportFile.ExpandPath(pathTemplate, pid), text, Diagnostics.RawBytes);
        if (error != null)
        {
            Diagnostics.Message(error);
            return -1;
        }
        return 0;
    }

    public static string Statistics() =>
        $"stacks: {Recorder.Depot.Count}, threads: {Recorder.Threads.Count - 1}, " +
        $"deferred events replayed: {Recorder.ReplayedEvents}, deferred events lost: {Recorder.DeferredDropped}, " +
        $"stale records replaced: {Recorder.ReplacedRecords}, " +
        (Recorder.ReplacedUnchecked != 0 ? $"records replaced unchecked (too many threads): {Recorder.ReplacedUnchecked}, " : "") +
        $"replay waits given up: {Recorder.ReplayGaveUp}, " +
        $"table bytes: {Recorder.Table.SlotBytes}, lock waits: {SpinLockWord.Waits}, " +
        $"backtraces walked: {Recorder.StackWalks}, remembered: {Recorder.StackRemembered}";
}
