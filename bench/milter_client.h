/*
 * milter_client.h — the MTA side of the milter wire protocol, version 6, spoken directly the
 * way Postfix's milter8.c does: one connection per SMTP session, option negotiation that
 * offers every action and protocol step, macros sent just before their stage, and the
 * Postfix bookkeeping of what may still be sent after an accept or reject (libmilter
 * silently ignores a command its state machine does not expect, which would look like a
 * hang). Every read and write is bounded by the timeout; all state lives in the handle.
 */
#ifndef PBS_BENCH_MILTER_CLIENT_H
#define PBS_BENCH_MILTER_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <libmilter/mfdef.h> /* the wire constants: SMFIC_*, SMFIR_*, SMFIP_*, SMFIA_* */

#define PBS_MILTER_VERSION 6 /* protocol version we announce */
/* Actions offered, as Postfix 3.x: ADDHDRS CHGBODY ADDRCPT DELRCPT CHGHDRS QUARANTINE
 * CHGFROM ADDRCPT_PAR SETSYMLIST (the SMFIF_* bits of mfapi.h). */
#define PBS_MILTER_ACTIONS 0x1ffu
/* Steps offered, as Postfix's MILTER8_V6_PROTO_MASK: every SMFIP_ bit up to HDR_LEADSPC. */
#define PBS_MILTER_STEPS 0x1fffffu
#define PBS_MILTER_MAX_PACKET (1u << 20) /* longest reply we accept from a milter */

/* The SMTP stages a client can send; the order is the SMFIM_* macro class order. */
enum pbs_milter_stage {
	PBS_MILTER_CONNECT,
	PBS_MILTER_HELO,
	PBS_MILTER_MAIL,
	PBS_MILTER_RCPT,
	PBS_MILTER_NSTAGES
};

/* What became of one stage. */
enum pbs_milter_status {
	PBS_MILTER_REPLIED, /* sent; cmd (and text) hold the milter's answer */
	PBS_MILTER_NOREPLY, /* sent; the milter negotiated SMFIP_NR_* for it, so none is read */
	PBS_MILTER_SKIPPED, /* not sent: the milter negotiated SMFIP_NO* for it */
	PBS_MILTER_NOTSENT  /* not sent: an earlier decision ended filtering, as in Postfix */
};

typedef struct pbs_milter_reply {
	enum pbs_milter_status status;
	char cmd;         /* SMFIR_* character when REPLIED, else 0 */
	const char *text; /* SMFIR_REPLYCODE text, NUL-terminated, owned by the client; "" else */
	int malformed;    /* REPLYCODE text Postfix would refuse (and tempfail the session) */
} pbs_milter_reply;

enum pbs_milter_error {
	PBS_MILTER_OK,
	PBS_MILTER_ECONNECT, /* could not reach the milter */
	PBS_MILTER_ETIMEOUT, /* the milter did not answer (or take data) in time */
	PBS_MILTER_EIO,      /* read/write failure, or the milter closed the connection */
	PBS_MILTER_EPROTO,   /* the milter broke the protocol */
	PBS_MILTER_EUSAGE,   /* the caller asked for something impossible */
	PBS_MILTER_ENOMEM
};

/* A growable byte buffer. */
typedef struct pbs_milter_buf {
	unsigned char *data;
	size_t len, cap;
	int failed; /* an append ran out of memory */
} pbs_milter_buf;

typedef struct pbs_milter_client {
	int fd;
	int timeout_ms; /* for connect + negotiation, and for each command and its reply */
	int state;      /* private: where the session is, see milter_client.c */
	int in_mail;    /* a MAIL was passed and no decision closed the transaction */
	/* Negotiated: the milter's answer to our OPTNEG. */
	uint32_t version, actions, steps;
	char *symlist[7]; /* macro lists it asked for per SMFIM_* class (SETSYMLIST), or NULL */
	pbs_milter_buf macros[PBS_MILTER_NSTAGES]; /* queued name\0value\0 pairs per stage */
	pbs_milter_buf out;                        /* packets not yet written */
	unsigned char *in;                         /* received bytes */
	size_t in_start, in_end, in_cap;
	char *text; /* last REPLYCODE text */
	size_t text_cap;
	enum pbs_milter_error err;
	char errstr[256];
} pbs_milter_client;

/* Prepare a handle; no I/O. timeout_ms bounds every blocking step. */
void pbs_milter_client_init(pbs_milter_client *c, int timeout_ms);

/* Connect to "unix:/path", "local:/path", "inet:PORT@HOST", "inet6:PORT@HOST" or
 * "inet:PORT" (localhost), then negotiate options. 0 or -1 (err/errstr set). */
int pbs_milter_client_open(pbs_milter_client *c, const char *spec);

/* Queue macro NAME=VALUE for the next event of STAGE; sent just before it, like Postfix
 * even when the milter skips that stage. 0 or -1. */
int pbs_milter_client_macro(pbs_milter_client *c, enum pbs_milter_stage stage, const char *name,
                            const char *value);

/* SMFIC_CONNECT. family is SMFIA_INET/INET6 (addr = address text), SMFIA_UNIX (addr = path)
 * or SMFIA_UNKNOWN (no port, no address). 0 with *r filled, or -1. */
int pbs_milter_client_connect(pbs_milter_client *c, const char *hostname, char family,
                              uint16_t port, const char *addr, pbs_milter_reply *r);

/* SMFIC_HELO with the HELO/EHLO argument. */
int pbs_milter_client_helo(pbs_milter_client *c, const char *name, pbs_milter_reply *r);

/* SMFIC_MAIL; argv is the sender (normally "<addr>") then ESMTP arguments, NULL-terminated.
 * A transaction still open is aborted first, as smtpd's mail_reset() does. */
int pbs_milter_client_mail(pbs_milter_client *c, const char *const *argv, pbs_milter_reply *r);

/* SMFIC_RCPT; argv as for MAIL. Not sent outside a transaction the milter let through. */
int pbs_milter_client_rcpt(pbs_milter_client *c, const char *const *argv, pbs_milter_reply *r);

/* SMFIC_ABORT (no reply): end the transaction. */
int pbs_milter_client_abort(pbs_milter_client *c);

/* SMFIC_QUIT (no reply) and close. A no-op when already closed. */
int pbs_milter_client_quit(pbs_milter_client *c);

/* Close the connection without QUIT; the handle can be opened again. */
void pbs_milter_client_close(pbs_milter_client *c);

/* Close and release every buffer. */
void pbs_milter_client_free(pbs_milter_client *c);

/* A word for a reply: "continue", "accept", "reject", "tempfail", "replycode", ... */
const char *pbs_milter_reply_name(const pbs_milter_reply *r);

/* The SMFIP_NO* (skipped stage) or SMFIP_NR_* (no reply) bit of a stage. */
uint32_t pbs_milter_stage_nobit(enum pbs_milter_stage stage);
uint32_t pbs_milter_stage_nrbit(enum pbs_milter_stage stage);

#endif
