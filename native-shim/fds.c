/*
 * fds.c — OUR DESCRIPTORS: the few file descriptors the library keeps open for the process's
 * life (the scanner's wake pipe, the control socket), kept safe from a program that closes
 * descriptors it did not open.
 *
 * Daemons and shells close every descriptor above 2 (closefrom, close_range, a loop up to
 * sysconf(_SC_OPEN_MAX)) and then open their own, which get the lowest free numbers. Had we kept
 * ours where they were opened (3, 4), the program's pipe would take number 3 and the scanner
 * would poll and read it: it stole the first 8 bytes the program wrote to its own pipe
 * (closefds.c). So:
 *   - each of ours is moved to a high number (ip_fd_adopt: F_DUPFD_CLOEXEC from near the
 *     descriptor limit), which the program's lowest-free-number opens do not reach;
 *   - each use first checks that the number still names the file we opened (ip_fd_ours: same
 *     st_dev and st_ino; pipes and sockets have an inode each). A closed one is re-created by
 *     its owner; a number the program reused is never read, written, polled or closed by us.
 * fstat is async-signal-safe, so the scan signal's handler checks too before it writes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include "shim_internal.h"

/* The lowest number ours may take: 64 below min(soft descriptor limit, 1024), or where the
   descriptor was opened when the limit is too low for that (at most 256).
   Not near the limit itself: the kernel's descriptor table grows to cover the highest number in
   use (8 bytes a slot, rounded up to a power of two), and growing it in a process with more than
   one thread waits for an RCU grace period (expand_fdtable: synchronize_rcu), 10-27 ms here. At
   64 below a soft limit of 20000 every process that loaded the library waited that long at
   start-up, and kept a 256 KiB table. 960..1023 is above what a program's lowest-free-number
   opens reach unless it holds ~900 descriptors, and the identity check covers the rest. */
static int high_base(void)
{
    struct rlimit rl;
    rlim_t top = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < top)
        top = rl.rlim_cur;
    return top > 256 ? (int)(top - 64) : 0;
}

/* At start-up, while the process has one thread: grow the descriptor table to cover ours now,
   when growing it waits for nothing (see high_base). A table already that large is left alone. */
void ip_fds_reserve(void)
{
    int base = high_base();
    if (base == 0)
        return;
    int any = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (any < 0)
        return;
    int top = fcntl(any, F_DUPFD_CLOEXEC, base + 63);
    if (top >= 0)
        close(top);
    close(any);
}

int ip_fd_adopt(ip_fd *f, int fd)
{
    f->fd = -1;
    if (fd < 0)
        return -1;
    int base = high_base();
    if (base > fd) {
        int high = fcntl(fd, F_DUPFD_CLOEXEC, base);
        if (high >= 0) {
            close(fd);
            fd = high;
        }
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    f->dev = (uint64_t)st.st_dev;
    f->ino = (uint64_t)st.st_ino;
    f->fd = fd;
    return 0;
}

int ip_fd_ours(const ip_fd *f)
{
    struct stat st;
    return f->fd >= 0 && fstat(f->fd, &st) == 0 && (uint64_t)st.st_dev == f->dev &&
           (uint64_t)st.st_ino == f->ino;
}

void ip_fd_release(ip_fd *f)
{
    if (ip_fd_ours(f))
        close(f->fd);
    f->fd = -1;
}

/* ---- the core's own descriptors ----------------------------------------------------------
 * The managed core and its runtime open files too, through open/open64 (System.Native's file
 * I/O: reports, ELF files for symbols, /proc) and pipe. Most are closed again, but the runtime
 * keeps one for the process's life: /dev/urandom, opened the first time a thread needs random
 * bytes (an object's first hash code) and cached in a static. A program that closed it and
 * opened a pipe of its own at that number had the runtime read its bytes. So the core's GOT slots
 * for these functions are pointed at wrappers that move each new descriptor high (ip_fd_raise),
 * like OUR DESCRIPTORS. (fopen and opendir open inside libc and stay low; the core uses them
 * only for short reads.) */

static int ip_fd_raise(int fd)
{
    int base = high_base();
    if (fd < 0 || base <= fd)
        return fd;
    int cloexec = fcntl(fd, F_GETFD);
    int high = fcntl(fd, (cloexec > 0 && (cloexec & FD_CLOEXEC)) ? F_DUPFD_CLOEXEC : F_DUPFD, base);
    if (high < 0)
        return fd;
    close(fd);
    return high;
}

static int core_open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) { /* as glibc's __OPEN_NEEDS_MODE */
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    return ip_fd_raise(open(path, flags, mode));
}

static int core_pipe(int fds[2])
{
    int rc = pipe(fds);
    if (rc == 0) {
        fds[0] = ip_fd_raise(fds[0]);
        fds[1] = ip_fd_raise(fds[1]);
    }
    return rc;
}

/* Points the GOT slots of handle's open, open64 and pipe at the wrappers. 0 when every slot
   found was patched. */
int ip_fds_patch_core(void *handle)
{
    struct link_map *map = NULL;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0 || map == NULL || map->l_ld == NULL)
        return -1;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const ElfW(Rela) *rela = NULL, *jmprel = NULL;
    size_t relasz = 0, pltrelsz = 0;
    for (const ElfW(Dyn) *d = map->l_ld; d->d_tag != DT_NULL; d++) {
        /* ld.so has made these addresses absolute in memory (x86-64); a small one is not. */
        uintptr_t p = d->d_un.d_ptr < map->l_addr ? map->l_addr + d->d_un.d_ptr : d->d_un.d_ptr;
        switch (d->d_tag) {
        case DT_SYMTAB: symtab = (const ElfW(Sym) *)p; break;
        case DT_STRTAB: strtab = (const char *)p; break;
        case DT_RELA: rela = (const ElfW(Rela) *)p; break;
        case DT_RELASZ: relasz = d->d_un.d_val; break;
        case DT_JMPREL: jmprel = (const ElfW(Rela) *)p; break;
        case DT_PLTRELSZ: pltrelsz = d->d_un.d_val; break;
        }
    }
    if (symtab == NULL || strtab == NULL)
        return -1;
    static const struct { const char *name; void *to; } wrap[] = {
        { "open", (void *)core_open }, { "open64", (void *)core_open }, { "pipe", (void *)core_pipe },
    };
    long page = sysconf(_SC_PAGESIZE);
    int failed = 0;
    const ElfW(Rela) *tables[2] = { rela, jmprel };
    size_t sizes[2] = { relasz, pltrelsz };
    for (int t = 0; t < 2; t++) {
        for (size_t i = 0; tables[t] != NULL && i < sizes[t] / sizeof(ElfW(Rela)); i++) {
            const ElfW(Rela) *r = &tables[t][i];
            unsigned type = (unsigned)ELF64_R_TYPE(r->r_info);
            if (type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT)
                continue;
            const char *name = strtab + symtab[ELF64_R_SYM(r->r_info)].st_name;
            for (size_t w = 0; w < sizeof wrap / sizeof wrap[0]; w++) {
                if (strcmp(name, wrap[w].name) != 0)
                    continue;
                void **slot = (void **)(map->l_addr + r->r_offset);
                uintptr_t start = (uintptr_t)slot & ~(uintptr_t)(page - 1);
                /* The slot is in RELRO (read-only once relocated): open it for this one store. */
                if (mprotect((void *)start, (size_t)page, PROT_READ | PROT_WRITE) != 0) {
                    failed = 1;
                    continue;
                }
                __atomic_store_n(slot, wrap[w].to, __ATOMIC_RELEASE);
                mprotect((void *)start, (size_t)page, PROT_READ);
            }
        }
    }
    return failed ? -1 : 0;
}
