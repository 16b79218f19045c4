/* Every Redis reply qworker gets is classified here, in one place, so that each caller acts on
 * what a reply means rather than on its spelling: done; not done but worth trying again later;
 * the connection is unusable; a key of the wrong type; not allowed. A reply that is not the
 * expected success is never taken as done. */
#ifndef QWORKER_REPLY_H
#define QWORKER_REPLY_H

#include <stdbool.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

enum rclass {
    RC_OK,        /* the expected kind of reply */
    RC_RETRY,     /* not done; try again later: OOM, BUSY, TRYAGAIN, EXECABORT, MISCONF,
                   * NOSCRIPT, CLIENT PAUSE... */
    RC_RECONNECT, /* lost, or not a usable master now: LOADING, READONLY, UNBLOCKED,
                   * MASTERDOWN; connect again */
    RC_WRONG_KEY, /* WRONGTYPE: a key holds another type; never touch it */
    RC_DENIED,    /* NOPERM, NOAUTH, WRONGPASS, a script denied a key: a clear error */
    RC_FAILED,    /* any other error, or a reply of an unexpected type */
};

/* The class of reply (NULL: the connection was lost) when a reply of type want was expected
 * (REDIS_REPLY_ARRAY, ..._INTEGER...; 0: any non-error reply). */
enum rclass reply_class(const redisReply *reply, int want);
const char *rclass_name(enum rclass c);

/* A condition that begins and ends (Redis refusing writes, a queue of the wrong type): one
 * warning when it begins, one notice when it ends, however many attempts in between, as for an
 * outage. Owned by one thread. */
struct rcond {
    bool on;
    int64_t since_us;
    unsigned long attempts;
};

/* The condition holds (again): logs "<what>: <why>" at priority the first time. */
void rcond_begin(struct rcond *c, int priority, const char *why, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The condition is over: logs "<what> again after N s" at notice if it held. */
void rcond_end(struct rcond *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* hiredis 0.14 allocates what a reply declares before it arrives: an array header of a billion
 * elements is an 8 GB calloc. Every connection reads replies with these object functions
 * instead of hiredis's own, identical but for the bounds: a reply over them is refused, and the
 * connection with it (a real Redis never sends one: qworker asks for at most 10,000 tasks, and
 * Redis's own proto-max-bulk-len is 512 MB). */
#define REPLY_MAX_ELEMENTS (1 << 20)
#define REPLY_MAX_STRING (512u << 20)
extern redisReplyObjectFunctions reply_bounded; /* not const: hiredis 0.14 wants it so */
/* The reason the last reply read on this thread was refused for its bounds, once (then hiredis
 * says only "Out of memory"); false if none was. */
bool reply_take_refusal(char *out, size_t len);

/* What a reply says, for a log line: its error text, or its type. Never NULL. */
const char *reply_text(const redisReply *reply);

#endif
