/*
 * store.h — leases in Redis behind an opaque handle. The handle connects lazily,
 * bounds every step by redis.timeout_ms, drops a broken connection and makes a new
 * one on the next call. Errors travel with the handle (pbs_store_error), never exit.
 * Commands go through hiredis' argv API only.
 */
#ifndef POPBSMTP_STORE_H
#define POPBSMTP_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "popbsmtp/config.h"
#include "popbsmtp/lease.h"

typedef struct pbs_store pbs_store;
struct redisReply;

enum pbs_lookup { PBS_LOOKUP_FOUND, PBS_LOOKUP_NONE, PBS_LOOKUP_ERROR };

/* What a refresh of an open session's lease did (pbs_store_refresh). */
enum pbs_refresh {
	PBS_REFRESH_KEPT,     /* the lease was there (the session's or another login's): TTL reset */
	PBS_REFRESH_RESTORED, /* it was gone and nothing revoked it: written again */
	PBS_REFRESH_REVOKED,  /* a revoke since the session's login: stop refreshing */
	PBS_REFRESH_ERROR     /* Redis could not be asked; pbs_store_error says why */
};

/* A handle for CFG (copied). Connects on first use. NULL only when out of memory. */
pbs_store *pbs_store_new(const struct pbs_redis_config *cfg);

/* Close the connection (if any) and free the handle. */
void pbs_store_free(pbs_store *store);

/* Close the connection but keep the handle; the next call reconnects. */
void pbs_store_disconnect(pbs_store *store);

/* True while the handle holds a live connection. */
bool pbs_store_connected(const pbs_store *store);

/* Why the last call failed. */
const char *pbs_store_error(const pbs_store *store);

/* Make sure a connection is up (connect, AUTH, SELECT). Returns 0 or -1. */
int pbs_store_connect(pbs_store *store);

/* Write LEASE for SUBJECT with TTL seconds: one SET ... EX, one round trip. A lease
 * already there (whoever held it) is replaced and its time starts afresh. Returns 0 or -1. */
int pbs_store_grant(pbs_store *store, const char *subject, const pbs_lease *lease, int ttl);

/* Keep the lease of a session that logged in at LOGIN_MS (Unix ms) and holds LEASE on
 * SUBJECT alive for TTL more seconds: GETEX resets the TTL of whatever lease is there. If
 * the lease is gone or another's, a revocation record for SUBJECT or the user newer than
 * the login means REVOKED; otherwise a missing lease is written again (SET NX, under WATCH
 * of the records so a revoke in between wins). */
enum pbs_refresh pbs_store_refresh(pbs_store *store, const char *subject, const pbs_lease *lease,
				   int ttl, long long login_ms);

/* Record a revoke at NOW_MS (Unix ms) of SUBJECT, or of USER's leases when SUBJECT is NULL,
 * for open sessions to see; it lives pbs_lease_revocation_ttl(LEASE_TTL). Returns 0 or -1. */
int pbs_store_mark_revoked(pbs_store *store, const char *subject, const char *user,
			   long long now_ms, int lease_ttl);
/* pbs_store_grant, with COUNT more commands (ARGCS[i] strings in ARGVS[i]) sent in the
 * same round trip: a lease writer's counters. Only the SET decides the result; the other
 * replies are read and dropped. Returns 0 or -1. */
int pbs_store_grant_with(pbs_store *store, const char *subject, const pbs_lease *lease, int ttl,
			 int count, const int *argcs, const char **const *argvs);

/* One GET of SUBJECT's lease. On FOUND fills LEASE. A value that does not decode (or a key
 * of another type) is NONE, like a missing lease, and only then is pbs_store_error() not
 * empty after NONE: "<key> holds no valid lease", for the caller to log. */
enum pbs_lookup pbs_store_lookup(pbs_store *store, const char *subject, pbs_lease *lease);

/* Run one command given as ARGC strings (lengths ARGVLEN, or NULL for C strings).
 * Returns the reply (free with freeReplyObject) or NULL on a connection error. A server
 * error reply is returned as is; READONLY/MASTERDOWN/LOADING also drop the connection. */
struct redisReply *pbs_store_command(pbs_store *store, int argc, const char **argv,
				     const size_t *argvlen);

/* Send COUNT commands (ARGCS[i] strings in ARGVS[i]) in one round trip and store each
 * reply in REPLIES[i] (free each with freeReplyObject). Server error replies are returned
 * as replies. Returns 0, or -1 on a connection error (no replies are left to free). */
int pbs_store_pipeline(pbs_store *store, int count, const int *argcs, const char **const *argvs,
		       struct redisReply **replies);

/* Where the store connects to, for messages ("127.0.0.1:6379", "unix:/path", ...). */
const char *pbs_store_where(const pbs_store *store);

/* The prefix this store's keys start with. */
const char *pbs_store_prefix(const pbs_store *store);

#endif
