// CFA programs assembled by hand (EhFrameBuilder) and run through EhFrame.TryParseFde,
// CfiInterpreter.TryComputeRow and UnwindRule.FromRow: one behaviour per test, like the DWARF
// opcodes GCC and glibc's hand-written assembly actually emit.

using System;
using Interposer.Unwinding;
using NUnit.Framework;

namespace Interposer.Tests.Unwinding;

[TestFixture]
public unsafe class CfiInterpreterTests
{
    private const ulong Base = 0x10000;   // PcBegin of every synthetic FDE

    // CIE initial instructions as GCC emits them on x86-64: CFA = rsp+8, RA at CFA-8.
    private static readonly byte[] GccCie = { 0x0c, 0x07, 0x08, 0x90, 0x01 };

    // push rbp; mov rbp, rsp; ...; at +20 an epilogue (remember, pop rbp, ret), body again at +21.
    private static readonly byte[] PushMovRbp =
    {
        0x41, 0x0e, 0x10, 0x86, 0x02,     // +1: def_cfa_offset 16; rbp at CFA-16
        0x43, 0x0d, 0x06,                 // +4: def_cfa_register rbp
        0x50, 0x0a, 0xc6, 0x0c, 0x07, 0x08, // +20: remember_state; restore rbp; def_cfa rsp+8
        0x41, 0x0b,                       // +21: restore_state
    };

    [TestCase(0, false, 8, 0)]
    [TestCase(1, false, 16, 16)]
    [TestCase(3, false, 16, 16)]
    [TestCase(4, true, 16, 16)]
    [TestCase(19, true, 16, 16)]
    [TestCase(20, false, 8, 0)]
    [TestCase(21, true, 16, 16)]
    [TestCase(99, true, 16, 16)]
    public void FramePointerPrologue(int offset, bool fromRbp, int cfaOffset, int rbpDistance)
    {
        uint rule = RuleAt(GccCie, PushMovRbp, offset);
        Assert.That(rule, Is.EqualTo(UnwindRule.MakeWalk(fromRbp, cfaOffset, 8, rbpDistance)), Describe(rule));
    }

    [TestCase(4, 8)]
    [TestCase(5, 16)]
    [TestCase(260, 16)]
    [TestCase(261, 24)]
    [TestCase(65796, 24)]
    [TestCase(65797, 32)]
    public void AdvanceLoc1_2_4(int offset, int cfaOffset)
    {
        byte[] program =
        {
            0x02, 0x05, 0x0e, 0x10,                   // advance_loc1 5
            0x03, 0x00, 0x01, 0x0e, 0x18,             // advance_loc2 256
            0x04, 0x00, 0x00, 0x01, 0x00, 0x0e, 0x20, // advance_loc4 65536
        };
        Assert.That(RuleAt(GccCie, program, offset), Is.EqualTo(UnwindRule.MakeWalk(false, cfaOffset, 8, 0)));
    }

    [TestCase(3, 8)]
    [TestCase(4, 16)]
    public void CodeAlignmentFactorScalesAdvance(int offset, int cfaOffset)
    {
        byte[] program = { 0x41, 0x0e, 0x10 };   // advance 1 unit = 4 bytes
        Assert.That(RuleAt(GccCie, program, offset, codeAlign: 4), Is.EqualTo(UnwindRule.MakeWalk(false, cfaOffset, 8, 0)));
    }

    [Test]
    public void SetLoc()
    {
        byte[] program = [0x01, .. BitConverter.GetBytes(Base + 7), 0x0e, 0x10];   // set_loc Base+7
        Assert.That(RuleAt(GccCie, program, 6), Is.EqualTo(UnwindRule.MakeWalk(false, 8, 8, 0)));
        Assert.That(RuleAt(GccCie, program, 7), Is.EqualTo(UnwindRule.MakeWalk(false, 16, 8, 0)));
    }

    [Test]
    public void SignedFactoredForms()
    {
        byte[] program =
        {
            0x12, 0x06, 0x7e,   // def_cfa_sf rbp, -2 * -8 = 16
            0x11, 0x06, 0x02,   // offset_extended_sf rbp, 2 * -8 = -16
            0x13, 0x7d,         // def_cfa_offset_sf -3 * -8 = 24
        };
        Assert.That(RuleAt(GccCie, program, 0), Is.EqualTo(UnwindRule.MakeWalk(true, 24, 8, 16)));
    }

    [Test]
    public void OffsetExtendedAndRestoreExtended()
    {
        byte[] program =
        {
            0x05, 0x10, 0x02,   // offset_extended RA at 2 * -8 = -16
            0x05, 0x06, 0x03,   // offset_extended rbp at -24
            0x0e, 0x20,
            0x41, 0x06, 0x10,   // +1: restore_extended RA -> CIE's CFA-8
        };
        Assert.That(RuleAt(GccCie, program, 0), Is.EqualTo(UnwindRule.MakeWalk(false, 32, 16, 24)));
        Assert.That(RuleAt(GccCie, program, 1), Is.EqualTo(UnwindRule.MakeWalk(false, 32, 8, 24)));
    }

    [Test]
    public void NopsArgsSizeAndOtherRegistersAreIgnored()
    {
        byte[] program =
        {
            0x00, 0x2e, 0x10,   // nop; GNU_args_size 16
            0x83, 0x03,         // offset rbx
            0x09, 0x0c, 0x03,   // register r12 in rbx
            0x10, 0x0d, 0x01, 0x50, // expression r13
            0x0e, 0x30, 0x00, 0x00,
        };
        Assert.That(RuleAt(GccCie, program, 0), Is.EqualTo(UnwindRule.MakeWalk(false, 48, 8, 0)));
    }

    [Test]
    public void SameValueUndoesASave()
    {
        byte[] program = { 0x86, 0x02, 0x0e, 0x10, 0x41, 0x08, 0x06 };   // +1: same_value rbp
        Assert.That(RuleAt(GccCie, program, 0), Is.EqualTo(UnwindRule.MakeWalk(false, 16, 8, 16)));
        Assert.That(RuleAt(GccCie, program, 1), Is.EqualTo(UnwindRule.MakeWalk(false, 16, 8, 0)));
    }

    [Test]
    public void UndefinedReturnAddress_IsOutermost()
        => Assert.That(RuleAt(GccCie, new byte[] { 0x07, 0x10 }, 0), Is.EqualTo(UnwindRule.Outermost));

    [TestCase(new byte[] { 0x0f, 0x02, 0x77, 0x08 }, TestName = "def_cfa_expression (PLT entries)")]
    [TestCase(new byte[] { 0x10, 0x10, 0x01, 0x50 }, TestName = "expression for the RA")]
    [TestCase(new byte[] { 0x10, 0x06, 0x01, 0x50 }, TestName = "expression for rbp")]
    [TestCase(new byte[] { 0x09, 0x06, 0x03 }, TestName = "rbp kept in rbx")]
    [TestCase(new byte[] { 0x14, 0x10, 0x01 }, TestName = "val_offset for the RA")]
    [TestCase(new byte[] { 0x0c, 0x03, 0x08 }, TestName = "CFA based on rbx")]
    [TestCase(new byte[] { 0x2f, 0x06, 0x02 }, TestName = "rbp saved above the CFA")]
    [TestCase(new byte[] { 0x0e, 0x0c }, TestName = "CFA offset not a multiple of 8")]
    [TestCase(new byte[] { 0x0e, 0x88, 0x80, 0x20 }, TestName = "CFA offset above 512 KiB")]
    [TestCase(new byte[] { 0x86, 0x80, 0x02 }, TestName = "rbp slot 256")]
    [TestCase(new byte[] { 0x90, 0x10 }, TestName = "RA slot 16")]
    [TestCase(new byte[] { 0x08, 0x10 }, TestName = "RA same_value")]
    public void UnfollowableRules_Stop(byte[] program)
        => Assert.That(RuleAt(GccCie, program, 0), Is.EqualTo(UnwindRule.Stop));

    [TestCase(new byte[] { 0x0e, 0xf8, 0xff, 0x1f }, 0x7fff8, TestName = "largest CFA offset")]
    [TestCase(new byte[] { 0x86, 0xff, 0x01 }, 8, TestName = "rbp slot 255")]
    public void LargestEncodableRules_Walk(byte[] program, int cfaOffset)
    {
        uint rule = RuleAt(GccCie, program, 0);
        Assert.That(rule & UnwindRule.KindMask, Is.EqualTo(UnwindRule.KindWalk), Describe(rule));
        Assert.That(UnwindRule.CfaOffset(rule), Is.EqualTo((ulong)cfaOffset));
    }

    [Test]
    public void SignalFrameCie_Stops()
    {
        var b = new EhFrameBuilder();
        int cie = b.AddCie("zRS", new byte[] { EhFrame.PeAbsPtr }, GccCie);
        int fde = b.AddFde(cie, Base, 0x100, Array.Empty<byte>());
        Assert.That(b.Rule(fde, Base), Is.EqualTo(UnwindRule.Stop));
    }

    [Test]
    public void PersonalityAndLsdaAugmentation_AreSkipped()
    {
        var b = new EhFrameBuilder();
        // zPLR: personality = indirect|pcrel|sdata4 + 4 bytes, LSDA enc, FDE enc absptr.
        int cie = b.AddCie("zPLR", new byte[] { 0x9b, 1, 2, 3, 4, 0x1b, EhFrame.PeAbsPtr }, GccCie);
        int fde = b.AddFde(cie, Base, 0x40, new byte[] { 0x44, 0x0e, 0x10 }, fdeAugmentation: new byte[] { 9, 9, 9, 9 });
        Assert.That(b.Rule(fde, Base + 3), Is.EqualTo(UnwindRule.MakeWalk(false, 8, 8, 0)));
        Assert.That(b.Rule(fde, Base + 4), Is.EqualTo(UnwindRule.MakeWalk(false, 16, 8, 0)));
        fixed (byte* p = b.Bytes)
        {
            Assert.That(EhFrame.TryParseFde(p + fde, p, p + b.Bytes.Length, out FdeInfo info, out _), Is.True);
            Assert.That(info.PcBegin, Is.EqualTo(Base));
            Assert.That(info.PcEnd, Is.EqualTo(Base + 0x40));
        }
    }

    [TestCase(new byte[] { 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a }, TestName = "remember_state 9 deep")]
    [TestCase(new byte[] { 0x0b }, TestName = "restore_state with nothing remembered")]
    [TestCase(new byte[] { 0x05, 0x06 }, TestName = "truncated operand")]
    [TestCase(new byte[] { 0x0f, 0x7f, 0x00 }, TestName = "block longer than the record")]
    [TestCase(new byte[] { 0x1f }, TestName = "unknown opcode")]
    [TestCase(new byte[] { 0x2d }, TestName = "GNU_window_save")]
    public void MalformedPrograms_Fail(byte[] program)
    {
        var b = new EhFrameBuilder();
        int cie = b.AddCie("zR", new byte[] { EhFrame.PeAbsPtr }, GccCie);
        int fde = b.AddFde(cie, Base, 0x100, program);
        fixed (byte* p = b.Bytes)
        {
            Assert.That(EhFrame.TryParseFde(p + fde, p, p + b.Bytes.Length, out FdeInfo f, out CieInfo c), Is.True);
            Assert.That(CfiInterpreter.TryComputeRow(in c, in f, Base, out _), Is.False);
        }
    }

    [Test]
    public void RememberState_EightDeepIsAllowed()
    {
        byte[] program = { 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0e, 0x10, 0x0b, 0x0b };
        Assert.That(RuleAt(GccCie, program, 0), Is.EqualTo(UnwindRule.MakeWalk(false, 8, 8, 0)));
    }

    [Test]
    public void RecordPointingOutsideTheMapping_IsRejected()
    {
        var b = new EhFrameBuilder();
        int cie = b.AddCie("zR", new byte[] { EhFrame.PeAbsPtr }, GccCie);
        int fde = b.AddFde(cie, Base, 0x100, new byte[] { 0x00 });
        fixed (byte* p = b.Bytes)
        {
            // The mapping ends one byte before the FDE's end: its length field overruns it.
            Assert.That(EhFrame.TryParseFde(p + fde, p, p + b.Bytes.Length - 1, out _, out _), Is.False);
            // The CIE lies before the mapping's start.
            Assert.That(EhFrame.TryParseFde(p + fde, p + cie + 1, p + b.Bytes.Length, out _, out _), Is.False);
            // A CIE is not an FDE.
            Assert.That(EhFrame.TryParseFde(p + cie, p, p + b.Bytes.Length, out _, out _), Is.False);
        }
    }

    private static uint RuleAt(byte[] cieProgram, byte[] fdeProgram, int offset, ulong codeAlign = 1)
    {
        var b = new EhFrameBuilder();
        int cie = b.AddCie("zR", new byte[] { EhFrame.PeAbsPtr }, cieProgram, codeAlign);
        int fde = b.AddFde(cie, Base, 0x20000, fdeProgram);
        return b.Rule(fde, Base + (ulong)offset);
    }

    private static string Describe(uint rule)
        => $"rule 0x{rule:x8}: kind {rule & 3}, cfa {((rule & UnwindRule.CfaFromRbp) != 0 ? "rbp" : "rsp")}+{UnwindRule.CfaOffset(rule)}, "
         + $"ra CFA-{UnwindRule.RaDistance(rule)}, rbp {((rule & UnwindRule.RbpSaved) != 0 ? "CFA-" + UnwindRule.RbpDistance(rule) : "unchanged")}";
}
