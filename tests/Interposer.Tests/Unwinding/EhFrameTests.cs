// Pointer encodings, LEB128, the .eh_frame_hdr binary search, and a sweep over every FDE of the
// system libraries loaded in this process (real GCC/glibc CFI, including hand-written assembly).

using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using Interposer.Unwinding;
using NUnit.Framework;

namespace Interposer.Tests.Unwinding;

[TestFixture]
public unsafe class EhFrameTests
{
    // DWARF 5, tables 7.8 and 7.9.
    [TestCase(new byte[] { 0x02 }, 2UL)]
    [TestCase(new byte[] { 0x7f }, 127UL)]
    [TestCase(new byte[] { 0x80, 0x01 }, 128UL)]
    [TestCase(new byte[] { 0x81, 0x01 }, 129UL)]
    [TestCase(new byte[] { 0xb9, 0x64 }, 12857UL)]
    [TestCase(new byte[] { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 }, ulong.MaxValue)]
    public void ULeb128(byte[] bytes, ulong expected)
    {
        fixed (byte* start = bytes)
        {
            byte* p = start;
            Assert.That(EhFrame.TryReadULeb(ref p, start + bytes.Length, out ulong value), Is.True);
            Assert.That(value, Is.EqualTo(expected));
            Assert.That(p - start, Is.EqualTo(bytes.Length));
        }
    }

    [TestCase(new byte[] { 0x02 }, 2L)]
    [TestCase(new byte[] { 0x7e }, -2L)]
    [TestCase(new byte[] { 0xff, 0x00 }, 127L)]
    [TestCase(new byte[] { 0x81, 0x7f }, -127L)]
    [TestCase(new byte[] { 0x80, 0x01 }, 128L)]
    [TestCase(new byte[] { 0x80, 0x7f }, -128L)]
    [TestCase(new byte[] { 0xff, 0x7e }, -129L)]
    public void SLeb128(byte[] bytes, long expected)
    {
        fixed (byte* start = bytes)
        {
            byte* p = start;
            Assert.That(EhFrame.TryReadSLeb(ref p, start + bytes.Length, out long value), Is.True);
            Assert.That(value, Is.EqualTo(expected));
        }
    }

    [Test]
    public void Leb128RunningOffTheEnd_Fails()
    {
        byte[] bytes = { 0x80, 0x80 };
        fixed (byte* start = bytes)
        {
            byte* p = start;
            Assert.That(EhFrame.TryReadULeb(ref p, start + 2, out _), Is.False);
            p = start;
            Assert.That(EhFrame.TryReadSLeb(ref p, start + 2, out _), Is.False);
        }
    }

    [TestCase((byte)0x02, new byte[] { 0xfe, 0xff }, 0xfffeUL, TestName = "udata2")]
    [TestCase((byte)0x0a, new byte[] { 0xfe, 0xff }, 0xfffffffffffffffeUL, TestName = "sdata2")]
    [TestCase((byte)0x03, new byte[] { 0xfc, 0xff, 0xff, 0xff }, 0xfffffffcUL, TestName = "udata4")]
    [TestCase((byte)0x0b, new byte[] { 0xfc, 0xff, 0xff, 0xff }, 0xfffffffffffffffcUL, TestName = "sdata4")]
    [TestCase((byte)0x04, new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 }, 0x0807060504030201UL, TestName = "udata8")]
    [TestCase((byte)0x00, new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 }, 0x0807060504030201UL, TestName = "absptr")]
    [TestCase((byte)0x01, new byte[] { 0x80, 0x01 }, 128UL, TestName = "uleb128")]
    [TestCase((byte)0x09, new byte[] { 0x7e }, 0xfffffffffffffffeUL, TestName = "sleb128")]
    [TestCase((byte)0x33, new byte[] { 0x10, 0, 0, 0 }, 0x1000010UL, TestName = "datarel udata4")]
    public void EncodedPointers(byte encoding, byte[] bytes, ulong expected)
    {
        fixed (byte* start = bytes)
        {
            byte* p = start;
            Assert.That(EhFrame.TryReadEncoded(ref p, start + bytes.Length, encoding, 0x1000000, out ulong value), Is.True);
            Assert.That(value, Is.EqualTo(expected));
            Assert.That(p - start, Is.EqualTo(bytes.Length));
        }
    }

    [Test]
    public void PcRelativeSData4_IsRelativeToTheField()
    {
        byte[] bytes = { 0, 0, 0, 0, 0xf8, 0xff, 0xff, 0xff };   // field at +4 holds -8
        fixed (byte* start = bytes)
        {
            byte* p = start + 4;
            Assert.That(EhFrame.TryReadEncoded(ref p, start + 8, 0x1b, 0, out ulong value), Is.True);
            Assert.That(value, Is.EqualTo((ulong)start - 4));
        }
    }

    [TestCase((byte)0x33, 0UL, TestName = "datarel without a base")]
    [TestCase((byte)0x23, 1UL, TestName = "textrel")]
    [TestCase((byte)0x43, 1UL, TestName = "funcrel")]
    [TestCase((byte)0x53, 1UL, TestName = "aligned")]
    [TestCase((byte)0x83, 1UL, TestName = "indirect")]
    [TestCase((byte)0xff, 1UL, TestName = "omit")]
    [TestCase((byte)0x0f, 1UL, TestName = "bad format")]
    [TestCase((byte)0x04, 1UL, TestName = "udata8 truncated")]
    public void UnsupportedOrTruncatedEncodings_Fail(byte encoding, ulong dataBase)
    {
        byte[] bytes = { 1, 2, 3, 4 };
        fixed (byte* start = bytes)
        {
            byte* p = start;
            Assert.That(EhFrame.TryReadEncoded(ref p, start + bytes.Length, encoding, dataBase, out _), Is.False);
        }
    }

    // hdr: version 1, eh_frame_ptr pcrel|sdata4, count udata4, table datarel|sdata4, then the table.
    private static byte[] Header(byte version, byte tableEncoding, uint count, params int[] pairs)
    {
        var bytes = new List<byte> { version, 0x1b, 0x03, tableEncoding };
        bytes.AddRange(BitConverter.GetBytes(0));
        bytes.AddRange(BitConverter.GetBytes(count));
        foreach (int v in pairs)
            bytes.AddRange(BitConverter.GetBytes(v));
        bytes.AddRange(new byte[64]);   // room for the "FDEs" the table points at
        return bytes.ToArray();
    }

    [TestCase(99, -1)]
    [TestCase(100, 40)]
    [TestCase(150, 40)]
    [TestCase(200, 48)]
    [TestCase(299, 48)]
    [TestCase(300, 56)]
    [TestCase(1_000_000, 56)]
    public void HeaderBinarySearch_FindsGreatestStartNotAbovePc(int pcOffset, int expectedFde)
    {
        byte[] hdr = Header(1, 0x3b, 3, 100, 40, 200, 48, 300, 56);
        fixed (byte* p = hdr)
        {
            byte* fde = EhFrame.FindFdeInHeader(p, p, p + hdr.Length, (ulong)p + (ulong)pcOffset);
            Assert.That(fde == null ? -1 : (int)(fde - p), Is.EqualTo(expectedFde));
        }
    }

    [TestCase((byte)2, (byte)0x3b, 1u, TestName = "version 2")]
    [TestCase((byte)1, (byte)0x03, 1u, TestName = "absolute udata4 table")]
    [TestCase((byte)1, (byte)0x3b, 0u, TestName = "empty table")]
    [TestCase((byte)1, (byte)0x3b, 1000u, TestName = "table longer than the mapping")]
    public void UnusableHeaders_FindNothing(byte version, byte tableEncoding, uint count)
    {
        byte[] hdr = Header(version, tableEncoding, count, 0, 16);
        fixed (byte* p = hdr)
            Assert.That(EhFrame.FindFdeInHeader(p, p, p + hdr.Length, (ulong)p + 8) == null, Is.True);
    }

    // Every FDE listed in the hdr of a system library: it parses, its pc_begin matches the table,
    // TryFindFde finds it from its first and last byte, and the CFA program runs at its first,
    // middle and last byte. Almost every row must reduce to a Walk rule; the rest (PLT, signal
    // trampolines, hand-written assembly) are reported.
    [TestCase("libc.so.6", "qsort")]
    [TestCase("libstdc++.so.6", "_ZdlPv")]
    [TestCase("libm.so.6", "cos")]
    [TestCase("libunwind.so.8", "unw_backtrace")]
    public void EveryFdeOfASystemLibrary(string library, string symbol)
    {
        // All four ship with the machine image (libunwind8 is a dependency of the test setup).
        Assert.That(NativeLibrary.TryLoad(library, out nint handle), Is.True, library + " must be installed");
        void* address = (void*)NativeLibrary.GetExport(handle, symbol);
        Interop.DlFindObjectResult obj;
        Assert.That(Interop.Libc.DlFindObject(address, &obj), Is.EqualTo(0));
        byte* hdr = obj.EhFrameHdr;
        Assert.That(hdr != null && hdr[0] == 1 && hdr[1] == 0x1b && hdr[2] == 0x03 && hdr[3] == 0x3b, Is.True,
            "GNU ld's usual .eh_frame_hdr encodings");
        uint count = *(uint*)(hdr + 8);
        int* table = (int*)(hdr + 12);

        int rows = 0, walk = 0, outermost = 0, stop = 0, rowFailures = 0;
        for (uint i = 0; i < count; i++)
        {
            byte* record = hdr + table[2 * i + 1];
            Assert.That(EhFrame.TryParseFde(record, obj.MapStart, obj.MapEnd, out FdeInfo fde, out CieInfo cie), Is.True, $"FDE {i}");
            Assert.That(fde.PcBegin, Is.EqualTo((ulong)(hdr + table[2 * i])), $"FDE {i}");
            if (fde.PcEnd == fde.PcBegin)
                continue;
            foreach (ulong pc in new[] { fde.PcBegin, fde.PcBegin + (fde.PcEnd - fde.PcBegin) / 2, fde.PcEnd - 1 })
            {
                Assert.That(EhFrame.TryFindFde(pc, out FdeInfo found, out _), Is.True, $"FDE {i} at {pc:x}");
                Assert.That(found.PcBegin, Is.EqualTo(fde.PcBegin), $"FDE {i} at {pc:x}");
                rows++;
                if (!CfiInterpreter.TryComputeRow(in cie, in fde, pc, out CfiRow row))
                {
                    rowFailures++;
                    continue;
                }
                uint rule = UnwindRule.FromRow(in row, in cie);
                Assert.That(FastUnwinder.ResolveRule(pc), Is.EqualTo(rule));
                switch (rule & UnwindRule.KindMask)
                {
                    case UnwindRule.KindWalk: walk++; break;
                    case UnwindRule.KindOutermost: outermost++; break;
                    default: stop++; break;
                }
            }
        }
        TestContext.Out.WriteLine($"{library}: {count} FDEs, {rows} rows: walk {walk}, outermost {outermost}, stop {stop}, failed {rowFailures}");
        Assert.That(rowFailures, Is.Zero);
        Assert.That(walk, Is.GreaterThanOrEqualTo(rows * 99 / 100));
    }
}
