/*
 * control.c — the control socket: kmemleak's debugfs file, for one process (issue 5).
 *
 *   $ printf 'scan\n' | socat - UNIX-CONNECT:/tmp/interposer.4242.sock     (or: interposer ctl)
 *
 * A Unix stream socket at control_path (default $TMPDIR/interposer.%p.sock), created 0600 (umask
 * 0177 around bind, in the constructor or a fork child, before any other thread exists) and
 * removed at exit. It is one of OUR DESCRIPTORS (fds.c): a program that closes it gets it back,
 * re-created by the scanner (ip_control_open(1)).
 *
 * The scanner thread accepts one connection at a time: it checks the peer with
 * SO_PEERCRED (another user is refused even if the file's mode was loosened), reads one command
 * line (bounded size and time), hands it to the core (interposer_on_control) and writes back the
 * answer. Commands: scan, clear, dump=<addr>, stack=on|off, scan=on|off|<secs>, off.
 *
 * Never follows a planted file: a path that exists and is not our own stale socket is left alone
 * (no control socket, said once on stderr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "shim_internal.h"

static ip_fd s_listen = { -1, 0, 0 }; /* OUR DESCRIPTORS (fds.c) */
static char s_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static pid_t s_owner;              /* the process that created s_path */

const ip_fd *ip_control_fd(void) { return &s_listen; }

/* control_path with %p replaced by the pid. 0 = ok. */
static int expand(const char *template, char *out, size_t cap)
{
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    size_t n = 0;
    for (const char *c = template; *c != '\0'; c++) {
        const char *piece = c[0] == '%' && c[1] == 'p' ? pid : NULL;
        size_t len = piece ? strlen(piece) : 1;
        if (n + len >= cap)
            return -1;
        memcpy(out + n, piece ? piece : c, len);
        n += len;
        if (piece)
            c++;
    }
    out[n] = '\0';
    return 0;
}

/* reopen: the program closed ours and its threads run: umask is process-wide, so the socket is
   bound with the program's umask and then chmod'ed to 0600 (another user who could connect in
   between is still refused by SO_PEERCRED). */
void ip_control_open(int reopen)
{
    /* A fork child (the parent's socket is not ours), or the program closed ours. */
    ip_fd_release(&s_listen);
    if (!g_ip_core.config.control)
        return;
    char path[sizeof s_path];
    if (expand(g_ip_core.config.control_path, path, sizeof path) != 0) {
        ip_message("control socket path too long (Unix sockets allow 107 bytes): ", g_ip_core.config.control_path);
        return;
    }
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode) || st.st_uid != geteuid()) {
            ip_message("not replacing an existing file with the control socket: ", path);
            return;
        }
        unlink(path); /* our own stale socket (a process that reused this pid died) */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int rc;
    if (!reopen) {
        mode_t old = umask(0177);
        rc = bind(fd, (struct sockaddr *)&addr, sizeof addr);
        umask(old);
    } else {
        rc = bind(fd, (struct sockaddr *)&addr, sizeof addr);
        if (rc == 0)
            rc = chmod(path, 0600);
    }
    if (rc != 0 || listen(fd, 8) != 0) {
        ip_message("cannot create the control socket: ", path);
        close(fd);
        return;
    }
    if (ip_fd_adopt(&s_listen, fd) != 0) {
        unlink(path);
        return;
    }
    memcpy(s_path, path, sizeof s_path);
    s_owner = getpid();
}

void ip_control_close(void)
{
    if (s_listen.fd >= 0 && s_owner == getpid())
        unlink(s_path);
}

static void reply(int fd, const char *text)
{
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n <= 0)
            return;
        done += (size_t)n;
    }
}

void ip_control_serve(int32_t *scan_interval_s)
{
    if (!ip_fd_ours(&s_listen))
        return;
    int c = accept4(s_listen.fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != geteuid()) {
        reply(c, "error: permission denied (the control socket serves its own user only)\n");
        close(c);
        return;
    }
    char line[1024];
    size_t n = 0;
    while (n < sizeof line - 1) {
        struct pollfd p = {c, POLLIN, 0};
        if (poll(&p, 1, 2000) <= 0)
            break; /* a client that never finishes its line costs 2 s, not the scanner */
        ssize_t got = read(c, line + n, sizeof line - 1 - n);
        if (got <= 0)
            break;
        n += (size_t)got;
        if (memchr(line, '\n', n) != NULL)
            break;
    }
    line[n] = '\0';
    char *nl = strchr(line, '\n');
    if (nl != NULL)
        *nl = '\0';
    static char out[1 << 16];
    out[0] = '\0';
    if (__atomic_load_n(&g_ip_mode, __ATOMIC_ACQUIRE) != IP_MODE_ACTIVE) {
        reply(c, "error: tracking is off in this process\n");
    } else {
        ip_thread *t = &ip_tls;
        ip_hook_enter(t);
        g_ip_core.on_control(line, out, (int32_t)sizeof out, scan_interval_s);
        ip_hook_leave(t);
        reply(c, out);
    }
    close(c);
}
