// Assembles synthetic .eh_frame records (CIEs and FDEs, version 1, data alignment -8, RA column
// 16, pc_begin/pc_range as absolute pointers) into one byte array, as a linker lays them out.

using System;
using System.Collections.Generic;
using Interposer.Unwinding;

namespace Interposer.Tests.Unwinding;

internal sealed class EhFrameBuilder
{
    private readonly List<byte> _bytes = new();

    internal byte[] Bytes => _bytes.ToArray();

    // Returns the CIE's offset. augmentationData follows the 'z' length (e.g. the 'R' encoding).
    internal int AddCie(string augmentation, byte[] augmentationData, byte[] instructions, ulong codeAlign = 1)
    {
        var body = new List<byte>();
        body.AddRange(BitConverter.GetBytes(0u));   // CIE id
        body.Add(1);                                // version
        foreach (char c in augmentation)
            body.Add((byte)c);
        body.Add(0);
        AddULeb(body, codeAlign);
        body.Add(0x78);                             // data alignment factor: sleb128 -8
        body.Add(16);                               // return-address column
        if (augmentation.StartsWith('z'))
        {
            AddULeb(body, (ulong)augmentationData.Length);
            body.AddRange(augmentationData);
        }
        body.AddRange(instructions);
        return AddRecord(body);
    }

    // Returns the FDE's offset. The CIE must use an absptr FDE encoding.
    internal int AddFde(int cieOffset, ulong pcBegin, ulong pcRange, byte[] instructions, byte[]? fdeAugmentation = null)
    {
        int offset = _bytes.Count;
        var body = new List<byte>();
        body.AddRange(BitConverter.GetBytes((uint)(offset + 4 - cieOffset)));   // back to the CIE
        body.AddRange(BitConverter.GetBytes(pcBegin));
        body.AddRange(BitConverter.GetBytes(pcRange));
        fdeAugmentation ??= Array.Empty<byte>();
        AddULeb(body, (ulong)fdeAugmentation.Length);
        body.AddRange(fdeAugmentation);
        body.AddRange(instructions);
        return AddRecord(body);
    }

    // Parses the FDE at fdeOffset and reduces the row at pc to a rule, as a cache miss does.
    internal unsafe uint Rule(int fdeOffset, ulong pc)
    {
        byte[] bytes = Bytes;
        fixed (byte* p = bytes)
        {
            if (!EhFrame.TryParseFde(p + fdeOffset, p, p + bytes.Length, out FdeInfo fde, out CieInfo cie))
                throw new InvalidOperationException("synthetic FDE did not parse");
            if (!CfiInterpreter.TryComputeRow(in cie, in fde, pc, out CfiRow row))
                return UnwindRule.Stop;
            return UnwindRule.FromRow(in row, in cie);
        }
    }

    private int AddRecord(List<byte> body)
    {
        int offset = _bytes.Count;
        _bytes.AddRange(BitConverter.GetBytes((uint)body.Count));
        _bytes.AddRange(body);
        return offset;
    }

    internal static void AddULeb(List<byte> to, ulong value)
    {
        do
        {
            byte b = (byte)(value & 0x7f);
            value >>= 7;
            to.Add(value != 0 ? (byte)(b | 0x80) : b);
        } while (value != 0);
    }
}
