/*
 * runtime.h — what the milter serves with: the loaded config and its Redis pool, as one
 * reference-counted snapshot. Each SMTP connection holds the snapshot it started with;
 * a reload (SIGUSR1) installs a new one and the old one goes when its last user closes.
 */
#ifndef POPBSMTP_MILTER_RUNTIME_H
#define POPBSMTP_MILTER_RUNTIME_H

#include "popbsmtp/config.h"
#include "pool.h"

struct pbs_runtime {
	pbs_config *cfg;
	struct pbs_pool *pool;
	int refs; /* guarded by the runtime lock */
};

/* Make a snapshot of CFG (taken over) with a fresh pool and install it as current. */
int pbs_runtime_install(pbs_config *cfg);

/* The current snapshot, with a reference for the caller. */
struct pbs_runtime *pbs_runtime_acquire(void);

/* Drop a reference taken with pbs_runtime_acquire. */
void pbs_runtime_release(struct pbs_runtime *rt);

/* Count SMTP sessions in flight, so shutdown can wait for them. */
void pbs_runtime_session_begin(void);
void pbs_runtime_session_end(void);

/* Wait until no session is in flight, at most SECONDS. Returns the number still open. */
int pbs_runtime_drain(int seconds);

/* Drop the current snapshot (at exit, after draining). */
void pbs_runtime_shutdown(void);

#endif
