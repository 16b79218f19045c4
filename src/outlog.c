#include "outlog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "task.h"
#include "taskq.h"

struct outline {
    struct outline *next;
    int priority;
    const char *stream; /* a static string */
    char label[TASK_LABEL_MAX + 1];
    char message[];
};

void outlog_init(struct outlog *o, struct taskq *wake)
{
    pthread_mutex_init(&o->mu, NULL);
    o->head = NULL;
    o->tailp = &o->head;
    o->wake = wake;
}

void outlog_destroy(struct outlog *o)
{
    outlog_flush(o);
    pthread_mutex_destroy(&o->mu);
}

void outlog_line(struct outlog *o, const char *label, const char *stream, const char *text,
                 size_t len, bool cut, const char *note)
{
    size_t max = note ? strlen(note) + 1 : strlen(label) + strlen(stream) + len + 16;
    struct outline *l = malloc(sizeof(*l) + max);
    bool first;

    if (l == NULL)
        return; /* out of memory: a line of output is what gives */
    l->next = NULL;
    l->priority = note ? LOG_NOTICE : LOG_INFO;
    l->stream = stream;
    snprintf(l->label, sizeof(l->label), "%s", label);
    if (note != NULL)
        memcpy(l->message, note, max);
    else
        snprintf(l->message, max, "task %s %s: %.*s%s", label, stream, (int)len, text,
                 cut ? "..." : "");
    pthread_mutex_lock(&o->mu);
    first = o->head == NULL;
    *o->tailp = l;
    o->tailp = &l->next;
    pthread_mutex_unlock(&o->mu);
    if (first)
        taskq_kick(o->wake);
}

void outlog_flush(struct outlog *o)
{
    struct outline *l, *next;

    pthread_mutex_lock(&o->mu);
    l = o->head;
    o->head = NULL;
    o->tailp = &o->head;
    pthread_mutex_unlock(&o->mu);
    for (; l != NULL; l = next) {
        struct log_field f[] = {{"QWORKER_TASK_ID", l->label, false},
                                {"QWORKER_STREAM", l->stream, false}};
        next = l->next;
        log_fields(l->priority, f, 2, "%s", l->message);
        free(l);
    }
}
