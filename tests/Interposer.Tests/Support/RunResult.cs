// RunResult.cs — what a finished test process left behind.
namespace Interposer.Tests.Support;

/// <summary>What a finished process left behind. ExitCode is 128+N when it died of signal N
/// (as a shell reports it).</summary>
internal sealed record RunResult(int ExitCode, string Stdout, string Stderr, bool TimedOut, byte[] StdoutBytes)
{
    public override string ToString() =>
        $"exit {ExitCode}{(TimedOut ? " (timed out)" : "")}\n--- stdout ---\n{Clip(Stdout)}\n--- stderr ---\n{Clip(Stderr)}";

    private static string Clip(string s) => s.Length > 4000 ? s.Substring(0, 4000) + "\n[...]" : s;
}
