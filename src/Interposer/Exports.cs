// Exports.cs — the core's entry points, called only by the C shim (native-shim/interposer_abi.h).
// Every export catches everything: an exception must never cross into C. On an unexpected error
// the core tells the shim to stop tracking (the host runs on) and returns -1.
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using Interposer.Native;
using Interposer.Options;
using Interposer.Recording;
using Interposer.Scanning;

namespace Interposer;

internal static unsafe class Exports
{
    private static Settings s_settings = new();

    [UnmanagedCallersOnly(EntryPoint = "interposer_core_init")]
    private static int Init(IpShimApi* api, IpCoreConfig* config)
    {
        try
        {
            *config = default;
            if (api == null || api->AbiVersion != Abi.AbiVersion || api->StructSize != (uint)sizeof(IpShimApi))
            {
                Diagnostics.Message($"ABI mismatch between libinterposer.so and libinterposer_core.so (expected version {Abi.AbiVersion}); rebuild both");
                return -1;
            }
            var errors = new List<string>();
            s_settings = OptionTable.Parse(Environment.GetEnvironmentVariable(OptionTable.EnvironmentVariable), errors);
            foreach (string e in errors)
                Diagnostics.Message(e);
            if (s_settings.Help)
                Diagnostics.Raw(OptionTable.HelpText());
            if (!s_settings.Enabled)
                return 0; // config->Enabled = 0: a pure pass-through
            Recorder.Start(api, s_settings);
            config->Enabled = 1;
            config->MaxFrames = s_settings.MaxFrames;
            config->Verbosity = s_settings.Verbosity;
            config->ExitWork = s_settings.DumpAtExit.Length > 0 || s_settings.Verbosity >= 2 || s_settings.ReportAtExit ? 1 : 0;
            config->ScanSignal = s_settings.ScanSignal;
            config->ScanIntervalS = s_settings.ScanIntervalS;
            config->TrackRegions = s_settings.UseMmapRegions ? 1 : 0;
            config->BatchFrees = s_settings.BatchFrees ? 1 : 0;
            config->ShardBits = AllocationTable.ShardBits;
            config->Shards = Recorder.Table.ShardHeaders;
            config->Applied = Recorder.AppliedCounter;
            config->ShardMap = Recorder.Table.ShardMap;
            config->WholeHitFrames = Recorder.WholeHitFrames;
            string controlPath = s_settings.ControlPathOrDefault();
            int pathBytes = System.Text.Encoding.UTF8.GetByteCount(controlPath);
            if (s_settings.Control && pathBytes < 100)
            {
                System.Text.Encoding.UTF8.GetBytes(controlPath, new Span<byte>(config->ControlPath, 111));
                config->ControlPath[pathBytes] = 0;
                config->Control = 1;
            }
            else if (s_settings.Control)
            {
                Diagnostics.Message($"control_path is too long for a Unix socket ({pathBytes} bytes); no control socket");
            }
            LeakScanner.Configure(s_settings);
            if (s_settings.Verbosity >= 1)
                Diagnostics.Message($"tracking pid {Interop.Libc.GetPid()}, unwinder={s_settings.Unwinder}, max_frames={s_settings.MaxFrames}");
            return 0;
        }
        catch (Exception e)
        {
            Diagnostics.Message("failed to start: " + e.Message);
            return -1;
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_on_alloc")]
    private static int OnAlloc(IpAllocEvent* ev)
    {
        try { return Recorder.OnAlloc(ev); }
        catch (Exception e) { return Fail(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_on_free")]
    private static int OnFree(ulong address, IpRecord* stash)
    {
        try { return Recorder.OnFree(address, stash); }
        catch (Exception e) { return Fail(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_on_free_batch")]
    private static int OnFreeBatch(IpFreeEntry* entries, int count)
    {
        try { return Recorder.OnFreeBatch(entries, count); }
        catch (Exception e) { return Fail(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_on_restore")]
    private static int OnRestore(IpRecord* record)
    {
        try { return Recorder.OnRestore(record); }
        catch (Exception e) { return Fail(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_on_thread_start")]
    private static int OnThreadStart(int tid, byte* name, ulong stackLo, ulong stackHi, ulong tcb)
    {
        try { return Recorder.OnThreadStart(tid, name, stackLo, stackHi, tcb); }
        catch (Exception e) { return Fail(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_on_fork")]
    private static int OnFork(int phase)
    {
        try
        {
            if (phase == 0) Recorder.LockAll();
            else Recorder.UnlockAll();
            return 0;
        }
        catch (Exception e) { return Fail(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_on_exit")]
    private static int OnExit()
    {
        try
        {
            Recorder.CatchUp();
            using (var window = new GcWindow())
            {
                if (!window.Open)
                    return 0;
                if (s_settings.ReportAtExit)
                    LeakScanner.Run(ScanReason.Exit);
                if (s_settings.DumpAtExit.Length > 0)
                    LiveDump.Write(s_settings.DumpAtExit);
                if (s_settings.Verbosity >= 2)
                    Diagnostics.Message(LiveDump.Statistics());
            }
            return 0;
        }
        catch (Exception e) { return Fail(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_on_scan")]
    private static int OnScan(int reason)
    {
        try
        {
            using var window = new GcWindow();
            if (!window.Open)
                return -1;
            return LeakScanner.Run((ScanReason)reason);
        }
        catch (Exception e)
        {
            // A failed scan must not stop tracking: say why; the next scan tries again.
            try { Diagnostics.Message("scan failed: " + e.GetType().Name + ": " + e.Message); } catch { }
            return -1;
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_on_control")]
    private static int OnControl(byte* command, byte* output, int outputSize, int* scanIntervalS)
    {
        string answer;
        int rc = 0;
        try
        {
            using var window = new GcWindow();
            if (!window.Open)
            {
                // No managed allocation from here on: a GC would wait for the dead thread.
                answer = "error: the runtime inside the library can no longer collect (a thread ended without its destructors; see stderr)\n";
                rc = -1;
            }
            else
            {
                string line = Marshal.PtrToStringUTF8((IntPtr)command) ?? "";
                int interval = *scanIntervalS;
                answer = Control.ControlServer.Execute(line, s_settings, ref interval);
                *scanIntervalS = interval;
                rc = answer.StartsWith("error", StringComparison.Ordinal) ? -1 : 0;
            }
        }
        catch (Exception e)
        {
            answer = "error: " + e.GetType().Name + ": " + e.Message + "\n";
            rc = -1;
        }
        try
        {
            int n = System.Text.Encoding.UTF8.GetBytes(answer, new Span<byte>(output, Math.Max(0, outputSize - 1)));
            output[n] = 0;
        }
        catch (Exception)
        {
            if (outputSize > 0)
                output[0] = 0; // the answer did not fit: say nothing rather than cut a UTF-8 sequence
        }
        return rc;
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_annotate")]
    private static int Annotate(ulong address, ulong size, int op, int value)
    {
        try { return Recorder.Annotate(address, size, (Annotation)op, value); }
        catch (Exception e) { return Fail(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_on_drain")]
    private static int OnDrain()
    {
        try
        {
            Recorder.Replay();
            return 0;
        }
        catch (Exception e) { return Fail(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_core_live_blocks")]
    private static long LiveBlocks()
    {
        try
        {
            Recorder.CatchUp();
            return Recorder.Table.Count;
        }
        catch (Exception e) { return Fail(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "interposer_core_dump")]
    private static int Dump(byte* path)
    {
        try
        {
            Recorder.CatchUp();
            using var window = new GcWindow();
            if (!window.Open)
                return -1;
            string? p = Marshal.PtrToStringUTF8((IntPtr)path);
            return LiveDump.Write(string.IsNullOrEmpty(p) ? "-" : p);
        }
        catch (Exception e) { return Fail(e); }
    }

    /// <summary>Brackets managed work that may start a GC (see native-shim/gc_window.c).</summary>
    private readonly ref struct GcWindow
    {
        public readonly bool Open;
        public GcWindow() => Open = Recorder.OpenGcWindow(1);
        public void Dispose()
        {
            if (Open)
                Recorder.OpenGcWindow(0);
        }
    }

    private static int Fail(Exception e)
    {
        try { Recorder.Disable("internal error: " + e.GetType().Name + ": " + e.Message); }
        catch { /* nothing more can be done safely */ }
        return -1;
    }
}
