/* Fuzz target: the decoders of src/wire.c, fed what a Redis server (a buggy or compromised one)
 * or a pusher could send.
 *
 * Input: byte 0 chooses how many tasks the fetch asked for (0..15) and how many queues there are
 * (1..16); the rest is read twice:
 * - as RESP by hiredis's reader with qworker's bounded reply objects (src/reply.c: an array
 *   header declaring more than REPLY_MAX_ELEMENTS is refused instead of allocated; kept input
 *   tests/fuzz/crashes/wire/oom-declared-array), every reply going to wire_fetch_reply(): when it
 *   accepts, the counts are within what was asked (nitems + nlarge <= asked, examined and nbad
 *   <= queues), every item's and too large payload's queue index is below the queue count, an
 *   item's payload is readable for its whole length (ASan checks the read), and a too large
 *   payload's ref is a string and its length not negative; when it refuses, it says why; and
 *   to the check of every other script's reply (wire_requeue_reply, wire_reap_reply...): when
 *   one accepts, every field its caller reads is read here (ASan checks) and is in range;
 * - as JSON: when it is one of qworker's wrappers, wire_read_wrapper() either refuses with a
 *   reason or gives a payload (freed: LeakSanitizer checks) with attempt 1..1000 and recoveries
 *   0..1000000; and the payload written back by wire_wrapper() reads back byte for byte, with
 *   the same attempt, id and recoveries (the round trip retries and recoveries depend on).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "check.h"
#include "reply.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What identity.c, reporter.c and fetch_script.c read of a reply once its check accepted it. */
static void script_replies(const redisReply *r)
{
    volatile long long sink = 0;

    if (wire_count(r))
        CHECK(r->integer >= 0);
    if (wire_requeue_reply(r))
        sink += r->element[0]->integer + r->element[1]->integer;
    if (wire_reap_reply(r))
        for (size_t i = 0; i < r->elements; i += 3) {
            CHECK(r->element[i]->str != NULL);
            sink += r->element[i]->str[0] + r->element[i + 1]->integer + r->element[i + 2]->integer;
        }
    if (wire_beat_reply(r))
        CHECK(r->integer == 0 || r->integer == 1);
    if (wire_claim_reply(r))
        CHECK(r->integer == 0 || r->integer == -1);
    if (wire_record_reply(r))
        sink += r->element[0]->integer + r->element[1]->integer + r->element[2]->integer;
    if (wire_due_reply(r)) {
        sink += r->element[0]->integer;
        if (r->element[1]->type == REDIS_REPLY_STRING)
            sink += (long long)strtod(r->element[1]->str, NULL);
    }
    (void)sink;
}

static void fetch_reply(const uint8_t *data, size_t size, size_t asked, int nqueues)
{
    redisReader *r = redisReaderCreate();
    void *reply = NULL;

    CHECK(r != NULL);
    r->fn = &reply_bounded; /* as every connection of qworker's reads */
    if (redisReaderFeed(r, (const char *)data, size) != REDIS_OK) {
        redisReaderFree(r);
        return;
    }
    while (redisReaderGetReply(r, &reply) == REDIS_OK && reply != NULL) {
        struct fetch_reply f;
        const char *why = NULL;
        volatile char sink = 0;

        script_replies(reply);
        if (wire_fetch_reply(reply, nqueues, asked, &f, &why) == 0) {
            CHECK(f.nitems + f.nlarge <= asked);
            for (size_t i = 0; i < f.nlarge; i++) {
                struct fetch_large l = wire_fetch_large(&f, i);
                CHECK(l.queue >= 0 && l.queue < nqueues);
                CHECK(l.ref != NULL && l.length >= 0);
                sink ^= l.ref[0];
            }
            CHECK(f.examined >= 0 && f.examined <= nqueues);
            CHECK(f.nbad >= 0 && f.nbad <= nqueues);
            for (int i = 0; i < f.nbad; i++) {
                struct fetch_bad b = wire_fetch_bad(&f, i);
                CHECK(b.queue >= 0 && b.queue < nqueues && b.error != NULL);
                sink ^= b.error[0];
            }
            for (size_t i = 0; i < f.nitems; i++) {
                struct fetch_item it = wire_fetch_item(&f, i);
                CHECK(it.queue >= 0 && it.queue < nqueues);
                CHECK(it.len == 0 || it.payload != NULL);
                for (size_t k = 0; k < it.len; k++)
                    sink ^= it.payload[k];
            }
        } else {
            CHECK(why != NULL && why[0] != '\0');
        }
        (void)sink;
        freeReplyObject(reply);
        reply = NULL;
    }
    redisReaderFree(r);
}

static void wrapper(const uint8_t *data, size_t size)
{
    json_t *o = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL), *back;
    struct wire_wrapped w, again;
    const char *why = NULL;
    char *text;

    if (o == NULL || !json_is_object(o) || !wire_is_wrapper(o)) {
        json_decref(o);
        return;
    }
    if (wire_read_wrapper(o, &w, &why) < 0) {
        CHECK(why != NULL && why[0] != '\0');
        json_decref(o);
        return;
    }
    CHECK(w.attempt >= 1 && w.attempt <= 1000);
    CHECK(w.recoveries >= 0 && w.recoveries <= 1000000);
    text = wire_wrapper(w.payload, w.len, w.attempt, w.id != NULL ? w.id : "x", w.recoveries);
    if (text != NULL) {
        back = json_loads(text, 0, NULL);
        CHECK(back != NULL && wire_read_wrapper(back, &again, &why) == 0);
        CHECK(again.len == w.len && memcmp(again.payload, w.payload, w.len) == 0);
        CHECK(again.attempt == w.attempt && again.recoveries == w.recoveries);
        CHECK(again.ready);
        CHECK(strcmp(again.id, w.id != NULL ? w.id : "x") == 0);
        free(again.payload);
        json_decref(back);
        free(text);
    }
    free(w.payload);
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fetch_reply(data + 1, size - 1, data[0] & 0x0f, 1 + (data[0] >> 4));
    wrapper(data + 1, size - 1);
    return 0;
}
