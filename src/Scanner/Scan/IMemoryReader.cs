// IMemoryReader: how the marker gets at the words of a range. In the process being checked that is
// a plain pointer dereference (DirectMemoryReader); tests map fake address spaces onto arrays.
//
// Marking calls the reader once per range (per root, per gray block, in pieces of at most
// Marker.MaxReadWords words), never per word, so a copying reader (process_vm_readv, a core file)
// would also be cheap enough. Readers are used through a generic struct parameter so that
// NativeAOT compiles a direct, inlinable call for the in-process case.

using System;

namespace Interposer.Scanner.Scan;

internal interface IMemoryReader
{
    /// <summary>
    /// The count words at address (8-byte aligned; count &lt;= <see cref="Marker.MaxReadWords"/>).
    /// An empty span means "not readable": the marker skips that piece. The span is only used until
    /// the next call, so a copying reader may reuse one buffer.
    /// Called while the world is stopped: must not allocate, lock, or throw.
    /// </summary>
    ReadOnlySpan<ulong> ReadWords(ulong address, int count);
}

/// <summary>
/// Reads this process's memory directly. Precondition, the caller's to keep: every range given to
/// the marker is mapped and readable for the whole scan (roots come from readable mappings; blocks
/// cannot be freed while the world is stopped). A violation is a SIGSEGV, not an error code.
/// </summary>
internal readonly unsafe struct DirectMemoryReader : IMemoryReader
{
    public ReadOnlySpan<ulong> ReadWords(ulong address, int count) => new((void*)address, count);
}
