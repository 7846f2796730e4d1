// SuppressionTests.cs — suppressions=FILE (LeakSanitizer's leak:<pattern> syntax): a rule hides
// exactly the blocks whose stack it matches, and the summary counts them.
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Interposer.Scanner.Reports;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class SuppressionTests
{
    private static LeakScanTests.Outcome Run(TempDir dir, string rules)
    {
        string file = dir.File("supp.txt");
        File.WriteAllText(file, rules);
        return LeakScanTests.RunRoots(dir, "libc", "suppressions=" + file);
    }

    [Test]
    public void ARuleHidesExactlyItsStack_TheSummaryCountsIt()
    {
        using var dir = new TempDir("supp");
        // mode libc leaks strdup("strdup leak") and asprintf's buffer, in that order.
        LeakScanTests.Outcome o = Run(dir, "# hide asprintf's buffer\nleak:asprintf\n");
        Assert.That(o.Leak, Has.Length.EqualTo(2));
        Assert.That(o.Reported, Is.EqualTo(new[] { o.Leak[0] }), o.Report);
        Assert.That(o.Report, Does.Contain("suppressed by leak:asprintf: 1 blocks"));
        Assert.That(o.Report.TrimEnd().Split('\n').Last(), Does.Contain("1 unreferenced blocks (0 indirect), 12 bytes, 1 suppressed, of"));
    }

    [Test]
    public void ModulePatternAndAnchors()
    {
        using var dir = new TempDir("supp-module");
        LeakScanTests.Outcome both = Run(dir, "leak:libc.so*\n"); // both leaks are allocated inside libc
        Assert.That(both.Reported, Is.Empty, both.Report);
        Assert.That(both.Report, Does.Contain("2 suppressed"));
        LeakScanTests.Outcome none = Run(dir, "leak:^strdu$\n");   // anchored: no function is exactly "strdu"
        Assert.That(none.Reported, Has.Length.EqualTo(2));
    }

    [Test]
    public void BadLines_OneErrorEach_TheRestApplies()
    {
        using var dir = new TempDir("supp-bad");
        LeakScanTests.Outcome o = Run(dir, "race:foo\nleak:\nleak:strdup\n");
        string[] errors = E2E.LibraryLines(o.Run);
        Assert.That(errors, Has.Length.EqualTo(2), o.Run.Stderr);
        Assert.That(errors[0], Does.Contain("supp.txt:1: unknown suppression type 'race'"));
        Assert.That(errors[1], Does.Contain("supp.txt:2: empty pattern"));
        Assert.That(o.Reported, Is.EqualTo(new[] { o.Leak[1] }), "strdup's block suppressed, asprintf's reported");
    }

    [TestCase("strdup", "strdup", true)]
    [TestCase("dup", "strdup", true)]
    [TestCase("^dup", "strdup", false)]
    [TestCase("^str", "strdup", true)]
    [TestCase("dup$", "strdup", true)]
    [TestCase("^strdup$", "strdup", true)]
    [TestCase("^strdup$", "strdup2", false)]
    [TestCase("lib*.so", "/usr/lib/x86_64-linux-gnu/libc.so.6", true)]
    [TestCase("^/usr/*libc*$", "/usr/lib/x86_64-linux-gnu/libc.so.6", true)]
    [TestCase("a*b*c", "xxaxxbxxcxx", true)]
    [TestCase("a*b*c", "xxaxxcxxbxx", false)]
    public void TemplateMatch_IsLeakSanitizers(string template, string text, bool expected) =>
        Assert.That(Suppressions.TemplateMatch(template, text), Is.EqualTo(expected));
}
