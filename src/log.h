/* Logging to the journal (with structured fields) or to stderr (one readable line). Thread-safe. */
#ifndef QWORKER_LOG_H
#define QWORKER_LOG_H

#include <stdbool.h>
#include <syslog.h>

enum log_target { LOG_TARGET_AUTO, LOG_TARGET_JOURNAL, LOG_TARGET_STDERR };

/* A journal field; on stderr it is appended to the message as key=value (lowercased, without the
 * QWORKER_ prefix) unless text is false. */
struct log_field {
    const char *key;
    const char *value;
    bool text;
};

void log_init(enum log_target target, int level);
void log_set_level(int level);
bool log_enabled(int priority);
bool log_to_journal(void);

void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_fields(int priority, const struct log_field *fields, int nfields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Parses "err", "warning", "notice", "info" or "debug"; -1 if unknown. */
int log_level_parse(const char *name);

#endif
