// StackDepot.cs — interned backtraces (LeakSanitizer's stack depot, kmemleak's trace handle).
// A block keeps a 32-bit stack id; identical backtraces are stored once.
//
// LOCKING
//   _lock   guards appends to the arena and publication of new index slots.
//   Lookups take no lock: a slot holds 0 or a published id (written last, with release
//   semantics, after the stack's bytes), and a published stack never changes or moves.
//   Order: shard locks are never held while the depot is called; _lock is a leaf.
//
// Layout (all mmap'ed with MAP_NORESERVE, touched only as used):
//   _index    IndexSlots uint ids, open addressing on the stack's CRC-32C;
//   _offsets  id -> byte offset of the stack in _arena;
//   _arena    [uint crc][uint count][ulong frames[count]]...
// Capacity is fixed (no rehash, so readers never race a resize): when full, new stacks get id 0
// ("no backtrace") and DroppedStacks counts them.
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Threading;
using Interposer.Native;

namespace Interposer.Recording;

internal sealed unsafe class StackDepot
{
    private const int IndexBits = 22;                 // 4 Mi slots (16 MiB virtual)
    private const int IndexMask = (1 << IndexBits) - 1;
    private const int MaxStacks = (1 << IndexBits) * 3 / 4;
    private const long ArenaBytes = 1L << 30;         // 1 GiB virtual

    private readonly uint* _index;
    private readonly ulong* _offsets;
    private readonly byte* _arena;
    private long _arenaUsed;                          // guarded by _lock
    private int _count;                               // stacks stored; ids are 1.._count; guarded by _lock
    private int _lock;                                // SpinLockWord
    private long _dropped;                            // stacks refused for lack of room

    public StackDepot()
    {
        _index = (uint*)Interop.Libc.MapAnonymous((nuint)sizeof(uint) << IndexBits);
        _offsets = (ulong*)Interop.Libc.MapAnonymous((nuint)sizeof(ulong) * (nuint)(MaxStacks + 1));
        _arena = (byte*)Interop.Libc.MapAnonymous((nuint)ArenaBytes);
        if (_index == null || _offsets == null || _arena == null)
            throw new System.OutOfMemoryException("cannot map the stack depot");
        _arenaUsed = 8; // offset 0 is never a stack
    }

    public int Count => Volatile.Read(ref _count);
    public long DroppedStacks => Volatile.Read(ref _dropped);
    public long ArenaUsed => Volatile.Read(ref _arenaUsed);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Crc(ulong* frames, int count)
    {
        uint crc = 0xFFFFFFFFu ^ (uint)count;
        for (int i = 0; i < count; i++)
            crc = BitOperations.Crc32C(crc, frames[i]);
        return ~crc;
    }

    /// <summary>Returns the id of this backtrace, storing it on first sight. 0 = none.</summary>
    public uint Intern(ulong* frames, int count)
    {
        if (count <= 0)
            return 0;
        uint crc = Crc(frames, count);
        uint id = Find(crc, frames, count, out _);
        return id != 0 ? id : InternSlow(crc, frames, count);
    }

    private uint Find(uint crc, ulong* frames, int count, out int emptySlot)
    {
        int i = (int)(crc & IndexMask);
        while (true)
        {
            uint id = Volatile.Read(ref _index[i]);
            if (id == 0)
            {
                emptySlot = i;
                return 0;
            }
            if (Matches(id, crc, frames, count))
            {
                emptySlot = -1;
                return id;
            }
            i = (i + 1) & IndexMask;
        }
    }

    private bool Matches(uint id, uint crc, ulong* frames, int count)
    {
        byte* s = _arena + _offsets[id];
        if (*(uint*)s != crc || *(uint*)(s + 4) != (uint)count)
            return false;
        ulong* f = (ulong*)(s + 8);
        for (int i = 0; i < count; i++)
            if (f[i] != frames[i])
                return false;
        return true;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private uint InternSlow(uint crc, ulong* frames, int count)
    {
        SpinLockWord.Enter(ref _lock);
        // Re-probe under the lock: another thread may have stored it meanwhile.
        uint id = Find(crc, frames, count, out int empty);
        if (id == 0)
        {
            long bytes = 8 + 8L * count;
            if (_count >= MaxStacks || _arenaUsed + bytes > ArenaBytes)
            {
                _dropped++;
            }
            else
            {
                long offset = _arenaUsed;
                byte* s = _arena + offset;
                *(uint*)s = crc;
                *(uint*)(s + 4) = (uint)count;
                Unsafe.CopyBlockUnaligned(s + 8, frames, (uint)(8 * count));
                id = (uint)(_count + 1);
                _offsets[id] = (ulong)offset;
                _arenaUsed = offset + bytes;
                Volatile.Write(ref _count, _count + 1);
                Volatile.Write(ref _index[empty], id); // publish last
            }
        }
        SpinLockWord.Exit(ref _lock);
        return id;
    }

    /// <summary>The frames of a stored stack (a view into the depot; valid for the process life).</summary>
    public System.ReadOnlySpan<ulong> Get(uint id, out uint crc)
    {
        crc = 0;
        if (id == 0 || id > (uint)Count)
            return default;
        byte* s = _arena + _offsets[id];
        crc = *(uint*)s;
        return new System.ReadOnlySpan<ulong>(s + 8, (int)*(uint*)(s + 4));
    }

    public void Lock() => SpinLockWord.Enter(ref _lock);
    public void Unlock() => SpinLockWord.Exit(ref _lock);
}
