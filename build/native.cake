// native.cake — the C side: tool checks and the shim build.
public static class Native
{
    public static readonly string[] ShimSources = { "malloc.c", "threads.c", "core.c", "deferred_log.c", "gc_window.c", "stw.c", "scan.c", "regions.c", "api.c", "control.c", "fds.c" };

    // Flags that keep the shim's contract: frame pointers (the exported functions read their own
    // frame to hand the core the caller's registers), initial-exec TLS (the guard must never
    // allocate), hidden by default (only the malloc family and interposer_* are exported).
    public const string ShimFlags =
        "-O2 -g -std=gnu11 -Wall -Wextra -Werror -fPIC -shared -fno-omit-frame-pointer " +
        "-ftls-model=initial-exec -fvisibility=hidden -fno-strict-aliasing";

    public static void RequireTool(ICakeContext ctx, string tool, string debianPackage)
    {
        if (Has(ctx, tool)) return;
        bool root = System.Environment.UserName == "root";
        bool apt = System.IO.File.Exists("/usr/bin/apt-get");
        if (root && apt)
        {
            ctx.Information($"{tool} is missing: installing Debian package {debianPackage}");
            Run(ctx, "/bin/sh", $"-c \"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {debianPackage}\"");
        }
        if (!Has(ctx, tool))
            throw new CakeException($"{tool} is required. Install it with: sudo apt-get install {debianPackage}");
    }

    // A Debian package that is not a command (debug symbols the tests read), installed the same way.
    public static void RequirePackage(ICakeContext ctx, string debianPackage, string why)
    {
        if (HasPackage(ctx, debianPackage)) return;
        bool root = System.Environment.UserName == "root";
        bool apt = System.IO.File.Exists("/usr/bin/apt-get");
        if (root && apt)
        {
            ctx.Information($"{debianPackage} is missing ({why}): installing it");
            Run(ctx, "/bin/sh", $"-c \"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {debianPackage}\"");
        }
        if (!HasPackage(ctx, debianPackage))
            throw new CakeException($"{debianPackage} is required ({why}). Install it with: sudo apt-get install {debianPackage}");
    }

    private static bool HasPackage(ICakeContext ctx, string package) =>
        ctx.StartProcess("/bin/sh", new ProcessSettings
        {
            Arguments = $"-c \"dpkg-query -W -f='${{Status}}' {package} 2>/dev/null | grep -q 'ok installed'\"",
            Silent = true,
        }) == 0;

    public static bool Has(ICakeContext ctx, string tool) =>
        ctx.StartProcess("/bin/sh", new ProcessSettings { Arguments = $"-c \"command -v {tool} >/dev/null\"", Silent = true }) == 0;

    // Replaces a library by rename, never in place: a program that has the old file mapped (a
    // test or demo still running) keeps its inode instead of dying of SIGBUS.
    public static void Install(string temporary, string target) =>
        System.IO.File.Move(temporary, target, overwrite: true);

    public static void Run(ICakeContext ctx, string tool, string args, DirectoryPath workdir = null)
    {
        int rc = ctx.StartProcess(tool, new ProcessSettings { Arguments = args, WorkingDirectory = workdir });
        if (rc != 0)
            throw new CakeException($"'{tool} {args}' failed with exit code {rc}");
    }
}
