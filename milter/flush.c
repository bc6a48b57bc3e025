/*
 * flush.c — the thread that moves the milter's counts to Redis. It has a Redis handle of
 * its own (the pool is for lease lookups, and a flush must not take a worker's
 * connection), made afresh from the current runtime's config after a reload. Between
 * flushes it sleeps on a condition variable, so a stop does not wait out the interval.
 */
#include "flush.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "popbsmtp/log.h"
#include "runtime.h"

static pbs_usage *usage;
static pthread_t thread;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static bool stopping, running;

/* The flush thread's Redis handle, and the runtime it was made for. */
static pbs_store *store;
static struct pbs_runtime *store_rt;

pbs_usage *pbs_flush_usage(void)
{
	return usage;
}

/* One flush with the current runtime's settings; a new runtime gets a new handle. */
static void flush_now(void)
{
	struct pbs_runtime *rt = pbs_runtime_acquire();

	if (rt != store_rt) {
		pbs_store_free(store);
		store = pbs_store_new(&rt->cfg->redis);
		if (store_rt != NULL)
			pbs_runtime_release(store_rt);
		store_rt = rt; /* keeps the reference: the handle copied its config */
	} else {
		pbs_runtime_release(rt);
	}
	if (store != NULL)
		pbs_usage_flush(usage, store, &store_rt->cfg->usage, time(NULL));
}

/* Wait until the interval of the current config has passed or a stop is asked. */
static bool sleep_interval(void)
{
	struct pbs_runtime *rt = pbs_runtime_acquire();
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += rt->cfg->usage.flush_interval;
	pbs_runtime_release(rt);
	pthread_mutex_lock(&lock);
	while (!stopping && pthread_cond_timedwait(&wake, &lock, &until) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&lock);
	return !stopping;
}

static void *flush_thread(void *arg)
{
	(void)arg;
	while (sleep_interval())
		flush_now();
	return NULL;
}

int pbs_flush_start(void)
{
	int rc;

	if ((usage = pbs_usage_new("milter", PBS_USAGE_MAX_USERS)) == NULL) {
		pbs_log(LOG_ERR, "out of memory: usage is not counted");
		return -1;
	}
	if ((rc = pthread_create(&thread, NULL, flush_thread, NULL)) != 0) {
		pbs_log(LOG_ERR, "cannot start the usage flush thread: %s; usage is not counted",
			strerror(rc));
		pbs_usage_free(usage);
		usage = NULL;
		return -1;
	}
	running = true;
	return 0;
}

void pbs_flush_stop(void)
{
	if (!running)
		return;
	pthread_mutex_lock(&lock);
	stopping = true;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	pthread_join(thread, NULL);
	running = false;
	flush_now();
	pbs_store_free(store);
	store = NULL;
	pbs_runtime_release(store_rt);
	store_rt = NULL;
}
