// AllocationTable.cs — every live block's record, in native memory, sharded by address.
//
// LOCKING
//   shard.Lock   guards one shard's slots, count, capacity, version and last time; taken on every
//                insert/remove. (The shim reads LastTime without it: a racy read of a word that
//                only grows, as its free stamp; see BATCHED FREES in native-shim/interposer_abi.h.)
//   _map         no lock: each entry is written once, by CAS from 0, before the first insert in
//                its region (SHARD MAP in interposer_abi.h); _nextShard is an atomic counter.
//   Order: Core._replayLock -> shard.Lock -> StackDepot._lock. A shard lock is never held while
//   calling the unwinder, the depot or the host; two shard locks are only held together by
//   LockAll (fork), which takes them in index order.
//   Methods ending in "Locked" expect the shard lock held.
//
// Each shard is an open-addressing table with linear probing and backward-shift deletion (no
// tombstones, so probe chains stay short under malloc/free churn). Address 0 marks an empty slot.
// Slots are ip_record (40 bytes); a shard doubles at 70% load, so a live block costs 57–114 bytes.
// Record times are strictly increasing within a shard (Insert), which makes pending removals
// (RemoveStamped) exact.
// Memory comes from mmap, never from malloc: the table must not be part of the heap it describes.
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading;
using Interposer.Native;

namespace Interposer.Recording;

internal sealed unsafe class AllocationTable
{
    public const int ShardBits = 8;
    public const int ShardCount = 1 << ShardBits;
    private const int InitialCapacityBits = 10;

    [StructLayout(LayoutKind.Explicit, Size = 64)] // one cache line per shard: no false sharing
    private struct Shard
    {
        [FieldOffset(0)] public int Lock;        // the shard lock (SpinLockWord)
        [FieldOffset(4)] public int CapacityBits;
        [FieldOffset(8)] public long Count;      // live records in this shard
        [FieldOffset(16)] public IpRecord* Slots;
        [FieldOffset(24)] public long Version;   // bumped by every insert and remove: lets a scan
                                                 // skip shards that did not change since its snapshot
        [FieldOffset(Abi.ShardTimeOffset)] public ulong LastTime; // the newest record's TimeNs
    }

    private readonly Shard* _shards;             // ShardCount shards, mmap'ed
    private readonly byte* _map;                 // region -> 1 + shard; 0: no record ever in the region
    private int _nextShard;                      // round-robin: regions assigned so far
    private bool _failed;                        // a shard could not grow: tracking is off

    public AllocationTable()
    {
        _shards = (Shard*)Interop.Libc.MapAnonymous((nuint)(sizeof(Shard) * ShardCount));
        // 32 MiB of address space, MAP_NORESERVE: a page is touched per 16 GiB of address space
        // that holds blocks (a handful of pages in a typical process).
        _map = (byte*)Interop.Libc.MapAnonymous((nuint)1 << Abi.ShardMapBits);
        // Every shard's first slots from one mapping: one mmap at start-up instead of 256 (each
        // process that loads the library pays for them; the pages are only touched when used).
        // A shard's part is a whole number of pages, so GrowLocked can unmap it on its own.
        // (128 slots, 5 KiB a shard, was tried for a smaller cache footprint: 1.4x the CPU time
        // of a pair in deep churn, 1 and 8 threads, with 64 live blocks per thread at 50% load.)
        nuint initialBytes = (nuint)sizeof(IpRecord) << InitialCapacityBits;
        if ((initialBytes & 4095) != 0)
            throw new System.InvalidOperationException("a shard's initial slots must be whole pages");
        byte* initial = (byte*)Interop.Libc.MapAnonymous(initialBytes * ShardCount);
        if (_shards == null || initial == null || _map == null)
            throw new System.OutOfMemoryException("cannot map the allocation table");
        for (int i = 0; i < ShardCount; i++)
        {
            _shards[i].CapacityBits = InitialCapacityBits;
            _shards[i].Slots = (IpRecord*)(initial + initialBytes * (nuint)i);
        }
    }

    /// <summary>True once a shard failed to grow; the caller must stop tracking.</summary>
    public bool Failed => _failed;

    // Fibonacci hashing of the address without its always-zero low bits; the slot index comes from
    // the bits below the top ShardBits.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Hash(ulong address) => (address >> 4) * 0x9E3779B97F4A7C15UL;

    // The shard comes from the 4 MiB region of the address, not from its hash: glibc gives each
    // thread its own arena (64 MiB-aligned heaps), so a thread's blocks fall into a few shards
    // whose locks and cache lines then stay on that thread's core. Hashing every address to a
    // random shard made each lock's CAS a cross-core cache miss: 46% of the 8-thread churn (perf).
    // Regions get shards round-robin in the order they are first used (the SHARD MAP): with a hash
    // of the region, two of 8 threads' arenas shared a lock in about one run in seven, and those
    // runs took 1.15-1.25x as long. Shard ShardCount - 1 is unused (an entry holds 1 + shard).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong MapIndex(ulong address) => (address >> Abi.ShardRegionShift) & ((1UL << Abi.ShardMapBits) - 1);

    /// <summary>address's shard, assigning its region one if it has none (inserts).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int ShardFor(ulong address)
    {
        int v = _map[MapIndex(address)];
        return v != 0 ? v - 1 : AssignShard(address);
    }

    /// <summary>address's shard, or -1 when no record was ever inserted in its region (then the
    /// table has no record of address).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int ShardOf(ulong address) => Volatile.Read(ref _map[MapIndex(address)]) - 1;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private int AssignShard(ulong address)
    {
        uint n = (uint)Interlocked.Increment(ref _nextShard) - 1;
        byte mine = (byte)(1 + n % (ShardCount - 1));
        byte prior = Interlocked.CompareExchange(ref _map[MapIndex(address)], mine, 0);
        return (prior != 0 ? prior : mine) - 1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SlotOf(ulong hash, int capacityBits) => (int)((hash << ShardBits) >> (64 - capacityBits));

    private static IpRecord* AllocateSlots(int capacityBits) =>
        (IpRecord*)Interop.Libc.MapAnonymous((nuint)sizeof(IpRecord) << capacityBits);

    /// <summary>Inserts or replaces the record for record.Address. Its TimeNs becomes
    /// max(TimeNs, the shard's last time + 1): strictly increasing within the shard. Returns true
    /// if it replaced a record; then *replaced (when non-null) receives the old one.</summary>
    public bool Insert(in IpRecord record, IpRecord* replaced = null, ReplacedKind* stale = null)
    {
        ulong h = Hash(record.Address);
        Shard* shard = &_shards[ShardFor(record.Address)];
        SpinLockWord.Enter(ref shard->Lock);
        bool wasThere = InsertLocked(shard, h, record, replaced, stale);
        SpinLockWord.Exit(ref shard->Lock);
        return wasThere;
    }

    /// <summary>A thread's pending removals (RemoveStamped), then Insert, holding one shard lock at
    /// a time and the insert's shard lock only once when the last removals share it (the usual
    /// case: a thread's blocks sit in its arena's shard).</summary>
    public bool RemoveStampedThenInsert(IpFreeEntry* entries, int count, in IpRecord record, IpRecord* replaced, ReplacedKind* stale)
    {
        if (count == 1)
        {
            // The malloc+free pair: one pending removal, usually in the insert's shard (the
            // thread's arena). One lock, no loop (callgrind: ~25% of this path's instructions).
            ulong address = entries->Address;
            int mine = ShardFor(record.Address);
            if (address != 0 && address != record.Address && ShardOf(address) == mine)
            {
                Shard* shard = &_shards[mine];
                SpinLockWord.Enter(ref shard->Lock);
                RemoveLocked(shard, Hash(address), address, entries->Stamp, null);
                bool replacedOne = InsertLocked(shard, Hash(record.Address), record, replaced, stale);
                SpinLockWord.Exit(ref shard->Lock);
                return replacedOne;
            }
        }
        // A pending removal of the very address being inserted (tcache reuse) is not applied:
        // the insert overwrites that record in place (ownStamp).
        int removed = 0;
        Shard* held = RemoveStampedHolding(entries, count, record.Address, out ulong ownStamp, ref removed);
        Shard* target = &_shards[ShardFor(record.Address)];
        if (target != held)
        {
            if (held != null)
                SpinLockWord.Exit(ref held->Lock);
            SpinLockWord.Enter(ref target->Lock);
        }
        bool wasThere = InsertLocked(target, Hash(record.Address), record, replaced, stale, ownStamp);
        SpinLockWord.Exit(ref target->Lock);
        return wasThere;
    }

    /// <summary>Asked, under the shard lock, when an insert replaces a record: is the old block's
    /// removal pending in some thread's batch (then the replacement is expected, not stale)? The
    /// lock keeps the owner from applying and emptying that batch meanwhile.</summary>
    public delegate* unmanaged<ulong, ulong, int> PendingCovers;

    // ownStamp: this thread's own pending removal of record.Address (0: none). A record there as
    // old as it is the block this thread freed: overwritten in place, not a replacement.
    // Inlined into its callers (the pair's path: one frame for the removal and the insert); the
    // rare outcomes (growth, a record already there) have frames of their own.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool InsertLocked(Shard* shard, ulong h, in IpRecord record, IpRecord* replaced, ReplacedKind* stale,
                              ulong ownStamp = 0)
    {
        if ((shard->Count + 1) * 10 > (7L << shard->CapacityBits) && !GrowLocked(shard))
        {
            _failed = true;
            return false;
        }
        ulong last = shard->LastTime;
        ulong time = record.TimeNs > last ? record.TimeNs : last + 1;
        Volatile.Write(ref shard->LastTime, time);
        int bits = shard->CapacityBits;
        int mask = (1 << bits) - 1;
        int i = SlotOf(h, bits);
        IpRecord* slots = shard->Slots;
        while (true)
        {
            ulong a = slots[i].Address;
            if (a == 0)
            {
                slots[i] = record;
                slots[i].TimeNs = time;
                shard->Count++;
                shard->Version++;
                return false;
            }
            if (a == record.Address)
                return OverwriteLocked(shard, &slots[i], record, time, replaced, stale, ownStamp);
            i = (i + 1) & mask;
        }
    }

    // InsertLocked found a record at the address: the block this thread freed (ownStamp), or a
    // replacement (Replaced in Recorder).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool OverwriteLocked(Shard* shard, IpRecord* slot, in IpRecord record, ulong time, IpRecord* replaced,
                                 ReplacedKind* stale, ulong ownStamp)
    {
        bool wasThere = slot->TimeNs > ownStamp;
        if (wasThere)
        {
            if (replaced != null)
                *replaced = *slot;
            if (stale != null)
                *stale = PendingCovers == null ? ReplacedKind.Stale : (ReplacedKind)PendingCovers(slot->Address, slot->TimeNs);
        }
        *slot = record;
        slot->TimeNs = time;
        shard->Version++;
        return wasThere;
    }

    private bool GrowLocked(Shard* shard)
    {
        int oldBits = shard->CapacityBits;
        int newBits = oldBits + 1;
        IpRecord* fresh = AllocateSlots(newBits);
        if (fresh == null)
            return false;
        IpRecord* old = shard->Slots;
        int newMask = (1 << newBits) - 1;
        for (int j = 0; j < 1 << oldBits; j++)
        {
            if (old[j].Address == 0)
                continue;
            int i = SlotOf(Hash(old[j].Address), newBits);
            while (fresh[i].Address != 0)
                i = (i + 1) & newMask;
            fresh[i] = old[j];
        }
        shard->Slots = fresh;
        shard->CapacityBits = newBits;
        Interop.Libc.Munmap(old, (nuint)sizeof(IpRecord) << oldBits);
        return true;
    }

    /// <summary>Removes the record of address, copying it to *removed when non-null.</summary>
    public bool Remove(ulong address, IpRecord* removed)
    {
        int s = ShardOf(address);
        if (s < 0)
            return false;
        Shard* shard = &_shards[s];
        SpinLockWord.Enter(ref shard->Lock);
        bool found = RemoveLocked(shard, Hash(address), address, ulong.MaxValue, removed);
        SpinLockWord.Exit(ref shard->Lock);
        return found;
    }

    /// <summary>A pending removal (BATCHED FREES): removes address's record only if its TimeNs is at
    /// most stamp, i.e. it is the block that was freed and not a later one at the same address.</summary>
    public bool RemoveStamped(ulong address, ulong stamp, IpRecord* removed)
    {
        int s = ShardOf(address);
        if (s < 0)
            return false;
        Shard* shard = &_shards[s];
        SpinLockWord.Enter(ref shard->Lock);
        bool found = RemoveLocked(shard, Hash(address), address, stamp, removed);
        SpinLockWord.Exit(ref shard->Lock);
        return found;
    }

    /// <summary>RemoveStamped for count entries; a run of entries in one shard takes that shard's
    /// lock once. Returns how many records were removed.</summary>
    public int RemoveStamped(IpFreeEntry* entries, int count)
    {
        int removed = 0;
        Shard* held = RemoveStampedHolding(entries, count, 0, out _, ref removed);
        if (held != null)
            SpinLockWord.Exit(ref held->Lock);
        return removed;
    }

    // The removals of count entries, one shard lock at a time; returns with the last shard used
    // still locked (null if none). An entry for `keep` is skipped, its stamp returned in keepStamp.
    private Shard* RemoveStampedHolding(IpFreeEntry* entries, int count, ulong keep, out ulong keepStamp, ref int removed)
    {
        Shard* held = null;
        keepStamp = 0;
        for (int i = 0; i < count; i++)
        {
            ulong address = entries[i].Address;
            if (address == 0)
                continue;
            if (address == keep)
            {
                keepStamp = entries[i].Stamp;
                continue;
            }
            int s = ShardOf(address);
            if (s < 0)
                continue; // no record was ever in its region
            Shard* shard = &_shards[s];
            if (shard != held)
            {
                if (held != null)
                    SpinLockWord.Exit(ref held->Lock);
                SpinLockWord.Enter(ref shard->Lock);
                held = shard;
            }
            if (RemoveLocked(shard, Hash(address), address, entries[i].Stamp, null))
                removed++;
        }
        return held;
    }

    // Removes address's record if its TimeNs is at most maxTime (ulong.MaxValue: unconditionally).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool RemoveLocked(Shard* shard, ulong h, ulong address, ulong maxTime, IpRecord* removed)
    {
        int bits = shard->CapacityBits;
        int mask = (1 << bits) - 1;
        IpRecord* slots = shard->Slots;
        int i = SlotOf(h, bits);
        while (true)
        {
            ulong a = slots[i].Address;
            if (a == 0)
                return false;
            if (a == address)
                break;
            i = (i + 1) & mask;
        }
        if (slots[i].TimeNs > maxTime)
            return false; // a later block at the same address: not the one that was freed
        if (removed != null)
            *removed = slots[i];
        // Backward-shift deletion: pull later members of the probe run into the hole when their
        // home slot is not cyclically inside (hole, j].
        int hole = i;
        int j = i;
        while (true)
        {
            j = (j + 1) & mask;
            ulong aj = slots[j].Address;
            if (aj == 0)
                break;
            int home = SlotOf(Hash(aj), bits);
            bool homeInRange = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
            if (homeInRange)
                continue;
            slots[hole] = slots[j];
            hole = j;
        }
        slots[hole] = default;
        shard->Count--;
        shard->Version++;
        return true;
    }

    public bool TryGet(ulong address, out IpRecord record)
    {
        int s = ShardOf(address);
        if (s < 0)
        {
            record = default;
            return false;
        }
        Shard* shard = &_shards[s];
        SpinLockWord.Enter(ref shard->Lock);
        IpRecord* slot = FindLocked(shard, address);
        record = slot != null ? *slot : default;
        SpinLockWord.Exit(ref shard->Lock);
        return slot != null;
    }

    // The slot holding address's record, or null. Expects the shard lock held.
    private static IpRecord* FindLocked(Shard* shard, ulong address)
    {
        int bits = shard->CapacityBits;
        int mask = (1 << bits) - 1;
        for (int i = SlotOf(Hash(address), bits); shard->Slots[i].Address != 0; i = (i + 1) & mask)
            if (shard->Slots[i].Address == address)
                return &shard->Slots[i];
        return null;
    }

    /// <summary>Live records (racy sum; exact when no thread allocates).</summary>
    public long Count
    {
        get
        {
            long n = 0;
            for (int i = 0; i < ShardCount; i++)
                n += Volatile.Read(ref _shards[i].Count);
            return n;
        }
    }

    /// <summary>Bytes of mmap'ed slot memory (for the per-block cost in the benchmark).</summary>
    public long SlotBytes
    {
        get
        {
            long n = 0;
            for (int i = 0; i < ShardCount; i++)
                n += (long)sizeof(IpRecord) << _shards[i].CapacityBits;
            return n;
        }
    }

    /// <summary>Copies every record, one shard at a time (each shard is consistent; the whole is a
    /// moving snapshot unless the world is stopped).</summary>
    public IpRecord[] Snapshot() => Snapshot(null);

    /// <summary>As Snapshot; versions (ShardCount entries) receives each shard's Version as copied.</summary>
    public IpRecord[] Snapshot(long[]? versions)
    {
        var records = new IpRecord[Count + 1024];
        int n = 0;
        for (int s = 0; s < ShardCount; s++)
        {
            Shard* shard = &_shards[s];
            SpinLockWord.Enter(ref shard->Lock);
            if (n + shard->Count > records.Length)
            {
                SpinLockWord.Exit(ref shard->Lock); // never allocate under a shard lock
                System.Array.Resize(ref records, (int)System.Math.Min((long)records.Length * 2 + shard->Count, int.MaxValue));
                s--;
                continue;
            }
            int cap = 1 << shard->CapacityBits;
            IpRecord* slots = shard->Slots;
            for (int i = 0; i < cap; i++)
                if (slots[i].Address != 0)
                    records[n++] = slots[i];
            if (versions != null)
                versions[s] = shard->Version;
            SpinLockWord.Exit(ref shard->Lock);
        }
        System.Array.Resize(ref records, n);
        return records;
    }

    /// <summary>The shard headers, for the shim's free stamps (ip_core_config.shards).</summary>
    public byte* ShardHeaders => (byte*)_shards;

    /// <summary>A shard header's size and where its LastTime sits in it (the ABI test compares
    /// them with IP_SHARD_STRIDE and IP_SHARD_TIME_OFFSET).</summary>
    public static int ShardHeaderSize => sizeof(Shard);
    public static int ShardLastTimeOffset => (int)Marshal.OffsetOf<Shard>(nameof(Shard.LastTime));

    /// <summary>The shard that holds address's record; -1 when no record was ever in its region.</summary>
    public int ShardOfAddress(ulong address) => ShardOf(address);

    /// <summary>The shard map (ip_core_config.shard_map).</summary>
    public byte* ShardMap => _map;

    /// <summary>address's entry in the shard map (the ABI test compares it with ip_shard_map_index).</summary>
    public static ulong ShardMapIndex(ulong address) => MapIndex(address);

    /// <summary>Shard s's Version now (racy read: exact while the world is stopped).</summary>
    public long VersionOf(int s) => Volatile.Read(ref _shards[s].Version);

    /// <summary>Visit, for one shard.</summary>
    public void VisitShard<TVisitor>(int s, ref TVisitor visitor) where TVisitor : struct, IRecordVisitor
    {
        Shard* shard = &_shards[s];
        SpinLockWord.Enter(ref shard->Lock);
        int cap = 1 << shard->CapacityBits;
        IpRecord* slots = shard->Slots;
        for (int i = 0; i < cap; i++)
            if (slots[i].Address != 0)
                visitor.Visit(ref slots[i]);
        SpinLockWord.Exit(ref shard->Lock);
    }

    /// <summary>
    /// Calls visitor.Visit for every record, one shard at a time under its lock. Allocates nothing:
    /// usable while the world is stopped (no stopped thread holds a shard lock; see the park check).
    /// The visitor must not call back into the table.
    /// </summary>
    public void Visit<TVisitor>(ref TVisitor visitor) where TVisitor : struct, IRecordVisitor
    {
        for (int s = 0; s < ShardCount; s++)
            VisitShard(s, ref visitor);
    }

    /// <summary>Sets min_count (when given) and flag bits of the record at address. False when there is none.</summary>
    public bool Update(ulong address, short? minCount, ushort setFlags)
    {
        int s = ShardOf(address);
        if (s < 0)
            return false;
        Shard* shard = &_shards[s];
        SpinLockWord.Enter(ref shard->Lock);
        IpRecord* slot = FindLocked(shard, address);
        if (slot != null)
        {
            if (minCount.HasValue)
                slot->MinCount = minCount.Value;
            slot->Flags |= setFlags;
            shard->Version++; // the scan's snapshot of this shard is stale
        }
        SpinLockWord.Exit(ref shard->Lock);
        return slot != null;
    }

    /// <summary>Sets and clears flag bits of the record at address if it is still the block born at timeNs.</summary>
    public bool UpdateFlags(ulong address, ulong timeNs, ushort set, ushort clear)
    {
        int s = ShardOf(address);
        if (s < 0)
            return false;
        Shard* shard = &_shards[s];
        SpinLockWord.Enter(ref shard->Lock);
        IpRecord* slot = FindLocked(shard, address);
        bool same = slot != null && slot->TimeNs == timeNs;
        if (same)
            slot->Flags = (ushort)((slot->Flags | set) & ~clear);
        SpinLockWord.Exit(ref shard->Lock);
        return same;
    }

    /// <summary>fork prepare: take every shard lock, in index order.</summary>
    public void LockAll()
    {
        for (int i = 0; i < ShardCount; i++)
            SpinLockWord.Enter(ref _shards[i].Lock);
    }

    public void UnlockAll()
    {
        for (int i = ShardCount - 1; i >= 0; i--)
            SpinLockWord.Exit(ref _shards[i].Lock);
    }
}

/// <summary>What a replaced record was (ip_shim_api.pending_free_covers' answer).</summary>
internal enum ReplacedKind
{
    Unknown = -1,   // too many threads to ask
    Stale = 0,      // a free we never saw
    Pending = 1,    // its removal waits in some thread's batch
}

/// <summary>Sees each record of <see cref="AllocationTable.Visit"/> (with its shard locked).</summary>
internal interface IRecordVisitor
{
    void Visit(ref IpRecord record);
}
