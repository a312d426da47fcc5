/*
 * log.c - see log.h. The queue is a fixed ring of fixed-size lines under one mutex; the
 * critical section is a memcpy, so a worker holds the lock for well under a microsecond and
 * never waits on the terminal or a pipe. The logger thread writes batches to stderr, or sends
 * each line as one datagram to the local syslog daemon.
 *
 * Lines come fast when every connection logs its connect, login and disconnect (info level,
 * a new connection per transaction): woken for each, the logger cost two futex calls, a write
 * and two context switches per line. So a writer wakes the logger only when it sleeps, and a
 * logger woken again within LOG_GATHER_US of its last wake-up first lets that long pass,
 * then writes everything that came meanwhile at once (sooner when the ring fills to half, so
 * a storm of connections does not drop lines). Lines at a slow pace still go out at once.
 *
 * syslog is spoken directly (RFC 3164 over a unix datagram socket, what glibc's syslog(3)
 * sends to /dev/log) rather than through syslog(3): <syslog.h> would define LOG_INFO and
 * friends as macros over our enum, the socket path becomes configurable (containers, tests),
 * and a daemon that stops reading costs a bounded send timeout on the logger thread only.
 */
#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/mono.h"

#define LOG_LINE_MAX  512
#define LOG_QUEUE_LEN 1024
#define LOG_GATHER_US 2000

atomic_int log_level_current = LOG_INFO;

static const char *const level_names[] = { "FATAL", "ERROR", "WARNING", "INFO", "DEBUG", "TRACE" };
static const char *const level_keys[] = { "fatal", "error", "warning", "info", "debug", "trace" };

/* syslog severities (RFC 5424) by enum log_level. */
static const int level_severity[] = { 2 /* crit */, 3, 4, 6, 7, 7 };

struct log_line {
    unsigned short len;
    unsigned short msg_off; /* where the message starts, after the stderr prefix */
    unsigned char level;
    char text[LOG_LINE_MAX];
};

/* A line in a batch taken off the ring. */
struct log_meta {
    unsigned off;
    unsigned short len;
    unsigned short msg_off;
    unsigned char level;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool running;
    bool stopping;
    bool is_waiting;     /* the logger sleeps on cv: the next line must wake it */
    bool is_gathering;   /* the logger waits on cv for LOG_GATHER_US: wake it at half full */
    int pid;             /* getpid() at log_start (a system call per line otherwise) */
    unsigned head, tail; /* ring positions; head == tail means empty */
    struct log_line *ring;
    atomic_uint_fast64_t dropped;
    /* syslog: set before log_start, then used by whoever writes (logger thread, or the caller
     * of log_write while the thread is not running) */
    bool use_syslog;
    int facility;
    char ident[33];
    struct sockaddr_un addr;
    int fd; /* connected datagram socket, -1 when not connected */
} lg = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .fd = -1 };

void
assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "FATAL assertion failed: %s at %s:%d\n", expr, file, line);
    abort();
}

void
log_set_level(enum log_level level)
{
    atomic_store_explicit(&log_level_current, (int) level, memory_order_relaxed);
}

bool
log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < ARRAY_LEN(level_keys); i++) {
        if (strcasecmp(s, level_keys[i]) == 0) {
            *out = (enum log_level) i;
            return true;
        }
    }
    return false;
}

const char *
log_value(const char *s, char *out, size_t outlen)
{
    if (!s) {
        s = "-";
    }
    bool plain = *s != '\0';
    for (const char *p = s; *p && plain; p++) {
        unsigned char ch = (unsigned char) *p;
        plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                strchr("._-:/@+", ch) != NULL;
    }
    if (plain) {
        snprintf(out, outlen, "%s", s);
        return out;
    }
    size_t o = 0;
    out[o++] = '"';
    for (const char *p = s; *p; p++) {
        unsigned char ch = (unsigned char) *p;
        char esc[5];
        size_t n;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char) ch;
            n = 2;
        } else if (ch < 0x20 || ch >= 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", ch);
            n = 4;
        } else {
            esc[0] = (char) ch;
            n = 1;
        }
        if (o + n + 2 > outlen) { /* room for the closing quote and the NUL */
            break;
        }
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

uint64_t
log_dropped(void)
{
    return atomic_load_explicit(&lg.dropped, memory_order_relaxed);
}

static void
write_all(const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, p, len);
        if (n <= 0) {
            return;
        }
        p += n;
        len -= (size_t) n;
    }
}

int
log_use_syslog(const char *ident, int facility, const char *socket_path)
{
    if (strlen(ident) >= sizeof(lg.ident) || strlen(socket_path) >= sizeof(lg.addr.sun_path) ||
        facility < 0 || facility > 23) {
        return -1;
    }
    pthread_mutex_lock(&lg.mu);
    snprintf(lg.ident, sizeof(lg.ident), "%s", ident);
    lg.facility = facility;
    memset(&lg.addr, 0, sizeof(lg.addr));
    lg.addr.sun_family = AF_UNIX;
    memcpy(lg.addr.sun_path, socket_path, strlen(socket_path) + 1);
    lg.use_syslog = true;
    pthread_mutex_unlock(&lg.mu);
    tzset(); /* syslog timestamps are local time; localtime_r does not promise to read TZ */
    return 0;
}

static bool
syslog_connect(void)
{
    lg.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (lg.fd < 0) {
        return false;
    }
    /* A daemon that stops reading must not hold the logger for long: after this, the line
     * goes to stderr instead. */
    struct timeval tv = { .tv_sec = 1, .tv_usec = 0 };
    (void) setsockopt(lg.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(lg.fd, (const struct sockaddr *) &lg.addr, sizeof(lg.addr)) != 0) {
        close(lg.fd);
        lg.fd = -1;
        return false;
    }
    return true;
}

/* One line (text[0..len), ending in '\n', message from msg_off) to syslog; stderr when that
 * fails, so nothing is lost silently. */
static void
syslog_line(const char *text, size_t len, size_t msg_off, int level)
{
    char dgram[LOG_LINE_MAX + 96];
    char stamp[32];
    struct tm tm;
    time_t now = time(NULL);
    localtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm);
    int sev = level_severity[level < LOG_TRACE ? level : LOG_TRACE];
    size_t mlen = len > msg_off ? len - msg_off - 1 : 0; /* without the newline */
    int n = snprintf(dgram, sizeof(dgram), "<%d>%s %s[%d]: %.*s", lg.facility * 8 + sev, stamp,
                     lg.ident, lg.pid ? lg.pid : (int) getpid(), (int) mlen, text + msg_off);
    size_t dlen = n < 0 ? 0 : (size_t) n >= sizeof(dgram) ? sizeof(dgram) - 1 : (size_t) n;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (lg.fd < 0 && !syslog_connect()) {
            break;
        }
        if (send(lg.fd, dgram, dlen, MSG_NOSIGNAL) == (ssize_t) dlen) {
            return;
        }
        int e = errno;
        close(lg.fd);
        lg.fd = -1;
        if (e != ECONNREFUSED && e != ENOTCONN && e != EBADF && e != ENOENT) {
            break; /* a timeout or a full buffer: do not wait twice */
        }
    }
    write_all(text, len);
}

static void *
logger_main(void *arg)
{
    (void) arg;
    char *batch = malloc((size_t) LOG_QUEUE_LEN * (LOG_LINE_MAX + 1));
    struct log_meta *meta = malloc((size_t) LOG_QUEUE_LEN * sizeof(*meta));
    int64_t last_wake_us = 0;
    pthread_mutex_lock(&lg.mu);
    for (;;) {
        while (lg.head == lg.tail && !lg.stopping) {
            lg.is_waiting = true;
            pthread_cond_wait(&lg.cv, &lg.mu);
        }
        lg.is_waiting = false;
        if (lg.head == lg.tail && lg.stopping) {
            break;
        }
        int64_t now = mono_now_us();
        if (now - last_wake_us < LOG_GATHER_US && !lg.stopping) {
            /* Lines are coming fast: gather them. */
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += LOG_GATHER_US * 1000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            lg.is_gathering = true;
            while (lg.is_gathering && !lg.stopping &&
                   pthread_cond_timedwait(&lg.cv, &lg.mu, &until) == 0) {
            }
            lg.is_gathering = false;
            now = mono_now_us();
        }
        last_wake_us = now;
        size_t blen = 0;
        int n = 0;
        while (lg.head != lg.tail) {
            struct log_line *l = &lg.ring[lg.tail % LOG_QUEUE_LEN];
            if (batch && meta) {
                memcpy(batch + blen, l->text, l->len);
                meta[n] = (struct log_meta){ (unsigned) blen, l->len, l->msg_off, l->level };
                n++;
                blen += l->len;
            }
            lg.tail++;
        }
        bool to_syslog = lg.use_syslog;
        pthread_mutex_unlock(&lg.mu);
        if (batch && meta) {
            if (to_syslog) {
                for (int i = 0; i < n; i++) {
                    syslog_line(batch + meta[i].off, meta[i].len, meta[i].msg_off, meta[i].level);
                }
            } else {
                write_all(batch, blen);
            }
        }
        pthread_mutex_lock(&lg.mu);
    }
    pthread_mutex_unlock(&lg.mu);
    free(batch);
    free(meta);
    return NULL;
}

int
log_start(void)
{
    pthread_mutex_lock(&lg.mu);
    if (lg.running) {
        pthread_mutex_unlock(&lg.mu);
        return 0;
    }
    lg.ring = calloc(LOG_QUEUE_LEN, sizeof(*lg.ring));
    if (!lg.ring) {
        pthread_mutex_unlock(&lg.mu);
        return -1;
    }
    lg.head = lg.tail = 0;
    lg.stopping = false;
    /* The gathering wait counts on the monotonic clock: a wall clock set back must not hold
     * the lines. No thread uses cv now (the logger is not running). */
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) == 0) {
        if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0) {
            pthread_cond_destroy(&lg.cv);
            pthread_cond_init(&lg.cv, &ca);
        }
        pthread_condattr_destroy(&ca);
    }
    lg.pid = (int) getpid();
    if (pthread_create(&lg.thread, NULL, logger_main, NULL) != 0) {
        free(lg.ring);
        lg.ring = NULL;
        pthread_mutex_unlock(&lg.mu);
        return -1;
    }
    lg.running = true;
    pthread_mutex_unlock(&lg.mu);
    return 0;
}

void
log_stop(void)
{
    pthread_mutex_lock(&lg.mu);
    if (!lg.running) {
        pthread_mutex_unlock(&lg.mu);
        return;
    }
    lg.stopping = true;
    lg.is_waiting = false;
    pthread_cond_signal(&lg.cv);
    pthread_mutex_unlock(&lg.mu);
    pthread_join(lg.thread, NULL);
    pthread_mutex_lock(&lg.mu);
    lg.running = false;
    free(lg.ring);
    lg.ring = NULL;
    pthread_mutex_unlock(&lg.mu);
}

void
log_write(enum log_level level, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(
        line, sizeof(line), "%04d-%02d-%02d %02d:%02d:%02d.%03d UTC [%d] %s: ", tm.tm_year + 1900,
        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (tv.tv_usec / 1000),
        lg.pid ? lg.pid : (int) getpid(), level_names[level < LOG_TRACE ? level : LOG_TRACE]);
    /* The stderr prefix minus its level, which syslog carries in the priority. */
    size_t msg_off = (size_t) n;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t) n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t) n + (m < 0 ? 0 : (size_t) m);
    if (len > sizeof(line) - 2) {
        len = sizeof(line) - 2;
    }
    line[len++] = '\n';

    pthread_mutex_lock(&lg.mu);
    if (!lg.running) {
        /* Start-up and shutdown are single-threaded: write directly, under the lock so the
         * syslog socket has one user. */
        if (lg.use_syslog) {
            syslog_line(line, len, msg_off, (int) level);
        } else {
            write_all(line, len);
        }
        pthread_mutex_unlock(&lg.mu);
        return;
    }
    if (lg.head - lg.tail >= LOG_QUEUE_LEN) {
        pthread_mutex_unlock(&lg.mu);
        atomic_fetch_add_explicit(&lg.dropped, 1, memory_order_relaxed);
        return;
    }
    struct log_line *l = &lg.ring[lg.head % LOG_QUEUE_LEN];
    memcpy(l->text, line, len);
    l->len = (unsigned short) len;
    l->msg_off = (unsigned short) msg_off;
    l->level = (unsigned char) level;
    lg.head++;
    if (lg.is_waiting || (lg.is_gathering && lg.head - lg.tail >= LOG_QUEUE_LEN / 2)) {
        lg.is_waiting = false;
        lg.is_gathering = false;
        pthread_cond_signal(&lg.cv);
    }
    pthread_mutex_unlock(&lg.mu);
}
