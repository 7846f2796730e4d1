// The ABI contract, checked both ways (this test stands in for ClangSharp.PInvokeGenerator):
// tests/programs/abi/abi_layout.c is compiled by gcc against native-shim/interposer_abi.h and
// prints every struct's size and every field's offsetof, the enum values and the constants. Each
// struct's C# mirror in src/Interposer/Native/Abi.cs must have the same size, the same fields
// (no more, no fewer) at the same offsets.
//
// Three lists must agree, so a field added in one place only fails a test:
//   the header itself (parsed here: the struct and enum bodies),
//   the program's output (what gcc computes),
//   the C# structs (reflection for the field set, Marshal.OffsetOf and pointer arithmetic for
//   the offsets, sizeof for the size).

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Interposer.Native;
using Interposer.Unwinding;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.Abi;

/// <summary>One C struct and its C# mirror.</summary>
public sealed class AbiStruct
{
    public AbiStruct(string cName, Type managed, int managedSize, IReadOnlyDictionary<string, string> renames,
                     IReadOnlyDictionary<string, long> pointerOffsets)
    {
        CName = cName;
        Managed = managed;
        ManagedSize = managedSize;
        Renames = renames;
        PointerOffsets = pointerOffsets;
    }

    public string CName { get; }
    public Type Managed { get; }
    /// <summary>sizeof(T) as the runtime lays it out (Unsafe.SizeOf).</summary>
    public int ManagedSize { get; }
    /// <summary>C field names whose C# name is not the plain PascalCase of the C name.</summary>
    public IReadOnlyDictionary<string, string> Renames { get; }
    /// <summary>C# field name -> offset measured by pointer arithmetic on a stack instance (the
    /// fields Marshal.OffsetOf handles least obviously: fixed buffers and function pointers).</summary>
    public IReadOnlyDictionary<string, long> PointerOffsets { get; }

    public string ManagedName(string cField) =>
        Renames.TryGetValue(cField, out string? n) ? n : AbiLayoutTests.Pascal(cField);

    public override string ToString() => CName;
}

[TestFixture]
public unsafe class AbiLayoutTests
{
    private static Layout? s_layout;

    /// <summary>snake_case -> PascalCase: stack_lo -> StackLo, deferred_enqueued -> DeferredEnqueued.</summary>
    public static string Pascal(string snake) =>
        string.Concat(snake.Split('_', StringSplitOptions.RemoveEmptyEntries)
                           .Select(p => char.ToUpperInvariant(p[0]) + p.Substring(1)));

    // Names that are not the plain PascalCase of the C name. Every other field maps by Pascal().
    private static readonly Dictionary<string, string> s_nframes = new() { ["nframes"] = "NFrames" };

    // Not an iterator: iterator bodies are never an unsafe context, and sizeof needs one.
    public static IEnumerable<TestCaseData> Structs()
    {
        var rows = new List<AbiStruct>
        {
            new("ip_alloc_event", typeof(IpAllocEvent), sizeof(IpAllocEvent), s_nframes, PointerOffsetsOfAllocEvent()),
            new("ip_record", typeof(IpRecord), sizeof(IpRecord),
                new Dictionary<string, string>(), PointerOffsetsOfRecord()),
            new("ip_deferred_entry", typeof(IpDeferredEntry), sizeof(IpDeferredEntry), s_nframes, PointerOffsetsOfDeferredEntry()),
            new("ip_shim_api", typeof(IpShimApi), sizeof(IpShimApi), new Dictionary<string, string>(), PointerOffsetsOfShimApi()),
            new("ip_walk_cache", typeof(IpWalkCache), sizeof(IpWalkCache), new Dictionary<string, string>(), PointerOffsetsOfWalkCache()),
            new("ip_core_config", typeof(IpCoreConfig), sizeof(IpCoreConfig), new Dictionary<string, string>(), PointerOffsetsOfCoreConfig()),
            new("ip_stopped_thread", typeof(IpStoppedThread), sizeof(IpStoppedThread), new Dictionary<string, string>(), PointerOffsetsOfStoppedThread()),
            new("ip_module", typeof(IpModule), sizeof(IpModule), new Dictionary<string, string>(), PointerOffsetsOfModule()),
            new("ip_tls_range", typeof(IpTlsRange), sizeof(IpTlsRange), new Dictionary<string, string>(), new Dictionary<string, long>()),
            new("ip_region", typeof(IpRegion), sizeof(IpRegion), new Dictionary<string, string>(), new Dictionary<string, long>()),
            new("ip_free_entry", typeof(IpFreeEntry), sizeof(IpFreeEntry), new Dictionary<string, string>(), new Dictionary<string, long>()),
            new("ip_free_batch", typeof(IpFreeBatch), sizeof(IpFreeBatch), new Dictionary<string, string>(), PointerOffsetsOfFreeBatch()),
        };
        foreach (AbiStruct s in rows)
            Assert.That(s.ManagedSize, Is.EqualTo((int)typeof(Unsafe).GetMethod(nameof(Unsafe.SizeOf))!.MakeGenericMethod(s.Managed).Invoke(null, null)!),
                        $"sizeof vs Unsafe.SizeOf for {s.Managed.Name}");
        return rows.Select(s => new TestCaseData(s).SetArgDisplayNames(s.CName)).ToList();
    }

    private static Dictionary<string, long> PointerOffsetsOfFreeBatch()
    {
        IpFreeBatch f = default;
        byte* b = (byte*)&f;
        return new() { ["Entry"] = (byte*)f.Entry - b };
    }

    private static Dictionary<string, long> PointerOffsetsOfAllocEvent()
    {
        IpAllocEvent e = default;
        byte* b = (byte*)&e;
        return new()
        {
            ["Frames"] = (byte*)&e.Frames - b,
            ["WalkCache"] = (byte*)&e.WalkCache - b,
            ["Frees"] = (byte*)&e.Frees - b,
            ["StackLo"] = (byte*)&e.StackLo - b,
            ["NFrames"] = (byte*)&e.NFrames - b,
        };
    }

    private static Dictionary<string, long> PointerOffsetsOfWalkCache()
    {
        IpWalkCache w = default;
        byte* b = (byte*)&w;
        return new()
        {
            ["Pc"] = (byte*)w.Pc - b,      // fixed buffers: their first element
            ["Sp"] = (byte*)w.Sp - b,
            ["Bp"] = (byte*)w.Bp - b,
            ["RaSlot"] = (byte*)w.RaSlot - b,
            ["BpSlot"] = (byte*)w.BpSlot - b,
            ["CheckAddr"] = (byte*)w.CheckAddr - b,
            ["CheckVal"] = (byte*)w.CheckVal - b,
            ["Memo"] = (byte*)&w.Memo - b,
            ["Walks"] = (byte*)&w.Walks - b,
            ["MemoOff"] = (byte*)&w.MemoOff - b,
        };
    }

    private static Dictionary<string, long> PointerOffsetsOfRecord()
    {
        IpRecord r = default;
        byte* b = (byte*)&r;
        return new()
        {
            ["ThreadIndex"] = (byte*)&r.ThreadIndex - b,
            ["MinCount"] = (byte*)&r.MinCount - b,
        };
    }

    private static Dictionary<string, long> PointerOffsetsOfDeferredEntry()
    {
        IpDeferredEntry d = default;
        byte* b = (byte*)&d;
        return new()
        {
            ["Frames"] = (byte*)d.Frames - b,   // fixed buffer: its first element
            ["ThreadIndex"] = (byte*)&d.ThreadIndex - b,
        };
    }

    private static Dictionary<string, long> PointerOffsetsOfShimApi()
    {
        IpShimApi a = default;
        byte* b = (byte*)&a;
        return new()
        {
            ["DeferredPop"] = (byte*)&a.DeferredPop - b,
            ["DeferredEnqueued"] = (byte*)&a.DeferredEnqueued - b,
            ["Disable"] = (byte*)&a.Disable - b,
            ["UnwBacktrace"] = (byte*)&a.UnwBacktrace - b,
            ["DeferredDropped"] = (byte*)&a.DeferredDropped - b,
            ["GcWindow"] = (byte*)&a.GcWindow - b,
            ["StwStop"] = (byte*)&a.StwStop - b,
            ["StwResume"] = (byte*)&a.StwResume - b,
            ["ProgramRegions"] = (byte*)&a.ProgramRegions - b,
            ["RegionsDropped"] = (byte*)&a.RegionsDropped - b,
            ["TlsExclude"] = (byte*)&a.TlsExclude - b,
            ["DepartedModules"] = (byte*)&a.DepartedModules - b,
            ["RootRegions"] = (byte*)&a.RootRegions - b,
            ["PendingFrees"] = (byte*)&a.PendingFrees - b,
            ["PendingFreeCovers"] = (byte*)&a.PendingFreeCovers - b,
            ["StwPrepare"] = (byte*)&a.StwPrepare - b,
        };
    }

    private static Dictionary<string, long> PointerOffsetsOfCoreConfig()
    {
        IpCoreConfig c = default;
        byte* b = (byte*)&c;
        return new()
        {
            ["ControlPath"] = (byte*)c.ControlPath - b,
            ["Shards"] = (byte*)&c.Shards - b,
            ["Applied"] = (byte*)&c.Applied - b,
            ["ShardMap"] = (byte*)&c.ShardMap - b,
        };
    }

    private static Dictionary<string, long> PointerOffsetsOfModule()
    {
        IpModule m = default;
        byte* b = (byte*)&m;
        return new() { ["Path"] = (byte*)m.Path - b };
    }

    private static Dictionary<string, long> PointerOffsetsOfStoppedThread()
    {
        IpStoppedThread t = default;
        byte* b = (byte*)&t;
        return new()
        {
            ["Regs"] = (byte*)t.Regs - b,   // fixed buffer: its first element
            ["Tcb"] = (byte*)&t.Tcb - b,
        };
    }

    // ---- the tests ------------------------------------------------------------------------

    [TestCaseSource(nameof(Structs))]
    public void StructSize_MatchesGcc(AbiStruct s)
    {
        Layout layout = GetLayout();
        Assert.That(layout.Structs.ContainsKey(s.CName), Is.True, $"abi_layout.c prints no 'struct {s.CName}'");
        CStruct c = layout.Structs[s.CName];
        Assert.That(s.ManagedSize, Is.EqualTo(c.Size), $"sizeof: C# {s.Managed.Name} vs C struct {s.CName}");
        Assert.That(Marshal.SizeOf(s.Managed), Is.EqualTo(c.Size), $"Marshal.SizeOf({s.Managed.Name})");
        Assert.That(c.Size % 8, Is.Zero, $"struct {s.CName} must be padded to a multiple of 8 (header rule)");
    }

    [TestCaseSource(nameof(Structs))]
    public void FieldOffsets_MatchGcc(AbiStruct s)
    {
        CStruct c = GetLayout().Structs[s.CName];
        Dictionary<string, FieldInfo> managed = ManagedFields(s.Managed).ToDictionary(f => f.Name);
        Assert.Multiple(() =>
        {
            foreach ((string cField, long offset) in c.Fields)
            {
                string name = s.ManagedName(cField);
                Assert.That(managed.ContainsKey(name), Is.True,
                    $"{s.CName}.{cField} has no C# field {s.Managed.Name}.{name}");
                if (!managed.ContainsKey(name))
                    continue;
                Assert.That((long)Marshal.OffsetOf(s.Managed, name), Is.EqualTo(offset),
                    $"offset of {s.CName}.{cField} vs {s.Managed.Name}.{name}");
                if (s.PointerOffsets.TryGetValue(name, out long measured))
                    Assert.That(measured, Is.EqualTo(offset),
                        $"pointer-arithmetic offset of {s.Managed.Name}.{name} vs {s.CName}.{cField}");
            }
        });
    }

    [TestCaseSource(nameof(Structs))]
    public void FieldSets_AreTheSameOnAllSides(AbiStruct s)
    {
        Layout layout = GetLayout();
        CStruct c = layout.Structs[s.CName];
        string[] printed = c.Fields.Select(f => f.Name).ToArray();
        string[] mapped = printed.Select(s.ManagedName).ToArray();
        string[] csharp = ManagedFields(s.Managed).Select(f => f.Name).ToArray();

        Assert.That(layout.HeaderStructs.ContainsKey(s.CName), Is.True, $"typedef struct {s.CName} not found in the header");
        Assert.That(printed, Is.EqualTo(layout.HeaderStructs[s.CName]),
            $"abi_layout.c must print every field of struct {s.CName} as declared in interposer_abi.h, in order");
        Assert.That(csharp, Has.Length.EqualTo(printed.Length),
            $"field count: C# {s.Managed.Name} [{string.Join(", ", csharp)}] vs C {s.CName} [{string.Join(", ", printed)}]");
        Assert.That(csharp, Is.EquivalentTo(mapped), $"C# {s.Managed.Name} fields vs the C fields of {s.CName}");
        foreach (string cs in csharp)
            Assert.That(mapped, Does.Contain(cs), $"C# field {s.Managed.Name}.{cs} has no counterpart in {s.CName}");
    }

    [Test]
    public void EveryHeaderStruct_HasATestRow()
    {
        string[] rows = Structs().Select(d => ((AbiStruct)d.Arguments[0]!).CName).ToArray();
        Layout layout = GetLayout();
        Assert.That(rows, Is.EquivalentTo(layout.HeaderStructs.Keys), "structs in interposer_abi.h vs rows here");
        Assert.That(rows, Is.EquivalentTo(layout.Structs.Keys), "structs printed by abi_layout.c vs rows here");
    }

    [Test]
    public void ManagedStructs_AreBlittable()
    {
        foreach (AbiStruct s in Structs().Select(d => (AbiStruct)d.Arguments[0]!))
        {
            Assert.That(s.Managed.IsValueType, Is.True, s.Managed.Name);
            Assert.That(s.Managed.StructLayoutAttribute?.Value, Is.EqualTo(LayoutKind.Sequential), s.Managed.Name);
            // Marshal.OffsetOf describes the marshalled layout; it is the in-memory layout only for
            // blittable structs, which is what crosses the boundary by pointer.
            Assert.That(Marshal.SizeOf(s.Managed), Is.EqualTo(s.ManagedSize), $"{s.Managed.Name}: marshalled size = real size");
            foreach (FieldInfo f in ManagedFields(s.Managed))
                Assert.That(IsBlittable(f.FieldType), Is.True, $"{s.Managed.Name}.{f.Name} ({f.FieldType}) is not blittable");
        }
    }

    private static bool IsBlittable(Type t) =>
        t.IsPointer || t.IsFunctionPointer
        || t.IsPrimitive && t != typeof(bool) && t != typeof(char)
        || t.IsValueType && !t.IsPrimitive && !t.IsEnum   // a fixed buffer or nested struct
           && t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic).All(f => IsBlittable(f.FieldType));

    public static IEnumerable<TestCaseData> EnumValues()
    {
        (string C, Enum Managed)[] rows =
        {
            ("IP_EV_MALLOC", EventKind.Malloc),
            ("IP_EV_CALLOC", EventKind.Calloc),
            ("IP_EV_REALLOC", EventKind.Realloc),
            ("IP_EV_REALLOCARRAY", EventKind.ReallocArray),
            ("IP_EV_MEMALIGN", EventKind.Memalign),
            ("IP_EV_POSIX_MEMALIGN", EventKind.PosixMemalign),
            ("IP_EV_ALIGNED_ALLOC", EventKind.AlignedAlloc),
            ("IP_EV_VALLOC", EventKind.Valloc),
            ("IP_EV_PVALLOC", EventKind.Pvalloc),
            ("IP_EV_FREE", EventKind.Free),
            ("IP_EV_FREE_STAMPED", EventKind.FreeStamped),
            ("IP_DEFER_EARLY", DeferredReason.Early),
            ("IP_DEFER_NESTED", DeferredReason.Nested),
            ("IP_DEFER_EXITING", DeferredReason.Exiting),
            ("IP_DEFER_LOADER", DeferredReason.Loader),
            ("IP_DEFER_UNREGISTERED", DeferredReason.Unregistered),
            ("IP_DEFER_STACK", DeferredReason.Stack),
            ("IP_REC_DEFERRED", RecordFlags.Deferred),
            ("IP_REC_REPORTED", RecordFlags.Reported),
            ("IP_REC_NO_SCAN", RecordFlags.NoScan),
            ("IP_ANN_NOT_LEAK", Annotation.NotLeak),
            ("IP_ANN_IGNORE", Annotation.Ignore),
            ("IP_ANN_NO_SCAN", Annotation.NoScan),
            ("IP_ANN_ALLOC", Annotation.Alloc),
            ("IP_ANN_SCAN_AREA", Annotation.ScanArea),
            ("IP_SCAN_SIGNAL", ScanReason.Signal),
            ("IP_SCAN_PERIODIC", ScanReason.Periodic),
            ("IP_SCAN_EXIT", ScanReason.Exit),
            ("IP_STW_STOPPED", StwState.Stopped),
            ("IP_STW_RUNNING", StwState.Running),
            ("IP_STW_EXITED", StwState.Exited),
            ("IP_STW_REASON_SECCOMP", StwReason.Seccomp),
            ("IP_STW_RAX", StwReg.Rax),
            ("IP_STW_RBX", StwReg.Rbx),
            ("IP_STW_RCX", StwReg.Rcx),
            ("IP_STW_RDX", StwReg.Rdx),
            ("IP_STW_RSI", StwReg.Rsi),
            ("IP_STW_RDI", StwReg.Rdi),
            ("IP_STW_RBP", StwReg.Rbp),
            ("IP_STW_R8", StwReg.R8),
            ("IP_STW_R9", StwReg.R9),
            ("IP_STW_R10", StwReg.R10),
            ("IP_STW_R11", StwReg.R11),
            ("IP_STW_R12", StwReg.R12),
            ("IP_STW_R13", StwReg.R13),
            ("IP_STW_R14", StwReg.R14),
            ("IP_STW_R15", StwReg.R15),
            ("IP_STW_RIP", StwReg.Rip),
            ("IP_STW_RSP", StwReg.Rsp),
            ("IP_STW_NREGS", StwReg.NRegs),
        };
        foreach ((string c, Enum m) in rows)
            yield return new TestCaseData(c, m).SetArgDisplayNames(c);
    }

    [TestCaseSource(nameof(EnumValues))]
    public void EnumValue_MatchesGcc(string cName, Enum managed)
    {
        Layout layout = GetLayout();
        Assert.That(layout.Enums.ContainsKey(cName), Is.True, $"abi_layout.c prints no 'enum {cName}'");
        Assert.That(Convert.ToInt64(managed), Is.EqualTo(layout.Enums[cName]), $"{cName} vs {managed.GetType().Name}.{managed}");
    }

    private static readonly (string CEnum, Type Managed, string Prefix)[] s_enumTypes =
    {
        ("ip_event_kind", typeof(EventKind), "IP_EV_"),
        ("ip_deferred_reason", typeof(DeferredReason), "IP_DEFER_"),
        ("ip_record_flags", typeof(RecordFlags), "IP_REC_"),
        ("ip_scan_reason", typeof(ScanReason), "IP_SCAN_"),
        ("ip_annotation", typeof(Annotation), "IP_ANN_"),
        ("ip_stw_state", typeof(StwState), "IP_STW_"),
        ("ip_stw_reason", typeof(StwReason), "IP_STW_REASON_"),
        ("ip_stw_reg", typeof(StwReg), "IP_STW_"),
    };

    [Test]
    public void EnumMembers_AreTheSameOnAllSides()
    {
        Layout layout = GetLayout();
        HashSet<string> rows = EnumValues().Select(d => (string)d.Arguments[0]!).ToHashSet();
        Assert.That(layout.HeaderEnums.Keys, Is.EquivalentTo(s_enumTypes.Select(e => e.CEnum)), "enums declared in the header");
        foreach ((string cEnum, Type managed, string prefix) in s_enumTypes)
        {
            List<string> header = layout.HeaderEnums[cEnum];
            Assert.That(header.All(n => n.StartsWith(prefix, StringComparison.Ordinal)), Is.True, $"{cEnum} members: {string.Join(",", header)}");
            Assert.That(header, Is.SubsetOf(rows), $"every member of enum {cEnum} needs a row in EnumValues()");
            Assert.That(header, Is.SubsetOf(layout.Enums.Keys), $"abi_layout.c must print every member of enum {cEnum}");
            // C# members: all of them mapped, except a zero 'None' the C side spells as 0.
            string[] cs = Enum.GetNames(managed).Where(n => !(n == "None" && Convert.ToInt64(Enum.Parse(managed, n)) == 0)).ToArray();
            Assert.That(cs, Has.Length.EqualTo(header.Count),
                $"{managed.Name} [{string.Join(",", cs)}] vs enum {cEnum} [{string.Join(",", header)}]");
        }
    }

    [Test]
    public void Constants_MatchGcc()
    {
        Layout layout = GetLayout();
        Assert.That(layout.Consts.ContainsKey("IP_ABI_VERSION"), Is.True);
        Assert.That(layout.Consts.ContainsKey("IP_DEFERRED_FRAMES"), Is.True);
        Assert.That((long)Interposer.Native.Abi.AbiVersion, Is.EqualTo(layout.Consts["IP_ABI_VERSION"]), "IP_ABI_VERSION");
        Assert.That((long)Interposer.Native.Abi.DeferredFrames, Is.EqualTo(layout.Consts["IP_DEFERRED_FRAMES"]), "IP_DEFERRED_FRAMES");
        Assert.That((long)Interposer.Native.Abi.WalkLevels, Is.EqualTo(layout.Consts["IP_WALK_LEVELS"]), "IP_WALK_LEVELS");
        Assert.That((long)Interposer.Native.Abi.WalkMemoBytes, Is.EqualTo(layout.Consts["IP_WALK_MEMO_BYTES"]), "IP_WALK_MEMO_BYTES");
        IpDeferredEntry d = default;
        long framesBytes = sizeof(IpDeferredEntry) - ((byte*)d.Frames - (byte*)&d);
        Assert.That(framesBytes, Is.EqualTo(8L * layout.Consts["IP_DEFERRED_FRAMES"]), "IpDeferredEntry.Frames length");
        Assert.That((long)Interposer.Native.Abi.FreeBatch, Is.EqualTo(layout.Consts["IP_FREE_BATCH"]), "IP_FREE_BATCH");
        Assert.That(sizeof(IpFreeBatch) - 8, Is.EqualTo(layout.Consts["IP_FREE_BATCH"] * sizeof(IpFreeEntry)), "IpFreeBatch.Entry length");
    }

    /// <summary>The shim stamps a free with a word it reads from the core's shard headers, found
    /// through the core's shard map: the stride, the word's offset, the map's size and the entry an
    /// address reads must be the core's own.</summary>
    [Test]
    public void ShardHeaderLayoutAndMap_MatchTheCore()
    {
        Layout layout = GetLayout();
        Assert.That((long)Interposer.Recording.AllocationTable.ShardHeaderSize, Is.EqualTo(layout.Consts["IP_SHARD_STRIDE"]), "IP_SHARD_STRIDE");
        Assert.That((long)Interposer.Recording.AllocationTable.ShardLastTimeOffset, Is.EqualTo(layout.Consts["IP_SHARD_TIME_OFFSET"]), "IP_SHARD_TIME_OFFSET");
        Assert.That((long)Interposer.Native.Abi.ShardRegionShift, Is.EqualTo(layout.Consts["IP_SHARD_REGION_SHIFT"]), "IP_SHARD_REGION_SHIFT");
        Assert.That((long)Interposer.Native.Abi.ShardMapBits, Is.EqualTo(layout.Consts["IP_SHARD_MAP_BITS"]), "IP_SHARD_MAP_BITS");
        var samples = layout.Consts.Where(kv => kv.Key.StartsWith("IP_SHARD_MAP_INDEX_", StringComparison.Ordinal)).ToList();
        Assert.That(samples, Has.Count.EqualTo(6));
        foreach (var (name, index) in samples)
        {
            ulong address = Convert.ToUInt64(name.Substring("IP_SHARD_MAP_INDEX_".Length), 16);
            Assert.That((long)Interposer.Recording.AllocationTable.ShardMapIndex(address), Is.EqualTo(index), name);
        }
    }

    // ---- gathering the C side ---------------------------------------------------------------

    private sealed record CStruct(long Size, List<(string Name, long Offset)> Fields);

    private sealed class Layout
    {
        public Dictionary<string, CStruct> Structs { get; } = new();
        public Dictionary<string, long> Enums { get; } = new();
        public Dictionary<string, long> Consts { get; } = new();
        public Dictionary<string, List<string>> HeaderStructs { get; } = new();
        public Dictionary<string, List<string>> HeaderEnums { get; } = new();
    }

    private static IEnumerable<FieldInfo> ManagedFields(Type t) =>
        t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic).OrderBy(f => (long)Marshal.OffsetOf(t, f.Name));

    private static Layout GetLayout()
    {
        if (s_layout != null)
            return s_layout;
        string exe = Programs.Build("abi/abi_layout.c");
        RunResult r = Programs.Run(exe, "", preload: false, timeoutSeconds: 60);
        Assert.That(r.ExitCode, Is.Zero, r.ToString());

        var layout = new Layout();
        foreach (string line in r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] w = line.Split(' ');
            switch (w[0])
            {
                case "struct" when w.Length == 4 && w[2] == "size":
                    layout.Structs.Add(w[1], new CStruct(long.Parse(w[3]), new()));
                    break;
                case "field" when w.Length == 3:
                    string[] sf = w[1].Split('.');
                    layout.Structs[sf[0]].Fields.Add((sf[1], long.Parse(w[2])));
                    break;
                case "enum" when w.Length == 3:
                    layout.Enums.Add(w[1], long.Parse(w[2]));
                    break;
                case "const" when w.Length == 3:
                    layout.Consts.Add(w[1], long.Parse(w[2]));
                    break;
                default:
                    Assert.Fail($"unexpected line from abi_layout: '{line}'");
                    break;
            }
        }
        ParseHeader(File.ReadAllText(Path.Combine(Artifacts.ShimDir, "interposer_abi.h")), layout);
        return s_layout = layout;
    }

    /// <summary>Reads the struct and enum bodies of the header: field names in order, enum
    /// member names. Enough C for this header (fixed-width fields, arrays, function pointers).</summary>
    private static void ParseHeader(string text, Layout layout)
    {
        text = Regex.Replace(text, @"/\*.*?\*/", " ", RegexOptions.Singleline);
        text = Regex.Replace(text, @"//[^\n]*", " ");
        foreach (Match m in Regex.Matches(text, @"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", RegexOptions.Singleline))
        {
            var fields = new List<string>();
            foreach (string decl in m.Groups[2].Value.Split(';'))
            {
                string d = decl.Trim();
                if (d.Length == 0)
                    continue;
                Match fp = Regex.Match(d, @"\(\s*\*\s*(\w+)\s*\)");
                Match plain = Regex.Match(d, @"(\w+)\s*(\[[^\]]*\]\s*)*$");
                Assert.That(fp.Success || plain.Success, Is.True, $"cannot read declaration '{d}' in struct {m.Groups[1].Value}");
                Assert.That(Regex.Replace(d, @"\([^()]*\)", "").Contains(','), Is.False, $"one field per declaration, please: '{d}'");
                fields.Add(fp.Success ? fp.Groups[1].Value : plain.Groups[1].Value);
            }
            layout.HeaderStructs.Add(m.Groups[1].Value, fields);
        }
        foreach (Match m in Regex.Matches(text, @"enum\s+(\w+)\s*\{(.*?)\}\s*;", RegexOptions.Singleline))
        {
            var members = m.Groups[2].Value.Split(',')
                .Select(x => x.Split('=')[0].Trim())
                .Where(x => x.Length > 0).ToList();
            layout.HeaderEnums.Add(m.Groups[1].Value, members);
        }
    }
}
