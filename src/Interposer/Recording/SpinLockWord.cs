// SpinLockWord.cs — the metadata locks: one int word, test-and-test-and-set with a yield.
// Not a futex: critical sections are a few dozen instructions (one hash-table probe), the
// holder never blocks inside one, and the word lives in native memory next to what it guards.
// Not reentrant; never held across a call into the host or a managed allocation.
using System.Runtime.CompilerServices;
using System.Threading;

namespace Interposer.Recording;

internal static class SpinLockWord
{
    private static long s_waits;

    /// <summary>Enters that found the lock taken (racy sum; the verbosity=2 statistics). Counted on
    /// the contended path only: the uncontended enter stays one CAS.</summary>
    public static long Waits => Volatile.Read(ref s_waits);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Enter(ref int word)
    {
        if (Interlocked.CompareExchange(ref word, 1, 0) == 0)
            return;
        EnterContended(ref word);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void EnterContended(ref int word)
    {
        Interlocked.Increment(ref s_waits);
        int spins = 0;
        while (true)
        {
            if (Volatile.Read(ref word) == 0 && Interlocked.CompareExchange(ref word, 1, 0) == 0)
                return;
            if (++spins < 16)
                Thread.SpinWait(2);
            else
                Native.Interop.Libc.SchedYield(); // the holder may be preempted: give it the core
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Exit(ref int word) => Volatile.Write(ref word, 0);
}
