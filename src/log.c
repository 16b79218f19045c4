/* Where log lines go is decided once at start-up: the journal gets one entry per line with
 * QWORKER_* fields so that `journalctl QWORKER_OUTCOME=failed` works; stderr gets the same line as
 * text with the fields appended, for a terminal or a plain log file. */
#include "log.h"

#include "logtext.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#define LOG_LINE_MAX 4096
#define LOG_FIELDS_MAX 16

static atomic_int log_level = LOG_INFO;
static bool journal;

static const char *const level_names[] = {
    [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert",     [LOG_CRIT] = "crit",
    [LOG_ERR] = "err",     [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
    [LOG_INFO] = "info",   [LOG_DEBUG] = "debug",
};

/* systemd sets JOURNAL_STREAM to the device and inode of the stream it connected to stderr. */
static bool stderr_is_journal(void)
{
    const char *env = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (env == NULL || sscanf(env, "%llu:%llu", &dev, &ino) != 2)
        return false;
    if (fstat(STDERR_FILENO, &st) < 0)
        return false;
    return st.st_dev == dev && st.st_ino == ino;
}

static bool journal_available(void)
{
    return access("/run/systemd/journal/socket", W_OK) == 0;
}

void log_init(enum log_target target, int level)
{
    switch (target) {
    case LOG_TARGET_JOURNAL:
        journal = true;
        break;
    case LOG_TARGET_STDERR:
        journal = false;
        break;
    case LOG_TARGET_AUTO:
        journal = stderr_is_journal() || (!isatty(STDERR_FILENO) && journal_available());
        break;
    }
    log_set_level(level);
}

void log_set_level(int level)
{
    atomic_store(&log_level, level);
}

bool log_enabled(int priority)
{
    return priority <= atomic_load(&log_level);
}

bool log_to_journal(void)
{
    return journal;
}

int log_level_parse(const char *name)
{
    for (int i = LOG_ERR; i <= LOG_DEBUG; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "warn") == 0 || strcmp(name, "error") == 0)
        return name[0] == 'w' ? LOG_WARNING : LOG_ERR;
    return -1;
}

/* "QWORKER_DURATION_MS" -> "duration_ms" */
static void text_key(const char *key, char *out, size_t len)
{
    size_t i = 0;

    if (strncmp(key, "QWORKER_", 8) == 0)
        key += 8;
    for (; key[i] != '\0' && i + 1 < len; i++)
        out[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
    out[i] = '\0';
}

/* The message, then the text fields as key=value: the same line on stderr and in MESSAGE=. */
static void format_line(char *line, size_t len, const char *fmt, va_list ap,
                        const struct log_field *fields, int n)
{
    char key[64];
    int w = vsnprintf(line, len, fmt, ap);
    size_t off = w < 0 ? 0 : (size_t)w;

    for (int i = 0; i < n && off < len; i++) {
        if (!fields[i].text)
            continue;
        text_key(fields[i].key, key, sizeof(key));
        off += (size_t)snprintf(line + off, len - off, " %s=%s", key, fields[i].value);
    }
}

static void emit_stderr(int priority, const char *line)
{
    char out[LOG_LINE_MAX + 64];
    char stamp[32];
    struct timespec ts;
    struct tm tm;
    int w;
    size_t off;

    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
    w = snprintf(out, sizeof(out) - 1, "%s.%03ld %-7s %s", stamp, ts.tv_nsec / 1000000,
                 level_names[priority], line);
    off = (w < 0 || (size_t)w >= sizeof(out) - 1) ? sizeof(out) - 2 : (size_t)w;
    out[off++] = '\n';
    /* One write per line keeps lines from different threads whole. */
    if (write(STDERR_FILENO, out, off) < 0) {
        /* Nowhere left to report it. */
    }
}

static void emit_journal(int priority, const char *line, const struct log_field *fields, int n)
{
    char head[3][LOG_LINE_MAX + 16];
    char bufs[LOG_FIELDS_MAX][512];
    struct iovec iov[LOG_FIELDS_MAX + 3];
    int k = 0;

    snprintf(head[0], sizeof(head[0]), "MESSAGE=%s", line);
    snprintf(head[1], sizeof(head[1]), "PRIORITY=%d", priority);
    snprintf(head[2], sizeof(head[2]), "SYSLOG_IDENTIFIER=qworker");
    for (int i = 0; i < 3; i++, k++) {
        iov[k].iov_base = head[i];
        iov[k].iov_len = strlen(head[i]);
    }
    for (int i = 0; i < n && i < LOG_FIELDS_MAX; i++, k++) {
        size_t w = (size_t)snprintf(bufs[i], sizeof(bufs[i]), "%s=", fields[i].key);
        if (w < sizeof(bufs[i]))
            logtext_escape(fields[i].value, strlen(fields[i].value), bufs[i] + w,
                           sizeof(bufs[i]) - w);
        iov[k].iov_base = bufs[i];
        iov[k].iov_len = strlen(bufs[i]);
    }
    if (sd_journal_sendv(iov, k) < 0)
        emit_stderr(priority, line);
}

/* Text from outside (ids, payloads, handler names, children's output, Redis errors) reaches
 * here through the format's arguments: escaped whole, it can neither end the line (a forged log
 * line) nor drive the terminal that shows it. */
static void vlog(int priority, const struct log_field *fields, int n, const char *fmt, va_list ap)
{
    char raw[LOG_LINE_MAX], line[LOG_LINE_MAX];
    int saved = errno;

    if (!log_enabled(priority))
        return;
    format_line(raw, sizeof(raw), fmt, ap, fields, n);
    logtext_escape(raw, strlen(raw), line, sizeof(line));
    if (journal)
        emit_journal(priority, line, fields, n);
    else
        emit_stderr(priority, line);
    errno = saved;
}

void log_msg(int priority, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(priority, NULL, 0, fmt, ap);
    va_end(ap);
}

void log_fields(int priority, const struct log_field *fields, int nfields, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(priority, fields, nfields, fmt, ap);
    va_end(ap);
}
