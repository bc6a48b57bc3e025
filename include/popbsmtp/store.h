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
#include "popbsmtp/policy.h"

typedef struct pbs_store pbs_store;
struct redisReply;

enum pbs_lookup { PBS_LOOKUP_FOUND, PBS_LOOKUP_NONE, PBS_LOOKUP_ERROR };

/* What a refresh of an open session's lease did (pbs_store_refresh). */
enum pbs_refresh {
	PBS_REFRESH_KEPT,     /* a lease naming the session's user was there: TTL reset */
	PBS_REFRESH_OTHER,    /* another user's lease was there: left as it is */
	PBS_REFRESH_RESTORED, /* none was there and nothing revoked it: written again */
	PBS_REFRESH_GONE,     /* none was there, and the session may not write it back */
	PBS_REFRESH_REVOKED,  /* a revoke since the session's login: stop refreshing */
	PBS_REFRESH_SUSPENDED, /* the user is suspended: stop refreshing */
	PBS_REFRESH_ERROR     /* Redis could not be asked; pbs_store_error says why */
};

/* What a login's grant did (pbs_store_login). */
enum pbs_grant {
	PBS_GRANT_WRITTEN, /* the lease is written */
	PBS_GRANT_REVOKED, /* refused: a revoke of the address or user came after the login began */
	PBS_GRANT_LATE,    /* refused: it reached Redis after its writer had given up on it */
	PBS_GRANT_SUSPENDED, /* refused: the user is suspended (popbsmtpctl suspend) */
	PBS_GRANT_SHARED,    /* refused: lease.max_users_per_address others at the address */
	PBS_GRANT_ERROR    /* Redis could not be asked; pbs_store_error says why */
};

/* A handle for CFG (copied). Connects on first use. NULL only when out of memory. */
pbs_store *pbs_store_new(const struct pbs_redis_config *cfg);

/* Close the connection (if any) and free the handle. */
void pbs_store_free(pbs_store *store);

/* Close the connection but keep the handle; the next call reconnects. */
void pbs_store_disconnect(pbs_store *store);

/* Bound every step from now on, connect and sentinel discovery included, to end within MS
 * milliseconds from now, whatever each step's own redis.timeout_ms would allow: a caller
 * that must not wait longer in all (the Dovecot plugin, inside a user's session). 0 lifts
 * the bound. */
void pbs_store_bound(pbs_store *store, int ms);

/* True while the handle holds a live connection. */
bool pbs_store_connected(const pbs_store *store);

/* Why the last call failed. */
const char *pbs_store_error(const pbs_store *store);

/* Make sure a connection is up (connect, AUTH, SELECT). Returns 0 or -1. */
int pbs_store_connect(pbs_store *store);

/* Write LEASE for SUBJECT with TTL seconds, as an administrator does: one SET ... EX, one
 * round trip, not fenced against revokes. A lease already there (whoever held it) is
 * replaced and its time starts afresh. Returns 0 or -1. */
int pbs_store_grant(pbs_store *store, const char *subject, const pbs_lease *lease, int ttl);

/* A login's grant of LEASE for SUBJECT with TTL seconds, fenced against revokes: first the
 * store's clock, then one script that writes the lease only if no revoke of SUBJECT or of
 * the lease's user came since, and only if it arrives within redis.timeout_ms; two round
 * trips. The users who logged in at SUBJECT within TTL are recorded with it (<prefix>users:),
 * and with MAX_USERS > 0 a user beyond the first MAX_USERS there is refused (SHARED).
 * COUNT commands (ARGCS[i] strings in ARGVS[i], at most 8) run after the write in
 * the same script, their failures logged, not failing the grant: a writer's counters.
 * *LOGIN_MS: the store's time of the grant, what pbs_store_refresh compares revokes with. */
enum pbs_grant pbs_store_login(pbs_store *store, const char *subject, const pbs_lease *lease,
			       int ttl, int max_users, int count, const int *argcs,
			       const char **const *argvs, long long *login_ms);

/* Keep the lease of an open session that logged in at LOGIN_MS (the store's clock, from
 * pbs_store_login; 0 when unknown: then any revocation record stops it) and holds LEASE on
 * SUBJECT alive for TTL more seconds, in one script: a revocation record of SUBJECT or of
 * the user at or after LOGIN_MS means REVOKED and nothing is touched; a lease naming the
 * same user is kept, another user's left alone; none is written again only when
 * MAY_RESTORE. */
enum pbs_refresh pbs_store_refresh(pbs_store *store, const char *subject, const pbs_lease *lease,
				   int ttl, long long login_ms, bool may_restore);

/* Revoke SUBJECT's lease, or (SUBJECT NULL) record a revoke of USER's leases: one script
 * writes the revocation record at the store's clock (it lives
 * pbs_lease_revocation_ttl(LEASE_TTL)) and removes SUBJECT's lease in the same step.
 * *REMOVED tells whether a lease was removed. Returns 0 or -1. */
int pbs_store_revoke(pbs_store *store, const char *subject, const char *user, int lease_ttl,
		     bool *removed);

/* Remove SUBJECT's lease if, at that instant, it names USER. Returns 1 removed, 0 not, -1. */
int pbs_store_remove_if_user(pbs_store *store, const char *subject, const char *user);

/* Suspend USER for SECONDS (0: until lifted), recording REASON and the store's time: from
 * then on no login of USER writes a lease and no session of USER keeps one (the grant and
 * refresh scripts look for it). Its leases are not removed here (revoke them). 0 or -1. */
int pbs_store_suspend(pbs_store *store, const char *user, int seconds, const char *reason);

/* Lift USER's suspension. Returns 1 lifted, 0 there was none, -1 on error. */
int pbs_store_unsuspend(pbs_store *store, const char *user);

/* One GET of SUBJECT's lease. On FOUND fills LEASE. A value that does not decode (or a key
 * of another type) is NONE, like a missing lease, and only then is pbs_store_error() not
 * empty after NONE: "<key> holds no valid lease", for the caller to log. */
enum pbs_lookup pbs_store_lookup(pbs_store *store, const char *subject, pbs_lease *lease);

/* lease.sender for pbs_store_relay: the rule, and the owner MAIL FROM wants
 * (pbs_policy_sender_owner). A lease whose user does not agree is LIVE but not counted:
 * pbs_policy_decide refuses it. */
struct pbs_relay_sender {
	enum pbs_sender_rule rule;
	const char *owner;
};

/* What pbs_store_relay found besides the state. */
struct pbs_relay_check {
	pbs_lease lease;    /* LIVE, SUSPENDED, OVER_LIMIT: the lease there */
	const char *limit;  /* OVER_LIMIT: "user-limit" or "lease-limit" */
	long long count;    /* LIVE (counted): the user's count this hour, this recipient in;
			       OVER_LIMIT: the limit reached */
	bool suspended_now; /* OVER_LIMIT: this refusal suspended the user (suspend_after) */
};

/* The lease state of one relay recipient from a client whose lease would be SUBJECT's.
 * Limits off (LIMITS all 0): one GET, as pbs_store_lookup (LIVE, NONE, STORE_ERROR).
 * Limits on: one script that reads the lease, its user's suspension, and the user's and
 * the lease's counts this hour by the store's clock, and counts the recipient when it may
 * be relayed (LIVE), in one round trip; SUSPENDED or OVER_LIMIT otherwise, with a value
 * that is no lease NONE (pbs_store_error then says why, as pbs_store_lookup). */
enum pbs_lease_state pbs_store_relay(pbs_store *store, const char *subject,
				     const struct pbs_limits_config *limits,
				     const struct pbs_relay_sender *sender,
				     struct pbs_relay_check *check);

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
