#include "held.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A set of 64-bit keys (the ids are 16 hex digits): open addressing with linear probing and
 * deletion by backward shift, so that no tombstones pile up under a steady stream of tasks. Key
 * 0 marks an empty slot; the id 0 is kept aside. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool enabled;
static uint64_t *slots;
static size_t cap; /* a power of two, or 0 */
static size_t used;
static bool zero_held;

void held_enable(void)
{
    atomic_store(&enabled, true);
}

/* The id's 64 bits, or 0 for anything but 16 hex digits (never held: a field some other
 * program left in the hash is put back, not taken for one of ours). */
static uint64_t key_of(const char *id)
{
    uint64_t k = 0;

    for (int i = 0; i < 16; i++) {
        char ch = id[i];
        int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (v < 0)
            return 0;
        k = k << 4 | (uint64_t)v;
    }
    return id[16] == '\0' ? k : 0;
}

static size_t home(uint64_t k)
{
    return (size_t)((k * 0x9E3779B97F4A7C15ULL) >> 7) & (cap - 1);
}

static bool grow(void)
{
    size_t ncap = cap ? cap * 2 : 1024;
    uint64_t *old = slots, *fresh = calloc(ncap, sizeof(*fresh));
    size_t ocap = cap;

    if (fresh == NULL)
        return false;
    slots = fresh;
    cap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i] != 0) {
            size_t j = home(old[i]);
            while (slots[j] != 0)
                j = (j + 1) & (cap - 1);
            slots[j] = old[i];
        }
    free(old);
    return true;
}

static size_t find(uint64_t k)
{
    size_t i = home(k);

    while (slots[i] != 0 && slots[i] != k)
        i = (i + 1) & (cap - 1);
    return i;
}

void held_add(const char *id)
{
    uint64_t k = key_of(id);
    size_t i;

    if (!atomic_load_explicit(&enabled, memory_order_relaxed))
        return;
    pthread_mutex_lock(&mu);
    if (k == 0) {
        zero_held = true;
    } else if ((used + 1) * 2 <= cap || grow()) {
        /* Out of memory: the id is not held, and a failover would put its task back early:
         * it runs twice, never lost. */
        i = find(k);
        if (slots[i] == 0) {
            slots[i] = k;
            used++;
        }
    }
    pthread_mutex_unlock(&mu);
}

void held_del(const char *id)
{
    uint64_t k = key_of(id);
    size_t i, j;

    if (!atomic_load_explicit(&enabled, memory_order_relaxed))
        return;
    pthread_mutex_lock(&mu);
    if (k == 0) {
        zero_held = false;
    } else if (cap > 0 && slots[i = find(k)] != 0) {
        slots[i] = 0;
        used--;
        /* Moves back each later entry of the run that the hole would hide from its home. */
        for (j = (i + 1) & (cap - 1); slots[j] != 0; j = (j + 1) & (cap - 1)) {
            size_t h = home(slots[j]);
            if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
                slots[i] = slots[j];
                slots[j] = 0;
                i = j;
            }
        }
    }
    pthread_mutex_unlock(&mu);
}

bool held_has(const char *id)
{
    uint64_t k = key_of(id);
    bool found;

    pthread_mutex_lock(&mu);
    found = k == 0 ? zero_held && strcmp(id, "0000000000000000") == 0
                   : cap > 0 && slots[find(k)] == k;
    pthread_mutex_unlock(&mu);
    return found;
}

unsigned long held_count(void)
{
    unsigned long n;

    pthread_mutex_lock(&mu);
    n = used + (zero_held ? 1 : 0);
    pthread_mutex_unlock(&mu);
    return n;
}
