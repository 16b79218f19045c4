#include "record.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task.h"
#include "wire.h"

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    size_t n = *cap ? *cap : 16;
    void *q;

    if (need <= *cap)
        return 0;
    while (n < need)
        n *= 2;
    q = realloc(*p, n * size);
    if (q == NULL)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

static int arg(struct record_call *c, const char *s, size_t len)
{
    if (grow((void **)&c->args, &c->cap_args, (size_t)c->nargs + 1, sizeof(*c->args)) < 0 ||
        grow((void **)&c->arglens, &c->cap_args_lens, (size_t)c->nargs + 1, sizeof(size_t)) < 0)
        return -1;
    c->args[c->nargs] = s;
    c->arglens[c->nargs++] = len;
    return 0;
}

/* An argument the call owns (freed with it); takes s even on failure. */
static int owned_arg(struct record_call *c, char *s)
{
    if (s == NULL ||
        grow((void **)&c->owned, &c->cap_owned, c->nowned + 1, sizeof(*c->owned)) < 0) {
        free(s);
        return -1;
    }
    c->owned[c->nowned++] = s;
    return arg(c, s, strlen(s));
}

static char *number(long long n)
{
    char *s;

    return asprintf(&s, "%lld", n) < 0 ? NULL : s;
}

/* The KEYS index (from 1, as Lua counts) of queue, added if new. */
static int queue_key(struct record_call *c, const char *queue)
{
    for (int i = 5; i < c->nkeys; i++)
        if (strcmp(c->keys[i], queue) == 0)
            return i + 1;
    if (grow((void **)&c->keys, &c->cap_keys, (size_t)c->nkeys + 1, sizeof(*c->keys)) < 0)
        return -1;
    c->keys[c->nkeys++] = queue;
    return c->nkeys;
}

static bool ended_ok(const struct task *t)
{
    return t->outcome == OUTCOME_OK && !t->dead && t->due_ms == 0;
}

static bool ack_only(const struct task *t)
{
    return ended_ok(t) && t->then == NULL;
}

/* The groups of tasks that only need acknowledging: one per queue, in order of first
 * appearance. */
static int add_ack_groups(struct record_call *c, const struct record_keys *k,
                          const struct task *tasks)
{
    int ngroups = 0, count_at;

    if (arg(c, "", 0) < 0)
        return -1; /* the number of groups, filled in below */
    count_at = c->nargs - 1;
    for (const struct task *g = tasks; g != NULL; g = g->next) {
        long long n = 0;
        int qi, at;
        bool seen = false;

        if (!ack_only(g))
            continue;
        for (const struct task *e = tasks; e != g && !seen; e = e->next)
            seen = ack_only(e) && e->queue == g->queue;
        if (seen)
            continue;
        if ((qi = queue_key(c, g->queue->name)) < 0 || owned_arg(c, number(qi)) < 0 ||
            arg(c, "", 0) < 0)
            return -1;
        at = c->nargs - 1;
        for (const struct task *t = g; t != NULL; t = t->next) {
            if (!ack_only(t) || t->queue != g->queue)
                continue;
            n++;
            if (k->acks && arg(c, t->id, strlen(t->id)) < 0)
                return -1;
        }
        if (owned_arg(c, number(n)) < 0)
            return -1;
        /* owned_arg appended the count at the end: move it to its place. */
        c->args[at] = c->args[--c->nargs];
        c->arglens[at] = c->arglens[c->nargs];
        ngroups++;
    }
    if (owned_arg(c, number(ngroups)) < 0)
        return -1;
    c->args[count_at] = c->args[--c->nargs];
    c->arglens[count_at] = c->arglens[c->nargs];
    return 0;
}

/* One 5-tuple: id, queue key index, kind, score, entry. */
static int add_effect(struct record_call *c, const struct record_keys *k, const struct task *t,
                      long long now_s)
{
    const char *kind;
    char *score = NULL, *entry = NULL;
    int qi = queue_key(c, t->queue->name);

    if (qi < 0)
        return -1;
    if (ended_ok(t)) {
        /* A chain's next step: pushed by the script that records this one, never one without
         * the other. Its queue's name goes where a score would: not a key of the call, since
         * the script checks it task by task. */
        const char *next = t->then_queue != NULL ? t->then_queue : t->queue->name;
        if (arg(c, t->id, strlen(t->id)) < 0 || owned_arg(c, number(qi)) < 0 ||
            arg(c, "c", 1) < 0 || arg(c, next, strlen(next)) < 0)
            return -1;
        return arg(c, t->then, t->then_len);
    }
    if (t->outcome == OUTCOME_DUPLICATE || t->outcome == OUTCOME_CANCELLED) {
        const char *what = outcome_name(t->outcome);
        if (arg(c, t->id, strlen(t->id)) < 0 || owned_arg(c, number(qi)) < 0 ||
            arg(c, "n", 1) < 0 || arg(c, what, strlen(what)) < 0)
            return -1;
        return arg(c, "", 0);
    }
    if (t->dead) {
        kind = "d";
        entry = wire_dead_letter(t->payload, t->len, t->label, t->queue->name, t->handler->name,
                                 task_reason(t), t->attempt, now_s, k->worker);
    } else if (t->due_ms > 0) {
        char *w = wire_task_wrapper(t, t->outcome == OUTCOME_DELAYED ? t->attempt
                                                                      : t->attempt + 1);
        kind = t->outcome == OUTCOME_DELAYED ? "l" : "r";
        entry = w != NULL ? wire_schedule_member(t->queue->name, w, t->id) : NULL;
        free(w);
        if ((score = number(t->due_ms)) == NULL) {
            free(entry);
            return -1;
        }
    } else {
        kind = "q";
        /* Back at the end the queue is popped from, ahead of waiting tasks; as it came unless
         * qworker had wrapped it. */
        if (t->attempt > 1 || t->recoveries > 0)
            entry = wire_task_wrapper(t, t->attempt);
    }
    if (arg(c, t->id, strlen(t->id)) < 0 || owned_arg(c, number(qi)) < 0 ||
        arg(c, kind, 1) < 0)
        goto fail;
    /* A unique task that never ran gives its claim back (record.lua), also one whose claim's
     * reply was lost: the claim may have been made, and only its own is given back. */
    if (score == NULL && t->unique_key != NULL &&
        (t->unique == UNIQUE_CLAIMED || t->unique == UNIQUE_UNCHECKED) &&
        /* Back in a wrapper (an envelope asking for a later attempt), it is never claimed
         * again: it keeps the claim. */
        !(kind[0] == 'q' && (t->attempt > 1 || t->recoveries > 0)) &&
        (t->outcome == OUTCOME_INVALID || t->outcome == OUTCOME_REQUEUED) &&
        (score = strdup(t->unique_key)) == NULL)
        goto fail;
    if (score != NULL ? owned_arg(c, score) < 0 : arg(c, "", 0) < 0) {
        score = NULL;
        goto fail;
    }
    score = NULL;
    if (kind[0] == 'q' && entry == NULL && !(t->attempt > 1 || t->recoveries > 0))
        return arg(c, t->payload, t->len);
    return owned_arg(c, entry);
fail:
    free(score);
    free(entry);
    return -1;
}

int record_build(struct record_call *c, const struct record_keys *k, const char *tag,
                 const struct task *tasks, long long now_s)
{
    const char *fixed[] = {k->inflight, k->stats, k->dead, k->schedule, k->marker};

    memset(c, 0, sizeof(*c));
    if (grow((void **)&c->keys, &c->cap_keys, 5, sizeof(*c->keys)) < 0)
        goto fail;
    for (int i = 0; i < 5; i++)
        c->keys[c->nkeys++] = fixed[i];
    if (arg(c, tag, strlen(tag)) < 0 || arg(c, k->acks ? "1" : "0", 1) < 0 ||
        add_ack_groups(c, k, tasks) < 0)
        goto fail;
    for (const struct task *t = tasks; t != NULL; t = t->next) {
        c->ntasks++;
        if (ack_only(t))
            continue;
        if (add_effect(c, k, t, now_s) < 0)
            goto fail;
    }
    return 0;
fail:
    record_free(c);
    return -1;
}

void record_free(struct record_call *c)
{
    for (size_t i = 0; i < c->nowned; i++)
        free(c->owned[i]);
    free(c->owned);
    free(c->keys);
    free(c->args);
    free(c->arglens);
    memset(c, 0, sizeof(*c));
}
