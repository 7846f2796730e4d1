/* leaky.c — the bundled demo: a small "service" that leaks in recognisable ways, keeps some
   memory legitimately, then waits (pause) until it is terminated. scripts/demo.sh sends it
   SIGUSR2, which makes Interposer scan it and write the leak report, then SIGTERM. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct session { char *user; struct session *next; };

static struct session *g_sessions;   /* reachable: never reported */

__attribute__((noinline)) static struct session *open_session(const char *user)
{
    struct session *s = malloc(sizeof *s);
    s->user = strdup(user);
    s->next = g_sessions;
    g_sessions = s;
    return s;
}

__attribute__((noinline)) static void leak_request_buffer(int n)
{
    char *buf = malloc(256);            /* leaked: the pointer dies with this frame */
    snprintf(buf, 256, "request %d", n);
}

static volatile int g_register_ghosts;  /* the bug: never set, so the session below is lost */

__attribute__((noinline)) static void leak_lost_session(void)
{
    struct session *s = malloc(sizeof *s);  /* leaked with its child: a small tree */
    s->user = strdup("ghost");
    s->next = NULL;
    if (g_register_ghosts)
        g_sessions = s;
}

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++)
        leak_request_buffer(i);
    leak_lost_session();
    return NULL;
}

int main(void)
{
    open_session("alice");
    open_session("bob");
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    printf("leaky: pid %d ready\n", (int)getpid());
    fflush(stdout);
    for (;;)
        pause(); /* returns after each SIGUSR2 (Interposer's handler ran); SIGTERM ends us */
}
