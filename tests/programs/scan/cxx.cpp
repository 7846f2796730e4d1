// cxx.cpp — C++ allocations through operator new (libstdc++ calls malloc): leaked ones are
// reported, held ones are not. Same protocol as roots.c: KEEP/LEAK lines, then one scan.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include "../interposer_test.h"

#define NOINLINE __attribute__((noinline))

struct Node { Node *next; int value; };

static std::vector<int> *g_vector;   // held: a global vector (its buffer too)
static std::string *g_string;

static NOINLINE void scrub()
{
    volatile char pad[16384];
    memset(const_cast<char *>(pad), 0, sizeof pad);
}

static NOINLINE void make_leaks()
{
    Node *n = new Node{nullptr, 1};
    std::printf("LEAK %p\n", static_cast<void *>(n));
    int *array = new int[100];
    array[0] = 7;
    std::printf("LEAK %p\n", static_cast<void *>(array));
    auto *s = new std::string(200, 'x');           // the object and its heap buffer
    std::printf("LEAK %p\n", static_cast<void *>(s));
    std::printf("LEAK %p\n", static_cast<const void *>(s->data()));
    auto *v = new std::vector<long>(50, 3);
    std::printf("LEAK %p\n", static_cast<void *>(v));
    std::printf("LEAK %p\n", static_cast<void *>(v->data()));
}

static NOINLINE void make_kept()
{
    g_vector = new std::vector<int>(1000, 1);
    std::printf("KEEP %p\n", static_cast<void *>(g_vector));
    std::printf("KEEP %p\n", static_cast<void *>(g_vector->data()));
    g_string = new std::string(300, 'k');
    std::printf("KEEP %p\n", static_cast<void *>(g_string));
    std::printf("KEEP %p\n", static_cast<const void *>(g_string->data()));
    // Freed correctly: never reported.
    delete new Node{nullptr, 2};
    delete[] new char[64];
}

int main()
{
    std::setvbuf(stdout, nullptr, _IOFBF, 1 << 16);
    make_leaks();
    make_kept();
    std::fflush(stdout);
    scrub();
    std::printf("SCANNED %d\n", scan_now());
    return 0;
}
