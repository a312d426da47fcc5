/*
 * sysio.h - recv, send and sendmsg for the relay's hot path, without libc's cancellation-point
 * bracket.
 *
 * In a process with more than one thread, glibc wraps every cancellation point (recv, send,
 * sendmsg, ...) in __pthread_enable_asynccancel and __pthread_disable_asynccancel: two atomic
 * read-modify-writes of the thread's cancellation state and about 45 instructions per call,
 * 170 of the 5,000 that a forwarded `pgbench -S` transaction cost (callgrind). A
 * single-threaded proxy never pays it. pgmux never cancels a thread, so it makes the system
 * call itself. Sanitizer builds keep the libc functions: ASan checks the buffers in its
 * interceptors, and TSan follows descriptors through them.
 */
#ifndef PGMUX_COMMON_SYSIO_H
#define PGMUX_COMMON_SYSIO_H

#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(SYS_recvfrom) || \
    !defined(SYS_sendto) || !defined(SYS_sendmsg)
#define SYSIO_LIBC 1
#endif

static inline ssize_t
sys_recv(int fd, void *buf, size_t len, int flags)
{
#ifdef SYSIO_LIBC
    return recv(fd, buf, len, flags);
#else
    return (ssize_t) syscall(SYS_recvfrom, fd, buf, len, flags, NULL, NULL);
#endif
}

static inline ssize_t
sys_send(int fd, const void *buf, size_t len, int flags)
{
#ifdef SYSIO_LIBC
    return send(fd, buf, len, flags);
#else
    return (ssize_t) syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
#endif
}

static inline ssize_t
sys_sendmsg(int fd, const struct msghdr *mh, int flags)
{
#ifdef SYSIO_LIBC
    return sendmsg(fd, mh, flags);
#else
    return (ssize_t) syscall(SYS_sendmsg, fd, mh, flags);
#endif
}

#endif
