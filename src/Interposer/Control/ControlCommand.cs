// ControlCommand.cs — the control socket's language: kmemleak's debugfs commands, one per line.
//   scan                 scan now; the answer is the report's summary line and its path
//   clear                mark every currently unreferenced block as seen: never reported again
//   dump=<addr>          everything known about the block that contains <addr> (hex, 0x optional)
//   stack=on|off         scan thread stacks or not (use_stacks)
//   scan=on|off|<secs>   periodic scans every <secs> (1..86400), on (600 s, kmemleak's default) or off
//   off                  stop tracking for good
// Parse never throws: anything else is an error naming the command and listing the valid ones.
using System;
using System.Globalization;

namespace Interposer.Control;

internal enum ControlVerb { Scan, Clear, Dump, Stack, Periodic, Off }

internal readonly record struct ControlCommand(ControlVerb Verb, ulong Address = 0, bool On = false, int Seconds = 0)
{
    public const string Usage = "commands: scan, clear, dump=<addr>, stack=on|off, scan=on|off|<secs>, off";
    public const int DefaultPeriodSeconds = 600;

    /// <summary>Parses one command line; error is a one-line message when it is not valid.</summary>
    public static bool TryParse(string? line, out ControlCommand command, out string error)
    {
        command = default;
        error = "";
        string text = (line ?? "").Trim();
        int eq = text.IndexOf('=');
        string verb = eq < 0 ? text : text[..eq].Trim();
        string arg = eq < 0 ? "" : text[(eq + 1)..].Trim();
        switch (verb)
        {
            case "scan" when eq < 0:
                command = new(ControlVerb.Scan);
                return true;
            case "clear" when eq < 0:
                command = new(ControlVerb.Clear);
                return true;
            case "off" when eq < 0:
                command = new(ControlVerb.Off);
                return true;
            case "dump" when eq >= 0:
                string hex = arg.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? arg[2..] : arg;
                if (hex.Length is > 0 and <= 16 && ulong.TryParse(hex, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong address))
                {
                    command = new(ControlVerb.Dump, Address: address);
                    return true;
                }
                error = $"error: dump needs a hexadecimal address, not '{Printable(arg)}'";
                return false;
            case "stack" when eq >= 0:
                if (arg is "on" or "off")
                {
                    command = new(ControlVerb.Stack, On: arg == "on");
                    return true;
                }
                error = $"error: stack takes on or off, not '{Printable(arg)}'";
                return false;
            case "scan" when eq >= 0:
                if (arg is "on" or "off")
                {
                    command = new(ControlVerb.Periodic, Seconds: arg == "on" ? DefaultPeriodSeconds : 0);
                    return true;
                }
                if (int.TryParse(arg, NumberStyles.None, CultureInfo.InvariantCulture, out int secs) && secs is >= 1 and <= 86400)
                {
                    command = new(ControlVerb.Periodic, Seconds: secs);
                    return true;
                }
                error = $"error: scan= takes on, off or a number of seconds 1..86400, not '{Printable(arg)}'";
                return false;
            default:
                error = $"error: unknown command '{Printable(text)}'; {Usage}";
                return false;
        }
    }

    /// <summary>At most 60 printable characters of what the client sent.</summary>
    private static string Printable(string s)
    {
        var chars = new char[Math.Min(s.Length, 60)];
        for (int i = 0; i < chars.Length; i++)
            chars[i] = char.IsControl(s[i]) ? '?' : s[i];
        return new string(chars) + (s.Length > 60 ? "..." : "");
    }
}
