/* symtest.c: a tiny object for the symbolizer tests (tests/Interposer.Tests/Symbols).
 * Built at test time, unstripped, -O0 so every function keeps its own body:
 *   gcc -O0 -shared -fPIC -o libsymtest.so symtest.c       (loaded in-process)
 *   gcc -O0 -no-pie -DSYMTEST_MAIN -o symtest-exec symtest.c  (ET_EXEC, read from disk only)
 * symtest_hidden is static: it is in .symtab but not .dynsym, so only a .symtab reader names it.
 */

int symtest_exported(int x)
{
    return x * 3 + 1;
}

static int symtest_hidden(int x)
{
    return x * 7 + 2;
}

/* Exported getter, so the test can take the static function's address through dlsym. */
void *symtest_hidden_address(void)
{
    return (void *)&symtest_hidden;
}

#ifdef SYMTEST_MAIN
int main(void)
{
    return symtest_exported(1) == 4 && symtest_hidden(1) == 9 ? 0 : 1;
}
#endif
