// ThreadRegistry.cs — the threads that ever allocated: tid and name (kmemleak's `comm`).
// A block's record keeps the registry index; the name is the one the thread had at its first
// event, refreshed from /proc/self/task/<tid>/comm when a report is written.
//
// LOCKING
//   _lock   guards appends (one per thread start; never on the alloc/free path). Readers index
//           published entries without a lock. Leaf lock.
using System.Threading;
using Interposer.Native;

namespace Interposer.Recording;

internal sealed unsafe class ThreadRegistry
{
    public const int Capacity = 1 << 16;               // threads after that share index 0
    private const int NameBytes = 16;                  // TASK_COMM_LEN

    private struct Entry
    {
        public int Tid;
        public fixed byte Name[NameBytes];
        public ulong StackLo, StackHi;  // from pthread_getattr_np at registration (0 = unknown)
        public ulong Tcb;               // fs base: the thread's static TLS ends here
    }

    private readonly Entry* _entries;
    private int _count = 1;                            // index 0 = "unknown thread"
    private int _lock;

    public ThreadRegistry()
    {
        _entries = (Entry*)Interop.Libc.MapAnonymous((nuint)(sizeof(Entry) * Capacity));
        if (_entries == null)
            throw new System.OutOfMemoryException("cannot map the thread registry");
    }

    public int Count => Volatile.Read(ref _count);

    public int Register(int tid, byte* name, ulong stackLo = 0, ulong stackHi = 0, ulong tcb = 0)
    {
        SpinLockWord.Enter(ref _lock);
        int index = _count < Capacity ? _count : 0;
        if (index != 0)
        {
            _entries[index].Tid = tid;
            _entries[index].StackLo = stackLo;
            _entries[index].StackHi = stackHi;
            _entries[index].Tcb = tcb;
            for (int i = 0; i < NameBytes - 1 && name != null && name[i] != 0; i++)
                _entries[index].Name[i] = name[i];
            Volatile.Write(ref _count, _count + 1);
        }
        SpinLockWord.Exit(ref _lock);
        return index;
    }

    public int TidOf(uint index) => index < (uint)Count ? _entries[index].Tid : 0;

    /// <summary>The latest registration of tid (tids are reused): its stack bounds and TCB. No allocation.</summary>
    public bool TryGetLayout(int tid, out ulong stackLo, out ulong stackHi, out ulong tcb)
    {
        for (int i = Count - 1; i > 0; i--)
        {
            if (_entries[i].Tid == tid)
            {
                stackLo = _entries[i].StackLo;
                stackHi = _entries[i].StackHi;
                tcb = _entries[i].Tcb;
                return true;
            }
        }
        stackLo = stackHi = tcb = 0;
        return false;
    }

    /// <summary>The latest registry index of tid, or 0.</summary>
    public uint IndexOfTid(int tid)
    {
        for (int i = Count - 1; i > 0; i--)
            if (_entries[i].Tid == tid)
                return (uint)i;
        return 0;
    }

    public string NameOf(uint index)
    {
        if (index == 0 || index >= (uint)Count)
            return "?";
        byte* n = _entries[index].Name;
        int len = 0;
        while (len < NameBytes && n[len] != 0)
            len++;
        return System.Text.Encoding.UTF8.GetString(n, len);
    }
}
