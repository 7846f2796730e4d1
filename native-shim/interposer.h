/*
 * interposer.h — the public header for programs that want to say more to Interposer (or to
 * LeakSanitizer, whose interface Interposer also provides). Every declaration is weak: a program
 * built with it runs unchanged without the library, where each call is simply skipped.
 *
 *   #include "interposer.h"
 *   INTERPOSER_CALL(kmemleak_not_leak, cache);          // never report this block
 *   if (INTERPOSER_AVAILABLE(__lsan_do_recoverable_leak_check)) ...
 *
 * kmemleak's annotations (include/linux/kmemleak.h, in userspace form):
 *   kmemleak_not_leak(p)   never reported; scanned (its pointees stay referenced)
 *   kmemleak_ignore(p)     never reported; never scanned
 *   kmemleak_no_scan(p)    never scanned (holds no pointers); may still be reported
 *   kmemleak_scan_area(p, size, gfp)
 *                          scan only [p, p+size) of the block holding p (more calls add areas;
 *                          size SIZE_MAX: from p to the block's end)
 *   kmemleak_alloc(p, size, min_count, gfp) / kmemleak_free(p)
 *                          a custom allocator registers its blocks; min_count 0 = never reported
 * LeakSanitizer's interface (sanitizer/lsan_interface.h):
 *   __lsan_ignore_object, __lsan_disable/__lsan_enable, __lsan_do_leak_check,
 *   __lsan_do_recoverable_leak_check, __lsan_register_root_region/__lsan_unregister_root_region
 * Interposer's own:
 *   interposer_scan()      scan now and wait for the report (0 = ok)
 *   interposer_live_blocks(), interposer_dump(path)
 */
#ifndef INTERPOSER_H
#define INTERPOSER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define INTERPOSER_WEAK __attribute__((weak))

INTERPOSER_WEAK void kmemleak_not_leak(const void *ptr);
INTERPOSER_WEAK void kmemleak_ignore(const void *ptr);
INTERPOSER_WEAK void kmemleak_no_scan(const void *ptr);
INTERPOSER_WEAK void kmemleak_scan_area(const void *ptr, size_t size, unsigned int gfp);
INTERPOSER_WEAK void kmemleak_alloc(const void *ptr, size_t size, int min_count, unsigned int gfp);
INTERPOSER_WEAK void kmemleak_free(const void *ptr);

INTERPOSER_WEAK void __lsan_ignore_object(const void *p);
INTERPOSER_WEAK void __lsan_disable(void);
INTERPOSER_WEAK void __lsan_enable(void);
INTERPOSER_WEAK void __lsan_do_leak_check(void);
INTERPOSER_WEAK int __lsan_do_recoverable_leak_check(void);
INTERPOSER_WEAK void __lsan_register_root_region(const void *p, size_t size);
INTERPOSER_WEAK void __lsan_unregister_root_region(const void *p, size_t size);

INTERPOSER_WEAK int32_t interposer_scan(void);
INTERPOSER_WEAK int64_t interposer_live_blocks(void);
INTERPOSER_WEAK int32_t interposer_dump(const char *path);

/* True when the library (or LeakSanitizer, for __lsan_*) provides fn. */
#define INTERPOSER_AVAILABLE(fn) ((fn) != NULL)
/* Calls fn(args...) when it is provided; does nothing otherwise. */
#define INTERPOSER_CALL(fn, ...) ((fn) != NULL ? (void)(fn)(__VA_ARGS__) : (void)0)

#ifdef __cplusplus
}
#endif
#endif /* INTERPOSER_H */
