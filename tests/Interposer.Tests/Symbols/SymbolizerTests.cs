// Symbolizer, in this process: a test .so built and dlopen'ed here, libc (with and without its
// debug file), stripped objects, on-disk executables placed at known addresses, and addresses
// that belong to nothing.

using System;
using System.IO;
using System.Runtime.InteropServices;
using Interposer.Scanner.Symbols;
using NUnit.Framework;

namespace Interposer.Tests.Symbols;

[NonParallelizable] // dlopen'ed libraries and the maps snapshot are process-wide
public class SymbolizerTests
{
    private SymbolTestPrograms _programs = null!;
    private string _library = null!;          // unstripped -O0 -shared -fPIC build
    private string _strippedLibrary = null!;  // same code, .symtab removed
    private IntPtr _exported;                 // symtest_exported in _library
    private IntPtr _hidden;                   // static symtest_hidden in _library
    private IntPtr _strippedExported;
    private IntPtr _strippedHidden;

    [OneTimeSetUp]
    public void BuildAndLoad()
    {
        _programs = new SymbolTestPrograms();
        _library = _programs.Build("libsymtest.so", "-O0 -g0 -shared -fPIC");
        _strippedLibrary = _programs.Build("libsymtest-stripped.so", "-O0 -shared -fPIC -s");
        (_exported, _hidden) = LoadTestLibrary(_library);
        (_strippedExported, _strippedHidden) = LoadTestLibrary(_strippedLibrary);
    }

    [OneTimeTearDown]
    public void CleanUp() => _programs.Dispose();

    [Test]
    public void ExportedFunction_IsNamedWithOffsetZeroAndItsLibrary()
    {
        var frame = new Symbolizer(ModuleMap.FromProcSelfMaps()).Symbolize(Address(_exported));

        Assert.That(frame.Function, Is.EqualTo("symtest_exported"));
        Assert.That(frame.FunctionOffset, Is.EqualTo(0UL));
        Assert.That(frame.ModulePath, Is.EqualTo(_library));
        Assert.That(frame.ModuleOffset, Is.EqualTo(SymbolTestPrograms.NmAddress(_library, "symtest_exported")));
        Assert.That(frame.Format(), Is.EqualTo($"[<0x{Address(_exported):x}>] symtest_exported+0x0 ({_library})"));
    }

    [Test]
    public void AddressInsideAFunction_GivesTheOffsetIntoIt()
    {
        var frame = new Symbolizer(ModuleMap.FromProcSelfMaps()).Symbolize(Address(_exported) + 5);

        Assert.That(frame.Function, Is.EqualTo("symtest_exported"));
        Assert.That(frame.FunctionOffset, Is.EqualTo(5UL));
        Assert.That(frame.Format(), Does.Contain("symtest_exported+0x5 ("));
    }

    [Test]
    public void StaticFunction_IsNamedFromSymtab()
    {
        var frame = new Symbolizer(ModuleMap.FromProcSelfMaps()).Symbolize(Address(_hidden) + 1);

        Assert.That(frame.Function, Is.EqualTo("symtest_hidden"));
        Assert.That(frame.FunctionOffset, Is.EqualTo(1UL));
        Assert.That(frame.ModulePath, Is.EqualTo(_library));
    }

    [Test]
    public void StrippedLibrary_NamesExportsFromDynsymAndFallsBackToModuleOffset()
    {
        var symbolizer = new Symbolizer(ModuleMap.FromProcSelfMaps());

        var exported = symbolizer.Symbolize(Address(_strippedExported));
        var hidden = symbolizer.Symbolize(Address(_strippedHidden));

        Assert.That(exported.Function, Is.EqualTo("symtest_exported"));
        Assert.That(hidden.Function, Is.Null, "a static function is not in .dynsym");
        Assert.That(hidden.ModulePath, Is.EqualTo(_strippedLibrary));
        // Same code layout as the unstripped build, so nm on that one is the oracle.
        Assert.That(hidden.ModuleOffset, Is.EqualTo(SymbolTestPrograms.NmAddress(_library, "symtest_hidden")));
        Assert.That(hidden.Format(), Is.EqualTo(
            $"[<0x{Address(_strippedHidden):x}>] ?? ({_strippedLibrary}+0x{hidden.ModuleOffset:x})"));
    }

    [Test]
    public void LibcExport_IsNamed()
    {
        IntPtr getpid = NativeLibrary.GetExport(NativeLibrary.Load("libc.so.6"), "getpid");

        var frame = new Symbolizer(ModuleMap.FromProcSelfMaps()).Symbolize(Address(getpid));

        Assert.That(frame.Function, Does.Contain("getpid"));
        Assert.That(frame.FunctionOffset, Is.EqualTo(0UL));
        Assert.That(frame.ModulePath, Does.Contain("libc.so"));
    }

    [Test]
    public void LibcInternalFunction_IsNamedFromTheBuildIdDebugFile()
    {
        IntPtr getpid = NativeLibrary.GetExport(NativeLibrary.Load("libc.so.6"), "getpid");
        var symbolizer = new Symbolizer(ModuleMap.FromProcSelfMaps());
        var libc = symbolizer.Map.Find(Address(getpid))!;
        var image = symbolizer.GetImage(libc);
        Assert.That(image?.SymbolSource, Does.StartWith("/usr/lib/debug/.build-id/"), "libc6-dbg is not installed (the Test target installs it)");

        // _int_malloc is static in malloc.c: only the debug file's .symtab has it.
        ulong vaddr = SymbolTestPrograms.NmAddress(image!.SymbolSource, "_int_malloc");
        var frame = symbolizer.Symbolize(image.LoadBias(libc) + vaddr + 0x10);

        Assert.That(frame.Function, Is.EqualTo("_int_malloc"));
        Assert.That(frame.FunctionOffset, Is.EqualTo(0x10UL));
        Assert.That(frame.ModuleOffset, Is.EqualTo(vaddr + 0x10));
    }

    [Test]
    public void LibcDefaultVersion_IsDroppedFromTheName()
    {
        // glibc's debug .symtab names it "pthread_create@@GLIBC_2.34"; .dynsym plain "pthread_create".
        IntPtr create = NativeLibrary.GetExport(NativeLibrary.Load("libc.so.6"), "pthread_create");

        var frame = new Symbolizer(ModuleMap.FromProcSelfMaps()).Symbolize(Address(create) + 3);

        Assert.That(frame.Function, Is.EqualTo("pthread_create"));
        Assert.That(frame.FunctionOffset, Is.EqualTo(3UL));
    }

    // DWARF 4 built from a relative path: the line table alone says "rel4.c"; the unit's
    // DW_AT_comp_dir (from .debug_info) makes it the full path, as addr2line prints it.
    [Test]
    public void Dwarf4RelativeSource_GetsItsCompilationDirectory()
    {
        string dir = Path.GetDirectoryName(_programs.PathOf("x"))!;
        File.Copy(_programs.Source, Path.Combine(dir, "rel4.c"), overwrite: true);
        _programs.Tool("sh", $"-c \"cd '{dir}' && gcc -O0 -g -gdwarf-4 -shared -fPIC -o librel4.so rel4.c\"");
        string library = Path.Combine(dir, "librel4.so");
        ulong hidden = SymbolTestPrograms.NmAddress(library, "symtest_hidden");

        var frame = new Symbolizer(ModuleMap.Parse(SymbolTestPrograms.FakeMaps(library, FakeBias))).Symbolize(FakeBias + hidden + 5);

        Assert.That(frame.Function, Is.EqualTo("symtest_hidden"));
        Assert.That(frame.File, Is.EqualTo(Path.Combine(dir, "rel4.c")));
        Assert.That(frame.Line, Is.GreaterThan(0));
    }

    // Images outlive a Symbolizer (periodic scans do not parse libc again), but not a change of
    // their file.
    [Test]
    public void Images_AreSharedAcrossSymbolizers_UntilTheFileChanges()
    {
        string library = _programs.Build("libshared.so", "-O0 -shared -fPIC");
        var map = ModuleMap.Parse(SymbolTestPrograms.FakeMaps(library, FakeBias));
        Module module = map.Find(FakeBias + SymbolTestPrograms.NmAddress(library, "symtest_hidden"))!;

        ElfImage? first = new Symbolizer(map).GetImage(module);
        ElfImage? again = new Symbolizer(map).GetImage(module);
        File.SetLastWriteTimeUtc(library, File.GetLastWriteTimeUtc(library).AddSeconds(5));
        ElfImage? changed = new Symbolizer(map).GetImage(module);

        Assert.That(first, Is.Not.Null);
        Assert.That(again, Is.SameAs(first), "the same file: parsed once");
        Assert.That(changed, Is.Not.SameAs(first), "a changed file is parsed again");
    }

    // A stripped module whose .gnu_debuglink names a file beside it (NativeAOT's Foo + Foo.dbg
    // layout). With a build-id the ids are compared; without one, the debuglink CRC.
    [TestCase("-Wl,--build-id", "bid")]
    [TestCase("-Wl,--build-id=none", "crc")]
    public void DebugLinkBesideTheModule_NamesStaticFunctions(string buildId, string tag)
    {
        string library = StripWithDebugLink($"libdl-{tag}.so", $"-O0 -shared -fPIC {buildId}");
        ulong hidden = SymbolTestPrograms.NmAddress(library + ".debug", "symtest_hidden");
        var symbolizer = new Symbolizer(ModuleMap.Parse(SymbolTestPrograms.FakeMaps(library, FakeBias)));

        var frame = symbolizer.Symbolize(FakeBias + hidden + 2);

        Assert.That(frame.Function, Is.EqualTo("symtest_hidden"));
        Assert.That(frame.FunctionOffset, Is.EqualTo(2UL));
    }

    // A debug file from another build must not name functions: its addresses are for other code.
    [TestCase("-Wl,--build-id", "bid")]
    [TestCase("-Wl,--build-id=none", "crc")]
    public void StaleDebugFile_IsRejected(string buildId, string tag)
    {
        string library = StripWithDebugLink($"libstale-{tag}.so", $"-O0 -shared -fPIC {buildId}");
        string other = _programs.Build($"libstale-{tag}-other.so", $"-O2 -shared -fPIC {buildId} -DSYMTEST_MAIN");
        _programs.Tool("objcopy", $"--only-keep-debug \"{other}\" \"{library}.debug\"");
        ulong hidden = SymbolTestPrograms.NmAddress(_library, "symtest_hidden");
        var symbolizer = new Symbolizer(ModuleMap.Parse(SymbolTestPrograms.FakeMaps(library, FakeBias)));

        var frame = symbolizer.Symbolize(FakeBias + hidden);

        // Rejected, so only the stripped module's .dynsym is left, and it has no static functions.
        Assert.That(frame.Function, Is.Null);
        Assert.That(symbolizer.GetImage(symbolizer.Map.Find(FakeBias + hidden)!)?.SymbolSource, Is.EqualTo(library));
    }

    // An ET_EXEC has absolute virtual addresses (bias 0); a PIE is placed like the kernel would.
    [TestCase("-no-pie", 0UL)]
    [TestCase("-pie -fPIE", 0x5555_5555_4000UL)]
    public void Executable_IsSymbolizedAtItsLoadAddress(string gccArguments, ulong bias)
    {
        string exe = _programs.Build($"symtest-exec{(bias == 0 ? "-nopie" : "-pie")}", $"-O0 -DSYMTEST_MAIN {gccArguments}");
        ulong main = SymbolTestPrograms.NmAddress(exe, "main");
        var symbolizer = new Symbolizer(ModuleMap.Parse(SymbolTestPrograms.FakeMaps(exe, bias)));

        var frame = symbolizer.Symbolize(bias + main + 4);

        Assert.That(frame.Function, Is.EqualTo("main"));
        Assert.That(frame.FunctionOffset, Is.EqualTo(4UL));
        Assert.That(frame.ModuleOffset, Is.EqualTo(main + 4), "module offset is the ELF vaddr, as addr2line wants");
    }

    [TestCase(0x10UL)]
    [TestCase(0UL)]
    [TestCase(0xffffffffffffffffUL)]
    public void AddressInNoModule_HasNoFunctionButPrintsTheAddress(ulong address)
    {
        var frame = new Symbolizer(ModuleMap.FromProcSelfMaps()).Symbolize(address);

        Assert.That(frame.Function, Is.Null);
        Assert.That(frame.ModulePath, Is.Null);
        Assert.That(frame.Format(), Is.EqualTo($"[<0x{address:x}>] ??"));
    }

    [TestCase("/nonexistent/libgone.so")]
    [TestCase("/tmp/libgone.so (deleted)")]
    [TestCase("[vdso]")]
    public void UnreadableModule_GivesModuleAndOffset(string path)
    {
        var map = ModuleMap.Parse(
            $"7f0000000000-7f0000001000 r--p 00000000 08:01 9 {path}\n" +
            $"7f0000001000-7f0000003000 r-xp 00001000 08:01 9 {path}\n");

        var frame = new Symbolizer(map).Symbolize(0x7f0000001a2bUL);

        Assert.That(frame.Function, Is.Null);
        Assert.That(frame.Format(), Is.EqualTo($"[<0x7f0000001a2b>] ?? ({path}+0x1a2b)"));
    }

    [Test]
    public void NonElfFile_GivesModuleAndOffset()
    {
        string notElf = _programs.Source; // a C file mapped "executable" in a fake map
        var map = ModuleMap.Parse($"7f0000000000-7f0000002000 r-xp 00000000 08:01 9 {notElf}\n");

        var frame = new Symbolizer(map).Symbolize(0x7f0000000010UL);

        Assert.That(frame.Function, Is.Null);
        Assert.That(frame.Format(), Is.EqualTo($"[<0x7f0000000010>] ?? ({notElf}+0x10)"));
    }

    [Test]
    public void Vdso_InThisProcess_GivesModuleAndOffset()
    {
        var map = ModuleMap.FromProcSelfMaps();
        Module? vdso = null;
        foreach (var module in map.Modules)
            vdso = module.Path == "[vdso]" ? module : vdso;
        Assert.That(vdso, Is.Not.Null, "no [vdso] mapping");

        var frame = new Symbolizer(map).Symbolize(vdso!.Start + 0x10);

        Assert.That(frame.Format(), Does.EndWith($"?? ([vdso]+0x{vdso.Start + 0x10 - vdso.Base:x})"));
    }

    private const ulong FakeBias = 0x7f12_3400_0000UL;

    // Builds name, moves its symbols to name.debug and leaves a .gnu_debuglink to it, as
    // Debian's dh_strip and NativeAOT's StripSymbols do.
    private string StripWithDebugLink(string name, string gccArguments)
    {
        string library = _programs.Build(name, gccArguments);
        _programs.Tool("objcopy", $"--only-keep-debug \"{library}\" \"{library}.debug\"");
        _programs.Tool("objcopy", $"--strip-all --add-gnu-debuglink=\"{library}.debug\" \"{library}\"");
        return library;
    }

    private static ulong Address(IntPtr p) => (ulong)p.ToInt64();

    private static unsafe (IntPtr Exported, IntPtr Hidden) LoadTestLibrary(string path)
    {
        IntPtr handle = NativeLibrary.Load(path);
        IntPtr exported = NativeLibrary.GetExport(handle, "symtest_exported");
        var getter = (delegate* unmanaged<IntPtr>)NativeLibrary.GetExport(handle, "symtest_hidden_address");
        return (exported, getter());
    }
}
