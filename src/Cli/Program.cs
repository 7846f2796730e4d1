// interposer — the command-line tool (issue 5).
//
//   interposer run [--options=OPTS] [--leak-exitcode=N] [--color=auto|always|never] [--report=FILE] -- prog args...
//   interposer scan <pid> [--socket=PATH] [--timeout=SECONDS]
//   interposer report <file> [--format=text|summary|json]
//   interposer diff <old.json> <new.json>
//
// Exit codes follow LeakSanitizer: run and scan exit with --leak-exitcode (default 1) when leaks
// were found, 0 when none (run: the program's own code when it failed without leaks); 2 for a
// usage error or a tool failure.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;

namespace Interposer.Cli;

internal static class Program
{
    public const int UsageError = 2;

    public const string Usage = """
        interposer — find the heap blocks nothing points to any more, in a running program

        usage:
          interposer run [--options=OPTS] [--leak-exitcode=N] [--color=auto|always|never] [--report=FILE] -- prog args...
              run prog under the library and print its leaks at exit (exit N=1 when there are some)
          interposer scan <pid> [--socket=PATH] [--timeout=SECONDS]
              scan a running process (started under the library) now and print its report
          interposer report <file> [--format=text|summary|json]
              re-render a JSON report as text, as the summary by stack, or as JSON
          interposer diff <old.json> <new.json>
              what is new or grown between two JSON reports, grouped by allocation stack
          interposer <command> --help

        OPTS are INTERPOSER_OPTIONS (name=value:name=value), e.g. --options=max_frames=32:min_age_ms=500.
        """;

    public static int Main(string[] args)
    {
        try
        {
            if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
            {
                Console.Out.Write(Usage);
                return args.Length == 0 ? UsageError : 0;
            }
            string[] rest = args[1..];
            return args[0] switch
            {
                "run" => RunCommand.Execute(rest),
                "scan" => ScanCommand.Execute(rest),
                "report" => ReportCommand.Execute(rest),
                "diff" => DiffCommand.Execute(rest),
                _ => Fail($"unknown command '{args[0]}'"),
            };
        }
        catch (CliException e)
        {
            return Fail(e.Message);
        }
    }

    public static int Fail(string message)
    {
        Console.Error.WriteLine($"interposer: {message}");
        Console.Error.WriteLine("Try 'interposer --help'.");
        return UsageError;
    }

    /// <summary>Splits --name=value options from positional arguments; "--" ends options.</summary>
    public static (Dictionary<string, string> Options, List<string> Positional, List<string> AfterDashes) Parse(
        string[] args, params string[] known)
    {
        var options = new Dictionary<string, string>(StringComparer.Ordinal);
        var positional = new List<string>();
        var after = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            if (a == "--")
            {
                after.AddRange(args[(i + 1)..]);
                break;
            }
            if (a is "-h" or "--help")
            {
                options["help"] = "1";
                continue;
            }
            if (a.StartsWith("--", StringComparison.Ordinal))
            {
                int eq = a.IndexOf('=');
                string name = eq < 0 ? a[2..] : a[2..eq];
                if (!known.Contains(name))
                    throw new CliException($"unknown option '--{name}'");
                options[name] = eq < 0 ? "1" : a[(eq + 1)..];
                continue;
            }
            positional.Add(a);
        }
        return (options, positional, after);
    }

    /// <summary>The preloaded library next to this tool: artifacts/bin/../lib/libinterposer.so.</summary>
    public static string LibraryPath()
    {
        string? env = Environment.GetEnvironmentVariable("INTERPOSER_LIB_DIR");
        string dir = !string.IsNullOrEmpty(env) ? env : Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "lib"));
        string lib = Path.Combine(dir, "libinterposer.so");
        if (!File.Exists(lib))
            throw new CliException($"cannot find {lib} (build it with ./build.sh, or set INTERPOSER_LIB_DIR)");
        return lib;
    }
}

internal sealed class CliException(string message) : Exception(message);
