/*
 * suspend.c — popbsmtpctl's suspend, unsuspend and list --suspended: a user's relay by
 * lease stopped for a while or until lifted (docs/abuse.md). A suspension is one Redis
 * key, <prefix>suspended:<user>, with its expiry (lib/lease.c); the grant and refresh
 * scripts look for it, so while it lives no login writes a lease and no session keeps one.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "popbsmtp/text.h"

/* The longest suspension --for takes: a year. Longer is "until lifted" (no --for). */
#define SUSPEND_MAX_S (366 * 86400)

/* "90", "90s", "15m", "2h", "7d" as seconds into *SECONDS. Returns 0, or -1 if not one. */
static int parse_duration(const char *text, int *seconds)
{
	static const struct {
		char unit;
		long factor;
	} units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
	char *end;
	long v, factor = 1;
	size_t i;

	if (text[0] < '0' || text[0] > '9')
		return -1;
	v = strtol(text, &end, 10);
	if (*end != '\0') {
		for (i = 0; i < sizeof units / sizeof units[0] && units[i].unit != *end; i++)
			;
		if (i == sizeof units / sizeof units[0] || end[1] != '\0')
			return -1;
		factor = units[i].factor;
	}
	if (v < 1 || v > SUSPEND_MAX_S / factor)
		return -1;
	*seconds = (int)(v * factor);
	return 0;
}

int ctl_cmd_suspend(struct ctl *c, int argc, char **argv)
{
	const char *user = NULL, *reason = "", *problem;
	int seconds = 0, i;

	for (i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "--for") == 0 || strcmp(argv[i], "--reason") == 0) &&
		    i + 1 >= argc)
			return ctl_fail(CTL_USAGE, "%s needs a value", argv[i]);
		if (strcmp(argv[i], "--for") == 0) {
			if (parse_duration(argv[++i], &seconds) != 0)
				return ctl_fail(CTL_USAGE,
						"--for: '%s' is not a duration of 1 s to 366 days "
						"(90, 90s, 15m, 2h, 7d)",
						argv[i]);
		} else if (strcmp(argv[i], "--reason") == 0) {
			reason = argv[++i];
		} else if (user == NULL && strncmp(argv[i], "--", 2) != 0) {
			user = argv[i];
		} else {
			return ctl_fail(CTL_USAGE, "suspend: unexpected argument '%s'", argv[i]);
		}
	}
	if (user == NULL)
		return ctl_fail(CTL_USAGE, "usage: suspend USER [--for DURATION] [--reason TEXT]");
	if ((problem = pbs_lease_user_problem(user)) != NULL ||
	    (problem = pbs_lease_reason_problem(reason)) != NULL)
		return ctl_fail(CTL_USAGE, "%s", problem);
	/* The suspension first: from then on no login of the user writes a lease. Then what
	 * revoke --user does: its record and the removal of every lease of the user. */
	if (pbs_store_suspend(c->store, user, seconds, reason) != 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	if (seconds > 0)
		printf("suspended %s for %d s\n", user, seconds);
	else
		printf("suspended %s until lifted (popbsmtpctl unsuspend)\n", user);
	return ctl_revoke_user(c, user) == CTL_STORE ? CTL_STORE : CTL_OK;
}

int ctl_cmd_unsuspend(struct ctl *c, int argc, char **argv)
{
	const char *problem;
	int lifted;

	if (argc != 2 || strncmp(argv[1], "--", 2) == 0)
		return ctl_fail(CTL_USAGE, "usage: unsuspend USER");
	if ((problem = pbs_lease_user_problem(argv[1])) != NULL)
		return ctl_fail(CTL_USAGE, "'%s': %s", argv[1], problem);
	if ((lifted = pbs_store_unsuspend(c->store, argv[1])) < 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	printf(lifted ? "unsuspended %s: the next login grants a lease\n"
		      : "%s was not suspended\n",
	       argv[1]);
	return lifted ? CTL_OK : CTL_NO;
}

/* ---- list --suspended ---- */

struct suspended_state {
	long long count;
};

/* One suspension: its key (the user after the prefix), value and time left. */
static void print_suspension(const struct ctl *c, const char *user, const redisReply *value,
			     long long pttl, struct suspended_state *st)
{
	char reason[PBS_REASON_MAX + 1] = "", since[PBS_TEXT_TIME_MAX], row[PBS_LOG_SAFE_MAX];
	long long since_ms = -1;

	if (value->type != REDIS_REPLY_STRING ||
	    pbs_lease_suspension_decode(value->str, value->len, &since_ms, reason) != 0)
		since_ms = -1; /* it suspends all the same: only its presence counts */
	pbs_text_time(since_ms < 0 ? -1 : since_ms / 1000, since);
	if (c->json) {
		printf("%s{\"user\":", st->count > 0 ? "," : "");
		ctl_json_string(stdout, user);
		printf(",\"since\":");
		ctl_json_string(stdout, since);
		/* -1: no expiry, until lifted. */
		printf(",\"seconds_left\":%lld,\"reason\":", pttl < 0 ? -1 : pttl / 1000);
		ctl_json_string(stdout, reason);
		printf("}");
	} else {
		char left[24] = "-"; /* no expiry: until lifted */

		if (pttl >= 0)
			snprintf(left, sizeof left, "%lld", pttl / 1000);
		printf("%-24s %-20s %10s %s\n", pbs_text_row(user, row, sizeof row), since, left,
		       reason);
	}
	st->count++;
}

/* A batch of SCAN's keys: their values and time left in one round trip. */
static int suspended_batch(const struct ctl *c, char **keys, size_t n, void *arg)
{
	size_t plen = strlen(pbs_store_prefix(c->store)) + strlen("suspended:"), i;
	int *argcs = calloc(2 * n, sizeof *argcs), rc = CTL_OK;
	const char ***argvs = calloc(2 * n, sizeof *argvs);
	const char **words = calloc(4 * n, sizeof *words);
	redisReply **r = calloc(2 * n, sizeof *r);

	if (argcs == NULL || argvs == NULL || words == NULL || r == NULL) {
		rc = ctl_fail(CTL_STORE, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		words[4 * i] = "GET";
		words[4 * i + 1] = keys[i];
		words[4 * i + 2] = "PTTL";
		words[4 * i + 3] = keys[i];
		argvs[2 * i] = &words[4 * i];
		argvs[2 * i + 1] = &words[4 * i + 2];
		argcs[2 * i] = argcs[2 * i + 1] = 2;
	}
	if (pbs_store_pipeline(c->store, (int)(2 * n), argcs, argvs, r) != 0) {
		rc = ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
		goto out;
	}
	for (i = 0; i < n; i++) {
		/* Gone between SCAN and GET (expired, lifted): nothing to show. */
		if (r[2 * i]->type != REDIS_REPLY_NIL && strlen(keys[i]) > plen)
			print_suspension(c, keys[i] + plen, r[2 * i],
					 r[2 * i + 1]->type == REDIS_REPLY_INTEGER &&
						 r[2 * i + 1]->integer >= 0
					     ? r[2 * i + 1]->integer
					     : -1,
					 arg);
		freeReplyObject(r[2 * i]);
		freeReplyObject(r[2 * i + 1]);
	}
out:
	free(argcs);
	free(argvs);
	free(words);
	free(r);
	return rc;
}

int ctl_list_suspended(struct ctl *c)
{
	struct suspended_state st = {0};
	int rc;

	if (pbs_store_connect(c->store) != 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	if (c->json)
		printf("{\"suspended\":[");
	else
		printf("%-24s %-20s %10s %s\n", "USER", "SINCE", "LEFT", "REASON");
	rc = ctl_scan_keys(c, "suspended:", suspended_batch, &st);
	if (c->json)
		printf("],\"count\":%lld}\n", st.count);
	return rc;
}

int ctl_suspended(const struct ctl *c, const char *user)
{
	char key[PBS_KEY_MAX];
	redisReply *r;
	int rc;

	if (pbs_lease_suspended_key(pbs_store_prefix(c->store), user, key) != 0)
		return ctl_fail(CTL_USAGE, "key too long");
	r = pbs_store_command(c->store, 2, (const char *[]){"EXISTS", key}, NULL);
	if (r == NULL || r->type != REDIS_REPLY_INTEGER)
		rc = ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	else
		rc = r->integer > 0 ? CTL_OK : CTL_NO;
	freeReplyObject(r);
	return rc;
}
