// FunctionTable: the function symbols of one ELF image, sorted by address once, looked up by
// binary search. Addresses are ELF virtual addresses (st_value), not runtime addresses.
//
// Aliases share an address (glibc: getpid, __getpid, __GI___getpid); one name is kept per
// address, chosen by Preferred() so reports read like the source the user wrote.

using System;
using System.Collections.Generic;

namespace Interposer.Scanner.Symbols;

internal sealed class FunctionTable
{
    public static readonly FunctionTable Empty = new(Array.Empty<Entry>());

    // Sorted by Start, one entry per distinct Start.
    private readonly Entry[] _entries;

    private FunctionTable(Entry[] entries) => _entries = entries;

    public int Count => _entries.Length;

    /// <summary>A function symbol: [Start, Start + Size). Size 0 means "unknown extent": it then
    /// reaches to the next symbol, but never past SectionEnd (the end of its section), so the PLT
    /// after a size-less _init is not named "_init+0x40".</summary>
    internal readonly record struct Entry(ulong Start, ulong Size, string Name, bool IsLocal, ulong SectionEnd);

    /// <summary>Builds the table from defined STT_FUNC / STT_GNU_IFUNC symbols; the list is consumed.</summary>
    public static FunctionTable Build(List<Entry> symbols)
    {
        if (symbols.Count == 0)
            return Empty;
        symbols.Sort(static (a, b) => a.Start != b.Start ? a.Start.CompareTo(b.Start) : Preferred(a, b));

        var entries = new List<Entry>(symbols.Count);
        foreach (var symbol in symbols)
        {
            // After the sort the first entry of each address is the preferred alias.
            if (entries.Count == 0 || entries[^1].Start != symbol.Start)
                entries.Add(symbol);
        }
        return new FunctionTable(entries.ToArray());
    }

    /// <summary>Finds the function containing vaddr. A sized symbol must contain it; an unsized one
    /// (hand-written assembly, some stripped tables) is taken as the nearest preceding function.</summary>
    public bool TryFind(ulong vaddr, out string name, out ulong offset)
    {
        name = string.Empty;
        offset = 0;
        int lo = 0, hi = _entries.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = lo + ((hi - lo) >> 1);
            if (_entries[mid].Start <= vaddr)
            {
                found = mid;
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }
        if (found < 0)
            return false;

        var entry = _entries[found];
        ulong delta = vaddr - entry.Start;
        // A sized symbol that ends before vaddr means vaddr is in padding, a PLT or code without a
        // symbol: naming the previous function would be a lie.
        if (entry.Size != 0 ? delta >= entry.Size : vaddr >= entry.SectionEnd)
            return false;
        name = entry.Name;
        offset = delta;
        return true;
    }

    /// <summary>The virtual address of a function by exact name (linear; for diagnostics and tests).</summary>
    public bool TryGetAddress(string name, out ulong vaddr)
    {
        foreach (var entry in _entries)
        {
            if (entry.Name == name)
            {
                vaddr = entry.Start;
                return true;
            }
        }
        vaddr = 0;
        return false;
    }

    // Order among aliases of one address, best first: a symbol with a size (it bounds lookups),
    // fewer leading underscores (malloc over __libc_malloc), global over local, shorter, then
    // ordinal so the choice does not depend on symbol-table order.
    private static int Preferred(Entry a, Entry b)
    {
        int c = (a.Size == 0).CompareTo(b.Size == 0);
        if (c == 0)
            c = LeadingUnderscores(a.Name).CompareTo(LeadingUnderscores(b.Name));
        if (c == 0)
            c = a.IsLocal.CompareTo(b.IsLocal);
        if (c == 0)
            c = a.Name.Length.CompareTo(b.Name.Length);
        if (c == 0)
            c = string.CompareOrdinal(a.Name, b.Name);
        return c;
    }

    private static int LeadingUnderscores(string name)
    {
        int n = 0;
        while (n < name.Length && name[n] == '_')
            n++;
        return n;
    }
}
