/*
 * test_request.c — popbsmtp-policy's reader of Postfix policy requests. What arrives
 * on the policy socket is parsed byte by byte in whatever pieces read() returns, so
 * each table row is fed whole, byte by byte and in two halves, and must give the same
 * request. The rows are mostly what the parser must refuse without losing step.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

#include "table.h"

static struct pbs_request_parser parser;

/* Feed TEXT (LEN bytes) in pieces of STEP bytes (0: whole). Returns the number of
 * complete requests; the last one stays in parser.req. */
static int feed(const char *text, size_t len, size_t step)
{
	size_t off = 0, n;
	bool complete;
	int requests = 0;

	pbs_request_begin(&parser);
	while (off < len) {
		size_t piece = step == 0 || len - off < step ? len - off : step;

		n = pbs_request_feed(&parser, text + off, piece, &complete);
		off += n;
		if (complete) {
			requests++;
			if (off < len)
				pbs_request_begin(&parser);
		}
	}
	return requests;
}

#define BASE "request=smtpd_access_policy\nprotocol_state=RCPT\n"

struct row {
	const char *text;
	const char *problem; /* substring of the problem, or NULL when well-formed */
	const char *client;  /* expected client_address when well-formed */
};

static const struct row rows[] = {
    {BASE "client_address=192.0.2.7\ninstance=1a.2b.3c.0\n\n", NULL, "192.0.2.7"},
    {BASE "client_address=2001:db8::1\n\n", NULL, "2001:db8::1"},
    /* unknown attributes are ignored, as SMTPD_POLICY_README asks */
    {BASE "ccert_subject=x=y\nclient_address=192.0.2.7\nfoo=\n\n", NULL, "192.0.2.7"},
    /* an empty value is a value */
    {BASE "client_address=192.0.2.7\nsasl_username=\n\n", NULL, "192.0.2.7"},
    {BASE "client_address=192.0.2.7\nnonsense\n\n", "without '='", NULL},
    {BASE "=value\nclient_address=192.0.2.7\n\n", "without a name", NULL},
    {BASE "client_address=192.0.2.7\nclient_address=192.0.2.8\n\n", "given twice", NULL},
    {BASE "client_address=192.0.2.7\ninstance=0123456789012345678901234567890123456789"
          "012345678901234567890123456789\n\n", "instance too long", NULL},
    {BASE "client_address=192.0.2.7192.0.2.7192.0.2.7192.0.2.7192.0.2.7192.0.2.7192.0.2.7\n\n",
     "client_address too long", NULL},
    {"\n", "empty request", NULL},
    {BASE "client_address=192.0.2.7\nhelo_name=a\0b\n\n", "NUL", NULL},
};

static void check_row(const struct row *r, size_t len, size_t step)
{
	int n = feed(r->text, len, step);

	ROW_CHECK(n == 1, "step %zu: %d requests for '%s'", step, n, r->text);
	if (r->problem == NULL) {
		ROW_CHECK(parser.req.problem[0] == '\0', "step %zu: problem '%s' for '%s'", step,
			  parser.req.problem, r->text);
		ROW_CHECK(strcmp(parser.req.client_address, r->client) == 0,
			  "step %zu: client '%s' for '%s'", step, parser.req.client_address, r->text);
		ROW_CHECK(strcmp(parser.req.request, "smtpd_access_policy") == 0 &&
				  strcmp(parser.req.protocol_state, "RCPT") == 0,
			  "step %zu: request/state lost for '%s'", step, r->text);
	} else {
		ROW_CHECK(strstr(parser.req.problem, r->problem) != NULL,
			  "step %zu: problem '%s', want '%s', for '%s'", step, parser.req.problem,
			  r->problem, r->text);
	}
	ROW_CHECK(!pbs_request_partial(&parser) || n == 1, "partial after a whole request");
}

static void test_rows(void **state)
{
	size_t i, len;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		/* the NUL row's length is that of its literal */
		len = i == sizeof rows / sizeof rows[0] - 1
			  ? sizeof(BASE "client_address=192.0.2.7\nhelo_name=a\0b\n\n") - 1
			  : strlen(rows[i].text);
		check_row(&rows[i], len, 0);
		check_row(&rows[i], len, 1);
		check_row(&rows[i], len, len / 2 + 1);
	}
	table_done("request rows");
}

/* A malformed request leaves the next one intact: the reader stays in step. */
static void test_stays_in_step(void **state)
{
	const char text[] = "garbage\n\n" BASE "client_address=192.0.2.9\n\n";
	bool complete;
	size_t n;

	(void)state;
	pbs_request_begin(&parser);
	n = pbs_request_feed(&parser, text, strlen(text), &complete);
	assert_true(complete);
	assert_int_equal(n, strlen("garbage\n\n"));
	assert_non_null(strstr(parser.req.problem, "without '='"));
	pbs_request_begin(&parser);
	n += pbs_request_feed(&parser, text + n, strlen(text) - n, &complete);
	assert_true(complete);
	assert_int_equal(n, strlen(text));
	assert_string_equal(parser.req.problem, "");
	assert_string_equal(parser.req.client_address, "192.0.2.9");
	assert_false(pbs_request_has(&parser.req, "instance"));
	assert_true(pbs_request_has(&parser.req, "client_address"));
}

/* Fields only logged or tested for being set are cut, not refused. */
static void test_cut_fields(void **state)
{
	char text[8192];
	char big[1000];

	(void)state;
	memset(big, 'u', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	snprintf(text, sizeof text, BASE "client_address=192.0.2.7\nsasl_username=%s\n"
		 "recipient=%s@remote.example\nqueue_id=%s\n\n", big, big, big);
	assert_int_equal(feed(text, strlen(text), 0), 1);
	assert_string_equal(parser.req.problem, "");
	assert_int_equal(strlen(parser.req.sasl_username), sizeof parser.req.sasl_username - 1);
	assert_int_equal(strlen(parser.req.recipient), sizeof parser.req.recipient - 1);
	assert_int_equal(strlen(parser.req.queue_id), sizeof parser.req.queue_id - 1);
}

/* A line over PBS_REQUEST_LINE_MAX and a request over PBS_REQUEST_MAX are refused, and
 * the request still ends at its empty line. */
static void test_limits(void **state)
{
	size_t cap = 2 * PBS_REQUEST_MAX;
	char *text = malloc(cap);
	size_t len, i;

	(void)state;
	assert_non_null(text);
	/* exactly the longest line is fine */
	len = (size_t)snprintf(text, cap, BASE "client_address=192.0.2.7\nx=");
	memset(text + len, 'a', PBS_REQUEST_LINE_MAX - 2);
	len += PBS_REQUEST_LINE_MAX - 2;
	memcpy(text + len, "\n\n", 2);
	assert_int_equal(feed(text, len + 2, 0), 1);
	assert_string_equal(parser.req.problem, "");
	/* one byte more is not */
	text[len] = 'a';
	memcpy(text + len + 1, "\n\n", 2);
	assert_int_equal(feed(text, len + 3, 0), 1);
	assert_non_null(strstr(parser.req.problem, "a line longer than 4096 bytes"));
	assert_int_equal(feed(text, len + 3, 7), 1);
	assert_non_null(strstr(parser.req.problem, "a line longer than 4096 bytes"));
	/* many short lines past the request limit */
	len = (size_t)snprintf(text, cap, BASE "client_address=192.0.2.7\n");
	for (i = 0; len + 10 < PBS_REQUEST_MAX + 100; i++)
		len += (size_t)snprintf(text + len, cap - len, "x%06zu=\n", i);
	memcpy(text + len, "\n", 1);
	assert_int_equal(feed(text, len + 1, 0), 1);
	assert_non_null(strstr(parser.req.problem, "a request longer than 65536 bytes"));
	free(text);
}

/* EOF in the middle of a request is seen; EOF between requests is not. */
static void test_partial(void **state)
{
	const char text[] = BASE "client_address=192.0.2.7\n";

	(void)state;
	assert_int_equal(feed(text, strlen(text), 0), 0);
	assert_true(pbs_request_partial(&parser));
	pbs_request_begin(&parser);
	assert_false(pbs_request_partial(&parser));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rows),
	    cmocka_unit_test(test_stays_in_step),
	    cmocka_unit_test(test_cut_fields),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_partial),
	};

	return cmocka_run_group_tests_name("request", tests, NULL, NULL);
}
