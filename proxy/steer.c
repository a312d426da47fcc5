/*
 * steer.c - steering new TCP connections to the active workers' listeners (steer.h).
 */
#include "proxy/steer.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif
#ifndef SO_DETACH_REUSEPORT_BPF
#define SO_DETACH_REUSEPORT_BPF 68
#endif

#define STEER_TCP_LISTEN 10 /* TCP_LISTEN of the kernel's tcp_states.h, not in the uapi */

int
steer_attach(int fd, int n)
{
    if (n < 1) {
        errno = EINVAL;
        return -1;
    }
    /* A random draw, not the connection's hash: the hash would send every connection of one
     * client address and port pair to the same place, which is no better, and costs the same. */
    struct sock_filter one[] = {
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_filter some[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t) (SKF_AD_OFF + SKF_AD_RANDOM)),
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (uint32_t) n),
        BPF_STMT(BPF_RET | BPF_A, 0),
    };
    struct sock_fprog prog = n == 1 ? (struct sock_fprog){ .len = 1, .filter = one }
                                    : (struct sock_fprog){ .len = 3, .filter = some };
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog));
}

int
steer_detach(int fd)
{
    int dummy = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &dummy, sizeof(dummy)) < 0 &&
        errno != ENOENT) {
        return -1;
    }
    return 0;
}

/* Whether m describes a listener on the address and port of ss. */
static bool
diag_same_address(const struct inet_diag_msg *m, const struct sockaddr_storage *ss)
{
    if (m->idiag_state != STEER_TCP_LISTEN || m->idiag_family != ss->ss_family) {
        return false;
    }
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *) ss;
        return m->id.idiag_sport == sin->sin_port &&
               memcmp(&m->id.idiag_src[0], &sin->sin_addr, 4) == 0;
    }
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) ss;
    return m->id.idiag_sport == sin6->sin6_port &&
           memcmp(m->id.idiag_src, &sin6->sin6_addr, 16) == 0;
}

int
steer_listeners(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0 ||
        (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) {
        return -1;
    }
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) {
        return -1;
    }
    /* The answer to a dump is there as soon as the request is sent; the timeout only guards
     * against a kernel that never answers. */
    struct timeval tv = { .tv_sec = 1 };
    (void) setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 r;
    } req;
    memset(&req, 0, sizeof(req));
    req.nlh.nlmsg_len = sizeof(req);
    req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.r.sdiag_family = (uint8_t) ss.ss_family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = 1u << STEER_TCP_LISTEN;
    /* The kernel skips listeners on other ports itself. */
    req.r.id.idiag_sport = ss.ss_family == AF_INET ? ((struct sockaddr_in *) &ss)->sin_port
                                                   : ((struct sockaddr_in6 *) &ss)->sin6_port;
    struct sockaddr_nl to = { .nl_family = AF_NETLINK };
    if (sendto(nl, &req, sizeof(req), 0, (struct sockaddr *) &to, sizeof(to)) < 0) {
        close(nl);
        return -1;
    }
    alignas(struct nlmsghdr) char buf[8192];
    int n = 0;
    for (;;) {
        ssize_t got = recv(nl, buf, sizeof(buf), 0);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            close(nl);
            return -1;
        }
        size_t left = (size_t) got;
        for (struct nlmsghdr *h = (struct nlmsghdr *) buf; NLMSG_OK(h, left);
             h = NLMSG_NEXT(h, left)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                close(nl);
                return n;
            }
            if (h->nlmsg_type == NLMSG_ERROR ||
                h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
                close(nl);
                return -1;
            }
            if (diag_same_address(NLMSG_DATA(h), &ss)) {
                n++;
            }
        }
    }
}
