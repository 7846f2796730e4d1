// RecordCountTests.cs — the record count is exact: a program makes N known allocations of every
// interposed kind (and through strdup, asprintf, getline, operator new/new[], std::string and
// std::vector), frees M of them, and live_blocks() after minus before must be N - M; freeing the
// rest must bring it back to the start. (Requirement 3 of the end-to-end suite.)
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class RecordCountTests
{
    [TestCase("", TestName = "RecordCount_IsExact_OneThread")]
    [TestCase("threads", TestName = "RecordCount_IsExact_EightThreads")]
    public void RecordCount_IsExact(string mode)
    {
        string program = E2E.Build("count_mix.cpp");
        RunResult r = Programs.Run(program, mode, preload: true, timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "count_mix " + mode);
        E2E.AssertNoLibraryMessages(r, "count_mix " + mode);
        long[] kept = E2E.Numbers(r.Stdout, @"^expected (\d+) actual (-?\d+)$");
        long[] afterFree = E2E.Numbers(r.Stdout, @"^after-free-all expected (\d+) actual (-?\d+)$");
        Assert.Multiple(() =>
        {
            Assert.That(kept[0], Is.GreaterThan(100), "the program kept too few blocks to prove anything");
            Assert.That(kept[1], Is.EqualTo(kept[0]), "live_blocks() after - before != allocations - frees");
            Assert.That(afterFree[1], Is.EqualTo(0), "freeing every kept block did not bring the count back");
        });
    }

    [Test]
    public void RecordCount_IsExact_AMillionLiveBlocksAcrossTableGrowth()
    {
        // 8 threads insert 2,000,000 records (and remove half) while the table resizes.
        RunResult r = Programs.Run(E2E.Build("table_growth.c"), "250000", preload: true, timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "table_growth");
        E2E.AssertNoLibraryMessages(r, "table_growth");
        long[] delta = E2E.Numbers(r.Stdout, @"^delta (-?\d+) expected (\d+)$");
        Assert.That(delta[1], Is.EqualTo(1_000_000));
        Assert.That(delta[0], Is.EqualTo(delta[1]), "records lost or duplicated while the table grew");
    }

    [Test]
    public void RecordCount_WithoutTheLibrary_ReportsNothing()
    {
        // The same program unpreloaded: live_blocks() is -1 (weak symbol absent), so both deltas
        // are 0 — the numbers above really come from the library.
        string program = E2E.Build("count_mix.cpp");
        RunResult r = Programs.Run(program, "", preload: false, timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "count_mix");
        long[] kept = E2E.Numbers(r.Stdout, @"^expected (\d+) actual (-?\d+)$");
        Assert.That(kept[1], Is.EqualTo(0));
    }

    [Test]
    public void FailedReallocAndReallocToZero_KeepTheCountExact()
    {
        // glibc_semantics reports on stderr how the count moved across the edge cases:
        // a failed realloc keeps the block (and its record), realloc(p, 0) and
        // reallocarray(p, 0, n) free it, an overflowing reallocarray touches nothing.
        string program = E2E.Build("glibc_semantics.c");
        RunResult r = Programs.Run(program, "", preload: true, timeoutSeconds: E2E.HazardTimeoutSeconds);
        E2E.AssertCleanExit(r, "glibc_semantics");
        Assert.Multiple(() =>
        {
            Assert.That(E2E.Number(r.Stderr, @"^failed realloc record delta (-?\d+)$"), Is.EqualTo(0));
            Assert.That(E2E.Number(r.Stderr, @"^realloc\(p,0\) record delta (-?\d+)$"), Is.EqualTo(-1));
            Assert.That(E2E.Number(r.Stderr, @"^reallocarray overflow record delta (-?\d+)$"), Is.EqualTo(0));
            Assert.That(E2E.Number(r.Stderr, @"^reallocarray\(p,0,8\) record delta (-?\d+)$"), Is.EqualTo(-1));
        });
    }
}
