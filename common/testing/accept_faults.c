/*
 * Preloaded into a chapter's server by its tests (LD_PRELOAD; see
 * cases.rs): makes accept4() fail the way a real machine sometimes does,
 * as ECHO_ACCEPT_FAULT says. It counts the failures it makes in the file
 * ECHO_ACCEPT_FAULT_COUNT names (8 bytes, a native-endian u64, mapped
 * shared: no descriptor stays open), so that a test can tell that it ran,
 * and how often the server called; the first ten are also lines on the
 * server's stderr, "accept fault: ...", for people.
 *
 *   abort-after-emfile  Once: the accept4() right after one that failed
 *                       with EMFILE or ENFILE fails with ECONNABORTED, if a
 *                       client is waiting. The client it names gave up
 *                       while queued, just as the server went to turn one
 *                       away.
 *   nobufs:MS           Every accept4() fails with ENOBUFS, for MS
 *                       milliseconds from the first one: the kernel is
 *                       short of memory for a while.
 *   emfile-once         The first accept4() that finds a client waiting
 *                       fails with EMFILE although descriptors are free: as
 *                       if a thread had closed a connection just after.
 *
 * Failures come before a connection is taken, so the client stays queued.
 * The state is atomic: a server may accept on several threads.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int last_was_emfile;
static int spent;
static long long nobufs_until_ns;

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000 + t.tv_nsec;
}

/*
 * Whether a connection waits in the listener's queue. On a blocking
 * listener, first waits for one, as accept4() would: 1 once there is one,
 * -1 with errno set if a signal interrupts the wait.
 */
static int client_waiting(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int blocking = !(fcntl(fd, F_GETFL) & O_NONBLOCK);
    int n = poll(&p, 1, blocking ? -1 : 0);
    if (n < 0)
        return -1;
    return n == 1 && (p.revents & POLLIN);
}

/* The shared counter, mapped at the first call, while descriptors are free. */
static unsigned long long *counter;

static void map_counter(void)
{
    const char *path = getenv("ECHO_ACCEPT_FAULT_COUNT");
    if (!path || __atomic_load_n(&counter, __ATOMIC_SEQ_CST))
        return;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return;
    void *map = mmap(NULL, sizeof *counter, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return;
    unsigned long long *none = NULL;
    if (!__atomic_compare_exchange_n(&counter, &none, map, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST))
        munmap(map, sizeof *counter);
}

static int fail(int errno_value, const char *name)
{
    static unsigned told;
    unsigned long long *count = __atomic_load_n(&counter, __ATOMIC_SEQ_CST);
    if (count)
        __atomic_add_fetch(count, 1, __ATOMIC_SEQ_CST);
    if (__atomic_add_fetch(&told, 1, __ATOMIC_SEQ_CST) <= 10) {
        char line[64];
        int n = snprintf(line, sizeof line, "accept fault: %s\n", name);
        /* stderr may be closed or a broken pipe: the failure is what counts. */
        if (write(STDERR_FILENO, line, n) < 0) {
        }
    }
    errno = errno_value;
    return -1;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    const char *fault = getenv("ECHO_ACCEPT_FAULT");

    if (!real_accept4)
        real_accept4 = dlsym(RTLD_NEXT, "accept4");
    if (!fault)
        return real_accept4(fd, addr, len, flags);
    map_counter();

    if (strcmp(fault, "abort-after-emfile") == 0) {
        if (__atomic_exchange_n(&last_was_emfile, 0, __ATOMIC_SEQ_CST) &&
            client_waiting(fd) > 0 && !__atomic_exchange_n(&spent, 1, __ATOMIC_SEQ_CST))
            return fail(ECONNABORTED, "ECONNABORTED");
        int rc = real_accept4(fd, addr, len, flags);
        if (rc < 0 && (errno == EMFILE || errno == ENFILE)) {
            int saved = errno;
            __atomic_store_n(&last_was_emfile, 1, __ATOMIC_SEQ_CST);
            errno = saved;
        }
        return rc;
    }
    if (strncmp(fault, "nobufs:", 7) == 0) {
        long long until = __atomic_load_n(&nobufs_until_ns, __ATOMIC_SEQ_CST);
        if (until == 0) {
            long long start = now_ns() + atoll(fault + 7) * 1000000LL;
            __atomic_compare_exchange_n(&nobufs_until_ns, &until, start, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
            until = __atomic_load_n(&nobufs_until_ns, __ATOMIC_SEQ_CST);
        }
        if (now_ns() < until)
            return fail(ENOBUFS, "ENOBUFS");
        return real_accept4(fd, addr, len, flags);
    }
    if (strcmp(fault, "emfile-once") == 0) {
        if (__atomic_load_n(&spent, __ATOMIC_SEQ_CST))
            return real_accept4(fd, addr, len, flags);
        int waiting = client_waiting(fd);
        if (waiting < 0)
            return -1;
        if (waiting && !__atomic_exchange_n(&spent, 1, __ATOMIC_SEQ_CST))
            return fail(EMFILE, "EMFILE");
        return real_accept4(fd, addr, len, flags);
    }
    return fail(EINVAL, "unknown ECHO_ACCEPT_FAULT");
}
