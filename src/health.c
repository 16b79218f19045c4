#include "health.h"

#include <stdatomic.h>

#include "clock.h"

static atomic_int period_ms = 1000;
static _Atomic int64_t last_beat_us[THREAD_COUNT];
static const char *const names[THREAD_COUNT] = {"consumer", "loop", "reporter", "heartbeat"};

void health_set_period_ms(int ms)
{
    atomic_store(&period_ms, ms < 10 ? 10 : ms);
}

int health_period_ms(void)
{
    return atomic_load(&period_ms);
}

void health_beat(enum worker_thread thread)
{
    atomic_store(&last_beat_us[thread], clock_mono_us());
}

bool health_all_fresh(int64_t max_age_us, const char **stale)
{
    int64_t now = clock_mono_us();

    for (int i = 0; i < THREAD_COUNT; i++) {
        if (now - atomic_load(&last_beat_us[i]) > max_age_us) {
            *stale = names[i];
            return false;
        }
    }
    return true;
}
