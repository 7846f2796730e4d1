// build.cake — Interposer's build. Entry: ./build.sh --target=<Target>
//   Build  the preloadable library: artifacts/lib/libinterposer.so (+ libinterposer_core.so)
//   Demo   build, run the bundled leaky program under the library, print what it reports
//   Test   build, run every test; the output ends with "N passed, N failed"
//   Trust  build, run the host-safety suite (issue 4) and print its figures; --soak for 30 min loads
//   Bench  build, run the allocation benchmark against glibc and liblsan, then the leak-scan
//          benchmark against liblsan's leak check, the report (symbolization) benchmark and
//          real programs (sqlite3, python3) under glibc, Interposer and liblsan
#load "build/context.cake"
#load "build/native.cake"

var target = Argument("target", "Build");

//////////////////////////////////////////////////////////////////////
// SETUP
//////////////////////////////////////////////////////////////////////

Setup<BuildContext>(context => new BuildContext(context));

//////////////////////////////////////////////////////////////////////
// TASKS
//////////////////////////////////////////////////////////////////////

Task("Tools")
    .Does<BuildContext>(ctx =>
{
    Native.RequireTool(Context, "gcc", "gcc");
    Native.RequireTool(Context, "g++", "g++");
});

Task("Shim")
    .IsDependentOn("Tools")
    .Does<BuildContext>(ctx =>
{
    EnsureDirectoryExists(ctx.LibDir);
    var sources = string.Join(" ", Native.ShimSources);
    var temporary = ctx.ShimLibrary.FullPath + ".tmp";
    Native.Run(Context, "gcc", $"{Native.ShimFlags} -o {temporary} {sources} -ldl -lpthread",
               ctx.Root.Combine("native-shim"));
    Native.Install(temporary, ctx.ShimLibrary.FullPath);
});

Task("Core")
    .Does<BuildContext>(ctx =>
{
    DotNetPublish("src/Interposer/Interposer.csproj", new DotNetPublishSettings
    {
        Configuration = ctx.Configuration,
        OutputDirectory = ctx.CoreDir,
        // gcc links the NativeAOT library; clang is not needed.
        MSBuildSettings = new DotNetMSBuildSettings().WithProperty("CppCompilerAndLinker", "gcc"),
    });
    EnsureDirectoryExists(ctx.LibDir);
    var temporary = ctx.CoreLibrary.FullPath + ".tmp";
    System.IO.File.Copy(ctx.CoreDir.CombineWithFilePath("libinterposer_core.so").FullPath, temporary, true);
    Native.Install(temporary, ctx.CoreLibrary.FullPath);
    // Its symbols, beside it where .gnu_debuglink sends perf and gdb (a stale one names the wrong
    // functions: perf checks nothing but the name).
    var symbols = ctx.CoreDir.CombineWithFilePath("libinterposer_core.so.dbg").FullPath;
    if (System.IO.File.Exists(symbols))
    {
        System.IO.File.Copy(symbols, temporary, true);
        Native.Install(temporary, ctx.CoreLibrary.FullPath + ".dbg");
    }
});

// The command-line tool: a framework-dependent program in artifacts/cli behind the launcher
// script artifacts/bin/interposer (which finds the library in artifacts/lib).
Task("Cli")
    .Does<BuildContext>(ctx =>
{
    var cliDir = ctx.Artifacts.Combine("cli");
    DotNetPublish("src/Cli/Cli.csproj", new DotNetPublishSettings
    {
        Configuration = ctx.Configuration,
        OutputDirectory = cliDir,
    });
    var bin = ctx.Artifacts.Combine("bin");
    EnsureDirectoryExists(bin);
    var launcher = bin.CombineWithFilePath("interposer").FullPath;
    System.IO.File.WriteAllText(launcher + ".tmp",
        "#!/bin/sh\n# interposer: the command-line tool (src/Cli); see interposer --help\n" +
        "here=$(dirname \"$(readlink -f \"$0\")\")\n" +
        "exec dotnet \"$here/../cli/interposer.dll\" \"$@\"\n");
    System.IO.File.SetUnixFileMode(launcher + ".tmp", (System.IO.UnixFileMode)Convert.ToInt32("755", 8));
    Native.Install(launcher + ".tmp", launcher);
});

Task("Build")
    .IsDependentOn("Shim")
    .IsDependentOn("Core")
    .IsDependentOn("Cli");

Task("Demo")
    .IsDependentOn("Build")
    .Does<BuildContext>(ctx =>
{
    Native.Run(Context, "bash", $"scripts/demo.sh {ctx.LibDir.FullPath}", ctx.Root);
});

Task("Test")
    .IsDependentOn("Build")
    .Does<BuildContext>(ctx =>
{
    // Symbolization tests read libc's file:line from its separate debug file (valgrind's
    // dependency, so usually present already).
    Native.RequirePackage(Context, "libc6-dbg", "libc's debug symbols, for the file:line tests");
    Native.RequirePackage(Context, "liblsan0", "gcc's LeakSanitizer, run side by side in the API tests");
    RunTests(ctx, ctx.TestFilter, new Dictionary<string, string>());
});

// Trust: the host-safety suite alone (issue 4), with its figures. --soak runs each load for
// 30 minutes instead of 30 s and fuzzes each parser for 5 minutes.
Task("Trust")
    .IsDependentOn("Build")
    .Does<BuildContext>(ctx =>
{
    bool soak = HasArgument("soak");
    var env = new Dictionary<string, string>
    {
        ["TRUST_SECONDS"] = soak ? "1800" : "30",
        ["TRUST_FUZZ_SECONDS"] = soak ? "300" : "5",
    };
    Exception failure = null;
    try { RunTests(ctx, "FullyQualifiedName~Interposer.Tests.Trust", env); }
    catch (Exception e) { failure = e; }
    var trx = ctx.TestResults.CombineWithFilePath("results.trx");
    if (FileExists(trx))
    {
        Information("");
        Information("Trust figures (rerun: ./build.sh --target=Trust" + (soak ? " --soak" : "") + "):");
        foreach (var e in System.Xml.Linq.XDocument.Load(trx.FullPath).Descendants().Where(e => e.Name.LocalName == "UnitTestResult"))
        {
            var output = e.Descendants().FirstOrDefault(d => d.Name.LocalName == "StdOut")?.Value?.Trim();
            Information($"  {e.Attribute("outcome")?.Value,-7} {e.Attribute("testName")?.Value} ({e.Attribute("duration")?.Value})"
                        + (string.IsNullOrEmpty(output) ? "" : ": " + output.Replace("\n", "; ")));
        }
    }
    if (failure != null) throw failure;
});

Task("Bench")
    .IsDependentOn("Build")
    .Does<BuildContext>(ctx =>
{
    Native.Run(Context, "bash", $"scripts/bench.sh {ctx.LibDir.FullPath}", ctx.Root);
    Native.Run(Context, "bash", $"scripts/bench_scan.sh {ctx.LibDir.FullPath}", ctx.Root);
    Native.Run(Context, "bash", $"scripts/bench_report.sh {ctx.LibDir.FullPath}", ctx.Root);
    Native.Run(Context, "bash", $"scripts/bench_real.sh {ctx.LibDir.FullPath}", ctx.Root);
});

// Runs the NUnit project (filter may be null), with env for the test processes; the summary line
// "N passed, N failed" comes from the trx file.
void RunTests(BuildContext ctx, string filter, Dictionary<string, string> env)
{
    CleanDirectory(ctx.TestResults);
    var settings = new DotNetTestSettings
    {
        Configuration = "Debug",
        ResultsDirectory = ctx.TestResults,
        Loggers = { "trx;LogFileName=results.trx", "console;verbosity=normal" },
        EnvironmentVariables = { ["INTERPOSER_LIB_DIR"] = ctx.LibDir.FullPath },
        Filter = string.IsNullOrEmpty(filter) ? null : filter,
    };
    foreach (var kv in env)
        settings.EnvironmentVariables[kv.Key] = kv.Value;
    Exception failure = null;
    try { DotNetTest("tests/Interposer.Tests/Interposer.Tests.csproj", settings); }
    catch (Exception e) { failure = e; }
    var trx = ctx.TestResults.CombineWithFilePath("results.trx");
    if (FileExists(trx))
    {
        var counters = System.Xml.Linq.XDocument.Load(trx.FullPath).Descendants()
            .First(e => e.Name.LocalName == "Counters");
        int passed = int.Parse(counters.Attribute("passed").Value);
        int failed = int.Parse(counters.Attribute("failed").Value) + int.Parse(counters.Attribute("error").Value)
                   + int.Parse(counters.Attribute("timeout").Value) + int.Parse(counters.Attribute("aborted").Value);
        int skipped = int.Parse(counters.Attribute("notExecuted").Value);
        ctx.Summary = $"{passed} passed, {failed} failed" + (skipped > 0 ? $", {skipped} skipped" : "");
    }
    else
    {
        ctx.Summary = "0 passed, 1 failed";
    }
    if (failure != null) throw failure;
}

//////////////////////////////////////////////////////////////////////
// TEARDOWN: the test summary is the last line a reader (and CI) sees.
//////////////////////////////////////////////////////////////////////

Teardown<BuildContext>((context, ctx) =>
{
    // Cake prints its task table after Teardown; ProcessExit runs after that.
    if (!string.IsNullOrEmpty(ctx.Summary))
        System.AppDomain.CurrentDomain.ProcessExit += (s, e) => System.Console.WriteLine(ctx.Summary);
});

//////////////////////////////////////////////////////////////////////
// TARGETS
//////////////////////////////////////////////////////////////////////

RunTarget(target);
