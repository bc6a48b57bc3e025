/*
 * test_config.c — popbsmtp.conf as an administrator meets it: every value of a full file
 * applied, every default for an empty one, and for each kind of mistake the exact
 * "FILE:LINE: ..." text the programs print. Fixtures live in PBS_TEST_DATA; files whose
 * mode matters, or that are one-line variations, are written to a temp dir at run time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "popbsmtp/config.h"

#define D PBS_TEST_DATA

static char tmpdir[] = "/tmp/pbs-test-config.XXXXXX";

static int make_tmpdir(void **state)
{
	(void)state;
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

/* Remove the files the tests wrote, then the directory. */
static int remove_tmpdir(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Write TEXT to NAME in the temp dir with MODE; the path goes to PATH. */
static void write_file(const char *name, const char *text, mode_t mode, char *path, size_t pathlen)
{
	FILE *f;

	snprintf(path, pathlen, "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static void print_report(const pbs_config_report *r)
{
	size_t i;

	for (i = 0; i < r->errors.count; i++)
		print_message("  error: %s\n", r->errors.items[i]);
	for (i = 0; i < r->warnings.count; i++)
		print_message("  warning: %s\n", r->warnings.items[i]);
}

/* Load PATH expecting success with no errors. Returns the config. */
static pbs_config *load_ok(const char *path, pbs_config_report *r)
{
	pbs_config *cfg = pbs_config_load(path, r);

	if (cfg == NULL || r->errors.count != 0) {
		print_report(r);
		fail_msg("%s: expected to load cleanly", path);
	}
	return cfg;
}

/* Load PATH expecting failure with exactly the errors in EXPECTED (NULL-terminated). */
static void expect_errors(const char *path, const char *const *expected)
{
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	pbs_config *cfg = pbs_config_load(path, &r);
	size_t i, n = 0, bad = 0;

	while (expected[n] != NULL)
		n++;
	if (cfg != NULL) {
		pbs_config_free(cfg);
		bad++;
		print_error("%s: loaded although it is wrong\n", path);
	}
	for (i = 0; i < n || i < r.errors.count; i++) {
		const char *want = i < n ? expected[i] : "(nothing)";
		const char *got = i < r.errors.count ? r.errors.items[i] : "(nothing)";

		if (strcmp(want, got) != 0) {
			print_error("error %zu:\n  expected: %s\n  got:      %s\n", i + 1, want,
			            got);
			bad++;
		}
	}
	pbs_config_report_free(&r);
	if (bad)
		fail_msg("%s: %zu difference(s) in the reported errors", path, bad);
}

static bool cidrs_are(const pbs_cidr_list *list, const char *const *want)
{
	size_t i;

	for (i = 0; want[i] != NULL; i++) {
		char buf[PBS_ADDR_STRLEN + 8];
		size_t len;

		if (i >= list->count)
			return false;
		pbs_addr_format(&list->items[i].net, buf);
		len = strlen(buf);
		snprintf(buf + len, sizeof buf - len, "/%u", list->items[i].bits);
		if (strcmp(buf, want[i]) != 0) {
			print_error("network %zu is %s, expected %s\n", i + 1, buf, want[i]);
			return false;
		}
	}
	return i == list->count;
}

static bool strings_are(const pbs_strlist *list, const char *const *want)
{
	size_t i;

	for (i = 0; want[i] != NULL; i++)
		if (i >= list->count || strcmp(list->items[i], want[i]) != 0)
			return false;
	return i == list->count;
}

static const char *const no_words[] = {NULL};

/* The documented defaults, as an empty file or pbs_config_defaults() gives them. */
static void assert_defaults(const pbs_config *cfg)
{
	static const char *const trusted[] = {"127.0.0.0/8", "::1/128", NULL};

	assert_string_equal(cfg->redis.host, "127.0.0.1");
	assert_int_equal(cfg->redis.port, 6379);
	assert_null(cfg->redis.socket);
	assert_string_equal(cfg->redis.password, "");
	assert_string_equal(cfg->redis.username, "");
	assert_int_equal(cfg->redis.database, 0);
	assert_string_equal(cfg->redis.prefix, "popbsmtp:");
	assert_int_equal(cfg->redis.timeout_ms, 250);
	assert_int_equal(cfg->lease.ttl, 1800);
	assert_int_equal(cfg->lease.refresh, 300);
	assert_int_equal(cfg->lease.ipv4_prefix, 32);
	assert_int_equal(cfg->lease.ipv6_prefix, 64);
	assert_int_equal(cfg->lease.never.count, 0);
	assert_string_equal(cfg->milter.socket, "unix:/run/popbsmtp/milter.sock");
	assert_int_equal(cfg->milter.socket_mode, 0660);
	assert_string_equal(cfg->milter.socket_group, "");
	assert_string_equal(cfg->milter.user, "popbsmtp");
	assert_string_equal(cfg->milter.pidfile, "/run/popbsmtp/popbsmtp-milter.pid");
	assert_true(cidrs_are(&cfg->milter.trusted, trusted));
	assert_true(strings_are(&cfg->milter.relay_mailers, no_words));
	assert_true(strings_are(&cfg->milter.local_mailers, no_words));
	assert_true(strings_are(&cfg->milter.local_domains, no_words));
	assert_int_equal(cfg->milter.on_store_error, PBS_ON_ERROR_TEMPFAIL);
	assert_string_equal(cfg->milter.reject_text, "Relay access denied");
	assert_int_equal(cfg->milter.pool_size, 64);
	assert_int_equal(cfg->usage.retention_days, 30);
	assert_int_equal(cfg->usage.flush_interval, 10);
	assert_string_equal(cfg->usage.host, "");
	assert_int_equal(cfg->usage.trace_header, 0);
}

static void test_empty_file_gives_defaults(void **state)
{
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	pbs_config *cfg;

	(void)state;
	cfg = load_ok(D "/empty.conf", &r);
	assert_defaults(cfg);
	assert_string_equal(cfg->path, D "/empty.conf");
	assert_int_equal(r.warnings.count, 0);
	pbs_config_free(cfg);
	pbs_config_report_free(&r);

	cfg = pbs_config_defaults();
	assert_non_null(cfg);
	assert_defaults(cfg);
	pbs_config_free(cfg);
}

/* The default trusted networks are what they say: loopback, both families. */
static void test_default_trusted_matches_loopback(void **state)
{
	pbs_config *cfg = pbs_config_defaults();
	pbs_addr a;

	(void)state;
	assert_non_null(cfg);
	assert_int_equal(pbs_addr_parse("127.0.0.1", &a), 0);
	assert_true(pbs_cidr_list_contains(&cfg->milter.trusted, &a));
	assert_int_equal(pbs_addr_parse("127.255.255.254", &a), 0);
	assert_true(pbs_cidr_list_contains(&cfg->milter.trusted, &a));
	assert_int_equal(pbs_addr_parse("::1", &a), 0);
	assert_true(pbs_cidr_list_contains(&cfg->milter.trusted, &a));
	assert_int_equal(pbs_addr_parse("128.0.0.1", &a), 0);
	assert_false(pbs_cidr_list_contains(&cfg->milter.trusted, &a));
	assert_int_equal(pbs_addr_parse("::2", &a), 0);
	assert_false(pbs_cidr_list_contains(&cfg->milter.trusted, &a));
	pbs_config_free(cfg);
}

static void test_full_file(void **state)
{
	static const char *const never[] = {"192.0.2.0/24", "2001:db8:bad::/48", NULL};
	static const char *const trusted[] = {"10.0.0.0/8", "172.16.0.0/12", "2001:db8::/32", NULL};
	static const char *const relay[] = {"smtp", "smtp-out", NULL};
	static const char *const local[] = {"local", "dovecot", NULL};
	static const char *const domains[] = {"example.org", "Example.NET", NULL};
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	pbs_config *cfg;

	(void)state;
	cfg = load_ok(D "/full.conf", &r);
	assert_string_equal(cfg->redis.host, "redis.example.net");
	assert_int_equal(cfg->redis.port, 6380);
	assert_null(cfg->redis.socket);
	assert_string_equal(cfg->redis.password, "fixture-password");
	assert_string_equal(cfg->redis.username, "popbsmtp-acl");
	assert_int_equal(cfg->redis.database, 5);
	assert_string_equal(cfg->redis.prefix, "pbs-test:");
	assert_int_equal(cfg->redis.timeout_ms, 1500);
	assert_int_equal(cfg->lease.ttl, 3600);
	assert_int_equal(cfg->lease.refresh, 900);
	assert_int_equal(cfg->lease.ipv4_prefix, 24);
	assert_int_equal(cfg->lease.ipv6_prefix, 56);
	assert_true(cidrs_are(&cfg->lease.never, never));
	assert_string_equal(cfg->milter.socket, "inet:8899@127.0.0.1");
	assert_int_equal(cfg->milter.socket_mode, 0600);
	assert_string_equal(cfg->milter.socket_group, "postfix");
	assert_string_equal(cfg->milter.user, "pbsuser");
	assert_string_equal(cfg->milter.pidfile, "/var/tmp/popbsmtp-test.pid");
	assert_true(cidrs_are(&cfg->milter.trusted, trusted));
	assert_true(strings_are(&cfg->milter.relay_mailers, relay));
	assert_true(strings_are(&cfg->milter.local_mailers, local));
	assert_true(strings_are(&cfg->milter.local_domains, domains));
	assert_int_equal(cfg->milter.on_store_error, PBS_ON_ERROR_REJECT);
	assert_string_equal(cfg->milter.reject_text, "Log in with IMAP or POP3 first");
	assert_int_equal(cfg->milter.pool_size, 4);
	assert_int_equal(cfg->usage.retention_days, 7);
	assert_int_equal(cfg->usage.flush_interval, 5);
	assert_string_equal(cfg->usage.host, "mx1.example.net");
	assert_int_equal(cfg->usage.trace_header, 1);
	pbs_config_free(cfg);
	pbs_config_report_free(&r);
}

static void test_socket_unsets_host(void **state)
{
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	pbs_config *cfg;

	(void)state;
	cfg = load_ok(D "/socket.conf", &r);
	assert_null(cfg->redis.host);
	assert_string_equal(cfg->redis.socket, "/run/redis/redis-server.sock");
	assert_int_equal(cfg->redis.port, 6379);
	pbs_config_free(cfg);
	pbs_config_report_free(&r);
}

static void test_syntax_error(void **state)
{
	static const char *const want[] = {D "/bad-syntax.conf:3: syntax error", NULL};

	(void)state;
	expect_errors(D "/bad-syntax.conf", want);
}

static void test_unknown_group(void **state)
{
	static const char *const want[] = {
	    D "/bad-group.conf:2: unknown setting 'redsi' (expected redis, lease, milter, policy or usage)",
	    D "/bad-group.conf:5: unknown setting 'ttl' (expected redis, lease, milter, policy or usage)",
	    D "/bad-group.conf:6: redis: expected a group { ... }",
	    NULL,
	};

	(void)state;
	expect_errors(D "/bad-group.conf", want);
}

static void test_unknown_key(void **state)
{
	static const char *const want[] = {
	    D "/bad-key.conf:2: unknown setting 'redis.hots'",
	    D "/bad-key.conf:6: unknown setting 'lease.port'",
	    D "/bad-key.conf:7: unknown setting 'lease.TTL'",
	    NULL,
	};

	(void)state;
	expect_errors(D "/bad-key.conf", want);
}

static void test_wrong_type(void **state)
{
	static const char *const want[] = {
	    D "/bad-type.conf:2: redis.port: expected an integer",
	    D "/bad-type.conf:3: redis.host: expected a string",
	    D "/bad-type.conf:4: redis.timeout_ms: expected an integer",
	    D "/bad-type.conf:5: redis.database: expected an integer",
	    D "/bad-type.conf:8: lease.never: expected a list of strings, e.g. [ \"a\", \"b\" ]",
	    D "/bad-type.conf:11: milter.trusted: element 2 is not a string",
	    D "/bad-type.conf:12: milter.socket_mode: expected a string",
	    D "/bad-type.conf:13: milter.on_store_error: expected a string",
	    D "/bad-type.conf:14: milter.local_domains: expected a list of strings, e.g. [ \"a\", "
	      "\"b\" ]",
	    NULL,
	};

	(void)state;
	expect_errors(D "/bad-type.conf", want);
}

static void test_out_of_range(void **state)
{
	static const char *const want[] = {
	    D "/bad-range.conf:2: redis.port: 65536 is out of range (1..65535)",
	    D "/bad-range.conf:3: redis.timeout_ms: 0 is out of range (1..60000)",
	    D "/bad-range.conf:4: redis.database: -1 is out of range (0..1000000)",
	    D "/bad-range.conf:5: redis.prefix: length 65 is out of range (0..64)",
	    D "/bad-range.conf:6: redis.host: length 0 is out of range (1..255)",
	    D "/bad-range.conf:9: lease.ttl: 0 is out of range (1..2678400)",
	    D "/bad-range.conf:10: lease.ipv4_prefix: 33 is out of range (0..32)",
	    D "/bad-range.conf:11: lease.ipv6_prefix: 129 is out of range (0..128)",
	    D "/bad-range.conf:14: milter.pool_size: 5000000000 is out of range (1..1024)",
	    NULL,
	};

	(void)state;
	expect_errors(D "/bad-range.conf", want);
}

static void test_bad_cidr(void **state)
{
	static const char *const want[] = {
	    D "/bad-cidr.conf:2: lease.never: '10.0.0.0/33' is not an address or network "
	      "(ADDR/BITS)",
	    D "/bad-cidr.conf:2: lease.never: '2001:db8::/129' is not an address or network "
	      "(ADDR/BITS)",
	    D "/bad-cidr.conf:2: lease.never: '300.1.1.1' is not an address or network "
	      "(ADDR/BITS)",
	    D "/bad-cidr.conf:2: lease.never: '10.0.0.0/' is not an address or network "
	      "(ADDR/BITS)",
	    D "/bad-cidr.conf:5: milter.trusted: 'fe80::1%eth0' is not an address or network "
	      "(ADDR/BITS)",
	    D "/bad-cidr.conf:5: milter.trusted: 'localhost' is not an address or network "
	      "(ADDR/BITS)",
	    NULL,
	};

	(void)state;
	expect_errors(D "/bad-cidr.conf", want);
}

static void test_host_and_socket(void **state)
{
	static const char *const want[] = {
	    D "/bad-both.conf:4: redis: set either host or socket, not both", NULL};

	(void)state;
	expect_errors(D "/bad-both.conf", want);
}

static void test_bad_mode(void **state)
{
	static const char *const want[] = {
	    D "/bad-mode.conf:2: milter.socket_mode: '0999' is not an octal file mode such as "
	      "\"0660\"",
	    NULL,
	};

	(void)state;
	expect_errors(D "/bad-mode.conf", want);
}

static void test_bad_enum(void **state)
{
	static const char *const want[] = {
	    D "/bad-enum.conf:2: milter.on_store_error: 'defer' is not one of tempfail, reject, "
	      "accept",
	    NULL,
	};

	(void)state;
	expect_errors(D "/bad-enum.conf", want);
}

/* Every problem in the file is reported, in file order, not only the first. */
static void test_many_errors(void **state)
{
	static const char *const want[] = {
	    D "/bad-many.conf:2: redis.port: 0 is out of range (1..65535)",
	    D "/bad-many.conf:3: unknown setting 'redis.colour'",
	    D "/bad-many.conf:6: lease.ttl: expected an integer",
	    D "/bad-many.conf:7: lease.never: '192.0.2.0/40' is not an address or network "
	      "(ADDR/BITS)",
	    D "/bad-many.conf:10: milter.on_store_error: 'ignore' is not one of tempfail, reject, "
	      "accept",
	    D "/bad-many.conf:11: milter.socket_mode: 'rw-rw----' is not an octal file mode such "
	      "as \"0660\"",
	    D "/bad-many.conf:13: unknown setting 'logging' (expected redis, lease, milter, policy or usage)",
	    NULL,
	};

	(void)state;
	expect_errors(D "/bad-many.conf", want);
}

static void test_missing_file(void **state)
{
	static const char *const want[] = {
	    D "/no-such.conf: cannot read: No such file or directory", NULL};

	(void)state;
	expect_errors(D "/no-such.conf", want);
}

static void test_missing_include(void **state)
{
	static const char *const want[] = {D "/bad-include.conf:4: @include \"no-such-file.conf\": No such file or directory", NULL};

	(void)state;
	expect_errors(D "/bad-include.conf", want);
}

/* Including a directory would make libconfig 1.5 exit() the whole program (a hook that
 * exits refuses the login): it is reported as FILE:LINE instead, and so is "". */
static void test_include_directory(void **state)
{
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	char path[PATH_MAX], want[PATH_MAX + 64];

	(void)state;
	write_file("incdir.conf", "lease: {\n\t@include \"\"\n};\n@include \".\"\n", 0644, path,
	           sizeof path);
	assert_null(pbs_config_load(path, &r));
	assert_int_equal(r.errors.count, 2);
	snprintf(want, sizeof want, "%s:2: @include \"\": not a regular file", path);
	assert_string_equal(r.errors.items[0], want);
	snprintf(want, sizeof want, "%s:4: @include \".\": not a regular file", path);
	assert_string_equal(r.errors.items[1], want);
	pbs_config_report_free(&r);
}

/* libconfig truncates a too-long integer in an included file as in the main file. */
static void test_include_long_integer(void **state)
{
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	char path[PATH_MAX], inc[PATH_MAX], want[PATH_MAX + 128];

	(void)state;
	write_file("long.inc", "port = 4294973675;\n", 0644, inc, sizeof inc);
	write_file("long.conf", "redis: {\n@include \"long.inc\"\n};\n", 0644, path, sizeof path);
	assert_null(pbs_config_load(path, &r));
	assert_int_equal(r.errors.count, 1);
	snprintf(want, sizeof want, "%s:1: integer 4294973675 is too large", inc);
	assert_true(strncmp(r.errors.items[0], want, strlen(want)) == 0);
	pbs_config_report_free(&r);
}

/* Load PATH expecting exactly one error, WANT. */
static void expect_one_error(const char *path, const char *want)
{
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	pbs_config *cfg = pbs_config_load(path, &r);

	if (cfg != NULL || r.errors.count != 1 || strcmp(r.errors.items[0], want) != 0) {
		print_report(&r);
		pbs_config_free(cfg);
		pbs_config_report_free(&r);
		fail_msg("%s: expected only the error\n  %s", path, want);
	}
	pbs_config_report_free(&r);
}

/* The directory "adir" in the temp dir: what libconfig 1.5 must never be asked to include. */
static void make_adir(void)
{
	char dir[PATH_MAX];

	snprintf(dir, sizeof dir, "%s/adir", tmpdir);
	assert_true(mkdir(dir, 0755) == 0 || errno == EEXIST);
}

/* An include name of any length is checked: 600 bytes naming a directory (libconfig 1.5
 * would exit() the test program) is an error, not skipped as names of 512 bytes were. */
static void test_include_long_name(void **state)
{
	char name[601], dir[PATH_MAX + 600], path[PATH_MAX], text[700], want[PATH_MAX + 700];
	size_t len = 0;

	(void)state;
	while (len < 600) { /* five directories of 99 bytes and one of 100, each made */
		if (len > 0)
			name[len++] = '/';
		memset(name + len, 'd', len < 500 ? 99 : 100);
		len += len < 500 ? 99 : 100;
		name[len] = '\0';
		snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
		assert_true(mkdir(dir, 0755) == 0 || errno == EEXIST);
	}
	assert_int_equal(strlen(name), 600);
	snprintf(text, sizeof text, "@include \"%s\"\n", name);
	write_file("longname.conf", text, 0644, path, sizeof path);
	snprintf(want, sizeof want, "%s:1: @include \"%s\": not a regular file", path, name);
	expect_one_error(path, want);
}

/* More includes than the pre-check follows (64 in all) is an error at the first one over,
 * not a reason to skip the rest: here the 65th names a directory. */
static void test_include_too_many(void **state)
{
	char text[65 * 32], path[PATH_MAX], want[PATH_MAX + 128];
	size_t len = 0;
	int i;

	(void)state;
	make_adir();
	write_file("empty.inc", "# nothing\n", 0644, path, sizeof path);
	for (i = 0; i < 64; i++)
		len += (size_t)snprintf(text + len, sizeof text - len, "@include \"empty.inc\"\n");
	write_file("sixtyfour.conf", text, 0644, path, sizeof path);
	pbs_config_free(load_ok(path, &(pbs_config_report){{NULL, 0}, {NULL, 0}}));

	snprintf(text + len, sizeof text - len, "@include \"adir\"\n");
	write_file("sixtyfive.conf", text, 0644, path, sizeof path);
	snprintf(want, sizeof want, "%s:65: @include \"adir\": more than 64 @include directives "
	         "in all, more than popbsmtp checks", path);
	expect_one_error(path, want);
}

/* Lines of any length: an @include after 1100 spaces and 1100 tabs, behind a line of
 * 3000 bytes, is seen and checked (lines were read in 1023-byte pieces). */
static void test_include_long_line(void **state)
{
	char text[6000], path[PATH_MAX], want[PATH_MAX + 64];
	size_t len = 0;

	(void)state;
	make_adir();
	text[len++] = '#';
	memset(text + len, 'x', 3000);
	len += 3000;
	text[len++] = '\n';
	memset(text + len, ' ', 1100);
	len += 1100;
	memcpy(text + len, "@include", 8);
	len += 8;
	memset(text + len, '\t', 1100);
	len += 1100;
	snprintf(text + len, sizeof text - len, "\"adir\"\n");
	write_file("longline.conf", text, 0644, path, sizeof path);
	snprintf(want, sizeof want, "%s:2: @include \"adir\": not a regular file", path);
	expect_one_error(path, want);
}

/* Includes are seen where libconfig 1.5's scanner sees them, no more and no fewer. */
static const struct {
	const char *text;
	const char *error; /* after "PATH:"; NULL: loads */
} include_rows[] = {
    /* In a comment or string it is no include. */
    {"/*\n@include \"adir\"\n*/\n", NULL},
    {"milter: { reject_text = \"no\n@include \\\"adir\\\"\n\"; };\n", NULL},
    {"@include \"open-comment.inc\"\n@include \"adir\"\n*/\n", NULL},
    /* At a line's start, after blanks, after comments and strings that ended. */
    {" \t @include\t \"adir\"\n", "1: @include \"adir\": not a regular file"},
    {"# x\n@include \"adir\"\n", "2: @include \"adir\": not a regular file"},
    {"lease: { ttl = 5; }; // /*\n@include \"adir\"\n", "2: @include \"adir\": not a regular file"},
    {"/**/\n@include \"adir\"\n", "2: @include \"adir\": not a regular file"},
    {"milter: { reject_text = \"a\\\\\"; };\n@include \"adir\"\n",
     "2: @include \"adir\": not a regular file"},
    /* A string an included file leaves open ends in the including one. */
    {"@include \"open-string.inc\"\n\"; };\n@include \"adir\"\n",
     "3: @include \"adir\": not a regular file"},
    /* Not at a line's start: libconfig stops at the @ (and includes nothing). */
    {"@include \"empty.inc\" @include \"adir\"\n", "1: syntax error"},
    /* The name is unescaped as libconfig does; what it reads otherwise is refused. */
    {"@include \"adir\\\\\"\n", "1: @include \"adir\\\": No such file or directory"},
    {"@include \"a\\dir\"\n", "1: @include: a backslash in the name may only escape \\ or \""},
    {"@include \"ad\nir\"\n",
     "1: @include: the name holds a control character or does not end on its line"},
    {"@include \"adir", "1: @include: the name has no closing quote"},
    {"@include \"big.inc\"\n", "1: @include \"big.inc\": larger than 1 MiB, more than popbsmtp "
                               "checks"},
};

static void test_include_as_libconfig_reads(void **state)
{
	char path[PATH_MAX], want[PATH_MAX + 128], *big;
	size_t i;

	(void)state;
	make_adir();
	write_file("empty.inc", "# nothing\n", 0644, path, sizeof path);
	write_file("open-comment.inc", "/* not closed here", 0644, path, sizeof path);
	write_file("open-string.inc", "milter: { reject_text = \"not closed here", 0644, path,
	           sizeof path);
	big = malloc((1 << 20) + 2);
	assert_non_null(big);
	memset(big, '\n', (1 << 20) + 1);
	big[(1 << 20) + 1] = '\0';
	write_file("big.inc", big, 0644, path, sizeof path);
	free(big);
	for (i = 0; i < sizeof include_rows / sizeof include_rows[0]; i++) {
		write_file("inc.conf", include_rows[i].text, 0644, path, sizeof path);
		if (include_rows[i].error == NULL) {
			pbs_config_report r = {{NULL, 0}, {NULL, 0}};
			pbs_config_free(load_ok(path, &r));
			pbs_config_report_free(&r);
		} else {
			snprintf(want, sizeof want, "%s:%s", path, include_rows[i].error);
			expect_one_error(path, want);
		}
	}
}

/* A name with \" in it is the file with a quote in its name, as libconfig opens it. */
static void test_include_escaped_quote(void **state)
{
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	char path[PATH_MAX];
	pbs_config *cfg;

	(void)state;
	write_file("q\"uote.inc", "redis: { port = 7; };\n", 0644, path, sizeof path);
	write_file("quote.conf", "@include \"q\\\"uote.inc\"\n", 0644, path, sizeof path);
	cfg = load_ok(path, &r);
	assert_int_equal(cfg->redis.port, 7);
	pbs_config_free(cfg);
	pbs_config_report_free(&r);
}

/* Ten levels of includes load; the eleventh is an error of the pre-check. */
static void test_include_depth(void **state)
{
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	char name[32], text[64], path[PATH_MAX], want[PATH_MAX + 100];
	int i;

	(void)state;
	for (i = 0; i <= 11; i++) {
		snprintf(name, sizeof name, "level%d.inc", i);
		snprintf(text, sizeof text, "@include \"level%d.inc\"\n", i + 1);
		write_file(name, i == 10 ? "lease: { ttl = 10; };\n" : text, 0644, path, sizeof path);
	}
	snprintf(path, sizeof path, "%s/level0.inc", tmpdir);
	pbs_config_free(load_ok(path, &r));
	pbs_config_report_free(&r);

	write_file("level10.inc", "@include \"level11.inc\"\n", 0644, path, sizeof path);
	write_file("level11.inc", "lease: { ttl = 11; };\n", 0644, path, sizeof path);
	snprintf(path, sizeof path, "%s/level0.inc", tmpdir);
	snprintf(want, sizeof want, "%s/level10.inc:1: @include \"level11.inc\": nested more "
	         "than 10 levels deep", tmpdir);
	expect_one_error(path, want);
}

/* The main file too must be a regular file: a directory or a FIFO is refused at once
 * (fopen() of a FIFO would wait for a writer forever). */
static void test_main_not_regular(void **state)
{
	char path[PATH_MAX], want[PATH_MAX + 64];

	(void)state;
	snprintf(want, sizeof want, "%s: cannot read: not a regular file", tmpdir);
	expect_one_error(tmpdir, want);
	snprintf(path, sizeof path, "%s/fifo.conf", tmpdir);
	assert_true(mkfifo(path, 0644) == 0 || errno == EEXIST);
	snprintf(want, sizeof want, "%s: cannot read: not a regular file", path);
	expect_one_error(path, want);
}

/* A relative @include is found next to the config file, not in the working directory:
 * a decoy include/redis.conf in the CWD must not be read. */
static void test_include_relative_to_file(void **state)
{
	char cwd[PATH_MAX], path[PATH_MAX];
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	pbs_config *cfg;

	(void)state;
	assert_non_null(getcwd(cwd, sizeof cwd));
	snprintf(path, sizeof path, "%s/include", tmpdir);
	assert_true(mkdir(path, 0755) == 0 || errno == EEXIST);
	write_file("include/redis.conf", "redis: { port = 9999; prefix = \"decoy:\"; };\n", 0644,
	           path, sizeof path);
	assert_int_equal(chdir(tmpdir), 0);

	cfg = pbs_config_load(D "/include-main.conf", &r);
	if (cfg == NULL)
		print_report(&r);
	assert_non_null(cfg);
	assert_int_equal(cfg->redis.port, 7001);
	assert_string_equal(cfg->redis.prefix, "included:");
	assert_int_equal(cfg->lease.ttl, 900);
	pbs_config_free(cfg);
	pbs_config_report_free(&r);

	/* A relative path to the config works too: includes follow the file. */
	assert_int_equal(chdir(D "/.."), 0);
	cfg = pbs_config_load("data/include-main.conf", &r);
	if (cfg == NULL)
		print_report(&r);
	assert_non_null(cfg);
	assert_int_equal(cfg->redis.port, 7001);
	pbs_config_free(cfg);
	pbs_config_report_free(&r);

	assert_int_equal(chdir(D), 0);
	cfg = pbs_config_load("include-main.conf", &r);
	if (cfg == NULL)
		print_report(&r);
	assert_non_null(cfg);
	assert_int_equal(cfg->redis.port, 7001);
	pbs_config_free(cfg);
	pbs_config_report_free(&r);

	assert_int_equal(chdir(cwd), 0);
}

/* An error inside an included file names that file, as a path the reader can open
 * (resolved like the include itself), and the line inside it. */
static void test_include_error_names_file(void **state)
{
	static const char *const want[] = {
	    D "/include/bad.conf:3: lease.ttl: 0 is out of range (1..2678400)", NULL};
	char cwd[PATH_MAX];

	(void)state;
	assert_non_null(getcwd(cwd, sizeof cwd));
	assert_int_equal(chdir(tmpdir), 0);
	expect_errors(D "/include-bad.conf", want);
	assert_int_equal(chdir(cwd), 0);
}

/* The pre-check's error for an integer libconfig 1.5 would cut to 32 bits. */
#define TOO_LARGE(literal)                                                                         \
	"integer " literal " is too large (64-bit values need an L suffix, and no setting takes "  \
	"one this big)"
#define LEADING_ZERO(literal)                                                                      \
	"integer " literal " has a leading zero: libconfig 1.5 reads it as decimal, 1.7 as octal " \
	"(or refuses it); write it without the zero"

/* One-line files: the bounds of each number, both sides, and the other value rules. */
struct line_row {
	const char *text;
	const char *error; /* after "PATH:1: "; NULL: accepted */
	const char *key;   /* accepted: the int field to check */
	long long value;
};

static const struct line_row line_rows[] = {
    {"lease: { ttl = 0; };", "lease.ttl: 0 is out of range (1..2678400)", NULL, 0},
    {"lease: { ttl = -5; };", "lease.ttl: -5 is out of range (1..2678400)", NULL, 0},
    {"lease: { ttl = 1; };", NULL, "ttl", 1},
    {"lease: { ttl = 2678400; };", NULL, "ttl", 2678400},
    {"lease: { ttl = 2678401; };", "lease.ttl: 2678401 is out of range (1..2678400)", NULL, 0},
    {"lease: { ttl = 1800L; };", NULL, "ttl", 1800},
    {"lease: { ttl = 6000000000L; };", "lease.ttl: 6000000000 is out of range (1..2678400)", NULL,
     0},
    {"lease: { refresh = -1; };", "lease.refresh: -1 is out of range (0..2678399)", NULL, 0},
    {"lease: { refresh = 0; };", NULL, "refresh", 0},
    {"lease: { ttl = 2678400; refresh = 2678399; };", NULL, "refresh", 2678399},
    {"lease: { refresh = 2678400; };", "lease.refresh: 2678400 is out of range (0..2678399)", NULL,
     0},
    {"lease: { ipv4_prefix = 0; };", NULL, "ipv4_prefix", 0},
    {"lease: { ipv4_prefix = 32; };", NULL, "ipv4_prefix", 32},
    {"lease: { ipv4_prefix = 33; };", "lease.ipv4_prefix: 33 is out of range (0..32)", NULL, 0},
    {"lease: { ipv4_prefix = -1; };", "lease.ipv4_prefix: -1 is out of range (0..32)", NULL, 0},
    {"lease: { ipv6_prefix = 0; };", NULL, "ipv6_prefix", 0},
    {"lease: { ipv6_prefix = 128; };", NULL, "ipv6_prefix", 128},
    {"lease: { ipv6_prefix = 129; };", "lease.ipv6_prefix: 129 is out of range (0..128)", NULL, 0},
    {"redis: { port = 0; };", "redis.port: 0 is out of range (1..65535)", NULL, 0},
    {"redis: { port = 1; };", NULL, "port", 1},
    {"redis: { port = 65535; };", NULL, "port", 65535},
    {"redis: { port = 65536; };", "redis.port: 65536 is out of range (1..65535)", NULL, 0},
    {"redis: { port = 5000000000L; };", "redis.port: 5000000000 is out of range (1..65535)", NULL,
     0},
    {"redis: { port = 0x18eb; };", NULL, "port", 6379},
    /* Hex without L: libconfig 1.5 stores strtoul() in an int, cut to 32 bits or negative. */
    {"lease: { ipv4_prefix = 0x100000000; };", TOO_LARGE("0x100000000"), NULL, 0},
    {"lease: { ipv4_prefix = 0x100000020; };", TOO_LARGE("0x100000020"), NULL, 0},
    {"lease: { ttl = 0x100000708; };", TOO_LARGE("0x100000708"), NULL, 0},
    {"redis: { port = 0x1000018eb; };", TOO_LARGE("0x1000018eb"), NULL, 0},
    {"milter: { pool_size = 0X100000040; };", TOO_LARGE("0X100000040"), NULL, 0},
    {"redis: { database = 0x10000000000000020; };", TOO_LARGE("0x10000000000000020"), NULL, 0},
    {"lease: { ipv4_prefix = 0xffffffff; };", TOO_LARGE("0xffffffff"), NULL, 0},
    {"lease: { ttl = 0x80000000; };", TOO_LARGE("0x80000000"), NULL, 0},
    /* Hex that fits is read as written; leading zeros do not count. */
    {"lease: { ipv4_prefix = 0x20; };", NULL, "ipv4_prefix", 32},
    {"lease: { ipv4_prefix = 0X20; };", NULL, "ipv4_prefix", 32},
    {"lease: { ipv4_prefix = 0x00000000000000020; };", NULL, "ipv4_prefix", 32},
    {"lease: { ipv4_prefix = 0x21; };", "lease.ipv4_prefix: 33 is out of range (0..32)", NULL, 0},
    {"lease: { ipv4_prefix = 0x7fffffff; };",
     "lease.ipv4_prefix: 2147483647 is out of range (0..32)", NULL, 0},
    /* With L all 64 bits are kept, and the range check sees the value written. */
    {"lease: { ttl = 0x708L; };", NULL, "ttl", 1800},
    {"lease: { ttl = 0x100000708L; };", "lease.ttl: 4294969096 is out of range (1..2678400)",
     NULL, 0},
    {"lease: { ipv4_prefix = 0xffffffffffffffffL; };",
     "lease.ipv4_prefix: -1 is out of range (0..32)", NULL, 0},
    /* Decimal without L: atoi(); sign and leading zeros on both sides of the cut. */
    {"lease: { ipv4_prefix = 4294967328; };", TOO_LARGE("4294967328"), NULL, 0},
    {"lease: { ipv4_prefix = -4294967264; };", TOO_LARGE("-4294967264"), NULL, 0},
    {"lease: { ipv4_prefix = +32; };", NULL, "ipv4_prefix", 32},
    /* A leading zero: decimal to libconfig 1.5, octal (0600 = 384) or an error (08) to 1.7,
     * so refused, on both; with L both read decimal (atoll). */
    {"lease: { ipv4_prefix = 0000000000032; };", LEADING_ZERO("0000000000032"), NULL, 0},
    {"lease: { ttl = 0600; };", LEADING_ZERO("0600"), NULL, 0},
    {"lease: { ipv4_prefix = 08; };", LEADING_ZERO("08"), NULL, 0},
    {"lease: { ipv4_prefix = -024; };", LEADING_ZERO("-024"), NULL, 0},
    {"lease: { ipv4_prefix = +024; };", LEADING_ZERO("+024"), NULL, 0},
    {"lease: { ttl = 0600L; };", NULL, "ttl", 600},
    {"lease: { ipv4_prefix = 0; };", NULL, "ipv4_prefix", 0},
    {"lease: { ipv4_prefix = -0; };", NULL, "ipv4_prefix", 0},
    {"lease: { ipv4_prefix = 2147483647; };",
     "lease.ipv4_prefix: 2147483647 is out of range (0..32)", NULL, 0},
    {"lease: { ipv4_prefix = -2147483648; };",
     "lease.ipv4_prefix: -2147483648 is out of range (0..32)", NULL, 0},
    /* No number in strings or comments. */
    {"redis: { prefix = \"0x100000000:\"; };", NULL, "port", 6379},
    {"lease: { ttl = 1800; /* 0x100000708 */ }; # 4294967328", NULL, "ttl", 1800},
    {"lease: { ttl = 1800; }; // 0xffffffff", NULL, "ttl", 1800},
    {"redis: { timeout_ms = 0; };", "redis.timeout_ms: 0 is out of range (1..60000)", NULL, 0},
    {"redis: { timeout_ms = 1; };", NULL, "timeout_ms", 1},
    {"redis: { timeout_ms = 60000; };", NULL, "timeout_ms", 60000},
    {"redis: { timeout_ms = 60001; };", "redis.timeout_ms: 60001 is out of range (1..60000)", NULL,
     0},
    {"redis: { database = 0; };", NULL, "database", 0},
    {"redis: { database = 15; };", NULL, "database", 15},
    {"redis: { database = -1; };", "redis.database: -1 is out of range (0..1000000)", NULL, 0},
    {"milter: { pool_size = 0; };", "milter.pool_size: 0 is out of range (1..1024)", NULL, 0},
    {"milter: { pool_size = 1024; };", NULL, "pool_size", 1024},
    {"milter: { pool_size = 1025; };", "milter.pool_size: 1025 is out of range (1..1024)", NULL, 0},
    {"milter: { socket_mode = \"0777\"; };", NULL, "socket_mode", 0777},
    {"milter: { socket_mode = \"660\"; };", NULL, "socket_mode", 0660},
    {"milter: { socket_mode = \"0\"; };", NULL, "socket_mode", 0},
    {"milter: { socket_mode = \"01000\"; };",
     "milter.socket_mode: '01000' is not an octal file mode such as \"0660\"", NULL, 0},
    {"milter: { socket_mode = \"0999\"; };",
     "milter.socket_mode: '0999' is not an octal file mode such as \"0660\"", NULL, 0},
    {"milter: { socket_mode = \"\"; };",
     "milter.socket_mode: '' is not an octal file mode such as \"0660\"", NULL, 0},
    {"milter: { socket_mode = \"-1\"; };",
     "milter.socket_mode: '-1' is not an octal file mode such as \"0660\"", NULL, 0},
    {"milter: { socket_mode = \"0x1ff\"; };",
     "milter.socket_mode: '0x1ff' is not an octal file mode such as \"0660\"", NULL, 0},
    {"milter: { on_store_error = \"tempfail\"; };", NULL, "on_store_error", PBS_ON_ERROR_TEMPFAIL},
    {"milter: { on_store_error = \"reject\"; };", NULL, "on_store_error", PBS_ON_ERROR_REJECT},
    {"milter: { on_store_error = \"accept\"; };", NULL, "on_store_error", PBS_ON_ERROR_ACCEPT},
    {"milter: { on_store_error = \"TEMPFAIL\"; };",
     "milter.on_store_error: 'TEMPFAIL' is not one of tempfail, reject, accept", NULL, 0},
    {"milter: { on_store_error = \"\"; };",
     "milter.on_store_error: '' is not one of tempfail, reject, accept", NULL, 0},
    {"milter: { reject_text = \"\"; };", "milter.reject_text: length 0 is out of range (1..400)",
     NULL, 0},
    {"milter: { local_domains = [ \"backup.example\", \"B-2.Example\" ]; };", NULL, "pool_size", 64},
    {"milter: { local_domains = [ \"backup.example.\" ]; };",
     "milter.local_domains: 'backup.example.' is not a domain name such as \"backup.example\" "
     "(letters, digits, '-', no trailing dot)", NULL, 0},
    {"milter: { local_domains = [ \"@backup.example\" ]; };",
     "milter.local_domains: '@backup.example' is not a domain name such as \"backup.example\" "
     "(letters, digits, '-', no trailing dot)", NULL, 0},
    {"milter: { local_domains = [ \"*.example\" ]; };",
     "milter.local_domains: '*.example' is not a domain name such as \"backup.example\" "
     "(letters, digits, '-', no trailing dot)", NULL, 0},
    {"milter: { local_domains = [ \"\" ]; };",
     "milter.local_domains: '' is not a domain name such as \"backup.example\" "
     "(letters, digits, '-', no trailing dot)", NULL, 0},
    {"redis: { prefix = \"\"; };", NULL, "port", 6379},
    {"lease: { never = []; };", NULL, "ttl", 1800},
    {"milter: { trusted = []; };", NULL, "pool_size", 64},
    {"usage: { retention_days = 0; };", "usage.retention_days: 0 is out of range (1..3660)",
     NULL, 0},
    {"usage: { retention_days = 3660; };", NULL, "retention_days", 3660},
    {"usage: { flush_interval = 0; };", "usage.flush_interval: 0 is out of range (1..3600)",
     NULL, 0},
    {"usage: { flush_interval = 3600; };", NULL, "flush_interval", 3600},
    {"usage: { trace_header = \"on\"; };", NULL, "trace_header", 1},
    {"usage: { trace_header = \"off\"; };", NULL, "trace_header", 0},
    {"usage: { trace_header = true; };", "usage.trace_header: expected a string", NULL, 0},
    {"usage: { trace_secret = \"0123456789abcdefABCDEF\"; };", NULL, "trace_header", 0},
    {"usage: { trace_secret = \"\"; };", NULL, "trace_header", 0},
    {"usage: { trace_secret = \"0123456789abcde\"; };",
     "usage.trace_secret: expected 16 to 64 letters and digits (e.g. from \"openssl rand -hex "
     "16\")", NULL, 0},
    {"usage: { trace_secret = \"0123456789abcdef (.*)\"; };",
     "usage.trace_secret: expected 16 to 64 letters and digits (e.g. from \"openssl rand -hex "
     "16\")", NULL, 0},
    {"usage: { trace_header = \"yes\"; };",
     "usage.trace_header: 'yes' is not one of off, on", NULL, 0},
    {"usage: { host = \"\"; };", NULL, "flush_interval", 10},
    {"usage: { retired = 1; };", "unknown setting 'usage.retired'", NULL, 0},
};

static long long int_field(const pbs_config *cfg, const char *key)
{
	static const struct {
		const char *key;
		size_t offset;
	} fields[] = {
	    {"ttl", offsetof(pbs_config, lease.ttl)},
	    {"refresh", offsetof(pbs_config, lease.refresh)},
	    {"ipv4_prefix", offsetof(pbs_config, lease.ipv4_prefix)},
	    {"ipv6_prefix", offsetof(pbs_config, lease.ipv6_prefix)},
	    {"port", offsetof(pbs_config, redis.port)},
	    {"timeout_ms", offsetof(pbs_config, redis.timeout_ms)},
	    {"database", offsetof(pbs_config, redis.database)},
	    {"pool_size", offsetof(pbs_config, milter.pool_size)},
	    {"socket_mode", offsetof(pbs_config, milter.socket_mode)},
	    {"on_store_error", offsetof(pbs_config, milter.on_store_error)},
	    {"retention_days", offsetof(pbs_config, usage.retention_days)},
	    {"flush_interval", offsetof(pbs_config, usage.flush_interval)},
	    {"trace_header", offsetof(pbs_config, usage.trace_header)},
	};
	size_t i;

	for (i = 0; i < sizeof fields / sizeof fields[0]; i++)
		if (strcmp(fields[i].key, key) == 0)
			return *(const int *)(const void *)((const char *)cfg + fields[i].offset);
	fail_msg("no field %s", key);
	return 0;
}

static void test_line_table(void **state)
{
	size_t i;
	int bad = 0;

	(void)state;
	for (i = 0; i < sizeof line_rows / sizeof line_rows[0]; i++) {
		const struct line_row *row = &line_rows[i];
		pbs_config_report r = {{NULL, 0}, {NULL, 0}};
		char path[PATH_MAX], want[PATH_MAX + 200], text[512];
		pbs_config *cfg;

		snprintf(text, sizeof text, "%s\n", row->text);
		write_file("line.conf", text, 0644, path, sizeof path);
		cfg = pbs_config_load(path, &r);
		if (row->error == NULL) {
			if (cfg == NULL) {
				print_error("'%s': refused: %s\n", row->text,
				            r.errors.count ? r.errors.items[0] : "?");
				bad++;
			} else if (int_field(cfg, row->key) != row->value) {
				print_error("'%s': %s is %lld, expected %lld\n", row->text,
				            row->key, int_field(cfg, row->key), row->value);
				bad++;
			}
		} else {
			snprintf(want, sizeof want, "%s:1: %s", path, row->error);
			if (cfg != NULL || r.errors.count != 1 ||
			    strcmp(r.errors.items[0], want) != 0) {
				print_error("'%s':\n  expected: %s\n  got:      %s (%zu errors)\n",
				            row->text, want,
				            r.errors.count ? r.errors.items[0] : "(accepted)",
				            r.errors.count);
				bad++;
			}
		}
		pbs_config_free(cfg);
		pbs_config_report_free(&r);
	}
	if (bad)
		fail_msg("%d row(s) of the one-line table failed", bad);
}

/* libconfig 1.5 reads an integer too big for 32 bits and written without the L suffix
 * as the value cut to 32 bits: 4294968096 would be a ttl of 800. Such a file must be
 * refused, not run with a number the administrator never wrote. */
static void test_huge_int_without_suffix(void **state)
{
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	char path[PATH_MAX];
	pbs_config *cfg;

	(void)state;
	write_file("huge.conf", "lease: { ttl = 4294968096; };\n", 0644, path, sizeof path);
	cfg = pbs_config_load(path, &r);
	if (cfg != NULL) {
		int ttl = cfg->lease.ttl;

		pbs_config_free(cfg);
		pbs_config_report_free(&r);
		fail_msg("lease.ttl = 4294968096 was accepted as %d", ttl);
	}
	assert_int_equal(r.errors.count, 1);
	pbs_config_report_free(&r);
}

static const char password_conf[] = "redis: { password = \"s3cret\"; };\n";

/* A password others can read earns exactly one warning; a private file none. */
static void test_password_mode_warning(void **state)
{
	static const struct {
		mode_t mode;
		size_t warnings;
	} rows[] = {{0644, 1}, {0604, 1}, {0640, 0}, {0600, 0}, {0400, 0}};
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	char path[PATH_MAX], want[PATH_MAX + 100];
	pbs_config *cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		write_file("secret.conf", password_conf, rows[i].mode, path, sizeof path);
		cfg = pbs_config_load(path, &r);
		assert_non_null(cfg);
		assert_string_equal(cfg->redis.password, "s3cret");
		if (r.warnings.count != rows[i].warnings)
			fail_msg("mode %04o: %zu warning(s), expected %zu", (unsigned)rows[i].mode,
			         r.warnings.count, rows[i].warnings);
		if (rows[i].warnings) {
			snprintf(want, sizeof want,
			         "%s: warning: holds a Redis password but others can read it "
			         "(chmod o-r)",
			         path);
			assert_string_equal(r.warnings.items[0], want);
		}
		assert_int_equal(r.errors.count, 0);
		pbs_config_free(cfg);
		pbs_config_report_free(&r);
	}

	/* No password, nothing to protect. */
	write_file("nosecret.conf", "redis: { port = 6380; };\n", 0644, path, sizeof path);
	cfg = pbs_config_load(path, &r);
	assert_non_null(cfg);
	assert_int_equal(r.warnings.count, 0);
	pbs_config_free(cfg);
	pbs_config_report_free(&r);
}

/* lease.refresh: unset, it is a sixth of lease.ttl (at least 1 s, off for a ttl of 1);
 * set, it must be 0 or below lease.ttl, and draws a warning above half of it. */
static void test_lease_refresh(void **state)
{
	static const struct {
		const char *lease; /* the lease group's body */
		int refresh;       /* -1: refused */
		size_t warnings;
	} rows[] = {
	    {"ttl = 60;", 10, 0},
	    {"ttl = 3;", 1, 0},
	    {"ttl = 2;", 1, 0},
	    {"ttl = 1;", 0, 0},
	    {"ttl = 3;\n refresh = 1;", 1, 0},
	    {"ttl = 1800;\n refresh = 0;", 0, 0},
	    {"ttl = 1;\n refresh = 0;", 0, 0},
	    {"ttl = 600;\n refresh = 300;", 300, 0},
	    {"ttl = 600;\n refresh = 301;", 301, 1},
	    {"ttl = 600;\n refresh = 599;", 599, 1},
	    {"ttl = 600;\n refresh = 600;", -1, 0},
	    {"ttl = 60;\n refresh = 61;", -1, 0},
	    {"refresh = 1800;", -1, 0},
	};
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	char path[PATH_MAX], text[128];
	pbs_config *cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		snprintf(text, sizeof text, "lease: {\n %s\n};\n", rows[i].lease);
		write_file("refresh.conf", text, 0644, path, sizeof path);
		cfg = pbs_config_load(path, &r);
		if (rows[i].refresh < 0) {
			if (cfg != NULL || r.errors.count != 1)
				fail_msg("'%s': loaded, or not exactly one error", rows[i].lease);
			assert_non_null(strstr(r.errors.items[0], ": lease.refresh: "));
			assert_non_null(strstr(r.errors.items[0], "must be less than lease.ttl"));
		} else {
			if (cfg == NULL || cfg->lease.refresh != rows[i].refresh)
				fail_msg("'%s': refresh %d, expected %d", rows[i].lease,
				         cfg ? cfg->lease.refresh : -1, rows[i].refresh);
			if (r.warnings.count != rows[i].warnings)
				fail_msg("'%s': %zu warning(s), expected %zu", rows[i].lease,
				         r.warnings.count, rows[i].warnings);
		}
		pbs_config_free(cfg);
		pbs_config_report_free(&r);
	}

	/* The error names the line of lease.refresh, and says what to do. */
	write_file("refresh.conf", "lease: {\n ttl = 60;\n refresh = 90;\n};\n", 0644, path,
	           sizeof path);
	assert_null(pbs_config_load(path, &r));
	assert_int_equal(r.errors.count, 1);
	snprintf(text, sizeof text, ":3: lease.refresh: 90 must be less than lease.ttl (60), or 0");
	assert_non_null(strstr(r.errors.items[0], text));
	pbs_config_report_free(&r);
	/* A warning line says why. */
	write_file("refresh.conf", "lease: {\n ttl = 60;\n refresh = 40;\n};\n", 0644, path,
	           sizeof path);
	cfg = pbs_config_load(path, &r);
	assert_non_null(cfg);
	assert_int_equal(r.warnings.count, 1);
	assert_non_null(strstr(r.warnings.items[0], ":3: warning: lease.refresh (40) is more "
	                                            "than half of lease.ttl (60)"));
	pbs_config_free(cfg);
	pbs_config_report_free(&r);
}

/* Run pbs_config_check(PATH) with stdout and stderr captured into OUT and ERR. */
static int run_check(const char *path, char *out, size_t outlen, char *err, size_t errlen)
{
	char opath[PATH_MAX], epath[PATH_MAX];
	int saved_out, saved_err, ofd, efd, rc;
	ssize_t n;

	snprintf(opath, sizeof opath, "%s/check.out", tmpdir);
	snprintf(epath, sizeof epath, "%s/check.err", tmpdir);
	ofd = open(opath, O_RDWR | O_CREAT | O_TRUNC, 0600);
	efd = open(epath, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(ofd >= 0 && efd >= 0);
	fflush(stdout);
	fflush(stderr);
	saved_out = dup(1);
	saved_err = dup(2);
	dup2(ofd, 1);
	dup2(efd, 2);
	rc = pbs_config_check(path);
	fflush(stdout);
	fflush(stderr);
	dup2(saved_out, 1);
	dup2(saved_err, 2);
	close(saved_out);
	close(saved_err);
	n = pread(ofd, out, outlen - 1, 0);
	out[n > 0 ? n : 0] = '\0';
	n = pread(efd, err, errlen - 1, 0);
	err[n > 0 ? n : 0] = '\0';
	close(ofd);
	close(efd);
	return rc;
}

/* The "-t" behaviour every program shares: what it prints, where, and its exit status. */
static void test_check(void **state)
{
	char out[4096], err[4096], path[PATH_MAX], want[PATH_MAX + 200];

	(void)state;
	assert_int_equal(run_check(D "/empty.conf", out, sizeof out, err, sizeof err), 0);
	assert_string_equal(out, D "/empty.conf: configuration OK\n");
	assert_string_equal(err, "");

	assert_int_equal(run_check(D "/bad-enum.conf", out, sizeof out, err, sizeof err),
	                 PBS_EX_CONFIG);
	assert_int_equal(PBS_EX_CONFIG, 78);
	assert_string_equal(out, "");
	assert_string_equal(err, D "/bad-enum.conf:2: milter.on_store_error: 'defer' is not one "
	                           "of tempfail, reject, accept\n");

	assert_int_equal(run_check(D "/bad-key.conf", out, sizeof out, err, sizeof err), 78);
	assert_string_equal(err, D "/bad-key.conf:2: unknown setting 'redis.hots'\n" D
	                           "/bad-key.conf:6: unknown setting 'lease.port'\n" D
	                           "/bad-key.conf:7: unknown setting 'lease.TTL'\n");

	assert_int_equal(run_check(D "/no-such.conf", out, sizeof out, err, sizeof err), 78);
	assert_string_equal(out, "");
	assert_string_equal(err, D "/no-such.conf: cannot read: No such file or directory\n");

	/* A warning does not fail the check, but is shown. */
	write_file("secret.conf", password_conf, 0644, path, sizeof path);
	assert_int_equal(run_check(path, out, sizeof out, err, sizeof err), 0);
	snprintf(want, sizeof want, "%s: configuration OK\n", path);
	assert_string_equal(out, want);
	snprintf(want, sizeof want,
	         "%s: warning: holds a Redis password but others can read it (chmod o-r)\n", path);
	assert_string_equal(err, want);
}

/* Errors are added to a report that already holds some, and a failed load returns NULL. */
static void test_report_accumulates(void **state)
{
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};

	(void)state;
	assert_null(pbs_config_load(D "/bad-enum.conf", &r));
	assert_int_equal(r.errors.count, 1);
	assert_null(pbs_config_load(D "/bad-mode.conf", &r));
	assert_int_equal(r.errors.count, 2);
	assert_string_equal(r.errors.items[1], D "/bad-mode.conf:2: milter.socket_mode: '0999' is "
	                                         "not an octal file mode such as \"0660\"");
	pbs_config_report_free(&r);
	assert_int_equal(r.errors.count, 0);
}

#define PATH108 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

/* The policy daemon's group: its defaults, and policy.listen in the milter's notation. */
/* limits and lease.sender: defaults, values, and what cannot act refused with its line. */
static void test_limits_group(void **state)
{
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	char path[PATH_MAX], want[PATH_MAX + 128];
	pbs_config *cfg;

	(void)state;
	write_file("limits.conf", "lease: { ttl = 600; };\n", 0644, path, sizeof path);
	cfg = load_ok(path, &r);
	assert_int_equal(cfg->limits.user_recipients_per_hour, 300);
	assert_int_equal(cfg->limits.lease_recipients_per_hour, 600);
	assert_int_equal(cfg->limits.suspend_after, 0);
	assert_int_equal(cfg->limits.suspend_for, 86400);
	assert_int_equal(cfg->lease.sender, PBS_SENDER_ANY);
	assert_true(pbs_config_limits_on(&cfg->limits));
	pbs_config_free(cfg);
	write_file("limits.conf",
	           "limits: { user_recipients_per_hour = 0; lease_recipients_per_hour = 0; };\n"
	           "lease: { sender = \"address\"; };\n",
	           0644, path, sizeof path);
	cfg = load_ok(path, &r);
	assert_false(pbs_config_limits_on(&cfg->limits));
	assert_int_equal(cfg->lease.sender, PBS_SENDER_ADDRESS);
	pbs_config_free(cfg);
	write_file("limits.conf",
	           "limits: { user_recipients_per_hour = 20; lease_recipients_per_hour = 0;\n"
	           "  suspend_after = 3; suspend_for = 600; };\n",
	           0644, path, sizeof path);
	cfg = load_ok(path, &r);
	assert_int_equal(cfg->limits.suspend_after, 3);
	assert_int_equal(cfg->limits.suspend_for, 600);
	pbs_config_free(cfg);
	/* A suspension by a limit with no limit on could never happen: refused, at its line. */
	write_file("limits.conf",
	           "limits: {\n  user_recipients_per_hour = 0;\n  lease_recipients_per_hour = 0;\n"
	           "  suspend_after = 3;\n};\n",
	           0644, path, sizeof path);
	assert_null(pbs_config_load(path, &r));
	snprintf(want, sizeof want, "%s:4: limits.suspend_after: ", path);
	assert_int_equal(r.errors.count, 1);
	assert_true(strncmp(r.errors.items[0], want, strlen(want)) == 0);
	pbs_config_report_free(&r);
	write_file("limits.conf", "lease: { sender = \"user\"; };\n", 0644, path, sizeof path);
	assert_null(pbs_config_load(path, &r));
	assert_int_equal(r.errors.count, 1);
	assert_non_null(strstr(r.errors.items[0], "lease.sender"));
	pbs_config_report_free(&r);
	write_file("limits.conf", "limits: { suspend_for = 0; };\n", 0644, path, sizeof path);
	assert_null(pbs_config_load(path, &r));
	assert_int_equal(r.errors.count, 1);
	pbs_config_report_free(&r);
}

static void test_policy_group(void **state)
{
	pbs_config_report r = {{NULL, 0}, {NULL, 0}};
	char path[PATH_MAX], want[PATH_MAX + 128];
	pbs_config *cfg;
	const char *bad[] = {"tcp:10027", "unix:relative/policy.sock", "inet:0@127.0.0.1",
	                     "inet:10027@", "inet:port@127.0.0.1", "unix:/" PATH108 "aaaa"};
	size_t i;

	(void)state;
	write_file("policy.conf", "policy: { max_connections = 10; };\n", 0644, path, sizeof path);
	cfg = load_ok(path, &r);
	assert_string_equal(cfg->policy.listen, "unix:/run/popbsmtp-policy/policy.sock");
	assert_int_equal(cfg->policy.socket_mode, 0660);
	assert_string_equal(cfg->policy.socket_group, "");
	assert_string_equal(cfg->policy.user, "popbsmtp");
	assert_int_equal(cfg->policy.max_connections, 10);
	assert_int_equal(cfg->policy.idle_timeout, 600);
	pbs_config_free(cfg);
	write_file("policy.conf", "policy: { listen = \"inet:10027@127.0.0.1\"; };\n", 0644, path,
	           sizeof path);
	pbs_config_free(load_ok(path, &r));
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char text[300];

		snprintf(text, sizeof text, "\npolicy: { listen = \"%s\"; };\n", bad[i]);
		write_file("policy.conf", text, 0644, path, sizeof path);
		if ((cfg = pbs_config_load(path, &r)) != NULL) {
			pbs_config_free(cfg);
			fail_msg("policy.listen = \"%s\" was accepted", bad[i]);
		}
		snprintf(want, sizeof want, "%s:2: policy.listen: ", path);
		if (r.errors.count != 1 || strncmp(r.errors.items[0], want, strlen(want)) != 0) {
			print_report(&r);
			fail_msg("policy.listen = \"%s\" was not refused as such", bad[i]);
		}
		pbs_config_report_free(&r);
	}
	pbs_config_report_free(&r);
}

/* "a.b.c" given a group as its value: "a: { b: { c = { x = 1; }; }; };" into OUT. */
static void nested_text(const char *name, char *out, size_t len)
{
	char copy[128], *part, *save = NULL;
	size_t depth = 0, o = 0, i;

	snprintf(copy, sizeof copy, "%s", name);
	for (part = strtok_r(copy, ".", &save); part != NULL; part = strtok_r(NULL, ".", &save)) {
		o += (size_t)snprintf(out + o, len - o, "%s%s ", part,
		                      strchr(name + (part - copy), '.') ? ": {" : " = {");
		depth++;
	}
	o += (size_t)snprintf(out + o, len - o, "x = 1;");
	for (i = 0; i < depth; i++)
		o += (size_t)snprintf(out + o, len - o, " };");
	snprintf(out + o, len - o, "\n");
}

/* pbs_config_key_names() lists exactly the keys the loader knows: each one, given a value
 * of the wrong type (a group), is reported as that key, never as an unknown setting. */
static void test_key_names(void **state)
{
	const char *const *names = pbs_config_key_names();
	size_t i, j, n = 0, known = 0;

	(void)state;
	assert_non_null(names);
	for (i = 0; names[i] != NULL; i++) {
		pbs_config_report r = {{NULL, 0}, {NULL, 0}};
		char group[32], text[256], path[PATH_MAX], want[PATH_MAX + 64];
		const char *dot = strchr(names[i], '.');
		pbs_config *cfg;
		bool found = false;

		n++;
		assert_non_null(dot);
		assert_true((size_t)(dot - names[i]) < sizeof group);
		memcpy(group, names[i], (size_t)(dot - names[i]));
		group[dot - names[i]] = '\0';
		assert_true(strcmp(group, "redis") == 0 || strcmp(group, "lease") == 0 ||
		            strcmp(group, "milter") == 0 || strcmp(group, "policy") == 0 ||
		            strcmp(group, "usage") == 0 || strcmp(group, "limits") == 0);
		for (j = 0; j < i; j++)
			if (strcmp(names[i], names[j]) == 0)
				fail_msg("%s is listed twice", names[i]);
		nested_text(names[i], text, sizeof text);
		write_file("key.conf", text, 0644, path, sizeof path);
		cfg = pbs_config_load(path, &r);
		assert_null(cfg);
		/* A nested group may draw one more error of its own (e.g. sentinel without nodes). */
		assert_true(r.errors.count >= 1 && r.errors.count <= 2);
		snprintf(want, sizeof want, "%s:1: %s: expected ", path, names[i]);
		for (j = 0; j < r.errors.count; j++)
			found = found || strncmp(r.errors.items[j], want, strlen(want)) == 0;
		if (!found)
			fail_msg("%s: got '%s'", names[i], r.errors.items[0]);
		pbs_config_report_free(&r);
	}
	/* and the list is not trivially short: keys from every group are in it */
	for (i = 0; i < n; i++)
		if (strcmp(names[i], "redis.port") == 0 || strcmp(names[i], "lease.ttl") == 0 ||
		    strcmp(names[i], "milter.on_store_error") == 0)
			known++;
	assert_int_equal(known, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty_file_gives_defaults),
	    cmocka_unit_test(test_default_trusted_matches_loopback),
	    cmocka_unit_test(test_full_file),
	    cmocka_unit_test(test_socket_unsets_host),
	    cmocka_unit_test(test_syntax_error),
	    cmocka_unit_test(test_unknown_group),
	    cmocka_unit_test(test_unknown_key),
	    cmocka_unit_test(test_wrong_type),
	    cmocka_unit_test(test_out_of_range),
	    cmocka_unit_test(test_bad_cidr),
	    cmocka_unit_test(test_host_and_socket),
	    cmocka_unit_test(test_bad_mode),
	    cmocka_unit_test(test_bad_enum),
	    cmocka_unit_test(test_many_errors),
	    cmocka_unit_test(test_missing_file),
	    cmocka_unit_test(test_missing_include),
	    cmocka_unit_test(test_include_directory),
	    cmocka_unit_test(test_include_long_integer),
	    cmocka_unit_test(test_include_long_name),
	    cmocka_unit_test(test_include_too_many),
	    cmocka_unit_test(test_include_long_line),
	    cmocka_unit_test(test_include_as_libconfig_reads),
	    cmocka_unit_test(test_include_escaped_quote),
	    cmocka_unit_test(test_include_depth),
	    cmocka_unit_test(test_main_not_regular),
	    cmocka_unit_test(test_include_relative_to_file),
	    cmocka_unit_test(test_include_error_names_file),
	    cmocka_unit_test(test_line_table),
	    cmocka_unit_test(test_huge_int_without_suffix),
	    cmocka_unit_test(test_password_mode_warning),
	    cmocka_unit_test(test_lease_refresh),
	    cmocka_unit_test(test_check),
	    cmocka_unit_test(test_report_accumulates),
	    cmocka_unit_test(test_key_names),
	    cmocka_unit_test(test_policy_group),
	    cmocka_unit_test(test_limits_group),
	};

	return cmocka_run_group_tests_name("config", tests, make_tmpdir, remove_tmpdir);
}
