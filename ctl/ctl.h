/*
 * ctl.h — shared pieces of popbsmtpctl: the context every command gets, exit statuses,
 * and the output helpers (text or JSON) the commands print through.
 */
#ifndef POPBSMTP_CTL_H
#define POPBSMTP_CTL_H

#include <stdbool.h>
#include <stdio.h>

#include "popbsmtp/config.h"
#include "popbsmtp/lease.h"
#include "popbsmtp/log.h"
#include "popbsmtp/store.h"

/* Exit statuses, documented in popbsmtpctl(8); stable. */
enum {
	CTL_OK = 0,        /* done / a lease covers the address */
	CTL_NO = 1,        /* no lease covers the address / nothing to revoke */
	CTL_USAGE = 2,     /* bad command line or bad input (address, user, ttl) */
	CTL_STORE = 3,     /* Redis unreachable, refusing, or holding garbage */
	CTL_CONFIG = PBS_EX_CONFIG
};

struct ctl {
	const pbs_config *cfg;
	pbs_store *store;
	bool json;
};

/* One lease as listed: where, what, and how long it has left. */
struct ctl_lease {
	char subject[PBS_ADDR_STRLEN];
	pbs_lease lease;
	long long ttl; /* seconds left; -1 none, -2 gone */
	bool invalid;  /* ctl_fetch gave CTL_STORE because the key held no valid lease */
};

/* Report a failure on stderr as "popbsmtpctl: ..." and return STATUS. */
int ctl_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print a string as a JSON string literal (any bytes in, valid JSON out): pbs_text_json. */
void ctl_json_string(FILE *out, const char *s);

/* True when R is Redis' WRONGTYPE error: the key holds another type than the command
 * reads, which another writer may have left; a reader skips it rather than fail. */
struct redisReply;
bool ctl_wrongtype(const struct redisReply *r);

/* Print one lease as a text row or a JSON object. */
void ctl_print_lease(const struct ctl *c, const struct ctl_lease *l);

/* Parse ADDR and compute the subject a lease for it has; CTL_OK or CTL_USAGE (reported). */
int ctl_subject(const struct ctl *c, const char *addr_text, pbs_addr *addr,
		char subject[PBS_ADDR_STRLEN]);

/* Fetch the lease and TTL of SUBJECT in one round trip. CTL_OK, CTL_NO or CTL_STORE
 * (reported; OUT->invalid says whether it was a value that is no lease). */
int ctl_fetch(const struct ctl *c, const char *subject, struct ctl_lease *out);

/* Walk SCAN over "<prefix><KIND>*" (KIND "lease:", "suspended:"), never KEYS, and hand
 * each batch of keys to ON_BATCH, which returns CTL_OK to go on. Returns CTL_OK or why not. */
int ctl_scan_keys(const struct ctl *c, const char *kind,
		  int (*on_batch)(const struct ctl *, char **, size_t, void *), void *arg);

/* Call EACH for every live lease (SCAN, never KEYS). Returns CTL_OK, or CTL_STORE once the
 * walk is over if a key held no valid lease (each reported), or at once if Redis failed. */
int ctl_scan_leases(const struct ctl *c, void (*each)(const struct ctl *, const struct ctl_lease *,
						      void *),
		    void *arg);

/* ctl_scan_leases, but keys that held no valid lease (each reported) are only counted
 * into *INVALID: CTL_STORE means Redis failed. For what goes on as the gates do. */
int ctl_walk_leases(const struct ctl *c,
		    void (*each)(const struct ctl *, const struct ctl_lease *, void *), void *arg,
		    long long *invalid);

/* Delete every lease key, "<prefix>lease:*" (SCAN + UNLINK); counts into *N. */
int ctl_unlink_leases(const struct ctl *c, long long *n);

/* The commands. ARGV[0] is the command name. */
int ctl_cmd_list(struct ctl *c, int argc, char **argv);
int ctl_cmd_check(struct ctl *c, int argc, char **argv);
int ctl_cmd_grant(struct ctl *c, int argc, char **argv);
int ctl_cmd_revoke(struct ctl *c, int argc, char **argv);
int ctl_cmd_explain(struct ctl *c, int argc, char **argv);
int ctl_cmd_stats(struct ctl *c, int argc, char **argv);
int ctl_cmd_flush(struct ctl *c, int argc, char **argv);
int ctl_cmd_usage(struct ctl *c, int argc, char **argv);
int ctl_cmd_metrics(struct ctl *c, int argc, char **argv);
int ctl_cmd_suspend(struct ctl *c, int argc, char **argv);
/* revoke --user USER: its record, then every lease naming it. CTL_OK, CTL_NO or CTL_STORE. */
int ctl_revoke_user(const struct ctl *c, const char *user);
/* list --suspended: every suspension, its time and reason. */
int ctl_list_suspended(struct ctl *c);
/* usage --shared: the subjects where more than one user logged in within lease.ttl. */
int ctl_list_shared(struct ctl *c);
/* How many such subjects there are, into *SHARED. CTL_OK or CTL_STORE. */
int ctl_count_shared(const struct ctl *c, long long *shared);
/* The users seen at SUBJECT: a line of text, or a JSON array. CTL_OK or CTL_STORE. */
int ctl_print_users(const struct ctl *c, const char *subject);
/* CTL_OK when USER is suspended, CTL_NO when not, CTL_STORE when Redis cannot tell. */
int ctl_suspended(const struct ctl *c, const char *user);

/* With a relay limit on, print what the limits counted this hour for the lease of SUBJECT
 * and its USER ("relayed by lease this hour: alice 12 of 300, this lease 40 of 600"; in
 * JSON an object). Prints nothing with the limits off. CTL_OK or CTL_STORE. */
int ctl_print_relayed(const struct ctl *c, const char *subject, const char *user);
int ctl_cmd_unsuspend(struct ctl *c, int argc, char **argv);

/* The fleet's decision counts for the last hour and day, per host and in total: text rows,
 * or (with --json) ",\"decisions\":[...],\"decision_totals\":[...]" inside stats' object. */
int ctl_counters_print(const struct ctl *c);

#endif
