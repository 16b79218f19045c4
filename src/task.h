/* A task: one payload taken from a queue, from the moment the consumer fetches it until the
 * reporter has recorded its outcome. Exactly one thread owns a task at a time; ownership moves
 * only through a taskq. */
#ifndef QWORKER_TASK_H
#define QWORKER_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event_struct.h>

#include "config.h"

struct json_t;

struct loop;

enum outcome {
    OUTCOME_OK,
    OUTCOME_FAILED,
    OUTCOME_TIMEOUT,
    OUTCOME_INVALID,
    OUTCOME_REQUEUED,
    OUTCOME_DELAYED,   /* not run yet: "delay" put it in the schedule */
    OUTCOME_DUPLICATE, /* not run: its "id" ran within its "unique_for" (unique.h) */
    OUTCOME_CANCELLED, /* stopped or not run: qworkerctl cancel (cancel.h); never retried */
};
#define NOUTCOMES (OUTCOME_CANCELLED + 1)

/* An envelope asking for "unique_for" (unique.h): whether its id could be claimed. */
enum unique_state { UNIQUE_NONE, UNIQUE_CLAIMED, UNIQUE_DUPLICATE, UNIQUE_UNCHECKED };

#define TASK_ID_LEN 16
#define TASK_REASON_MAX 160
#define TASK_LABEL_MAX 128

struct task {
    struct task *next;          /* link in the taskq or chain that holds it */
    LIST_ENTRY(task) running;   /* loop thread: the set of running tasks */
    struct event timer;         /* loop thread: the sleep handler's timer */
    struct loop *loop;          /* loop thread: the loop running it */
    const struct queue_conf *queue;
    const struct handler_conf *handler;
    char id[TASK_ID_LEN + 1];
    int attempt;
    int recoveries; /* times put back because the worker running it died */
    enum outcome outcome;
    int64_t started_real_us;
    int64_t started_mono_us;
    int64_t finished_mono_us;
    char *reason;           /* why it did not end ok (task_set_reason); NULL: no reason */

    /* From a JSON envelope (envelope.c); a plain payload leaves json NULL and the rest zero. */
    struct json_t *json;  /* owned */
    struct json_t *args;  /* borrowed from json; NULL: the payload itself is the argument */
    const char *label;    /* the envelope's "id", else id */
    double timeout;       /* seconds; 0: the handler's */
    int max_attempts;     /* 0: the handler's */
    double delay;         /* seconds to wait before the first attempt */
    /* Claimed by the consumer before the task reaches the loop (unique.c): the claim's key, its
     * window in seconds, and whether it was had. */
    char *unique_key;
    double unique_for;
    enum unique_state unique;

    int exit_status;      /* exec: the exit code, or 128 + signal; 0 otherwise */
    int64_t sleep_us;     /* sleep: how long it was to take, to measure timer lateness */
    char *label_own;        /* a retried task keeps its first id: label points here */
    /* The envelope's "then": the next step's envelope (compact JSON, without "queue") and the
     * queue it goes to, pushed when this one ends ok, by the same script that records it. */
    char *then;
    size_t then_len;
    char *then_queue; /* NULL: this task's queue */

    /* Decided by the reporter: */
    int64_t due_ms;       /* to the schedule, due then (unix ms); 0: not */
    bool dead;            /* to the dead-letter list */
    void *run;            /* loop thread: the handler's state while it runs */
    int slot;               /* loop thread: its handler's slot */
    size_t mem;             /* bytes charged to the memory budget (capacity.h) for it */

    size_t len;
    char payload[];             /* not NUL-terminated: payloads are binary-safe */
};

/* A task with a fresh id, or with the id given (already used as its in-flight key). */
struct task *task_new(const struct queue_conf *queue, const char *payload, size_t len);
/* Whether the payload is a JSON object (an envelope or a wrapper), not a plain payload. */
bool task_is_envelope(const struct task *t);
/* The bytes a task will hold once parsed, before it is: a JSON envelope of small values takes up
 * to some thirty times its size (the loop thread charges what parsing really took). */
size_t task_mem_estimate(const struct task *t);
struct task *task_new_with_id(const struct queue_conf *queue, const char *payload, size_t len,
                              const char *id);
/* Writes a fresh id: TASK_ID_LEN hex digits and a NUL. */
void task_make_id(char *out);
void task_free(struct task *task);

const char *outcome_name(enum outcome outcome);

/* Sets why the task did not end ok (at most TASK_REASON_MAX bytes), replacing any earlier
 * reason. Kept out of struct task: a million tasks in flight mostly have none. */
void task_set_reason(struct task *task, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The reason, or "" if none. */
const char *task_reason(const struct task *task);

/* Writes a printable, quoted excerpt of a payload: at most max payload bytes, non-printable bytes
 * as \xNN, and "…(N bytes)" when cut. Returns out. */
char *payload_excerpt(const char *payload, size_t len, size_t max, char *out, size_t outlen);

#endif
