/*
 * test_text.c — formatting of values read from Redis (lib/text.c): times for any number
 * (none crashes, none out of range is shown as a time), JSON strings and Prometheus label
 * values for any bytes (always valid UTF-8, nothing unescaped that the format forbids).
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
#include "popbsmtp/text.h"
#include "popbsmtp/usage.h"

/* What FN(S) writes to a stream, as a string (free it). */
static char *written(void (*fn)(FILE *, const char *), const char *s)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	fn(f, s);
	fclose(f);
	return buf;
}

static void test_times(void **state)
{
	static const long long bad[] = {
	    -1, -86400, PBS_TEXT_TIME_LAST + 1, 1765000000123456789LL, LLONG_MAX, LLONG_MIN};
	char out[PBS_TEXT_TIME_MAX];
	size_t i;

	(void)state;
	assert_string_equal(pbs_text_time(0, out), "1970-01-01T00:00:00Z");
	assert_string_equal(pbs_text_time(1714566896, out), "2024-05-01T12:34:56Z");
	assert_string_equal(pbs_text_time(PBS_TEXT_TIME_LAST, out), "9999-12-31T23:59:59Z");
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_string_equal(pbs_text_time(bad[i], out), "?");
		assert_int_equal(pbs_text_utc("%Y%m%d", bad[i], out, sizeof out), -1);
	}
	/* A result that does not fit is refused, not cut. */
	assert_int_equal(pbs_text_utc("%Y-%m-%d", 0, out, 5), -1);
	assert_string_equal(out, "?");
	assert_int_equal(pbs_text_utc("%Y%m%d", 86400, out, sizeof out), 0);
	assert_string_equal(out, "19700102");
}

/* The trace header of a lease at the edges of what decodes: never a crash, a real date. */
static void test_trace_edges(void **state)
{
	char out[PBS_USAGE_TRACE_MAX];
	pbs_lease lease;

	(void)state;
	assert_int_equal(
	    pbs_lease_decode("1|253402300799|imap|x", strlen("1|253402300799|imap|x"), &lease), 0);
	assert_string_equal(pbs_usage_trace_value(&lease, "192.0.2.7", out),
	                    "user=x lease=192.0.2.7 service=imap granted=9999-12-31T23:59:59Z");
	/* Made by hand past the bound (decode would refuse it): still no crash. */
	lease.granted = LLONG_MAX;
	assert_string_equal(pbs_usage_trace_value(&lease, "192.0.2.7", out),
	                    "user=x lease=192.0.2.7 service=imap granted=?");
}

static void test_utf8(void **state)
{
	(void)state;
	assert_int_equal(pbs_text_utf8_len((const unsigned char *)"\xc3\xa9"), 2);
	assert_int_equal(pbs_text_utf8_len((const unsigned char *)"\xe2\x82\xac"), 3);
	assert_int_equal(pbs_text_utf8_len((const unsigned char *)"\xf0\x9f\x98\x80"), 4);
	assert_int_equal(pbs_text_utf8_len((const unsigned char *)"\xc0\xaf"), 0); /* overlong */
	assert_int_equal(pbs_text_utf8_len((const unsigned char *)"\xe0\x80\xaf"), 0);
	assert_int_equal(pbs_text_utf8_len((const unsigned char *)"\xed\xa0\x80"),
	                 0); /* surrogate */
	assert_int_equal(pbs_text_utf8_len((const unsigned char *)"\xf4\x90\x80\x80"), 0);
	assert_int_equal(pbs_text_utf8_len((const unsigned char *)"\xc3"), 0); /* cut short */
	assert_int_equal(pbs_text_utf8_len((const unsigned char *)"\xff"), 0);
}

static void test_label(void **state)
{
	static const struct {
		const char *in, *out;
	} rows[] = {
	    {"mx1", "\"mx1\""},
	    {"a\"b\\c\nd", "\"a\\\"b\\\\c\\nd\""},
	    {"caf\xc3\xa9", "\"caf\xc3\xa9\""},
	    {"bad\xff", "\"bad\xef\xbf\xbd\""},
	    {"cut\xc3", "\"cut\xef\xbf\xbd\""},
	    {"esc\x1b[1m\r", "\"esc\xef\xbf\xbd[1m\xef\xbf\xbd\""},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		char *got = written(pbs_text_label, rows[i].in);
		assert_string_equal(got, rows[i].out);
		free(got);
	}
}

static void test_json(void **state)
{
	char *got = written(pbs_text_json, "a\"\\\n\x01\xff\xc3\xa9");

	(void)state;
	assert_string_equal(got, "\"a\\\"\\\\\\u000a\\u0001\\u00ff\xc3\xa9\"");
	free(got);
}

static void test_row(void **state)
{
	char out[8];

	(void)state;
	assert_string_equal(pbs_text_row("a\x1b[b\x7f", out, sizeof out), "a?[b?");
	assert_string_equal(pbs_text_row("0123456789", out, sizeof out), "0123456");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_times), cmocka_unit_test(test_trace_edges),
	    cmocka_unit_test(test_utf8),  cmocka_unit_test(test_label),
	    cmocka_unit_test(test_json),  cmocka_unit_test(test_row),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
