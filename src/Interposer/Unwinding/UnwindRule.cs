// The compact per-PC unwind rule: one 32-bit word that the walk decodes with shifts and masks,
// and that RuleCache stores next to a PC tag in a single 64-bit cache entry.
//
// LAYOUT (bit 0 = least significant)
//   bits  0-1   Kind: 0 = none (an empty cache slot), 1 = Walk, 2 = Outermost, 3 = Stop
//   bit   2     CFA base: 0 = rsp, 1 = rbp
//   bit   3     rbp saved (1: load it from CFA - 8*RbpSlot) or unchanged (0)
//   bits  4-7   RaSlot:  the return address is at CFA - 8*RaSlot, 1..15 (always 1 from GCC/clang)
//   bits  8-15  RbpSlot: rbp is at CFA - 8*RbpSlot, 1..255
//   bits 16-31  CFA offset / 8: CFA = base + 8*x, x in 0..65535 (frames up to 512 KiB)
//
// INVARIANTS
//  - A valid rule is never 0 (Kind is 1..3), so 0 can mean "not cached".
//  - Walk rules always describe an 8-byte-aligned CFA offset and 8-byte-aligned save slots below
//    the CFA; anything else (including saves above the CFA) is not representable and becomes Stop.
//    Compilers never emit such frames on x86-64; hand-written assembly might, and the walk then
//    stops at that frame instead of carrying a second, slower rule format on the hot path.
//  - Outermost = the return-address column is DW_CFA_undefined (_start, clone, clone3).
//  - Stop = no CFI for the PC, malformed CFI, a signal frame ('S' CIE: continuing would need the
//    whole ucontext), a CFA or RA/rbp rule we do not follow (expressions, registers), or
//    a rule that does not fit the layout above.

namespace Interposer.Unwinding;

internal static class UnwindRule
{
    internal const uint KindMask = 0x3;
    internal const uint KindWalk = 1, KindOutermost = 2, KindStop = 3;
    internal const uint CfaFromRbp = 1u << 2;
    internal const uint RbpSaved = 1u << 3;
    private const int RaSlotShift = 4, RbpSlotShift = 8, CfaOffsetShift = 16;
    private const long MaxRaSlot = 15, MaxRbpSlot = 255, MaxCfaUnits = 0xffff;

    internal const uint Outermost = KindOutermost;
    internal const uint Stop = KindStop;

    // Decoders used by the walk. The shifts fold "slot * 8" into the mask.
    internal static ulong CfaOffset(uint rule) => (ulong)(rule >> CfaOffsetShift) << 3;
    internal static ulong RaDistance(uint rule) => (rule >> (RaSlotShift - 3)) & (0xfu << 3);
    internal static ulong RbpDistance(uint rule) => (rule >> (RbpSlotShift - 3)) & (0xffu << 3);

    // Builds a Walk rule. Arguments are byte distances; they must be multiples of 8 within range.
    internal static uint MakeWalk(bool cfaFromRbp, long cfaOffset, long raDistance, long rbpDistance /* 0 = unchanged */)
    {
        return KindWalk
            | (cfaFromRbp ? CfaFromRbp : 0)
            | (rbpDistance != 0 ? RbpSaved : 0)
            | (uint)(raDistance / 8) << RaSlotShift
            | (uint)(rbpDistance / 8) << RbpSlotShift
            | (uint)(cfaOffset / 8) << CfaOffsetShift;
    }

    // Reduces a CFI row to a rule (see the layout invariants above).
    internal static uint FromRow(in CfiRow row, in CieInfo cie)
    {
        if (cie.IsSignalFrame || row.CfaIsExpression)
            return Stop;
        if (row.CfaRegister != CfiInterpreter.RegRsp && row.CfaRegister != CfiInterpreter.RegRbp)
            return Stop;
        if (row.RaRule == SavedRule.Undefined)
            return Outermost;
        if (row.RaRule != SavedRule.Offset)
            return Stop;
        if (row.CfaOffset < 0 || (row.CfaOffset & 7) != 0 || row.CfaOffset / 8 > MaxCfaUnits)
            return Stop;
        if (!IsSlot(-row.RaOffset, MaxRaSlot))
            return Stop;

        long rbpDistance = 0;
        switch (row.RbpRule)
        {
            case SavedRule.SameValue:
            case SavedRule.Undefined:   // no caller value to recover: keep the register as is
                break;
            case SavedRule.Offset:
                rbpDistance = -row.RbpOffset;
                if (!IsSlot(rbpDistance, MaxRbpSlot))
                    return Stop;
                break;
            default:
                return Stop;
        }
        return MakeWalk(row.CfaRegister == CfiInterpreter.RegRbp, row.CfaOffset, -row.RaOffset, rbpDistance);
    }

    private static bool IsSlot(long distance, long maxSlot)
        => distance > 0 && (distance & 7) == 0 && distance / 8 <= maxSlot;
}
