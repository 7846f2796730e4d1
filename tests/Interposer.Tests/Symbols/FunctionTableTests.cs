// FunctionTable: containment for sized symbols, nearest-preceding fallback for size-less ones
// (bounded by their section), and the choice among aliases of one address.

using System.Collections.Generic;
using Interposer.Scanner.Symbols;
using NUnit.Framework;

namespace Interposer.Tests.Symbols;

public class FunctionTableTests
{
    private const ulong NoSection = ulong.MaxValue;

    private static FunctionTable Table() => FunctionTable.Build(new List<FunctionTable.Entry>
    {
        new(0x2000, 0x40, "sized_b", false, NoSection),
        new(0x1000, 0x20, "sized_a", false, NoSection),
        new(0x3000, 0, "_init", false, 0x3020),        // size-less, .init ends at 0x3020
        new(0x4000, 0, "asm_entry", true, NoSection),   // size-less, section unknown
        new(0x5000, 0x10, "__libc_thing", false, NoSection),
        new(0x5000, 0x10, "thing", true, NoSection),
        new(0x5000, 0x10, "__GI___thing", true, NoSection),
        new(0x5000, 0, "thing_label", false, NoSection),
    });

    [TestCase(0x1000UL, "sized_a", 0x0UL)]
    [TestCase(0x101fUL, "sized_a", 0x1fUL)]
    [TestCase(0x2010UL, "sized_b", 0x10UL)]
    [TestCase(0x3010UL, "_init", 0x10UL)]
    [TestCase(0x4000UL, "asm_entry", 0x0UL)]
    [TestCase(0x4f00UL, "asm_entry", 0xf00UL)]
    [TestCase(0x5004UL, "thing", 0x4UL)]
    public void TryFind_NamesTheEnclosingFunction(ulong vaddr, string name, ulong offset)
    {
        Assert.That(Table().TryFind(vaddr, out string found, out ulong foundOffset), Is.True);
        Assert.That(found, Is.EqualTo(name));
        Assert.That(foundOffset, Is.EqualTo(offset));
    }

    [TestCase(0x0UL, Description = "before every symbol")]
    [TestCase(0x1020UL, Description = "just past a sized symbol")]
    [TestCase(0x1800UL, Description = "gap between sized symbols")]
    [TestCase(0x3020UL, Description = "past the section of a size-less symbol (the PLT after _init)")]
    [TestCase(0x5010UL, Description = "past the preferred alias's size")]
    public void TryFind_FailsOutsideEveryFunction(ulong vaddr)
    {
        Assert.That(Table().TryFind(vaddr, out _, out _), Is.False);
    }

    [Test]
    public void Build_KeepsOneAliasPerAddress()
    {
        var table = Table();

        Assert.That(table.Count, Is.EqualTo(5));
        Assert.That(table.TryGetAddress("thing", out ulong address), Is.True);
        Assert.That(address, Is.EqualTo(0x5000UL));
        Assert.That(table.TryGetAddress("__libc_thing", out _), Is.False);
    }

    [Test]
    public void Empty_FindsNothing()
    {
        Assert.That(FunctionTable.Build(new List<FunctionTable.Entry>()).TryFind(0x1000, out _, out _), Is.False);
    }
}
