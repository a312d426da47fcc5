/*
 * log.c - see log.h. The queue is a fixed ring of fixed-size lines under one mutex; the
 * critical section is a memcpy, so a worker holds the lock for well under a microsecond and
 * never waits on the terminal or a pipe. The logger thread writes batches to stderr.
 */
#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX  512
#define LOG_QUEUE_LEN 1024

atomic_int log_level_current = LOG_INFO;

static const char *const level_names[] = { "FATAL", "ERROR", "WARNING", "INFO", "DEBUG", "TRACE" };
static const char *const level_keys[] = { "fatal", "error", "warning", "info", "debug", "trace" };

struct log_line {
    unsigned short len;
    char text[LOG_LINE_MAX];
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool running;
    bool stopping;
    unsigned head, tail; /* ring positions; head == tail means empty */
    struct log_line *ring;
    atomic_uint_fast64_t dropped;
} lg = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

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

static void *
logger_main(void *arg)
{
    (void) arg;
    char *batch = malloc((size_t) LOG_QUEUE_LEN * (LOG_LINE_MAX + 1));
    pthread_mutex_lock(&lg.mu);
    for (;;) {
        while (lg.head == lg.tail && !lg.stopping) {
            pthread_cond_wait(&lg.cv, &lg.mu);
        }
        if (lg.head == lg.tail && lg.stopping) {
            break;
        }
        size_t blen = 0;
        while (lg.head != lg.tail) {
            struct log_line *l = &lg.ring[lg.tail % LOG_QUEUE_LEN];
            if (batch) {
                memcpy(batch + blen, l->text, l->len);
                blen += l->len;
            }
            lg.tail++;
        }
        pthread_mutex_unlock(&lg.mu);
        if (batch) {
            write_all(batch, blen);
        }
        pthread_mutex_lock(&lg.mu);
    }
    pthread_mutex_unlock(&lg.mu);
    free(batch);
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
        (int) getpid(), level_names[level < LOG_TRACE ? level : LOG_TRACE]);
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
        pthread_mutex_unlock(&lg.mu);
        write_all(line, len);
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
    lg.head++;
    pthread_cond_signal(&lg.cv);
    pthread_mutex_unlock(&lg.mu);
}
