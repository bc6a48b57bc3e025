/*
 * request.h — reading Postfix's SMTPD access policy requests (the attribute protocol of
 * SMTPD_POLICY_README): "name=value" lines, a request ends with an empty line. Only the
 * attributes the gate uses are kept, in fixed buffers, so memory stays bounded whatever
 * arrives; a request that breaks the protocol is still read to its end (the reply must
 * stay in step with Postfix) and carries the first thing wrong with it.
 */
#ifndef POPBSMTP_POLICY_REQUEST_H
#define POPBSMTP_POLICY_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "popbsmtp/addr.h"
#include "popbsmtp/lease.h"
#include "popbsmtp/log.h"
#include "popbsmtp/policy.h"

/* Longest "name=value" line, newline excluded; Postfix's longest attributes (addresses,
 * certificate names) are far shorter. A longer line makes the request malformed. */
#define PBS_REQUEST_LINE_MAX 4096
/* Most bytes one request may have, newlines and the empty line included. */
#define PBS_REQUEST_MAX 65536

/* The attributes kept; every other name is ignored, as SMTPD_POLICY_README asks. */
struct pbs_request {
	char request[32];                      /* "smtpd_access_policy" */
	char protocol_state[16];               /* "RCPT" */
	char client_address[PBS_ADDR_STRLEN];  /* without brackets or "IPv6:" */
	char sasl_username[PBS_USER_MAX + 1];  /* only its being set counts: may be cut */
	char recipient[PBS_LOG_SAFE_MAX];      /* for the log line: may be cut */
	char sender[PBS_SENDER_MAX];           /* MAIL FROM for lease.sender: may be cut */
	char queue_id[64];                     /* for the log line: may be cut */
	char instance[64];                     /* the same for every recipient of a message */
	char popbsmtp_gate[16];                /* "exim" from acl_popbsmtp: counted as that */
	unsigned seen;                         /* one bit per attribute above */
	char problem[200];                     /* the first protocol error, "" if none */
};

struct pbs_request_parser {
	struct pbs_request req;   /* the request being read */
	char line[PBS_REQUEST_LINE_MAX];
	size_t line_len;
	bool line_too_long;       /* the rest of this line is skipped */
	size_t bytes;             /* of the request so far */
};

/* Start reading the first (or next) request. */
void pbs_request_begin(struct pbs_request_parser *p);

/* Take bytes of DATA (LEN) up to the end of a request. Returns how many it took; sets
 * *COMPLETE when a request ended there: answer it, then pbs_request_begin() and feed the
 * rest. */
size_t pbs_request_feed(struct pbs_request_parser *p, const char *data, size_t len,
			bool *complete);

/* True when bytes of an unfinished request were read: EOF now cuts a request short. */
bool pbs_request_partial(const struct pbs_request_parser *p);

/* True when REQ carried attribute NAME (one of the struct's field names). */
bool pbs_request_has(const struct pbs_request *req, const char *name);

#endif
