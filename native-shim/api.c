/*
 * api.c — what a program may call to say more than malloc does (issue 5): kmemleak's annotation
 * API and LeakSanitizer's interface, so code written for either works unmodified. All of them
 * are safe to call without the library too, through the weak declarations of
 * native-shim/interposer.h. Each call enters the core like a hook (guard, GC window) and is a
 * no-op when tracking is off or the caller is one of our threads.
 *
 *   kmemleak_not_leak(p)      p's block is never reported, and is scanned (min_count 0)
 *   kmemleak_ignore(p)        p's block is never reported and never scanned (black)
 *   kmemleak_no_scan(p)       p's block is never scanned (it holds no pointers); it can leak
 *   kmemleak_scan_area(p, n, gfp)  only [p, p+n) of the block holding p is scanned (more calls add
 *                             areas; n = SIZE_MAX: from p to the block's end)
 *   kmemleak_alloc(p, n, min_count, gfp)  a custom allocator's block [p, p+n): tracked like malloc's
 *   kmemleak_free(p)          ... and its end
 *   __lsan_ignore_object(p)   as kmemleak_not_leak (LeakSanitizer treats ignored objects as roots)
 *   __lsan_disable()/__lsan_enable()  blocks allocated in between, on this thread, are never reported
 *   __lsan_do_leak_check()    scan now; with leaks, end the process with exit code 23 (LSan's
 *                             default exitcode), as LeakSanitizer does; later calls do nothing
 *   __lsan_do_recoverable_leak_check()  scan now; 1 if leaks were found, else 0
 *   __lsan_register_root_region(p, n) / __lsan_unregister_root_region(p, n)  extra roots
 *
 * The root regions live in regions.c, under its lock and busy-flag rule.
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include "shim_internal.h"

static int s_leak_check_done;

static int enter_api(void)
{
    if (__atomic_load_n(&g_ip_mode, __ATOMIC_ACQUIRE) != IP_MODE_ACTIVE)
        return 0;
    ip_thread_register();
    ip_thread *t = &ip_tls;
    if (t->guard != 0 || t->state != IP_T_HOST)
        return 0;
    ip_hook_enter(t);
    return 1;
}

static void annotate(const void *p, uint64_t size, int32_t op, int32_t value)
{
    if (p == NULL || !enter_api())
        return;
    g_ip_core.annotate((uint64_t)p, size, op, value);
    ip_hook_leave(&ip_tls);
}

IP_EXPORT void kmemleak_not_leak(const void *ptr) { annotate(ptr, 0, IP_ANN_NOT_LEAK, 0); }
IP_EXPORT void kmemleak_ignore(const void *ptr) { annotate(ptr, 0, IP_ANN_IGNORE, 0); }
IP_EXPORT void kmemleak_no_scan(const void *ptr) { annotate(ptr, 0, IP_ANN_NO_SCAN, 0); }
IP_EXPORT void kmemleak_scan_area(const void *ptr, size_t size, unsigned int gfp)
{
    (void)gfp;
    annotate(ptr, size, IP_ANN_SCAN_AREA, 0);
}
IP_EXPORT void kmemleak_free(const void *ptr)
{
    ip_forget_external((void *)ptr, (uint64_t)__builtin_return_address(0));
}

/* Recorded like a malloc'ed block (its backtrace starts at our caller), then given min_count. */
IP_EXPORT void kmemleak_alloc(const void *ptr, size_t size, int min_count, unsigned int gfp)
{
    (void)gfp;
    if (ptr == NULL)
        return;
    ip_record_external((void *)ptr, size, (uint64_t)__builtin_frame_address(0));
    if (min_count != 1)
        annotate(ptr, size, IP_ANN_ALLOC, min_count);
}

IP_EXPORT void __lsan_ignore_object(const void *p) { annotate(p, 0, IP_ANN_NOT_LEAK, 0); }

IP_EXPORT void __lsan_disable(void) { ip_tls.lsan_disabled++; }

IP_EXPORT void __lsan_enable(void)
{
    if (ip_tls.lsan_disabled > 0)
        ip_tls.lsan_disabled--;
}

IP_EXPORT int __lsan_do_recoverable_leak_check(void)
{
    int32_t leaks;
    if (ip_scan_and_wait(&leaks) != 0)
        return 0;
    return leaks > 0;
}

IP_EXPORT void __lsan_do_leak_check(void)
{
    if (__atomic_exchange_n(&s_leak_check_done, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    int32_t leaks;
    if (ip_scan_and_wait(&leaks) == 0 && leaks > 0) {
        ip_message("leaks found by __lsan_do_leak_check; exiting with code 23 (see the report file)", "");
        _exit(23);
    }
}

IP_EXPORT void __lsan_register_root_region(const void *p, size_t size)
{
    if (p != NULL && size != 0 && ip_roots_add((uint64_t)p, (uint64_t)p + size) != 0)
        ip_message("__lsan_register_root_region: too many root regions; this one is not scanned", "");
}

IP_EXPORT void __lsan_unregister_root_region(const void *p, size_t size)
{
    ip_roots_remove((uint64_t)p, (uint64_t)p + size);
}
