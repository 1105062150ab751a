/* waiter: a counter that tests wait on while callbacks on other threads bump it. Header
 * only: each unit test is its own program. */
#ifndef MCPHUB_TEST_WAITER_H
#define MCPHUB_TEST_WAITER_H

#include <pthread.h>
#include <time.h>

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;
} waiter;

static inline void waiter_init(waiter *w)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->count = 0;
}

static inline void waiter_destroy(waiter *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

static inline void waiter_bump(waiter *w)
{
    pthread_mutex_lock(&w->mu);
    w->count++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Waits until count >= n or timeout_ms passed; returns the count seen. */
static inline int waiter_wait(waiter *w, int n, int timeout_ms)
{
    struct timespec ts;
    int c;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (w->count < n && pthread_cond_timedwait(&w->cv, &w->mu, &ts) == 0)
        ;
    c = w->count;
    pthread_mutex_unlock(&w->mu);
    return c;
}

#endif
