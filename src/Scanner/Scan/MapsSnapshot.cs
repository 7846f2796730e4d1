// MapsSnapshot: /proc/self/maps read and classified while the world is stopped, allocating nothing.
//
// Why not MapsRow (it parses text into strings, which allocates; the symbolizer's ModuleMap uses
// it after the world has resumed): the mappings must be read *after* the stop, or a library dlopen'ed, a thread created or a block
// munmap'ed between the read and the stop would make the scan miss a root or read unmapped
// memory. So the bytes go into a buffer allocated before the stop (Prepare sizes it from a
// trial read; a read that fills it is reported as Truncated and the caller retries larger), and
// each row becomes a fixed-size MapsEntry: bounds, permission and kind flags, a hash of the path.
//
// Root rules (DESIGN.md "Root set"): a loaded object's data is a readable, writable, private,
// file-backed mapping of a file that also has an executable mapping (its segments are adjacent,
// so the executable one is found by walking back over rows with the same path; that tells a
// library's .data from a data file the program mapped), plus the anonymous rw mapping that
// starts exactly where such a mapping ends (the .bss tail past the file's last page, which ld.so
// maps anonymous). The scanner then clips those rows to the exact PT_LOAD extents from
// dl_iterate_phdr (LoadedSegments), because the kernel merges an mmap placed right after a bss
// tail into it. Never roots: [heap] (blocks are found through pointers, not scanned wholesale),
// [stack] and thread stacks (scanned from each stopped thread's SP), [vvar], [vdso] and the other
// kernel-named mappings, unreadable or shared mappings, and the Interposer's own objects (their
// data points at every block and would hide every leak). Other rw anonymous mappings are roots
// only as the program's own mmap regions (native-shim/regions.c), never wholesale: they include
// malloc arenas, large blocks, thread stacks and the managed GC heap.
//
// Parsing never throws on content: a malformed row is skipped and counted.

using System;
using System.Runtime.InteropServices;

namespace Interposer.Scanner.Scan;

[Flags]
internal enum MapFlags : ushort
{
    None = 0,
    Read = 1,
    Write = 2,
    Exec = 4,
    Shared = 8,
    File = 16,        // the path names a file ('/...')
    Anonymous = 32,   // no path at all
    Pseudo = 64,      // a kernel name: [heap], [stack], [anon:..], [vdso], ...
    Interposer = 128, // libinterposer*.so: never a root
    MainStack = 256,  // [stack]
    Data = 512,       // classified: a loaded object's writable segment or its bss tail
}

[StructLayout(LayoutKind.Sequential)]
internal struct MapsEntry
{
    public ulong Start;
    public ulong End;
    public ulong PathHash;  // FNV-1a of the path bytes (" (deleted)" included); 0 for no path
    public MapFlags Flags;

    public readonly bool Has(MapFlags f) => (Flags & f) == f;
    public readonly bool IsReadWritePrivate => Has(MapFlags.Read | MapFlags.Write) && (Flags & MapFlags.Shared) == 0;
}

internal sealed unsafe class MapsSnapshot
{
    private const int MinBuffer = 64 * 1024;
    private byte[] _text = Array.Empty<byte>();    // pinned; the raw bytes of the last Read
    private int _length;
    private MapsEntry[] _rows = Array.Empty<MapsEntry>();
    private int _count;
    private int _lastHit;                          // Find's starting guess: scans read in address runs

    public ReadOnlySpan<MapsEntry> Rows => _rows.AsSpan(0, _count);
    public int Count => _count;

    /// <summary>The last Read filled the buffer: rows at the end may be missing. Prepare again and retry.</summary>
    public bool Truncated { get; private set; }

    /// <summary>Rows that did not parse in the last Read.</summary>
    public int SkippedRows { get; private set; }

    /// <summary>Sizes the buffers for the mappings as they are now, with room to grow. Allocates: call before the stop.</summary>
    public void Prepare(int extraBytes = 0)
    {
        int now = MeasureProcSelfMaps();
        int want = Math.Max(MinBuffer, now * 2 + extraBytes);
        if (_text.Length < want)
            _text = GC.AllocateUninitializedArray<byte>(want, pinned: true);
        int rows = want / 40 + 16; // a row is at least ~40 bytes ("a-b rw-p 0 00:00 0\n" plus addresses)
        if (_rows.Length < rows)
            _rows = new MapsEntry[rows];
    }

    private static int MeasureProcSelfMaps()
    {
        byte* scratch = stackalloc byte[16384];
        fixed (byte* path = "/proc/self/maps\0"u8)
            return ScanInterop.Measure(path, scratch, 16384);
    }

    /// <summary>Reads /proc/self/maps into the prepared buffer and classifies it. No allocation. False when unreadable.</summary>
    public bool Read()
    {
        _length = 0;
        Truncated = false;
        fixed (byte* path = "/proc/self/maps\0"u8)
        fixed (byte* buf = _text)
        {
            int fd = ScanInterop.Open(path, ScanInterop.ORdOnly | ScanInterop.OCloExec);
            if (fd < 0)
            {
                _count = 0;
                return false;
            }
            while (_length < _text.Length)
            {
                nint n = ScanInterop.Read(fd, buf + _length, (nuint)(_text.Length - _length));
                if (n < 0 && Marshal.GetLastSystemError() == 4 /* EINTR */)
                    continue;
                if (n <= 0)
                    break;
                _length += (int)n;
            }
            ScanInterop.Close(fd);
        }
        Truncated = _length == _text.Length;
        Parse(_text.AsSpan(0, _length));
        return true;
    }

    /// <summary>Parses maps text already in memory (tests; the same path Read takes). No allocation beyond the prepared rows.</summary>
    public void Parse(ReadOnlySpan<byte> text)
    {
        _count = 0;
        _lastHit = 0;
        int skipped = 0;
        while (!text.IsEmpty)
        {
            int nl = text.IndexOf((byte)'\n');
            ReadOnlySpan<byte> line = nl < 0 ? text : text[..nl];
            text = nl < 0 ? ReadOnlySpan<byte>.Empty : text[(nl + 1)..];
            if (line.IsEmpty)
                continue;
            if (_count == _rows.Length)
            {
                Truncated = true;
                break;
            }
            if (TryParseRow(line, out _rows[_count]))
                _count++;
            else
                skipped++;
        }
        SkippedRows = skipped;
        // The kernel prints in address order; anything else is not /proc/self/maps: keep what is ordered.
        int kept = 0;
        for (int i = 0; i < _count; i++)
            if (kept == 0 || _rows[i].Start >= _rows[kept - 1].End)
                _rows[kept++] = _rows[i];
        SkippedRows += _count - kept;
        _count = kept;
        Classify();
    }

    private static bool TryParseRow(ReadOnlySpan<byte> line, out MapsEntry row)
    {
        row = default;
        int p = 0;
        if (!Hex(line, ref p, out row.Start) || p >= line.Length || line[p++] != '-' || !Hex(line, ref p, out row.End) ||
            row.End <= row.Start || !Blank(line, ref p) || p + 4 > line.Length)
            return false;
        ReadOnlySpan<byte> perms = line.Slice(p, 4);
        if ((perms[0] != 'r' && perms[0] != '-') || (perms[1] != 'w' && perms[1] != '-') ||
            (perms[2] != 'x' && perms[2] != '-') || (perms[3] != 'p' && perms[3] != 's'))
            return false;
        MapFlags f = MapFlags.None;
        if (perms[0] == 'r') f |= MapFlags.Read;
        if (perms[1] == 'w') f |= MapFlags.Write;
        if (perms[2] == 'x') f |= MapFlags.Exec;
        if (perms[3] == 's') f |= MapFlags.Shared;
        p += 4;
        // offset, dev, inode
        for (int field = 0; field < 3; field++)
        {
            if (!Blank(line, ref p))
                return false;
            int start = p;
            while (p < line.Length && line[p] != ' ' && line[p] != '\t')
                p++;
            if (p == start)
                return false;
        }
        while (p < line.Length && (line[p] == ' ' || line[p] == '\t'))
            p++;
        ReadOnlySpan<byte> path = line[p..];
        while (!path.IsEmpty && (path[^1] == ' ' || path[^1] == '\r'))
            path = path[..^1];
        if (path.IsEmpty)
            f |= MapFlags.Anonymous;
        else if (path[0] == '/')
        {
            f |= MapFlags.File;
            if (IsInterposer(path))
                f |= MapFlags.Interposer;
        }
        else if (path[0] == '[')
        {
            f |= MapFlags.Pseudo;
            if (path.SequenceEqual("[stack]"u8))
                f |= MapFlags.MainStack;
        }
        row.Flags = f;
        row.PathHash = path.IsEmpty ? 0 : Fnv(path);
        return true;
    }

    private static bool IsInterposer(ReadOnlySpan<byte> path)
    {
        const string Deleted = " (deleted)";
        if (path.EndsWith(" (deleted)"u8))
            path = path[..^Deleted.Length];
        int slash = path.LastIndexOf((byte)'/');
        ReadOnlySpan<byte> name = path[(slash + 1)..];
        return name.SequenceEqual("libinterposer.so"u8) || name.SequenceEqual("libinterposer_core.so"u8);
    }

    private static ulong Fnv(ReadOnlySpan<byte> s)
    {
        ulong h = 0xcbf29ce484222325UL;
        foreach (byte b in s)
            h = (h ^ b) * 0x100000001b3UL;
        return h | 1; // never 0 (0 = no path)
    }

    private static bool Blank(ReadOnlySpan<byte> s, ref int p)
    {
        int start = p;
        while (p < s.Length && (s[p] == ' ' || s[p] == '\t'))
            p++;
        return p > start;
    }

    private static bool Hex(ReadOnlySpan<byte> s, ref int p, out ulong value)
    {
        value = 0;
        int start = p;
        while (p < s.Length && p - start <= 16)
        {
            byte c = s[p];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0)
                break;
            value = (value << 4) | (uint)d;
            p++;
        }
        return p > start && p - start <= 16;
    }

    // Marks loaded objects' writable segments and their bss tails as Data.
    private void Classify()
    {
        for (int i = 0; i < _count; i++)
        {
            ref MapsEntry row = ref _rows[i];
            if (!row.IsReadWritePrivate)
                continue;
            if (row.Has(MapFlags.File) && !row.Has(MapFlags.Interposer) && IsObject(i))
            {
                row.Flags |= MapFlags.Data;
                // The bss tail: anonymous rw right after the object's segment.
                if (i + 1 < _count && _rows[i + 1].Start == row.End && _rows[i + 1].Has(MapFlags.Anonymous) &&
                    _rows[i + 1].IsReadWritePrivate)
                    _rows[i + 1].Flags |= MapFlags.Data;
            }
        }
    }

    // A file with an executable mapping among the adjacent rows of the same path.
    private bool IsObject(int i)
    {
        ulong h = _rows[i].PathHash;
        for (int j = i; j >= 0 && _rows[j].PathHash == h; j--)
            if (_rows[j].Has(MapFlags.Exec))
                return true;
        for (int j = i + 1; j < _count && _rows[j].PathHash == h; j++)
            if (_rows[j].Has(MapFlags.Exec))
                return true;
        return false;
    }

    /// <summary>The row containing address, or -1.</summary>
    public int Find(ulong address)
    {
        if ((uint)_lastHit < (uint)_count && _rows[_lastHit].Start <= address && address < _rows[_lastHit].End)
            return _lastHit;
        int lo = 0, hi = _count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (address < _rows[mid].Start)
                hi = mid - 1;
            else if (address >= _rows[mid].End)
                lo = mid + 1;
            else
                return _lastHit = mid;
        }
        return -1;
    }

    /// <summary>[start, end) lies in readable rows with no gap. No allocation.</summary>
    public bool IsReadable(ulong start, ulong end)
    {
        if (end <= start)
            return true;
        int i = Find(start);
        while (i >= 0 && i < _count && _rows[i].Has(MapFlags.Read))
        {
            if (end <= _rows[i].End)
                return true;
            if (i + 1 >= _count || _rows[i + 1].Start != _rows[i].End)
                return false;
            i++;
        }
        return false;
    }

    /// <summary>The largest readable [lo, hi) inside [start, end) that starts at the first readable byte from start; empty if none.</summary>
    public MemoryRange ClipReadable(ulong start, ulong end)
    {
        int i = Find(start);
        if (i < 0 || !_rows[i].Has(MapFlags.Read))
            return default;
        ulong hi = _rows[i].End;
        while (hi < end && i + 1 < _count && _rows[i + 1].Start == hi && _rows[i + 1].Has(MapFlags.Read))
            hi = _rows[++i].End;
        return MemoryRange.FromBounds(start, Math.Min(end, hi));
    }
}

/// <summary>Reads through MapsSnapshot: a range outside readable mappings reads as empty (the marker skips it).</summary>
internal readonly unsafe struct CheckedMemoryReader : IMemoryReader
{
    private readonly MapsSnapshot _maps;

    public CheckedMemoryReader(MapsSnapshot maps) => _maps = maps;

    public ReadOnlySpan<ulong> ReadWords(ulong address, int count) =>
        _maps.IsReadable(address, address + (ulong)count * 8) ? new((void*)address, count) : default;
}

/// <summary>
/// Copies through process_vm_readv into one buffer: a range that is unmapped (or becomes so while
/// it is read: a thread we could not stop is still running) reads as empty instead of faulting.
/// </summary>
internal readonly unsafe struct CopyingMemoryReader : IMemoryReader
{
    private readonly ulong* _buffer; // Marker.MaxReadWords words, pinned by the owner
    private readonly int _pid;

    public CopyingMemoryReader(ulong* buffer, int pid)
    {
        _buffer = buffer;
        _pid = pid;
    }

    public ReadOnlySpan<ulong> ReadWords(ulong address, int count)
    {
        ScanInterop.IoVec local = new() { Base = _buffer, Length = (nuint)count * 8 };
        ScanInterop.IoVec remote = new() { Base = (void*)address, Length = (nuint)count * 8 };
        nint n = ScanInterop.ProcessVmReadv(_pid, &local, 1, &remote, 1, 0);
        return n == count * 8 ? new(_buffer, count) : default;
    }
}

internal static unsafe partial class ScanInterop
{
    public const int ORdOnly = 0, OCloExec = 0x80000;

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec { public void* Base; public nuint Length; }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true)]
    public static partial int Open(byte* path, int flags);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, byte* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "close")]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "process_vm_readv")]
    public static partial nint ProcessVmReadv(int pid, IoVec* local, nuint liovcnt, IoVec* remote, nuint riovcnt, nuint flags);

    /// <summary>Length of /proc/self/maps now (procfs reports 0 as its size, so read it through).</summary>
    public static int Measure(byte* path, byte* scratch, int scratchSize)
    {
        int fd = Open(path, ORdOnly | OCloExec);
        if (fd < 0)
            return 0;
        int total = 0;
        while (true)
        {
            nint n = Read(fd, scratch, (nuint)scratchSize);
            if (n <= 0)
                break;
            total += (int)n;
        }
        Close(fd);
        return total;
    }
}
