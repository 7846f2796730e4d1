// build.cake — Interposer's build. Entry: ./build.sh --target=<Target>
//   Build  the preloadable library: artifacts/lib/libinterposer.so (+ libinterposer_core.so)
//   Demo   build, run the bundled leaky program under the library, print what it reports
//   Test   build, run every test; the output ends with "N passed, N failed"
//   Bench  build, run the allocation benchmark against glibc and liblsan, then the leak-scan
//          benchmark against liblsan's leak check
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
});

Task("Build")
    .IsDependentOn("Shim")
    .IsDependentOn("Core");

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
    CleanDirectory(ctx.TestResults);
    var settings = new DotNetTestSettings
    {
        Configuration = "Debug",
        ResultsDirectory = ctx.TestResults,
        Loggers = { "trx;LogFileName=results.trx", "console;verbosity=normal" },
        EnvironmentVariables = { ["INTERPOSER_LIB_DIR"] = ctx.LibDir.FullPath },
        Filter = string.IsNullOrEmpty(ctx.TestFilter) ? null : ctx.TestFilter,
    };
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
});

Task("Bench")
    .IsDependentOn("Build")
    .Does<BuildContext>(ctx =>
{
    Native.Run(Context, "bash", $"scripts/bench.sh {ctx.LibDir.FullPath}", ctx.Root);
    Native.Run(Context, "bash", $"scripts/bench_scan.sh {ctx.LibDir.FullPath}", ctx.Root);
});

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
