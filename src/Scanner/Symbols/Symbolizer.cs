// Symbolizer: raw return addresses of this process -> FrameInfo (function+offset, module+offset).
//
// LOCKING
//  _cacheLock  guards _images; held while an image is loaded so each file is parsed once.
//              Meant for the one scanner thread; a second caller only waits, it cannot corrupt.
//  s_sharedLock guards s_shared, the process-wide cache behind every Symbolizer's _images.
//              Order: _cacheLock -> s_sharedLock; both are held while a file is parsed, by the
//              threads that symbolize (scanner, control, exit worker), never by a hook.
//
// Images outlive one Symbolizer: a service scanned every few seconds would otherwise parse
// libc's symbols and line table (~90 ms) on every scan. An image is reused while its file keeps
// its size and modification time (a package upgrade replaces the file: it is parsed again), for
// the same debug directory and line-table limit; more than SharedMax files clears the cache.
// A debug file installed after a module was first parsed is seen by the next process only.
// Measured (10,000 leaked blocks, three scans in one process, verbosity=2 "report" phase):
// 98 ms, then 37 and 36 ms.
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

    private const int SharedMax = 256;
    private static readonly object s_sharedLock = new();
    private static readonly Dictionary<(string Path, string DebugRoot, long MaxLines), (long Size, DateTime Mtime, ElfImage? Image)> s_shared = new();

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
                image = SharedImage(module.Path);
                _images[module.Path] = image;
            }
            return image;
        }
    }

    // The process-wide image of path, parsed again when the file changed (see the header).
    private ElfImage? SharedImage(string path)
    {
        long size;
        DateTime mtime;
        try
        {
            var info = new System.IO.FileInfo(path);
            if (!info.Exists)
                return null;
            (size, mtime) = (info.Length, info.LastWriteTimeUtc);
        }
        catch (Exception)
        {
            return null;
        }
        var key = (path, _locator.DebugRoot, _maxLineTableBytes);
        lock (s_sharedLock)
        {
            if (s_shared.TryGetValue(key, out var hit) && hit.Size == size && hit.Mtime == mtime)
                return hit.Image;
            ElfImage? image = ElfImage.TryLoad(path, _locator, _maxLineTableBytes, _note);
            if (s_shared.Count >= SharedMax)
                s_shared.Clear();
            s_shared[key] = (size, mtime, image);
            return image;
        }
    }

    private static FrameInfo ModuleOnly(ulong address, Module module) =>
        new(address, null, 0, module.Path, unchecked(address - module.Base));
}
