// DwarfCompDirs: the compilation directory of each DWARF 2-4 line table, from .debug_info. Those
// line tables name files relative to a directory they do not contain (DW_AT_comp_dir of the
// compilation unit whose DW_AT_stmt_list points at the table); addr2line joins the two, and so do
// we (DWARF 5 line tables carry it themselves, as directory 0). Only each unit's first DIE is read:
// its abbreviation, then its attributes, every other one skipped by form.
//
// Untrusted input, like the line tables: every read goes through LineReader (zeros and Failed past
// the end), a unit that fails or uses a form we do not know is skipped, and the next unit is found
// through its unit_length.

using System;
using System.Collections.Generic;
using System.Text;

namespace Interposer.Scanner.Symbols;

internal sealed partial class DwarfLineTable
{
    private const ulong AtStmtList = 0x10, AtCompDir = 0x1b;
    private const ulong FormAddr = 0x01, FormRefAddr = 0x10, FormRef1 = 0x11, FormRef2 = 0x12, FormRef4 = 0x13,
        FormRef8 = 0x14, FormRefUdata = 0x15, FormIndirect = 0x16, FormExprloc = 0x18, FormAddrx = 0x1b,
        FormRefSup4 = 0x1c, FormStrpSup = 0x1d, FormRefSig8 = 0x20, FormImplicitConst = 0x21, FormLoclistx = 0x22,
        FormRnglistx = 0x23, FormRefSup8 = 0x24, FormAddrx1 = 0x29, FormAddrx2 = 0x2a, FormAddrx3 = 0x2b,
        FormAddrx4 = 0x2c, FormGnuAddrIndex = 0x1f01, FormGnuStrIndex = 0x1f02, FormGnuRefAlt = 0x1f20,
        FormGnuStrpAlt = 0x1f21;

    /// <summary>True when some unit of this .debug_line is DWARF 2-4 (its paths may need a
    /// compilation directory from .debug_info).</summary>
    public static bool HasPreDwarf5Units(ReadOnlySpan<byte> debugLine)
    {
        int offset = 0;
        while (offset < debugLine.Length)
        {
            var r = new LineReader(debugLine, offset);
            if (!r.UnitLength(out ulong length, out _))
                return false;
            int headerAt = r.Position;
            ushort version = r.U16();
            if (!r.Failed && version is >= 2 and <= 4)
                return true;
            if (length > (ulong)(debugLine.Length - headerAt))
                return false;
            offset = headerAt + (int)length;
        }
        return false;
    }

    /// <summary>DW_AT_stmt_list -> DW_AT_comp_dir for every compilation unit that has both.
    /// Never throws; a unit it cannot read is left out.</summary>
    public static Dictionary<long, string> ReadCompDirs(ReadOnlySpan<byte> debugInfo, ReadOnlySpan<byte> debugAbbrev,
                                                        ReadOnlySpan<byte> debugStr, ReadOnlySpan<byte> debugLineStr)
    {
        var result = new Dictionary<long, string>();
        var attributes = new List<(ulong Attribute, ulong Form)>();
        int offset = 0;
        while (offset < debugInfo.Length)
        {
            var r = new LineReader(debugInfo, offset);
            if (!r.UnitLength(out ulong length, out int offsetSize) || length > (ulong)(debugInfo.Length - r.Position))
                break;
            int unitEnd = r.Position + (int)length;
            offset = unitEnd;
            var unit = new LineReader(debugInfo[..unitEnd], r.Position);
            if (ReadUnitDie(ref unit, offsetSize, debugAbbrev, debugStr, debugLineStr, attributes, out long stmtList, out string? compDir))
                result.TryAdd(stmtList, compDir!);
        }
        return result;
    }

    // The unit header, then its first DIE's stmt_list and comp_dir.
    private static bool ReadUnitDie(ref LineReader r, int offsetSize, ReadOnlySpan<byte> debugAbbrev, ReadOnlySpan<byte> debugStr,
                                    ReadOnlySpan<byte> debugLineStr, List<(ulong Attribute, ulong Form)> attributes,
                                    out long stmtList, out string? compDir)
    {
        stmtList = -1;
        compDir = null;
        ushort version = r.U16();
        ulong abbrevOffset;
        int addressSize;
        if (version == 5)
        {
            byte unitType = r.U8();
            addressSize = r.U8();
            abbrevOffset = r.Unsigned(offsetSize);
            if (unitType != 1 && unitType != 3) // DW_UT_compile, DW_UT_partial
                return false;
        }
        else if (version is >= 2 and <= 4)
        {
            abbrevOffset = r.Unsigned(offsetSize);
            addressSize = r.U8();
        }
        else
        {
            return false;
        }
        ulong code = r.Uleb();
        if (r.Failed || code == 0 || abbrevOffset >= (ulong)debugAbbrev.Length ||
            !FindAbbreviation(debugAbbrev, (int)abbrevOffset, code, attributes))
            return false;
        foreach (var (attribute, declared) in attributes)
        {
            ulong form = declared;
            if (form == FormIndirect)
                form = r.Uleb();
            if (attribute == AtStmtList && form is FormSecOffset or FormData4 or FormData8)
            {
                stmtList = (long)r.Unsigned(form == FormData4 ? 4 : form == FormData8 ? 8 : offsetSize);
            }
            else if (attribute == AtCompDir && form is FormString or FormStrp or FormLineStrp)
            {
                compDir = form == FormString
                    ? InPlaceString(ref r)
                    : StringAt(form == FormStrp ? debugStr : debugLineStr, r.Unsigned(offsetSize));
            }
            else if (!SkipValue(ref r, form, offsetSize, addressSize, version))
            {
                return false;
            }
            if (r.Failed)
                return false;
        }
        return stmtList >= 0 && !string.IsNullOrEmpty(compDir);
    }

    // The attribute list of abbreviation `code` in the table at offset.
    private static bool FindAbbreviation(ReadOnlySpan<byte> debugAbbrev, int offset, ulong code,
                                         List<(ulong Attribute, ulong Form)> attributes)
    {
        var r = new LineReader(debugAbbrev, offset);
        while (!r.Failed && r.Remaining > 0)
        {
            ulong entry = r.Uleb();
            if (entry == 0)
                return false;
            r.Uleb(); // tag
            r.U8();   // has_children
            attributes.Clear();
            while (!r.Failed)
            {
                ulong attribute = r.Uleb(), form = r.Uleb();
                if (attribute == 0 && form == 0)
                    break;
                if (form == FormImplicitConst)
                    r.Sleb();
                attributes.Add((attribute, form));
            }
            if (entry == code)
                return !r.Failed;
        }
        return false;
    }

    // Skips one attribute value; false for a form this reader does not know (the unit is skipped).
    private static bool SkipValue(ref LineReader r, ulong form, int offsetSize, int addressSize, int version)
    {
        switch (form)
        {
            case FormAddr: r.Skip((ulong)addressSize); break;
            case FormData1 or FormFlag or FormRef1 or FormStrx1 or FormAddrx1: r.Skip(1); break;
            case FormData2 or FormRef2 or FormStrx2 or FormAddrx2: r.Skip(2); break;
            case FormStrx3 or FormAddrx3: r.Skip(3); break;
            case FormData4 or FormRef4 or FormRefSup4 or FormStrx4 or FormAddrx4: r.Skip(4); break;
            case FormData8 or FormRef8 or FormRefSig8 or FormRefSup8: r.Skip(8); break;
            case FormData16: r.Skip(16); break;
            case FormSdata: r.Sleb(); break;
            case FormUdata or FormRefUdata or FormStrx or FormAddrx or FormLoclistx or FormRnglistx
                or FormGnuAddrIndex or FormGnuStrIndex: r.Uleb(); break;
            case FormString: InPlaceString(ref r); break;
            case FormStrp or FormLineStrp or FormSecOffset or FormStrpSup or FormGnuRefAlt or FormGnuStrpAlt:
                r.Skip((ulong)offsetSize); break;
            case FormRefAddr: r.Skip((ulong)(version == 2 ? addressSize : offsetSize)); break;
            case FormBlock or FormExprloc: r.Skip(r.Uleb()); break;
            case FormBlock1: r.Skip(r.U8()); break;
            case FormBlock2: r.Skip(r.Unsigned(2)); break;
            case FormBlock4: r.Skip(r.Unsigned(4)); break;
            case FormFlagPresent or FormImplicitConst: break;
            default: return false;
        }
        return true;
    }

    private static string? InPlaceString(ref LineReader r)
    {
        StringRef text = r.CString();
        return r.Failed ? null : Encoding.UTF8.GetString(r.Bytes(text));
    }

    private static string? StringAt(ReadOnlySpan<byte> section, ulong offset)
    {
        if (offset >= (ulong)section.Length)
            return null;
        var rest = section[(int)offset..];
        int length = rest.IndexOf((byte)0);
        return length < 0 ? null : Encoding.UTF8.GetString(rest[..length]);
    }
}
