/*
 * runtime.c — the current config+pool snapshot and the count of sessions in flight.
 * One lock guards both; it is held only for pointer and counter updates.
 */
#include "runtime.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sessions_done = PTHREAD_COND_INITIALIZER;
static struct pbs_runtime *current;
static int sessions;

static void runtime_free(struct pbs_runtime *rt)
{
	pbs_pool_free(rt->pool);
	pbs_config_free(rt->cfg);
	free(rt);
}

/* Drop one reference with the lock held; returns the snapshot if it must be freed. */
static struct pbs_runtime *unref_locked(struct pbs_runtime *rt)
{
	return (rt != NULL && --rt->refs == 0) ? rt : NULL;
}

int pbs_runtime_install(pbs_config *cfg)
{
	struct pbs_runtime *rt = calloc(1, sizeof *rt), *old;

	if (rt == NULL)
		return -1;
	rt->cfg = cfg;
	rt->pool = pbs_pool_new(&cfg->redis, cfg->milter.pool_size);
	if (rt->pool == NULL) {
		free(rt);
		return -1;
	}
	rt->refs = 1; /* the reference held by "current" */
	pthread_mutex_lock(&lock);
	old = unref_locked(current);
	current = rt;
	pthread_mutex_unlock(&lock);
	if (old != NULL)
		runtime_free(old);
	return 0;
}

struct pbs_runtime *pbs_runtime_acquire(void)
{
	struct pbs_runtime *rt;

	pthread_mutex_lock(&lock);
	rt = current;
	rt->refs++;
	pthread_mutex_unlock(&lock);
	return rt;
}

void pbs_runtime_release(struct pbs_runtime *rt)
{
	struct pbs_runtime *dead;

	pthread_mutex_lock(&lock);
	dead = unref_locked(rt);
	pthread_mutex_unlock(&lock);
	if (dead != NULL)
		runtime_free(dead);
}

void pbs_runtime_session_begin(void)
{
	pthread_mutex_lock(&lock);
	sessions++;
	pthread_mutex_unlock(&lock);
}

void pbs_runtime_session_end(void)
{
	pthread_mutex_lock(&lock);
	if (--sessions == 0)
		pthread_cond_broadcast(&sessions_done);
	pthread_mutex_unlock(&lock);
}

int pbs_runtime_drain(int seconds)
{
	struct timespec deadline;
	int left;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += seconds;
	pthread_mutex_lock(&lock);
	while (sessions > 0 &&
	       pthread_cond_timedwait(&sessions_done, &lock, &deadline) == 0)
		;
	left = sessions;
	pthread_mutex_unlock(&lock);
	return left;
}

void pbs_runtime_shutdown(void)
{
	struct pbs_runtime *dead;

	pthread_mutex_lock(&lock);
	dead = unref_locked(current);
	current = NULL;
	pthread_mutex_unlock(&lock);
	if (dead != NULL)
		runtime_free(dead);
}
