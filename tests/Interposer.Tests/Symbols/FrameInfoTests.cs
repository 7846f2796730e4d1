// FrameInfo.Format: the kmemleak-style backtrace line, with and without symbols.

using Interposer.Scanner.Symbols;
using NUnit.Framework;

namespace Interposer.Tests.Symbols;

public class FrameInfoTests
{
    [TestCase(0x55d1c0a01234UL, "make_leak_a", 0x24UL, "/path/prog", 0x1234UL,
        "[<0x55d1c0a01234>] make_leak_a+0x24 (/path/prog)")]
    [TestCase(0x55d1c0a01210UL, "make_leak_a", 0x0UL, "/path/prog", 0x1210UL,
        "[<0x55d1c0a01210>] make_leak_a+0x0 (/path/prog)")]
    [TestCase(0x7f0000001a2bUL, null, 0x0UL, "/path/libfoo.so", 0x1a2bUL,
        "[<0x7f0000001a2b>] ?? (/path/libfoo.so+0x1a2b)")]
    [TestCase(0x10UL, null, 0x0UL, null, 0x0UL, "[<0x10>] ??")]
    [TestCase(0xffffffffffffffffUL, null, 0x0UL, null, 0x0UL, "[<0xffffffffffffffff>] ??")]
    public void Format_PrintsAddressSymbolAndModule(
        ulong address, string? function, ulong functionOffset, string? module, ulong moduleOffset, string expected)
    {
        var frame = new FrameInfo(address, function, functionOffset, module, moduleOffset);

        Assert.That(frame.Format(), Is.EqualTo(expected));
    }

    [Test]
    public void Unknown_HasNoFunctionAndStillPrintsTheAddress()
    {
        var frame = FrameInfo.Unknown(0xdeadbeefUL);

        Assert.That(frame.Function, Is.Null);
        Assert.That(frame.ModulePath, Is.Null);
        Assert.That(frame.Format(), Is.EqualTo("[<0xdeadbeef>] ??"));
    }
}
