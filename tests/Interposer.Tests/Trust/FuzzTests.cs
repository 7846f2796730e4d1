// FuzzTests.cs — time-bounded fuzzing of every parser that reads outside input (issue 4): the
// option string, and /proc/self/maps (three readers). Inputs: the corpus in tests/fuzz/<parser>/
// and random mutations of it for TRUST_FUZZ_SECONDS per parser (default 5). A parser must not
// throw, must not hang (each input has a deadline), and an option error must be one readable
// line. A failing input is saved under artifacts/fuzz-failures/<parser>/ for the corpus.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using Interposer.Options;
using Interposer.Scanner.Scan;
using Interposer.Scanner.Symbols;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.Trust;

[TestFixture]
public sealed class FuzzTests
{
    private static int Seconds =>
        int.TryParse(Environment.GetEnvironmentVariable("TRUST_FUZZ_SECONDS"), NumberStyles.None, CultureInfo.InvariantCulture, out int s) && s > 0 ? s : 5;

    private static byte[][] Corpus(string parser) =>
        Directory.GetFiles(Path.Combine(Artifacts.RepoRoot, "tests", "fuzz", parser)).OrderBy(f => f, StringComparer.Ordinal)
                 .Select(File.ReadAllBytes).ToArray();

    /// <summary>Mutates one input: flips, inserts, deletes, splices, long runs, huge numbers.</summary>
    internal static byte[] Mutate(Random rng, byte[][] corpus)
    {
        var b = new List<byte>(corpus[rng.Next(corpus.Length)]);
        for (int k = rng.Next(1, 6); k > 0; k--)
        {
            int at = b.Count == 0 ? 0 : rng.Next(b.Count);
            switch (rng.Next(8))
            {
                case 0 when b.Count > 0: b[at] ^= (byte)(1 << rng.Next(8)); break;
                case 1: b.Insert(at, (byte)rng.Next(256)); break;
                case 2 when b.Count > 0: b.RemoveRange(at, Math.Min(rng.Next(1, 16), b.Count - at)); break;
                case 3: b.InsertRange(at, corpus[rng.Next(corpus.Length)].Take(rng.Next(1, 200))); break;
                case 4: b.InsertRange(at, Enumerable.Repeat((byte)"a:=-/ \n0f"[rng.Next(9)], rng.Next(1, 5000))); break;
                case 5: b.InsertRange(at, Encoding.ASCII.GetBytes(rng.Next(3) == 0 ? "18446744073709551616" : "ffffffffffffffffff")); break;
                case 6: b.InsertRange(at, Encoding.ASCII.GetBytes(new[] { "\n", ":", "=", "'", "\"", "-", " ", "\t", "\r" }[rng.Next(9)])); break;
                default: if (b.Count > 0) b.RemoveRange(at, b.Count - at); break; // truncate
            }
        }
        return b.ToArray();
    }

    /// <summary>Runs check over the corpus, then over mutations until the time is up. Returns inputs tried.</summary>
    private static long Fuzz(string parser, int seed, Action<byte[]> check)
    {
        byte[][] corpus = Corpus(parser);
        Assert.That(corpus, Is.Not.Empty, $"tests/fuzz/{parser} has no seeds");
        var rng = new Random(seed);
        long inputs = 0;
        var clock = Stopwatch.StartNew();
        foreach (byte[] input in corpus.Concat(Enumerable.Repeat<byte[]?>(null, int.MaxValue).Select(_ => Mutate(rng, corpus))))
        {
            if (inputs >= corpus.Length && clock.Elapsed.TotalSeconds >= Seconds)
                break;
            var one = Stopwatch.StartNew();
            try
            {
                check(input);
            }
            catch (Exception e) when (e is not AssertionException)
            {
                Fail(parser, input, $"threw {e.GetType().Name}: {e.Message}");
            }
            catch (AssertionException)
            {
                Save(parser, input);
                throw;
            }
            if (one.Elapsed.TotalSeconds > 2)
                Fail(parser, input, $"took {one.Elapsed.TotalSeconds:F1} s on one {input.Length}-byte input");
            inputs++;
        }
        TestContext.Out.WriteLine($"{parser}: {inputs} inputs in {clock.Elapsed.TotalSeconds:F1} s, none broke it");
        return inputs;
    }

    private static void Save(string parser, byte[] input)
    {
        string dir = Path.Combine(Artifacts.RepoRoot, "artifacts", "fuzz-failures", parser);
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, $"input-{Guid.NewGuid():N}.txt"), input);
    }

    private static void Fail(string parser, byte[] input, string why)
    {
        Save(parser, input);
        Assert.Fail($"{parser} parser {why}; input saved under artifacts/fuzz-failures/{parser}/");
    }

    [Test]
    public void OptionParser()
    {
        Fuzz("options", 1, input =>
        {
            var errors = new List<string>();
            Settings s = OptionTable.Parse(Encoding.UTF8.GetString(input), errors);
            Assert.That(s, Is.Not.Null);
            foreach (string e in errors)
            {
                Assert.That(e, Does.Not.Contain("\n").And.Not.Contain("\r"), "one line per error");
                Assert.That(e.Length, Is.LessThan(400), "errors quote at most a short piece of the input");
            }
            Assert.That(s.MaxFrames, Is.InRange(1, 64));
        });
    }

    [Test]
    public void ControlCommandParser()
    {
        Fuzz("control", 3, input =>
        {
            bool ok = Interposer.Control.ControlCommand.TryParse(Encoding.UTF8.GetString(input), out _, out string error);
            if (!ok)
                Assert.That(error, Does.StartWith("error: ").And.Not.Contain("\n").And.Length.LessThan(300));
        });
    }

    [Test]
    public void SuppressionsParser()
    {
        Fuzz("suppressions", 4, input =>
        {
            var errors = new List<string>();
            var rules = Interposer.Scanner.Reports.Suppressions.Parse(Encoding.UTF8.GetString(input), "fuzz", errors);
            foreach (string e in errors)
                Assert.That(e, Does.Not.Contain("\n").And.Length.LessThan(300));
            foreach (var rule in rules.Rules)
                Interposer.Scanner.Reports.Suppressions.TemplateMatch(rule.Pattern, "some_function+0x10 (/usr/lib/libc.so.6)");
        });
    }

    [Test]
    public void MapsParsers()
    {
        var snapshot = new MapsSnapshot();
        snapshot.Prepare(1 << 20);
        Fuzz("maps", 2, input =>
        {
            snapshot.Parse(input);
            for (int r = 1; r < snapshot.Count; r++)
                Assert.That(snapshot.Rows[r].Start, Is.GreaterThanOrEqualTo(snapshot.Rows[r - 1].End));
            string text = Encoding.UTF8.GetString(input);
            ModuleMap map = ModuleMap.Parse(text);
            foreach (Module m in map.Modules)
                Assert.That(m.End, Is.GreaterThan(m.Start));
        });
    }
}
