// context.cake — the typed build context: every path and setting the tasks share.
public class BuildContext
{
    public ICakeContext Cake { get; }
    public string Configuration { get; }
    public DirectoryPath Root { get; }
    public DirectoryPath Artifacts => Root.Combine("artifacts");
    public DirectoryPath LibDir => Artifacts.Combine("lib");
    public DirectoryPath CoreDir => Artifacts.Combine("core");
    public DirectoryPath TestResults => Artifacts.Combine("test-results");
    public DirectoryPath DemoDir => Artifacts.Combine("demo");
    public FilePath ShimLibrary => LibDir.CombineWithFilePath("libinterposer.so");
    public FilePath CoreLibrary => LibDir.CombineWithFilePath("libinterposer_core.so");
    public string TestFilter { get; }
    public string Summary { get; set; }

    public BuildContext(ICakeContext context)
    {
        Cake = context;
        Configuration = context.Argument("configuration", "Release");
        TestFilter = context.Argument("filter", "");
        Root = context.MakeAbsolute(context.Directory("."));
    }
}
