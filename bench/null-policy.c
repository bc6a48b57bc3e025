/*
 * null-policy.c — the benchmark baseline for the policy gate: a Postfix SMTPD access
 * policy server that answers every request "action=OK" without reading it. Run by
 * spawn(8) like popbsmtp-policy (requests on stdin, replies on stdout, until EOF), so
 * the difference between the two is popbsmtp-policy's own work: parsing, deciding,
 * the lease lookup and the log line.
 */
#include <unistd.h>

/* Answer once per empty line: a request ends with "\n\n". */
int main(void)
{
	static const char reply[] = "action=OK\n\n";
	char buf[16384];
	ssize_t n, i;
	char prev = '\n';

	while ((n = read(STDIN_FILENO, buf, sizeof buf)) > 0) {
		for (i = 0; i < n; i++) {
			if (buf[i] == '\n' && prev == '\n' &&
			    write(STDOUT_FILENO, reply, sizeof reply - 1) != sizeof reply - 1)
				return 1;
			prev = buf[i];
		}
	}
	return 0;
}
