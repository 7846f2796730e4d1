// LoadedSegments: the exact writable PT_LOAD segments of every loaded object, from
// dl_iterate_phdr (LeakSanitizer's ProcessGlobalRegions does the same).
//
// Why, next to the maps rows: the kernel merges adjacent anonymous mappings with equal flags, so
// the "bss tail" row after an object's last file-backed page may also hold an unrelated mmap
// (a thread's static TLS block, our own metadata) that would then be scanned as a global and
// hide leaks. A segment's p_memsz says exactly where its .bss ends.
//
// dl_iterate_phdr takes the loader's lock, which a stopped thread may hold (inside dlopen):
// collect before the stop. An object loaded between the collection and the stop has no entry;
// the scan then falls back to its maps rows (conservative: more memory scanned, never less).

using System;
using System.Collections.Generic;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Interposer.Scanner.Scan;

internal static unsafe partial class LoadedSegments
{
    /// <summary>The Interposer's own objects: never roots (MapsSnapshot flags them too).</summary>
    public static readonly string[] InterposerModules = { "libinterposer.so", "libinterposer_core.so" };

    private const uint PtLoad = 1, PfX = 1, PfW = 2;
    private const ulong Page = 4096;

    [StructLayout(LayoutKind.Sequential)]
    private struct DlPhdrInfo
    {
        public ulong Addr;          // dlpi_addr: load bias
        public byte* Name;          // dlpi_name
        public ElfPhdr* Phdr;       // dlpi_phdr
        public ushort PhNum;        // dlpi_phnum
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct ElfPhdr
    {
        public uint Type, Flags;
        public ulong Offset, VAddr, PAddr, FileSize, MemSize, Align;
    }

    [LibraryImport("libc", EntryPoint = "dl_iterate_phdr")]
    private static partial int DlIteratePhdr(delegate* unmanaged<DlPhdrInfo*, nuint, void*, int> callback, void* data);

    [ThreadStatic] private static List<MemoryRange>? t_collecting;
    [ThreadStatic] private static List<MemoryRange>? t_libc;
    [ThreadStatic] private static List<MemoryRange>? t_loaderCode;

    /// <summary>Writable segments, page-rounded, sorted, excluding objects whose base name is in excluded. Allocates.</summary>
    public static MemoryRange[] Collect(IReadOnlyCollection<string> excluded) => Collect(excluded, out _, out _);

    /// <summary>As Collect; libc: glibc's own writable segments (where its malloc state lives);
    /// loaderCode: the dynamic linker's executable segments (who allocated link maps, DTVs, ...).</summary>
    public static MemoryRange[] Collect(IReadOnlyCollection<string> excluded, out MemoryRange[] libc, out MemoryRange[] loaderCode)
    {
        var list = new List<MemoryRange>();
        var libcList = new List<MemoryRange>();
        var loaderList = new List<MemoryRange>();
        t_collecting = list;
        t_libc = libcList;
        t_loaderCode = loaderList;
        try
        {
            s_excluded = excluded;
            DlIteratePhdr(&Callback, null);
        }
        finally
        {
            t_collecting = null;
            t_libc = null;
            t_loaderCode = null;
        }
        list.Sort(static (a, b) => a.Start.CompareTo(b.Start));
        libc = libcList.ToArray();
        loaderCode = loaderList.ToArray();
        return list.ToArray();
    }

    private static IReadOnlyCollection<string> s_excluded = Array.Empty<string>();

    [UnmanagedCallersOnly]
    private static int Callback(DlPhdrInfo* info, nuint size, void* data)
    {
        try
        {
            string name = info->Name != null ? Marshal.PtrToStringUTF8((IntPtr)info->Name) ?? "" : "";
            int slash = name.LastIndexOf('/');
            string baseName = name.Substring(slash + 1);
            foreach (string e in s_excluded)
                if (e == baseName)
                    return 0;
            for (int i = 0; i < info->PhNum; i++)
            {
                ElfPhdr* ph = &info->Phdr[i];
                if (ph->Type == PtLoad && (ph->Flags & PfX) != 0 && baseName.StartsWith("ld-linux", StringComparison.Ordinal))
                    t_loaderCode?.Add(MemoryRange.FromBounds(info->Addr + ph->VAddr, info->Addr + ph->VAddr + ph->MemSize));
                if (ph->Type != PtLoad || (ph->Flags & PfW) == 0 || ph->MemSize == 0)
                    continue;
                ulong start = (info->Addr + ph->VAddr) & ~(Page - 1);
                ulong end = (info->Addr + ph->VAddr + ph->MemSize + Page - 1) & ~(Page - 1);
                t_collecting?.Add(MemoryRange.FromBounds(start, end));
                if (baseName.StartsWith("libc.so", StringComparison.Ordinal))
                    t_libc?.Add(MemoryRange.FromBounds(start, end));
            }
        }
        catch (Exception)
        {
            // An odd entry costs that entry: the maps rows cover it.
        }
        return 0;
    }

    /// <summary>
    /// Writes the parts of [start, end) that the segments cover into pieces and returns their
    /// number; known tells whether any segment touches the range (false: an object loaded after
    /// Collect, so the caller decides what to scan). No allocation.
    /// </summary>
    public static int Clip(ReadOnlySpan<MemoryRange> segments, ulong start, ulong end, Span<MemoryRange> pieces, out bool known)
    {
        int n = 0;
        bool any = false;
        // First segment ending after start (segments are sorted and disjoint).
        int lo = 0, hi = segments.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (segments[mid].End <= start)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (int i = lo; i < segments.Length && segments[i].Start < end && n < pieces.Length; i++)
        {
            any = true;
            ulong a = Math.Max(start, segments[i].Start), b = Math.Min(end, segments[i].End);
            if (a < b)
                pieces[n++] = MemoryRange.FromBounds(a, b);
        }
        known = any;
        return n;
    }

    /// <summary>
    /// glibc's main_arena (struct malloc_state) inside libc's writable segments, found by its
    /// shape, or an empty range. It is excluded from the globals: its bins and top pointers point
    /// at chunk headers, 16 bytes before a block, which is inside the previous block whenever that
    /// block's size leaves 1-8 bytes of its last 16 unused (malloc(24): [p, p+24) holds the next
    /// chunk's header at p+16), and would keep a leaked neighbour "referenced".
    ///
    /// Shape (glibc 2.26+, x86-64): int mutex, flags, have_fastchunks (+pad), fastbinsY[10], top,
    /// last_remainder, bins[254] (127 {fd, bk} pairs; an empty bin's pair points at itself minus
    /// 16), binmap[4], then next: the ring of all arenas, which comes back to main_arena. A
    /// candidate needs many empty bins, non-null pointers in the others, and a ring that returns
    /// to it (followed with process_vm_readv, so a wrong guess cannot fault). Allocates nothing.
    /// </summary>
    public static MemoryRange FindMainArena(ReadOnlySpan<MemoryRange> libcSegments)
    {
        const ulong BinsOffset = 112, NextOffset = 112 + 254 * 8 + 16, StateSize = NextOffset + 5 * 8;
        int pid = Environment.ProcessId;
        foreach (MemoryRange seg in libcSegments)
        {
            for (ulong state = seg.Start; state + StateSize <= seg.End; state += 8)
            {
                ulong* bins = (ulong*)(state + BinsOffset);
                int empty = 0;
                bool shaped = true;
                for (int k = 0; k < 127 && shaped; k++)
                {
                    ulong pair = state + BinsOffset + (ulong)k * 16;
                    ulong fd = bins[2 * k], bk = bins[2 * k + 1];
                    if (fd == pair - 16 && bk == pair - 16)
                        empty++;
                    else
                        shaped = fd != 0 && bk != 0 && (fd & 7) == 0 && (bk & 7) == 0;
                }
                if (!shaped || empty < 64 || !RingReturns(state, NextOffset, pid))
                    continue;
                return new MemoryRange(state, StateSize);
            }
        }
        return default;
    }

    // Follows malloc_state.next from state for at most 1024 arenas; true if it comes back.
    private static bool RingReturns(ulong state, ulong nextOffset, int pid)
    {
        ulong at = state;
        for (int hop = 0; hop < 1024; hop++)
        {
            ulong next;
            ScanInterop.IoVec local = new() { Base = &next, Length = 8 };
            ScanInterop.IoVec remote = new() { Base = (void*)(at + nextOffset), Length = 8 };
            if (ScanInterop.ProcessVmReadv(pid, &local, 1, &remote, 1, 0) != 8 || next == 0 || (next & 7) != 0)
                return false;
            if (next == state)
                return true;
            at = next;
        }
        return false;
    }
}
