/*
 * log.c — syslog (mail facility) plus an optional copy on stderr, and the sanitizer
 * that keeps user-supplied values from breaking or forging log lines.
 */
#include "popbsmtp/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *log_ident = "popbsmtp";
static int log_stderr_level = PBS_LOG_NO_STDERR;

/* True when stderr is the systemd journal: systemd then sets JOURNAL_STREAM to its
 * "DEVICE:INODE". syslog reaches the journal too, so a copy would log every line twice. */
static bool stderr_is_journal(void)
{
	const char *stream = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char extra;

	if (stream == NULL || sscanf(stream, "%llu:%llu%c", &dev, &ino, &extra) != 2 ||
	    fstat(STDERR_FILENO, &st) != 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void pbs_log_open(const char *ident, int stderr_level)
{
	log_ident = ident;
	log_stderr_level = stderr_is_journal() ? PBS_LOG_NO_STDERR : stderr_level;
	/* LOG_NDELAY: connect now, so a later chroot or privilege drop cannot cut us off. */
	openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void pbs_log(int priority, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	syslog(priority, "%s", line);
	if (priority <= log_stderr_level)
		fprintf(stderr, "%s: %s\n", log_ident, line);
}

void pbs_log_relay(const char *what, const char *client, const char *rcpt, const char *reason,
		   const char *user, const char *qid)
{
	char safe_rcpt[PBS_LOG_SAFE_MAX], safe_qid[PBS_LOG_SAFE_MAX];

	pbs_log(LOG_INFO, "relay %s: client=%s rcpt=%s reason=%s%s%s queue=%s", what, client,
		pbs_log_safe(rcpt, safe_rcpt), reason, user ? " user=" : "", user ? user : "",
		qid ? pbs_log_safe(qid, safe_qid) : "-");
}

const char *pbs_log_safe(const char *in, char out[PBS_LOG_SAFE_MAX])
{
	static const char hex[] = "0123456789abcdef";
	const size_t room = PBS_LOG_SAFE_MAX - sizeof "...";
	size_t o = 0;

	if (in == NULL) {
		strcpy(out, "(none)");
		return out;
	}
	for (; *in != '\0'; in++) {
		unsigned char c = (unsigned char)*in;
		size_t need = (c < 0x20 || c >= 0x7f || c == '\\') ? 4 : 1;

		if (o + need > room) {
			strcpy(out + o, "...");
			return out;
		}
		if (need == 1) {
			out[o++] = (char)c;
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return out;
}
