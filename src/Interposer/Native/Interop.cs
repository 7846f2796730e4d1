// Interop.cs — the libc calls the core makes. Grouped as dotnet/runtime does.
// Never System.Console: it installs SIGCHLD/SIGINT/SIGCONT handlers (terminal handling) and
// would change the host program. Diagnostics go through write(2) (see Diagnostics.cs).
using System.Runtime.InteropServices;

namespace Interposer.Native;

internal static unsafe partial class Interop
{
    internal static unsafe partial class Libc
    {
        private const string LibraryName = "libc";

        public const int ProtRead = 1, ProtWrite = 2;
        public const int MapPrivate = 0x02, MapAnon = 0x20, MapNoReserve = 0x4000;

        [LibraryImport(LibraryName, EntryPoint = "mmap")]
        public static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);

        [LibraryImport(LibraryName, EntryPoint = "munmap")]
        public static partial int Munmap(void* addr, nuint length);

        [LibraryImport(LibraryName, EntryPoint = "write")]
        public static partial nint Write(int fd, byte* buffer, nuint count);

        [LibraryImport(LibraryName, EntryPoint = "getpid")]
        public static partial int GetPid();

        [LibraryImport(LibraryName, EntryPoint = "sched_yield")]
        public static partial int SchedYield();

        [LibraryImport(LibraryName, EntryPoint = "clock_gettime")]
        public static partial int ClockGetTime(int clock, TimeSpec* ts);

        public const int ClockMonotonicCoarse = 6;

        [StructLayout(LayoutKind.Sequential)]
        public struct TimeSpec { public long Seconds; public long Nanoseconds; }

        /// <summary>Anonymous, lazily-committed memory that is never part of the host's heap.</summary>
        public static void* MapAnonymous(nuint bytes)
        {
            void* p = Mmap(null, bytes, ProtRead | ProtWrite, MapPrivate | MapAnon | MapNoReserve, -1, 0);
            return p == (void*)-1 ? null : p;
        }

        public static ulong MonotonicCoarseNs()
        {
            TimeSpec ts;
            ClockGetTime(ClockMonotonicCoarse, &ts);
            return (ulong)ts.Seconds * 1_000_000_000UL + (ulong)ts.Nanoseconds;
        }
    }
}
