// FrameInfo: one symbolized return address and its kmemleak-style text form, the line a leak
// report prints under "backtrace:".

using System.Globalization;

namespace Interposer.Scanner.Symbols;

/// <param name="Address">The raw address as captured.</param>
/// <param name="Function">Enclosing function symbol, or null when no symbol covers the address.</param>
/// <param name="FunctionOffset">Address minus the function's start; 0 without a function.</param>
/// <param name="ModulePath">Path of the containing mapping as /proc/self/maps prints it, or null.</param>
/// <param name="ModuleOffset">The address as an ELF virtual address of the module (what
/// `addr2line -e module` takes), or address − module base when the ELF could not be read.</param>
/// <param name="File">Source file of the call (DWARF line table), or null without debug info.</param>
/// <param name="Line">Its line; 0 with File null.</param>
internal readonly record struct FrameInfo(
    ulong Address, string? Function, ulong FunctionOffset, string? ModulePath, ulong ModuleOffset,
    string? File = null, int Line = 0)
{
    /// <summary>
    /// "[&lt;0x55d1c0a01234&gt;] make_leak_a+0x24 (/path/prog) /src/leak.c:12" with a symbol and
    /// a line table (the line is the call's: the return address minus one, as addr2line is asked),
    /// "[&lt;0x55d1c0a01234&gt;] make_leak_a+0x24 (/path/prog)" with a symbol,
    /// "[&lt;0x7f3a12345678&gt;] ?? (/path/libfoo.so+0x1a2b)" with a module only,
    /// "[&lt;0x1234&gt;] ??" with neither. The address is always printed so a report stays useful
    /// when symbols are missing.
    /// </summary>
    public string Format()
    {
        var c = CultureInfo.InvariantCulture;
        string where = File is not null ? string.Create(c, $" {File}:{Line}") : "";
        if (Function is not null)
            return string.Create(c, $"[<0x{Address:x}>] {Function}+0x{FunctionOffset:x} ({ModulePath ?? "??"}){where}");
        if (ModulePath is not null)
            return string.Create(c, $"[<0x{Address:x}>] ?? ({ModulePath}+0x{ModuleOffset:x}){where}");
        return string.Create(c, $"[<0x{Address:x}>] ??");
    }

    public override string ToString() => Format();

    /// <summary>The frame for an address outside every known module.</summary>
    public static FrameInfo Unknown(ulong address) => new(address, null, 0, null, 0);
}
