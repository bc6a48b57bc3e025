/*
 * log.c — syslog (mail facility) plus an optional copy on stderr, and the sanitizers
 * that keep user-supplied values from breaking or forging log lines: pbs_log_safe for a
 * value, and for the whole line, in pbs_log itself, an escape of every control byte.
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
	char line[PBS_LOG_LINE_MAX], safe[PBS_LOG_UNCTRL_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	/* Whatever a caller passed, the line stays one line and cannot forge another. */
	pbs_log_unctrl(line, safe, sizeof safe);
	syslog(priority, "%s", safe);
	if (priority <= log_stderr_level)
		fprintf(stderr, "%s: %s\n", log_ident, safe);
}

void pbs_log_relay(const char *what, const char *client, const char *rcpt, const char *reason,
		   const char *user, const char *lease, const char *qid)
{
	char safe_rcpt[PBS_LOG_SAFE_MAX], safe_qid[PBS_LOG_SAFE_MAX];

	pbs_log(LOG_INFO, "relay %s: client=%s rcpt=%s reason=%s%s%s%s%s queue=%s", what, client,
		pbs_log_safe(rcpt, safe_rcpt), reason, user ? " user=" : "", user ? user : "",
		user ? " lease=" : "", user ? lease : "", qid ? pbs_log_safe(qid, safe_qid) : "-");
}

void pbs_log_suspended(const char *user, const char *limit, int after, int seconds,
		       const char *client, const char *lease)
{
	pbs_log(LOG_WARNING, "suspended: user=%s reason=rate-limit limit=%s after=%d for=%d "
		"client=%s lease=%s", user, limit, after, seconds, client, lease);
}

/* Copy IN into OUT (OUTSIZE bytes, at least 4) with control bytes, and when STRICT also
 * backslashes and non-ASCII bytes, as \xHH; cut with "..." where it does not fit. */
static const char *log_escape(const char *in, char *out, size_t outsize, bool strict)
{
	static const char hex[] = "0123456789abcdef";
	const size_t room = outsize - sizeof "...";
	size_t o = 0;

	for (; *in != '\0'; in++) {
		unsigned char c = (unsigned char)*in;
		bool escape = c < 0x20 || c == 0x7f || (strict && (c > 0x7f || c == '\\'));
		size_t need = escape ? 4 : 1;

		if (o + need > room) {
			strcpy(out + o, "...");
			return out;
		}
		if (!escape) {
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

const char *pbs_log_safe(const char *in, char out[PBS_LOG_SAFE_MAX])
{
	if (in == NULL) {
		strcpy(out, "(none)");
		return out;
	}
	return log_escape(in, out, PBS_LOG_SAFE_MAX, true);
}

const char *pbs_log_unctrl(const char *in, char *out, size_t outsize)
{
	return log_escape(in, out, outsize, false);
}
