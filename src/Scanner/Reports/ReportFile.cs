// ReportFile.cs — where reports go and how they are written.
// A reader never sees half a report: the text goes to a temporary file created 0600 with
// O_EXCL in the same directory, which is then renamed over the target (rename(2) replaces a
// planted symlink itself, it never follows it). "-" means stderr.
using System;
using System.Globalization;
using System.IO;
using System.Text;

namespace Interposer.Scanner.Reports;

internal static unsafe partial class ReportFile
{
    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "lstat", StringMarshalling = System.Runtime.InteropServices.StringMarshalling.Utf8)]
    private static partial int LStat(string path, byte* statBuffer);

    /// <summary>A FIFO or a terminal/char device the user named (e.g. /dev/stderr's target, a pipe to
    /// a collector) is written through, not replaced by a regular file. Symlinks are never followed
    /// (lstat), so a planted link still goes through the rename path.</summary>
    private static bool IsFifoOrCharDevice(string path)
    {
        byte* st = stackalloc byte[256];          // struct stat is 144 bytes on x86-64
        if (LStat(path, st) != 0)
            return false;
        uint type = *(uint*)(st + 24) & 0xF000;   // st_mode at offset 24 on x86-64
        return type == 0x1000 || type == 0x2000;  // S_IFIFO, S_IFCHR
    }

    private static string? WriteThrough(string path, byte[] bytes)
    {
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Write);
            fs.Write(bytes, 0, bytes.Length);
            return null;
        }
        catch (Exception e)
        {
            return $"cannot write report '{path}': {e.Message}";
        }
    }

    /// <summary>Expands %p (pid) and %% in a report path.</summary>
    public static string ExpandPath(string template, int pid)
    {
        var sb = new StringBuilder(template.Length + 8);
        for (int i = 0; i < template.Length; i++)
        {
            char c = template[i];
            if (c == '%' && i + 1 < template.Length)
            {
                char k = template[i + 1];
                if (k == 'p') { sb.Append(pid.ToString(CultureInfo.InvariantCulture)); i++; continue; }
                if (k == '%') { sb.Append('%'); i++; continue; }
            }
            sb.Append(c);
        }
        return sb.ToString();
    }

    /// <summary>Writes text atomically to path; returns null or a one-line error.</summary>
    public static string? WriteAtomically(string path, string text, Action<byte[]> writeStderr)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        if (path == "-")
        {
            writeStderr(bytes);
            return null;
        }
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception e) { return $"bad report path '{path}': {e.Message}"; }
        if (IsFifoOrCharDevice(full))
            return WriteThrough(full, bytes);
        string dir = Path.GetDirectoryName(full) ?? "/";
        string tmp = Path.Combine(dir, "." + Path.GetFileName(full) + ".tmp." +
                                       Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "." +
                                       Path.GetRandomFileName()); // unpredictable: nobody can plant it
        try
        {
            var options = new FileStreamOptions
            {
                Mode = FileMode.CreateNew,          // O_CREAT|O_EXCL: never opens a planted file or link
                Access = FileAccess.Write,
                UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            };
            using (var fs = new FileStream(tmp, options))
            {
                fs.Write(bytes, 0, bytes.Length);
                fs.Flush(flushToDisk: false);
            }
            File.Move(tmp, full, overwrite: true);  // rename(2) within the directory
            return null;
        }
        catch (Exception e)
        {
            try { File.Delete(tmp); } catch (Exception) { }
            return $"cannot write report '{full}': {e.Message}";
        }
    }
}
