/* idle_clients: open N authenticated PostgreSQL client connections and hold them idle
 * (tests/bench, `make bench`, memory per idle client).
 *
 *   idle_clients PORT N USER DATABASE PASSWORD [SOURCES]
 *
 * Connects to 127.0.0.1:PORT from 127.0.0.2, 127.0.0.3, ... (SOURCES addresses, default 5:
 * one loopback address pair has only ~28k ephemeral ports), sends a StartupMessage, answers
 * AuthenticationMD5Password (or takes AuthenticationOk: trust) and waits for ReadyForQuery.
 * At most 256 logins are in flight at once. When all N are logged in it prints "ready N"
 * and holds them until SIGTERM/SIGINT; any failure prints the reason and exits 1. Needs
 * `ulimit -n` above N. IDLE_CLIENTS_PARAMS adds startup parameters, as a driver sends them:
 * "client_encoding=UTF8,DateStyle=ISO" (no commas or '=' in names or values). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define INFLIGHT 256
#define LOGINBUF 2048

struct conn {
    int fd;
    size_t len;
    char *buf; /* only while logging in */
};

static const char *user, *db, *password;
static int ep, started, ready;
static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
    (void) sig;
    stop = 1;
}

static void
die(const char *what, int i)
{
    fprintf(stderr, "idle_clients: connection %d: %s (after %d ready)\n", i, what, ready);
    exit(1);
}

static void
put32(char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
}

static void
md5hex(const char *in, size_t n, char out[33])
{
    unsigned char d[16];
    EVP_Digest(in, n, d, NULL, EVP_md5(), NULL);
    for (int i = 0; i < 16; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void
send_all(struct conn *c, const char *p, size_t n, int i)
{
    if (send(c->fd, p, n, MSG_NOSIGNAL) != (ssize_t) n)
        die("short send during login", i);
}

static void
start(struct conn *c, int i, int port, int sources)
{
    struct sockaddr_in src = { .sin_family = AF_INET }, dst = { .sin_family = AF_INET };
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t) (i % sources));
    dst.sin_addr.s_addr = htonl(0x7f000001u);
    dst.sin_port = htons((unsigned short) port);
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        die(strerror(errno), i);
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(c->fd, (struct sockaddr *) &src, sizeof src) < 0)
        die("bind", i);
    if (connect(c->fd, (struct sockaddr *) &dst, sizeof dst) < 0)
        die(strerror(errno), i);
    char pkt[1024];
    size_t n = 8;
    put32(pkt + 4, 196608); /* protocol 3.0 */
    n += (size_t) sprintf(pkt + n, "user%c%s%cdatabase%c%s%c", 0, user, 0, 0, db, 0);
    /* IDLE_CLIENTS_PARAMS: more startup parameters, "name=value,name=value" (a driver's) */
    const char *extra = getenv("IDLE_CLIENTS_PARAMS");
    for (const char *p = extra; p && *p && n < sizeof pkt - 300;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq && len < 256) {
            n += (size_t) sprintf(pkt + n, "%.*s%c%.*s%c", (int) (eq - p), p, 0,
                                  (int) (len - (size_t) (eq - p) - 1), eq + 1, 0);
        }
        p += len + (end ? 1 : 0);
    }
    pkt[n++] = 0;
    put32(pkt, (uint32_t) n);
    c->buf = malloc(LOGINBUF);
    c->len = 0;
    send_all(c, pkt, n, i);
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t) i };
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    started++;
}

/* Consume whole messages from the login buffer; returns 1 once ReadyForQuery arrived. */
static int
advance(struct conn *c, int i)
{
    size_t off = 0;
    int done = 0;
    while (c->len - off >= 5) {
        uint32_t mlen;
        memcpy(&mlen, c->buf + off + 1, 4);
        mlen = ntohl(mlen);
        if (mlen + 1 > LOGINBUF)
            die("login message too large", i);
        if (c->len - off < mlen + 1)
            break;
        char type = c->buf[off], *body = c->buf + off + 5;
        if (type == 'E') { /* fields: a type byte then text; report the message ('M') */
            for (char *f = body; *f && f < body + mlen - 4; f += strlen(f) + 1)
                if (*f == 'M')
                    die(f + 1, i);
            die("ErrorResponse", i);
        }
        if (type == 'R') {
            uint32_t code;
            memcpy(&code, body, 4);
            code = ntohl(code);
            if (code == 5) { /* md5: "md5" + md5(md5(password + user) + salt) */
                char inner[33], tmp[512], msg[64];
                int k = snprintf(tmp, sizeof tmp, "%s%s", password, user);
                md5hex(tmp, (size_t) k, inner);
                memcpy(tmp, inner, 32);
                memcpy(tmp + 32, body + 4, 4);
                msg[0] = 'p';
                put32(msg + 1, 4 + 35 + 1);
                memcpy(msg + 5, "md5", 3);
                md5hex(tmp, 36, msg + 8);
                send_all(c, msg, 1 + 4 + 35 + 1, i);
            } else if (code == 3) { /* cleartext */
                char msg[300];
                size_t pl = strlen(password) + 1;
                msg[0] = 'p';
                put32(msg + 1, (uint32_t) (4 + pl));
                memcpy(msg + 5, password, pl);
                send_all(c, msg, 5 + pl, i);
            } else if (code != 0) {
                die("unsupported authentication method (use trust, md5 or password)", i);
            }
        }
        if (type == 'Z')
            done = 1;
        off += mlen + 1;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    return done;
}

int
main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: idle_clients PORT N USER DATABASE PASSWORD [SOURCES]\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]), sources = argc > 6 ? atoi(argv[6]) : 5;
    user = argv[3];
    db = argv[4];
    password = argv[5];
    if (n < 1 || sources < 1 || sources > 250)
        return 2;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    struct conn *conns = calloc((size_t) n, sizeof *conns);
    ep = epoll_create1(0);
    struct epoll_event evs[256];
    while (!stop) {
        while (started < n && started - ready < INFLIGHT)
            start(&conns[started], started, port, sources);
        if (ready == n && started == n) {
            printf("ready %d\n", n);
            fflush(stdout);
            started++; /* print once */
        }
        int k = epoll_wait(ep, evs, 256, 1000);
        for (int j = 0; j < k; j++) {
            int i = (int) evs[j].data.u32;
            struct conn *c = &conns[i];
            if (c->buf == NULL)
                die("server closed an idle connection", i);
            ssize_t r = recv(c->fd, c->buf + c->len, LOGINBUF - c->len, 0);
            if (r <= 0)
                die(r == 0 ? "closed during login" : strerror(errno), i);
            c->len += (size_t) r;
            if (advance(c, i)) {
                free(c->buf);
                c->buf = NULL;
                ready++;
            }
        }
    }
    return 0;
}
