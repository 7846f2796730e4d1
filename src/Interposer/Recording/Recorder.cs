// Recorder.cs — the state behind the hooks: allocation table, stack depot, thread registry, the
// replay of the shim's deferred log, and the pending removals of batched frees.
//
// LOCKING
//   _replayLock   one drain of the deferred log at a time (the log has a single consumer), and
//                 order between a replay and direct events: see ReplayIfPending. CatchUp also
//                 holds it while it applies every thread's pending removals (its buffer).
//   shard.Lock    (AllocationTable) one shard's slots.
//   depot._lock   (StackDepot) appends of new stacks.
//   threads._lock (ThreadRegistry) appends of new threads.
//   Order: _replayLock -> shard.Lock -> depot._lock; threads._lock is a leaf. The hot path holds
//   one shard lock at a time (and the depot lock only for a never-seen stack). LockAll/UnlockAll
//   (fork) take all of them in this order. The shim's batches are not locks: each is written by
//   its owner only and read by others with a seqlock (BATCHED FREES in interposer_abi.h).
//
// Hot path (scripts/bench, deep churn): a malloc+free pair makes one reverse P/Invoke (the
// malloc's; the free only appends to the thread's batch in the shim) and takes one shard lock
// when the pending removals share the insert's shard. A repeated call chain is checked with one
// load per saved stack slot (WalkCache) and reuses its stack id. Nothing here allocates managed
// memory.
using System;
using System.Runtime.CompilerServices;
using System.Threading;
using Interposer.Native;
using Interposer.Options;

namespace Interposer.Recording;

internal static unsafe class Recorder
{
    private static IpShimApi* s_api;
    private static AllocationTable s_table = null!;
    private static StackDepot s_depot = null!;
    private static ThreadRegistry s_threads = null!;
    private static UnwinderKind s_unwinder;
    private static int s_maxFrames = 16;
    private static bool s_disabled;             // a fatal problem: the shim was told to stop

    private static int s_replayLock;            // see LOCKING
    private static ulong s_applied;             // deferred entries popped *and applied*; under _replayLock
    private static long s_replayedEvents;       // statistics
    private static long s_replacedRecords;      // inserts that found a stale record (a free we never saw)
    private static long s_replacedUnchecked;    // inserts that replaced a record with too many threads to tell
    private static long s_replayGaveUp;         // direct events that stopped waiting for an unpublished entry
    private static long s_stackWalks;           // events whose backtrace the core walked and interned, and
    private static long s_stackRemembered;      // those it found remembered (walk cache, memo); the rest
                                                // were the shim's whole hits. Plain racy counts: statistics

    public static AllocationTable Table => s_table;
    public static StackDepot Depot => s_depot;
    public static ThreadRegistry Threads => s_threads;
    public static long ReplayedEvents => Volatile.Read(ref s_replayedEvents);
    public static long ReplacedRecords => Volatile.Read(ref s_replacedRecords);
    public static long ReplacedUnchecked => Volatile.Read(ref s_replacedUnchecked);
    public static long ReplayGaveUp => Volatile.Read(ref s_replayGaveUp);
    public static long StackWalks => Volatile.Read(ref s_stackWalks);
    public static long StackRemembered => Volatile.Read(ref s_stackRemembered);
    public static ulong DeferredDropped => s_api != null && s_api->DeferredDropped != null ? *s_api->DeferredDropped : 0;

    public static void Start(IpShimApi* api, Settings settings)
    {
        s_api = api;
        s_table = new AllocationTable();
        s_table.PendingCovers = api->PendingFreeCovers;
        GrowPending(1024); // 64 threads' full batches; grown when a catch-up finds more
        s_depot = new StackDepot();
        s_threads = new ThreadRegistry();
        s_maxFrames = settings.MaxFrames;
        s_unwinder = Backtrace.Parse(settings.Unwinder);
        // Map the rule cache and bind the unwinder's imports now, not inside the first hook.
        Unwinding.FastUnwinder.Initialize();
        if (s_unwinder == UnwinderKind.Libunwind && api->UnwBacktrace == null)
        {
            Diagnostics.Message("unwinder=libunwind but libunwind.so.8 could not be loaded; using the fast unwinder");
            s_unwinder = UnwinderKind.Fast;
        }
    }

    /// <summary>ip_core_config.whole_hit_frames: the depth for which the shim may find a walk
    /// cache's whole hit itself (the fast unwinder only, and only as deep as the cache).</summary>
    public static int WholeHitFrames =>
        s_unwinder == UnwinderKind.Fast && s_maxFrames <= Unwinding.IpWalkCache.Levels ? s_maxFrames : 0;

    // Inlined into the exported hook (Exports.OnAlloc): one frame fewer per malloc.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int OnAlloc(IpAllocEvent* ev)
    {
        ReplayIfPending();
        // The shim filled the record (min_count included); a whole hit it found (WHOLE HIT in
        // interposer_abi.h) comes with its depot id. Inserted where it lies, in the shim's event.
        IpRecord* record = &ev->Record;
        if (record->StackId == 0 || ev->Frames != null)
            record->StackId = StackOf(ev);
        InsertAfterPending(*record, ev->Frees);
        return 0;
    }

    // The event's backtrace as a depot id: copied (deferred events) or walked, then interned.
    // Its own frame: the 512-byte frame buffer is only needed when the shim had no whole hit.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static uint StackOf(IpAllocEvent* ev)
    {
        ulong* frames = stackalloc ulong[Backtrace.MaxFramesLimit];
        uint stackId = 0;                          // known: a call chain this thread remembers
        int n = ev->Frames != null
            ? Copy(ev->Frames, ev->NFrames, frames)
            : Backtrace.Capture(s_unwinder, ev, frames, s_maxFrames, s_api->UnwBacktrace, out stackId,
                                shimTried: WholeHitFrames > 0);
        if (stackId != 0)
            s_stackRemembered++;
        else
        {
            s_stackWalks++;
            stackId = s_depot.Intern(frames, n);
            if (ev->Frames == null && s_unwinder == UnwinderKind.Fast)
                Unwinding.FastUnwinderCached.Learned(ev->WalkCache, ev->Pc, ev->Sp, stackId, n, s_maxFrames);
        }
        return stackId;
    }

    /// <summary>kmemleak's and LeakSanitizer's annotations (native-shim/api.c). 1 = applied, 0 = no such block.</summary>
    public static int Annotate(ulong address, ulong size, Annotation op, int value)
    {
        ReplayIfPending();
        return op switch
        {
            Annotation.NotLeak => s_table.Update(address, minCount: 0, setFlags: 0) ? 1 : 0,
            Annotation.Ignore => s_table.Update(address, minCount: -1, setFlags: 0) ? 1 : 0,
            Annotation.NoScan => s_table.Update(address, minCount: null, setFlags: (ushort)RecordFlags.NoScan) ? 1 : 0,
            Annotation.Alloc => s_table.Update(address, minCount: (short)Math.Clamp(value, -1, short.MaxValue), setFlags: 0) ? 1 : 0,
            Annotation.ScanArea => ScanAreas.Add(address, size),
            _ => 0,
        };
    }

    private static int Copy(ulong* from, int count, ulong* to)
    {
        int n = count < s_maxFrames ? count : s_maxFrames;
        for (int i = 0; i < n; i++)
            to[i] = from[i];
        return n;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Insert(in IpRecord record)
    {
        IpRecord old;
        ReplacedKind kind;
        if (s_table.Insert(record, &old, &kind))
            Replaced(&old, kind);
        else if (s_table.Failed)
            Disable("cannot grow the allocation table (out of memory)");
    }

    // The malloc path: this thread's pending removals (BATCHED FREES in interposer_abi.h) first,
    // in the same call and under the same shard lock when they share it, then the insert. The
    // core only reads the batch: the shim empties it when this call returns (still in the hook).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void InsertAfterPending(in IpRecord record, IpFreeBatch* frees)
    {
        uint pending = frees != null ? Math.Min(frees->Count, (uint)Abi.FreeBatch) : 0;
        if (pending == 0 || ScanAreas.Count != 0)
        {
            if (pending != 0)
                OnFreeBatch((IpFreeEntry*)frees->Entry, (int)pending);
            Insert(record);
            return;
        }
        IpRecord old;
        ReplacedKind kind;
        if (s_table.RemoveStampedThenInsert((IpFreeEntry*)frees->Entry, (int)pending, record, &old, &kind))
            Replaced(&old, kind);
        else if (s_table.Failed)
            Disable("cannot grow the allocation table (out of memory)");
    }

    // An insert found a record at its address: that block is gone, and its scan areas with it.
    // Either its removal is pending in another thread's batch (glibc gave that thread's freed
    // address to this one; this thread's own removals were applied first), or it is a free we
    // never saw: stale (the table asked the batches, under the shard lock).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Replaced(IpRecord* old, ReplacedKind kind)
    {
        if (ScanAreas.Count != 0)
            ScanAreas.OnFree(old->Address, old->Size);
        if (kind == ReplacedKind.Stale)
            Interlocked.Increment(ref s_replacedRecords);
        else if (kind == ReplacedKind.Unknown)
            Interlocked.Increment(ref s_replacedUnchecked);
    }

    public static int OnFree(ulong address, IpRecord* stash)
    {
        ReplayIfPending();
        return RemoveBlock(address, stash) ? 1 : 0;
    }

    /// <summary>A batch of pending removals (BATCHED FREES): each applies only to a record whose
    /// TimeNs is at most its stamp.</summary>
    public static int OnFreeBatch(IpFreeEntry* entries, int count)
    {
        ReplayIfPending();
        if (ScanAreas.Count == 0)
            return s_table.RemoveStamped(entries, count);
        int removed = 0;
        for (int i = 0; i < count; i++)
            if (entries[i].Address != 0 && RemoveStampedBlock(entries[i].Address, entries[i].Stamp))
                removed++;
        return removed;
    }

    private static bool RemoveStampedBlock(ulong address, ulong stamp)
    {
        IpRecord removed;
        if (!s_table.RemoveStamped(address, stamp, &removed))
            return false;
        ScanAreas.OnFree(address, removed.Size);
        return true;
    }

    private static IpFreeEntry* s_pending;      // ApplyPendingFrees' buffer (mmap); under _replayLock
    private static int s_pendingCapacity;

    /// <summary>
    /// Brings the table up to date for a reader that needs it exact (a scan, a dump, a query): the
    /// deferred log, then every live thread's pending batched frees (read without stopping them;
    /// each removal applies only to the record it meant, so applying one twice, or one whose
    /// owner applies it too, is harmless). Allocates no managed memory.
    /// </summary>
    public static void CatchUp(bool worldStopped = false)
    {
        Replay();
        ApplyPendingFrees();
        // A thread that exited meanwhile moved its removals to the log before it left the list of
        // batches: replay again. With the world stopped nobody can finish an entry: do not wait.
        if (worldStopped)
            Replay();
        else
            ReplayIfPending();
    }

    private static void ApplyPendingFrees()
    {
        if (s_api == null || s_api->PendingFrees == null)
            return;
        SpinLockWord.Enter(ref s_replayLock);
        for (int attempt = 0; attempt < 4; attempt++)
        {
            int n = s_api->PendingFrees(s_pending, s_pendingCapacity);
            if (n <= s_pendingCapacity)
            {
                for (int i = 0; i < n; i++)
                    if (s_pending[i].Address != 0)
                        RemoveStampedBlock(s_pending[i].Address, s_pending[i].Stamp);
                break;
            }
            if (!GrowPending(n * 2))
                break;
        }
        SpinLockWord.Exit(ref s_replayLock);
    }

    // mmap, not managed memory: CatchUp also runs with the world stopped.
    private static bool GrowPending(int capacity)
    {
        var fresh = (IpFreeEntry*)Interop.Libc.MapAnonymous((nuint)(capacity * sizeof(IpFreeEntry)));
        if (fresh == null)
            return false;
        if (s_pending != null)
            Interop.Libc.Munmap(s_pending, (nuint)(s_pendingCapacity * sizeof(IpFreeEntry)));
        s_pending = fresh;
        s_pendingCapacity = capacity;
        return true;
    }

    // Every removal goes through here, so a block's scan areas die with it. Without scan areas
    // (every program that never calls kmemleak_scan_area) a plain free copies nothing out: the
    // record's size is only needed to find the areas. An area added while its block is being
    // freed by another thread (a use-after-free race in the program) may then outlive the block.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool RemoveBlock(ulong address, IpRecord* stash)
    {
        IpRecord removed;
        if (stash == null)
        {
            if (ScanAreas.Count == 0)
                return s_table.Remove(address, null);
            stash = &removed;
        }
        if (!s_table.Remove(address, stash))
            return false;
        ScanAreas.OnFree(address, stash->Size);
        return true;
    }

    public static int OnRestore(IpRecord* record)
    {
        ReplayIfPending();
        Insert(*record);
        return 0;
    }

    public static int OnThreadStart(int tid, byte* name, ulong stackLo, ulong stackHi, ulong tcb) =>
        s_threads.Register(tid, name, stackLo, stackHi, tcb);

    public static IpShimApi* Api => s_api;

    /// <summary>Where the count of applied deferred entries lives (ip_core_config.applied): the
    /// shim batches a free only while it equals the log's count of enqueued ones.</summary>
    public static ulong* AppliedCounter => (ulong*)Unsafe.AsPointer(ref s_applied);

    /// <summary>
    /// Deferred events must be applied before any direct event that could depend on them: a
    /// logged free(X) before a direct insert of X (glibc reuses X only after that free, which the
    /// log entry precedes). s_applied counts entries *applied*, so a direct event that sees
    /// nothing pending knows every earlier entry is already in the table; one that sees something
    /// pending waits on the lock for the replay in progress.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ReplayIfPending()
    {
        if (Volatile.Read(ref *s_api->DeferredEnqueued) != Volatile.Read(ref s_applied))
            ReplayCaughtUp();
    }

    // A replay stops at the first entry that is reserved but not yet published (its producer is
    // between the two steps, or preempted there). The entries behind it may include the free of
    // the very address this direct event is about to insert: applied after the insert, that free
    // would delete the new block's record (the block then vanishes from every report). So a
    // direct event waits until everything enqueued before it is applied. The wait is bounded: a
    // producer interrupted by a signal whose handler allocates on the same thread can never
    // publish while we wait; after ~10 ms we go on (counted in s_replayGaveUp).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ReplayCaughtUp()
    {
        ulong target = Volatile.Read(ref *s_api->DeferredEnqueued);
        for (int round = 0; ; round++)
        {
            Replay();
            if ((long)(Volatile.Read(ref s_applied) - target) >= 0)
                return;
            if (round >= 2000)
            {
                Interlocked.Increment(ref s_replayGaveUp);
                return;
            }
            if (round < 50)
                Thread.SpinWait(20);
            else
                Interop.Libc.SchedYield();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void Replay()
    {
        SpinLockWord.Enter(ref s_replayLock);
        IpDeferredEntry entry;
        while (s_api->DeferredPop(&entry) == 1)
        {
            Apply(&entry);
            Volatile.Write(ref s_applied, s_applied + 1);
            s_replayedEvents++;
        }
        SpinLockWord.Exit(ref s_replayLock);
    }

    private static void Apply(IpDeferredEntry* e)
    {
        if (e->Kind == (ushort)EventKind.Free)
        {
            RemoveBlock(e->Address, null);
            return;
        }
        if (e->Kind == (ushort)EventKind.FreeStamped)
        {
            RemoveStampedBlock(e->Address, e->Size);
            return;
        }
        ulong* frames = stackalloc ulong[Abi.DeferredFrames];
        int n = Copy(e->Frames, e->NFrames, frames);
        IpRecord record;
        record.Address = e->Address;
        record.Size = e->Size;
        record.TimeNs = e->TimeNs;
        record.Tid = e->Tid;
        record.StackId = s_depot.Intern(frames, n);
        record.ThreadIndex = e->ThreadIndex;
        record.Flags = (ushort)RecordFlags.Deferred;
        record.MinCount = 1;
        Insert(record);
    }

    /// <summary>fork prepare: every lock, in the documented order.</summary>
    public static void LockAll()
    {
        SpinLockWord.Enter(ref s_replayLock);
        s_table.LockAll();
        s_depot.Lock();
    }

    public static void UnlockAll()
    {
        s_depot.Unlock();
        s_table.UnlockAll();
        SpinLockWord.Exit(ref s_replayLock);
    }

    /// <summary>Opens (1) or closes (0) the shim's GC window around managed work that may collect.
    /// False when opening is refused for good: a registered thread ended without its destructors
    /// and the runtime would wait for it at its next GC (native-shim/gc_window.c, RAW EXITS); the
    /// caller must not do the work.</summary>
    public static bool OpenGcWindow(int open) =>
        s_api == null || s_api->GcWindow == null || s_api->GcWindow(open) != 0;

    public static void Disable(string reason)
    {
        if (s_disabled)
            return;
        s_disabled = true;
        byte* text = stackalloc byte[256];
        int n = 0;
        foreach (char c in reason)
        {
            if (n >= 255) break;
            text[n++] = c < 128 ? (byte)c : (byte)'?';
        }
        text[n] = 0;
        if (s_api != null)
            s_api->Disable(text);
    }
}
