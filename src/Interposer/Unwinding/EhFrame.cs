// .eh_frame / .eh_frame_hdr reader: from a PC to its FDE and CIE (the cache-miss path).
//
// Lookup: _dl_find_object(pc) gives the loaded object's mapping and its PT_GNU_EH_FRAME segment,
// which is .eh_frame_hdr: version 1, three pointer encodings, a pointer to .eh_frame, an FDE
// count and a table of (initial location, FDE address) pairs sorted by initial location. We
// binary-search that table, then parse the FDE and the CIE it points to. The layouts are the
// LSB's "Exception Frames" chapter (refspecs.linuxfoundation.org, LSB Core, ch. 10.6).
//
// INVARIANTS
//  - No allocation and no locks: every result is a struct the caller owns; scratch is the stack.
//  - Every record read is bounded by its own length field and by the object's mapping
//    [MapStart, MapEnd) from _dl_find_object, which is mapped and readable, so malformed or
//    foreign data makes a lookup fail (the walk stops) instead of faulting.
//  - Supported table encoding: only DW_EH_PE_datarel|sdata4 (0x3b), the one GNU ld, gold, lld and
//    mold all emit. An object without a hdr table (fde_count omitted) has "no CFI" for us: we do
//    not fall back to a linear scan of .eh_frame, which would be unbounded work inside malloc.
//  - Pointer encodings: absptr, uleb128, udata2/4/8, sleb128, sdata2/4/8, applied as absolute,
//    pcrel or datarel (datarel only where the base is known: the hdr). textrel, funcrel, aligned
//    and indirect fail the lookup, except that an indirect personality pointer is only skipped.

using System.Runtime.CompilerServices;

namespace Interposer.Unwinding;

// A parsed CIE: the parts the CFA program needs. Pointers are into the object's .eh_frame.
internal unsafe struct CieInfo
{
    internal ulong CodeAlign;          // multiplies advance_loc deltas
    internal long DataAlign;           // multiplies offset operands
    internal ulong RaColumn;           // return-address column; 16 on x86-64
    internal byte FdeEncoding;         // DW_EH_PE_* of an FDE's pc_begin/pc_range ('R'), else absptr
    internal bool HasAugmentationData; // 'z': each FDE carries an augmentation-length prefix
    internal bool IsSignalFrame;       // 'S': the frame is a signal trampoline
    internal byte* Instructions;       // initial instructions, up to End
    internal byte* End;
}

// A parsed FDE: the address range it covers and its CFA program.
internal unsafe struct FdeInfo
{
    internal ulong PcBegin;            // first covered address
    internal ulong PcEnd;              // one past the last covered address
    internal byte* Instructions;
    internal byte* End;
}

internal static unsafe class EhFrame
{
    // DW_EH_PE_* pointer encodings: low nibble = format, bits 4-6 = application, bit 7 = indirect.
    internal const byte PeAbsPtr = 0x00, PeULeb128 = 0x01, PeUData2 = 0x02, PeUData4 = 0x03, PeUData8 = 0x04;
    internal const byte PeSLeb128 = 0x09, PeSData2 = 0x0a, PeSData4 = 0x0b, PeSData8 = 0x0c;
    internal const byte PePcRel = 0x10, PeDataRel = 0x30, PeIndirect = 0x80, PeOmit = 0xff;
    private const byte PeFormatMask = 0x0f, PeApplicationMask = 0x70;

    // Finds the FDE covering pc in a loaded object. False when pc is in no object, the object has
    // no .eh_frame_hdr, no FDE covers pc, or the data is malformed/unsupported.
    [SkipLocalsInit]
    internal static bool TryFindFde(ulong pc, out FdeInfo fde, out CieInfo cie)
    {
        fde = default;
        cie = default;
        Interop.DlFindObjectResult obj;
        if (Interop.Libc.DlFindObject((void*)pc, &obj) != 0 || obj.EhFrameHdr == null)
            return false;
        byte* record = FindFdeInHeader(obj.EhFrameHdr, obj.MapStart, obj.MapEnd, pc);
        return record != null
            && TryParseFde(record, obj.MapStart, obj.MapEnd, out fde, out cie)
            && pc >= fde.PcBegin && pc < fde.PcEnd;
    }

    // Binary search of the .eh_frame_hdr table: the FDE with the greatest initial location <= pc,
    // or null. The caller still checks pc against the FDE's range (gaps between functions exist).
    internal static byte* FindFdeInHeader(byte* hdr, byte* mapStart, byte* mapEnd, ulong pc)
    {
        if (hdr + 4 > mapEnd || hdr[0] != 1)
            return null;
        byte framePtrEncoding = hdr[1], countEncoding = hdr[2], tableEncoding = hdr[3];
        byte* p = hdr + 4;
        if (framePtrEncoding == PeOmit || countEncoding == PeOmit || tableEncoding != (PeDataRel | PeSData4))
            return null;
        if (!TryReadEncoded(ref p, mapEnd, framePtrEncoding, (ulong)hdr, out _)
            || !TryReadEncoded(ref p, mapEnd, countEncoding, (ulong)hdr, out ulong count))
            return null;
        int* table = (int*)p;   // count pairs of int32 (initial location, FDE), relative to hdr
        if (count == 0 || count > (ulong)(mapEnd - p) / 8)
            return null;

        long target = (long)(pc - (ulong)hdr);
        ulong lo = 0, hi = count;   // invariant: answer index is in [lo, hi) if it exists
        while (hi - lo > 1)
        {
            ulong mid = lo + (hi - lo) / 2;
            if (Unsafe.ReadUnaligned<int>(table + 2 * mid) <= target)
                lo = mid;
            else
                hi = mid;
        }
        if (Unsafe.ReadUnaligned<int>(table + 2 * lo) > target)
            return null;
        byte* fde = hdr + Unsafe.ReadUnaligned<int>(table + 2 * lo + 1);
        return fde >= mapStart && fde + 8 <= mapEnd ? fde : null;
    }

    // Parses the FDE at `record` and the CIE it refers to.
    internal static bool TryParseFde(byte* record, byte* mapStart, byte* mapEnd, out FdeInfo fde, out CieInfo cie)
    {
        fde = default;
        cie = default;
        if (!TryReadRecordHeader(record, mapEnd, out byte* p, out byte* end))
            return false;
        byte* idField = p;
        uint cieDelta = Unsafe.ReadUnaligned<uint>(p);   // distance back from this field to the CIE
        p += 4;
        if (cieDelta == 0)
            return false;   // this is a CIE, not an FDE
        byte* ciePtr = idField - cieDelta;
        if (ciePtr < mapStart || ciePtr >= mapEnd || !TryParseCie(ciePtr, mapEnd, out cie))
            return false;
        if ((cie.FdeEncoding & PeIndirect) != 0
            || !TryReadEncoded(ref p, end, cie.FdeEncoding, 0, out ulong pcBegin)
            || !TryReadEncoded(ref p, end, (byte)(cie.FdeEncoding & PeFormatMask), 0, out ulong pcRange))
            return false;
        if (cie.HasAugmentationData)
        {
            if (!TryReadULeb(ref p, end, out ulong augmentationLength) || augmentationLength > (ulong)(end - p))
                return false;
            p += augmentationLength;   // LSDA pointer: the unwinder does not need it
        }
        fde.PcBegin = pcBegin;
        fde.PcEnd = pcBegin + pcRange;
        fde.Instructions = p;
        fde.End = end;
        return true;
    }

    // Parses a CIE. Versions 1 and 3 are what .eh_frame uses; 4 is accepted for completeness.
    internal static bool TryParseCie(byte* record, byte* mapEnd, out CieInfo cie)
    {
        cie = default;
        if (!TryReadRecordHeader(record, mapEnd, out byte* p, out byte* end) || end - p < 4)
            return false;
        if (Unsafe.ReadUnaligned<uint>(p) != 0)
            return false;   // CIE id is 0 in .eh_frame
        p += 4;
        if (p >= end)
            return false;
        byte version = *p++;
        if (version != 1 && version != 3 && version != 4)
            return false;
        byte* augmentation = p;
        while (p < end && *p != 0)
            p++;
        if (p >= end)
            return false;
        p++;   // the NUL
        if (version == 4)
            p += 2;   // address_size, segment_selector_size
        if (!TryReadULeb(ref p, end, out cie.CodeAlign) || !TryReadSLeb(ref p, end, out cie.DataAlign))
            return false;
        if (version == 1)
        {
            if (p >= end)
                return false;
            cie.RaColumn = *p++;
        }
        else if (!TryReadULeb(ref p, end, out cie.RaColumn))
            return false;

        cie.FdeEncoding = PeAbsPtr;
        if (*augmentation == 'z')
        {
            if (!TryReadULeb(ref p, end, out ulong length) || length > (ulong)(end - p))
                return false;
            byte* dataEnd = p + length;
            cie.HasAugmentationData = true;
            for (byte* a = augmentation + 1; *a != 0; a++)
            {
                switch (*a)
                {
                    case (byte)'R':
                        if (p >= dataEnd) return false;
                        cie.FdeEncoding = *p++;
                        break;
                    case (byte)'L':
                        if (p >= dataEnd) return false;
                        p++;   // LSDA encoding
                        break;
                    case (byte)'P':
                        // Personality routine: skip it. Its value is never dereferenced.
                        if (p >= dataEnd) return false;
                        byte encoding = *p++;
                        if (!TryReadEncoded(ref p, dataEnd, (byte)(encoding & ~PeIndirect), 0, out _))
                            return false;
                        break;
                    case (byte)'S':
                        cie.IsSignalFrame = true;
                        break;
                    case (byte)'B':   // AArch64 BTI / MTE markers: no data
                    case (byte)'G':
                        break;
                    default:
                        return false;   // unknown letter: later letters' data cannot be located
                }
            }
            p = dataEnd;
        }
        else if (*augmentation != 0)
        {
            return false;   // pre-'z' GCC augmentations ("eh") are not produced any more
        }
        cie.Instructions = p;
        cie.End = end;
        return true;
    }

    // Reads a CIE/FDE length (32-bit, or 0xffffffff + 64-bit) and bounds the record by mapEnd.
    // On success p points at the CIE id / CIE pointer field and end one past the record.
    private static bool TryReadRecordHeader(byte* record, byte* mapEnd, out byte* p, out byte* end)
    {
        p = record;
        end = null;
        if (record + 4 > mapEnd)
            return false;
        ulong length = Unsafe.ReadUnaligned<uint>(p);
        p += 4;
        if (length == 0xffffffff)
        {
            if (p + 8 > mapEnd)
                return false;
            length = Unsafe.ReadUnaligned<ulong>(p);
            p += 8;
        }
        if (length < 4 || length > (ulong)(mapEnd - p))
            return false;   // 0 is the .eh_frame terminator
        end = p + length;
        return true;
    }

    // Reads one DW_EH_PE-encoded value at p (advancing p) without reading at or past end.
    // dataBase is the base for datarel, or 0 if unknown (datarel then fails).
    internal static bool TryReadEncoded(ref byte* p, byte* end, byte encoding, ulong dataBase, out ulong value)
    {
        value = 0;
        if (encoding == PeOmit || (encoding & PeIndirect) != 0)
            return false;
        byte* field = p;
        long available = end - p;
        switch (encoding & PeFormatMask)
        {
            case PeAbsPtr:
            case PeUData8:
            case PeSData8:
                if (available < 8) return false;
                value = Unsafe.ReadUnaligned<ulong>(p);
                p += 8;
                break;
            case PeUData4:
                if (available < 4) return false;
                value = Unsafe.ReadUnaligned<uint>(p);
                p += 4;
                break;
            case PeSData4:
                if (available < 4) return false;
                value = (ulong)(long)Unsafe.ReadUnaligned<int>(p);
                p += 4;
                break;
            case PeUData2:
                if (available < 2) return false;
                value = Unsafe.ReadUnaligned<ushort>(p);
                p += 2;
                break;
            case PeSData2:
                if (available < 2) return false;
                value = (ulong)(long)Unsafe.ReadUnaligned<short>(p);
                p += 2;
                break;
            case PeULeb128:
                if (!TryReadULeb(ref p, end, out value)) return false;
                break;
            case PeSLeb128:
                if (!TryReadSLeb(ref p, end, out long signed)) return false;
                value = (ulong)signed;
                break;
            default:
                return false;
        }
        switch (encoding & PeApplicationMask)
        {
            case 0:
                return true;
            case PePcRel:
                value += (ulong)field;
                return true;
            case PeDataRel:
                value += dataBase;
                return dataBase != 0;
            default:
                return false;   // textrel, funcrel, aligned: never emitted on x86-64 Linux
        }
    }

    // Unsigned LEB128. Bits beyond 64 are dropped; a value running into `end` fails.
    internal static bool TryReadULeb(ref byte* p, byte* end, out ulong value)
    {
        value = 0;
        int shift = 0;
        while (p < end)
        {
            byte b = *p++;
            if (shift < 64)
                value |= (ulong)(b & 0x7f) << shift;
            shift += 7;
            if ((b & 0x80) == 0)
                return true;
        }
        return false;
    }

    // Signed LEB128, sign-extended from the last byte read.
    internal static bool TryReadSLeb(ref byte* p, byte* end, out long value)
    {
        value = 0;
        int shift = 0;
        while (p < end)
        {
            byte b = *p++;
            if (shift < 64)
                value |= (long)(b & 0x7f) << shift;
            shift += 7;
            if ((b & 0x80) == 0)
            {
                if (shift < 64 && (b & 0x40) != 0)
                    value |= -1L << shift;
                return true;
            }
        }
        return false;
    }
}
