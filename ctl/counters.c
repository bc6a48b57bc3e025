/*
 * counters.c — the fleet's decision and grant counters as popbsmtpctl shows them: per
 * host and in total for the last hour and day (stats), and all-time in the Prometheus
 * text exposition format (metrics). Every gate writes into the same hashes (usagekey.h),
 * so one pipelined round trip of HGETALLs reads the whole fleet.
 */
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "popbsmtp/text.h"
#include "popbsmtp/usagekey.h"

#define HOUR_BUCKETS (3600 / PBS_USAGEKEY_BUCKET)
#define DAY_BUCKETS (86400 / PBS_USAGEKEY_BUCKET)

/* One counter: a field's words and its values. */
struct counter {
	struct pbs_usagekey_parts parts;
	long long hour, day, total;
};

/* The counters read, and an index over them: whoever writes to Redis decides how many
 * distinct fields there are, so finding one must not take a scan of all (100,000
 * fields took minutes). */
struct ctl_counters {
	struct counter *items;
	size_t count, cap;
	size_t *index; /* 2 * cap slots, open addressing: item number + 1, 0 when free */
};

/* FNV-1a over the four words of P. */
static size_t parts_hash(const struct pbs_usagekey_parts *p)
{
	const char *words[4] = {p->host, p->gate, p->verdict, p->reason};
	unsigned long long h = 1469598103934665603ULL;
	const char *c;
	int i;

	for (i = 0; i < 4; i++)
		for (c = words[i];; c++) {
			h = (h ^ (unsigned char)*c) * 1099511628211ULL;
			if (*c == '\0')
				break;
		}
	return (size_t)h;
}

static bool same_parts(const struct pbs_usagekey_parts *a, const struct pbs_usagekey_parts *b)
{
	return strcmp(a->host, b->host) == 0 && strcmp(a->gate, b->gate) == 0 &&
	       strcmp(a->verdict, b->verdict) == 0 && strcmp(a->reason, b->reason) == 0;
}

/* The slot of P in CS's index: where it is, or the free slot where it would go. */
static size_t slot_of(const struct ctl_counters *cs, const struct pbs_usagekey_parts *p)
{
	size_t slots = 2 * cs->cap, h;

	for (h = parts_hash(p) % slots; cs->index[h] != 0; h = (h + 1) % slots)
		if (same_parts(&cs->items[cs->index[h] - 1].parts, p))
			break;
	return h;
}

/* Index every item of CS again (after growing or sorting). Returns 0 or -1. */
static int index_rebuild(struct ctl_counters *cs)
{
	size_t *index = calloc(2 * cs->cap, sizeof *index), i;

	if (index == NULL)
		return -1;
	free(cs->index);
	cs->index = index;
	for (i = 0; i < cs->count; i++)
		cs->index[slot_of(cs, &cs->items[i].parts)] = i + 1;
	return 0;
}

/* The counter named by P, NULL when there is none. */
static const struct counter *counter_find(const struct ctl_counters *cs,
					  const struct pbs_usagekey_parts *p)
{
	size_t h;

	if (cs->count == 0)
		return NULL;
	h = slot_of(cs, p);
	return cs->index[h] != 0 ? &cs->items[cs->index[h] - 1] : NULL;
}

/* The counter named by PARTS, added if new; NULL when out of memory. */
static struct counter *counter_of(struct ctl_counters *cs, const struct pbs_usagekey_parts *p)
{
	size_t h;

	if (cs->count == cs->cap) {
		size_t cap = cs->cap ? cs->cap * 2 : 32;
		struct counter *items = realloc(cs->items, cap * sizeof *items);
		if (items == NULL)
			return NULL;
		cs->items = items;
		cs->cap = cap;
		if (index_rebuild(cs) != 0)
			return NULL;
	}
	h = slot_of(cs, p);
	if (cs->index[h] != 0)
		return &cs->items[cs->index[h] - 1];
	memset(&cs->items[cs->count], 0, sizeof cs->items[0]);
	cs->items[cs->count].parts = *p;
	cs->index[h] = ++cs->count;
	return &cs->items[cs->count - 1];
}

static void counters_free(struct ctl_counters *cs)
{
	free(cs->items);
	free(cs->index);
}

/* Add the fields of one HGETALL reply R: to hour (when HOUR), day and/or total. */
static int add_reply(struct ctl_counters *cs, const redisReply *r, bool hour, bool day,
		     bool total)
{
	struct pbs_usagekey_parts p;
	size_t i;

	if (r->type != REDIS_REPLY_ARRAY)
		return -1;
	for (i = 0; i + 1 < r->elements; i += 2) {
		struct counter *c;
		long long v;

		memset(&p, 0, sizeof p);
		if (r->element[i]->type != REDIS_REPLY_STRING ||
		    pbs_usagekey_parse_field(r->element[i]->str, &p) != 0)
			continue;
		/* A count no gate wrote (a sign, letters, too big) is skipped; the sums saturate. */
		if (r->element[i + 1]->type != REDIS_REPLY_STRING ||
		    pbs_usagekey_parse_count(r->element[i + 1]->str, &v) != 0)
			continue;
		if ((c = counter_of(cs, &p)) == NULL)
			return -1;
		c->hour = pbs_usagekey_sum(c->hour, hour ? v : 0);
		c->day = pbs_usagekey_sum(c->day, day ? v : 0);
		c->total = pbs_usagekey_sum(c->total, total ? v : 0);
	}
	return 0;
}

/* Read the all-time hash and the last day's buckets (one round trip) into CS. */
static int load(const struct ctl *c, struct ctl_counters *cs, bool buckets)
{
	enum { N = 1 + DAY_BUCKETS };
	char keys[N][PBS_KEY_MAX];
	const char *words[N][2];
	const char **argvs[N];
	int argcs[N], i, n = buckets ? N : 1, rc = CTL_OK;
	redisReply *replies[N];
	time_t now = time(NULL);

	pbs_usagekey_total(pbs_store_prefix(c->store), keys[0]);
	for (i = 1; i < n; i++)
		pbs_usagekey_bucket(pbs_store_prefix(c->store),
				    now - (time_t)(i - 1) * PBS_USAGEKEY_BUCKET, keys[i]);
	for (i = 0; i < n; i++) {
		words[i][0] = "HGETALL";
		words[i][1] = keys[i];
		argvs[i] = words[i];
		argcs[i] = 2;
	}
	if (pbs_store_pipeline(c->store, n, argcs, argvs, replies) != 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	for (i = 0; i < n; i++) {
		if (ctl_wrongtype(replies[i]))
			ctl_fail(CTL_OK, "%s is not a counter hash: skipped", keys[i]);
		else if (rc == CTL_OK && replies[i]->type == REDIS_REPLY_ERROR)
			rc = ctl_fail(CTL_STORE, "Redis at %s refused: %s",
				      pbs_store_where(c->store), replies[i]->str);
		else if (rc == CTL_OK &&
			 add_reply(cs, replies[i], i >= 1 && i <= HOUR_BUCKETS, i >= 1, i == 0) != 0)
			rc = ctl_fail(CTL_STORE, "out of memory, or not a hash: %s", keys[i]);
		freeReplyObject(replies[i]);
	}
	return rc;
}

/* True for the counters of lease writers rather than relay gates. */
static bool is_grant(const struct counter *k)
{
	return strcmp(k->parts.gate, "hook") == 0 || strcmp(k->parts.gate, "plugin") == 0;
}

/* True for counted events (not the flush time). */
static bool is_event(const struct counter *k)
{
	return pbs_usagekey_event(k->parts.verdict, k->parts.reason) >= 0;
}

/* Order: gates before lease writers, then host, gate, verdict, reason. */
static int counter_cmp(const void *a, const void *b)
{
	const struct counter *x = a, *y = b;
	int r;

	if (is_grant(x) != is_grant(y))
		return is_grant(x) ? 1 : -1;
	if ((r = strcmp(x->parts.host, y->parts.host)) != 0 ||
	    (r = strcmp(x->parts.gate, y->parts.gate)) != 0 ||
	    (r = strcmp(x->parts.verdict, y->parts.verdict)) != 0)
		return r;
	return strcmp(x->parts.reason, y->parts.reason);
}

/* The same counters summed over hosts, into TOTALS (host "*"). */
static int sum_hosts(const struct ctl_counters *cs, struct ctl_counters *totals)
{
	size_t i;

	for (i = 0; i < cs->count; i++) {
		struct pbs_usagekey_parts p = cs->items[i].parts;
		struct counter *t;

		if (!is_event(&cs->items[i]))
			continue;
		memset(p.host, 0, sizeof p.host);
		p.host[0] = '*';
		if ((t = counter_of(totals, &p)) == NULL)
			return -1;
		t->hour = pbs_usagekey_sum(t->hour, cs->items[i].hour);
		t->day = pbs_usagekey_sum(t->day, cs->items[i].day);
	}
	return 0;
}

/* One row per counter with a count in the last day. */
static void print_rows(const struct ctl *c, const struct ctl_counters *cs, bool with_host,
		       bool *first)
{
	char host[PBS_LOG_SAFE_MAX], gate[PBS_LOG_SAFE_MAX];
	size_t i;

	for (i = 0; i < cs->count; i++) {
		const struct counter *k = &cs->items[i];

		if (!is_event(k) || k->day == 0)
			continue;
		if (!c->json) {
			/* Host and gate are whatever the hash's field says: escaped. */
			printf("  %-20s %-7s %-9s %-12s %8lld %8lld\n",
			       with_host ? pbs_log_safe(k->parts.host, host) : "(all)",
			       pbs_log_safe(k->parts.gate, gate), k->parts.verdict, k->parts.reason,
			       k->hour, k->day);
			continue;
		}
		printf("%s{", *first ? "" : ",");
		*first = false;
		if (with_host) {
			printf("\"host\":");
			ctl_json_string(stdout, k->parts.host);
			putchar(',');
		}
		printf("\"gate\":");
		ctl_json_string(stdout, k->parts.gate);
		printf(",\"verdict\":");
		ctl_json_string(stdout, k->parts.verdict);
		printf(",\"reason\":");
		ctl_json_string(stdout, k->parts.reason);
		printf(",\"hour\":%lld,\"day\":%lld}", k->hour, k->day);
	}
}

/* Sort CS for printing (an empty set has no array to give qsort), and index it again.
 * Returns 0 or -1. */
static int sort_counters(struct ctl_counters *cs)
{
	if (cs->count > 1)
		qsort(cs->items, cs->count, sizeof *cs->items, counter_cmp);
	return cs->count > 0 ? index_rebuild(cs) : 0;
}

int ctl_counters_print(const struct ctl *c)
{
	struct ctl_counters cs = {NULL, 0, 0, NULL}, totals = {NULL, 0, 0, NULL};
	bool first = true;
	int rc;

	if ((rc = load(c, &cs, true)) == CTL_OK &&
	    (sum_hosts(&cs, &totals) != 0 || sort_counters(&cs) != 0 || sort_counters(&totals) != 0))
		rc = ctl_fail(CTL_STORE, "out of memory");
	if (rc == CTL_OK) {
		if (c->json) {
			printf(",\"decisions\":[");
			print_rows(c, &cs, true, &first);
			printf("],\"decision_totals\":[");
			first = true;
			print_rows(c, &totals, false, &first);
			printf("]");
		} else {
			printf("decisions and lease grants (last hour, last day):\n");
			printf("  %-20s %-7s %-9s %-12s %8s %8s\n", "HOST", "GATE", "VERDICT", "REASON",
			       "HOUR", "DAY");
			print_rows(c, &cs, true, &first);
			print_rows(c, &totals, false, &first);
		}
	}
	counters_free(&cs);
	counters_free(&totals);
	return rc;
}

/* ---- metrics ---- */

/* NAME="VALUE", VALUE as the exposition format wants it (pbs_text_label). */
static void print_label(const char *name, const char *value, bool comma)
{
	printf("%s%s=", comma ? "," : "", name);
	pbs_text_label(stdout, value);
}

/* The value of the counter HOST|GATE|VERDICT|REASON in CS, 0 when absent. */
static long long value_of(const struct ctl_counters *cs, const char *host, const char *gate,
			  const char *verdict, const char *reason)
{
	struct pbs_usagekey_parts p;
	const struct counter *k;

	snprintf(p.host, sizeof p.host, "%s", host);
	snprintf(p.gate, sizeof p.gate, "%s", gate);
	snprintf(p.verdict, sizeof p.verdict, "%s", verdict);
	snprintf(p.reason, sizeof p.reason, "%s", reason);
	return (k = counter_find(cs, &p)) != NULL ? k->total : 0;
}

/* True when K is the first counter of its host and gate in CS (sorted). */
static bool first_of_gate(const struct ctl_counters *cs, size_t i)
{
	return i == 0 || strcmp(cs->items[i - 1].parts.host, cs->items[i].parts.host) != 0 ||
	       strcmp(cs->items[i - 1].parts.gate, cs->items[i].parts.gate) != 0;
}

/* One metric family: every event FROM..TO for every host and gate of the right kind
 * (GRANTS), zero where nothing was counted yet, so rate() sees the first increase. */
static void print_family(const struct ctl_counters *cs, const char *name, const char *help,
			 bool grants, int from, int to)
{
	size_t i;
	int e;

	printf("# HELP %s %s\n# TYPE %s counter\n", name, help, name);
	for (i = 0; i < cs->count; i++) {
		const struct pbs_usagekey_parts *p = &cs->items[i].parts;

		if (is_grant(&cs->items[i]) != grants || !first_of_gate(cs, i))
			continue;
		for (e = from; e <= to; e++) {
			const char *v = pbs_usagekey_verdict((enum pbs_usage_event)e);
			const char *r = pbs_usagekey_reason((enum pbs_usage_event)e);

			printf("%s{", name);
			print_label("host", p->host, false);
			print_label(grants ? "source" : "gate", p->gate, true);
			print_label(grants ? "result" : "verdict", v, true);
			print_label("reason", r, true);
			printf("} %lld\n", value_of(cs, p->host, p->gate, v, r));
		}
	}
}

/* Dropped usage entries and the last flush, per host and gate. */
static void print_gate_health(const struct ctl_counters *cs)
{
	static const char *const families[2][3] = {
	    {"popbsmtp_usage_dropped_total", "counter",
	     "Messages relayed by lease whose per-user usage was not recorded (pending cap)."},
	    {"popbsmtp_last_flush_timestamp_seconds", "gauge",
	     "When the gate last wrote its counters to Redis (Unix time)."}};
	size_t i;
	int f;

	for (f = 0; f < 2; f++) {
		printf("# HELP %s %s\n# TYPE %s %s\n", families[f][0], families[f][2],
		       families[f][0], families[f][1]);
		for (i = 0; i < cs->count; i++) {
			const struct pbs_usagekey_parts *p = &cs->items[i].parts;

			if (is_grant(&cs->items[i]) || !first_of_gate(cs, i))
				continue;
			printf("%s{", families[f][0]);
			print_label("host", p->host, false);
			print_label("gate", p->gate, true);
			printf("} %lld\n", f == 0 ? value_of(cs, p->host, p->gate, "dropped", "usage")
						  : value_of(cs, p->host, p->gate, "flushed", "time"));
		}
	}
}

/* The gauge of addresses where more than one user logged in within lease.ttl. */
static int print_shared(const struct ctl *c)
{
	long long shared;
	int rc = ctl_count_shared(c, &shared);

	if (rc == CTL_OK)
		printf("# HELP popbsmtp_shared_addresses Lease subjects where more than one user "
		       "logged in within lease.ttl.\n# TYPE popbsmtp_shared_addresses gauge\n"
		       "popbsmtp_shared_addresses %lld\n",
		       shared);
	return rc;
}

int ctl_cmd_metrics(struct ctl *c, int argc, char **argv)
{
	struct ctl_counters cs = {NULL, 0, 0, NULL};
	int rc;

	if (argc != 1)
		return ctl_fail(CTL_USAGE, "metrics: unexpected argument '%s'", argv[1]);
	if ((rc = load(c, &cs, false)) == CTL_OK && sort_counters(&cs) != 0)
		rc = ctl_fail(CTL_STORE, "out of memory");
	if (rc == CTL_OK) {
		print_family(&cs, "popbsmtp_relay_decisions_total",
			     "Relay decisions of the popbsmtp gates, by verdict and reason.", false,
			     PBS_EV_ALLOWED_LEASE, PBS_EV_REFUSED_SENDER_DOMAIN);
		print_family(&cs, "popbsmtp_suspensions_total",
			     "Users a gate suspended for refusals by a relay limit "
			     "(limits.suspend_after).",
			     false, PBS_EV_SUSPENDED_RATE_LIMIT, PBS_EV_SUSPENDED_RATE_LIMIT);
		print_family(&cs, "popbsmtp_lease_grants_total",
			     "Leases written at login (result granted), or not (refused, failed).",
			     true, PBS_EV_GRANTED, PBS_EV_GRANT_FAILED_STORE);
		print_gate_health(&cs);
		rc = print_shared(c);
	}
	counters_free(&cs);
	return rc;
}
