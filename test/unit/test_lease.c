/*
 * test_lease.c — the lease format as stored in Redis: which subject covers a client,
 * the key name, the "1|<granted>|<service>|<user>" value, and which users and service
 * names may hold a lease. Values read back from Redis are untrusted, so decode is
 * tested mostly on what it must refuse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "popbsmtp/lease.h"

#include "table.h"

/* A string of N copies of C (caller frees). */
static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

struct subject_row {
	const char *client;
	unsigned v4, v6;
	const char *subject;
};

static const struct subject_row subject_rows[] = {
    {"192.0.2.7", 32, 64, "192.0.2.7"},
    {"192.0.2.7", 24, 64, "192.0.2.0/24"},
    {"192.0.2.7", 31, 64, "192.0.2.6/31"},
    {"192.0.2.7", 0, 64, "0.0.0.0/0"},
    {"2001:db8:1:2:3:4:5:6", 32, 64, "2001:db8:1:2::/64"},
    {"2001:db8:1:2:3:4:5:6", 32, 128, "2001:db8:1:2:3:4:5:6"},
    {"2001:db8:1:2:3:4:5:6", 32, 48, "2001:db8:1::/48"},
    {"2001:db8:1:2ff:3:4:5:6", 32, 56, "2001:db8:1:200::/56"},
    {"2001:DB8::1", 32, 128, "2001:db8::1"},
    /* the IPv6 length does not apply to an IPv4 client and vice versa */
    {"192.0.2.7", 32, 0, "192.0.2.7"},
    {"2001:db8::1", 0, 128, "2001:db8::1"},
    /* an IPv4-mapped client is an IPv4 client */
    {"::ffff:192.0.2.7", 24, 64, "192.0.2.0/24"},
    {"::ffff:192.0.2.7", 32, 64, "192.0.2.7"},
};

static void test_subject_table(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof subject_rows / sizeof subject_rows[0]; i++) {
		const struct subject_row *r = &subject_rows[i];
		char out[PBS_ADDR_STRLEN];
		const char *got;
		pbs_addr a;

		assert_int_equal(pbs_addr_parse(r->client, &a), 0);
		got = pbs_lease_subject(&a, r->v4, r->v6, out);
		ROW_CHECK(got == out, "subject %s: does not return OUT", r->client);
		ROW_CHECK(strcmp(out, r->subject) == 0,
		          "subject %s (v4 /%u, v6 /%u): got '%s', "
		          "expected '%s'",
		          r->client, r->v4, r->v6, out, r->subject);
	}
	table_done("subject");
}

/* Every subject is also a CIDR the rest of the code can parse back to the same network. */
static void test_subject_parses_as_cidr(void **state)
{
	static const char *const clients[] = {"192.0.2.7", "2001:db8:1:2:3:4:5:6", NULL};
	static const unsigned lengths[] = {0, 1, 8, 24, 31, 32, 48, 64, 127, 128};
	size_t i, j;

	(void)state;
	for (i = 0; clients[i] != NULL; i++) {
		for (j = 0; j < sizeof lengths / sizeof lengths[0]; j++) {
			char out[PBS_ADDR_STRLEN], again[PBS_ADDR_STRLEN];
			pbs_addr a;
			pbs_cidr c;

			assert_int_equal(pbs_addr_parse(clients[i], &a), 0);
			pbs_lease_subject(&a, lengths[j], lengths[j], out);
			ROW_CHECK(pbs_cidr_parse(out, &c) == 0, "subject '%s' is not a CIDR", out);
			ROW_CHECK(pbs_cidr_contains(&c, &a), "subject '%s' does not contain %s",
			          out, clients[i]);
			pbs_lease_subject(&c.net, c.bits, c.bits, again);
			ROW_CHECK(strcmp(out, again) == 0, "subject '%s' reprints as '%s'", out,
			          again);
		}
	}
	table_done("subject as CIDR");
}

static void test_keys(void **state)
{
	char key[PBS_KEY_MAX];
	char *subject, *prefix;

	(void)state;
	assert_int_equal(pbs_lease_key("popbsmtp:", "192.0.2.7", key), 0);
	assert_string_equal(key, "popbsmtp:lease:192.0.2.7");
	assert_int_equal(pbs_lease_key("popbsmtp:", "2001:db8:1:2::/64", key), 0);
	assert_string_equal(key, "popbsmtp:lease:2001:db8:1:2::/64");
	assert_int_equal(pbs_lease_key("", "192.0.2.7", key), 0);
	assert_string_equal(key, "lease:192.0.2.7");
	assert_int_equal(pbs_lease_key("site2/", "192.0.2.7", key), 0);
	assert_string_equal(key, "site2/lease:192.0.2.7");

	/* The longest configurable prefix with the longest subject fits. */
	prefix = repeat('p', PBS_PREFIX_MAX);
	subject = repeat('s', PBS_ADDR_STRLEN - 1);
	assert_int_equal(pbs_lease_key(prefix, subject, key), 0);
	assert_int_equal(strlen(key), PBS_PREFIX_MAX + strlen("lease:") + PBS_ADDR_STRLEN - 1);
	free(subject);
	free(prefix);

	/* Exactly PBS_KEY_MAX - 1 characters fit; one more is refused, not truncated. */
	subject = repeat('s', PBS_KEY_MAX - 1 - strlen("popbsmtp:lease:"));
	assert_int_equal(pbs_lease_key("popbsmtp:", subject, key), 0);
	assert_int_equal(strlen(key), PBS_KEY_MAX - 1);
	free(subject);
	subject = repeat('s', PBS_KEY_MAX - strlen("popbsmtp:lease:"));
	assert_int_equal(pbs_lease_key("popbsmtp:", subject, key), -1);
	free(subject);
	prefix = repeat('p', 20000);
	assert_int_equal(pbs_lease_key(prefix, "192.0.2.7", key), -1);
	free(prefix);
}

static void test_encode(void **state)
{
	char value[PBS_LEASE_VALUE_MAX];
	pbs_lease lease;

	(void)state;
	assert_null(pbs_lease_make(&lease, "alice", "imap", 1700000000LL));
	assert_int_equal(pbs_lease_encode(&lease, value), strlen("1|1700000000|imap|alice"));
	assert_string_equal(value, "1|1700000000|imap|alice");

	assert_null(pbs_lease_make(&lease, "bob@example.com", "", 0));
	assert_int_equal(pbs_lease_encode(&lease, value), strlen("1|0||bob@example.com"));
	assert_string_equal(value, "1|0||bob@example.com");
}

/* Encode then decode gives back the same lease, for awkward but valid users too. */
static void test_round_trip(void **state)
{
	static const struct {
		const char *user, *service;
		long long granted;
	} rows[] = {
	    {"alice", "imap", 1700000000LL},
	    {"alice@example.com", "pop3", 1},
	    {"a|b c", "imap", 1700000000LL},
	    {"|", "ctl", 42},
	    {"1|2|imap|x", "submission", 42},
	    {"  spaced  out  ", "imap", 42},
	    {"j\xc3\xb6rg@example.org", "imap", 42}, /* UTF-8 */
	    {"bob", "", 0},
	    {"carol", "abcdefghijklmnopqrstuvwxyz012345", 4102444800LL}, /* 32-char service */
	    {"dave", "imap", PBS_LEASE_GRANTED_MAX}, /* the last second of year 9999 */
	};
	char value[PBS_LEASE_VALUE_MAX];
	char *longest = repeat('x', PBS_USER_MAX);
	pbs_lease in, out;
	size_t i, len;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		assert_null(pbs_lease_make(&in, rows[i].user, rows[i].service, rows[i].granted));
		len = pbs_lease_encode(&in, value);
		assert_int_equal(len, strlen(value));
		memset(&out, 0x5a, sizeof out);
		ROW_CHECK(pbs_lease_decode(value, len, &out) == 0, "decode '%s' failed", value);
		ROW_CHECK(strcmp(out.user, rows[i].user) == 0, "user '%s' came back as '%s'",
		          rows[i].user, out.user);
		ROW_CHECK(strcmp(out.service, rows[i].service) == 0,
		          "service '%s' came back as '%s'", rows[i].service, out.service);
		ROW_CHECK(out.granted == rows[i].granted, "time %lld came back as %lld",
		          rows[i].granted, out.granted);
	}
	/* the longest user and service together still fit the value buffer, even with the
	 * longest time (which decode then refuses: past year 9999) */
	assert_null(pbs_lease_make(&in, longest, "abcdefghijklmnopqrstuvwxyz012345",
	                           9223372036854775807LL));
	len = pbs_lease_encode(&in, value);
	assert_true(len < PBS_LEASE_VALUE_MAX);
	assert_int_equal(pbs_lease_decode(value, len, &out), -1);
	in.granted = PBS_LEASE_GRANTED_MAX;
	len = pbs_lease_encode(&in, value);
	assert_int_equal(pbs_lease_decode(value, len, &out), 0);
	assert_string_equal(out.user, longest);
	free(longest);
	table_done("round trip");
}

/* A value given with its length: LEN counts embedded NULs. */
struct bad_value {
	const char *why;
	const char *bytes;
	size_t len; /* 0: strlen(bytes) */
};

#define NUL_VALUE(why, lit)                                                                        \
	{                                                                                          \
		why, lit, sizeof lit - 1                                                           \
	}

static const struct bad_value bad_values[] = {
    {"empty", "", 0},
    {"version only", "1", 0},
    {"wrong version 2", "2|1700000000|imap|alice", 0},
    {"wrong version 0", "0|1700000000|imap|alice", 0},
    {"version 11", "11|1700000000|imap|alice", 0},
    {"empty version", "|1700000000|imap|alice", 0},
    {"version not a number", "v1|1700000000|imap|alice", 0},
    {"missing service and user", "1|1700000000", 0},
    {"missing user field", "1|1700000000|imap", 0},
    {"missing time", "1||imap|alice", 0},
    {"non-numeric time", "1|abc|imap|alice", 0},
    {"time with trailing junk", "1|17000x|imap|alice", 0},
    {"negative time", "1|-5|imap|alice", 0},
    {"time with space", "1| 5|imap|alice", 0},
    {"time overflows", "1|99999999999999999999|imap|alice", 0},
    {"time far too long", "1|000000000000000000000000001|imap|alice", 0},
    /* A grant time past 9999-12-31T23:59:59Z is no time any writer meant (here: the
     * nanoseconds of `date +%s%N`) and none a reader could show. */
    {"time in nanoseconds", "1|1765000000123456789|webmail|mallory", 0},
    {"time in milliseconds", "1|1765000000123|webmail|mallory", 0},
    {"time a second past year 9999", "1|253402300800|imap|alice", 0},
    {"time LLONG_MAX", "1|9223372036854775807|imap|alice", 0},
    {"service upper case", "1|1700000000|IMAP|alice", 0},
    {"service with space", "1|1700000000|im ap|alice", 0},
    {"service with !", "1|1700000000|imap!|alice", 0},
    {"service 33 bytes", "1|1700000000|abcdefghijklmnopqrstuvwxyz0123456|alice", 0},
    {"empty user", "1|1700000000|imap|", 0},
    {"user with newline", "1|1700000000|imap|alice\nbob", 0},
    {"user with trailing newline", "1|1700000000|imap|alice\n", 0},
    {"user with CR", "1|1700000000|imap|alice\r", 0},
    {"user with tab", "1|1700000000|imap|a\tb", 0},
    {"user with DEL", "1|1700000000|imap|alice\x7f", 0},
    {"user with 0x01",
     "1|1700000000|imap|\x01"
     "alice",
     0},
    NUL_VALUE("NUL inside user", "1|1700000000|imap|al\0ice"),
    NUL_VALUE("NUL at end of user", "1|1700000000|imap|alice\0"),
    NUL_VALUE("NUL inside service", "1|1700000000|im\0ap|alice"),
    NUL_VALUE("NUL inside time", "1|17\0"
                                 "00000000|imap|alice"),
    NUL_VALUE("NUL after version", "1\0|1700000000|imap|alice"),
};

static void test_decode_rejects(void **state)
{
	size_t i;
	pbs_lease out;

	(void)state;
	for (i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
		const struct bad_value *b = &bad_values[i];
		size_t len = b->len ? b->len : strlen(b->bytes);
		int rc = pbs_lease_decode(b->bytes, len, &out);

		ROW_CHECK(rc == -1,
		          "decode accepted a bad value (%s): user '%s' service '%s' "
		          "time %lld",
		          b->why, out.user, out.service, out.granted);
	}
	table_done("decode rejects");
}

/* User names at and beyond the 256-byte limit, in a stored value. */
static void test_decode_user_length(void **state)
{
	char *user = repeat('u', PBS_USER_MAX + 1);
	char value[PBS_USER_MAX + 64];
	pbs_lease out;
	int n;

	(void)state;
	n = snprintf(value, sizeof value, "1|5|imap|%s", user);
	assert_int_equal(pbs_lease_decode(value, (size_t)n, &out), -1);
	user[PBS_USER_MAX] = '\0';
	n = snprintf(value, sizeof value, "1|5|imap|%s", user);
	assert_int_equal(pbs_lease_decode(value, (size_t)n, &out), 0);
	assert_string_equal(out.user, user);
	free(user);

	/* The grant time bounds: 0 and the last second of year 9999 are both times. */
	assert_int_equal(pbs_lease_decode("1|0|imap|alice", strlen("1|0|imap|alice"), &out), 0);
	assert_int_equal(out.granted, 0);
	assert_int_equal(pbs_lease_decode("1|253402300799|imap|alice", strlen("1|253402300799|imap|alice"), &out), 0);
	assert_int_equal(out.granted, PBS_LEASE_GRANTED_MAX);

	/* LEN, not the terminating NUL, bounds the value. */
	assert_int_equal(pbs_lease_decode("1|5|imap|alice", strlen("1|5|imap|al"), &out), 0);
	assert_string_equal(out.user, "al");
}

struct problem_row {
	const char *text;
	const char *problem; /* NULL: acceptable */
};

static void test_user_problem(void **state)
{
	static const struct problem_row rows[] = {
	    {"alice", NULL},
	    {"alice@example.com", NULL},
	    {"a|b c", NULL},
	    {"j\xc3\xb6rg", NULL},
	    {"", "empty user name"},
	    {"a\nb", "user name holds control characters"},
	    {"alice\r", "user name holds control characters"},
	    {"\tx", "user name holds control characters"},
	    {"a\x1b[31m", "user name holds control characters"},
	    {"alice\x7f", "user name holds control characters"},
	};
	char *s;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		const char *got = pbs_lease_user_problem(rows[i].text);

		if (rows[i].problem == NULL)
			ROW_CHECK(got == NULL, "user '%s' refused: %s", rows[i].text, got);
		else
			ROW_CHECK(got != NULL && strcmp(got, rows[i].problem) == 0,
			          "user '%s': got '%s', expected '%s'", rows[i].text,
			          got ? got : "(accepted)", rows[i].problem);
	}
	assert_string_equal(pbs_lease_user_problem(NULL), "empty user name");
	s = repeat('a', 256);
	assert_null(pbs_lease_user_problem(s));
	free(s);
	s = repeat('a', 257);
	assert_string_equal(pbs_lease_user_problem(s), "user name longer than 256 bytes");
	free(s);
	s = repeat('a', 20 * 1024);
	assert_string_equal(pbs_lease_user_problem(s), "user name longer than 256 bytes");
	free(s);
	table_done("user problem");
}

static void test_service_problem(void **state)
{
	static const struct problem_row rows[] = {
	    {"imap", NULL},
	    {"pop3", NULL},
	    {"ctl", NULL},
	    {"", NULL},
	    {"submission-2", NULL},
	    {"abcdefghijklmnopqrstuvwxyz012345", NULL},
	    {"abcdefghijklmnopqrstuvwxyz0123456", "service name longer than 32 bytes"},
	    {"IMAP", "service name may hold only a-z, 0-9 and '-'"},
	    {"im ap", "service name may hold only a-z, 0-9 and '-'"},
	    {"imap|x", "service name may hold only a-z, 0-9 and '-'"},
	    {"imap\n", "service name may hold only a-z, 0-9 and '-'"},
	    {"imap_s", "service name may hold only a-z, 0-9 and '-'"},
	    {"imap.s", "service name may hold only a-z, 0-9 and '-'"},
	    {"\xc3\xa9", "service name may hold only a-z, 0-9 and '-'"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		const char *got = pbs_lease_service_problem(rows[i].text);

		if (rows[i].problem == NULL)
			ROW_CHECK(got == NULL, "service '%s' refused: %s", rows[i].text, got);
		else
			ROW_CHECK(got != NULL && strcmp(got, rows[i].problem) == 0,
			          "service '%s': got '%s', expected '%s'", rows[i].text,
			          got ? got : "(accepted)", rows[i].problem);
	}
	table_done("service problem");
}

/* make() checks the user first, then the service, and fills nothing on refusal. */
static void test_make(void **state)
{
	pbs_lease lease;

	(void)state;
	assert_null(pbs_lease_make(&lease, "alice", "imap", 1700000000LL));
	assert_string_equal(lease.user, "alice");
	assert_string_equal(lease.service, "imap");
	assert_true(lease.granted == 1700000000LL);

	assert_string_equal(pbs_lease_make(&lease, "", "imap", 1), "empty user name");
	assert_string_equal(pbs_lease_make(&lease, "a\nb", "IMAP", 1),
	                    "user name holds control characters");
	assert_string_equal(pbs_lease_make(&lease, "bob", "IMAP", 1),
	                    "service name may hold only a-z, 0-9 and '-'");
	/* the refused calls left the earlier lease alone */
	assert_string_equal(lease.user, "alice");
	assert_true(lease.granted == 1700000000LL);
}

/* The revocation records: their keys, with the longest prefix and user, and refused
 * rather than truncated when too long. */
static void test_revoked_keys(void **state)
{
	char key[PBS_KEY_MAX];
	char *user, *prefix;

	(void)state;
	assert_int_equal(pbs_lease_revoked_key("popbsmtp:", "192.0.2.7", key), 0);
	assert_string_equal(key, "popbsmtp:revoked:192.0.2.7");
	assert_int_equal(pbs_lease_revoked_key("popbsmtp:", "2001:db8:1:2::/64", key), 0);
	assert_string_equal(key, "popbsmtp:revoked:2001:db8:1:2::/64");
	assert_int_equal(pbs_lease_revoked_user_key("popbsmtp:", "alice@example.org", key), 0);
	assert_string_equal(key, "popbsmtp:revoked-user:alice@example.org");
	/* A user name is taken as it is: ':' and '|' are just bytes of the key. */
	assert_int_equal(pbs_lease_revoked_user_key("", "bob|x:y", key), 0);
	assert_string_equal(key, "revoked-user:bob|x:y");
	assert_int_equal(pbs_lease_clock_key("popbsmtp:", key), 0);
	assert_string_equal(key, "popbsmtp:clock");

	prefix = repeat('p', PBS_PREFIX_MAX);
	user = repeat('u', PBS_USER_MAX);
	assert_int_equal(pbs_lease_revoked_user_key(prefix, user, key), 0);
	assert_int_equal(strlen(key), PBS_PREFIX_MAX + strlen("revoked-user:") + PBS_USER_MAX);
	free(user);
	user = repeat('u', PBS_KEY_MAX);
	assert_int_equal(pbs_lease_revoked_user_key(prefix, user, key), -1);
	assert_int_equal(pbs_lease_revoked_key(prefix, user, key), -1);
	free(user);
	free(prefix);
}

/* A suspension's key and value: "1|<since ms>|<reason>", the reason printable and short. */
static void test_suspension(void **state)
{
	static const char *const bad[] = {"", "1", "1|", "1|5", "2|5|x", "1|x|y", "1|-5|x",
					  "1|5|a\tb", "1|5|\x7f", NULL};
	char key[PBS_KEY_MAX], reason[PBS_REASON_MAX + 1], *long_reason;
	long long since = -1;
	size_t i;

	(void)state;
	assert_int_equal(pbs_lease_suspended_key("popbsmtp:", "alice@example.org", key), 0);
	assert_string_equal(key, "popbsmtp:suspended:alice@example.org");
	assert_int_equal(pbs_lease_suspension_decode("1|1714641243123|spam, #42", 25, &since,
						     reason), 0);
	assert_true(since == 1714641243123LL);
	assert_string_equal(reason, "spam, #42");
	assert_int_equal(pbs_lease_suspension_decode("1|5|", 4, &since, reason), 0);
	assert_string_equal(reason, "");
	for (i = 0; bad[i] != NULL; i++)
		if (pbs_lease_suspension_decode(bad[i], strlen(bad[i]), &since, reason) == 0)
			fail_msg("'%s' decoded as a suspension", bad[i]);
	assert_null(pbs_lease_reason_problem(""));
	assert_non_null(pbs_lease_reason_problem("a\nb"));
	long_reason = repeat('r', PBS_REASON_MAX);
	assert_null(pbs_lease_reason_problem(long_reason));
	free(long_reason);
	long_reason = repeat('r', PBS_REASON_MAX + 1);
	assert_string_equal(pbs_lease_reason_problem(long_reason), "reason longer than 200 bytes");
	free(long_reason);
}

/* One person's keys whatever case a login spelt the name in: ASCII letters folded (as Lua's
 * string.lower() in Redis), every other byte as it is; prefixes and subjects untouched. */
static void test_user_case(void **state)
{
	char key[PBS_KEY_MAX];

	(void)state;
	assert_true(pbs_lease_same_user("Alice@Example.ORG", "alice@example.org"));
	assert_true(pbs_lease_same_user("", ""));
	assert_false(pbs_lease_same_user("alice", "alicex"));
	assert_false(pbs_lease_same_user("alicex", "alice"));
	assert_false(pbs_lease_same_user("\xc3\x84nne", "\xc3\xa4nne")); /* Ä, ä: not ASCII */
	assert_false(pbs_lease_same_user("a[", "A{")); /* '[' is not a capital of '{' */
	assert_int_equal(pbs_lease_suspended_key("PBS:", "Alice@Example.ORG", key), 0);
	assert_string_equal(key, "PBS:suspended:alice@example.org");
	assert_int_equal(pbs_lease_revoked_user_key("PBS:", "BOB\xc3\x84", key), 0);
	assert_string_equal(key, "PBS:revoked-user:bob\xc3\x84");
	assert_int_equal(pbs_lease_limit_key("PBS:", "user", 7, "ALICE", key), 0);
	assert_string_equal(key, "PBS:limit:user:7:alice");
	assert_int_equal(pbs_lease_limit_key("PBS:", "lease", 7, "2001:DB8::/64", key), 0);
	assert_string_equal(key, "PBS:limit:lease:7:2001:DB8::/64");
}

/* Records outlive the leases they revoke: a day at least, twice the ttl when longer. */
static void test_revocation_ttl(void **state)
{
	(void)state;
	assert_int_equal(pbs_lease_revocation_ttl(1), 86400);
	assert_int_equal(pbs_lease_revocation_ttl(1800), 86400);
	assert_int_equal(pbs_lease_revocation_ttl(43200), 86400);
	assert_int_equal(pbs_lease_revocation_ttl(43201), 86402);
	assert_int_equal(pbs_lease_revocation_ttl(31 * 86400), 62 * 86400);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_subject_table),
	    cmocka_unit_test(test_subject_parses_as_cidr),
	    cmocka_unit_test(test_keys),
	    cmocka_unit_test(test_encode),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_decode_rejects),
	    cmocka_unit_test(test_decode_user_length),
	    cmocka_unit_test(test_user_problem),
	    cmocka_unit_test(test_service_problem),
	    cmocka_unit_test(test_make),
	    cmocka_unit_test(test_revoked_keys),
	    cmocka_unit_test(test_revocation_ttl),
	    cmocka_unit_test(test_suspension),
	    cmocka_unit_test(test_user_case),
	};

	return cmocka_run_group_tests_name("lease", tests, NULL, NULL);
}
