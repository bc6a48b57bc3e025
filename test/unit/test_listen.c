/*
 * test_listen.c — the milter's socket notation as lib/listen.c reads it for the policy
 * daemon: which specs are valid (a table), and a unix listener's life in a temp dir: a
 * stale socket replaced, a plain file refused and kept, and at close only the node it made
 * removed (not one put in its place).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "popbsmtp/listen.h"
#include "popbsmtp/log.h"

static const struct {
	const char *spec;
	bool valid;
	const char *path; /* pbs_listen_unix_path, NULL for inet */
} rows[] = {
    {"unix:/run/popbsmtp-policy/policy.sock", true, "/run/popbsmtp-policy/policy.sock"},
    {"local:/run/x.sock", true, "/run/x.sock"},
    {"/run/x.sock", true, "/run/x.sock"},
    {"unix:relative.sock", false, "relative.sock"},
    {"unix:", false, ""},
    {"inet:10040@127.0.0.1", true, NULL},
    {"inet:10040@[::1]", true, NULL},
    {"inet6:10040@::1", true, NULL},
    {"inet:10040", true, NULL},
    {"inet:0@127.0.0.1", false, NULL},
    {"inet:65536@127.0.0.1", false, NULL},
    {"inet:10040@", false, NULL},
    {"inet:@127.0.0.1", false, NULL},
    {"inet:port@127.0.0.1", false, NULL},
    {"inet:12ab@127.0.0.1", false, NULL},
    {"tcp:10040", false, NULL},
    {"", false, NULL},
};

static void test_specs(void **state)
{
	char spec[200] = "unix:/";
	size_t i, bad = 0;
	const char *path;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		path = pbs_listen_unix_path(rows[i].spec);
		if (pbs_listen_valid(rows[i].spec) != rows[i].valid ||
		    (path == NULL) != (rows[i].path == NULL) ||
		    (path != NULL && strcmp(path, rows[i].path) != 0)) {
			print_message("row %zu '%s': valid %d, path '%s'\n", i, rows[i].spec,
				      pbs_listen_valid(rows[i].spec), path ? path : "(inet)");
			bad++;
		}
	}
	/* The longest path a sockaddr_un holds is 107 bytes. */
	memset(spec + 6, 'a', 106);
	spec[112] = '\0';
	if (!pbs_listen_valid(spec)) {
		print_message("a 107-byte path is refused\n");
		bad++;
	}
	strcat(spec, "a");
	if (pbs_listen_valid(spec)) {
		print_message("a 108-byte path is accepted\n");
		bad++;
	}
	assert_int_equal(bad, 0);
}

/* A socket node at PATH nobody listens on. */
static void stale_socket(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(sun.sun_path, path);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
	close(fd);
}

static void test_unix_life(void **state)
{
	char dir[] = "/tmp/pbs-test-listen.XXXXXX", path[128], spec[140], moved[140];
	struct pbs_listener l;
	struct stat st;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/policy.sock", dir);
	snprintf(spec, sizeof spec, "unix:%s", path);
	snprintf(moved, sizeof moved, "%s/moved.sock", dir);

	/* a plain file at the path: refused, kept */
	assert_non_null(f = fopen(path, "w"));
	fputs("precious\n", f);
	fclose(f);
	assert_int_equal(pbs_listen_open(spec, 8, &l), -1);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	unlink(path);

	/* a stale socket: replaced; closed: removed */
	stale_socket(path);
	assert_int_equal(pbs_listen_open(spec, 8, &l), 0);
	assert_true(l.fd >= 0);
	pbs_listen_close(&l);
	assert_int_equal(lstat(path, &st), -1);

	/* another node put in its place while it ran: left alone at close */
	assert_int_equal(pbs_listen_open(spec, 8, &l), 0);
	assert_int_equal(rename(path, moved), 0);
	stale_socket(path);
	pbs_listen_close(&l);
	assert_int_equal(lstat(path, &st), 0);
	unlink(path);
	unlink(moved);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_specs),
	    cmocka_unit_test(test_unix_life),
	};

	pbs_log_open("test_listen", PBS_LOG_NO_STDERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
