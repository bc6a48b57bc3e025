/*
 * log.h — one logging sink for every popbsmtp program: syslog (mail facility) and,
 * when asked, stderr. Values that come from the network or from users go through
 * pbs_log_safe() first so a log line stays one line and cannot be forged.
 */
#ifndef POPBSMTP_LOG_H
#define POPBSMTP_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

/* Longest sanitized value pbs_log_safe() produces, with its terminating NUL. */
#define PBS_LOG_SAFE_MAX 200

/* Longest line pbs_log() formats (longer ones are cut), and the room that line needs
 * once pbs_log_unctrl() has escaped it. */
#define PBS_LOG_LINE_MAX 1024
#define PBS_LOG_UNCTRL_MAX (4 * PBS_LOG_LINE_MAX)

#define PBS_LOG_NO_STDERR (-1)

/* Start logging as IDENT to syslog; also copy lines at STDERR_LEVEL or more severe to
 * stderr (LOG_DEBUG: all; LOG_WARNING: only trouble; PBS_LOG_NO_STDERR: none) — unless
 * stderr is the systemd journal, which gets the syslog lines already. */
void pbs_log_open(const char *ident, int stderr_level);

/* Log one line at PRIORITY (LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG). Control bytes
 * in the formatted line are written as \xHH (pbs_log_unctrl): a line is always one line. */
void pbs_log(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One line per relay decision, the same from both gates so log readers see one
 * vocabulary: "relay WHAT: client=CLIENT rcpt=RCPT reason=REASON[ user=USER lease=LEASE]
 * queue=QID". CLIENT is canonical address text; RCPT and QID come from the MTA and are
 * sanitized here (QID NULL: "-"); USER, NULL when no lease was shown, is already
 * sanitized; LEASE is the lease's subject (address or network text). */
void pbs_log_relay(const char *what, const char *client, const char *rcpt, const char *reason,
		   const char *user, const char *lease, const char *qid);

/* The line an alert matches when a gate suspends a user for refusals by a relay limit
 * (limits.suspend_after): "suspended: user=USER reason=rate-limit limit=LIMIT after=N
 * for=SECONDS client=CLIENT lease=LEASE". USER is already sanitized. */
void pbs_log_suspended(const char *user, const char *limit, int after, int seconds,
		       const char *client, const char *lease);

/* Copy IN into OUT (PBS_LOG_SAFE_MAX bytes) with control and non-ASCII bytes as \xHH,
 * truncated with "..." when long; NULL becomes "(none)". Returns OUT. */
const char *pbs_log_safe(const char *in, char out[PBS_LOG_SAFE_MAX]);

/* Copy IN into OUT (OUTSIZE bytes) with control bytes (0x00-0x1f, 0x7f) as \xHH and nothing
 * else changed, so what pbs_log_safe() produced is not escaped twice; cut with "..." when
 * it does not fit (PBS_LOG_UNCTRL_MAX always fits a PBS_LOG_LINE_MAX line). For whole
 * lines on their way to a log or a terminal. Returns OUT. */
const char *pbs_log_unctrl(const char *in, char *out, size_t outsize);

#endif
