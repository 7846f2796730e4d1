// ModuleMap: a snapshot of the objects loaded in this process, from /proc/self/maps, for turning
// return addresses into modules. It is immutable once built; take a new one after dlopen/dlclose
// (an address is only as right as the snapshot it is looked up in).
//
// The parser never throws on content: the scanner runs inside arbitrary hosts and one odd line
// (a kernel we have not seen, a path with spaces, a truncated read) must cost that line only.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;

using Interposer.Scanner.Scan;

namespace Interposer.Scanner.Symbols;

internal sealed class ModuleMap
{
    private const string ProcSelfMaps = "/proc/self/maps";

    // Executable mappings sorted by Start; ranges never overlap in a real maps file.
    private readonly Module[] _modules;

    private ModuleMap(Module[] modules) => _modules = modules;

    public IReadOnlyList<Module> Modules => _modules;

    /// <summary>Reads /proc/self/maps. An unreadable file gives an empty map, never an exception.</summary>
    public static ModuleMap FromProcSelfMaps()
    {
        string text;
        try
        {
            // ReadAllText reads procfs files to EOF although they report a length of 0.
            text = File.ReadAllText(ProcSelfMaps);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new ModuleMap(Array.Empty<Module>());
        }
        return Parse(text);
    }

    /// <summary>Parses maps text; malformed lines are skipped.</summary>
    public static ModuleMap Parse(string mapsText)
    {
        var lines = new List<MapsRow>();
        foreach (var range in mapsText.AsSpan().Split('\n'))
        {
            if (MapsRow.TryParse(mapsText.AsSpan()[range], out var line))
                lines.Add(line);
        }
        // The kernel prints in address order; tests and odd sources may not.
        lines.Sort(static (a, b) => a.Start.CompareTo(b.Start));

        // Image start per path: the latest offset-0 mapping seen so far, so that a file mapped twice
        // (dlmopen namespaces) gives each copy its own base.
        var imageStart = new Dictionary<string, ulong>(StringComparer.Ordinal);
        var modules = new List<Module>();
        ulong previousEnd = 0;
        foreach (var line in lines)
        {
            if (line.Path.Length == 0)
                continue;
            if (line.Offset == 0)
                imageStart[line.Path] = line.Start;
            if (!line.Executable || line.Start < previousEnd)
                continue; // overlapping executable ranges would break the binary search: keep the first
            ulong moduleBase = imageStart.TryGetValue(line.Path, out var start) && start <= line.Start
                ? start
                : line.Start - Math.Min(line.Offset, line.Start);
            modules.Add(new Module(line.Path, moduleBase, line.Start, line.End, line.Offset));
            previousEnd = line.End;
        }
        return new ModuleMap(modules.ToArray());
    }

    /// <summary>
    /// This map plus modules that are gone (dlclose'd libraries, noted before they were unmapped),
    /// for the address ranges no current module covers: a leak allocated by a closed library
    /// still gets function+offset (read from its file) or module+offset. A range reused by a
    /// library loaded later belongs to the current one.
    /// </summary>
    public ModuleMap WithDeparted(IEnumerable<Module> departed)
    {
        var all = new List<Module>(_modules);
        foreach (Module d in departed)
        {
            bool overlaps = false;
            foreach (Module m in all)
                overlaps |= d.Start < m.End && m.Start < d.End;
            if (!overlaps && d.Start < d.End)
                all.Add(d);
        }
        all.Sort(static (a, b) => a.Start.CompareTo(b.Start));
        return new ModuleMap(all.ToArray());
    }

    /// <summary>The executable mapping containing address, or null (anonymous JIT code, unmapped).</summary>
    public Module? Find(ulong address)
    {
        // Last module whose Start <= address.
        int lo = 0, hi = _modules.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = lo + ((hi - lo) >> 1);
            if (_modules[mid].Start <= address)
            {
                found = mid;
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }
        return found >= 0 && _modules[found].Contains(address) ? _modules[found] : null;
    }
}
