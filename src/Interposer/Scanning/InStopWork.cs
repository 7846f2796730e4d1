// InStopWork.cs — everything a scan does while the world is stopped (LeakScanner phase 3).
//
// RULE: from RunStopped's first line to its return, allocate nothing managed, take no lock a host
// thread may hold, and call nothing that may (no malloc, no stdio, no dl* functions). Every array
// used here is allocated by the constructor or Reset, before the stop. The shard locks and the
// replay lock are safe: the park check keeps host threads that hold them running until they leave.
using System;
using System.Runtime.CompilerServices;
using Interposer.Native;
using Interposer.Options;
using Interposer.Recording;
using Interposer.Scanner.Scan;

namespace Interposer.Scanning;

internal sealed unsafe class InStopWork
{
    private const int RedZone = 128;
    private const int HeadBytes = 32;
    private const int MaxDtvEntries = 1 << 16;

    private readonly BlockIndex _index;
    private readonly IpRecord[] _records;      // the pre-stop snapshot; HeapBlock.Id indexes it
    private readonly long[] _shardVersions;    // each shard's Version when the snapshot copied it
    private readonly Settings _settings;
    private readonly IpShimApi* _api;
    private readonly bool[] _present;          // block k is still live (same address, size, birth)
    private readonly byte[] _heads;            // HeadBytes per block, for the hex dump
    private readonly byte[] _headLength;       // bytes of _heads valid for block k
    private Marker _marker;
    private readonly ScanAreaSet _areas;       // kmemleak_scan_area ranges, by block position
    private readonly MemoryRange[] _segments;  // LoadedSegments, collected before the stop
    private readonly MemoryRange[] _loaderCode; // ld.so's code: blocks it allocated are never reported

    /// <summary>glibc's main_arena, never scanned (LoadedSegments.FindMainArena); empty if not found.</summary>
    public MemoryRange MainArena { get; }

    /// <summary>
    /// Allocated by the dynamic linker (its caller frame is in ld.so): link maps, DTVs, dynamic TLS
    /// blocks, the names of dlopen'ed objects. Scanned when reachable, never reported: ld.so keeps
    /// their roots in memory we cannot see (its early link maps come from its own minimal malloc;
    /// exited threads' DTVs hang off glibc's stack cache). LeakSanitizer makes the same exception.
    /// </summary>
    public bool IsLoaderBlock(ReadOnlySpan<ulong> frames)
    {
        if (frames.IsEmpty)
            return false;
        foreach (MemoryRange r in _loaderCode)
            if (frames[0] - r.Start < r.Length)
                return true;
        return false;
    }
    private readonly IpTlsRange[] _tlsExclude; // sorted by offset
    private readonly MemoryRange[] _rootLog = new MemoryRange[4096]; // root ranges read, for Why()
    private int _rootLogCount;

    public InStopWork(BlockIndex index, IpRecord[] records, long[] shardVersions, Settings settings, IpShimApi* api,
                      ScanAreaSet? areas = null)
    {
        _areas = areas ?? ScanAreaSet.Empty;
        _shardVersions = shardVersions;
        _segments = LoadedSegments.Collect(LoadedSegments.InterposerModules, out MemoryRange[] libc, out _loaderCode);
        MainArena = LoadedSegments.FindMainArena(libc);
        _tlsExclude = new IpTlsRange[api->TlsExclude != null ? (int)api->TlsExcludeCount : 0];
        for (int i = 0; i < _tlsExclude.Length; i++)
            _tlsExclude[i] = api->TlsExclude[i];
        Array.Sort(_tlsExclude, static (a, b) => a.Offset.CompareTo(b.Offset));
        _index = index;
        _records = records;
        _settings = settings;
        _api = api;
        _present = new bool[index.Count];
        _heads = new byte[(long)index.Count * HeadBytes];
        _headLength = new byte[index.Count];
        _marker = new Marker(index, _areas);
    }

    public BlockIndex Index => _index;
    public Marker Marker => _marker;
    public long StopTicks { get; set; }          // from the stop's return to the resume: the host's pause, less StopLatencyTicks
    public long StopLatencyTicks { get; set; }   // the stop itself: signalling until every thread parked
    public long RegionsDropped { get; private set; }

    /// <summary>Root bytes read per kind (verbosity=2 prints them): what the scan looked at.</summary>
    public long GlobalBytes, RegionBytes, StackBytes, TlsBytes, NewBlockBytes;

    private static double Ms(long ticks) => ticks * 1000.0 / System.Diagnostics.Stopwatch.Frequency;

    public string RootStatistics() =>
        $"roots read: globals {GlobalBytes} B, mmap regions {RegionBytes} B, stacks {StackBytes} B, " +
        $"TLS {TlsBytes} B, blocks born during the scan {NewBlockBytes} B; static TLS {_api->StaticTlsSize} B, " +
        $"struct pthread {_api->PthreadSize} B; in the stop: reconcile+roots {Ms(PhaseTicks[0]):F1} ms, gray list {Ms(PhaseTicks[1]):F1} ms, " +
        $"classify+hex {Ms(PhaseTicks[2]):F1} ms; outside: snapshot {Ms(PrepareTicks[0]):F1} ms, index {Ms(PrepareTicks[1]):F1} ms, " +
        $"marker {Ms(PrepareTicks[2]):F1} ms, report {Ms(PrepareTicks[3]):F1} ms; main_arena {(MainArena.Length > 0 ? MainArena.ToString() : "not found")}";

    public bool Present(int k) => _present[k];

    public byte[] HeadOf(int k) => _heads.AsSpan(k * HeadBytes, _headLength[k]).ToArray();

    /// <summary>Before each stop attempt (allocates: call it before the stop).</summary>
    public void Reset()
    {
        Array.Clear(_present);
        Array.Clear(_headLength);
        _rootLogCount = 0;
        _marker = new Marker(_index, _areas); // Ignore() of an earlier attempt must not carry over
    }

    /// <summary>Phase 3. False when the maps did not fit the prepared buffer (resume, prepare larger, retry).</summary>
    public bool RunStopped(IpStoppedThread* threads, int nthreads, IpRegion* regions, int maxRegions, ulong* copyBuffer,
                           MapsSnapshot maps)
    {
        Recorder.CatchUp(worldStopped: true); // frees queued by threads stopped mid-hook-exit, early events, pending removals
        if (!maps.Read() || maps.Truncated)
            return false;
        bool anyRunning = false;
        for (int i = 0; i < nthreads; i++)
            anyRunning |= threads[i].State == (int)StwState.Running;
        if (anyRunning)
        {
            var reader = new CopyingMemoryReader(copyBuffer, Interop.Libc.GetPid());
            Mark(ref reader, threads, nthreads, regions, maxRegions, maps);
        }
        else
        {
            var reader = new CheckedMemoryReader(maps);
            Mark(ref reader, threads, nthreads, regions, maxRegions, maps);
        }
        return true;
    }

    private void Mark<TReader>(ref TReader reader, IpStoppedThread* threads, int nthreads, IpRegion* regions,
                               int maxRegions, MapsSnapshot maps) where TReader : struct, IMemoryReader
    {
        // Reconcile the snapshot with the table as it is now.
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        GlobalBytes = RegionBytes = StackBytes = TlsBytes = 0;
        long before = _marker.Stats.RootBytes;
        // Shards whose version did not move since the snapshot hold exactly the snapshot's records;
        // only the others are visited (a quiet program: none, and reconciling costs nothing).
        Span<bool> changed = stackalloc bool[AllocationTable.ShardCount];
        bool anyChanged = false;
        for (int s = 0; s < changed.Length; s++)
            anyChanged |= changed[s] = Recorder.Table.VersionOf(s) != _shardVersions[s];
        ReadOnlySpan<HeapBlock> blocks = _index.Blocks;
        for (int k = 0; k < blocks.Length; k++)
        {
            int shard = Recorder.Table.ShardOfAddress(blocks[k].Address); // >= 0: the block was recorded
            _present[k] = shard >= 0 && !changed[shard];
        }
        if (anyChanged)
        {
            var visitor = new ReconcileVisitor<TReader>(this, reader, maps);
            for (int s = 0; s < changed.Length; s++)
                if (changed[s])
                    Recorder.Table.VisitShard(s, ref visitor);
        }
        NewBlockBytes = _marker.Stats.RootBytes - before;
        for (int k = 0; k < _present.Length; k++)
            if (!_present[k])
                _marker.Ignore(k); // freed (or replaced) since the snapshot: never read it

        before = _marker.Stats.RootBytes;
        if (_settings.UseGlobals)
            ScanGlobals(ref reader, maps);
        GlobalBytes = _marker.Stats.RootBytes - before;
        before = _marker.Stats.RootBytes;

        if (_settings.UseMmapRegions && _api->ProgramRegions != null)
        {
            int n = _api->ProgramRegions(regions, maxRegions);
            RegionsDropped = (n > maxRegions ? n - maxRegions : 0) + (long)(_api->RegionsDropped != null ? *_api->RegionsDropped : 0);
            for (int i = 0; i < Math.Min(n, maxRegions); i++)
                ScanReadable(ref reader, maps, regions[i].Start, regions[i].End);
        }
        // Regions the program registered with __lsan_register_root_region: always roots.
        if (_api->RootRegions != null)
        {
            int n = _api->RootRegions(regions, maxRegions);
            for (int i = 0; i < Math.Min(n, maxRegions); i++)
                ScanReadable(ref reader, maps, regions[i].Start, regions[i].End);
        }
        RegionBytes = _marker.Stats.RootBytes - before;

        for (int i = 0; i < nthreads; i++)
            ScanThread(ref reader, maps, &threads[i]);
        long t1 = System.Diagnostics.Stopwatch.GetTimestamp();
        _marker.DrainGrayList(ref reader);
        long t2 = System.Diagnostics.Stopwatch.GetTimestamp();
        _marker.ClassifyUnreferenced(ref reader);
        CopyHeads(ref reader);
        long t3 = System.Diagnostics.Stopwatch.GetTimestamp();
        PhaseTicks[0] = t1 - t0;
        PhaseTicks[1] = t2 - t1;
        PhaseTicks[2] = t3 - t2;
    }

    /// <summary>In-stop phases (verbosity=2): reconcile and roots, the gray list, classify and hex dumps.</summary>
    public readonly long[] PhaseTicks = new long[3];

    /// <summary>Outside the stop (verbosity=2): snapshot, index, marker arrays; symbolize and render.</summary>
    public readonly long[] PrepareTicks = new long[4];

    // Data rows, clipped to the objects' exact writable segments (LoadedSegments). A row no
    // segment touches belongs to an object loaded after they were collected: scanned whole, and
    // so is its bss tail. A bss tail of a known object is only scanned where its segment reaches.
    private void ScanGlobals<TReader>(ref TReader reader, MapsSnapshot maps) where TReader : struct, IMemoryReader
    {
        Span<MemoryRange> pieces = stackalloc MemoryRange[8];
        bool previousKnown = false;
        foreach (ref readonly MapsEntry row in maps.Rows)
        {
            if (!row.Has(MapFlags.Data))
            {
                previousKnown = false;
                continue;
            }
            int n = LoadedSegments.Clip(_segments, row.Start, row.End, pieces, out bool known);
            bool isTail = row.Has(MapFlags.Anonymous);
            if (!known && !(isTail && previousKnown))
            {
                ScanReadable(ref reader, maps, row.Start, row.End);
            }
            else
            {
                for (int i = 0; i < n; i++)
                    ScanExcluding(ref reader, maps, pieces[i].Start, pieces[i].End, MainArena);
            }
            previousKnown = known || (isTail && previousKnown);
        }
    }

    private void ScanThread<TReader>(ref TReader reader, MapsSnapshot maps, IpStoppedThread* t)
        where TReader : struct, IMemoryReader
    {
        ulong sp, tcb, stackLo = 0, stackHi = 0;
        if (t->State == (int)StwState.Stopped)
        {
            sp = t->Sp;
            tcb = t->Tcb;
            if (_settings.UseRegisters)
                _marker.ScanRootWords(new ReadOnlySpan<ulong>(t->Regs, (int)StwReg.NRegs));
        }
        else if (t->State == (int)StwState.Running)
        {
            // Not stopped: its stack from the kernel's idea of its sp (when it sits in a system
            // call), else the whole stack it registered with.
            Recorder.Threads.TryGetLayout(t->Tid, out stackLo, out stackHi, out tcb);
            sp = SyscallStackPointer(t->Tid);
            if (sp == 0)
                sp = stackLo;
        }
        else
        {
            return; // exited: its stack is gone or stale
        }

        // glibc's static TLS size counts the TCB (TLS_TCB_SIZE = sizeof(struct pthread)) too, so the
        // TLS blocks take [tcb - (static - pthread), tcb); a thread's stack begins right below.
        ulong pthreadSize = _api->PthreadSize != 0 ? _api->PthreadSize : 2304;
        ulong staticTls = _api->StaticTlsSize > pthreadSize ? _api->StaticTlsSize - pthreadSize : 0;
        ulong tlsLo = tcb != 0 && staticTls != 0 && tcb > staticTls ? tcb - staticTls : ulong.MaxValue;
        if (_settings.UseStacks && sp != 0)
        {
            int row = maps.Find(sp);
            if (row >= 0)
            {
                ulong lo = Math.Max(sp > RedZone ? sp - RedZone : sp, maps.Rows[row].Start);
                ulong hi = maps.Rows[row].End;
                if (tlsLo > lo && tlsLo < hi)
                    hi = tlsLo; // a non-main thread's TLS and TCB sit at the top of its stack mapping: use_tls's part
                long before = _marker.Stats.RootBytes;
                ScanReadable(ref reader, maps, lo, hi);
                StackBytes += _marker.Stats.RootBytes - before;
            }
        }
        if (_settings.UseTls && tcb != 0)
        {
            long before = _marker.Stats.RootBytes;
            ScanTls(ref reader, maps, tlsLo != ulong.MaxValue ? tlsLo : tcb, tcb + pthreadSize, tcb);
            ScanDtv(ref reader, maps, tcb);
            TlsBytes += _marker.Stats.RootBytes - before;
        }
    }

    // [lo, hi) minus Interposer's own static TLS (the shim's ip_tls holds stale register values
    // of the host's frames in its walk cache), whose offsets from the TCB the shim measured.
    private void ScanTls<TReader>(ref TReader reader, MapsSnapshot maps, ulong lo, ulong hi, ulong tcb)
        where TReader : struct, IMemoryReader
    {
        ulong cursor = lo;
        for (int i = 0; i < _tlsExclude.Length; i++)
        {
            ulong a = tcb + (ulong)_tlsExclude[i].Offset, b = a + _tlsExclude[i].Size;
            if (b <= cursor || a >= hi)
                continue;
            if (a > cursor)
                ScanReadable(ref reader, maps, cursor, a);
            cursor = Math.Max(cursor, b);
        }
        if (cursor < hi)
            ScanReadable(ref reader, maps, cursor, hi);
    }

    // The DTV (tcbhead_t.dtv at tcb + 8) points at each module's TLS block; the blocks of modules
    // dlopen'ed after the thread started are malloc'ed, and the DTV itself may be (when it grew).
    // dtv[-1].counter is its length; entries are {val, to_free} pairs.
    private void ScanDtv<TReader>(ref TReader reader, MapsSnapshot maps, ulong tcb) where TReader : struct, IMemoryReader
    {
        if (!maps.IsReadable(tcb + 8, tcb + 16))
            return;
        ulong dtv = *(ulong*)(tcb + 8);
        if (dtv < 16 || (dtv & 7) != 0 || !maps.IsReadable(dtv - 16, dtv))
            return;
        ulong length = *(ulong*)(dtv - 16);
        if (length == 0 || length > MaxDtvEntries)
            return;
        ScanReadable(ref reader, maps, dtv - 16, dtv + 16 * (length + 1));
    }

    private void ScanExcluding<TReader>(ref TReader reader, MapsSnapshot maps, ulong start, ulong end, MemoryRange excluded)
        where TReader : struct, IMemoryReader
    {
        if (excluded.Length == 0 || excluded.End <= start || excluded.Start >= end)
        {
            ScanReadable(ref reader, maps, start, end);
            return;
        }
        if (excluded.Start > start)
            ScanReadable(ref reader, maps, start, excluded.Start);
        if (excluded.End < end)
            ScanReadable(ref reader, maps, excluded.End, end);
    }

    /// <summary>
    /// Debugging aid (INTERPOSER_DEBUG_WHY=0xADDR): the root words that point into [start, end),
    /// searched again after the world resumed (racy: the program has moved on). Allocates.
    /// </summary>
    public System.Collections.Generic.List<string> Why(ulong start, ulong end, MapsSnapshot maps)
    {
        var found = new System.Collections.Generic.List<string>();
        for (int i = 0; i < _rootLogCount; i++)
        {
            MemoryRange r = _rootLog[i];
            if (!maps.IsReadable(r.Start, r.End))
                continue;
            for (ulong a = r.Start; a + 8 <= r.End; a += 8)
            {
                ulong v = *(ulong*)a;
                if (v >= start && v < end)
                    found.Add($"0x{v:x} at 0x{a:x} in root {r}");
            }
        }
        return found;
    }

    /// <summary>Scans the readable pieces of [start, end) as a root.</summary>
    private void ScanReadable<TReader>(ref TReader reader, MapsSnapshot maps, ulong start, ulong end)
        where TReader : struct, IMemoryReader
    {
        start = (start + 7) & ~7UL;
        while (start < end)
        {
            MemoryRange piece = maps.ClipReadable(start, end);
            if (piece.Length == 0)
            {
                // Skip to the next mapping that starts after start.
                ulong next = end;
                foreach (ref readonly MapsEntry row in maps.Rows)
                {
                    if (row.Start > start)
                    {
                        next = Math.Min(row.Start, end);
                        break;
                    }
                }
                start = next;
                continue;
            }
            _marker.ScanRoots(ref reader, new ReadOnlySpan<MemoryRange>(in piece));
            if (_rootLogCount < _rootLog.Length)
                _rootLog[_rootLogCount++] = piece;
            start = piece.End;
        }
    }

    private void CopyHeads<TReader>(ref TReader reader) where TReader : struct, IMemoryReader
    {
        int copied = 0;
        for (int k = 0; k < _present.Length && copied < (1 << 16); k++)
        {
            if (!_present[k] || _marker.ColorOf(k) != BlockColor.White)
                continue;
            _index.GetContents(k, out ulong start, out ulong end);
            ulong size = _records[_index.Blocks[k].Id].Size;
            int bytes = (int)Math.Min(size, (ulong)HeadBytes);
            int words = (bytes + 7) / 8;
            if (words == 0)
                continue;
            ReadOnlySpan<ulong> w = reader.ReadWords(start, words);
            if (w.IsEmpty)
                continue;
            MemoryMarshalCopy(w, _heads.AsSpan(k * HeadBytes, bytes));
            _headLength[k] = (byte)bytes;
            copied++;
        }
    }

    private static void MemoryMarshalCopy(ReadOnlySpan<ulong> words, Span<byte> dest) =>
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(words)[..dest.Length].CopyTo(dest);

    // /proc/self/task/<tid>/syscall: "nr a1 .. a6 sp pc" while in a system call, "-1 sp pc" when
    // blocked outside one, "running" otherwise. Returns sp, or 0. No allocation.
    private static ulong SyscallStackPointer(int tid)
    {
        byte* path = stackalloc byte[64];
        int n = 0;
        foreach (byte b in "/proc/self/task/"u8)
            path[n++] = b;
        n += FormatInt(tid, path + n);
        foreach (byte b in "/syscall\0"u8)
            path[n++] = b;
        byte* buf = stackalloc byte[256];
        int fd = ScanInterop.Open(path, ScanInterop.ORdOnly | ScanInterop.OCloExec);
        if (fd < 0)
            return 0;
        nint len = ScanInterop.Read(fd, buf, 255);
        ScanInterop.Close(fd);
        if (len <= 0)
            return 0;
        var text = new ReadOnlySpan<byte>(buf, (int)len).TrimEnd((byte)'\n');
        // The second-to-last field.
        int last = text.LastIndexOf((byte)' ');
        if (last <= 0)
            return 0;
        text = text[..last];
        int prev = text.LastIndexOf((byte)' ');
        ReadOnlySpan<byte> field = text[(prev + 1)..];
        if (field.StartsWith("0x"u8))
            field = field[2..];
        ulong v = 0;
        foreach (byte c in field)
        {
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0)
                return 0;
            v = (v << 4) | (uint)d;
        }
        return v;
    }

    private static int FormatInt(int value, byte* to)
    {
        byte* tmp = stackalloc byte[12];
        int n = 0;
        uint v = (uint)value;
        do { tmp[n++] = (byte)('0' + v % 10); v /= 10; } while (v != 0);
        for (int i = 0; i < n; i++)
            to[i] = tmp[n - 1 - i];
        return n;
    }

    // Marks the snapshot's blocks that are still live, and scans blocks born after the snapshot
    // as roots: they are not in the index (never reported this time), but their contents may hold
    // the only pointer to an older block.
    private struct ReconcileVisitor<TReader> : IRecordVisitor where TReader : struct, IMemoryReader
    {
        private readonly InStopWork _work;
        private TReader _reader;
        private readonly MapsSnapshot _maps;

        public ReconcileVisitor(InStopWork work, TReader reader, MapsSnapshot maps)
        {
            _work = work;
            _reader = reader;
            _maps = maps;
        }

        public void Visit(ref IpRecord r)
        {
            int k = _work._index.IndexOf(r.Address);
            if (k >= 0)
            {
                ref readonly IpRecord old = ref _work._records[_work._index.Blocks[k].Id];
                if (old.Size == r.Size && old.TimeNs == r.TimeNs)
                {
                    _work._present[k] = true;
                    return;
                }
            }
            if (r.MinCount >= 0)
            {
                MemoryRange range = new(r.Address, r.Size & ~7UL);
                if (range.Length > 0 && _maps.IsReadable(range.Start, range.End))
                    _work._marker.ScanRoots(ref _reader, new ReadOnlySpan<MemoryRange>(in range));
            }
        }
    }
}
