/* Lines of children's output, handed from the loop thread to the reporter thread, which logs
 * them: writing to the journal may wait, and the loop thread never waits. */
#ifndef QWORKER_OUTLOG_H
#define QWORKER_OUTLOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct taskq;
struct outline;

struct outlog {
    pthread_mutex_t mu;
    struct outline *head;
    struct outline **tailp;
    struct taskq *wake; /* kicked when the first line arrives */
};

void outlog_init(struct outlog *o, struct taskq *wake);
/* Logs what is left, then frees it. */
void outlog_destroy(struct outlog *o);

/* Loop thread: one line (text is len bytes, not NUL-terminated) of a task's stdout or stderr,
 * followed by "..." if it was cut; note, if not NULL, is logged instead (at notice), for what is
 * said about the output. */
void outlog_line(struct outlog *o, const char *label, const char *stream, const char *text,
                 size_t len, bool cut, const char *note);
/* Reporter thread: logs every line handed over so far, in order. */
void outlog_flush(struct outlog *o);

#endif
