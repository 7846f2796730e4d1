// LeakScanner.cs — one leak scan, kmemleak's kmemleak_scan() for a userspace process (issue 3).
// Runs on the scanner thread (scan signal, interposer_scan, scan_interval_s) or on the exit
// worker (report_at_exit); both are internal threads, never stopped and never scanned.
//
// LOCKING
//   s_scanLock   one scan at a time; held across the whole scan, the stop included. Only internal
//                threads take it. Order: s_scanLock -> Recorder's (_replayLock -> shard.Lock ->
//                depot._lock). The hot path never takes it.
//
// PHASES
//   1. prepare (allocates): replay the deferred log, snapshot the table, build the block index and
//      the marker, size the maps buffer. Blocks younger than min_age_ms get min_count 0: they are
//      scanned as roots and never reported (a block being filled in).
//   2. stop the world (native-shim/stw.c through ip_shim_api.stw_stop). Host threads are parked
//      only outside the core and outside a half-done update (the shim's park check), so no
//      stopped thread holds one of our locks, and none is in managed code (a GC cannot wait on it).
//   3. with the world stopped, allocate nothing (a stopped thread may hold a glibc lock):
//      replay the log again, read /proc/self/maps, reconcile the snapshot with the table (blocks
//      freed since are made black; blocks allocated since are scanned as roots, their contents
//      may hold the only pointer to an older block), scan the roots, drain the gray list,
//      classify direct/indirect, copy the head of each white block for the hex dump.
//   4. resume, then symbolize and write the report (allocates).
//
// Every range read while stopped is checked against the fresh maps (CheckedMemoryReader): a
// block whose free is still queued behind a parked producer may already be unmapped. When a
// thread could not be stopped it keeps running during the scan and may unmap anything, so every
// read then goes through process_vm_readv (CopyingMemoryReader), which fails instead of faulting.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Threading;
using Interposer.Native;
using Interposer.Options;
using Interposer.Recording;
using Interposer.Scanner.Reports;
using Interposer.Scanner.Scan;
using Interposer.Scanner.Symbols;

namespace Interposer.Scanning;

internal static unsafe class LeakScanner
{
    private const int MaxThreads = 8192;          // IP_STW_MAX_THREADS
    private const int MaxRegions = 65536;         // the shim's region table size
    private const int MapsRetries = 3;

    private static readonly Lock s_scanLock = new();   // see LOCKING
    private static Settings s_settings = new();
    private static string s_reportPath = "";
    private static IpStoppedThread* s_threads;         // MaxThreads, mmap'ed on first use
    private static IpRegion* s_regions;                // MaxRegions, mmap'ed on first use
    private static ulong* s_copyBuffer;                // Marker.MaxReadWords words for CopyingMemoryReader
    private static readonly MapsSnapshot s_maps = new();
    private static long s_scans;                       // completed scans (statistics)

    public static long Scans => Interlocked.Read(ref s_scans);

    private static Suppressions s_suppressions = Suppressions.Empty;

    public static void Configure(Settings settings)
    {
        s_settings = settings;
        s_reportPath = settings.ReportPathOrDefault();
        if (settings.Suppressions.Length > 0)
        {
            var errors = new List<string>();
            s_suppressions = Suppressions.Load(settings.Suppressions, errors);
            foreach (string e in errors)
                Diagnostics.Message(e);
        }
    }

    /// <summary>Runs one scan and writes its report. Returns the unreferenced blocks it reported (a
    /// periodic scan: the new ones), or -1 when it could not run or write (said on stderr).</summary>
    public static int Run(ScanReason reason)
    {
        lock (s_scanLock)
            return RunLocked(reason, clear: false);
    }

    /// <summary>kmemleak's "clear": scans, and marks every unreferenced block as seen (min_count 0)
    /// so that no later report lists it. Writes no report. Returns how many, or -1.</summary>
    public static int Clear()
    {
        lock (s_scanLock)
            return RunLocked(ScanReason.Signal, clear: true);
    }

    /// <summary>The file the last report went to (for the control socket's answer).</summary>
    public static string LastReportPath { get; private set; } = "";

    private static bool EnsureBuffers()
    {
        if (s_threads == null)
            s_threads = (IpStoppedThread*)Interop.Libc.MapAnonymous((nuint)(sizeof(IpStoppedThread) * MaxThreads));
        if (s_regions == null)
            s_regions = (IpRegion*)Interop.Libc.MapAnonymous((nuint)(sizeof(IpRegion) * MaxRegions));
        if (s_copyBuffer == null)
            s_copyBuffer = (ulong*)Interop.Libc.MapAnonymous((nuint)(sizeof(ulong) * Marker.MaxReadWords));
        return s_threads != null && s_regions != null && s_copyBuffer != null;
    }

    private static int RunLocked(ScanReason reason, bool clear)
    {
        IpShimApi* api = Recorder.Api;
        if (api == null || api->StwStop == null || !EnsureBuffers())
        {
            Diagnostics.Message("scan skipped: the stop-the-world service is not available");
            return -1;
        }
        long started = Stopwatch.GetTimestamp();

        // ---- 1. prepare (allocates) ----
        Recorder.CatchUp();
        // After the replay (a queued free drops its block's areas), before the snapshot: every
        // area copied belongs to a block allocated before the snapshot, unless it was freed since.
        ScanAreas.Area[] areas = ScanAreas.Copy();
        var shardVersions = new long[AllocationTable.ShardCount];
        IpRecord[] records = Recorder.Table.Snapshot(shardVersions);
        ulong now = Interop.Libc.MonotonicCoarseNs();
        ulong minAgeNs = (ulong)s_settings.MinAgeMs * 1_000_000UL;
        var blocks = new HeapBlock[records.Length];
        for (int i = 0; i < records.Length; i++)
        {
            int minCount = records[i].MinCount;
            // A record time may run a few ns ahead of the coarse clock (the table makes times
            // strictly increasing per shard): such a block is as young as they come.
            if (minCount > 0 && minAgeNs > 0 && (records[i].TimeNs >= now || now - records[i].TimeNs < minAgeNs))
                minCount = 0; // young: a root, never reported
            BlockFlags flags = (records[i].Flags & (ushort)RecordFlags.NoScan) != 0 ? BlockFlags.NoScan : BlockFlags.None;
            blocks[i] = new HeapBlock(records[i].Address, records[i].Size, minCount, flags, i);
        }
        long snapshotted = Stopwatch.GetTimestamp();
        var index = BlockIndex.Build(blocks);
        long indexed = Stopwatch.GetTimestamp();
        var work = new InStopWork(index, records, shardVersions, s_settings, api, FileScanAreas(index, areas));
        work.PrepareTicks[0] = snapshotted - started;
        work.PrepareTicks[1] = indexed - snapshotted;
        work.PrepareTicks[2] = Stopwatch.GetTimestamp() - indexed;

        // ---- 2..3. stop, mark, resume; retried when the maps outgrew their buffer ----
        int stopped = -1;
        for (int attempt = 0; attempt < MapsRetries; attempt++)
        {
            s_maps.Prepare(attempt * 256 * 1024);
            work.Reset();
            if (api->StwPrepare != null)
                api->StwPrepare(); // who may be signalled (seccomp), read before the pause starts
            long stopCall = Stopwatch.GetTimestamp();
            stopped = api->StwStop(s_threads, MaxThreads, s_settings.StopTimeoutMs);
            // EAGAIN: a fork held our locks for the whole stop timeout (stw.c, "fork vs stop").
            for (int again = 0; stopped < 0 && Marshal.GetLastSystemError() == 11 && again < 20; again++)
            {
                Thread.Sleep(5);
                stopped = api->StwStop(s_threads, MaxThreads, s_settings.StopTimeoutMs);
            }
            work.StopLatencyTicks = Stopwatch.GetTimestamp() - stopCall;
            if (stopped < 0)
            {
                int errno = Marshal.GetLastSystemError();
                Diagnostics.Message($"scan skipped: cannot stop the world (errno {errno}{(errno == 16 ? ": the stop signal SIGRTMIN+3 is busy or its handler was replaced" : "")})");
                return -1;
            }
            long stopAt = Stopwatch.GetTimestamp();
            bool mapsOk;
            try
            {
                mapsOk = work.RunStopped(s_threads, stopped, s_regions, MaxRegions, s_copyBuffer, s_maps);
            }
            finally
            {
                api->StwResume();
            }
            work.StopTicks = Stopwatch.GetTimestamp() - stopAt;
            if (mapsOk)
                break;
            if (attempt == MapsRetries - 1)
            {
                Diagnostics.Message("scan skipped: /proc/self/maps could not be read whole while the world was stopped");
                return -1;
            }
        }

        // ---- 4. report (allocates) ----
        int rc = clear ? MarkSeen(work, records) : WriteReport(reason, work, records, stopped, started);
        Interlocked.Increment(ref s_scans);
        return rc;
    }

    // kmemleak_scan_area ranges -> the blocks holding them. An area outside every block, or one
    // that runs past its block's end (the kernel's "Scan area larger than object"), is refused
    // and dropped, with one stderr line; one whose block was freed since the copy is dropped by
    // that free and needs no word.
    private static ScanAreaSet? FileScanAreas(BlockIndex index, ScanAreas.Area[] areas)
    {
        if (areas.Length == 0)
            return null;
        var filed = new List<(int, MemoryRange)>(areas.Length);
        foreach (ScanAreas.Area area in areas)
        {
            int k = index.Find(area.Start);
            if (k >= 0)
            {
                index.GetContents(k, out _, out ulong blockEnd);
                ulong blockStart = index.Blocks[k].Address;
                ulong realEnd = blockStart + index.Blocks[k].Size;
                if (area.End == ulong.MaxValue || area.End <= realEnd)
                {
                    filed.Add((k, MemoryRange.FromBounds(area.Start, Math.Min(area.End, Math.Min(blockEnd, realEnd)))));
                    continue;
                }
            }
            if (ScanAreas.Remove(area))
            {
                string why = k >= 0 ? "runs past the end of its block" : "is not inside a tracked block";
                Diagnostics.Message($"kmemleak_scan_area(0x{area.Start:x}, {area.End - area.Start}): the area {why}; ignored");
            }
        }
        return ScanAreaSet.Build(filed);
    }

    // Notes already said on stderr (a module over max_line_table_mb), so each is said once.
    // LOCKING: locked on itself, a leaf (nothing is called while it is held); only threads that
    // symbolize take it (the scanner, control, the exit worker), never a hook.
    private static readonly HashSet<string> s_symbolNotesSaid = new(StringComparer.Ordinal);

    /// <summary>A symbolizer for this process as it is now (its maps, plus the libraries it
    /// dlclose'd), with max_line_table_mb. For the report, the live dump and control's dump=.</summary>
    public static Symbolizer NewSymbolizer() =>
        new(ModuleMap.FromProcSelfMaps().WithDeparted(DepartedModules(Recorder.Api)), new DebugFileLocator(),
            (long)s_settings.MaxLineTableMb << 20, SaySymbolNote);

    private static void SaySymbolNote(string note)
    {
        lock (s_symbolNotesSaid)
        {
            if (!s_symbolNotesSaid.Add(note))
                return;
        }
        Diagnostics.Message(note);
    }

    private static int MarkSeen(InStopWork work, IpRecord[] records)
    {
        int n = 0;
        ReadOnlySpan<HeapBlock> sorted = work.Index.Blocks;
        for (int k = 0; k < sorted.Length; k++)
        {
            if (work.Marker.ColorOf(k) != BlockColor.White || !work.Present(k))
                continue;
            ref readonly IpRecord r = ref records[sorted[k].Id];
            if (Recorder.Table.Update(r.Address, minCount: 0, setFlags: 0))
                n++;
        }
        return n;
    }

    private static int WriteReport(ScanReason reason, InStopWork work, IpRecord[] records, int nthreads, long started)
    {
        int pid = Interop.Libc.GetPid();
        ulong now = Interop.Libc.MonotonicCoarseNs();
        Marker marker = work.Marker;
        BlockIndex index = work.Index;
        ReadOnlySpan<HeapBlock> sorted = index.Blocks;
        var notes = new List<string>();
        var leaks = new List<(ulong Time, LeakedBlock Block)>();
        int newLeaks = 0, suppressed = 0;
        var symbolizer = NewSymbolizer();
        var frameCache = new Dictionary<ulong, FrameInfo>();
        s_suppressions.ResetCounts();
        for (int k = 0; k < sorted.Length; k++)
        {
            ref readonly IpRecord r = ref records[sorted[k].Id];
            bool wasReported = (r.Flags & (ushort)RecordFlags.Reported) != 0;
            bool white = marker.ColorOf(k) == BlockColor.White && work.Present(k);
            if (!white)
            {
                if (wasReported && work.Present(k) && marker.ColorOf(k) == BlockColor.Gray)
                {
                    Recorder.Table.UpdateFlags(r.Address, r.TimeNs, 0, (ushort)RecordFlags.Reported);
                    if (reason == ScanReason.Periodic)
                        notes.Add($"referenced again: object 0x{r.Address:x} (size {r.Size})");
                }
                continue;
            }
            if (!wasReported && !work.IsLoaderBlock(Recorder.Depot.Get(r.StackId, out _)))
            {
                newLeaks++;
                Recorder.Table.UpdateFlags(r.Address, r.TimeNs, (ushort)RecordFlags.Reported, 0);
            }
            ReadOnlySpan<ulong> frames = Recorder.Depot.Get(r.StackId, out uint crc);
            if (work.IsLoaderBlock(frames))
                continue;
            if (s_suppressions.Rules.Count > 0 && IsSuppressed(frames, r.Size, symbolizer, frameCache))
            {
                suppressed++;
                continue;
            }
            if (reason == ScanReason.Periodic && wasReported)
                continue; // kmemleak's OBJECT_REPORTED: a periodic scan logs each leak once
            leaks.Add((r.TimeNs, new LeakedBlock(r.Address, r.Size, now > r.TimeNs ? (now - r.TimeNs) / 1e9 : 0, r.Tid,
                Recorder.Threads.NameOf(r.ThreadIndex), crc, frames.ToArray(), work.HeadOf(k), marker.IsIndirect(k), r.StackId)));
        }
        leaks.Sort(static (a, b) => a.Time != b.Time ? a.Time.CompareTo(b.Time) : a.Block.Address.CompareTo(b.Block.Address));

        int notStopped = 0, threadsStopped = 0;
        for (int i = 0; i < nthreads; i++)
        {
            if (s_threads[i].State == (int)StwState.Stopped)
            {
                threadsStopped++;
            }
            else if (s_threads[i].State == (int)StwState.Running)
            {
                notStopped++;
                int tid = s_threads[i].Tid;
                notes.Add(s_threads[i].Reason == (ulong)StwReason.Seccomp
                    ? $"thread {tid} (\"{ThreadComm(tid)}\") runs under a seccomp filter of its own (or strict mode) and was not stopped " +
                      "(the stop signal's handler makes syscalls the filter may punish with death); " +
                      "its stack was scanned while it ran, a pointer it held in a register may have been missed"
                    : $"thread {tid} (\"{ThreadComm(tid)}\") could not be stopped (it blocks signals or does not run); " +
                      "its stack was scanned while it ran, a pointer it held in a register may have been missed");
            }
        }
        foreach (Suppressions.Rule rule in s_suppressions.Rules)
            if (rule.Blocks > 0)
                notes.Add($"suppressed by leak:{rule.Pattern}: {rule.Blocks} blocks, {rule.Bytes} bytes");
        if (work.RegionsDropped > 0)
            notes.Add($"{work.RegionsDropped} program mmap regions were not tracked (table full) and not scanned");

        double ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;
        var summary = new ScanSummary(reason switch { ScanReason.Periodic => "periodic", ScanReason.Exit => "exit", _ => "explicit" },
            records.Length, suppressed, ms(Stopwatch.GetTimestamp() - started), ms(work.StopTicks), ms(work.StopLatencyTicks), threadsStopped, notStopped,
            marker.Stats.RootBytes + marker.Stats.BlockBytes);

        if (reason == ScanReason.Periodic && leaks.Count == 0 && notes.Count == 0)
            return 0; // nothing new: kmemleak's periodic scan stays quiet too (and found 0 new)
        var blocksOut = new List<LeakedBlock>(leaks.Count);
        foreach (var l in leaks)
            blocksOut.Add(l.Block);
        long rendering = Stopwatch.GetTimestamp();
        string text = s_settings.ReportFormat == "json"
            ? LeakReport.RenderJson(blocksOut, pid, symbolizer, notes, summary, s_settings.MaxReported)
            : LeakReport.Render(blocksOut, pid, symbolizer, notes, summary, s_settings.MaxReported);
        work.PrepareTicks[3] = Stopwatch.GetTimestamp() - rendering;
        string path = ReportFile.ExpandPath(s_reportPath, pid);
        LastReportPath = path;
        string? error = ReportFile.WriteAtomically(path, text, Diagnostics.RawBytes);
        if (error != null)
        {
            Diagnostics.Message(error + " (the next scan tries again)");
            return -1;
        }
        if (reason == ScanReason.Periodic && newLeaks > 0)
            Diagnostics.Message($"{newLeaks} new suspected memory leaks (see {path})");
        else if (reason == ScanReason.Exit && leaks.Count > 0)
            Diagnostics.Message($"{leaks.Count} unreferenced blocks at exit (see {path})");
        else if (s_settings.Verbosity >= 1)
            Diagnostics.Message($"scan: {leaks.Count} unreferenced blocks; report in {path}");
        int found = leaks.Count;
        // Debugging aid for "why is this block not reported?": INTERPOSER_DEBUG_WHY=0xADDR lists
        // the root words that point into the block containing ADDR (re-read after the resume).
        string? why = Environment.GetEnvironmentVariable("INTERPOSER_DEBUG_WHY");
        if (why != null && why.StartsWith('@')) // @FILE: the address is read from FILE at each scan
        {
            try { why = System.IO.File.ReadAllText(why[1..]).Trim(); }
            catch (Exception) { why = null; }
        }
        if (why != null && ulong.TryParse(why.StartsWith("0x") ? why[2..] : why, System.Globalization.NumberStyles.HexNumber, null, out ulong whyAddr))
        {
            int k = work.Index.Find(whyAddr);
            ulong size = k >= 0 ? work.Index.Blocks[k].Size : 1;
            ulong begin = k >= 0 ? work.Index.Blocks[k].Address : whyAddr;
            Diagnostics.Message($"why 0x{whyAddr:x}: block {(k >= 0 ? marker.ColorOf(k).ToString() : "none")}");
            foreach (string line in work.Why(begin, begin + Math.Max(size, 1), s_maps))
                Diagnostics.Message("  " + line);
        }
        if (s_settings.Verbosity >= 2)
        {
            Diagnostics.Message(work.RootStatistics());
            for (int i = 0; i < nthreads; i++)
                Diagnostics.Message($"  thread {s_threads[i].Tid}: {(StwState)s_threads[i].State}, sp 0x{s_threads[i].Sp:x}, tcb 0x{s_threads[i].Tcb:x}");
        }
        return found;
    }

    private static bool IsSuppressed(ReadOnlySpan<ulong> frames, ulong size, Symbolizer symbolizer, Dictionary<ulong, FrameInfo> cache)
    {
        var infos = new FrameInfo[frames.Length];
        for (int i = 0; i < frames.Length; i++)
        {
            if (!cache.TryGetValue(frames[i], out FrameInfo info))
                cache[frames[i]] = info = symbolizer.Symbolize(frames[i]);
            infos[i] = info;
        }
        return s_suppressions.Match(infos, size) != null;
    }

    /// <summary>Libraries dlclose'd so far, as the shim noted them (see native-shim/regions.c).</summary>
    internal static List<Module> DepartedModules(IpShimApi* api)
    {
        var list = new List<Module>();
        if (api == null || api->DepartedModules == null)
            return list;
        const int Max = 128;
        IpModule* buffer = stackalloc IpModule[Max];
        int n = Math.Min(api->DepartedModules(buffer, Max), Max);
        for (int i = 0; i < n; i++)
        {
            string? path = Marshal.PtrToStringUTF8((IntPtr)buffer[i].Path);
            if (!string.IsNullOrEmpty(path))
                list.Add(new Module(path, buffer[i].Bias, buffer[i].Start, buffer[i].End, buffer[i].FileOffset));
        }
        return list;
    }

    private static string ThreadComm(int tid)
    {
        try { return System.IO.File.ReadAllText($"/proc/self/task/{tid}/comm").TrimEnd('\n'); }
        catch (Exception) { return "?"; }
    }
}
