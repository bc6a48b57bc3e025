/*
 * lease.h — the one place that knows how a lease looks in Redis: which key covers an
 * address, and the versioned value "1|<granted>|<service>|<user>" — the only record of
 * whose lease it is (there is no per-user index). Also the revocation records
 * popbsmtpctl revoke leaves, so that sessions refreshing their leases stop, and the Redis
 * scripts that grant, refresh and revoke leases atomically.
 * docs/lease-schema.md describes the same format for other tools.
 */
#ifndef POPBSMTP_LEASE_H
#define POPBSMTP_LEASE_H

#include <stdbool.h>
#include <stddef.h>

#include "popbsmtp/addr.h"
#include "popbsmtp/text.h"

#define PBS_LEASE_VERSION 1
#define PBS_USER_MAX 256    /* longest user name a lease records */
#define PBS_SERVICE_MAX 32  /* longest service name ("imap", "pop3", "ctl") */
#define PBS_PREFIX_MAX 64   /* longest redis.prefix */
#define PBS_KEY_MAX (PBS_PREFIX_MAX + PBS_USER_MAX + 16)
#define PBS_LEASE_VALUE_MAX (PBS_USER_MAX + PBS_SERVICE_MAX + 32)
/* The latest grant time a lease may hold (9999-12-31T23:59:59Z): past it a time is not
 * one any writer meant (nanoseconds, milliseconds), and no reader could show it. */
#define PBS_LEASE_GRANTED_MAX PBS_TEXT_TIME_LAST

typedef struct pbs_lease {
	char user[PBS_USER_MAX + 1];
	char service[PBS_SERVICE_MAX + 1]; /* "" when unknown */
	long long granted;                 /* Unix seconds */
} pbs_lease;

/* The network a lease for CLIENT covers, as text: the bare address at full length,
 * "NETWORK/BITS" otherwise. OUT has PBS_ADDR_STRLEN bytes. Returns OUT. */
const char *pbs_lease_subject(const pbs_addr *client, unsigned ipv4_bits, unsigned ipv6_bits,
			      char out[PBS_ADDR_STRLEN]);

/* "<prefix>lease:<subject>" into OUT (PBS_KEY_MAX bytes). Returns 0, -1 if too long. */
int pbs_lease_key(const char *prefix, const char *subject, char out[PBS_KEY_MAX]);

/* NULL when USER may hold a lease, else why not (empty, too long, control bytes). */
const char *pbs_lease_user_problem(const char *user);

/* NULL when SERVICE is a valid service name ([a-z0-9-], short), else why not. */
const char *pbs_lease_service_problem(const char *service);

/* Fill LEASE from its parts, after checking them. Returns NULL or why they are invalid. */
const char *pbs_lease_make(pbs_lease *lease, const char *user, const char *service,
			   long long granted);

/* Encode LEASE into OUT (PBS_LEASE_VALUE_MAX bytes). Returns the length. */
size_t pbs_lease_encode(const pbs_lease *lease, char out[PBS_LEASE_VALUE_MAX]);

/* Decode a stored value of LEN bytes. Returns 0, or -1 when it is not a version-1 lease
 * (a grant time past PBS_LEASE_GRANTED_MAX included). */
int pbs_lease_decode(const char *value, size_t len, pbs_lease *lease);

/* "<prefix>revoked:<subject>", the record of a revoke by address, into OUT (PBS_KEY_MAX
 * bytes). Returns 0, -1 if too long. */
int pbs_lease_revoked_key(const char *prefix, const char *subject, char out[PBS_KEY_MAX]);

/* Whether A and B name the same user: equal but for the case of ASCII letters. Every
 * per-user key folds them (revocation by user, suspension, relay limits), and so do the
 * scripts, so that a password database that ignores case cannot give one person several
 * names to escape a suspension or a limit by. */
bool pbs_lease_same_user(const char *a, const char *b);

/* "<prefix>revoked-user:<user>" (the user in lower case, as for every per-user key), the
 * record of a revoke by user. Returns 0 or -1. */
int pbs_lease_revoked_user_key(const char *prefix, const char *user, char out[PBS_KEY_MAX]);

/* "<prefix>users:<subject>", the users seen logging in at SUBJECT within the lease's ttl
 * (a sorted set, each user's last login by the store's clock). Returns 0 or -1. */
int pbs_lease_users_key(const char *prefix, const char *subject, char out[PBS_KEY_MAX]);

/* "<prefix>suspended:<user>" (in lower case), a suspension: while it exists no login of
 * USER writes a lease and no session of USER keeps one. Returns 0 or -1. */
int pbs_lease_suspended_key(const char *prefix, const char *user, char out[PBS_KEY_MAX]);

/* "<prefix>limit:<kind>:<hour>:<name>", a relay limit's counter (kind "user" or "lease",
 * HOUR the store's time in ms / 3600000, NAME the user, in lower case, or the subject), as
 * the relay script counts. Returns 0 or -1 if too long. */
int pbs_lease_limit_key(const char *prefix, const char *kind, long long hour, const char *name,
			char out[PBS_KEY_MAX]);

#define PBS_REASON_MAX 200 /* longest reason a suspension records */

/* NULL when REASON may be recorded with a suspension (printable, short), else why not. */
const char *pbs_lease_reason_problem(const char *reason);

/* Decode a suspension's value "1|<since, store ms>|<reason>" of LEN bytes. Returns 0, or
 * -1 when it is none (it still suspends: only its presence counts). */
int pbs_lease_suspension_decode(const char *value, size_t len, long long *since_ms,
				char reason[PBS_REASON_MAX + 1]);

/* "<prefix>clock", the store's clock: the last time a grant or revoke read, so that times
 * never go back, even across a failover to a master whose clock is behind. Returns 0 or -1. */
int pbs_lease_clock_key(const char *prefix, char out[PBS_KEY_MAX]);

/* How long a revocation record lives for leases of LEASE_TTL seconds: a day, or twice the
 * ttl if that is longer — time enough for every open session to see it, even one that
 * could not reach Redis for a while. */
int pbs_lease_revocation_ttl(int lease_ttl);

/* A session that has not heard from Redis for this long (seconds) may have missed a
 * revocation record that has expired since: it no longer writes its lease back. Half the
 * shortest record life. */
#define PBS_LEASE_RESTORE_WINDOW 43200

/*
 * The scripts Redis runs (EVAL) so that each check and the change it guards are one atomic
 * step where the data is, with times from one clock: the store's (Redis TIME, never going
 * back, see pbs_lease_clock_key). Keys a script writes are its KEYS; keys it only reads are
 * passed in ARGV, so that a Redis user with read-only rights on them may run it.
 * docs/lease-schema.md gives each one's arguments and replies.
 */
/* KEYS: clock. Reply: the store's time now, in ms. */
extern const char pbs_lease_script_clock[];
/* KEYS: clock. ARGV: lease key, value, ttl, started, budget (ms), revoked key, revoked-user
 * key, suspended key, users key, most users (0: any), user, then commands to run after a
 * write (counters), each as N and its N words. Reply: {"granted"|"revoked"|"late"|
 * "suspended"|"shared", now, first error of the commands or ""}. */
extern const char pbs_lease_script_grant[];
/* KEYS: lease. ARGV: value, ttl, login (ms), may restore ("1"/"0"), user, revoked key,
 * revoked-user key, suspended key, users key. Reply: "kept", "other", "restored", "gone",
 * "revoked" or "suspended". */
extern const char pbs_lease_script_refresh[];
/* KEYS: record, clock[, lease]. ARGV: the record's ttl. Reply: {leases removed, now}. */
extern const char pbs_lease_script_revoke[];
/* KEYS: lease. ARGV: user. Reply: 1 if the lease named USER and was removed, else 0. */
extern const char pbs_lease_script_remove_if_user[];
/* KEYS: suspended key, clock. ARGV: seconds (0: until lifted), reason. Reply: now. */
extern const char pbs_lease_script_suspend[];
/* No KEYS (the user's keys are known only from the lease). ARGV: lease key, prefix, clock
 * key, subject, user limit, lease limit (0: off), suspend after, suspend for (s), sender
 * rule ("any", "address", "domain"), the owner it wants (pbs_policy_sender_owner). Reply:
 * {"none"|"bad"|"suspended"|"sender"|"relay"|"user-limit"|"lease-limit", the value or "",
 * the user's and the lease's counts with this recipient (relay) or the limits (over one),
 * 1 when this refusal suspended the user else 0}. */
extern const char pbs_lease_script_relay[];

#endif
