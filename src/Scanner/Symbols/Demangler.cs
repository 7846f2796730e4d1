// Demangler.cs — C++ names in reports, through the process's own libstdc++ (__cxa_demangle),
// when it has one loaded: every C++ program does, and a C program has no mangled names of its own.
// libstdc++ is never loaded just for this: that would change the host. Without it names stay
// mangled. Runs on the scanner thread after the world resumed (__cxa_demangle mallocs).
using System;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace Interposer.Scanner.Symbols;

internal static unsafe partial class Demangler
{
    private static delegate* unmanaged<byte*, byte*, nuint*, int*, byte*> s_demangle;
    private static bool s_looked;
    private static readonly ConcurrentDictionary<string, string> s_cache = new(StringComparer.Ordinal);

    [LibraryImport("libc", EntryPoint = "dlsym")]
    private static partial void* Dlsym(void* handle, byte* symbol);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void Free(void* p);

    /// <summary>True when __cxa_demangle is available in this process.</summary>
    public static bool Available
    {
        get
        {
            if (!s_looked)
            {
                fixed (byte* name = "__cxa_demangle\0"u8)
                    s_demangle = (delegate* unmanaged<byte*, byte*, nuint*, int*, byte*>)Dlsym(null, name); // RTLD_DEFAULT
                s_looked = true;
            }
            return s_demangle != null;
        }
    }

    /// <summary>The demangled name, or name itself when it is not a C++ name or cannot be demangled.</summary>
    public static string Demangle(string name)
    {
        if (name.Length < 3 || !name.StartsWith("_Z", StringComparison.Ordinal) || !Available)
            return name;
        return s_cache.GetOrAdd(name, static mangled =>
        {
            byte[] bytes = new byte[System.Text.Encoding.UTF8.GetByteCount(mangled) + 1];
            System.Text.Encoding.UTF8.GetBytes(mangled, bytes);
            int status = -1;
            byte* result;
            fixed (byte* p = bytes)
                result = s_demangle(p, null, null, &status);
            if (result == null)
                return mangled;
            try
            {
                return status == 0 ? Marshal.PtrToStringUTF8((IntPtr)result) ?? mangled : mangled;
            }
            finally
            {
                Free(result);
            }
        });
    }
}
