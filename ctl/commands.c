/*
 * commands.c — popbsmtpctl's subcommands. Each parses its own arguments, changes
 * nothing on bad input, and returns one of the documented exit statuses.
 */
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "popbsmtp/policy.h"

/* "--name VALUE" at ARGV[*I]: take VALUE and advance. NULL if absent (reported). */
static const char *option_value(int argc, char **argv, int *i)
{
	if (*i + 1 >= argc) {
		ctl_fail(CTL_USAGE, "%s needs a value", argv[*i]);
		return NULL;
	}
	return argv[++*i];
}

/* Split ARGV into at most MAX positional words; options are handled by the caller. */
static int positional(int argc, char **argv, const char **words, int max, int *n)
{
	int i;

	*n = 0;
	for (i = 1; i < argc; i++) {
		if (argv[i][0] == '-' && argv[i][1] == '-')
			return ctl_fail(CTL_USAGE, "%s: unknown option %s", argv[0], argv[i]);
		if (*n == max)
			return ctl_fail(CTL_USAGE, "%s: too many arguments", argv[0]);
		words[(*n)++] = argv[i];
	}
	return CTL_OK;
}

/* ---- list ---- */

struct list_state {
	long long count;
	const char *user; /* only this user's leases, or NULL */
};

static void list_one(const struct ctl *c, const struct ctl_lease *l, void *arg)
{
	struct list_state *st = arg;

	if (st->user != NULL && !pbs_lease_same_user(l->lease.user, st->user))
		return;
	if (c->json && st->count > 0)
		putchar(',');
	ctl_print_lease(c, l);
	st->count++;
}

int ctl_cmd_list(struct ctl *c, int argc, char **argv)
{
	struct list_state st = {0, NULL};
	int i, rc;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--user") == 0) {
			if ((st.user = option_value(argc, argv, &i)) == NULL)
				return CTL_USAGE;
		} else if (strcmp(argv[i], "--suspended") == 0 && argc == 2) {
			return ctl_list_suspended(c);
		} else {
			return ctl_fail(CTL_USAGE, "list: unexpected argument '%s'", argv[i]);
		}
	}
	/* Say that Redis is unreachable before printing any of the output. */
	if (pbs_store_connect(c->store) != 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	if (c->json)
		printf("{\"leases\":[");
	else
		printf("%-40s %-24s %-6s %-20s %6s\n", "SUBJECT", "USER", "SVC", "GRANTED", "TTL");
	/* --user too walks every lease: the value names the user, nothing else does. */
	rc = ctl_scan_leases(c, list_one, &st);
	if (c->json)
		printf("],\"count\":%lld}\n", st.count);
	return rc;
}

/* ---- check ---- */

int ctl_cmd_check(struct ctl *c, int argc, char **argv)
{
	const char *words[1];
	char subject[PBS_ADDR_STRLEN];
	struct ctl_lease l;
	pbs_addr addr;
	int n, rc;

	if ((rc = positional(argc, argv, words, 1, &n)) != CTL_OK)
		return rc;
	if (n != 1)
		return ctl_fail(CTL_USAGE, "usage: check ADDR");
	if ((rc = ctl_subject(c, words[0], &addr, subject)) != CTL_OK)
		return rc;
	/* The milter ignores leases for lease.never clients; so does check. */
	if (pbs_cidr_list_contains(&c->cfg->lease.never, &addr))
		rc = CTL_NO;
	else
		rc = ctl_fetch(c, subject, &l);
	/* A value that is no lease (reported on stderr) is what the gates take it for. */
	if (rc == CTL_STORE && l.invalid)
		rc = CTL_NO;
	if (rc == CTL_STORE)
		return rc;
	if (c->json) {
		printf("{\"address\":");
		ctl_json_string(stdout, words[0]);
		printf(",\"subject\":");
		ctl_json_string(stdout, subject);
		printf(",\"lease\":");
		if (rc == CTL_OK)
			ctl_print_lease(c, &l);
		else
			printf("null");
		printf(",\"users\":");
		if (ctl_print_users(c, subject) != CTL_OK)
			printf("null");
		if (rc == CTL_OK && pbs_config_limits_on(&c->cfg->limits)) {
			printf(",\"relayed_this_hour\":");
			if (ctl_print_relayed(c, subject, l.lease.user) != CTL_OK)
				printf("null");
		}
		printf("}\n");
		return rc;
	}
	if (rc == CTL_OK) {
		ctl_print_lease(c, &l);
		/* A failure to tell is said on stderr; the lease was shown. */
		(void)ctl_print_relayed(c, subject, l.lease.user);
	} else {
		printf("no lease covers %s (%s)\n", words[0], subject);
	}
	/* Who logged in there lately (docs/abuse.md): a failure to tell is said on stderr. */
	(void)ctl_print_users(c, subject);
	return rc;
}

/* ---- grant ---- */

int ctl_cmd_grant(struct ctl *c, int argc, char **argv)
{
	const char *words[2], *service = "ctl", *problem;
	char subject[PBS_ADDR_STRLEN], *end;
	int n = 0, i, rc, ttl = c->cfg->lease.ttl;
	pbs_lease lease;
	pbs_addr addr;
	long v;

	for (i = 1; i < argc; i++) {
		const char *value;
		if (strcmp(argv[i], "--ttl") == 0 || strcmp(argv[i], "--service") == 0) {
			if ((value = option_value(argc, argv, &i)) == NULL)
				return CTL_USAGE;
			if (argv[i - 1][2] == 's') {
				service = value;
				continue;
			}
			v = strtol(value, &end, 10);
			if (*value == '\0' || *end != '\0' || v < 1 || v > 31 * 86400)
				return ctl_fail(CTL_USAGE, "--ttl: '%s' is not 1..2678400 seconds",
						value);
			ttl = (int)v;
		} else if (n < 2 && strncmp(argv[i], "--", 2) != 0) {
			words[n++] = argv[i];
		} else {
			return ctl_fail(CTL_USAGE, "grant: unexpected argument '%s'", argv[i]);
		}
	}
	if (n != 2)
		return ctl_fail(CTL_USAGE, "usage: grant ADDR USER [--ttl SECONDS]");
	if ((rc = ctl_subject(c, words[0], &addr, subject)) != CTL_OK)
		return rc;
	if (pbs_cidr_list_contains(&c->cfg->lease.never, &addr))
		return ctl_fail(CTL_USAGE, "%s is in lease.never: it cannot hold a lease", words[0]);
	if ((problem = pbs_lease_make(&lease, words[1], service, (long long)time(NULL))) != NULL)
		return ctl_fail(CTL_USAGE, "%s", problem);
	if ((rc = ctl_suspended(c, words[1])) != CTL_NO)
		return rc == CTL_OK ? ctl_fail(CTL_USAGE, "%s is suspended: unsuspend first", words[1])
				    : rc;
	if (pbs_store_grant(c->store, subject, &lease, ttl) != 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	printf("granted %s to %s for %d s\n", subject, words[1], ttl);
	return CTL_OK;
}

/* ---- revoke ---- */

struct revoke_state {
	const char *user;
	long long removed;
	int rc; /* CTL_STORE once a removal failed: the rest is skipped */
};

/* A lease of the scan: removed if it still names the user at that instant (one script, so
 * a lease another user took over meanwhile stays). */
static void revoke_one(const struct ctl *c, const struct ctl_lease *l, void *arg)
{
	struct revoke_state *st = arg;
	int removed;

	if (st->rc == CTL_STORE || !pbs_lease_same_user(l->lease.user, st->user))
		return;
	if ((removed = pbs_store_remove_if_user(c->store, l->subject, st->user)) < 0) {
		st->rc = ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
		return;
	}
	if (removed) {
		printf("revoked %s\n", l->subject);
		st->removed++;
	}
}

/* Every lease of USER. The record comes first, at the store's clock: from then on no
 * session of USER that began before it refreshes or restores a lease, and no login that
 * began before it writes one. Then every lease naming USER is removed, found by walking
 * all leases (there is no per-user index); other users' leases stay. */
int ctl_revoke_user(const struct ctl *c, const char *user)
{
	struct revoke_state st = {user, 0, CTL_OK};
	const char *problem = pbs_lease_user_problem(user);
	bool removed;

	if (problem != NULL)
		return ctl_fail(CTL_USAGE, "'%s': %s", user, problem);
	if (pbs_store_revoke(c->store, NULL, user, c->cfg->lease.ttl, &removed) != 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	if (ctl_scan_leases(c, revoke_one, &st) != CTL_OK || st.rc == CTL_STORE)
		return CTL_STORE;
	printf("%lld lease%s of %s revoked\n", st.removed, st.removed == 1 ? "" : "s", user);
	return st.removed ? CTL_OK : CTL_NO;
}

int ctl_cmd_revoke(struct ctl *c, int argc, char **argv)
{
	char subject[PBS_ADDR_STRLEN];
	pbs_addr addr;
	bool removed;
	int rc;

	if (argc == 3 && strcmp(argv[1], "--user") == 0)
		return ctl_revoke_user(c, argv[2]);
	if (argc != 2 || argv[1][0] == '-')
		return ctl_fail(CTL_USAGE, "usage: revoke ADDR | revoke --user USER");
	if ((rc = ctl_subject(c, argv[1], &addr, subject)) != CTL_OK)
		return rc;
	/* The record and the removal are one step in Redis: nothing can come in between. */
	if (pbs_store_revoke(c->store, subject, NULL, c->cfg->lease.ttl, &removed) != 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	if (removed) {
		printf("revoked %s\n", subject);
		return CTL_OK;
	}
	printf("no lease covered %s (%s); revoke recorded\n", argv[1], subject);
	return CTL_NO;
}

/* ---- stats ---- */

#define MEMORY_SAMPLE 100

struct stats_state {
	long long leases;
	long long sampled, sampled_bytes;
};

static void stats_one(const struct ctl *c, const struct ctl_lease *l, void *arg)
{
	struct stats_state *st = arg;
	char key[PBS_KEY_MAX];
	redisReply *r;

	st->leases++;
	if (st->sampled >= MEMORY_SAMPLE ||
	    pbs_lease_key(pbs_store_prefix(c->store), l->subject, key) != 0)
		return;
	r = pbs_store_command(c->store, 3, (const char *[]){"MEMORY", "USAGE", key}, NULL);
	if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
		st->sampled++;
		st->sampled_bytes += r->integer;
	}
	freeReplyObject(r);
}

/* The median of five PING round trips, in microseconds; -1 on error. */
static long long ping_us(const struct ctl *c)
{
	long long t[5], tmp;
	int i, j;

	for (i = 0; i < 5; i++) {
		struct timespec a, b;
		redisReply *r;

		clock_gettime(CLOCK_MONOTONIC, &a);
		r = pbs_store_command(c->store, 1, (const char *[]){"PING"}, NULL);
		clock_gettime(CLOCK_MONOTONIC, &b);
		if (r == NULL || r->type == REDIS_REPLY_ERROR) {
			freeReplyObject(r);
			return -1;
		}
		freeReplyObject(r);
		t[i] = (b.tv_sec - a.tv_sec) * 1000000LL + (b.tv_nsec - a.tv_nsec) / 1000;
		for (j = i; j > 0 && t[j] < t[j - 1]; j--) {
			tmp = t[j];
			t[j] = t[j - 1];
			t[j - 1] = tmp;
		}
	}
	return t[2];
}

/* Field NAME of an INFO section, into OUT, sanitized; "?" when absent. */
static void info_field(const struct ctl *c, const char *section, const char *name,
		       char out[PBS_LOG_SAFE_MAX])
{
	redisReply *r = pbs_store_command(c->store, 2, (const char *[]){"INFO", section}, NULL);
	const char *p = (r && r->type == REDIS_REPLY_STRING) ? strstr(r->str, name) : NULL;

	char value[PBS_LOG_SAFE_MAX];

	strcpy(out, "?");
	if (p != NULL && p[strlen(name)] == ':') {
		snprintf(value, sizeof value, "%.*s", (int)strcspn(p + strlen(name) + 1, "\r\n"),
			 p + strlen(name) + 1);
		/* Printed on a terminal: no escape sequences from whatever answers as Redis. */
		pbs_log_safe(value, out);
	}
	freeReplyObject(r);
}

/* Redis' maxmemory-policy into OUT (sanitized): from INFO memory, else CONFIG GET; "?"
 * when the ACL allows neither. */
static void eviction_policy(const struct ctl *c, char out[PBS_LOG_SAFE_MAX])
{
	redisReply *r;

	info_field(c, "memory", "maxmemory_policy", out);
	if (strcmp(out, "?") != 0)
		return;
	r = pbs_store_command(c->store, 3, (const char *[]){"CONFIG", "GET", "maxmemory-policy"},
			      NULL);
	if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[1]->type == REDIS_REPLY_STRING)
		pbs_log_safe(r->element[1]->str, out);
	freeReplyObject(r);
}

int ctl_cmd_stats(struct ctl *c, int argc, char **argv)
{
	struct stats_state st = {0, 0, 0};
	char version[PBS_LOG_SAFE_MAX], memory[PBS_LOG_SAFE_MAX], policy[PBS_LOG_SAFE_MAX];
	long long rtt, per_lease, invalid;
	bool known, evicts;
	int rc;

	if (argc != 1)
		return ctl_fail(CTL_USAGE, "stats: unexpected argument '%s'", argv[1]);
	if ((rtt = ping_us(c)) < 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	info_field(c, "server", "redis_version", version);
	info_field(c, "memory", "used_memory", memory);
	eviction_policy(c, policy);
	/* Any policy but noeviction lets Redis drop leases and revocation records when it is
	 * full: relay and revokes would vanish without a word. Said, never fatal. */
	known = strcmp(policy, "?") != 0;
	evicts = known && strcmp(policy, "noeviction") != 0;
	if (evicts)
		ctl_fail(CTL_OK, "warning: Redis runs with maxmemory-policy %s: when full it evicts "
				 "leases and revocation records; run it with noeviction (docs/ha.md)",
			 policy);
	else if (!known)
		ctl_fail(CTL_OK, "cannot tell Redis' maxmemory-policy (INFO and CONFIG GET refused): "
				 "it must be noeviction (docs/ha.md)");
	/* Values that are no lease are reported on stderr and left out, as the gates ignore
	 * them: the rest of the numbers still stand. */
	if ((rc = ctl_walk_leases(c, stats_one, &st, &invalid)) != CTL_OK)
		return rc;
	per_lease = st.sampled ? st.sampled_bytes / st.sampled : 0;
	if (c->json) {
		printf("{\"leases\":%lld,\"invalid_leases\":%lld,\"rtt_us\":%lld,"
		       "\"redis_version\":",
		       st.leases, invalid, rtt);
		ctl_json_string(stdout, version);
		printf(",\"used_memory\":%s,\"lease_key_bytes\":%lld",
		       strcmp(memory, "?") ? memory : "null", per_lease);
		printf(",\"maxmemory_policy\":");
		if (known)
			ctl_json_string(stdout, policy);
		else
			printf("null");
		printf(",\"eviction_warning\":%s", evicts ? "true" : known ? "false" : "null");
		rc = ctl_counters_print(c);
		printf("}\n");
	} else {
		printf("leases:          %lld\n", st.leases);
		if (invalid > 0)
			printf("invalid values:  %lld (no lease to the gates; see stderr)\n", invalid);
		printf("redis rtt:       %lld us (median of 5 PINGs)\n", rtt);
		printf("redis version:   %s\n", version);
		printf("redis memory:    %s bytes in all\n", memory);
		printf("redis eviction:  %s%s\n", known ? policy : "unknown (not permitted to ask)",
		       evicts ? " (WARNING: must be noeviction)" : "");
		printf("lease key size:  %lld bytes (MEMORY USAGE, mean of %lld)\n", per_lease,
		       st.sampled);
		rc = ctl_counters_print(c);
	}
	return rc;
}

/* ---- flush ---- */

int ctl_cmd_flush(struct ctl *c, int argc, char **argv)
{
	long long leases = 0;
	int rc;

	if (argc != 2 || strcmp(argv[1], "--yes") != 0)
		return ctl_fail(CTL_USAGE, "flush removes every lease under prefix '%s'; "
					   "confirm with: flush --yes",
				pbs_store_prefix(c->store));
	if ((rc = ctl_unlink_leases(c, &leases)) != CTL_OK)
		return rc;
	printf("removed %lld lease%s\n", leases, leases == 1 ? "" : "s");
	return CTL_OK;
}
