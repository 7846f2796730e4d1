// ReportFile: %p/%% expansion, and WriteAtomically's promises: mode 0600, replacement of an
// existing file, never following a planted symlink (at the path or at the temporary's name),
// one-line errors for unwritable places, and no temporary left behind on failure.
// Tests run as root, so "unwritable" means /proc or a parent that is a regular file, not chmod.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using Interposer.Scanner.Reports;
using NUnit.Framework;

namespace Interposer.Tests.Unit;

[TestFixture]
public class ReportFileTests
{
    private string _dir = "";
    private readonly List<byte[]> _stderr = new();

    [SetUp]
    public void MakeDirectory()
    {
        _dir = Path.Combine(Path.GetTempPath(), "interposer-reportfile-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
        _stderr.Clear();
    }

    [TearDown]
    public void RemoveDirectory()
    {
        if (Directory.Exists(_dir))
            Directory.Delete(_dir, recursive: true);
    }

    private string? Write(string path, string text) => ReportFile.WriteAtomically(path, text, b => _stderr.Add(b));

    private string[] Leftovers() =>
        Directory.EnumerateFileSystemEntries(_dir, "*", SearchOption.AllDirectories)
                 .Select(Path.GetFileName).Where(n => n!.Contains(".tmp.")).ToArray()!;

    private const UnixFileMode Mode0600 = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    // ---- ExpandPath ---------------------------------------------------------------------------

    [TestCase("report.%p", 42, "report.42")]
    [TestCase("/tmp/%p/live.txt", 123, "/tmp/123/live.txt")]
    [TestCase("%p%p", 12, "1212")]
    [TestCase("%%p", 42, "%p")]
    [TestCase("a%%%p", 7, "a%7")]
    [TestCase("100%%", 1, "100%")]
    [TestCase("%", 1, "%")]
    [TestCase("x%", 1, "x%")]
    [TestCase("%q", 1, "%q")]
    [TestCase("%P", 1, "%P")]
    [TestCase("", 5, "")]
    [TestCase("-", 5, "-")]
    [TestCase("no-percent", 5, "no-percent")]
    [TestCase("%p", 2147483647, "2147483647")]
    public void ExpandPath(string template, int pid, string expected)
    {
        Assert.That(ReportFile.ExpandPath(template, pid), Is.EqualTo(expected));
    }

    // ---- WriteAtomically ----------------------------------------------------------------------

    [TestCase("hello\n")]
    [TestCase("")]
    [TestCase("ünïcödé ✓\n")]
    public void Write_CreatesFileWithMode0600(string text)
    {
        string path = Path.Combine(_dir, "report.txt");
        Assert.That(Write(path, text), Is.Null);
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(Encoding.UTF8.GetBytes(text)));
        Assert.That(File.GetUnixFileMode(path), Is.EqualTo(Mode0600));
        Assert.That(Leftovers(), Is.Empty);
        Assert.That(_stderr, Is.Empty);
    }

    [Test]
    public void Write_RelativePath_IsResolvedAgainstTheCurrentDirectory()
    {
        string saved = Environment.CurrentDirectory;
        try
        {
            Environment.CurrentDirectory = _dir;
            Assert.That(Write("rel.txt", "r"), Is.Null);
        }
        finally
        {
            Environment.CurrentDirectory = saved;
        }
        Assert.That(File.ReadAllText(Path.Combine(_dir, "rel.txt")), Is.EqualTo("r"));
    }

    [Test]
    public void Write_ReplacesAnExistingFile()
    {
        string path = Path.Combine(_dir, "report.txt");
        File.WriteAllText(path, "old contents that are longer than the new ones");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);

        Assert.That(Write(path, "new"), Is.Null);
        Assert.That(File.ReadAllText(path), Is.EqualTo("new"));
        Assert.That(File.GetUnixFileMode(path), Is.EqualTo(Mode0600), "the replacement is a new 0600 file");
        Assert.That(Write(path, "newer"), Is.Null);
        Assert.That(File.ReadAllText(path), Is.EqualTo("newer"));
        Assert.That(Leftovers(), Is.Empty);
    }

    [TestCase(true)]
    [TestCase(false)]
    public void Write_DoesNotFollowASymlinkAtThePath(bool targetExists)
    {
        string victim = Path.Combine(_dir, "victim");
        if (targetExists)
            File.WriteAllText(victim, "precious");
        string path = Path.Combine(_dir, "report.txt");
        File.CreateSymbolicLink(path, victim);

        Assert.That(Write(path, "report"), Is.Null);

        Assert.That(new FileInfo(path).LinkTarget, Is.Null, "the link itself was replaced by a regular file");
        Assert.That(File.GetAttributes(path) & FileAttributes.ReparsePoint, Is.EqualTo((FileAttributes)0));
        Assert.That(File.ReadAllText(path), Is.EqualTo("report"));
        Assert.That(File.GetUnixFileMode(path), Is.EqualTo(Mode0600));
        if (targetExists)
            Assert.That(File.ReadAllText(victim), Is.EqualTo("precious"), "the link's target is untouched");
        else
            Assert.That(File.Exists(victim), Is.False, "a dangling link's target is not created");
    }

    [Test]
    public void Write_DoesNotFollowASymlinkPlantedAtTheTemporaryName()
    {
        // An attacker who guesses the old-style temporary name (.<name>.tmp.<pid>) plants a link
        // there; the real temporary name has a random part, and O_EXCL would refuse a link anyway.
        string victim = Path.Combine(_dir, "victim");
        File.WriteAllText(victim, "precious");
        string path = Path.Combine(_dir, "report.txt");
        string planted = Path.Combine(_dir, ".report.txt.tmp." + Environment.ProcessId);
        File.CreateSymbolicLink(planted, victim);

        Assert.That(Write(path, "report"), Is.Null);
        Assert.That(File.ReadAllText(victim), Is.EqualTo("precious"));
        Assert.That(File.ReadAllText(path), Is.EqualTo("report"));
        Assert.That(new FileInfo(path).LinkTarget, Is.Null);
        Assert.That(new FileInfo(planted).LinkTarget, Is.EqualTo(victim), "the planted link is left alone");
        Assert.That(Leftovers(), Is.EqualTo(new[] { Path.GetFileName(planted) }), "no temporary of ours is left");
    }

    [Test]
    public void Dash_GoesToStderr()
    {
        string saved = Environment.CurrentDirectory;
        try
        {
            Environment.CurrentDirectory = _dir;
            Assert.That(Write("-", "to stderr\n"), Is.Null);
        }
        finally
        {
            Environment.CurrentDirectory = saved;
        }
        Assert.That(_stderr, Has.Count.EqualTo(1));
        Assert.That(Encoding.UTF8.GetString(_stderr[0]), Is.EqualTo("to stderr\n"));
        Assert.That(Directory.EnumerateFileSystemEntries(_dir), Is.Empty, "no file named '-'");
    }

    public static IEnumerable<TestCaseData> UnwritablePaths()
    {
        yield return new TestCaseData("/proc/nonexistent/x").SetArgDisplayNames("missing-dir-under-proc");
        yield return new TestCaseData("/proc/interposer-report.txt").SetArgDisplayNames("proc-root");
        yield return new TestCaseData("/proc/self/interposer-report.txt").SetArgDisplayNames("proc-self");
        yield return new TestCaseData("{dir}/regular-file/x").SetArgDisplayNames("parent-is-a-regular-file");
        yield return new TestCaseData("{dir}/missing/x").SetArgDisplayNames("parent-missing");
        yield return new TestCaseData("{dir}/existing-directory").SetArgDisplayNames("path-is-a-directory");
    }

    [TestCaseSource(nameof(UnwritablePaths))]
    public void Unwritable_ReturnsOneLineError_AndLeavesNoTemporary(string template)
    {
        File.WriteAllText(Path.Combine(_dir, "regular-file"), "i am a file");
        Directory.CreateDirectory(Path.Combine(_dir, "existing-directory"));
        File.WriteAllText(Path.Combine(_dir, "existing-directory", "inside"), "kept");
        string path = template.Replace("{dir}", _dir);
        string[] before = Directory.EnumerateFileSystemEntries(_dir, "*", SearchOption.AllDirectories).OrderBy(x => x).ToArray();

        string? error = Write(path, "report");

        Assert.That(error, Is.Not.Null.And.Not.Empty);
        Assert.That(error, Does.Contain(path), "the error names the path");
        Assert.That(error!.IndexOfAny(new[] { '\n', '\r' }), Is.EqualTo(-1), "one line: " + error);
        Assert.That(Directory.EnumerateFileSystemEntries(_dir, "*", SearchOption.AllDirectories).OrderBy(x => x),
                    Is.EqualTo(before), "nothing created or removed; no temporary left behind");
        Assert.That(File.ReadAllText(Path.Combine(_dir, "regular-file")), Is.EqualTo("i am a file"));
        Assert.That(File.ReadAllText(Path.Combine(_dir, "existing-directory", "inside")), Is.EqualTo("kept"));
        if (path.StartsWith("/proc/self/", StringComparison.Ordinal) || path.StartsWith("/proc/interposer", StringComparison.Ordinal))
            Assert.That(File.Exists(Path.Combine(Path.GetDirectoryName(path)!, "." + Path.GetFileName(path) + ".tmp." + Environment.ProcessId)),
                        Is.False);
    }
}
