// ControlServer.cs — runs one control command (ControlCommand) on the scanner thread and words
// the answer: "ok: ..." lines, or one "error: ..." line for a command that was refused (which
// then changed nothing).
using System;
using System.Text;
using Interposer.Native;
using Interposer.Options;
using Interposer.Recording;
using Interposer.Scanning;
using Interposer.Scanner.Symbols;

namespace Interposer.Control;

internal static unsafe class ControlServer
{
    public static string Execute(string line, Settings settings, ref int scanIntervalS)
    {
        if (!ControlCommand.TryParse(line, out ControlCommand command, out string error))
            return error + "\n";
        switch (command.Verb)
        {
            case ControlVerb.Scan:
            {
                int found = LeakScanner.Run(ScanReason.Signal);
                return found < 0 ? "error: the scan did not complete (see stderr)\n"
                                 : $"ok: {found} unreferenced blocks; report in {LeakScanner.LastReportPath}\n";
            }
            case ControlVerb.Clear:
            {
                int cleared = LeakScanner.Clear();
                return cleared < 0 ? "error: the scan did not complete (see stderr)\n"
                                   : $"ok: {cleared} unreferenced blocks marked as seen; they will not be reported again\n";
            }
            case ControlVerb.Dump:
                return Dump(command.Address);
            case ControlVerb.Stack:
                settings.UseStacks = command.On;
                return $"ok: stack scanning {(command.On ? "on" : "off")}\n";
            case ControlVerb.Periodic:
                scanIntervalS = command.Seconds;
                return command.Seconds == 0 ? "ok: periodic scans off\n" : $"ok: scanning every {command.Seconds} s\n";
            case ControlVerb.Off:
                Recorder.Disable("off requested through the control socket");
                return "ok: tracking is off for good in this process\n";
            default:
                return "error: unknown command\n";
        }
    }

    // kmemleak's dump=: everything known about the block containing address.
    private static string Dump(ulong address)
    {
        Recorder.CatchUp();
        IpRecord? found = null;
        if (Recorder.Table.TryGet(address, out IpRecord exact))
            found = exact;
        else
            foreach (IpRecord r in Recorder.Table.Snapshot())
                if (address >= r.Address && address < r.Address + Math.Max(r.Size, 1))
                    found = r;
        if (found is not IpRecord b)
            return $"error: no live block contains 0x{address:x}\n";
        ulong now = Interop.Libc.MonotonicCoarseNs();
        ReadOnlySpan<ulong> frames = Recorder.Depot.Get(b.StackId, out uint crc);
        var symbolizer = LeakScanner.NewSymbolizer();
        var sb = new StringBuilder();
        sb.Append($"ok: object 0x{b.Address:x} (size {b.Size}):\n");
        sb.Append($"  comm \"{Recorder.Threads.NameOf(b.ThreadIndex)}\", pid {Interop.Libc.GetPid()}, tid {b.Tid}, age {(now > b.TimeNs ? (now - b.TimeNs) / 1e9 : 0):F3}s\n");
        sb.Append($"  min_count {b.MinCount}, flags {(RecordFlags)b.Flags}\n");
        sb.Append($"  backtrace (crc {crc:x8}):\n");
        foreach (ulong f in frames)
            sb.Append("    ").Append(symbolizer.Symbolize(f).Format()).Append('\n');
        return sb.ToString();
    }
}
