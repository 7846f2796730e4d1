// backtrace_names.cpp — allocates one block in each of several named functions, prints
//     <function> <address>
// for each, then writes the live-block dump to argv[1]. The test finds each address in the dump
// and checks its backtrace names the function (below strdup / operator new when the allocation
// went through them).
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
extern "C" {
#include "../interposer_test.h"
}

static void *volatile g_sink;

// noinline + a store after the call: no inlining and no tail call, so each function has a frame.
#define ALLOCATOR extern "C" __attribute__((noinline)) void *

ALLOCATOR bt_malloc(void) { void *p = malloc(41); g_sink = p; return p; }
ALLOCATOR bt_calloc(void) { void *p = calloc(3, 17); g_sink = p; return p; }
ALLOCATOR bt_realloc(void) { void *p = realloc(nullptr, 43); g_sink = p; return p; }
ALLOCATOR bt_posix_memalign(void) { void *p = nullptr; if (posix_memalign(&p, 64, 44)) abort(); g_sink = p; return p; }
ALLOCATOR bt_strdup(void) { void *p = strdup("duplicated by bt_strdup"); g_sink = p; return p; }
ALLOCATOR bt_operator_new(void) { void *p = new long[6]; g_sink = p; return p; }
ALLOCATOR bt_std_string(void) { void *p = new std::string(200, 's'); g_sink = p; return p; }

ALLOCATOR bt_inner(void) { void *p = malloc(47); g_sink = p; return p; }
ALLOCATOR bt_outer(void) { void *p = bt_inner(); g_sink = p; return p; }

static void *s_thread_block;
ALLOCATOR bt_in_thread(void) { void *p = malloc(48); g_sink = p; return p; }
static void *thread_main(void *) { s_thread_block = bt_in_thread(); return nullptr; }

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: backtrace_names DUMP\n"); return 2; }
    setvbuf(stdout, nullptr, _IONBF, 0);
    struct { const char *name; void *p; } b[] = {
        {"bt_malloc", bt_malloc()},
        {"bt_calloc", bt_calloc()},
        {"bt_realloc", bt_realloc()},
        {"bt_posix_memalign", bt_posix_memalign()},
        {"bt_strdup", bt_strdup()},
        {"bt_operator_new", bt_operator_new()},
        {"bt_outer", bt_outer()},
        {"bt_in_thread", nullptr},
    };
    pthread_t th;
    pthread_create(&th, nullptr, thread_main, nullptr);
    pthread_join(th, nullptr);
    b[7].p = s_thread_block;
    std::string *s = static_cast<std::string *>(bt_std_string());
    for (auto &e : b)
        printf("%s %#lx\n", e.name, (unsigned long)(uintptr_t)e.p);
    printf("bt_std_string %#lx\n", (unsigned long)(uintptr_t)s->data());
    int rc = dump_live(argv[1]);
    printf("dump %d\n", rc);
    return 0;
}
