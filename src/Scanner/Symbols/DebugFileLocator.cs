// DebugFileLocator: where the separate debug file of a stripped module may live, in gdb's order
// ("Debugging Information in Separate Files"): by build-id first, then by .gnu_debuglink next
// to the module, in its .debug/ directory, and under the global debug directory. On Debian,
// libc6-dbg installs only the build-id form (/usr/lib/debug/.build-id/93/ac61….debug).
//
// Candidates are only guesses; ElfImage accepts one only if its build-id, or failing that the
// debuglink CRC, matches, because a stale debug file names the wrong functions.

using System;
using System.Collections.Generic;
using System.IO;

namespace Interposer.Scanner.Symbols;

internal sealed class DebugFileLocator
{
    public const string DefaultDebugRoot = "/usr/lib/debug";

    // Global debug directory (gdb's debug-file-directory).
    private readonly string _debugRoot;

    public DebugFileLocator(string debugRoot = DefaultDebugRoot) => _debugRoot = debugRoot.TrimEnd('/');

    /// <summary>The global debug directory this locator searches.</summary>
    public string DebugRoot => _debugRoot;

    /// <summary>Candidate paths (not checked for existence) for modulePath's debug file, most specific first.</summary>
    public IEnumerable<string> Candidates(string modulePath, ReadOnlyMemory<byte> buildId, string? debugLink)
    {
        if (buildId.Length >= 2)
        {
            string hex = Convert.ToHexStringLower(buildId.Span);
            yield return $"{_debugRoot}/.build-id/{hex[..2]}/{hex[2..]}.debug";
        }
        string dir = Path.GetDirectoryName(modulePath) ?? "/";
        if (!string.IsNullOrEmpty(debugLink) && debugLink.IndexOf('/') < 0)
        {
            string beside = Path.Combine(dir, debugLink);
            // A debuglink naming the module itself would make us "find" the stripped file again.
            if (beside != modulePath)
                yield return beside;
            yield return Path.Combine(dir, ".debug", debugLink);
            yield return _debugRoot + Path.Combine(dir, debugLink);
        }
        // Older Debian layout mirrors the module path under the debug root.
        yield return _debugRoot + modulePath;
    }

    /// <summary>The CRC-32 that .gnu_debuglink stores (the zlib polynomial), over a whole file.</summary>
    public static uint Crc32Of(string path)
    {
        var table = s_crcTable.Value;
        uint crc = 0xFFFFFFFFu;
        var buffer = new byte[64 * 1024];
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        int read;
        while ((read = stream.Read(buffer, 0, buffer.Length)) > 0)
        {
            for (int i = 0; i < read; i++)
                crc = table[(crc ^ buffer[i]) & 0xFF] ^ (crc >> 8);
        }
        return ~crc;
    }

    // Built on first use: most processes find every debug file by build-id and never need it.
    private static readonly Lazy<uint[]> s_crcTable = new(static () =>
    {
        var table = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++)
                c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[n] = c;
        }
        return table;
    });
}
