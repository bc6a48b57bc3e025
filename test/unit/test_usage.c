/*
 * test_usage.c — the usage counters without Redis: the vocabulary (every reason token of
 * pbs_policy_decide maps to one counted event), key and field formats, the trace header
 * value, and the in-memory counting: aggregation per user and day, the pending cap, and
 * what a failed flush puts back (everything, merged with what came meanwhile, capped),
 * and that a flush after an outage of many days goes through (against a stand-in that
 * speaks just enough RESP to take one MULTI/EXEC).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "popbsmtp/config.h"
#include "popbsmtp/log.h"
#include "popbsmtp/usage.h"

#include "table.h"

/* 2024-05-01 12:34:56 UTC */
#define T0 1714566896

struct decision_row {
	enum pbs_verdict verdict;
	const char *reason;
	int event;
};

static const struct decision_row decision_rows[] = {
    {PBS_VERDICT_ALLOW, "lease", PBS_EV_ALLOWED_LEASE},
    {PBS_VERDICT_ALLOW, "auth", PBS_EV_ALLOWED_AUTH},
    {PBS_VERDICT_ALLOW, "trusted", PBS_EV_ALLOWED_TRUSTED},
    {PBS_VERDICT_ALLOW, "local", PBS_EV_ALLOWED_LOCAL},
    {PBS_VERDICT_ALLOW, "store-error", PBS_EV_ALLOWED_STORE_ERROR},
    {PBS_VERDICT_REJECT, "no-lease", PBS_EV_REFUSED_NO_LEASE},
    {PBS_VERDICT_REJECT, "never-lease", PBS_EV_REFUSED_NEVER_LEASE},
    {PBS_VERDICT_REJECT, "store-error", PBS_EV_REFUSED_STORE_ERROR},
    {PBS_VERDICT_TEMPFAIL, "store-error", PBS_EV_DEFERRED_STORE_ERROR},
    {PBS_VERDICT_NEED_LEASE, "lookup-needed", -1},
};

/* Every verdict and reason of pbs_policy_decide has its event, and only those. */
static void test_decision_events(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof decision_rows / sizeof decision_rows[0]; i++) {
		const struct decision_row *r = &decision_rows[i];
		int got = pbs_usagekey_decision(r->verdict, r->reason);
		ROW_CHECK(got == r->event, "%s: event %d, expected %d", r->reason, got, r->event);
	}
	table_done("decision_rows");
}

/* Every policy outcome, fed through pbs_policy_decide itself, is counted. */
static void test_every_policy_outcome_counted(void **state)
{
	struct pbs_policy_facts f;
	const char *reason;
	enum pbs_verdict v;
	int bits, on_err;

	(void)state;
	for (bits = 0; bits < 16; bits++) {
		for (on_err = 0; on_err < 3; on_err++) {
			int lease;
			for (lease = PBS_LEASE_LIVE; lease <= PBS_LEASE_STORE_ERROR; lease++) {
				f.trusted = bits & 1;
				f.authenticated = bits & 2;
				f.relay = bits & 4;
				f.never_lease = bits & 8;
				f.lease = (enum pbs_lease_state)lease;
				f.on_store_error = (enum pbs_on_store_error)on_err;
				v = pbs_policy_decide(&f, &reason);
				ROW_CHECK(pbs_usagekey_decision(v, reason) >= 0,
					  "verdict %d reason %s not counted", v, reason);
			}
		}
	}
	table_done("policy outcomes");
}

static void test_keys(void **state)
{
	char key[PBS_KEY_MAX];

	(void)state;
	pbs_usagekey_total("popbsmtp:", key);
	assert_string_equal(key, "popbsmtp:stat:total");
	pbs_usagekey_bucket("popbsmtp:", T0, key);
	assert_string_equal(key, "popbsmtp:stat:20240501T1230");
	pbs_usagekey_day("p:", T0, key);
	assert_string_equal(key, "p:usage:20240501");
	/* The bucket 12:30-12:40 lives two days after it ends; the day 30 days after it ends. */
	assert_int_equal(pbs_usagekey_bucket_expiry(T0), 1714566600LL + 600 + 2 * 86400);
	assert_int_equal(pbs_usagekey_day_expiry(T0, 30), 1714521600LL + 86400 + 30 * 86400);
	assert_int_equal(pbs_usagekey_day_expiry(T0, 1), 1714521600LL + 2 * 86400);
}

static void test_fields(void **state)
{
	char field[PBS_USAGEKEY_FIELD_MAX], uf[PBS_USAGEKEY_USER_FIELD_MAX], client[PBS_ADDR_STRLEN];
	struct pbs_usagekey_parts p;
	const char *user;
	long long when;

	(void)state;
	pbs_usagekey_field("mx1", "milter", PBS_EV_DEFERRED_STORE_ERROR, field);
	assert_string_equal(field, "mx1|milter|deferred|store-error");
	assert_int_equal(pbs_usagekey_parse_field(field, &p), 0);
	assert_string_equal(p.host, "mx1");
	assert_string_equal(p.gate, "milter");
	assert_string_equal(p.verdict, "deferred");
	assert_string_equal(p.reason, "store-error");
	assert_int_equal(pbs_usagekey_event(p.verdict, p.reason), PBS_EV_DEFERRED_STORE_ERROR);
	pbs_usagekey_flushed_field("mx1", "policy", field);
	assert_string_equal(field, "mx1|policy|flushed|time");
	assert_int_equal(pbs_usagekey_parse_field("a|b|c", &p), -1);
	assert_int_equal(pbs_usagekey_parse_field("a|b|c|d|e", &p), -1);
	assert_int_equal(pbs_usagekey_parse_field("a||c|d", &p), -1);

	/* A user name may hold ':' and '|': the kind prefix has a fixed length. */
	pbs_usagekey_user_field('n', "al:i|ce", uf);
	assert_string_equal(uf, "n:al:i|ce");
	assert_int_equal(pbs_usagekey_parse_user_field(uf, &user), 'n');
	assert_string_equal(user, "al:i|ce");
	assert_int_equal(pbs_usagekey_parse_user_field("x:bob", &user), 0);
	assert_int_equal(pbs_usagekey_parse_user_field("n:", &user), 0);

	pbs_usagekey_last_value(T0, "2001:db8::7", field, sizeof field);
	assert_string_equal(field, "1714566896 2001:db8::7");
	assert_int_equal(pbs_usagekey_parse_last(field, &when, client, sizeof client), 0);
	assert_int_equal(when, T0);
	assert_string_equal(client, "2001:db8::7");
	assert_int_equal(pbs_usagekey_parse_last("garbage", &when, client, sizeof client), -1);
}

static void test_host(void **state)
{
	char host[PBS_USAGEKEY_HOST_MAX + 1];

	(void)state;
	assert_string_equal(pbs_usagekey_host("mx1.example.org", host), "mx1.example.org");
	assert_string_equal(pbs_usagekey_host("a|b c\"d", host), "a_b_c_d");
	assert_true(strlen(pbs_usagekey_host("", host)) > 0); /* gethostname() */
	assert_null(strchr(host, '|'));
}

static void test_trace_value(void **state)
{
	char out[PBS_USAGE_TRACE_MAX];
	pbs_lease lease;

	(void)state;
	assert_null(pbs_lease_make(&lease, "alice", "imap", T0));
	assert_string_equal(pbs_usage_trace_value(&lease, "192.0.2.7", out),
			    "user=alice lease=192.0.2.7 service=imap granted=2024-05-01T12:34:56Z");
	/* Spaces, quotes, '%', non-ASCII: %HH, so the value stays one parseable token. */
	assert_null(pbs_lease_make(&lease, "j doe\"%\xc3\xa9", "", T0));
	assert_string_equal(pbs_usage_trace_value(&lease, "2001:db8::/64", out),
			    "user=j%20doe%22%25%C3%A9 lease=2001:db8::/64 service=- "
			    "granted=2024-05-01T12:34:56Z");
}

static void test_grant_commands(void **state)
{
	struct pbs_usage_config cfg = {30, 10, (char *)"imap1", 0, (char *)""};
	struct pbs_usage_batch b;

	(void)state;
	pbs_usage_grant_commands(&b, "popbsmtp:", &cfg, "hook", PBS_EV_GRANTED, T0);
	assert_int_equal(b.count, 4);
	assert_string_equal(b.argvs[0][0], "HINCRBY");
	assert_string_equal(b.argvs[0][1], "popbsmtp:stat:total");
	assert_string_equal(b.argvs[0][2], "imap1|hook|granted|lease");
	assert_string_equal(b.argvs[1][0], "EXPIRE");
	assert_string_equal(b.argvs[1][2], "2592000");
	assert_string_equal(b.argvs[2][1], "popbsmtp:stat:20240501T1230");
	assert_string_equal(b.argvs[3][0], "EXPIREAT");
	assert_int_equal(b.argcs[3], 3);
}

/* A store nobody listens on: every flush fails at once. */
static pbs_store *dead_store(void)
{
	struct pbs_redis_config rc = {0};
	pbs_store *s;

	rc.host = (char *)"127.0.0.1";
	rc.port = 1;
	rc.prefix = (char *)"t:";
	rc.timeout_ms = 200;
	s = pbs_store_new(&rc);
	assert_non_null(s);
	return s;
}

static void test_aggregation(void **state)
{
	pbs_usage *u = pbs_usage_new("milter", 10);

	(void)state;
	pbs_usage_relay(u, "alice", "192.0.2.7", T0);
	pbs_usage_relay(u, "alice", "192.0.2.8", T0 + 5);
	pbs_usage_relay(u, "bob", "192.0.2.9", T0);
	pbs_usage_relay(u, "alice", "192.0.2.7", T0 + 86400); /* the next day: its own entry */
	pbs_usage_count(u, PBS_EV_ALLOWED_LEASE);
	pbs_usage_count(u, PBS_EV_ALLOWED_LEASE);
	assert_int_equal(pbs_usage_pending_users(u), 3);
	assert_int_equal(pbs_usage_pending_messages(u, "alice", T0), 2);
	assert_int_equal(pbs_usage_pending_messages(u, "alice", T0 + 86400), 1);
	assert_int_equal(pbs_usage_pending(u, PBS_EV_ALLOWED_LEASE), 2);
	pbs_usage_free(u);
	/* NULL counts nothing and fails nothing (a gate that could not allocate them). */
	pbs_usage_count(NULL, PBS_EV_ALLOWED_LEASE);
	pbs_usage_relay(NULL, "alice", "192.0.2.7", T0);
	assert_int_equal(pbs_usage_flush(NULL, NULL, NULL, T0), 0);
}

static void test_cap(void **state)
{
	pbs_usage *u = pbs_usage_new("milter", 2);

	(void)state;
	pbs_usage_relay(u, "a", "192.0.2.1", T0);
	pbs_usage_relay(u, "b", "192.0.2.1", T0);
	pbs_usage_relay(u, "c", "192.0.2.1", T0); /* over the cap: dropped, counted */
	pbs_usage_relay(u, "a", "192.0.2.1", T0); /* known users still count */
	assert_int_equal(pbs_usage_pending_users(u), 2);
	assert_int_equal(pbs_usage_pending_messages(u, "a", T0), 2);
	assert_int_equal(pbs_usage_pending_messages(u, "c", T0), 0);
	assert_int_equal(pbs_usage_pending(u, PBS_EV_USAGE_DROPPED), 1);
	pbs_usage_free(u);
}

static void test_failed_flush_puts_back(void **state)
{
	struct pbs_usage_config cfg = {30, 10, (char *)"mx1", 0, (char *)""};
	pbs_usage *u = pbs_usage_new("milter", 3);
	pbs_store *store = dead_store();

	(void)state;
	pbs_usage_relay(u, "alice", "192.0.2.7", T0);
	pbs_usage_relay(u, "bob", "192.0.2.8", T0);
	pbs_usage_count(u, PBS_EV_ALLOWED_LEASE);
	pbs_usage_count(u, PBS_EV_ALLOWED_LEASE);
	pbs_usage_count(u, PBS_EV_DEFERRED_STORE_ERROR);
	assert_int_equal(pbs_usage_flush(u, store, &cfg, T0 + 10), -1);
	assert_int_equal(pbs_usage_pending(u, PBS_EV_ALLOWED_LEASE), 2);
	assert_int_equal(pbs_usage_pending(u, PBS_EV_DEFERRED_STORE_ERROR), 1);
	assert_int_equal(pbs_usage_pending_messages(u, "alice", T0), 1);
	assert_int_equal(pbs_usage_pending_users(u), 2);

	/* Counted between failed flushes: merged with what comes back. A new user fills
	 * the last place; the next new one finds the table full and is counted as dropped. */
	pbs_usage_relay(u, "alice", "192.0.2.9", T0 + 20);
	pbs_usage_relay(u, "carol", "192.0.2.1", T0 + 20);
	assert_int_equal(pbs_usage_flush(u, store, &cfg, T0 + 30), -1);
	pbs_usage_relay(u, "dave", "192.0.2.2", T0 + 40);
	assert_int_equal(pbs_usage_pending_users(u), 3);
	assert_int_equal(pbs_usage_pending_messages(u, "alice", T0), 2);
	assert_int_equal(pbs_usage_pending(u, PBS_EV_USAGE_DROPPED), 1);
	assert_int_equal(pbs_usage_flush(u, store, &cfg, T0 + 50), -1);
	assert_int_equal(pbs_usage_pending_users(u), 3);
	assert_int_equal(pbs_usage_pending_messages(u, "alice", T0), 2);
	assert_int_equal(pbs_usage_pending_messages(u, "dave", T0), 0);
	assert_int_equal(pbs_usage_pending(u, PBS_EV_USAGE_DROPPED), 1);
	assert_int_equal(pbs_usage_pending(u, PBS_EV_ALLOWED_LEASE), 2);
	pbs_store_free(store);
	pbs_usage_free(u);
}

static void test_maybe_flush(void **state)
{
	struct pbs_usage_config cfg = {30, 10, (char *)"mx1", 0, (char *)""};
	pbs_usage *u = pbs_usage_new("policy", 3);
	pbs_store *store = dead_store();
	time_t now = time(NULL);

	(void)state;
	/* Not due yet: nothing tried, so nothing fails. */
	assert_int_equal(pbs_usage_maybe_flush(u, store, &cfg, now + 1), 0);
	/* Due: tried (and failed against the dead port); not due again right after. */
	assert_int_equal(pbs_usage_maybe_flush(u, store, &cfg, now + 10), -1);
	assert_int_equal(pbs_usage_maybe_flush(u, store, &cfg, now + 11), 0);
	/* A clock stepped back does not stop flushes for the time it went back. */
	assert_int_equal(pbs_usage_maybe_flush(u, store, &cfg, now - 100), -1);
	pbs_store_free(store);
	pbs_usage_free(u);
}


/* ---- a stand-in for Redis that takes one pipelined MULTI/EXEC ---- */

#define FAKE_MAX_CMDS 4096

/* What the stand-in saw: the first two words (command, key) of every command. */
struct fake {
	int listen_fd;
	int port;
	pthread_t thread;
	size_t n;
	char *words[FAKE_MAX_CMDS][2];
};

/* Read one RESP command (an array of bulk strings) from IN; keep its first two words. */
static int fake_read_command(FILE *in, struct fake *f)
{
	char line[64];
	long argc, len, i;
	char *word;

	if (fgets(line, sizeof line, in) == NULL || line[0] != '*')
		return -1;
	argc = strtol(line + 1, NULL, 10);
	for (i = 0; i < argc; i++) {
		if (fgets(line, sizeof line, in) == NULL || line[0] != '$')
			return -1;
		len = strtol(line + 1, NULL, 10);
		if ((word = calloc(1, (size_t)len + 3)) == NULL ||
		    fread(word, 1, (size_t)len + 2, in) != (size_t)len + 2) {
			free(word);
			return -1;
		}
		word[len] = '\0';
		if (i < 2 && f->n < FAKE_MAX_CMDS)
			f->words[f->n][i] = word;
		else
			free(word);
	}
	if (f->n < FAKE_MAX_CMDS)
		f->n++;
	return 0;
}

/* Answer every command of one connection: +OK to MULTI, an empty array to EXEC (as if
 * applied), +QUEUED to the rest, until the client hangs up. */
static void *fake_serve(void *arg)
{
	struct fake *f = arg;
	int fd = accept(f->listen_fd, NULL, NULL);
	FILE *in = fd >= 0 ? fdopen(dup(fd), "r") : NULL;

	while (in != NULL && fake_read_command(in, f) == 0) {
		const char *cmd = f->words[f->n - 1][0];
		const char *reply = strcmp(cmd, "MULTI") == 0  ? "+OK\r\n"
				    : strcmp(cmd, "EXEC") == 0 ? "*0\r\n"
							       : "+QUEUED\r\n";
		if (write(fd, reply, strlen(reply)) < 0)
			break;
	}
	if (in != NULL)
		fclose(in);
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void fake_start(struct fake *f)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;

	memset(f, 0, sizeof *f);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(f->listen_fd >= 0);
	assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(f->listen_fd, 1), 0);
	assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *)&sa, &len), 0);
	f->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_serve, f), 0);
}

/* Wait for the connection to end (the store must be freed first). */
static void fake_stop(struct fake *f)
{
	pthread_join(f->thread, NULL);
	close(f->listen_fd);
}

/* Free the words F saw. */
static void fake_free(struct fake *f)
{
	size_t i;

	for (i = 0; i < f->n; i++) {
		free(f->words[i][0]);
		free(f->words[i][1]);
	}
}

/* Distinct keys of F's commands named CMD whose key starts with PREFIX. */
static size_t fake_keys(const struct fake *f, const char *cmd, const char *prefix)
{
	size_t i, j, n = 0;

	for (i = 0; i < f->n; i++) {
		if (strcmp(f->words[i][0], cmd) != 0 || f->words[i][1] == NULL ||
		    strncmp(f->words[i][1], prefix, strlen(prefix)) != 0)
			continue;
		for (j = 0; j < i; j++)
			if (strcmp(f->words[j][0], cmd) == 0 && f->words[j][1] != NULL &&
			    strcmp(f->words[j][1], f->words[i][1]) == 0)
				break;
		n += j == i;
	}
	return n;
}

/* Redis unreachable for 20 UTC days: every flush fails and keeps what it took. Then one
 * flush writes all of it — every day still within retention_days (10 here), whose usage
 * would otherwise be lost, and the decision counts — and leaves out only the days older
 * than that, counted as dropped usage. Flushes once stopped for good past 8 days. */
static void test_flush_after_long_outage(void **state)
{
	struct pbs_usage_config cfg = {10, 10, (char *)"mx1", 0, (char *)""};
	pbs_usage *u = pbs_usage_new("milter", 1000);
	pbs_store *dead = dead_store(), *live;
	struct pbs_redis_config rc = {0};
	struct fake f;
	time_t now = T0;
	int day;

	(void)state;
	for (day = 0; day < 20; day++, now += 86400) {
		pbs_usage_relay(u, "alice", "192.0.2.7", now);
		pbs_usage_relay(u, "bob", "192.0.2.8", now);
		pbs_usage_count(u, PBS_EV_ALLOWED_LEASE);
		assert_int_equal(pbs_usage_flush(u, dead, &cfg, now + 60), -1);
	}
	assert_int_equal(pbs_usage_pending_users(u), 40);
	assert_int_equal(pbs_usage_pending(u, PBS_EV_ALLOWED_LEASE), 20);

	fake_start(&f);
	rc.host = (char *)"127.0.0.1";
	rc.port = f.port;
	rc.prefix = (char *)"t:";
	rc.timeout_ms = 2000;
	live = pbs_store_new(&rc);
	assert_non_null(live);
	/* NOW is the 21st day: days 0..9 ended more than 10 days ago, days 10..19 are kept. */
	assert_int_equal(pbs_usage_flush(u, live, &cfg, now), 0);
	pbs_store_free(live);
	fake_stop(&f);

	assert_int_equal(fake_keys(&f, "HINCRBY", "t:usage:"), 10);
	assert_int_equal(fake_keys(&f, "EXPIREAT", "t:usage:"), 10);
	assert_int_equal(fake_keys(&f, "HINCRBY", "t:stat:total"), 1);
	assert_int_equal(pbs_usage_pending_users(u), 0);
	assert_int_equal(pbs_usage_pending(u, PBS_EV_ALLOWED_LEASE), 0);
	/* 2 messages on each of the 10 days left out: said by the next flush. */
	assert_int_equal(pbs_usage_pending(u, PBS_EV_USAGE_DROPPED), 20);
	fake_free(&f);
	pbs_store_free(dead);
	pbs_usage_free(u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_decision_events),
	    cmocka_unit_test(test_every_policy_outcome_counted),
	    cmocka_unit_test(test_keys),
	    cmocka_unit_test(test_fields),
	    cmocka_unit_test(test_host),
	    cmocka_unit_test(test_trace_value),
	    cmocka_unit_test(test_grant_commands),
	    cmocka_unit_test(test_aggregation),
	    cmocka_unit_test(test_cap),
	    cmocka_unit_test(test_failed_flush_puts_back),
	    cmocka_unit_test(test_maybe_flush),
	    cmocka_unit_test(test_flush_after_long_outage),
	};

	pbs_log_open("test_usage", PBS_LOG_NO_STDERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
