// Symbolizer: raw return addresses of this process -> FrameInfo (function+offset, module+offset).
//
// LOCKING
//  _cacheLock  guards _images; held while an image is loaded so each file is parsed once.
//              Meant for the one scanner thread; a second caller only waits, it cannot corrupt.
//
// Costs (measured here, NativeAOT, LibObjectFile 2.3.1): libc.so.6 plus its debug file ~20 ms
// on first use, then ~1 µs per address; a 90 MB /usr/bin/node (185k symbols) ~0.3 s and ~60 MB
// of short-lived allocation. That is why images are cached per path and loaded lazily: a report
// touches a handful of modules, a process may map hundreds.
//
// Symbolize never throws: any failure degrades to module+offset, then to the bare address.

using System;
using System.Collections.Generic;

namespace Interposer.Scanner.Symbols;

internal sealed class Symbolizer
{
    // The snapshot addresses are resolved against; immutable.
    private readonly ModuleMap _map;

    // Where separate debug files are looked for.
    private readonly DebugFileLocator _locator;

    // Protects _images.
    private readonly object _cacheLock = new();

    // Module path -> parsed image; null remembers "unreadable" so a failing file is tried once.
    private readonly Dictionary<string, ElfImage?> _images = new(StringComparer.Ordinal);

    // Line tables larger than this (bytes of .debug_line, inflated) are not read; 0 = no limit.
    private readonly long _maxLineTableBytes;

    // Told (once per module and symbolizer) why a module gets no file:line.
    private readonly Action<string>? _note;

    public Symbolizer(ModuleMap map)
        : this(map, new DebugFileLocator())
    {
    }

    public Symbolizer(ModuleMap map, DebugFileLocator locator, long maxLineTableBytes = 0, Action<string>? note = null)
    {
        _map = map;
        _locator = locator;
        _maxLineTableBytes = maxLineTableBytes;
        _note = note;
    }

    public ModuleMap Map => _map;

    public FrameInfo Symbolize(ulong address)
    {
        Module? module = null;
        try
        {
            module = _map.Find(address);
            if (module is null)
                return FrameInfo.Unknown(address);

            ElfImage? image = GetImage(module);
            if (image is null)
                return ModuleOnly(address, module);

            // Return addresses point past the call; the caller's symbol is looked up at the address
            // as given, like kmemleak, and callers that want the call site subtract 1 themselves.
            ulong vaddr = unchecked(address - image.LoadBias(module));
            // The line of the call, not of the instruction after it: vaddr - 1 is inside the call.
            string? file = null;
            int line = 0;
            if (vaddr > 0 && image.TryFindLine(vaddr - 1, out string f, out int l))
                (file, line) = (f, l);
            return image.Functions.TryFind(vaddr, out string name, out ulong offset)
                ? new FrameInfo(address, Demangler.Demangle(name), offset, module.Path, vaddr, file, line)
                : new FrameInfo(address, null, 0, module.Path, vaddr, file, line);
        }
        catch (Exception)
        {
            return module is null ? FrameInfo.Unknown(address) : ModuleOnly(address, module);
        }
    }

    /// <summary>The cached image of module's file, loading it on first use; null when the module is
    /// not a readable ELF file (deleted, [vdso], permissions, not ELF).</summary>
    internal ElfImage? GetImage(Module module)
    {
        if (!module.IsReadableFile)
            return null;
        lock (_cacheLock)
        {
            if (!_images.TryGetValue(module.Path, out var image))
            {
                image = ElfImage.TryLoad(module.Path, _locator, _maxLineTableBytes, _note);
                _images[module.Path] = image;
            }
            return image;
        }
    }

    private static FrameInfo ModuleOnly(ulong address, Module module) =>
        new(address, null, 0, module.Path, unchecked(address - module.Base));
}
