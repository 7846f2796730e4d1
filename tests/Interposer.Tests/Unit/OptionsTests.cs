// OptionTable.Parse / HelpText: defaults, every option, quoting, unknown and malformed input
// (one error line each, naming the option, default kept, the rest still applied), the table's
// own defaults, and a seeded fuzz run that must never throw or print a multi-line error.

using System;
using System.Collections.Generic;
using System.Linq;
using System.Reflection;
using System.Text;
using Interposer.Options;
using NUnit.Framework;

namespace Interposer.Tests.Unit;

[TestFixture]
public class OptionsTests
{
    // ---- helpers ------------------------------------------------------------------------------

    /// <summary>The Settings field an option sets: max_frames -> MaxFrames.</summary>
    private static FieldInfo FieldOf(string option)
    {
        string name = string.Concat(option.Split('_').Select(p => char.ToUpperInvariant(p[0]) + p.Substring(1)));
        FieldInfo? f = typeof(Settings).GetField(name, BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic);
        Assert.That(f, Is.Not.Null, $"Settings has no field {name} for option {option}");
        return f!;
    }

    private static object? ValueOf(Settings s, string option) => FieldOf(option).GetValue(s);

    /// <summary>An option's default, as the Settings field's type holds it.</summary>
    private static object DefaultOf(OptionSpec spec) => spec.Type switch
    {
        OptionType.Bool => spec.Default == "1",
        OptionType.Int => int.Parse(spec.Default),
        OptionType.Signal => SignalNumber(spec.Default),
        _ => spec.Default,
    };

    private static int SignalNumber(string text)
    {
        Assert.That(Signals.TryParse(text, out int signo), Is.Null, $"signal '{text}'");
        return signo;
    }

    private static OptionSpec Spec(string name) => OptionTable.Table.Single(s => s.Name == name);

    private static (Settings Settings, List<string> Errors) Parse(string? text)
    {
        var errors = new List<string>();
        Settings s = OptionTable.Parse(text, errors);
        Assert.That(s, Is.Not.Null);
        return (s, errors);
    }

    private static void AssertAllDefaults(Settings s, params string[] except)
    {
        foreach (OptionSpec spec in OptionTable.Table.Where(o => !except.Contains(o.Name)))
            Assert.That(ValueOf(s, spec.Name), Is.EqualTo(DefaultOf(spec)), $"option {spec.Name} should keep its default");
    }

    // ---- defaults -----------------------------------------------------------------------------

    [TestCase(null)]
    [TestCase("")]
    [TestCase(":")]
    [TestCase(":::")]
    public void EmptyInput_GivesDefaultsAndNoErrors(string? text)
    {
        (Settings s, List<string> errors) = Parse(text);
        Assert.That(errors, Is.Empty);
        AssertAllDefaults(s);
    }

    [Test]
    public void SettingsDefaults_AreTheTableDefaults()
    {
        var s = new Settings();
        foreach (OptionSpec spec in OptionTable.Table)
            Assert.That(ValueOf(s, spec.Name), Is.EqualTo(DefaultOf(spec)), $"new Settings().{FieldOf(spec.Name).Name} vs Table default of {spec.Name}");
        Assert.That(typeof(Settings).GetFields().Select(f => f.Name),
                    Is.EquivalentTo(OptionTable.Table.Select(o => FieldOf(o.Name).Name)), "one Settings field per option, no more");
    }

    public static IEnumerable<TestCaseData> TableSpecs() =>
        OptionTable.Table.Select(o => new TestCaseData(o.Name).SetArgDisplayNames(o.Name));

    [TestCaseSource(nameof(TableSpecs))]
    public void TableDefault_ParsesBackWithoutError(string name)
    {
        OptionSpec spec = Spec(name);
        (Settings s, List<string> errors) = Parse($"{spec.Name}={spec.Default}");
        Assert.That(errors, Is.Empty, $"'{spec.Name}={spec.Default}'");
        Assert.That(ValueOf(s, spec.Name), Is.EqualTo(DefaultOf(spec)));
        Assert.That(spec.Help, Is.Not.Empty, "every option needs help text");
        if (spec.Type == OptionType.Int)
            Assert.That(DefaultOf(spec), Is.InRange(spec.Min, spec.Max));
        if (spec.Type == OptionType.Choice)
            Assert.That(spec.Choices, Does.Contain(spec.Default));
    }

    /// <summary>A valid value different from the default reaches the option's field (catches an
    /// option added to Table but not to the Set* switches).</summary>
    [TestCaseSource(nameof(TableSpecs))]
    public void NonDefaultValue_ReachesItsField(string name)
    {
        OptionSpec spec = Spec(name);
        (string text, object expected) = spec.Type switch
        {
            OptionType.Bool => spec.Default == "1" ? ("0", (object)false) : ("1", true),
            OptionType.Int => int.Parse(spec.Default) == spec.Max ? (spec.Min.ToString(), spec.Min) : (spec.Max.ToString(), (object)spec.Max),
            OptionType.Choice => (spec.Choices!.First(c => c != spec.Default), spec.Choices!.First(c => c != spec.Default)),
            OptionType.Signal => ("USR1", (object)Signals.Usr1),
            _ => ("some-value", "some-value"),
        };
        (Settings s, List<string> errors) = Parse($"{name}={text}");
        Assert.That(errors, Is.Empty);
        Assert.That(ValueOf(s, name), Is.EqualTo(expected));
        AssertAllDefaults(s, name);
    }

    // ---- each option --------------------------------------------------------------------------

    [TestCase("enabled=0", "enabled", false)]
    [TestCase("enabled=false", "enabled", false)]
    [TestCase("enabled=no", "enabled", false)]
    [TestCase("enabled=1", "enabled", true)]
    [TestCase("enabled=yes", "enabled", true)]
    [TestCase("max_frames=1", "max_frames", 1)]
    [TestCase("max_frames=64", "max_frames", 64)]
    [TestCase("max_frames=32", "max_frames", 32)]
    [TestCase(" max_frames = 8 ", "max_frames", 8)]
    [TestCase("unwinder=libunwind", "unwinder", "libunwind")]
    [TestCase("unwinder=fp", "unwinder", "fp")]
    [TestCase("unwinder=fast", "unwinder", "fast")]
    [TestCase("verbosity=2", "verbosity", 2)]
    [TestCase("verbosity=1", "verbosity", 1)]
    [TestCase("dump_at_exit=/tmp/live.%p", "dump_at_exit", "/tmp/live.%p")]
    [TestCase("scan_signal=USR1", "scan_signal", 10)]
    [TestCase("scan_signal=SIGUSR2", "scan_signal", 12)]
    [TestCase("scan_signal=usr2", "scan_signal", 12)]
    [TestCase("scan_signal=RTMIN+5", "scan_signal", 39)]
    [TestCase("scan_signal=10", "scan_signal", 10)]
    [TestCase("scan_signal=off", "scan_signal", 0)]
    [TestCase("scan_signal=0", "scan_signal", 0)]
    [TestCase("scan_interval_s=30", "scan_interval_s", 30)]
    [TestCase("report_at_exit=1", "report_at_exit", true)]
    [TestCase("min_age_ms=5000", "min_age_ms", 5000)]
    [TestCase("use_mmap_regions=0", "use_mmap_regions", false)]
    [TestCase("report_path=/tmp/leaks.%p.txt", "report_path", "/tmp/leaks.%p.txt")]
    [TestCase("dump_at_exit=-", "dump_at_exit", "-")]
    [TestCase("dump_at_exit=a=b", "dump_at_exit", "a=b")]
    [TestCase("help=1", "help", true)]
    [TestCase("help=true", "help", true)]
    [TestCase("max_frames=4:max_frames=9", "max_frames", 9)]
    public void EachOption_IsSet(string text, string option, object expected)
    {
        (Settings s, List<string> errors) = Parse(text);
        Assert.That(errors, Is.Empty);
        Assert.That(ValueOf(s, option), Is.EqualTo(expected));
        AssertAllDefaults(s, option);
    }

    [TestCase("KILL")]
    [TestCase("SIGSEGV")]
    [TestCase("STOP")]
    [TestCase("RTMIN")]
    [TestCase("RTMIN+3")]
    [TestCase("32")]
    [TestCase("65")]
    [TestCase("-1")]
    [TestCase("RTMIN+")]
    [TestCase("RTMIN-1")]
    [TestCase("BOGUS")]
    public void ScanSignal_RefusesSignalsItCannotUse(string value)
    {
        (Settings s, List<string> errors) = Parse($"scan_signal={value}");
        Assert.That(errors, Has.Count.EqualTo(1));
        Assert.That(errors[0], Does.Contain("scan_signal"));
        Assert.That(s.ScanSignal, Is.EqualTo(Signals.Usr2), "the default stays");
    }

    [Test]
    public void SeveralOptions_AreAllApplied()
    {
        (Settings s, List<string> errors) = Parse("enabled=0:max_frames=40:unwinder=libunwind:verbosity=2:dump_at_exit=/x:help=1");
        Assert.That(errors, Is.Empty);
        Assert.That(s.Enabled, Is.False);
        Assert.That(s.MaxFrames, Is.EqualTo(40));
        Assert.That(s.Unwinder, Is.EqualTo("libunwind"));
        Assert.That(s.Verbosity, Is.EqualTo(2));
        Assert.That(s.DumpAtExit, Is.EqualTo("/x"));
        Assert.That(s.Help, Is.True);
    }

    // ---- quoting ------------------------------------------------------------------------------

    [TestCase("dump_at_exit='/tmp/a:b'", "/tmp/a:b")]
    [TestCase("dump_at_exit=\"/tmp/a:b:c\"", "/tmp/a:b:c")]
    [TestCase("dump_at_exit=\"it's:here\"", "it's:here")]
    [TestCase("dump_at_exit='say \"a:b\"'", "say \"a:b\"")]
    [TestCase("dump_at_exit=''", "")]
    [TestCase("verbosity=1:dump_at_exit='x:y':max_frames=3", "x:y")]
    [TestCase("dump_at_exit=' spaced:out '", " spaced:out ")]
    public void QuotedValue_KeepsColons(string text, string expected)
    {
        (Settings s, List<string> errors) = Parse(text);
        Assert.That(errors, Is.Empty);
        Assert.That(s.DumpAtExit, Is.EqualTo(expected));
        if (text.StartsWith("verbosity", StringComparison.Ordinal))
        {
            Assert.That(s.Verbosity, Is.EqualTo(1), "before the quoted value");
            Assert.That(s.MaxFrames, Is.EqualTo(3), "after the quoted value");
        }
    }

    [Test]
    public void QuotedChoice_IsUnquoted()
    {
        (Settings s, List<string> errors) = Parse("unwinder='fp':max_frames=\"12\"");
        Assert.That(errors, Is.Empty);
        Assert.That(s.Unwinder, Is.EqualTo("fp"));
        Assert.That(s.MaxFrames, Is.EqualTo(12));
    }

    // ---- unknown and malformed ------------------------------------------------------------------

    [TestCase("bogus=1:max_frames=8", "bogus")]
    [TestCase("max_frames=8:Enabled=0", "Enabled")]
    [TestCase("max_frames=8:maxframes=3", "maxframes")]
    public void UnknownName_OneErrorNamingIt_OthersApplied(string text, string unknown)
    {
        (Settings s, List<string> errors) = Parse(text);
        Assert.That(errors, Has.Count.EqualTo(1), string.Join("\n", errors));
        Assert.That(errors[0], Does.Contain($"'{unknown}'"));
        Assert.That(s.MaxFrames, Is.EqualTo(8));
        AssertAllDefaults(s, "max_frames");
    }

    // Each malformed item is preceded by a good one ("help=1") and, where the error does not stop
    // parsing, followed by one ("verbosity=2"): both must still apply.
    [TestCase("max_frames", "max_frames", Description = "no '='")]
    [TestCase("max_frames=abc", "max_frames", Description = "bad int")]
    [TestCase("max_frames=", "max_frames", Description = "empty int")]
    [TestCase("max_frames=99999999999", "max_frames", Description = "int overflow")]
    [TestCase("max_frames=0", "max_frames", Description = "below range")]
    [TestCase("max_frames=65", "max_frames", Description = "above range")]
    [TestCase("max_frames=-3", "max_frames", Description = "negative")]
    [TestCase("max_frames=1.5", "max_frames", Description = "not an integer")]
    [TestCase("verbosity=3", "verbosity", Description = "above range")]
    [TestCase("unwinder=slow", "unwinder", Description = "bad choice")]
    [TestCase("unwinder=FAST", "unwinder", Description = "choices are case-sensitive")]
    [TestCase("enabled=2", "enabled", Description = "bad bool")]
    [TestCase("enabled=", "enabled", Description = "empty bool")]
    [TestCase("dump_at_exit=a\0b", "dump_at_exit", Description = "NUL byte")]
    public void MalformedValue_OneErrorNamingIt_DefaultKept(string bad, string option)
    {
        (Settings s, List<string> errors) = Parse("help=1:" + bad + ":verbosity=2");
        string expectedField = option;
        Assert.That(errors, Has.Count.EqualTo(1), string.Join("\n", errors));
        Assert.That(errors[0], Does.Contain(option));
        Assert.That(errors[0], Does.Not.Contain("\n").And.Not.Contain("\0"));
        if (option == "verbosity")
            Assert.That(s.Verbosity, Is.EqualTo(2), "the later good value applies");
        else
        {
            Assert.That(ValueOf(s, expectedField), Is.EqualTo(DefaultOf(Spec(option))), "default kept");
            Assert.That(s.Verbosity, Is.EqualTo(2), "the option after the bad one still applies");
        }
        Assert.That(s.Help, Is.True, "the option before the bad one still applies");
    }

    [TestCase("dump_at_exit='/tmp/a:b", "dump_at_exit")]
    [TestCase("dump_at_exit=\"/tmp/a", "dump_at_exit")]
    [TestCase("unwinder='fp", "unwinder")]
    public void UnterminatedQuote_OneErrorNamingIt_DefaultKept(string bad, string option)
    {
        (Settings s, List<string> errors) = Parse("help=1:max_frames=7:" + bad);
        Assert.That(errors, Has.Count.EqualTo(1), string.Join("\n", errors));
        Assert.That(errors[0], Does.Contain(option));
        Assert.That(errors[0], Does.Contain("quote"));
        Assert.That(ValueOf(s, option), Is.EqualTo(DefaultOf(Spec(option))));
        Assert.That(s.Help, Is.True);
        Assert.That(s.MaxFrames, Is.EqualTo(7));
    }

    [Test]
    public void SeveralProblems_OneErrorEach()
    {
        (Settings s, List<string> errors) = Parse("bogus=1:max_frames=x:verbosity=9:unwinder=fp:noequals");
        Assert.That(errors, Has.Count.EqualTo(4), string.Join("\n", errors));
        Assert.That(errors[0], Does.Contain("bogus"));
        Assert.That(errors[1], Does.Contain("max_frames"));
        Assert.That(errors[2], Does.Contain("verbosity"));
        Assert.That(errors[3], Does.Contain("noequals"));
        Assert.That(s.Unwinder, Is.EqualTo("fp"));
        AssertAllDefaults(s, "unwinder");
    }

    [Test]
    public void LongGarbage_ErrorIsClipped()
    {
        string name = new string('x', 5000);
        (_, List<string> errors) = Parse(name + "=1");
        Assert.That(errors, Has.Count.EqualTo(1));
        Assert.That(errors[0].Length, Is.LessThan(300), "an error line stays short whatever the input");
    }

    // Printable() promises "one line long and readable whatever bytes the user passed". The value
    // comes from a UTF-8 environment variable, so Unicode line breaks (NEL U+0085, LINE SEPARATOR
    // U+2028, PARAGRAPH SEPARATOR U+2029) and the other C1 controls (CSI U+009B starts a terminal
    // escape sequence) reach the error line as well as ASCII controls.
    [TestCase(0x0a, "")]
    [TestCase(0x0d, "")]
    [TestCase(0x1b, "[2J")]
    [TestCase(0x7f, "")]
    [TestCase(0x85, "")]
    [TestCase(0x2028, "")]
    [TestCase(0x2029, "")]
    [TestCase(0x9b, "2J")]
    public void ControlAndLineBreakCharacters_NeverReachAnErrorLine(int codePoint, string suffix)
    {
        string nasty = (char)codePoint + suffix;
        foreach (string text in new[] { $"bo{nasty}gus=1", $"max_frames=1{nasty}2", $"no{nasty}equals", $"dump_at_exit='a{nasty}" })
        {
            (_, List<string> errors) = Parse(text);
            Assert.That(errors, Has.Count.EqualTo(1), text);
            Assert.That(errors[0].Where(IsLineBreakOrControl).Select(c => $"U+{(int)c:X4}"), Is.Empty,
                        $"error for {Escape(text)}: {Escape(errors[0])}");
        }
    }

    private static bool IsLineBreakOrControl(char c) => char.IsControl(c) || c == '\u2028' || c == '\u2029';

    private static string Escape(string s) =>
        string.Concat(s.Select(c => c < ' ' || c >= 0x7f && c < 0xa0 || c > 0x2000 ? $"\\u{(int)c:x4}" : c.ToString()));

    // ---- help ---------------------------------------------------------------------------------

    [Test]
    public void HelpText_ListsEveryOption()
    {
        string help = OptionTable.HelpText();
        string[] lines = help.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(OptionTable.Table.Length + 1), "a title line and one line per option");
        foreach (OptionSpec o in OptionTable.Table)
        {
            string? line = lines.FirstOrDefault(l => l.TrimStart().StartsWith(o.Name + " ", StringComparison.Ordinal));
            Assert.That(line, Is.Not.Null, $"no help line for {o.Name}:\n{help}");
            Assert.That(line, Does.Contain(o.Help));
            Assert.That(line, Does.Contain(o.Default.Length == 0 ? "(empty)" : o.Default));
            if (o.Choices != null)
                foreach (string c in o.Choices)
                    Assert.That(line, Does.Contain(c));
        }
        Assert.That(help, Does.Contain(OptionTable.EnvironmentVariable));
    }

    [Test]
    public void Table_NamesAreUniqueAndWellFormed()
    {
        string[] names = OptionTable.Table.Select(o => o.Name).ToArray();
        Assert.That(names, Is.Unique);
        Assert.That(names, Has.All.Match("^[a-z][a-z0-9_]*$"));
    }

    // ---- fuzz ---------------------------------------------------------------------------------

    [TestCase(20251126, false)]
    [TestCase(7, true)]
    public void RandomInput_NeverThrows_ErrorsAreSingleLines(int seed, bool utf8)
    {
        var rng = new Random(seed);
        string[] atoms = { ":", "=", "'", "\"", "\0", "\n", "\r", "\t", "\u001b", "enabled", "max_frames", "unwinder",
                           "verbosity", "dump_at_exit", "help", "1", "0", "-1", "64", "fp", "%p", " " };
        int errorsSeen = 0;
        for (int n = 0; n < 2000; n++)
        {
            var sb = new StringBuilder();
            int parts = rng.Next(0, 12);
            for (int i = 0; i < parts; i++)
            {
                if (rng.Next(3) == 0)
                    sb.Append(atoms[rng.Next(atoms.Length)]);
                else
                {
                    byte[] raw = new byte[rng.Next(1, 10)];
                    rng.NextBytes(raw);
                    // Latin-1 (every byte a char, C1 controls included) or UTF-8 (as the
                    // environment variable is decoded).
                    sb.Append(utf8 ? Encoding.UTF8.GetString(raw) : Encoding.Latin1.GetString(raw));
                }
            }
            string text = sb.ToString();
            var errors = new List<string>();
            Settings? s = null;
            Assert.That(() => s = OptionTable.Parse(text, errors), Throws.Nothing, Escape(text));
            Assert.That(s, Is.Not.Null);
            foreach (string e in errors)
            {
                Assert.That(e.IndexOfAny(new[] { '\n', '\r' }), Is.EqualTo(-1), $"multi-line error for {Escape(text)}: {Escape(e)}");
                Assert.That(e.Any(c => c < ' ' || c == '\u007f'), Is.False, $"control character in error for {Escape(text)}: {Escape(e)}");
                Assert.That(e, Is.Not.Empty);
            }
            errorsSeen += errors.Count;
            // Whatever the input, the settings stay within the table's bounds.
            Assert.That(s!.MaxFrames, Is.InRange(Spec("max_frames").Min, Spec("max_frames").Max));
            Assert.That(s.Verbosity, Is.InRange(Spec("verbosity").Min, Spec("verbosity").Max));
            Assert.That(Spec("unwinder").Choices, Does.Contain(s.Unwinder));
            Assert.That(s.DumpAtExit, Does.Not.Contain("\0"));
        }
        Assert.That(errorsSeen, Is.GreaterThan(1000), "the fuzz input should mostly be rejected");
    }
}
