/*
 * test_store.c — the lease store against real redis-servers that run-with-redis.sh
 * starts for this test alone (ports in PBS_REDIS_PORT, PBS_REDIS_AUTH_PORT,
 * PBS_BLACKHOLE_PORT, PBS_DEAD_PORT, socket in PBS_REDIS_SOCKET). Checks what lands in
 * Redis, what comes back, and how the store behaves when Redis is slow, gone, strict
 * about passwords, or drops us: every failure quick, explained, and recovered from.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "popbsmtp/sha1.h"
#include "popbsmtp/store.h"

static char host[] = "127.0.0.1";
static char empty[] = "";
static char prefix[] = "popbsmtp:";

/* Port from the environment the wrapper sets up. */
static int env_port(const char *name)
{
	const char *v = getenv(name);

	if (v == NULL || atoi(v) <= 0)
		fail_msg("%s is not set: run this test through test/integration/run-with-redis.sh",
		         name);
	return atoi(v);
}

static struct pbs_redis_config make_cfg(int port, int timeout_ms)
{
	struct pbs_redis_config c;

	memset(&c, 0, sizeof c);
	c.host = host;
	c.port = port;
	c.password = empty;
	c.username = empty;
	c.prefix = prefix;
	c.timeout_ms = timeout_ms;
	return c;
}

static pbs_store *open_store(const struct pbs_redis_config *cfg)
{
	pbs_store *s = pbs_store_new(cfg);

	assert_non_null(s);
	return s;
}

/* A store on the plain server, database 0, generous timeout: the test's own view. */
static pbs_store *admin_store(void)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 5000);

	return open_store(&c);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run a command given as NULL-terminated strings; the reply must not be a failure. */
static redisReply *cmd(pbs_store *s, ...)
{
	const char *argv[16];
	int argc = 0;
	redisReply *r;
	va_list ap;

	va_start(ap, s);
	while (argc < 16 && (argv[argc] = va_arg(ap, const char *)) != NULL)
		argc++;
	va_end(ap);
	r = pbs_store_command(s, argc, argv, NULL);
	if (r == NULL)
		fail_msg("%s: %s", argv[0], pbs_store_error(s));
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("%s: %s", argv[0], r->str);
	return r;
}

/* A command whose reply is an integer (TTL, EXISTS, DBSIZE...). */
static long long cmd_int(pbs_store *s, const char *a0, const char *a1, const char *a2)
{
	redisReply *r = cmd(s, a0, a1, a2, (const char *)NULL);
	long long v;

	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	v = r->integer;
	freeReplyObject(r);
	return v;
}

static void assert_contains(const char *text, const char *part)
{
	if (strstr(text, part) == NULL)
		fail_msg("'%s' does not contain '%s'", text, part);
}

static void assert_lacks(const char *text, const char *part)
{
	if (strstr(text, part) != NULL)
		fail_msg("'%s' contains '%s'", text, part);
}

static void make_lease(pbs_lease *l, const char *user, const char *service)
{
	assert_null(pbs_lease_make(l, user, service, (long long)time(NULL)));
}

/* Before each test: an empty plain server (all databases). */
static int flush_all(void **state)
{
	pbs_store *s;
	redisReply *r;

	(void)state;
	s = admin_store();
	r = pbs_store_command(s, 1, (const char *[]){"FLUSHALL"}, NULL);
	if (r == NULL)
		fprintf(stderr, "FLUSHALL: %s\n", pbs_store_error(s));
	freeReplyObject(r);
	pbs_store_free(s);
	return r == NULL ? -1 : 0;
}

static void test_grant_then_lookup(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	pbs_store *s = open_store(&c);
	pbs_lease in, out;
	char want[PBS_LEASE_VALUE_MAX];
	redisReply *r;

	(void)state;
	make_lease(&in, "alice@example.com", "imap");
	if (pbs_store_grant(s, "192.0.2.7", &in, 1800) != 0)
		fail_msg("grant: %s", pbs_store_error(s));
	memset(&out, 0, sizeof out);
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &out), PBS_LOOKUP_FOUND);
	assert_string_equal(out.user, "alice@example.com");
	assert_string_equal(out.service, "imap");
	assert_true(out.granted == in.granted);

	/* What other tools see in Redis: the documented key and value. */
	r = cmd(s, "GET", "popbsmtp:lease:192.0.2.7", (const char *)NULL);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	snprintf(want, sizeof want, "1|%lld|imap|alice@example.com", in.granted);
	assert_string_equal(r->str, want);
	freeReplyObject(r);
	assert_string_equal(pbs_store_prefix(s), "popbsmtp:");
	pbs_store_free(s);
}

static void test_ttls(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	pbs_store *s = open_store(&c);
	pbs_lease l;
	long long ttl;

	(void)state;
	make_lease(&l, "alice", "pop3");
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 1800), 0);
	ttl = cmd_int(s, "TTL", "popbsmtp:lease:192.0.2.7", NULL);
	assert_in_range(ttl, 1795, 1800);

	/* A new grant for the same address starts its time afresh. */
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 600), 0);
	ttl = cmd_int(s, "TTL", "popbsmtp:lease:192.0.2.7", NULL);
	assert_in_range(ttl, 595, 600);
	pbs_store_free(s);
}

/* Every key in the plain server, as a reply to SCAN over all of it (a handful in a test). */
static redisReply *all_keys(pbs_store *s)
{
	redisReply *r = cmd(s, "SCAN", "0", "COUNT", "1000", (const char *)NULL);

	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_string_equal(r->element[0]->str, "0"); /* one call saw everything */
	return r;
}

/* A grant writes one key, the lease, and nothing else: no per-user index (its memory cost
 * more than the lease). The same user from another network gets a second lease key. */
static void test_grant_writes_one_key(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	pbs_store *s = open_store(&c);
	char want[PBS_LEASE_VALUE_MAX];
	redisReply *r;
	pbs_lease l;

	(void)state;
	make_lease(&l, "alice", "imap");
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 1800), 0);
	r = all_keys(s);
	assert_int_equal(r->element[1]->elements, 1);
	assert_string_equal(r->element[1]->element[0]->str, "popbsmtp:lease:192.0.2.7");
	freeReplyObject(r);
	r = cmd(s, "TYPE", "popbsmtp:lease:192.0.2.7", (const char *)NULL);
	assert_string_equal(r->str, "string");
	freeReplyObject(r);
	r = cmd(s, "GET", "popbsmtp:lease:192.0.2.7", (const char *)NULL);
	snprintf(want, sizeof want, "1|%lld|imap|alice", l.granted);
	assert_string_equal(r->str, want);
	freeReplyObject(r);
	assert_in_range(cmd_int(s, "TTL", "popbsmtp:lease:192.0.2.7", NULL), 1795, 1800);
	assert_int_equal(cmd_int(s, "EXISTS", "popbsmtp:user:alice", NULL), 0);

	assert_int_equal(pbs_store_grant(s, "2001:db8:1:2::/64", &l, 60), 0);
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 1800), 0);
	assert_int_equal(cmd_int(s, "DBSIZE", NULL, NULL), 2);
	assert_in_range(cmd_int(s, "TTL", "popbsmtp:lease:2001:db8:1:2::/64", NULL), 55, 60);
	pbs_store_free(s);
}

/* A grant replaces the lease of the subject, whoever held it: the new user, the new time. */
static void test_grant_replaces(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	pbs_store *s = open_store(&c);
	pbs_lease l;

	(void)state;
	make_lease(&l, "alice", "imap");
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 1800), 0);
	make_lease(&l, "bob", "pop3");
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 60), 0);
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &l), PBS_LOOKUP_FOUND);
	assert_string_equal(l.user, "bob");
	assert_string_equal(l.service, "pop3");
	assert_in_range(cmd_int(s, "TTL", "popbsmtp:lease:192.0.2.7", NULL), 55, 60);
	assert_int_equal(cmd_int(s, "DBSIZE", NULL, NULL), 1);
	pbs_store_free(s);
}

static void test_unknown_subject(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	pbs_store *s = open_store(&c);
	pbs_lease l;

	(void)state;
	assert_int_equal(pbs_store_lookup(s, "198.51.100.1", &l), PBS_LOOKUP_NONE);
	make_lease(&l, "alice", "imap");
	assert_int_equal(pbs_store_grant(s, "198.51.100.0/24", &l, 1800), 0);
	/* a lease for the network is not one for a single address in it (nor vice versa) */
	assert_int_equal(pbs_store_lookup(s, "198.51.100.1", &l), PBS_LOOKUP_NONE);
	assert_int_equal(pbs_store_lookup(s, "198.51.100.0/24", &l), PBS_LOOKUP_FOUND);
	pbs_store_free(s);
}

/* Whatever else sits under a lease key is no lease (relay refused, as for a missing one),
 * never a lease nor a store error (which would defer, or with on_store_error = accept
 * relay): the error text then names the key, and is empty for a plain missing lease. */
static void test_garbage_value(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	pbs_store *s = open_store(&c);
	pbs_lease l;

	(void)state;
	assert_int_equal(pbs_store_lookup(s, "192.0.2.8", &l), PBS_LOOKUP_NONE);
	assert_string_equal(pbs_store_error(s), "");
	freeReplyObject(cmd(s, "SET", "popbsmtp:lease:192.0.2.9", "garbage", (const char *)NULL));
	assert_int_equal(pbs_store_lookup(s, "192.0.2.9", &l), PBS_LOOKUP_NONE);
	assert_contains(pbs_store_error(s), "popbsmtp:lease:192.0.2.9");
	assert_contains(pbs_store_error(s), "no valid lease");

	freeReplyObject(cmd(s, "SET", "popbsmtp:lease:192.0.2.10", "2|1700000000|imap|alice",
	                    (const char *)NULL));
	assert_int_equal(pbs_store_lookup(s, "192.0.2.10", &l), PBS_LOOKUP_NONE);
	assert_contains(pbs_store_error(s), "no valid lease");

	/* a grant time in nanoseconds (date +%s%N): once a crash of every formatter */
	freeReplyObject(cmd(s, "SET", "popbsmtp:lease:192.0.2.15",
	                    "1|1765000000123456789|webmail|mallory", (const char *)NULL));
	assert_int_equal(pbs_store_lookup(s, "192.0.2.15", &l), PBS_LOOKUP_NONE);
	assert_contains(pbs_store_error(s), "popbsmtp:lease:192.0.2.15 holds no valid lease");

	freeReplyObject(
	    cmd(s, "SET", "popbsmtp:lease:192.0.2.11", "1|1700000000|imap|", (const char *)NULL));
	assert_int_equal(pbs_store_lookup(s, "192.0.2.11", &l), PBS_LOOKUP_NONE);

	/* a value with a NUL byte in the user */
	{
		static const char value[] = "1|1700000000|imap|al\0ice";
		const char *argv[] = {"SET", "popbsmtp:lease:192.0.2.12", value};
		size_t lens[] = {3, strlen(argv[1]), sizeof value - 1};
		redisReply *r = pbs_store_command(s, 3, argv, lens);
		assert_non_null(r);
		freeReplyObject(r);
		assert_int_equal(pbs_store_lookup(s, "192.0.2.12", &l), PBS_LOOKUP_NONE);
	}

	/* a key of the wrong type */
	freeReplyObject(cmd(s, "SADD", "popbsmtp:lease:192.0.2.13", "x", (const char *)NULL));
	assert_int_equal(pbs_store_lookup(s, "192.0.2.13", &l), PBS_LOOKUP_NONE);
	assert_contains(pbs_store_error(s), "popbsmtp:lease:192.0.2.13 holds no valid lease (not a string)");

	/* none of that hurts the connection */
	make_lease(&l, "alice", "imap");
	assert_int_equal(pbs_store_grant(s, "192.0.2.14", &l, 60), 0);
	assert_int_equal(pbs_store_lookup(s, "192.0.2.14", &l), PBS_LOOKUP_FOUND);
	assert_string_equal(pbs_store_error(s), "");
	pbs_store_free(s);
}

/* A user with '|' and spaces survives the trip through Redis. */
static void test_awkward_user(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	pbs_store *s = open_store(&c);
	pbs_lease in, out;

	(void)state;
	make_lease(&in, "a|b c|1|imap", "imap");
	assert_int_equal(pbs_store_grant(s, "192.0.2.20", &in, 60), 0);
	assert_int_equal(pbs_store_lookup(s, "192.0.2.20", &out), PBS_LOOKUP_FOUND);
	assert_string_equal(out.user, "a|b c|1|imap");
	assert_string_equal(out.service, "imap");
	pbs_store_free(s);
}

static void test_prefix(void **state)
{
	static char other[] = "site2:";
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	pbs_store *s, *plain = admin_store();
	pbs_lease l;

	(void)state;
	c.prefix = other;
	s = open_store(&c);
	assert_string_equal(pbs_store_prefix(s), "site2:");
	make_lease(&l, "alice", "imap");
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 60), 0);
	assert_int_equal(cmd_int(plain, "EXISTS", "site2:lease:192.0.2.7", NULL), 1);
	assert_int_equal(cmd_int(plain, "EXISTS", "popbsmtp:lease:192.0.2.7", NULL), 0);
	assert_int_equal(pbs_store_lookup(plain, "192.0.2.7", &l), PBS_LOOKUP_NONE);
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &l), PBS_LOOKUP_FOUND);
	pbs_store_free(s);
	pbs_store_free(plain);
}

static void test_database(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	pbs_store *db3, *db0 = admin_store();
	pbs_lease l;

	(void)state;
	c.database = 3;
	db3 = open_store(&c);
	make_lease(&l, "alice", "imap");
	assert_int_equal(pbs_store_grant(db3, "192.0.2.7", &l, 60), 0);
	assert_int_equal(cmd_int(db3, "EXISTS", "popbsmtp:lease:192.0.2.7", NULL), 1);
	assert_int_equal(cmd_int(db0, "EXISTS", "popbsmtp:lease:192.0.2.7", NULL), 0);
	assert_int_equal(pbs_store_lookup(db0, "192.0.2.7", &l), PBS_LOOKUP_NONE);
	assert_int_equal(pbs_store_lookup(db3, "192.0.2.7", &l), PBS_LOOKUP_FOUND);
	freeReplyObject(cmd(db0, "SELECT", "3", (const char *)NULL));
	assert_int_equal(cmd_int(db0, "EXISTS", "popbsmtp:lease:192.0.2.7", NULL), 1);

	/* after a reconnect the store is in database 3 again */
	pbs_store_disconnect(db3);
	assert_int_equal(pbs_store_lookup(db3, "192.0.2.7", &l), PBS_LOOKUP_FOUND);
	pbs_store_free(db3);
	pbs_store_free(db0);
}

/* A database the server does not have: every call fails, and none quietly falls back to
 * database 0 on the connection whose SELECT failed. */
static void test_database_out_of_range(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	pbs_store *bad, *db0 = admin_store();
	pbs_lease l;
	int i, failures = 0;

	(void)state;
	make_lease(&l, "mallory", "imap");
	assert_int_equal(pbs_store_grant(db0, "203.0.113.5", &l, 60), 0);
	c.database = 20; /* redis-server has 16 unless told otherwise */
	bad = open_store(&c);
	for (i = 1; i <= 3 && failures == 0; i++) {
		int rc = pbs_store_grant(bad, "192.0.2.7", &l, 60);
		enum pbs_lookup found = pbs_store_lookup(bad, "203.0.113.5", &l);

		if (rc != -1 || found != PBS_LOOKUP_ERROR) {
			print_error("call %d with database 20: grant gave %d, lookup gave %s\n", i,
			            rc, found == PBS_LOOKUP_FOUND ? "database 0's lease" : "NONE");
			failures++;
		} else if (strstr(pbs_store_error(bad), "out of range") == NULL) {
			print_error("call %d: unclear error '%s'\n", i, pbs_store_error(bad));
			failures++;
		}
	}
	if (cmd_int(db0, "EXISTS", "popbsmtp:lease:192.0.2.7", NULL) != 0) {
		print_error("a lease for database 20 was written to database 0\n");
		failures++;
	}
	pbs_store_free(bad);
	pbs_store_free(db0);
	if (failures)
		fail_msg("a failed SELECT leaves the store working in database 0");
}

static void test_unix_socket(void **state)
{
	static char missing[] = "/nonexistent/popbsmtp-test.sock";
	struct pbs_redis_config c = make_cfg(0, 1000);
	char *path = getenv("PBS_REDIS_SOCKET");
	pbs_store *s, *plain = admin_store();
	pbs_lease l;

	(void)state;
	if (path == NULL || path[0] == '\0')
		fail_msg("PBS_REDIS_SOCKET is not set: run through run-with-redis.sh");
	c.host = NULL;
	c.socket = path;
	s = open_store(&c);
	make_lease(&l, "alice", "imap");
	assert_int_equal(pbs_store_grant(s, "192.0.2.30", &l, 60), 0);
	assert_int_equal(cmd_int(plain, "EXISTS", "popbsmtp:lease:192.0.2.30", NULL), 1);
	assert_int_equal(pbs_store_lookup(s, "192.0.2.30", &l), PBS_LOOKUP_FOUND);
	pbs_store_free(s);

	/* a socket that is not there: refused, and the message says where */
	c.socket = missing;
	s = open_store(&c);
	assert_int_equal(pbs_store_connect(s), -1);
	assert_contains(pbs_store_error(s), "/nonexistent/popbsmtp-test.sock");
	assert_contains(pbs_store_error(s), "No such file or directory");
	pbs_store_free(s);
	pbs_store_free(plain);
}

static void test_auth_right_password(void **state)
{
	static char pass[] = "s3cret", user[] = "default";
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_AUTH_PORT"), 1000);
	pbs_store *s;
	pbs_lease l;

	(void)state;
	c.password = pass;
	s = open_store(&c);
	make_lease(&l, "alice", "imap");
	if (pbs_store_grant(s, "192.0.2.7", &l, 60) != 0)
		fail_msg("grant: %s", pbs_store_error(s));
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &l), PBS_LOOKUP_FOUND);
	/* ... also after reconnecting, which has to authenticate again */
	pbs_store_disconnect(s);
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &l), PBS_LOOKUP_FOUND);
	pbs_store_free(s);

	/* ACL form: AUTH <user> <password> */
	c.username = user;
	s = open_store(&c);
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &l), PBS_LOOKUP_FOUND);
	pbs_store_free(s);

	/* with a database as well: AUTH and SELECT together */
	c.username = empty;
	c.database = 2;
	s = open_store(&c);
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &l), PBS_LOOKUP_NONE);
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 60), 0);
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &l), PBS_LOOKUP_FOUND);
	pbs_store_free(s);
}

/* Wrong or missing credentials: a clear error, every time, that never shows a password. */
static void test_auth_wrong_password(void **state)
{
	static char wrong[] = "wr0ng-pass", user[] = "nobody", pass[] = "s3cret";
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_AUTH_PORT"), 1000);
	pbs_store *s;
	pbs_lease l;
	const char *err;

	(void)state;
	c.password = wrong;
	s = open_store(&c);
	make_lease(&l, "alice", "imap");
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 60), -1);
	err = pbs_store_error(s);
	if (strstr(err, "WRONGPASS") == NULL && strstr(err, "invalid") == NULL)
		fail_msg("unclear AUTH error: '%s'", err);
	assert_lacks(err, "wr0ng-pass");
	assert_lacks(err, "s3cret");
	/* the next call tries again and fails the same way */
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &l), PBS_LOOKUP_ERROR);
	err = pbs_store_error(s);
	if (strstr(err, "WRONGPASS") == NULL && strstr(err, "invalid") == NULL)
		fail_msg("unclear AUTH error: '%s'", err);
	assert_lacks(err, "wr0ng-pass");
	pbs_store_free(s);

	/* the right password for a user that does not exist */
	c.password = pass;
	c.username = user;
	s = open_store(&c);
	assert_int_equal(pbs_store_connect(s), -1);
	err = pbs_store_error(s);
	if (strstr(err, "WRONGPASS") == NULL && strstr(err, "invalid") == NULL)
		fail_msg("unclear AUTH error: '%s'", err);
	assert_lacks(err, "s3cret");
	pbs_store_free(s);

	/* no password at all against a server that wants one */
	c = make_cfg(env_port("PBS_REDIS_AUTH_PORT"), 1000);
	s = open_store(&c);
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &l), PBS_LOOKUP_ERROR);
	assert_contains(pbs_store_error(s), "NOAUTH");
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 60), -1);
	assert_contains(pbs_store_error(s), "NOAUTH");
	pbs_store_free(s);
}

/* Nobody listens: refused at once, not after a timeout. */
static void test_connection_refused(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_DEAD_PORT"), 200);
	pbs_store *s = open_store(&c);
	pbs_lease l;
	long long t0, ms;
	char where[64];

	(void)state;
	t0 = now_ms();
	assert_int_equal(pbs_store_connect(s), -1);
	ms = now_ms() - t0;
	assert_contains(pbs_store_error(s), "Connection refused");
	snprintf(where, sizeof where, "127.0.0.1:%d", c.port);
	assert_contains(pbs_store_error(s), where);
	if (ms >= 3 * c.timeout_ms)
		fail_msg("refused connect took %lld ms", ms);

	make_lease(&l, "alice", "imap");
	t0 = now_ms();
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &l), PBS_LOOKUP_ERROR);
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 60), -1);
	assert_null(pbs_store_command(s, 1, (const char *[]){"PING"}, NULL));
	ms = now_ms() - t0;
	assert_contains(pbs_store_error(s), "Connection refused");
	if (ms >= 3 * c.timeout_ms)
		fail_msg("three refused calls took %lld ms", ms);
	pbs_store_free(s);
}

/* Run one call against the black hole and check it fails with "timed out" in time. */
static void blackhole_call(struct pbs_redis_config *c, int which, const char *what)
{
	pbs_store *s = open_store(c);
	pbs_lease l;
	long long t0, ms;
	int failed;

	make_lease(&l, "alice", "imap");
	t0 = now_ms();
	if (which == 0)
		failed = pbs_store_lookup(s, "192.0.2.7", &l) == PBS_LOOKUP_ERROR;
	else
		failed = pbs_store_grant(s, "192.0.2.7", &l, 60) == -1;
	ms = now_ms() - t0;
	print_message("  black hole, %s: %lld ms: %s\n", what, ms, pbs_store_error(s));
	assert_true(failed);
	assert_contains(pbs_store_error(s), "timed out");
	if (ms >= 3 * c->timeout_ms)
		fail_msg("%s against a black hole took %lld ms with timeout_ms %d", what, ms,
		         c->timeout_ms);
	pbs_store_free(s);
}

/* A server that accepts and never answers: bounded by timeout_ms, said to be a timeout. */
static void test_blackhole(void **state)
{
	static char pass[] = "s3cret";
	struct pbs_redis_config c = make_cfg(env_port("PBS_BLACKHOLE_PORT"), 200);

	(void)state;
	blackhole_call(&c, 0, "lookup");
	blackhole_call(&c, 1, "grant");
	c.database = 3;
	blackhole_call(&c, 0, "lookup with SELECT");
	c.database = 0;
	c.password = pass;
	blackhole_call(&c, 1, "grant with AUTH");
	c.password = empty;
	c.timeout_ms = 500;
	blackhole_call(&c, 0, "lookup, timeout 500 ms");
}

/* pbs_store_bound: a whole exchange against a black hole ends at the bound, not after
 * each step's own (much longer) timeout; lifted, the step's timeout applies again. And a
 * store for a host name (resolved once, then kept) serves call after call. */
static void test_bound(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_BLACKHOLE_PORT"), 3000);
	static char localhost[] = "localhost";
	pbs_store *s = open_store(&c);
	long long t0, ms;
	pbs_lease l;
	int i;

	(void)state;
	make_lease(&l, "alice", "imap");
	pbs_store_bound(s, 300);
	t0 = now_ms();
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &l, 60, 0, true), PBS_REFRESH_ERROR);
	ms = now_ms() - t0;
	if (ms < 250 || ms > 1500)
		fail_msg("a refresh bound to 300 ms took %lld ms", ms);
	assert_contains(pbs_store_error(s), "timed out");
	pbs_store_bound(s, 0);
	pbs_store_free(s);

	c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	c.host = localhost;
	s = open_store(&c);
	for (i = 0; i < 3; i++) {
		assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 60), 0);
		pbs_store_disconnect(s);
	}
	pbs_store_free(s);
}

/* The server drops us (CLIENT KILL): at most one call fails, the next reconnects. */
static void test_reconnect_after_kill(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	pbs_store *s = open_store(&c), *killer = admin_store();
	redisReply *r;
	pbs_lease l;
	enum pbs_lookup first;

	(void)state;
	make_lease(&l, "alice", "imap");
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 60), 0);
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &l), PBS_LOOKUP_FOUND);

	r = cmd(killer, "CLIENT", "KILL", "TYPE", "normal", (const char *)NULL);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	assert_true(r->integer >= 1); /* s's connection; SKIPME spares the killer */
	freeReplyObject(r);

	first = pbs_store_lookup(s, "192.0.2.7", &l);
	print_message("  first call after the kill: %s\n",
	              first == PBS_LOOKUP_FOUND ? "found" : pbs_store_error(s));
	assert_true(first == PBS_LOOKUP_FOUND || first == PBS_LOOKUP_ERROR);
	if (pbs_store_lookup(s, "192.0.2.7", &l) != PBS_LOOKUP_FOUND)
		fail_msg("second call after the kill: %s", pbs_store_error(s));

	/* and the same for a grant as the call that meets the dead connection */
	freeReplyObject(cmd(killer, "CLIENT", "KILL", "TYPE", "normal", (const char *)NULL));
	(void)pbs_store_grant(s, "192.0.2.8", &l, 60);
	if (pbs_store_grant(s, "192.0.2.8", &l, 60) != 0)
		fail_msg("second grant after the kill: %s", pbs_store_error(s));
	assert_int_equal(pbs_store_lookup(s, "192.0.2.8", &l), PBS_LOOKUP_FOUND);
	pbs_store_free(s);
	pbs_store_free(killer);
}

/* Redis stalls (DEBUG SLEEP 1) for longer than timeout_ms: the call times out in time,
 * and once the server is back the store works again on its own. */
static void test_server_stall(void **state)
{
	int port = env_port("PBS_REDIS_PORT");
	struct pbs_redis_config c = make_cfg(port, 200);
	pbs_store *s = open_store(&c);
	redisContext *sleeper;
	redisReply *r = NULL;
	pbs_lease l;
	long long t0, ms;
	int done = 0;

	(void)state;
	make_lease(&l, "alice", "imap");
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &l, 60), 0);

	/* Send DEBUG SLEEP from another connection without waiting for its reply. */
	sleeper = redisConnect("127.0.0.1", port);
	assert_true(sleeper != NULL && sleeper->err == 0);
	assert_int_equal(redisAppendCommand(sleeper, "DEBUG SLEEP 1"), REDIS_OK);
	while (!done)
		assert_int_equal(redisBufferWrite(sleeper, &done), REDIS_OK);
	usleep(100 * 1000); /* let the server start sleeping */

	t0 = now_ms();
	assert_int_equal(pbs_store_lookup(s, "192.0.2.7", &l), PBS_LOOKUP_ERROR);
	ms = now_ms() - t0;
	print_message("  stalled server: %lld ms: %s\n", ms, pbs_store_error(s));
	assert_contains(pbs_store_error(s), "timed out");
	if (ms >= 3 * c.timeout_ms)
		fail_msg("lookup against a stalled server took %lld ms", ms);

	/* The DEBUG SLEEP reply means the server is back. */
	assert_int_equal(redisGetReply(sleeper, (void **)&r), REDIS_OK);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("DEBUG SLEEP refused (is enable-debug-command on?): %s", r->str);
	freeReplyObject(r);
	redisFree(sleeper);
	if (pbs_store_lookup(s, "192.0.2.7", &l) != PBS_LOOKUP_FOUND)
		fail_msg("after the stall: %s", pbs_store_error(s));
	assert_string_equal(l.user, "alice");
	pbs_store_free(s);
}

/* An ordinary error reply comes back as a reply and keeps the connection. */
static void test_command_error_reply(void **state)
{
	pbs_store *s = admin_store();
	redisReply *r;
	long long id;

	(void)state;
	id = cmd_int(s, "CLIENT", "ID", NULL);
	r = pbs_store_command(s, 1, (const char *[]){"NOSUCHCOMMAND"}, NULL);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	freeReplyObject(r);
	assert_contains(pbs_store_error(s), "NOSUCHCOMMAND");
	assert_contains(pbs_store_error(s), "unknown command");
	assert_int_equal(cmd_int(s, "CLIENT", "ID", NULL), id);
	pbs_store_free(s);
}

/* The server turns into a read-only replica (a failover): the grant fails with the reason,
 * the connection is dropped, and once it is a master again the store writes again. */
static void test_readonly_replica(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 1000);
	pbs_store *s = open_store(&c), *admin = admin_store();
	char dead[16];
	long long id;
	pbs_lease l;
	int rc;

	(void)state;
	make_lease(&l, "alice", "imap");
	id = cmd_int(s, "CLIENT", "ID", NULL);
	snprintf(dead, sizeof dead, "%d", env_port("PBS_DEAD_PORT"));
	freeReplyObject(cmd(admin, "REPLICAOF", "127.0.0.1", dead, (const char *)NULL));
	rc = pbs_store_grant(s, "192.0.2.7", &l, 60);
	freeReplyObject(cmd(admin, "REPLICAOF", "NO", "ONE", (const char *)NULL));
	assert_int_equal(rc, -1);
	assert_contains(pbs_store_error(s), "READONLY");
	if (pbs_store_grant(s, "192.0.2.7", &l, 60) != 0)
		fail_msg("grant after the failover: %s", pbs_store_error(s));
	assert_true(cmd_int(s, "CLIENT", "ID", NULL) != id);
	pbs_store_free(s);
	pbs_store_free(admin);
}

/* Socket descriptors open in this process, as a bitmap over fds below 1024. */
static void open_sockets(unsigned char map[1024])
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	assert_non_null(d);
	memset(map, 0, 1024);
	while ((e = readdir(d)) != NULL) {
		char link[300], target[128];
		ssize_t n;
		int fd = atoi(e->d_name);

		if (e->d_name[0] == '.' || fd == dirfd(d) || fd < 0 || fd >= 1024)
			continue;
		snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
		n = readlink(link, target, sizeof target - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strncmp(target, "socket:", 7) == 0)
			map[fd] = 1;
	}
	closedir(d);
}

/* The Dovecot hook execs the login with the store connected: its socket must not leak. */
static void test_socket_close_on_exec(void **state)
{
	static unsigned char before[1024], after[1024];
	pbs_store *s = admin_store();
	int fd, fresh = 0;

	(void)state;
	open_sockets(before);
	assert_int_equal(pbs_store_connect(s), 0);
	open_sockets(after);
	for (fd = 0; fd < 1024; fd++) {
		if (!after[fd] || before[fd])
			continue;
		fresh++;
		if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
			fail_msg("the store's socket (fd %d) is inherited across exec", fd);
	}
	assert_int_equal(fresh, 1);
	pbs_store_free(s);
}

/* The value stored under KEY, or "" when there is none. */
static void get_value(pbs_store *s, const char *key, char *out, size_t len)
{
	redisReply *r = cmd(s, "GET", key, (const char *)NULL);

	snprintf(out, len, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
	freeReplyObject(r);
}

#define KEY "popbsmtp:lease:192.0.2.7"

/* A login's grant through the fenced path, as the hook and the plugin do it. */
static long long login(pbs_store *s, const pbs_lease *l)
{
	long long login_ms = -1;

	assert_int_equal(pbs_store_login(s, "192.0.2.7", l, 600, 0, 0, NULL, NULL, &login_ms),
			 PBS_GRANT_WRITTEN);
	assert_true(login_ms > 0);
	return login_ms;
}

/* A session's refresh in every case the plugin meets: its own lease (the TTL starts
 * afresh), one of the same user's other logins (kept too), another user's (left alone), a
 * lost one (written back only when allowed), a revoke since the login (stop, touch
 * nothing), a revoke before it (no stop). */
static void test_refresh(void **state)
{
	pbs_store *s = admin_store();
	pbs_lease mine, device, other;
	char value[PBS_LEASE_VALUE_MAX], got[PBS_LEASE_VALUE_MAX];
	long long at;

	(void)state;
	assert_null(pbs_lease_make(&mine, "alice", "imap", 1714641243));
	assert_null(pbs_lease_make(&device, "alice", "pop3", 1714641244));
	assert_null(pbs_lease_make(&other, "bob", "pop3", 1714641248));
	pbs_lease_encode(&mine, value);
	at = login(s, &mine);

	/* Its own lease, TTL nearly run out: the TTL is the full one again, the value kept. */
	freeReplyObject(cmd(s, "EXPIRE", KEY, "2", (const char *)NULL));
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &mine, 600, at, true), PBS_REFRESH_KEPT);
	assert_true(cmd_int(s, "TTL", KEY, NULL) > 590);
	get_value(s, KEY, got, sizeof got);
	assert_string_equal(got, value);

	/* The same user's other device took the address over: kept alive as it stands. */
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &device, 5), 0);
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &mine, 600, at, true), PBS_REFRESH_KEPT);
	get_value(s, KEY, got, sizeof got);
	assert_string_equal(got, "1|1714641244|pop3|alice");
	assert_true(cmd_int(s, "TTL", KEY, NULL) > 590);

	/* Another user's lease: not this session's to keep alive. */
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &other, 5), 0);
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &mine, 600, at, true), PBS_REFRESH_OTHER);
	get_value(s, KEY, got, sizeof got);
	assert_string_equal(got, "1|1714641248|pop3|bob");
	assert_true(cmd_int(s, "TTL", KEY, NULL) <= 5);

	/* Lost (an emptied Redis): written back only when the session may. */
	cmd_int(s, "DEL", KEY, NULL);
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &mine, 600, at, false), PBS_REFRESH_GONE);
	assert_int_equal(cmd_int(s, "EXISTS", KEY, NULL), 0);
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &mine, 600, at, true),
			 PBS_REFRESH_RESTORED);
	get_value(s, KEY, got, sizeof got);
	assert_string_equal(got, value);
	assert_true(cmd_int(s, "TTL", KEY, NULL) > 590);
	pbs_store_free(s);
}

/* After a revoke (by user or by address) no session that logged in before it keeps or
 * brings back any lease there, its own, its user's other one or another user's; a session
 * that logged in after it goes on. */
static void test_refresh_after_revoke(void **state)
{
	pbs_store *s = admin_store();
	pbs_lease alice, bob;
	long long before, after;
	bool removed;

	(void)state;
	make_lease(&alice, "alice", "imap");
	make_lease(&bob, "bob", "imap");
	before = login(s, &alice);
	assert_int_equal(pbs_store_revoke(s, NULL, "alice", 600, &removed), 0);
	assert_false(removed);
	assert_true(cmd_int(s, "TTL", "popbsmtp:revoked-user:alice", NULL) > 86390);
	/* The record does not remove the lease (popbsmtpctl does, by scanning), but the
	 * session no longer keeps it: not even when allowed to restore. */
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &alice, 600, before, true),
			 PBS_REFRESH_REVOKED);
	freeReplyObject(cmd(s, "EXPIRE", KEY, "5", (const char *)NULL));
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &alice, 600, before, true),
			 PBS_REFRESH_REVOKED);
	assert_true(cmd_int(s, "TTL", KEY, NULL) <= 5);
	cmd_int(s, "DEL", KEY, NULL);
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &alice, 600, before, true),
			 PBS_REFRESH_REVOKED);
	assert_int_equal(cmd_int(s, "EXISTS", KEY, NULL), 0);
	/* Login time unknown (0, after hibernation or a failed grant): any record stops it. */
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &alice, 600, 0, true),
			 PBS_REFRESH_REVOKED);

	/* A login after the revoke is a new login: it is granted and refreshed. */
	after = login(s, &alice);
	assert_true(after > before);
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &alice, 600, after, true),
			 PBS_REFRESH_KEPT);

	/* By address: the lease goes in the same step, every session there stops, whoever's. */
	assert_int_equal(pbs_store_revoke(s, "192.0.2.7", NULL, 600, &removed), 0);
	assert_true(removed);
	assert_int_equal(cmd_int(s, "EXISTS", KEY, NULL), 0);
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &alice, 600, after, true),
			 PBS_REFRESH_REVOKED);
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &bob, 600, after, true),
			 PBS_REFRESH_REVOKED);
	assert_int_equal(cmd_int(s, "EXISTS", KEY, NULL), 0);
	/* Nothing to remove: the record is written all the same, and said so. */
	assert_int_equal(pbs_store_revoke(s, "192.0.2.7", NULL, 600, &removed), 0);
	assert_false(removed);
	pbs_store_free(s);
}

/* A record that does not decode counts as a revoke: when in doubt, the revoke wins. */
static void test_refresh_bad_records(void **state)
{
	static const char *const bad[] = {
	    "", "1", "1|", "|1714641243123", "2|1714641243123", "1|17146x", "1|-5", "1| 5",
	    "1|5|", "1|1714641243123|imap|alice", "1|99999999999999999999999", "01x|5", NULL};
	pbs_store *s = admin_store();
	pbs_lease alice;
	long long at;
	size_t i;

	(void)state;
	make_lease(&alice, "alice", "imap");
	at = login(s, &alice);
	for (i = 0; bad[i] != NULL; i++) {
		freeReplyObject(cmd(s, "SET", "popbsmtp:revoked:192.0.2.7", bad[i], (const char *)NULL));
		if (pbs_store_refresh(s, "192.0.2.7", &alice, 600, at, true) != PBS_REFRESH_REVOKED)
			fail_msg("record '%s' did not count as a revoke", bad[i]);
	}
	/* A record older than the login does not stop it. */
	freeReplyObject(cmd(s, "SET", "popbsmtp:revoked:192.0.2.7", "1|5", (const char *)NULL));
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &alice, 600, at, true), PBS_REFRESH_KEPT);
	/* A hash where the record should be: an error, not a crash and not a refresh. */
	cmd_int(s, "DEL", "popbsmtp:revoked:192.0.2.7", NULL);
	freeReplyObject(cmd(s, "HSET", "popbsmtp:revoked:192.0.2.7", "f", "v", (const char *)NULL));
	freeReplyObject(cmd(s, "EXPIRE", KEY, "5", (const char *)NULL));
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &alice, 600, at, true), PBS_REFRESH_ERROR);
	assert_contains(pbs_store_error(s), "WRONGTYPE");
	assert_true(cmd_int(s, "TTL", KEY, NULL) <= 5);
	pbs_store_free(s);
}

/* The grant script itself, called as pbs_store_login calls it, with a login that began
 * BEFORE (ms) ago and waits BUDGET ms: its first word. */
static void grant_script(pbs_store *s, long long started, const char *budget, char *out,
			 size_t len)
{
	char st[24];
	redisReply *r;

	snprintf(st, sizeof st, "%lld", started);
	r = cmd(s, "EVAL", pbs_lease_script_grant, "1", "popbsmtp:clock", KEY, "1|5|imap|alice",
		"600", st, budget, "popbsmtp:revoked:192.0.2.7", "popbsmtp:revoked-user:alice",
		"popbsmtp:suspended:alice", "popbsmtp:users:192.0.2.7", "0", "alice",
		(const char *)NULL);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	snprintf(out, len, "%s", r->element[0]->str);
	freeReplyObject(r);
}

/* The store's clock never goes back, whatever Redis TIME says; a grant that began before a
 * revoke, or that arrives after its writer gave up, writes nothing. */
static void test_login_fenced(void **state)
{
	pbs_store *s = admin_store();
	char word[16], ahead[24];
	pbs_lease alice;
	long long at, later;
	bool removed;

	(void)state;
	make_lease(&alice, "alice", "imap");
	at = login(s, &alice);
	/* A clock ahead of Redis TIME (a failover from a master whose clock was ahead): the
	 * next times still go up. */
	snprintf(ahead, sizeof ahead, "%lld", at + 3600000);
	freeReplyObject(cmd(s, "SET", "popbsmtp:clock", ahead, (const char *)NULL));
	later = login(s, &alice);
	assert_true(later > at + 3600000);
	/* A revoke at that clock, then a grant whose login began before it: refused. */
	assert_int_equal(pbs_store_revoke(s, NULL, "alice", 600, &removed), 0);
	cmd_int(s, "DEL", KEY, NULL);
	grant_script(s, later, "60000", word, sizeof word);
	assert_string_equal(word, "revoked");
	assert_int_equal(cmd_int(s, "EXISTS", KEY, NULL), 0);
	/* A grant arriving more than its budget after the login began: refused. */
	cmd_int(s, "DEL", "popbsmtp:revoked-user:alice", NULL);
	grant_script(s, later - 10000, "250", word, sizeof word);
	assert_string_equal(word, "late");
	assert_int_equal(cmd_int(s, "EXISTS", KEY, NULL), 0);
	/* A hostile clock value is ignored (Redis TIME is used), never a crash. */
	freeReplyObject(cmd(s, "SET", "popbsmtp:clock", "1e308", (const char *)NULL));
	assert_true(login(s, &alice) > 0);
	pbs_store_free(s);
}

/* A suspension: while it lives no login of the user writes a lease and no session of the
 * user keeps one (any value at the key suspends: only its presence counts); lifted, the
 * next login is granted; --for makes it expire by itself. */
static void test_suspend(void **state)
{
	pbs_store *s = admin_store();
	pbs_lease alice, bob;
	long long at, since;
	char reason[PBS_REASON_MAX + 1];
	redisReply *r;

	(void)state;
	make_lease(&alice, "alice", "imap");
	make_lease(&bob, "bob", "imap");
	at = login(s, &alice);
	assert_int_equal(pbs_store_suspend(s, "alice", 0, "spam run, ticket 42"), 0);
	assert_int_equal(cmd_int(s, "TTL", "popbsmtp:suspended:alice", NULL), -1);
	r = cmd(s, "GET", "popbsmtp:suspended:alice", (const char *)NULL);
	assert_int_equal(pbs_lease_suspension_decode(r->str, r->len, &since, reason), 0);
	assert_true(since > at);
	assert_string_equal(reason, "spam run, ticket 42");
	freeReplyObject(r);
	/* Her session stops; her next login is refused; bob is not touched. */
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &alice, 600, at, true),
			 PBS_REFRESH_SUSPENDED);
	assert_int_equal(pbs_store_login(s, "192.0.2.8", &alice, 600, 0, 0, NULL, NULL, &at),
			 PBS_GRANT_SUSPENDED);
	assert_int_equal(cmd_int(s, "EXISTS", "popbsmtp:lease:192.0.2.8", NULL), 0);
	assert_int_equal(pbs_store_login(s, "192.0.2.9", &bob, 600, 0, 0, NULL, NULL, &at),
			 PBS_GRANT_WRITTEN);
	/* Any value suspends, a hash too. */
	cmd_int(s, "DEL", "popbsmtp:suspended:alice", NULL);
	freeReplyObject(cmd(s, "HSET", "popbsmtp:suspended:alice", "x", "y", (const char *)NULL));
	assert_int_equal(pbs_store_login(s, "192.0.2.8", &alice, 600, 0, 0, NULL, NULL, &at),
			 PBS_GRANT_SUSPENDED);
	/* Lifted: the next login is granted. */
	assert_int_equal(pbs_store_unsuspend(s, "alice"), 1);
	assert_int_equal(pbs_store_unsuspend(s, "alice"), 0);
	assert_int_equal(pbs_store_login(s, "192.0.2.8", &alice, 600, 0, 0, NULL, NULL, &at),
			 PBS_GRANT_WRITTEN);
	/* For a while: the key expires with it. */
	assert_int_equal(pbs_store_suspend(s, "alice", 3600, ""), 0);
	at = cmd_int(s, "TTL", "popbsmtp:suspended:alice", NULL);
	assert_true(at > 3590 && at <= 3600);
	pbs_store_free(s);
}

/* lease.max_users_per_address: the users who logged in at an address within the lease's
 * ttl are recorded with the grant; beyond the first N the grant is refused (the lease
 * there stays whose it was), a user already counted is granted again, and once the first
 * ones are older than the ttl there is room again. With 0 they are recorded, not bounded. */
static void test_shared(void **state)
{
	pbs_store *s = admin_store();
	pbs_lease alice, bob, carol, dave;
	char got[PBS_LEASE_VALUE_MAX];
	long long at;

	(void)state;
	make_lease(&alice, "alice", "imap");
	make_lease(&bob, "bob", "imap");
	make_lease(&carol, "carol", "pop3");
	assert_int_equal(pbs_store_login(s, "192.0.2.7", &alice, 1, 2, 0, NULL, NULL, &at),
			 PBS_GRANT_WRITTEN);
	assert_int_equal(pbs_store_login(s, "192.0.2.7", &bob, 1, 2, 0, NULL, NULL, &at),
			 PBS_GRANT_WRITTEN);
	assert_int_equal(pbs_store_login(s, "192.0.2.7", &carol, 1, 2, 0, NULL, NULL, &at),
			 PBS_GRANT_SHARED);
	assert_contains(pbs_store_error(s), "lease.max_users_per_address");
	get_value(s, KEY, got, sizeof got);
	assert_contains(got, "|imap|bob");
	assert_int_equal(cmd_int(s, "ZCARD", "popbsmtp:users:192.0.2.7", NULL), 2);
	assert_int_equal(pbs_store_login(s, "192.0.2.7", &alice, 1, 2, 0, NULL, NULL, &at),
			 PBS_GRANT_WRITTEN);
	/* Unbounded (0): carol is recorded too. Another address has its own count. */
	assert_int_equal(pbs_store_login(s, "192.0.2.7", &carol, 1, 0, 0, NULL, NULL, &at),
			 PBS_GRANT_WRITTEN);
	assert_int_equal(cmd_int(s, "ZCARD", "popbsmtp:users:192.0.2.7", NULL), 3);
	assert_int_equal(pbs_store_login(s, "192.0.2.8", &carol, 1, 1, 0, NULL, NULL, &at),
			 PBS_GRANT_WRITTEN);
	/* After the ttl the earlier logins no longer count. */
	usleep(1100 * 1000);
	make_lease(&dave, "dave", "imap");
	assert_int_equal(pbs_store_login(s, "192.0.2.7", &dave, 60, 1, 0, NULL, NULL, &at),
			 PBS_GRANT_WRITTEN);
	assert_int_equal(cmd_int(s, "ZCARD", "popbsmtp:users:192.0.2.7", NULL), 1);
	assert_true(cmd_int(s, "TTL", "popbsmtp:users:192.0.2.7", NULL) > 50);
	pbs_store_free(s);
}

/* revoke --user's removal: only a lease that names the user at that instant. */
static void test_remove_if_user(void **state)
{
	pbs_store *s = admin_store();
	pbs_lease alice, bob;

	(void)state;
	make_lease(&alice, "alice", "imap");
	make_lease(&bob, "bob|alice", "imap");
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &bob, 60), 0);
	assert_int_equal(pbs_store_remove_if_user(s, "192.0.2.7", "alice"), 0);
	assert_int_equal(cmd_int(s, "EXISTS", KEY, NULL), 1);
	assert_int_equal(pbs_store_grant(s, "192.0.2.7", &alice, 60), 0);
	assert_int_equal(pbs_store_remove_if_user(s, "192.0.2.7", "alice"), 1);
	assert_int_equal(cmd_int(s, "EXISTS", KEY, NULL), 0);
	assert_int_equal(pbs_store_remove_if_user(s, "192.0.2.7", "alice"), 0);
	pbs_store_free(s);
}

/* lease.sender = any: every lease's user passes. */
static const struct pbs_relay_sender any = {PBS_SENDER_ANY, ""};

/* Unix time in ms, what Redis TIME gives. */
static long long wall_ms(void)
{
	return (long long)time(NULL) * 1000;
}

/* Set the store's clock (what the relay script's hours are read from) to MS. */
static void set_clock(pbs_store *s, long long ms)
{
	char text[24];

	snprintf(text, sizeof text, "%lld", ms);
	freeReplyObject(cmd(s, "SET", "popbsmtp:clock", text, (const char *)NULL));
}

/* Relay limits: per user across leases, per lease across users, counted at the store's
 * clock hour; a recipient over a limit is not counted; the hour's edge resets both. */
static void test_relay_limits(void **state)
{
	const struct pbs_limits_config limits = {3, 4, 0, 86400};
	pbs_store *s = admin_store();
	struct pbs_relay_check c;
	char key[96];
	pbs_lease alice;
	long long hour;
	redisReply *r;
	int i;

	(void)state;
	/* The last ms of an hour two hours from now: the store's time is the clock's while
	 * Redis TIME is behind it. */
	hour = (wall_ms() / 3600000 + 2) * 3600000;
	make_lease(&alice, "alice", "imap");
	login(s, &alice);
	set_clock(s, hour - 1);
	for (i = 1; i <= 3; i++) {
		assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_LIVE);
		assert_string_equal(c.lease.user, "alice");
		assert_int_equal(c.count, i);
	}
	/* The fourth: alice's hour is full, whichever of her leases she uses. */
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_OVER_LIMIT);
	assert_string_equal(c.limit, "user-limit");
	assert_int_equal(c.count, 3);
	assert_false(c.suspended_now);
	freeReplyObject(cmd(s, "SET", "popbsmtp:lease:192.0.2.8", "1|1|imap|alice", "EX", "600",
			    (const char *)NULL));
	assert_int_equal(pbs_store_relay(s, "192.0.2.8", &limits, &any, &c), PBS_LEASE_OVER_LIMIT);
	/* Refused recipients are not counted; the counter goes with its hour. */
	snprintf(key, sizeof key, "popbsmtp:limit:user:%lld:alice", hour / 3600000 - 1);
	r = cmd(s, "GET", key, (const char *)NULL);
	assert_string_equal(r->str, "3");
	freeReplyObject(r);
	assert_true(cmd_int(s, "TTL", key, NULL) > 7000);
	/* The address now bob's: his first relay there is the lease's fourth, its last. */
	freeReplyObject(cmd(s, "SET", "popbsmtp:lease:192.0.2.7", "1|1|imap|bob", "EX", "600",
			    (const char *)NULL));
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_LIVE);
	assert_string_equal(c.lease.user, "bob");
	assert_int_equal(c.count, 1);
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_OVER_LIMIT);
	assert_string_equal(c.limit, "lease-limit");
	assert_int_equal(c.count, 4);
	/* The first ms of the next hour starts afresh, for users and leases. */
	set_clock(s, hour);
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_LIVE);
	assert_int_equal(c.count, 1);
	assert_int_equal(pbs_store_relay(s, "192.0.2.8", &limits, &any, &c), PBS_LEASE_LIVE);
	assert_string_equal(c.lease.user, "alice");
	assert_int_equal(c.count, 1);
	pbs_store_free(s);
}

/* What the relay script makes of odd store content: no lease, a value that is none, a
 * counter that is no number (over: when in doubt, no relay), a suspended user. */
static void test_relay_odd_content(void **state)
{
	const struct pbs_limits_config limits = {10, 0, 0, 86400};
	pbs_store *s = admin_store();
	struct pbs_relay_check c;
	char key[96];
	long long hour;

	(void)state;
	hour = (wall_ms() / 3600000 + 2) * 3600000;
	set_clock(s, hour);
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_NONE);
	assert_string_equal(pbs_store_error(s), "");
	freeReplyObject(cmd(s, "SET", "popbsmtp:lease:192.0.2.7", "2|x", (const char *)NULL));
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_NONE);
	assert_non_null(strstr(pbs_store_error(s), "holds no valid lease"));
	cmd_int(s, "DEL", "popbsmtp:lease:192.0.2.7", NULL);
	freeReplyObject(cmd(s, "HSET", "popbsmtp:lease:192.0.2.7", "a", "b", (const char *)NULL));
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_NONE);
	cmd_int(s, "DEL", "popbsmtp:lease:192.0.2.7", NULL);
	freeReplyObject(cmd(s, "SET", "popbsmtp:lease:192.0.2.7", "1|1|imap|a:b@x", "EX", "60",
			    (const char *)NULL));
	snprintf(key, sizeof key, "popbsmtp:limit:user:%lld:a:b@x", hour / 3600000);
	freeReplyObject(cmd(s, "SET", key, "many", (const char *)NULL));
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_OVER_LIMIT);
	freeReplyObject(cmd(s, "SET", key, "2", (const char *)NULL));
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_LIVE);
	assert_int_equal(c.count, 3);
	/* A suspension, any value, stops the user's every lease. */
	freeReplyObject(cmd(s, "SET", "popbsmtp:suspended:a:b@x", "x", (const char *)NULL));
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_SUSPENDED);
	assert_string_equal(c.lease.user, "a:b@x");
	pbs_store_free(s);
}

/* lease.sender with the limits on: a lease whose user MAIL FROM does not agree with is
 * LIVE (pbs_policy_decide refuses it) but nothing is counted, so that a neighbour refused
 * for the sender cannot use up, or get suspended, the user's hour. */
static void test_relay_sender(void **state)
{
	const struct pbs_limits_config limits = {2, 0, 1, 600};
	const struct pbs_relay_sender erin = {PBS_SENDER_ADDRESS, "erin@client.example"},
				      mallory = {PBS_SENDER_ADDRESS, "mallory@client.example"},
				      unplain = {PBS_SENDER_ADDRESS, ""},
				      domain = {PBS_SENDER_DOMAIN, "client.example"},
				      other = {PBS_SENDER_DOMAIN, "evil.example"};
	pbs_store *s = admin_store();
	struct pbs_relay_check c;
	int i;

	(void)state;
	freeReplyObject(cmd(s, "SET", "popbsmtp:lease:192.0.2.7", "1|1|imap|Erin@Client.Example",
			    "EX", "600", (const char *)NULL));
	for (i = 0; i < 5; i++) {
		assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &mallory, &c),
				 PBS_LEASE_LIVE);
		assert_int_equal(c.count, 0);
		assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &unplain, &c),
				 PBS_LEASE_LIVE);
		assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &other, &c),
				 PBS_LEASE_LIVE);
		assert_int_equal(c.count, 0);
	}
	/* Nothing counted, nobody suspended: erin's own two recipients pass, counted. */
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &erin, &c), PBS_LEASE_LIVE);
	assert_int_equal(c.count, 1);
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &domain, &c), PBS_LEASE_LIVE);
	assert_int_equal(c.count, 2);
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &erin, &c),
			 PBS_LEASE_OVER_LIMIT);
	assert_true(c.suspended_now);
	pbs_store_free(s);
}

/* limits.suspend_after: the K-th refusal by a limit in a store day suspends the user,
 * once, for suspend_for. */
static void test_relay_suspends(void **state)
{
	const struct pbs_limits_config limits = {1, 0, 2, 600};
	pbs_store *s = admin_store();
	struct pbs_relay_check c;
	pbs_lease alice;
	long long since, ttl;
	char reason[PBS_REASON_MAX + 1];
	redisReply *r;

	(void)state;
	make_lease(&alice, "alice", "imap");
	login(s, &alice);
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_LIVE);
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_OVER_LIMIT);
	assert_false(c.suspended_now);
	assert_int_equal(cmd_int(s, "EXISTS", "popbsmtp:suspended:alice", NULL), 0);
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_OVER_LIMIT);
	assert_true(c.suspended_now);
	ttl = cmd_int(s, "TTL", "popbsmtp:suspended:alice", NULL);
	assert_true(ttl > 590 && ttl <= 600);
	r = cmd(s, "GET", "popbsmtp:suspended:alice", (const char *)NULL);
	assert_int_equal(pbs_lease_suspension_decode(r->str, r->len, &since, reason), 0);
	assert_string_equal(reason, "user-limit: 2 refusals by a relay limit in a day");
	freeReplyObject(r);
	/* From now on her leases relay nothing, and her logins are refused. */
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_SUSPENDED);
	assert_int_equal(pbs_store_login(s, "192.0.2.9", &alice, 600, 0, 0, NULL, NULL, &since),
			 PBS_GRANT_SUSPENDED);
	/* The refusals of a suspended user's lease count no more: an administrator's
	 * suspension is never replaced by a shorter one. */
	assert_int_equal(pbs_store_suspend(s, "alice", 0, "ticket 7"), 0);
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_SUSPENDED);
	assert_int_equal(cmd_int(s, "TTL", "popbsmtp:suspended:alice", NULL), -1);
	pbs_store_free(s);
}

/* Redis unreachable: a login, a refresh and a revoke fail, quickly, with the reason. */
static void test_refresh_refused(void **state)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_DEAD_PORT"), 200);
	pbs_store *s = open_store(&c);
	long long at;
	bool removed;
	pbs_lease l;

	(void)state;
	make_lease(&l, "alice", "imap");
	assert_int_equal(pbs_store_refresh(s, "192.0.2.7", &l, 60, 0, true), PBS_REFRESH_ERROR);
	assert_contains(pbs_store_error(s), "Connection refused");
	assert_int_equal(pbs_store_login(s, "192.0.2.7", &l, 60, 0, 0, NULL, NULL, &at),
			 PBS_GRANT_ERROR);
	assert_contains(pbs_store_error(s), "Connection refused");
	assert_int_equal(pbs_store_revoke(s, NULL, "alice", 60, &removed), -1);
	assert_contains(pbs_store_error(s), "Connection refused");
	pbs_store_free(s);
}

/* Each suspend_after refusals by the user limit suspend again (the count starts afresh at
 * each suspension): a suspension that ended or was lifted is not the day's last. Refusals
 * by the lease limit, which the address's other users may have filled, suspend nobody. */
static void test_relay_suspends_again(void **state)
{
	const struct pbs_limits_config limits = {1, 0, 2, 600};
	const struct pbs_limits_config lease_only = {100, 1, 1, 600};
	pbs_store *s = admin_store();
	struct pbs_relay_check c;
	pbs_lease alice;
	int round;

	(void)state;
	make_lease(&alice, "alice", "imap");
	login(s, &alice);
	set_clock(s, (wall_ms() / 3600000 + 2) * 3600000);
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_LIVE);
	for (round = 0; round < 2; round++) {
		assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c),
				 PBS_LEASE_OVER_LIMIT);
		assert_false(c.suspended_now);
		assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c),
				 PBS_LEASE_OVER_LIMIT);
		assert_true(c.suspended_now);
		assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c),
				 PBS_LEASE_SUSPENDED);
		/* It ends (or is lifted): the next suspend_after refusals suspend again. */
		assert_int_equal(cmd_int(s, "DEL", "popbsmtp:suspended:alice", NULL), 1);
	}
	/* bob fills the lease limit of 192.0.2.8, then the address is alice's. */
	freeReplyObject(cmd(s, "SET", "popbsmtp:lease:192.0.2.8", "1|1|imap|bob", "EX", "600",
			    (const char *)NULL));
	assert_int_equal(pbs_store_relay(s, "192.0.2.8", &lease_only, &any, &c), PBS_LEASE_LIVE);
	freeReplyObject(cmd(s, "SET", "popbsmtp:lease:192.0.2.8", "1|1|imap|alice", "EX", "600",
			    (const char *)NULL));
	assert_int_equal(pbs_store_relay(s, "192.0.2.8", &lease_only, &any, &c),
			 PBS_LEASE_OVER_LIMIT);
	assert_string_equal(c.limit, "lease-limit");
	assert_false(c.suspended_now);
	assert_int_equal(pbs_store_relay(s, "192.0.2.8", &lease_only, &any, &c),
			 PBS_LEASE_OVER_LIMIT);
	assert_int_equal(cmd_int(s, "EXISTS", "popbsmtp:suspended:alice", NULL), 0);
	pbs_store_free(s);
}

/* A counter is a count only when it is digits: anything else another writer left there
 * ("nan", a negative, an exponent, spaces, hex) is over, and nothing is counted, neither
 * that counter nor the other. */
static void test_relay_odd_counters(void **state)
{
	static const char *const odd[] = {"nan", "-100", "1e3", " 5", "5 ", "0x10", "inf", ""};
	const struct pbs_limits_config limits = {1000, 1000, 0, 86400};
	pbs_store *s = admin_store();
	struct pbs_relay_check c;
	char ukey[96], lkey[96];
	long long hour;
	redisReply *r;
	size_t i;
	int which;

	(void)state;
	hour = (wall_ms() / 3600000 + 2) * 3600000;
	set_clock(s, hour);
	freeReplyObject(cmd(s, "SET", KEY, "1|1|imap|alice", "EX", "600", (const char *)NULL));
	snprintf(ukey, sizeof ukey, "popbsmtp:limit:user:%lld:alice", hour / 3600000);
	snprintf(lkey, sizeof lkey, "popbsmtp:limit:lease:%lld:192.0.2.7", hour / 3600000);
	for (which = 0; which < 2; which++) {
		const char *bad = which == 0 ? ukey : lkey, *other = which == 0 ? lkey : ukey;

		for (i = 0; i < sizeof odd / sizeof odd[0]; i++) {
			freeReplyObject(cmd(s, "SET", bad, odd[i], (const char *)NULL));
			freeReplyObject(cmd(s, "SET", other, "7", (const char *)NULL));
			assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c),
					 PBS_LEASE_OVER_LIMIT);
			r = cmd(s, "MGET", bad, other, (const char *)NULL);
			assert_string_equal(r->element[0]->str, odd[i]);
			assert_string_equal(r->element[1]->str, "7");
			freeReplyObject(r);
		}
	}
	pbs_store_free(s);
}

/* One person, whatever case a login spelt the name in (a password database that ignores
 * case): one suspension, one hourly count, one revoke --user. */
static void test_user_case(void **state)
{
	const struct pbs_limits_config limits = {2, 0, 0, 86400};
	pbs_store *s = admin_store();
	struct pbs_relay_check c;
	pbs_lease shouting;
	long long at;
	bool removed;

	(void)state;
	set_clock(s, (wall_ms() / 3600000 + 2) * 3600000);
	assert_true(pbs_lease_same_user("Alice@Example.ORG", "alice@example.org"));
	freeReplyObject(cmd(s, "SET", KEY, "1|1|imap|ALICE@Example.ORG", "EX", "600",
			    (const char *)NULL));
	assert_int_equal(pbs_store_suspend(s, "alice@example.org", 0, "ticket 9"), 0);
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_SUSPENDED);
	make_lease(&shouting, "ALICE@example.org", "imap");
	assert_int_equal(pbs_store_login(s, "192.0.2.9", &shouting, 600, 0, 0, NULL, NULL, &at),
			 PBS_GRANT_SUSPENDED);
	assert_int_equal(pbs_store_unsuspend(s, "Alice@example.org"), 1);
	assert_int_equal(cmd_int(s, "EXISTS", "popbsmtp:suspended:alice@example.org", NULL), 0);
	/* Two spellings share the hour's count. */
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_LIVE);
	freeReplyObject(cmd(s, "SET", KEY, "1|1|imap|alice@example.org", "EX", "600",
			    (const char *)NULL));
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_LIVE);
	assert_int_equal(c.count, 2);
	freeReplyObject(cmd(s, "SET", KEY, "1|1|imap|aLiCe@example.org", "EX", "600",
			    (const char *)NULL));
	assert_int_equal(pbs_store_relay(s, "192.0.2.7", &limits, &any, &c), PBS_LEASE_OVER_LIMIT);
	/* revoke --user: the record and the removal fold the name too. */
	assert_int_equal(pbs_store_revoke(s, NULL, "ALICE@EXAMPLE.ORG", 600, &removed), 0);
	assert_int_equal(cmd_int(s, "EXISTS", "popbsmtp:revoked-user:alice@example.org", NULL), 1);
	assert_int_equal(pbs_store_remove_if_user(s, "192.0.2.7", "Alice@Example.org"), 1);
	assert_int_equal(cmd_int(s, "EXISTS", KEY, NULL), 0);
	pbs_store_free(s);
}

/* How often Redis ran COMMAND (INFO commandstats: "cmdstat_eval:calls=N,…"), 0 if never. */
static long long calls_of(pbs_store *s, const char *command)
{
	redisReply *r = cmd(s, "INFO", "commandstats", (const char *)NULL);
	char field[48];
	const char *at;
	long long n = 0;

	snprintf(field, sizeof field, "\ncmdstat_%s:calls=", command);
	if ((at = strstr(r->str, field)) != NULL)
		n = atoll(at + strlen(field));
	freeReplyObject(r);
	return n;
}

static char evalsha_user[] = "gate";
static char evalsha_password[] = "gate-pw";

/* A store as the ACL user "gate" with RIGHTS (after the keys every gate needs). */
static pbs_store *gate_store(pbs_store *admin, const char *rights)
{
	struct pbs_redis_config c = make_cfg(env_port("PBS_REDIS_PORT"), 5000);
	const char *argv[32] = {"ACL", "SETUSER", "gate", "reset", "on", ">gate-pw", "~popbsmtp:*"};
	char copy[256], *word, *save = NULL;
	int argc = 7;
	redisReply *r;

	snprintf(copy, sizeof copy, "%s", rights);
	for (word = strtok_r(copy, " ", &save); word != NULL && argc < 32;
	     word = strtok_r(NULL, " ", &save))
		argv[argc++] = word;
	r = pbs_store_command(admin, argc, argv, NULL);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STATUS);
	freeReplyObject(r);
	c.username = evalsha_user;
	c.password = evalsha_password;
	return open_store(&c);
}

/* Scripts go by name (EVALSHA), whole (EVAL) only when the server does not know the name
 * or the ACL refuses EVALSHA, and never run twice: the relay counter moves by exactly one
 * per recipient on every path. The names are Redis' own (SCRIPT LOAD). */
static void test_scripts_by_name(void **state)
{
	const char *const scripts[] = {pbs_lease_script_clock,	 pbs_lease_script_grant,
				       pbs_lease_script_refresh, pbs_lease_script_revoke,
				       pbs_lease_script_remove_if_user, pbs_lease_script_suspend,
				       pbs_lease_script_relay};
	const struct pbs_limits_config limits = {1000, 0, 0, 86400};
	pbs_store *admin = admin_store(), *gate;
	struct pbs_relay_check c;
	char sha[PBS_SHA1_HEX_MAX];
	pbs_lease alice;
	long long eval0;
	redisReply *r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof scripts / sizeof scripts[0]; i++) {
		r = cmd(admin, "SCRIPT", "LOAD", scripts[i], (const char *)NULL);
		pbs_sha1_hex(scripts[i], strlen(scripts[i]), sha);
		assert_string_equal(r->str, sha);
		freeReplyObject(r);
	}
	make_lease(&alice, "alice", "imap");
	login(admin, &alice);
	set_clock(admin, (wall_ms() / 3600000 + 2) * 3600000); /* one hour throughout */
	freeReplyObject(cmd(admin, "SCRIPT", "FLUSH", (const char *)NULL));
	/* The docs' rights: the first relay teaches the server the script, the rest go by name. */
	gate = gate_store(admin, "+eval +evalsha +time +get +exists +incr +expire");
	eval0 = calls_of(admin, "eval");
	for (i = 1; i <= 3; i++) {
		assert_int_equal(pbs_store_relay(gate, "192.0.2.7", &limits, &any, &c), PBS_LEASE_LIVE);
		assert_int_equal(c.count, (long long)i);
	}
	assert_int_equal(calls_of(admin, "eval") - eval0, 1);
	/* Forgotten in between (a restart, a failover): whole once more, counted once. */
	freeReplyObject(cmd(admin, "SCRIPT", "FLUSH", (const char *)NULL));
	assert_int_equal(pbs_store_relay(gate, "192.0.2.7", &limits, &any, &c), PBS_LEASE_LIVE);
	assert_int_equal(c.count, 4);
	assert_int_equal(calls_of(admin, "eval") - eval0, 2);
	pbs_store_free(gate);
	/* An ACL line from before +evalsha: every script whole, each counted once. */
	gate = gate_store(admin, "+eval +time +get +exists +incr +expire");
	for (i = 5; i <= 7; i++) {
		assert_int_equal(pbs_store_relay(gate, "192.0.2.7", &limits, &any, &c), PBS_LEASE_LIVE);
		assert_int_equal(c.count, (long long)i);
	}
	assert_int_equal(calls_of(admin, "eval") - eval0, 5);
	pbs_store_free(gate);
	/* NOPERM from inside the script (no +incr) is the script's failure: not run again. */
	gate = gate_store(admin, "+eval +evalsha +time +get +exists +expire");
	assert_int_equal(pbs_store_relay(gate, "192.0.2.7", &limits, &any, &c),
			 PBS_LEASE_STORE_ERROR);
	assert_contains(pbs_store_error(gate), "relay refused");
	assert_int_equal(calls_of(admin, "eval") - eval0, 5);
	pbs_store_free(gate);
	assert_int_equal(pbs_store_relay(admin, "192.0.2.7", &limits, &any, &c), PBS_LEASE_LIVE);
	assert_int_equal(c.count, 8);
	/* Neither EVALSHA nor EVAL: refused, as before (fail closed). */
	gate = gate_store(admin, "+time +get +exists +incr +expire");
	assert_int_equal(pbs_store_relay(gate, "192.0.2.7", &limits, &any, &c),
			 PBS_LEASE_STORE_ERROR);
	assert_contains(pbs_store_error(gate), "NOPERM");
	pbs_store_free(gate);
	freeReplyObject(cmd(admin, "ACL", "DELUSER", "gate", (const char *)NULL));
	pbs_store_free(admin);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_grant_then_lookup, flush_all),
	    cmocka_unit_test_setup(test_ttls, flush_all),
	    cmocka_unit_test_setup(test_grant_writes_one_key, flush_all),
	    cmocka_unit_test_setup(test_grant_replaces, flush_all),
	    cmocka_unit_test_setup(test_unknown_subject, flush_all),
	    cmocka_unit_test_setup(test_garbage_value, flush_all),
	    cmocka_unit_test_setup(test_awkward_user, flush_all),
	    cmocka_unit_test_setup(test_prefix, flush_all),
	    cmocka_unit_test_setup(test_database, flush_all),
	    cmocka_unit_test_setup(test_database_out_of_range, flush_all),
	    cmocka_unit_test_setup(test_unix_socket, flush_all),
	    cmocka_unit_test(test_auth_right_password),
	    cmocka_unit_test(test_auth_wrong_password),
	    cmocka_unit_test(test_connection_refused),
	    cmocka_unit_test(test_blackhole),
	    cmocka_unit_test_setup(test_bound, flush_all),
	    cmocka_unit_test_setup(test_reconnect_after_kill, flush_all),
	    cmocka_unit_test_setup(test_server_stall, flush_all),
	    cmocka_unit_test(test_command_error_reply),
	    cmocka_unit_test_setup(test_readonly_replica, flush_all),
	    cmocka_unit_test(test_socket_close_on_exec),
	    cmocka_unit_test_setup(test_refresh, flush_all),
	    cmocka_unit_test_setup(test_refresh_after_revoke, flush_all),
	    cmocka_unit_test_setup(test_refresh_bad_records, flush_all),
	    cmocka_unit_test_setup(test_login_fenced, flush_all),
	    cmocka_unit_test_setup(test_remove_if_user, flush_all),
	    cmocka_unit_test_setup(test_suspend, flush_all),
	    cmocka_unit_test_setup(test_shared, flush_all),
	    cmocka_unit_test(test_refresh_refused),
	    cmocka_unit_test_setup(test_relay_limits, flush_all),
	    cmocka_unit_test_setup(test_relay_odd_content, flush_all),
	    cmocka_unit_test_setup(test_relay_suspends, flush_all),
	    cmocka_unit_test_setup(test_relay_sender, flush_all),
	    cmocka_unit_test_setup(test_scripts_by_name, flush_all),
	    cmocka_unit_test_setup(test_relay_suspends_again, flush_all),
	    cmocka_unit_test_setup(test_relay_odd_counters, flush_all),
	    cmocka_unit_test_setup(test_user_case, flush_all),
	};

	/* As in every popbsmtp program: a write to a dropped connection is an error, not death. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
