/* interposer_test.h — what test programs use to ask the preloaded library questions.
   Weak: a program built with this still runs without the library (the calls are then NULL). */
#ifndef INTERPOSER_TEST_H
#define INTERPOSER_TEST_H
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

extern int64_t interposer_live_blocks(void) __attribute__((weak));
extern int32_t interposer_dump(const char *path) __attribute__((weak));
extern int32_t interposer_scan(void) __attribute__((weak));

/* -1 when the library is not loaded. */
static inline int64_t live_blocks(void) { return interposer_live_blocks ? interposer_live_blocks() : -1; }
static inline int dump_live(const char *path) { return interposer_dump ? interposer_dump(path) : -1; }
/* Runs a leak scan now and waits for its report (report_path). */
static inline int scan_now(void) { return interposer_scan ? interposer_scan() : -1; }
#ifdef __cplusplus
}
#endif
#endif
