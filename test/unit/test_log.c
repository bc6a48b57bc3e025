/*
 * test_log.c — a log line stays one line whatever a caller passes: pbs_log escapes every
 * control byte of the formatted line (syslog and the stderr copy), without escaping again
 * what pbs_log_safe already made safe; and pbs_log_safe's own rules. The stderr copy is
 * what Dovecot puts in its log for the hook and what a terminal shows for the tools.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "popbsmtp/log.h"

#include "table.h"

/* What pbs_log(LOG_ERR, "%s", TEXT) writes on stderr, into OUT (OUTLEN bytes). */
static void logged(const char *text, char *out, size_t outlen)
{
	FILE *tmp = tmpfile();
	int saved = dup(STDERR_FILENO);
	size_t n;

	assert_non_null(tmp);
	assert_true(saved >= 0);
	fflush(stderr);
	assert_true(dup2(fileno(tmp), STDERR_FILENO) == STDERR_FILENO);
	pbs_log(LOG_ERR, "%s", text);
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) == STDERR_FILENO);
	close(saved);
	rewind(tmp);
	n = fread(out, 1, outlen - 1, tmp);
	out[n] = '\0';
	fclose(tmp);
}

struct line_row {
	const char *in;   /* what the caller formatted */
	const char *line; /* the one line on stderr, after "test: " */
};

static const struct line_row line_rows[] = {
    {"plain text", "plain text"},
    {"a\nb", "a\\x0ab"},
    {"no lease granted: x\nlease granted: 203.0.113.1 user=mallory",
     "no lease granted: x\\x0alease granted: 203.0.113.1 user=mallory"},
    {"cr\r lf\n tab\t esc\x1b[31m del\x7f bell\a",
     "cr\\x0d lf\\x0a tab\\x09 esc\\x1b[31m del\\x7f bell\\x07"},
    {"\n", "\\x0a"},
    /* Not control bytes: left as they are (UTF-8 in a path, a backslash in a message). */
    {"caf\xc3\xa9 C:\\dir", "caf\xc3\xa9 C:\\dir"},
    /* What pbs_log_safe produced is printable already: not escaped a second time. */
    {"user=x\\x0ay\\x5cz", "user=x\\x0ay\\x5cz"},
};

static void test_log_lines(void **state)
{
	char out[PBS_LOG_UNCTRL_MAX + 64], want[PBS_LOG_UNCTRL_MAX + 64];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof line_rows / sizeof line_rows[0]; i++) {
		logged(line_rows[i].in, out, sizeof out);
		snprintf(want, sizeof want, "test: %s\n", line_rows[i].line);
		ROW_CHECK(strcmp(out, want) == 0, "row %zu: got '%s', want '%s'", i, out, want);
	}
	table_done("line_rows");
}

/* A value through pbs_log_safe, then logged: the log shows it escaped exactly once. */
static void test_safe_value_in_line(void **state)
{
	char safe[PBS_LOG_SAFE_MAX], line[300], out[1024];

	(void)state;
	snprintf(line, sizeof line, "user=%s end", pbs_log_safe("x\ny\\z", safe));
	logged(line, out, sizeof out);
	assert_string_equal(out, "test: user=x\\x0ay\\x5cz end\n");
}

/* The longest line, all control bytes: still one whole line, every byte escaped. */
static void test_longest_line(void **state)
{
	char in[PBS_LOG_LINE_MAX + 100], out[PBS_LOG_UNCTRL_MAX + 64];
	size_t len;

	(void)state;
	memset(in, '\n', sizeof in - 1);
	in[sizeof in - 1] = '\0';
	logged(in, out, sizeof out);
	len = strlen(out);
	assert_true(len == strlen("test: ") + 4 * (PBS_LOG_LINE_MAX - 1) + 1);
	assert_true(strchr(out, '\n') == out + len - 1);
	assert_null(strstr(out, "..."));
}

/* pbs_log_unctrl cuts with "..." where the output does not fit, never mid-escape. */
static void test_unctrl_cut(void **state)
{
	char out[12];

	(void)state;
	assert_string_equal(pbs_log_unctrl("abcdefgh", out, sizeof out), "abcdefgh");
	assert_string_equal(pbs_log_unctrl("abcdefghijk", out, sizeof out), "abcdefgh...");
	assert_string_equal(pbs_log_unctrl("ab\n\ncd", out, sizeof out), "ab\\x0a...");
}

struct safe_row {
	const char *in, *out;
};

static const struct safe_row safe_rows[] = {
    {NULL, "(none)"},
    {"", ""},
    {"alice", "alice"},
    {"a\nb", "a\\x0ab"},
    {"back\\slash", "back\\x5cslash"},
    {"caf\xc3\xa9", "caf\\xc3\\xa9"},
    {"\x7f", "\\x7f"},
};

static void test_log_safe(void **state)
{
	char out[PBS_LOG_SAFE_MAX], *long_in;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof safe_rows / sizeof safe_rows[0]; i++) {
		pbs_log_safe(safe_rows[i].in, out);
		ROW_CHECK(strcmp(out, safe_rows[i].out) == 0, "row %zu: got '%s', want '%s'", i,
			  out, safe_rows[i].out);
	}
	table_done("safe_rows");
	long_in = malloc(1000);
	assert_non_null(long_in);
	memset(long_in, '\n', 999);
	long_in[999] = '\0';
	pbs_log_safe(long_in, out);
	assert_true(strlen(out) < PBS_LOG_SAFE_MAX);
	assert_string_equal(out + strlen(out) - 3, "...");
	free(long_in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_log_lines),
	    cmocka_unit_test(test_safe_value_in_line),
	    cmocka_unit_test(test_longest_line),
	    cmocka_unit_test(test_unctrl_cut),
	    cmocka_unit_test(test_log_safe),
	};

	/* Every line on stderr, and not the journal's: the test reads stderr back. */
	unsetenv("JOURNAL_STREAM");
	pbs_log_open("test", LOG_DEBUG);
	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
