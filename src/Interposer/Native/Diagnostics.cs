// Diagnostics.cs — one-line messages on stderr, prefixed "interposer: ", written with write(2).
using System;
using System.Text;

namespace Interposer.Native;

internal static unsafe class Diagnostics
{
    public static void Message(string text)
    {
        // Allocates: only for start-up, option errors and failures, never on the hot path.
        RawBytes(Encoding.UTF8.GetBytes("interposer: " + text + "\n"));
    }

    /// <summary>Writes all of bytes to stderr (a short write is retried; an error gives up).</summary>
    public static void RawBytes(byte[] bytes) => RawBytes((ReadOnlySpan<byte>)bytes);

    /// <summary>The same; allocation-free with a u8 literal: usable on a host thread inside a hook.</summary>
    public static void RawBytes(ReadOnlySpan<byte> bytes)
    {
        fixed (byte* p = bytes)
        {
            nuint done = 0;
            while (done < (nuint)bytes.Length)
            {
                nint n = Interop.Libc.Write(2, p + done, (nuint)bytes.Length - done);
                if (n <= 0) return;
                done += (nuint)n;
            }
        }
    }

    public static void Raw(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        fixed (byte* p = bytes) Interop.Libc.Write(2, p, (nuint)bytes.Length);
    }
}
