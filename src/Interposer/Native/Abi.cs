// Abi.cs — the C# mirror of native-shim/interposer_abi.h, the one contract with the C shim.
// Every struct here is checked field by field against the header by
// tests/Interposer.Tests/Abi/AbiLayoutTests.cs (gcc compiles the header and prints offsetof).
// Change both sides together and bump AbiVersion.
using System.Runtime.InteropServices;

namespace Interposer.Native;

internal static class Abi
{
    public const uint AbiVersion = 11;
    public const int DeferredFrames = 8;
    public const int FreeBatch = 16;
    public const int ShardStride = 64;
    public const int ShardTimeOffset = 32;
    public const int ShardRegionShift = 22;
    public const int ShardMapBits = 25;
    public const int WalkLevels = Unwinding.IpWalkCache.Levels;
    public const int WalkMemoBytes = Unwinding.WalkMemo.Bytes;
}

internal enum EventKind : ushort
{
    Malloc = 1,
    Calloc = 2,
    Realloc = 3,
    ReallocArray = 4,
    Memalign = 5,
    PosixMemalign = 6,
    AlignedAlloc = 7,
    Valloc = 8,
    Pvalloc = 9,
    Free = 16,
    FreeStamped = 17,   // deferred only: a batched free's removal; Size holds its stamp
}

[System.Flags]
internal enum DeferredReason : uint
{
    Early = 1,
    Nested = 2,
    Exiting = 4,
    Loader = 8,
    Unregistered = 16,
    Stack = 32,
}

[System.Flags]
internal enum RecordFlags : ushort
{
    None = 0,
    Deferred = 1,
    Reported = 2,
    NoScan = 4,
}

internal enum Annotation
{
    NotLeak = 1,
    Ignore = 2,
    NoScan = 3,
    Alloc = 4,
    ScanArea = 5,
}

internal enum ScanReason
{
    Signal = 1,
    Periodic = 2,
    Exit = 3,
}

internal enum StwState
{
    Stopped = 0,
    Running = 1,
    Exited = 2,
}

/// <summary>ip_stw_reason: why a Running thread was not stopped.</summary>
internal enum StwReason : ulong
{
    None = 0,
    Seccomp = 1,
}

internal enum StwReg
{
    Rax = 0, Rbx, Rcx, Rdx, Rsi, Rdi, Rbp, R8, R9, R10, R11, R12, R13, R14, R15, Rip, Rsp,
    NRegs = 17,
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IpStoppedThread
{
    public int Tid;
    public int State;
    public ulong Sp;
    public fixed ulong Regs[18];
    public ulong Tcb;
    public ulong Reason;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IpModule
{
    public ulong Start;
    public ulong End;
    public ulong Bias;
    public ulong FileOffset;
    public fixed byte Path[224];
}

[StructLayout(LayoutKind.Sequential)]
internal struct IpTlsRange
{
    public long Offset;
    public ulong Size;
}

[StructLayout(LayoutKind.Sequential)]
internal struct IpRegion
{
    public ulong Start;
    public ulong End;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IpAllocEvent
{
    public IpRecord Record;  // filled by the shim; StackId non-zero: its whole hit (WHOLE HIT)
    public ulong Pc;
    public ulong Sp;
    public ulong Bp;
    public ulong StackLo;
    public ulong StackHi;
    public ulong* Frames;
    public Unwinding.IpWalkCache* WalkCache;
    public IpFreeBatch* Frees;
    public ushort Kind;
    public ushort NFrames;
}

/// <summary>One live block's metadata (ip_record). Stored by value in the allocation table.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct IpRecord
{
    public ulong Address;
    public ulong Size;
    public ulong TimeNs;
    public int Tid;
    public uint StackId;
    public uint ThreadIndex;
    public ushort Flags;
    public short MinCount;
}

/// <summary>Mirror of ip_free_entry: one batched free whose record removal is pending.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct IpFreeEntry
{
    public ulong Address;
    public ulong Stamp;
}

/// <summary>Mirror of ip_free_batch (a host thread's pending removals, in the shim's TLS).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IpFreeBatch
{
    public uint Count;
    public uint Gen;
    public fixed ulong Entry[Abi.FreeBatch * 2];
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IpDeferredEntry
{
    public ulong Seq;
    public ulong Address;
    public ulong Size;
    public ulong TimeNs;
    public int Tid;
    public ushort Kind;
    public ushort NFrames;
    public uint Reason;
    public uint ThreadIndex;
    public fixed ulong Frames[Abi.DeferredFrames];
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IpShimApi
{
    public uint AbiVersion;
    public uint StructSize;
    public delegate* unmanaged<IpDeferredEntry*, int> DeferredPop;
    public ulong* DeferredEnqueued;
    public delegate* unmanaged<byte*, void> Disable;
    public delegate* unmanaged<void**, int, int> UnwBacktrace;
    public ulong* DeferredDropped;
    public delegate* unmanaged<int, int> GcWindow;
    public delegate* unmanaged<IpStoppedThread*, int, int, int> StwStop;
    public delegate* unmanaged<void> StwResume;
    public delegate* unmanaged<IpRegion*, int, int> ProgramRegions;
    public ulong StaticTlsSize;
    public ulong PthreadSize;
    public ulong* RegionsDropped;
    public IpTlsRange* TlsExclude;
    public ulong TlsExcludeCount;
    public delegate* unmanaged<IpModule*, int, int> DepartedModules;
    public delegate* unmanaged<IpRegion*, int, int> RootRegions;
    public delegate* unmanaged<IpFreeEntry*, int, int> PendingFrees;
    public delegate* unmanaged<ulong, ulong, int> PendingFreeCovers;
    public delegate* unmanaged<int> StwPrepare;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IpCoreConfig
{
    public int Enabled;
    public int MaxFrames;
    public int Verbosity;
    public int ExitWork;
    public int ScanSignal;
    public int ScanIntervalS;
    public int TrackRegions;
    public int Control;
    public fixed byte ControlPath[112];
    public int BatchFrees;
    public int ShardBits;
    public byte* Shards;
    public ulong* Applied;
    public byte* ShardMap;
    public int WholeHitFrames;
    public int Reserved;
}
