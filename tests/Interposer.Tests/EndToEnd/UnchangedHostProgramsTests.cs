// UnchangedHostProgramsTests.cs — real programs behave exactly the same with the library
// preloaded: byte-identical stdout, the same exit status, and not a word from the library on
// stderr. (Requirement 1 of the end-to-end suite.)
using System.Collections.Generic;
using System.IO;
using System.Text;
using Interposer.Tests.Support;
using NUnit.Framework;

namespace Interposer.Tests.EndToEnd;

[TestFixture]
public sealed class UnchangedHostProgramsTests
{
    private static void AssertSameBehaviour(RunResult plain, RunResult preloaded, string what)
    {
        Assert.That(plain.TimedOut, Is.False, $"{what} without the library hung:\n{plain}");
        Assert.That(preloaded.TimedOut, Is.False, $"{what} with the library hung:\n{preloaded}");
        Assert.Multiple(() =>
        {
            Assert.That(preloaded.ExitCode, Is.EqualTo(plain.ExitCode), $"{what}: exit status changed\n{preloaded}");
            Assert.That(preloaded.StdoutBytes, Is.EqualTo(plain.StdoutBytes), $"{what}: stdout changed");
            E2E.AssertNoLibraryMessages(preloaded, what);
        });
    }

    [Test]
    public void LsLongListing_IsUnchanged()
    {
        var (plain, preloaded) = E2E.RunBoth("/bin/ls", "-la /usr/lib", env: new Dictionary<string, string> { ["LC_ALL"] = "C" });
        Assert.That(plain.ExitCode, Is.EqualTo(0), plain.ToString());
        Assert.That(plain.Stdout, Does.Contain("x86_64-linux-gnu"));
        AssertSameBehaviour(plain, preloaded, "ls -la /usr/lib");
    }

    private const string PythonScript = """
        import json, sqlite3, threading, hashlib

        results = {}
        lock = threading.Lock()

        def worker(n):
            data = [{"id": i, "name": "item-%d-%d" % (n, i), "tags": ["t%d" % (i % 7)] * (i % 5)} for i in range(2000)]
            text = json.dumps(data, sort_keys=True)
            back = json.loads(text)
            digest = hashlib.sha256(text.encode()).hexdigest()
            with lock:
                results[n] = (len(back), digest)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        for n in sorted(results): print(n, *results[n])

        db = sqlite3.connect(":memory:")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT)")
        db.executemany("INSERT INTO t (doc) VALUES (?)", [(json.dumps({"k": i, "v": "x" * (i % 50)}),) for i in range(5000)])
        db.commit()
        print(db.execute("SELECT count(*), sum(length(doc)) FROM t").fetchone())
        print(db.execute("SELECT doc FROM t WHERE id IN (1, 777, 5000) ORDER BY id").fetchall())
        """;

    [Test]
    public void Python3WithThreadsJsonAndSqlite_IsUnchanged()
    {
        using var dir = new TempDir("python");
        string script = dir.File("script.py");
        File.WriteAllText(script, PythonScript.Replace("\r\n", "\n") + "\n");
        var (plain, preloaded) = E2E.RunBoth("python3", Programs.Quote(script), workingDirectory: dir.Path);
        Assert.That(plain.ExitCode, Is.EqualTo(0), plain.ToString());
        Assert.That(plain.Stdout, Does.Contain("(5000, "));
        AssertSameBehaviour(plain, preloaded, "python3 script.py");
    }

    private static string InsertScript(int rows)
    {
        var sql = new StringBuilder();
        sql.Append("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, value REAL, blob BLOB);\n");
        sql.Append("CREATE INDEX t_name ON t(name);\n");
        sql.Append("BEGIN;\n");
        for (int i = 0; i < rows; i++)
            sql.Append($"INSERT INTO t (name, value, blob) VALUES ('name{i % 997}-{i}', {i} * 1.5, zeroblob({i % 300}));\n");
        sql.Append("COMMIT;\n");
        sql.Append("SELECT count(*), sum(value), max(name), sum(length(blob)) FROM t;\n");
        sql.Append("SELECT name, value FROM t WHERE id % 1009 = 0 ORDER BY name;\n");
        sql.Append("UPDATE t SET name = upper(name) WHERE id % 3 = 0;\n");
        sql.Append("DELETE FROM t WHERE id % 5 = 0;\n");
        sql.Append("VACUUM;\n");
        sql.Append("SELECT count(*), group_concat(name, ',') FROM (SELECT name FROM t ORDER BY name LIMIT 20);\n");
        return sql.ToString();
    }

    [TestCase(":memory:")]
    [TestCase("file")]
    public void Sqlite3CliWithThousandsOfInserts_IsUnchanged(string database)
    {
        using var dir = new TempDir("sqlite");
        string sql = InsertScript(6000);
        string Db(string name) => database == "file" ? Programs.Quote(dir.File(name)) : database;
        RunResult plain = Programs.Run("sqlite3", Db("plain.db"), preload: false, stdin: sql, workingDirectory: dir.Path);
        RunResult preloaded = Programs.Run("sqlite3", Db("preloaded.db"), preload: true, stdin: sql, workingDirectory: dir.Path);
        Assert.That(plain.ExitCode, Is.EqualTo(0), plain.ToString());
        Assert.That(plain.Stdout, Does.StartWith("6000|"));
        AssertSameBehaviour(plain, preloaded, "sqlite3 < inserts.sql");
    }

    [Test]
    public void GitLogPatch_IsUnchanged()
    {
        using var dir = new TempDir("git");
        var env = new Dictionary<string, string>
        {
            ["GIT_CONFIG_NOSYSTEM"] = "1",
            ["HOME"] = dir.Path,
            ["GIT_AUTHOR_DATE"] = "2024-01-02T03:04:05Z",
            ["GIT_COMMITTER_DATE"] = "2024-01-02T03:04:05Z",
            ["LC_ALL"] = "C",
            ["GIT_PAGER"] = "cat",
        };
        string repo = Path.Combine(dir.Path, "repo");
        const string identity = "-c user.name=Interposer -c user.email=interposer@example.invalid -c init.defaultBranch=main";
        void Git(string args)
        {
            RunResult r = Programs.Run("git", $"{identity} {args}", preload: false, env: env, workingDirectory: repo);
            Assert.That(r.ExitCode, Is.EqualTo(0), $"git {args}:\n{r}");
        }
        Directory.CreateDirectory(repo);
        Git("init -q");
        for (int c = 0; c < 12; c++)
        {
            for (int f = 0; f < 4; f++)
            {
                var text = new StringBuilder();
                for (int l = 0; l < 60; l++)
                    text.Append($"file {f} line {l} revision {(l % (c + 2) == 0 ? c : 0)}\n");
                File.WriteAllText(Path.Combine(repo, $"file{f}.txt"), text.ToString());
            }
            Git("add -A");
            Git($"commit -q -m \"commit {c}\"");
        }
        var (plain, preloaded) = E2E.RunBoth("git", $"{identity} log -p --stat", env: env, workingDirectory: repo);
        Assert.That(plain.ExitCode, Is.EqualTo(0), plain.ToString());
        Assert.That(plain.Stdout, Does.Contain("commit 11").And.Contain("diff --git"));
        AssertSameBehaviour(plain, preloaded, "git log -p");
    }

    [Test]
    public void GccCompile_IsUnchanged()
    {
        using var dir = new TempDir("gcc");
        const string source = """
            #include <stdio.h>
            #include <stdlib.h>
            #include <string.h>
            struct node { struct node *next; char name[32]; };
            static struct node *push(struct node *head, const char *name)
            {
                struct node *n = malloc(sizeof *n);
                strncpy(n->name, name, sizeof n->name - 1);
                n->name[sizeof n->name - 1] = 0;
                n->next = head;
                return n;
            }
            int count(int argc, char **argv)
            {
                struct node *head = NULL;
                for (int i = 0; i < argc; i++) head = push(head, argv[i]);
                int n = 0;
                for (struct node *p = head; p; p = p->next) n += printf("%s\n", p->name);
                return n;
            }
            """;
        File.WriteAllText(dir.File("unit.c"), source);
        string args(string output) => $"-O2 -Wall -c unit.c -o {output}";
        RunResult plain = Programs.Run("gcc", args("plain.o"), preload: false, workingDirectory: dir.Path);
        RunResult preloaded = Programs.Run("gcc", args("preloaded.o"), preload: true, workingDirectory: dir.Path);
        Assert.That(plain.ExitCode, Is.EqualTo(0), plain.ToString());
        AssertSameBehaviour(plain, preloaded, "gcc -c unit.c");
        Assert.That(File.ReadAllBytes(dir.File("preloaded.o")), Is.EqualTo(File.ReadAllBytes(dir.File("plain.o"))),
                    "gcc -c produced a different object file under the library");

        // The assembly on stdout, too (cc1 is the allocation-heavy part).
        var (plainAsm, preloadedAsm) = E2E.RunBoth("gcc", "-O2 -S -o - unit.c", workingDirectory: dir.Path);
        Assert.That(plainAsm.Stdout, Does.Contain("count:"));
        AssertSameBehaviour(plainAsm, preloadedAsm, "gcc -S -o - unit.c");
    }

    [Test]
    public void YesPipedIntoHead_StillDiesOfSigpipe()
    {
        const string command = "yes | head -1; exit ${PIPESTATUS[0]}";
        RunResult plain = Programs.Shell(command, preload: false, timeoutSeconds: 30);
        RunResult preloaded = Programs.Shell(command, preload: true, timeoutSeconds: 30);
        Assert.That(plain.ExitCode, Is.EqualTo(141), $"baseline: yes should die of SIGPIPE (128+13)\n{plain}");
        AssertSameBehaviour(plain, preloaded, "yes | head -1");
        Assert.That(preloaded.Stdout, Is.EqualTo("y\n"));
    }
}
