using System.Runtime.InteropServices;
namespace Interposer;
internal static unsafe class Exports
{
    [UnmanagedCallersOnly(EntryPoint = "interposer_probe")]
    private static int Probe() => 42;
}
