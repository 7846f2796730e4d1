// Backtrace.cs — takes the allocating call chain for one event, by the configured unwinder.
//
//   fast       FastUnwinder: DWARF CFI from .eh_frame with a per-PC rule cache. Complete stacks
//              through Debian's frame-pointer-less libc and libstdc++ at a few ns per frame.
//   libunwind  unw_backtrace from the shim's RTLD_LOCAL libunwind: the reference (~166 ns/call).
//   fp         frame-pointer walk: ~2 frames on Debian, kept for comparison and as a last resort.
// Every mode reads the stack only inside [StackLo, StackHi) of the allocating thread.
using Interposer.Native;
using Interposer.Unwinding;

namespace Interposer.Recording;

internal enum UnwinderKind { Fast, Libunwind, FramePointer }

internal static unsafe class Backtrace
{
    public const int MaxFramesLimit = 64;

    public static UnwinderKind Parse(string name) => name switch
    {
        "libunwind" => UnwinderKind.Libunwind,
        "fp" => UnwinderKind.FramePointer,
        _ => UnwinderKind.Fast,
    };

    /// <summary>knownId: non-zero when the frames are a walk this thread remembers (fast unwinder
    /// only), whose depot id it is; then frames holds only frames[0]. shimTried: the shim made
    /// the walk cache's whole-hit test for this event and it failed (not made twice).</summary>
    public static int Capture(UnwinderKind kind, IpAllocEvent* ev, ulong* frames, int max,
                              delegate* unmanaged<void**, int, int> unwBacktrace, out uint knownId,
                              bool shimTried = false)
    {
        knownId = 0;
        if (ev->Pc == 0)
            return 0;
        switch (kind)
        {
            case UnwinderKind.Libunwind when unwBacktrace != null:
                return WithLibunwind(ev->Pc, frames, max, unwBacktrace);
            case UnwinderKind.FramePointer:
                return FramePointerWalk(ev->Pc, ev->Bp, ev->StackLo, ev->StackHi, frames, max);
            default:
                return FastUnwinderCached.Unwind(ev->Pc, ev->Sp, ev->Bp, ev->StackLo, ev->StackHi, frames, max, ev->WalkCache, out knownId, shimTried);
        }
    }

    /// <summary>unw_backtrace from here lists our own frames first; keep what follows the caller's pc.</summary>
    private static int WithLibunwind(ulong pc, ulong* frames, int max, delegate* unmanaged<void**, int, int> unw)
    {
        const int OwnFramesSlack = 24;
        void** buffer = stackalloc void*[MaxFramesLimit + OwnFramesSlack];
        int n = unw(buffer, max + OwnFramesSlack);
        for (int i = 0; i < n; i++)
        {
            if ((ulong)buffer[i] != pc)
                continue;
            int count = 0;
            for (int j = i; j < n && count < max; j++)
                frames[count++] = (ulong)buffer[j];
            return count;
        }
        frames[0] = pc;
        return 1;
    }

    public static int FramePointerWalk(ulong pc, ulong bp, ulong lo, ulong hi, ulong* frames, int max)
    {
        int n = 0;
        frames[n++] = pc;
        while (n < max && bp >= lo && bp + 16 <= hi && (bp & 7) == 0)
        {
            ulong next = ((ulong*)bp)[0];
            ulong ret = ((ulong*)bp)[1];
            if (ret < 4096)
                break;
            frames[n++] = ret;
            if (next <= bp)
                break;
            bp = next;
        }
        return n;
    }
}
