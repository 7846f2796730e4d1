/* alt_stacks.c — allocations made off the thread's normal stack: on a makecontext coroutine
   whose stack is a heap block, and in a signal handler running on a sigaltstack. An unwinder
   must not read outside what it can prove is stack memory (and must not crash); the block's
   first frame still names the allocating function.
     alt_stacks DUMP
   Prints "coroutine <addr>", "signal <addr>", "dump <rc>". */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include "../interposer_test.h"

static ucontext_t s_main_ctx, s_co_ctx;
static void *volatile s_co_block, *volatile s_sig_block;

__attribute__((noinline)) static void co_alloc(void)
{
    s_co_block = malloc(333);
    __asm__ volatile("" ::: "memory");
}

static void co_main(void)
{
    for (int i = 0; i < 1000; i++)
        free(malloc(50 + i));
    co_alloc();
    swapcontext(&s_co_ctx, &s_main_ctx);
}

__attribute__((noinline)) static void sig_alloc(void)
{
    s_sig_block = malloc(444);
    __asm__ volatile("" ::: "memory");
}

static void handler(int sig)
{
    (void)sig;
    sig_alloc();
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: alt_stacks DUMP\n"); return 2; }
    setvbuf(stdout, NULL, _IONBF, 0);
    size_t size = 64 * 1024;
    getcontext(&s_co_ctx);
    s_co_ctx.uc_stack.ss_sp = malloc(size);
    s_co_ctx.uc_stack.ss_size = size;
    s_co_ctx.uc_link = &s_main_ctx;
    makecontext(&s_co_ctx, co_main, 0);
    swapcontext(&s_main_ctx, &s_co_ctx);
    printf("coroutine %#lx\n", (unsigned long)(uintptr_t)s_co_block);

    stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    printf("signal %#lx\n", (unsigned long)(uintptr_t)s_sig_block);
    printf("dump %d\n", dump_live(argv[1]));
    return 0;
}
