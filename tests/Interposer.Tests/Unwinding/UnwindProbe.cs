// Test driver for tests/programs/unwind/unwind_probe.c.
//
// The probe library is compiled on first use with gcc -O2 -fomit-frame-pointer (so its frames,
// like Debian's libc, have no frame pointers) into a per-process temp directory and loaded with
// NativeLibrary. Each probe builds a call chain in C, records the state a malloc hook would see
// plus glibc backtrace() and libunwind references, and calls back into managed code while the
// chain is still live on the stack; the test's `walk` runs FastUnwinder right there.
//
// Tests using this run sequentially (NUnit's default): the pending walk is one static.

using System;
using System.Diagnostics;
using System.IO;
using System.Runtime.InteropServices;
using Interposer.Unwinding;
using NUnit.Framework;

namespace Interposer.Tests.Unwinding;

internal enum ProbeKind
{
    Qsort,     // capture inside a qsort comparator: frames through libc's msort/qsort_r
    Recurse,   // capture at the bottom of a recursion `arg` calls deep
    Alloca,    // capture below a frame whose CFA is rbp-based (alloca of `arg` bytes)
    Thread,    // capture on a new pthread: the chain ends at clone3's undefined RA
    Signal,    // capture in a signal handler: the chain crosses __restore_rt
    CallAtEnd, // a frame whose call is its function's last instruction (RA = next function)
}

// Mirror of struct probe_capture in unwind_probe.c.
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct ProbeCapture
{
    internal const int Max = 128;
    internal ulong Pc, Sp, Bp;
    internal ulong StackLo, StackHi;
    internal ulong OuterRa;
    internal int NRef, NUnw;
    internal delegate* unmanaged<ProbeCapture*, void> Callback;
    internal fixed ulong Ref[Max];
    internal fixed ulong Unw[Max];
}

// What one probe saw. Walk() is only valid inside the `walk` callback, while the chain is live.
internal sealed unsafe class ProbeResult
{
    internal ulong Pc, Sp, Bp, StackLo, StackHi, OuterRa;
    internal ulong[] Reference = Array.Empty<ulong>();    // glibc backtrace()
    internal ulong[]? Libunwind;                          // unw_backtrace(), null if unavailable
    internal ulong[] Frames = Array.Empty<ulong>();       // what `walk` returned

    internal ulong[] Walk(int maxFrames) => Walk(maxFrames, StackLo, StackHi);

    internal ulong[] Walk(int maxFrames, ulong stackLo, ulong stackHi)
    {
        ulong* frames = stackalloc ulong[Math.Max(maxFrames, 1)];
        int n = FastUnwinder.Unwind(Pc, Sp, Bp, stackLo, stackHi, frames, maxFrames);
        return new ReadOnlySpan<ulong>(frames, n).ToArray();
    }
}

internal static unsafe class UnwindProbe
{
    private static nint s_library;
    private static delegate* unmanaged<ProbeCapture*, int> s_qsort;
    private static delegate* unmanaged<int, ProbeCapture*, int> s_recurse;
    private static delegate* unmanaged<int, ProbeCapture*, int> s_alloca;
    private static delegate* unmanaged<ProbeCapture*, int> s_thread;
    private static delegate* unmanaged<ProbeCapture*, int> s_signal;
    private static delegate* unmanaged<ProbeCapture*, int> s_callAtEnd;
    private static delegate* unmanaged<nuint, void*> s_guardedAlloc;
    private static delegate* unmanaged<void*, nuint, void> s_guardedFree;

    // The walk requested by the running test and what happened inside the callback.
    private static Func<ProbeResult, ulong[]>? s_walk;
    private static ProbeResult? s_result;
    private static Exception? s_callbackError;

    internal static ProbeResult Run(ProbeKind kind, int arg = 0, Func<ProbeResult, ulong[]>? walk = null)
    {
        EnsureLoaded();
        ProbeCapture* capture = (ProbeCapture*)NativeMemory.AllocZeroed((nuint)sizeof(ProbeCapture));
        try
        {
            capture->Callback = &OnCapture;
            s_walk = walk ?? (r => r.Walk(ProbeCapture.Max));
            s_result = null;
            s_callbackError = null;
            int rc = kind switch
            {
                ProbeKind.Qsort => s_qsort(capture),
                ProbeKind.Recurse => s_recurse(arg, capture),
                ProbeKind.Alloca => s_alloca(arg, capture),
                ProbeKind.Thread => s_thread(capture),
                ProbeKind.Signal => s_signal(capture),
                ProbeKind.CallAtEnd => s_callAtEnd(capture),
                _ => throw new ArgumentOutOfRangeException(nameof(kind)),
            };
            if (s_callbackError != null)
                throw new InvalidOperationException("walk callback failed", s_callbackError);
            Assert.That(s_result, Is.Not.Null, $"probe {kind} returned {rc} without calling back");
            s_result!.OuterRa = capture->OuterRa;
            return s_result;
        }
        finally
        {
            NativeMemory.Free(capture);
            s_walk = null;
        }
    }

    // [lo, lo + size) of read-write memory with PROT_NONE pages on both sides.
    internal static byte* GuardedAlloc(nuint size)
    {
        EnsureLoaded();
        return (byte*)s_guardedAlloc(size);
    }

    internal static void GuardedFree(byte* p, nuint size) => s_guardedFree(p, size);

    // Address of an exported symbol of the probe library.
    internal static ulong Export(string name)
    {
        EnsureLoaded();
        return (ulong)NativeLibrary.GetExport(s_library, name);
    }

    [UnmanagedCallersOnly]
    private static void OnCapture(ProbeCapture* c)
    {
        try
        {
            var result = new ProbeResult
            {
                Pc = c->Pc, Sp = c->Sp, Bp = c->Bp, StackLo = c->StackLo, StackHi = c->StackHi,
                Reference = new ReadOnlySpan<ulong>(c->Ref, c->NRef).ToArray(),
                Libunwind = c->NUnw < 0 ? null : new ReadOnlySpan<ulong>(c->Unw, c->NUnw).ToArray(),
            };
            result.Frames = s_walk!(result);
            s_result = result;
        }
        catch (Exception e)
        {
            s_callbackError = e;   // nothing may unwind through the C frames
        }
    }

    private static void EnsureLoaded()
    {
        if (s_library != 0)
            return;
        string source = FindSource();
        string dir = Path.Combine(Path.GetTempPath(), $"interposer-unwind-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        string library = Path.Combine(dir, "libunwind_probe.so");
        var psi = new ProcessStartInfo("gcc")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (string a in new[] { "-O2", "-fomit-frame-pointer", "-shared", "-fPIC", "-o", library, source, "-ldl", "-lpthread" })
            psi.ArgumentList.Add(a);
        using (var gcc = Process.Start(psi)!)
        {
            string errors = gcc.StandardError.ReadToEnd();
            gcc.WaitForExit();
            Assert.That(gcc.ExitCode, Is.EqualTo(0), "gcc failed: " + errors);
        }

        nint lib = NativeLibrary.Load(library);
        Directory.Delete(dir, recursive: true);   // the mapping outlives the file
        s_qsort = (delegate* unmanaged<ProbeCapture*, int>)NativeLibrary.GetExport(lib, "probe_qsort");
        s_recurse = (delegate* unmanaged<int, ProbeCapture*, int>)NativeLibrary.GetExport(lib, "probe_recurse");
        s_alloca = (delegate* unmanaged<int, ProbeCapture*, int>)NativeLibrary.GetExport(lib, "probe_alloca");
        s_thread = (delegate* unmanaged<ProbeCapture*, int>)NativeLibrary.GetExport(lib, "probe_thread");
        s_signal = (delegate* unmanaged<ProbeCapture*, int>)NativeLibrary.GetExport(lib, "probe_signal");
        s_callAtEnd = (delegate* unmanaged<ProbeCapture*, int>)NativeLibrary.GetExport(lib, "probe_call_at_end");
        s_guardedAlloc = (delegate* unmanaged<nuint, void*>)NativeLibrary.GetExport(lib, "probe_guarded_alloc");
        s_guardedFree = (delegate* unmanaged<void*, nuint, void>)NativeLibrary.GetExport(lib, "probe_guarded_free");
        s_library = lib;
    }

    private static string FindSource()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir != null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "tests", "programs", "unwind", "unwind_probe.c");
            if (File.Exists(candidate))
                return candidate;
        }
        Assert.Fail("tests/programs/unwind/unwind_probe.c not found above " + TestContext.CurrentContext.TestDirectory);
        return "";
    }
}
