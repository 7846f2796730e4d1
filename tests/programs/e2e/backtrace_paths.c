/* backtrace_paths.c — many allocations from many call paths, interleaved so a thread's
   consecutive walks share some outer frames and differ in others (the fast unwinder's per-thread
   walk cache must never hand out a stale suffix). Each block's size encodes its path:
       size = 1000 + 100 * path + depth
   for main -> rounds -> one -> path<P> -> common (depth+1 levels, recursive) -> malloc/calloc/realloc,
   with alloca in the odd paths (rbp-based frames whose size differs between calls). Also
   4 threads doing the same. Writes the dump to argv[1]; the test checks every block's frames
   against the path its size names, and compares the unwinders with each other. */
#include <alloca.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../interposer_test.h"

#define PATHS 6
#define MAXDEPTH 5
static void *volatile s_sink;
static void *s_keep[5][PATHS][MAXDEPTH + 1];

/* What to allocate comes through (thread-local) globals, not arguments: nothing path-specific reaches common's
   registers, so walks from different paths at the same depth start from identical (pc, sp, bp). */
static __thread size_t s_size;
static __thread int s_how;

__attribute__((noinline)) static void *common(int left)
{
    void *p;
    if (left > 0) {
        p = common(left - 1);
    } else if (s_how == 0) {
        p = malloc(s_size);
    } else if (s_how == 1) {
        p = calloc(1, s_size);
    } else {
        p = realloc(NULL, s_size);
    }
    __asm__ volatile("" ::: "memory"); /* no tail call */
    return p;
}

#define PATH_FN(k)                                                                                \
    __attribute__((noinline)) static void *path##k(int depth)                                     \
    {                                                                                             \
        if ((k) & 1) {                                                                            \
            char *pad = alloca(16 + 48 * (size_t)depth);                                          \
            memset(pad, k, 16);                                                                   \
            s_sink = pad;                                                                         \
        }                                                                                         \
        void *p = common(depth);                                                                  \
        __asm__ volatile("" ::: "memory");                                                        \
        return p;                                                                                 \
    }
PATH_FN(0) PATH_FN(1) PATH_FN(2) PATH_FN(3) PATH_FN(4) PATH_FN(5)
static void *(*const s_paths[PATHS])(int) = {path0, path1, path2, path3, path4, path5};

/* The slot to fill also goes through a thread-local, so no callee-saved register holds a
   path-specific value across the call either. */
static __thread void **s_slot;

__attribute__((noinline)) static void one(int slot, int path, int depth, int how)
{
    s_size = 1000 + 100 * (size_t)path + (size_t)depth;
    s_how = how;
    s_slot = &s_keep[slot][path][depth];
    void *p = s_paths[path](depth);
    free(*s_slot);
    *s_slot = p;
}

/* Every (path, depth) many times; only the last blocks are kept. Even rounds interleave paths
   and depths; odd rounds (the last one included) call path0, path2, path4 back to back at the same depth from three
   call sites: identical frame sizes and registers, so each walk meets the previous walk's
   levels at the same (pc, sp, bp) while the outer return addresses differ. */
static void rounds(int slot)
{
    for (int r = 0; r < 40; r++) {
        int how = (r / 2) % 3;
        if ((r & 1) == 0) {
            for (int i = 0; i < PATHS * (MAXDEPTH + 1); i++) {
                int x = (i * 7 + r * 5) % (PATHS * (MAXDEPTH + 1));
                one(slot, x % PATHS, x / PATHS, (i + r) % 3);
            }
        } else {
            for (int depth = 0; depth <= MAXDEPTH; depth++) {
                one(slot, 0, depth, how);
                one(slot, 2, depth, how);
                one(slot, 4, depth, how);
                one(slot, 1, depth, how);
                one(slot, 3, depth, how);
                one(slot, 5, depth, how);
            }
        }
    }
}

static void *thread_main(void *arg)
{
    rounds((int)(long)arg);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: backtrace_paths DUMP\n"); return 2; }
    pthread_t th[4];
    for (long i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, thread_main, (void *)(i + 1));
    rounds(0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    printf("dump %d\n", dump_live(argv[1]));
    return 0;
}
