// GlibcSemanticsTests.cs — the library never changes a result or errno of the malloc family.
// glibc_semantics.c prints every edge case's result and errno (nothing address-dependent); its
// output must be identical with and without the library. (Requirement 5 of the end-to-end suite.)
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class GlibcSemanticsTests
{
    private static (RunResult Plain, RunResult Preloaded) s_runs;

    private static (RunResult Plain, RunResult Preloaded) Runs()
    {
        if (s_runs.Plain == null)
            s_runs = E2E.RunBoth(E2E.Build("glibc_semantics.c"), "", timeoutSeconds: E2E.HazardTimeoutSeconds);
        return s_runs;
    }

    [Test]
    public void EdgeCaseResultsAndErrno_AreIdenticalWithAndWithoutTheLibrary()
    {
        var (plain, preloaded) = Runs();
        E2E.AssertCleanExit(plain, "without the library");
        E2E.AssertCleanExit(preloaded, "with the library");
        E2E.AssertNoLibraryMessages(preloaded, "glibc_semantics");
        Assert.That(preloaded.Stdout, Is.EqualTo(plain.Stdout));
    }

    // The expected lines themselves, so a broken glibc or a program change cannot make the
    // comparison above vacuous.
    [TestCase("malloc(0)                                    non-NULL errno=untouched")]
    [TestCase("malloc(SIZE_MAX)                             NULL errno=ENOMEM")]
    [TestCase("calloc(SIZE_MAX/2, 3) overflow               NULL errno=ENOMEM")]
    [TestCase("realloc(NULL, 10)                            non-NULL errno=untouched")]
    [TestCase("realloc(p, SIZE_MAX)                         NULL errno=ENOMEM")]
    [TestCase("failed realloc left p intact: yes")]
    [TestCase("realloc(p, 0)                                NULL errno=untouched")]
    [TestCase("reallocarray(p, SIZE_MAX/2, 3) overflow      NULL errno=ENOMEM")]
    [TestCase("overflowed reallocarray left p intact: yes")]
    [TestCase("posix_memalign(align 3) = EINVAL errno=untouched")]
    [TestCase("posix_memalign(64, huge) = ENOMEM errno=untouched")]
    [TestCase("posix_memalign(256, 1000) = 0 errno=untouched aligned=yes")]
    [TestCase("aligned_alloc(64, 128) aligned: yes")]
    [TestCase("memalign(4096, 10) aligned: yes")]
    [TestCase("pvalloc page-aligned: yes, usable >= page: yes")]
    [TestCase("malloc_usable_size(malloc(100)) = 104 (>= 100: yes)")]
    [TestCase("free(p) errno=untouched")]
    public void EdgeCase_UnderTheLibrary_PrintsTheGlibcResult(string line)
    {
        var (_, preloaded) = Runs();
        E2E.AssertCleanExit(preloaded, "with the library");
        Assert.That(preloaded.Stdout.Split('\n'), Does.Contain(line));
    }
}
