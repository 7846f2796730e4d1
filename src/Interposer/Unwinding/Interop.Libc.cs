// libc imports used by the unwinder, and nothing else.
//
// They live in Interposer.Unwinding.Interop (not Interposer.Interop) so this folder owns its own
// imports and cannot collide with another component's declarations of the same functions.
//
// Library name: "libc.so.6", not "libc". On Debian "libc.so" is a linker script (when
// libc6-dev is installed) or absent, so the bare name only resolves through probing luck.
// Everything here is glibc-specific anyway (_dl_find_object needs glibc 2.35+).
//
// PRECONDITIONS (both imports)
//  - Neither function calls malloc, so both are usable from inside a malloc hook.
//  - _dl_find_object is lock-free for loaded objects (glibc made it so for unwinders), so it is
//    marked [SuppressGCTransition]: it is short and never blocks. mmap is a syscall and only runs
//    once, so it keeps the normal GC transition.

using System.Runtime.InteropServices;

namespace Interposer.Unwinding;

internal static unsafe partial class Interop
{
    internal static unsafe partial class Libc
    {
        private const string LibraryName = "libc.so.6";

        internal const int PROT_READ = 0x1;
        internal const int PROT_WRITE = 0x2;
        internal const int MAP_PRIVATE = 0x02;
        internal const int MAP_ANONYMOUS = 0x20;
        internal const nint MAP_FAILED = -1;   // compare as (nint)result == MAP_FAILED

        [LibraryImport(LibraryName, EntryPoint = "mmap")]
        internal static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);

        [LibraryImport(LibraryName, EntryPoint = "munmap")]
        internal static partial int Munmap(void* addr, nuint length);

        // int _dl_find_object(void *pc, struct dl_find_object *result): 0 if pc is in a loaded object.
        [LibraryImport(LibraryName, EntryPoint = "_dl_find_object")]
        [SuppressGCTransition]
        internal static partial int DlFindObject(void* pc, DlFindObjectResult* result);
    }

    // struct dl_find_object from glibc <bits/dl_find_object.h> for x86-64, where
    // DLFO_STRUCT_HAS_EH_DBASE and DLFO_STRUCT_HAS_EH_COUNT are both 0:
    //   unsigned long long dlfo_flags; void *dlfo_map_start, *dlfo_map_end;
    //   struct link_map *dlfo_link_map; void *dlfo_eh_frame; unsigned long long __dflo_reserved[7];
    // sizeof == 96 and offsetof(dlfo_eh_frame) == 32, checked with gcc on glibc 2.36.
    // glibc may write the reserved words, so the struct must be the full 96 bytes.
    [StructLayout(LayoutKind.Sequential, Size = 96)]
    internal unsafe struct DlFindObjectResult
    {
        internal ulong Flags;
        internal byte* MapStart;     // start of the object's mapping: [MapStart, MapEnd) covers its eh_frame
        internal byte* MapEnd;
        internal void* LinkMap;
        internal byte* EhFrameHdr;   // the PT_GNU_EH_FRAME segment, i.e. .eh_frame_hdr; null if none
        private fixed ulong _reserved[7];
    }
}
