// Artifacts.cs — where the built library lives, for end-to-end tests.
// The Test target of build.cake sets INTERPOSER_LIB_DIR; a bare `dotnet test` after
// `./build.sh --target=Build` finds artifacts/lib from the repository root.
using System;
using System.IO;
using NUnit.Framework;

namespace Interposer.Tests.Support;

internal static class Artifacts
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string LibDir
    {
        get
        {
            string dir = Environment.GetEnvironmentVariable("INTERPOSER_LIB_DIR") is { Length: > 0 } d
                ? d
                : Path.Combine(RepoRoot, "artifacts", "lib");
            string lib = Path.Combine(dir, "libinterposer.so");
            if (!File.Exists(lib))
                Assert.Fail($"{lib} does not exist: run ./build.sh --target=Build first (or ./build.sh --target=Test)");
            return dir;
        }
    }

    public static string Library => Path.Combine(LibDir, "libinterposer.so");

    public static string ProgramsDir => Path.Combine(RepoRoot, "tests", "programs");

    public static string ShimDir => Path.Combine(RepoRoot, "native-shim");

    private static string FindRepoRoot()
    {
        string? dir = AppContext.BaseDirectory;
        while (dir != null && !File.Exists(Path.Combine(dir, "Interposer.sln")))
            dir = Path.GetDirectoryName(dir);
        return dir ?? throw new InvalidOperationException("cannot find the repository root (Interposer.sln)");
    }
}
