// count_mix.cpp — makes a known number of allocations of every kind the library interposes (and
// some that reach malloc through libc and libstdc++), frees a known number of them, and prints
//     expected E actual A
// where E = allocations kept and A = live_blocks() after minus before.
//   count_mix            one thread
//   count_mix threads    8 threads, each doing the same mix between two barriers, so thread
//                        creation and exit happen outside the measured window
// A final line "after-free-all expected 0 actual A" checks that freeing everything returns the
// count to where it started.
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <string>
#include <vector>
// interposer_test.h has no extern "C" of its own (its declarations would be mangled in C++).
extern "C" {
#include "../interposer_test.h"
}

enum Kind { K_MALLOC, K_CALLOC, K_REALLOC_CHAIN, K_REALLOCARRAY, K_POSIX_MEMALIGN, K_ALIGNED_ALLOC,
            K_MEMALIGN, K_VALLOC, K_PVALLOC, K_STRDUP, K_ASPRINTF, K_GETLINE, K_NEW, K_NEW_ARRAY,
            K_STRING, K_VECTOR, K_COUNT };

struct Obj { long a, b, c; std::string name; };

struct Item {
    Kind kind;
    void *p;
};

static const char *s_input_path;

static Item make(Kind k, int i)
{
    Item it{k, nullptr};
    switch (k) {
    case K_MALLOC: it.p = malloc(8 + i % 300); break;
    case K_CALLOC: it.p = calloc(1 + i % 7, 24); break;
    case K_REALLOC_CHAIN: {
        void *p = malloc(1);
        for (int j = 1; j <= 12; j++)
            p = realloc(p, (size_t)j * 97);
        it.p = p;
        break;
    }
    case K_REALLOCARRAY: {
        void *p = reallocarray(nullptr, 4, 16);
        it.p = reallocarray(p, 40 + i % 10, 16);
        break;
    }
    case K_POSIX_MEMALIGN: {
        void *p = nullptr;
        if (posix_memalign(&p, 64, 100 + i) != 0) abort();
        it.p = p;
        break;
    }
    case K_ALIGNED_ALLOC: it.p = aligned_alloc(128, 256); break;
    case K_MEMALIGN: it.p = memalign(32, 48 + i); break;
    case K_VALLOC: it.p = valloc(100); break;
    case K_PVALLOC: it.p = pvalloc(5000); break;
    case K_STRDUP: it.p = strdup("a string long enough to be worth duplicating"); break;
    case K_ASPRINTF: {
        char *s = nullptr;
        if (asprintf(&s, "item %d of kind %d: %0200d", i, (int)k, i) < 0) abort();
        it.p = s;
        break;
    }
    case K_GETLINE: {
        // fopen/fclose allocate and free the FILE and its buffer; only getline's line stays.
        FILE *f = fopen(s_input_path, "r");
        if (f == nullptr) abort();
        char *line = nullptr;
        size_t cap = 0;
        for (int j = 0; j <= i % 3; j++)
            if (getline(&line, &cap, f) < 0) abort();
        fclose(f);
        it.p = line;
        break;
    }
    case K_NEW: it.p = new Obj{1, 2, 3, std::string()}; break;
    case K_NEW_ARRAY: it.p = new int[10 + i % 50]; break;
    case K_STRING: it.p = new std::string(100 + i % 20, 'x'); break; // the object + its heap buffer
    case K_VECTOR: {
        auto *v = new std::vector<int>();
        for (int j = 0; j < 1000; j++) v->push_back(j); // growth reallocates: one buffer survives
        it.p = v;
        break;
    }
    default: abort();
    }
    if (it.p == nullptr) abort();
    return it;
}

/* Blocks an item holds. */
static int blocks(Kind k) { return k == K_STRING || k == K_VECTOR ? 2 : 1; }

static void destroy(const Item &it)
{
    switch (it.kind) {
    case K_NEW: delete static_cast<Obj *>(it.p); break;
    case K_NEW_ARRAY: delete[] static_cast<int *>(it.p); break;
    case K_STRING: delete static_cast<std::string *>(it.p); break;
    case K_VECTOR: delete static_cast<std::vector<int> *>(it.p); break;
    default: free(it.p); break;
    }
}

struct Work {
    int rounds;
    Item *items;
    int nitems;
    long kept;     // blocks still live after the mix
};

// rounds x every kind; every third item is freed right away, the rest stay.
static void mix(Work *w)
{
    int n = 0;
    w->kept = 0;
    for (int r = 0; r < w->rounds; r++) {
        for (int k = 0; k < K_COUNT; k++) {
            Item it = make((Kind)k, r);
            if ((r + k) % 3 == 0) {
                destroy(it);
            } else {
                w->items[n++] = it;
                w->kept += blocks(it.kind);
            }
        }
    }
    w->nitems = n;
}

static void free_all(Work *w)
{
    for (int i = 0; i < w->nitems; i++)
        destroy(w->items[i]);
    w->nitems = 0;
}

enum { THREADS = 8, ROUNDS = 40 };
static pthread_barrier_t s_ready, s_go, s_mixed, s_measured, s_freed, s_done;
static Work s_work[THREADS];

static void *worker(void *arg)
{
    Work *w = static_cast<Work *>(arg);
    pthread_barrier_wait(&s_ready);
    pthread_barrier_wait(&s_go);
    mix(w);
    pthread_barrier_wait(&s_mixed);
    pthread_barrier_wait(&s_measured);
    free_all(w);
    pthread_barrier_wait(&s_freed);
    pthread_barrier_wait(&s_done);
    return nullptr;
}

int main(int argc, char **argv)
{
    s_input_path = argc > 2 ? argv[2] : "/proc/self/exe";
    char input_template[] = "/tmp/count_mix_input_XXXXXX";
    int fd = mkstemp(input_template);
    if (fd < 0) { perror("mkstemp"); return 2; }
    const char text[] = "first line of the getline input\nsecond line, a little longer than the first\nthird\n";
    if (write(fd, text, sizeof text - 1) != (ssize_t)(sizeof text - 1)) return 2;
    close(fd);
    s_input_path = input_template;
    setvbuf(stdout, nullptr, _IONBF, 0); // printf must not allocate a buffer mid-measurement
    bool threaded = argc > 1 && strcmp(argv[1], "threads") == 0;
    long expected = 0;
    int64_t before, after, after_free;
    if (!threaded) {
        static Item items[ROUNDS * K_COUNT];
        Work w{ROUNDS, items, 0, 0};
        before = live_blocks();
        mix(&w);
        after = live_blocks();
        expected = w.kept;
        free_all(&w);
        after_free = live_blocks();
    } else {
        pthread_barrier_init(&s_ready, nullptr, THREADS + 1);
        pthread_barrier_init(&s_go, nullptr, THREADS + 1);
        pthread_barrier_init(&s_mixed, nullptr, THREADS + 1);
        pthread_barrier_init(&s_measured, nullptr, THREADS + 1);
        pthread_barrier_init(&s_freed, nullptr, THREADS + 1);
        pthread_barrier_init(&s_done, nullptr, THREADS + 1);
        static Item items[THREADS][ROUNDS * K_COUNT];
        pthread_t th[THREADS];
        for (int t = 0; t < THREADS; t++) {
            s_work[t] = Work{ROUNDS, items[t], 0, 0};
            pthread_create(&th[t], nullptr, worker, &s_work[t]);
        }
        pthread_barrier_wait(&s_ready); // every thread exists and is idle
        before = live_blocks();
        pthread_barrier_wait(&s_go);
        pthread_barrier_wait(&s_mixed);
        after = live_blocks();
        for (int t = 0; t < THREADS; t++)
            expected += s_work[t].kept;
        pthread_barrier_wait(&s_measured);
        pthread_barrier_wait(&s_freed);
        after_free = live_blocks();
        pthread_barrier_wait(&s_done);
        for (int t = 0; t < THREADS; t++)
            pthread_join(th[t], nullptr);
    }
    unlink(input_template);
    printf("expected %ld actual %ld\n", expected, (long)(after - before));
    printf("after-free-all expected 0 actual %ld\n", (long)(after_free - before));
    return 0;
}
