/* Every byte format qworker and its Lua scripts exchange through Redis, encoded and decoded here
 * (the scripts' side is in src/lua/; tests/unit/test_wire.c and tests/e2e/test_wire.py hold the
 * golden vectors both sides are checked against):
 *   in-flight entry   "<queue>\0<payload>" (fetch.lua writes it; requeue_fn.lua reads it)
 *   wrapper           {"payload" | "payload_base64", "attempt", "id", "ready", "recoveries"}:
 *                     a task qworker puts back in a queue (retry, delayed, recovered)
 *   schedule member   {"queue", "task": <wrapper>, "push": <fetch id>}: unique per push, so that
 *                     two pushes of one envelope never collapse into one sorted-set member
 *   dead letter       {"payload" | "payload_base64", "id", "queue", "handler", "reason",
 *                     "attempts", "time", "worker"}
 *   fetch reply       {examined, nbad, (queue index, error) * nbad, (queue index, payload) * n}
 * A payload is JSON text ("payload") only when jansson reads it back byte for byte: UTF-8
 * without NUL; anything else goes as base64. */
#ifndef QWORKER_WIRE_H
#define QWORKER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <stdbool.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

struct task;

/* Each returns a malloc'd NUL-terminated string, or NULL if out of memory. */
char *wire_wrapper(const char *payload, size_t len, int attempt, const char *id,
                   int recoveries);
char *wire_schedule_member(const char *queue, const char *wrapper, const char *push);
char *wire_dead_letter(const char *payload, size_t len, const char *id, const char *queue,
                       const char *handler, const char *reason, int attempts, int64_t time_s,
                       const char *worker);

/* The task as it goes back into its queue for another attempt (or after a delay). */
char *wire_task_wrapper(const struct task *t, int attempt);

/* What a wrapper (or a dead letter moved back into a queue) holds. */
struct wire_wrapped {
    char *payload; /* malloc'd; may hold NUL bytes */
    size_t len;
    int attempt;         /* 1 for a dead letter: it runs again as a first attempt */
    int recoveries;
    const char *id;      /* points into the JSON; NULL for a dead letter or none */
    bool ready;          /* its delay was served */
};

/* Whether a JSON object is one of qworker's wrappers (it holds "payload" or "payload_base64"). */
bool wire_is_wrapper(const json_t *o);
/* Reads a wrapper; 0, or -1 with why (a static string) and nothing to free. */
int wire_read_wrapper(const json_t *o, struct wire_wrapped *out, const char **why);

struct fetch_bad {
    int queue;         /* index in the fetch's queue list */
    const char *error; /* points into the reply */
};

struct fetch_item {
    int queue;
    const char *payload; /* points into the reply */
    size_t len;
};

/* A payload over max_payload that the fetch script moved to the dead list instead. */
struct fetch_large {
    int queue;
    const char *ref; /* its field in the dead payloads hash; points into the reply */
    long long length;
};

struct fetch_reply {
    int examined;
    int nbad;
    const struct redisReply *const *bad; /* pairs, as the reply holds them */
    size_t nlarge;
    const struct redisReply *const *large; /* triples, as the reply holds them */
    size_t nitems;
    const struct redisReply *const *items; /* pairs, as the reply holds them */
};

/* Checks a fetch script's reply whole before anything is used: shape, types, every queue index
 * below nqueues, and at most max tasks and dead letters together (a reply claiming more than
 * was asked for is refused). 0 and out filled, or -1 with why. */
int wire_fetch_reply(const redisReply *r, int nqueues, size_t max, struct fetch_reply *out,
                     const char **why);
/* Refused queue i of a checked reply (its error points into the reply). */
struct fetch_bad wire_fetch_bad(const struct fetch_reply *f, int i);
/* Task i of a checked reply. */
struct fetch_item wire_fetch_item(const struct fetch_reply *f, size_t i);
/* Too large payload i of a checked reply. */
struct fetch_large wire_fetch_large(const struct fetch_reply *f, size_t i);

/* The replies of the other scripts, each checked whole before a field is read: what each
 * returns is said at the top of its src/lua/ file. A server that answers anything else is not
 * believed. */
bool wire_count(const struct redisReply *r);          /* a count of tasks: 0 to 2^40 */
bool wire_requeue_reply(const struct redisReply *r);  /* {moved, left} */
bool wire_reap_reply(const struct redisReply *r);     /* {worker, moved, left} per worker */
bool wire_beat_reply(const struct redisReply *r);     /* 1 ours, 0 taken over */
bool wire_claim_reply(const struct redisReply *r);    /* 0 claimed, -1 in use */
bool wire_record_reply(const struct redisReply *r);   /* {recorded, no longer ours, 0 or 1} */
bool wire_due_reply(const struct redisReply *r);      /* {moved, next score or nil} */
/* A TIME reply as unix milliseconds: two strings of digits, seconds then microseconds below a
 * million. false for anything else. */
bool wire_time_ms(const struct redisReply *r, long long *ms);
/* The largest schedule score believed: unix ms in the year 33658, far inside int64 as µs. */
#define WIRE_SCORE_MAX 1e15

#endif
