// DumpFileTests.cs — where interposer_dump / dump_live writes. A report written to a path that
// is not a regular file (a FIFO, a character device such as /dev/null) must go *through* it, not
// replace it: the writer renames a temporary file over the target, which turns /dev/null into
// a regular file for the whole machine when the program runs as root.
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class DumpFileTests
{
    [Test]
    public void DumpToAFifo_WritesThroughIt_AndLeavesTheFifo()
    {
        using var dir = new TempDir("fifo");
        string fifo = dir.File("report.fifo");
        string received = dir.File("received.txt");
        string program = E2E.Build("runtime_quiet.c");
        // A reader (bounded by timeout) drains the FIFO; if the dump replaced the FIFO nobody
        // ever writes into it, so the reader is killed once the program is done.
        string script = $"""
            mkfifo {Programs.Quote(fifo)} || exit 90
            timeout 20 cat {Programs.Quote(fifo)} > {Programs.Quote(received)} &
            reader=$!
            env LD_PRELOAD={Programs.Quote(Artifacts.Library)} {Programs.Quote(program)} {Programs.Quote(fifo)} 0 || exit 91
            if [ -p {Programs.Quote(fifo)} ]; then echo "still a fifo"; else echo "replaced"; kill $reader 2>/dev/null; fi
            wait $reader
            exit 0
            """;
        RunResult r = Programs.Shell(script.Replace("\r\n", "\n"), preload: false, timeoutSeconds: 60);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.Stdout, Does.Contain("still a fifo"), "the dump replaced the FIFO with a regular file:\n" + r);
        Assert.That(System.IO.File.ReadAllText(received), Does.Contain("live blocks:"), "nothing came through the FIFO");
    }
}
