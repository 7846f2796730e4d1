// mass_free_at_exit.cpp — very many frees after a thread has been marked exiting, where they can
// only go to the library's deferred log:
//   mass_free_at_exit global N   a global std::map<int, std::string> of N entries, destroyed by
//                                exit() after main returns (2 frees per entry: node + string)
//   mass_free_at_exit thread N   a thread whose pthread key destructor frees a list of N nodes;
//                                the main thread waits in pthread_join meanwhile
//   mass_free_at_exit fork N     the global map is filled, then a fork child exit()s: the child
//                                destroys its copy of the map (the library's helper threads do
//                                not exist in a fork child)
// Prints "filled N"; in thread mode also "record delta D" on stderr (live_blocks() after the
// join minus before the thread: the list is gone, at most the thread's cached DTV stays).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <map>
#include <string>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>
extern "C" {
#include "../interposer_test.h"
}

static std::map<int, std::string> g_map;

static pthread_key_t s_key;
struct Node { Node *next; char pad[24]; };

static void free_list(void *v)
{
    for (Node *n = static_cast<Node *>(v); n != nullptr;) {
        Node *next = n->next;
        free(n);
        n = next;
    }
}

static void *build_list(void *arg)
{
    long count = reinterpret_cast<long>(arg);
    Node *head = nullptr;
    for (long i = 0; i < count; i++) {
        Node *n = static_cast<Node *>(malloc(sizeof *n));
        n->next = head;
        head = n;
    }
    pthread_setspecific(s_key, head);
    return nullptr;
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: mass_free_at_exit global|thread N\n"); return 2; }
    long n = atol(argv[2]);
    setvbuf(stdout, nullptr, _IONBF, 0);
    if (strcmp(argv[1], "global") == 0) {
        for (long i = 0; i < n; i++)
            g_map[(int)i] = std::string(40, 'x');
        printf("filled %zu\n", g_map.size());
        return 0;
    }
    if (strcmp(argv[1], "fork") == 0) {
        for (long i = 0; i < n; i++)
            g_map[(int)i] = std::string(40, 'x');
        printf("filled %zu\n", g_map.size());
        pid_t pid = fork();
        if (pid < 0)
            return 3;
        if (pid == 0)
            exit(0);
        int status = 0;
        waitpid(pid, &status, 0);
        printf("child status %#x\n", status);
        return 0;
    }
    pthread_key_create(&s_key, free_list);
    int64_t before = live_blocks();
    pthread_t t;
    if (pthread_create(&t, nullptr, build_list, reinterpret_cast<void *>(n)) != 0)
        return 3;
    pthread_join(t, nullptr);
    int64_t after = live_blocks();
    printf("filled %ld\n", n);
    fprintf(stderr, "record delta %ld\n", (long)(after - before));
    return 0;
}
