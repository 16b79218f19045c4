#include "task.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <jansson.h>
#include <time.h>
#include <unistd.h>

#include "held.h"

/* Ids are unique within a process and unlikely to repeat across processes: a random 64-bit base
 * plus a counter, passed through a bijective mixer so that consecutive ids do not look alike. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t id_base;
static atomic_uint_fast64_t id_counter;
static pthread_once_t id_once = PTHREAD_ONCE_INIT;

static void id_seed(void)
{
    if (getrandom(&id_base, sizeof(id_base), GRND_NONBLOCK) != (ssize_t)sizeof(id_base))
        id_base = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
}

static uint64_t next_id(void)
{
    pthread_once(&id_once, id_seed);
    return mix64(id_base + atomic_fetch_add(&id_counter, 1));
}

void task_make_id(char *out)
{
    snprintf(out, TASK_ID_LEN + 1, "%016llx", (unsigned long long)next_id());
}

struct task *task_new_with_id(const struct queue_conf *queue, const char *payload, size_t len,
                              const char *id)
{
    struct task *t = malloc(sizeof(*t) + len);

    if (t == NULL)
        return NULL;
    memset(t, 0, sizeof(*t));
    t->queue = queue;
    t->handler = queue->handler;
    t->attempt = 1;
    t->len = len;
    memcpy(t->payload, payload, len);
    memcpy(t->id, id, TASK_ID_LEN);
    t->id[TASK_ID_LEN] = '\0';
    t->label = t->id;
    return t;
}

struct task *task_new(const struct queue_conf *queue, const char *payload, size_t len)
{
    char id[TASK_ID_LEN + 1];

    task_make_id(id);
    return task_new_with_id(queue, payload, len, id);
}

bool task_is_envelope(const struct task *t)
{
    size_t i = 0;

    while (i < t->len && (t->payload[i] == ' ' || t->payload[i] == '\t' || t->payload[i] == '\n' ||
                          t->payload[i] == '\r'))
        i++;
    return i < t->len && t->payload[i] == '{';
}

size_t task_mem_estimate(const struct task *t)
{
    return task_is_envelope(t) ? t->len * 32 : t->len;
}

void task_free(struct task *t)
{
    if (t == NULL)
        return;
    held_del(t->id);
    json_decref(t->json);
    free(t->reason);
    free(t->label_own);
    free(t->then);
    free(t->then_queue);
    free(t->unique_key);
    free(t);
}

void task_set_reason(struct task *t, const char *fmt, ...)
{
    char buf[TASK_REASON_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    free(t->reason);
    t->reason = strdup(buf); /* NULL if out of memory: then the log says no reason */
}

const char *task_reason(const struct task *t)
{
    return t->reason != NULL ? t->reason : "";
}

const char *outcome_name(enum outcome o)
{
    switch (o) {
    case OUTCOME_OK:
        return "ok";
    case OUTCOME_FAILED:
        return "failed";
    case OUTCOME_TIMEOUT:
        return "timeout";
    case OUTCOME_INVALID:
        return "invalid";
    case OUTCOME_REQUEUED:
        return "requeued";
    case OUTCOME_DELAYED:
        return "delayed";
    case OUTCOME_DUPLICATE:
        return "duplicate";
    case OUTCOME_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}

char *payload_excerpt(const char *p, size_t len, size_t max, char *out, size_t outlen)
{
    size_t o = 0, i;

    if (outlen < 8) {
        if (outlen > 0)
            out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    for (i = 0; i < len && i < max; i++) {
        unsigned char c = (unsigned char)p[i];
        if (o + 6 >= outlen)
            break;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    if (i < len)
        snprintf(out + o, outlen - o, "...(%zu bytes)", len);
    return out;
}
