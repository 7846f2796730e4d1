// thread_local_dtors.cpp — C++ thread_local objects whose destructors free heap memory, with the
// object constructed (its destructor registered through __cxa_thread_atexit) both BEFORE the
// thread's own first malloc and AFTER it. The library registers its thread-exit hook on a
// thread's first allocation event. (Note: glibc's __cxa_thread_atexit_impl itself callocs the
// list entry, so for the "before" object that calloc is the thread's first event: the library's
// hook is registered inside it, and the object's destructor still ends up running before it.
// Either way, destructors that free and allocate at thread exit must be harmless.)
// Prints "threads N destructors D" and on stderr "record delta X".
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <atomic>
#include <string>
#include <vector>
extern "C" {
#include "../interposer_test.h"
}

static std::atomic<int> s_destructors{0};

// Constructing this does not allocate: its destructor is registered before any malloc.
struct Lazy {
    char *p = nullptr;
    std::vector<std::string> names;
    ~Lazy()
    {
        free(p);
        names.clear();
        names.shrink_to_fit();
        void *scratch = malloc(64); // a destructor that allocates too
        free(scratch);
        s_destructors++;
    }
};

// Constructing this allocates.
struct Eager {
    char *p;
    std::string s;
    Eager() : p(static_cast<char *>(malloc(256))), s(300, 'e') { memset(p, 1, 256); }
    ~Eager()
    {
        free(p);
        s_destructors++;
    }
};

thread_local Lazy t_lazy;
thread_local Eager t_eager;

// Object constructed before the thread's first malloc, then given heap memory; then an object
// constructed after.
static void *lazy_first(void *)
{
    Lazy &l = t_lazy;           // registers ~Lazy; no allocation so far on this thread
    l.p = static_cast<char *>(malloc(100));
    l.names.push_back(std::string(50, 'n'));
    t_eager.s += "x";           // constructs Eager (allocates) after the first malloc
    return nullptr;
}

// malloc first, then both objects.
static void *malloc_first(void *)
{
    void *first = malloc(10);
    t_eager.s += "y";
    t_lazy.p = static_cast<char *>(malloc(200));
    t_lazy.names.push_back(std::string(70, 'm'));
    free(first);
    return nullptr;
}

int main()
{
    setvbuf(stdout, nullptr, _IONBF, 0);
    enum { ROUNDS = 10, PER_ROUND = 8 };
    int64_t before = live_blocks();
    for (int r = 0; r < ROUNDS; r++) {
        pthread_t th[PER_ROUND];
        for (int i = 0; i < PER_ROUND; i++)
            if (pthread_create(&th[i], nullptr, (i & 1) ? lazy_first : malloc_first, nullptr) != 0)
                return 3;
        for (int i = 0; i < PER_ROUND; i++)
            pthread_join(th[i], nullptr);
    }
    int64_t after = live_blocks();
    printf("threads %d destructors %d\n", ROUNDS * PER_ROUND, s_destructors.load());
    fprintf(stderr, "record delta %ld\n", (long)(after - before));
    return 0;
}
