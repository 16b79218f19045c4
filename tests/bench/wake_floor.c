/* The machine's own floor for pickup latency: how long Redis takes to hand a pushed element to a
 * client blocked in BLMOVE, measured from the push as qworker's pickup is, with nothing else in
 * between (no threads, no task). Prints p50 and p99 in milliseconds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <hiredis/hiredis.h>

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 6379, n = argc > 2 ? atoi(argv[2]) : 1000;
    redisContext *blocked = redisConnect("127.0.0.1", port);
    redisContext *pusher = redisConnect("127.0.0.1", port);
    int64_t *lat = calloc((size_t)n, sizeof(*lat));
    struct timespec gap = {0, 2000000}; /* as in the pickup workload: each push finds it idle */

    if (blocked == NULL || pusher == NULL || blocked->err || pusher->err || lat == NULL) {
        fprintf(stderr, "wake_floor: cannot connect to redis on port %d\n", port);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        void *reply;
        int64_t t0;

        redisAppendCommand(blocked, "BLMOVE wake_floor wake_floor_out RIGHT LEFT 5");
        redisBufferWrite(blocked, &(int){0});
        nanosleep(&gap, NULL);
        t0 = now_us();
        freeReplyObject(redisCommand(pusher, "LPUSH wake_floor x"));
        if (redisGetReply(blocked, &reply) != REDIS_OK)
            return 1;
        lat[i] = now_us() - t0;
        freeReplyObject(reply);
    }
    freeReplyObject(redisCommand(pusher, "DEL wake_floor_out"));
    qsort(lat, (size_t)n, sizeof(*lat), cmp);
    printf("%.3f %.3f\n", (double)lat[n / 2] / 1000, (double)lat[n * 99 / 100 - 1] / 1000);
    redisFree(blocked);
    redisFree(pusher);
    return 0;
}
