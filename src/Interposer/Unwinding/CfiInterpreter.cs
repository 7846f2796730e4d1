// DWARF call-frame-information interpreter (DWARF 5, section 6.4.2): runs a CIE's initial
// instructions and then an FDE's instructions up to a target PC and reports the row in effect
// there, reduced to what an x86-64 frame walk needs: the CFA rule and where rbp (DWARF 6) and
// the return address (the CIE's RA column, 16) are saved.
//
// INVARIANTS
//  - Allocation-free: the remember_state stack is a fixed stackalloc of MaxRememberDepth rows.
//  - Bounded: every operand read stops at the record's end; malformed input, an unknown opcode or
//    a remember_state overflow makes TryComputeRow return false (the walk then stops there).
//  - Rules for registers other than rbp and the RA column are parsed and dropped: a walk that
//    only follows rsp/rbp/rip never needs them. rsp itself is always the CFA on x86-64.
//  - Anything whose value needs a DWARF expression or another register's value (def_cfa_expression
//    in PLT entries and signal trampolines, expression/val_* rules, "register") is reported as
//    such and becomes an "unsupported" rule in UnwindRule.FromRow: we stop rather than guess.

using System.Runtime.CompilerServices;

namespace Interposer.Unwinding;

// How a callee-saved register is recovered in the caller.
internal enum SavedRule : byte
{
    SameValue = 0,   // not modified by this frame (also DWARF's default for callee-saved registers)
    Undefined,       // no value; for the RA column this marks the outermost frame
    Offset,          // saved in memory at CFA + offset
    Unsupported,     // register, expression, val_offset or val_expression: not followed
}

// One row of the CFI table, limited to the columns the walk uses.
internal struct CfiRow
{
    internal ulong CfaRegister;      // DWARF register the CFA is based on (7 = rsp, 6 = rbp)
    internal long CfaOffset;         // CFA = CfaRegister + CfaOffset
    internal bool CfaIsExpression;   // CFA given by a DWARF expression: not followed
    internal SavedRule RbpRule;
    internal long RbpOffset;         // when RbpRule == Offset: rbp saved at CFA + RbpOffset
    internal SavedRule RaRule;
    internal long RaOffset;          // when RaRule == Offset: RA saved at CFA + RaOffset
}

internal static unsafe class CfiInterpreter
{
    internal const ulong RegRbp = 6, RegRsp = 7;
    private const ulong NoRegister = ulong.MaxValue;

    // glibc's and libgcc's CFI never nests remember_state more than 2 deep; libgcc itself allows
    // an unbounded linked list. 8 rows of stack (8 x 48 bytes) keep the miss path's frame small.
    internal const int MaxRememberDepth = 8;

    // Primary opcodes (top two bits) and extended opcodes (top bits 0).
    private const byte OpAdvanceLoc = 0x40, OpOffset = 0x80, OpRestore = 0xc0;
    private const byte OpNop = 0x00, OpSetLoc = 0x01, OpAdvanceLoc1 = 0x02, OpAdvanceLoc2 = 0x03;
    private const byte OpAdvanceLoc4 = 0x04, OpOffsetExtended = 0x05, OpRestoreExtended = 0x06;
    private const byte OpUndefined = 0x07, OpSameValue = 0x08, OpRegister = 0x09;
    private const byte OpRememberState = 0x0a, OpRestoreState = 0x0b, OpDefCfa = 0x0c;
    private const byte OpDefCfaRegister = 0x0d, OpDefCfaOffset = 0x0e, OpDefCfaExpression = 0x0f;
    private const byte OpExpression = 0x10, OpOffsetExtendedSf = 0x11, OpDefCfaSf = 0x12;
    private const byte OpDefCfaOffsetSf = 0x13, OpValOffset = 0x14, OpValOffsetSf = 0x15;
    private const byte OpValExpression = 0x16, OpGnuArgsSize = 0x2e, OpGnuNegativeOffsetExtended = 0x2f;

    // Computes the row in effect at targetPc (which must lie in [fde.PcBegin, fde.PcEnd)).
    [SkipLocalsInit]
    internal static bool TryComputeRow(in CieInfo cie, in FdeInfo fde, ulong targetPc, out CfiRow row)
    {
        row = default;
        row.CfaRegister = NoRegister;
        CfiRow* stack = stackalloc CfiRow[MaxRememberDepth];
        int depth = 0;

        // The CIE's initial instructions describe the state at PcBegin; advance ops there are
        // meaningless, so they run with an unreachable target and restore has nothing to restore to.
        ulong loc = fde.PcBegin;
        CfiRow empty = row;
        if (!Execute(cie.Instructions, cie.End, in cie, ref loc, ulong.MaxValue, ref row, in empty, stack, ref depth))
            return false;

        CfiRow initial = row;   // DW_CFA_restore returns a column to this
        loc = fde.PcBegin;
        depth = 0;
        return Execute(fde.Instructions, fde.End, in cie, ref loc, targetPc, ref row, in initial, stack, ref depth);
    }

    // Runs instructions in [p, end) while the current location is <= target. Returns true when the
    // program ends or advances past target (row then holds the answer), false on bad input.
    private static bool Execute(byte* p, byte* end, in CieInfo cie, ref ulong loc, ulong target,
        ref CfiRow row, in CfiRow initial, CfiRow* stack, ref int depth)
    {
        while (p < end)
        {
            byte op = *p++;
            ulong reg, uoperand;
            long soperand;
            switch (op & 0xc0)
            {
                case OpAdvanceLoc:
                    loc += (ulong)(op & 0x3f) * cie.CodeAlign;
                    if (target < loc) return true;
                    continue;
                case OpOffset:
                    if (!EhFrame.TryReadULeb(ref p, end, out uoperand)) return false;
                    SetRule(ref row, in cie, (ulong)(op & 0x3f), SavedRule.Offset, (long)uoperand * cie.DataAlign);
                    continue;
                case OpRestore:
                    Restore(ref row, in initial, in cie, (ulong)(op & 0x3f));
                    continue;
            }

            switch (op)
            {
                case OpNop:
                    break;
                case OpSetLoc:
                    if (!EhFrame.TryReadEncoded(ref p, end, cie.FdeEncoding, 0, out loc)) return false;
                    if (target < loc) return true;
                    break;
                case OpAdvanceLoc1:
                    if (end - p < 1) return false;
                    loc += *p++ * cie.CodeAlign;
                    if (target < loc) return true;
                    break;
                case OpAdvanceLoc2:
                    if (end - p < 2) return false;
                    loc += Unsafe.ReadUnaligned<ushort>(p) * cie.CodeAlign;
                    p += 2;
                    if (target < loc) return true;
                    break;
                case OpAdvanceLoc4:
                    if (end - p < 4) return false;
                    loc += Unsafe.ReadUnaligned<uint>(p) * cie.CodeAlign;
                    p += 4;
                    if (target < loc) return true;
                    break;
                case OpOffsetExtended:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg) || !EhFrame.TryReadULeb(ref p, end, out uoperand)) return false;
                    SetRule(ref row, in cie, reg, SavedRule.Offset, (long)uoperand * cie.DataAlign);
                    break;
                case OpOffsetExtendedSf:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg) || !EhFrame.TryReadSLeb(ref p, end, out soperand)) return false;
                    SetRule(ref row, in cie, reg, SavedRule.Offset, soperand * cie.DataAlign);
                    break;
                case OpGnuNegativeOffsetExtended:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg) || !EhFrame.TryReadULeb(ref p, end, out uoperand)) return false;
                    SetRule(ref row, in cie, reg, SavedRule.Offset, -(long)uoperand * cie.DataAlign);
                    break;
                case OpRestoreExtended:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg)) return false;
                    Restore(ref row, in initial, in cie, reg);
                    break;
                case OpUndefined:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg)) return false;
                    SetRule(ref row, in cie, reg, SavedRule.Undefined, 0);
                    break;
                case OpSameValue:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg)) return false;
                    SetRule(ref row, in cie, reg, SavedRule.SameValue, 0);
                    break;
                case OpRegister:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg) || !EhFrame.TryReadULeb(ref p, end, out _)) return false;
                    SetRule(ref row, in cie, reg, SavedRule.Unsupported, 0);
                    break;
                case OpValOffset:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg) || !EhFrame.TryReadULeb(ref p, end, out _)) return false;
                    SetRule(ref row, in cie, reg, SavedRule.Unsupported, 0);
                    break;
                case OpValOffsetSf:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg) || !EhFrame.TryReadSLeb(ref p, end, out _)) return false;
                    SetRule(ref row, in cie, reg, SavedRule.Unsupported, 0);
                    break;
                case OpExpression:
                case OpValExpression:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg) || !SkipBlock(ref p, end)) return false;
                    SetRule(ref row, in cie, reg, SavedRule.Unsupported, 0);
                    break;
                case OpRememberState:
                    if (depth == MaxRememberDepth) return false;
                    stack[depth++] = row;
                    break;
                case OpRestoreState:
                    // Restores register rules and the CFA rule together (DWARF 5; GCC does the same).
                    if (depth == 0) return false;
                    row = stack[--depth];
                    break;
                case OpDefCfa:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg) || !EhFrame.TryReadULeb(ref p, end, out uoperand)) return false;
                    row.CfaRegister = reg;
                    row.CfaOffset = (long)uoperand;
                    row.CfaIsExpression = false;
                    break;
                case OpDefCfaSf:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg) || !EhFrame.TryReadSLeb(ref p, end, out soperand)) return false;
                    row.CfaRegister = reg;
                    row.CfaOffset = soperand * cie.DataAlign;
                    row.CfaIsExpression = false;
                    break;
                case OpDefCfaRegister:
                    if (!EhFrame.TryReadULeb(ref p, end, out reg)) return false;
                    row.CfaRegister = reg;
                    row.CfaIsExpression = false;
                    break;
                case OpDefCfaOffset:
                    if (!EhFrame.TryReadULeb(ref p, end, out uoperand)) return false;
                    row.CfaOffset = (long)uoperand;
                    break;
                case OpDefCfaOffsetSf:
                    if (!EhFrame.TryReadSLeb(ref p, end, out soperand)) return false;
                    row.CfaOffset = soperand * cie.DataAlign;
                    break;
                case OpDefCfaExpression:
                    if (!SkipBlock(ref p, end)) return false;
                    row.CfaIsExpression = true;
                    break;
                case OpGnuArgsSize:
                    if (!EhFrame.TryReadULeb(ref p, end, out _)) return false;   // only matters for landing pads
                    break;
                default:
                    return false;   // DW_CFA_lo_user range, GNU_window_save (SPARC), garbage
            }
        }
        return true;
    }

    // Records a register rule if the register is one the walk follows.
    private static void SetRule(ref CfiRow row, in CieInfo cie, ulong reg, SavedRule rule, long offset)
    {
        if (reg == cie.RaColumn)
        {
            row.RaRule = rule;
            row.RaOffset = offset;
        }
        else if (reg == RegRbp)
        {
            row.RbpRule = rule;
            row.RbpOffset = offset;
        }
    }

    // DW_CFA_restore: the column goes back to its rule after the CIE's initial instructions.
    private static void Restore(ref CfiRow row, in CfiRow initial, in CieInfo cie, ulong reg)
    {
        if (reg == cie.RaColumn)
        {
            row.RaRule = initial.RaRule;
            row.RaOffset = initial.RaOffset;
        }
        else if (reg == RegRbp)
        {
            row.RbpRule = initial.RbpRule;
            row.RbpOffset = initial.RbpOffset;
        }
    }

    // Skips a DW_FORM_block operand: ULEB128 length, then that many bytes.
    private static bool SkipBlock(ref byte* p, byte* end)
    {
        if (!EhFrame.TryReadULeb(ref p, end, out ulong length) || length > (ulong)(end - p))
            return false;
        p += length;
        return true;
    }
}
