/*
 * null-postlogin.c — the do-nothing Dovecot post-login script, the baseline of bench/run's
 * login benchmark (as null-milter is the milter's). It takes popbsmtp-postlogin's options
 * and ignores them, then execs the rest of its argv as a post-login script must, so a
 * Dovecot running it pays for the post-login machinery (script-login, one more exec) and
 * nothing else: the difference to popbsmtp-postlogin is popbsmtp's own work.
 *
 *   null-postlogin [-c FILE] [-s SERVICE] command [args...]
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	while (getopt(argc, argv, "+c:s:") != -1)
		;
	if (optind >= argc) {
		fprintf(stderr, "usage: null-postlogin [-c FILE] [-s SERVICE] command [args...]\n");
		return 1;
	}
	execv(argv[optind], argv + optind);
	fprintf(stderr, "null-postlogin: cannot exec %s: %s\n", argv[optind], strerror(errno));
	return 1;
}
