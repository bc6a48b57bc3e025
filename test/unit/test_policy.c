/*
 * test_policy.c — the relay decision and the recipient classification the milter builds
 * it from. The decision is checked row by row against the documented rule order, then
 * every combination of facts is checked against the safety rules that must hold
 * whatever the order: an unleased relay is never allowed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "popbsmtp/policy.h"

#include "table.h"

static const char *verdict_name(enum pbs_verdict v)
{
	switch (v) {
	case PBS_VERDICT_ALLOW:
		return "ALLOW";
	case PBS_VERDICT_REJECT:
		return "REJECT";
	case PBS_VERDICT_TEMPFAIL:
		return "TEMPFAIL";
	case PBS_VERDICT_NEED_LEASE:
		return "NEED_LEASE";
	}
	return "?";
}

/* Shorthands for the table. */
#define T true
#define F false
#define UNK PBS_LEASE_UNKNOWN
#define LIVE PBS_LEASE_LIVE
#define NONE PBS_LEASE_NONE
#define SERR PBS_LEASE_STORE_ERROR
#define TEMP PBS_ON_ERROR_TEMPFAIL
#define REJ PBS_ON_ERROR_REJECT
#define ACC PBS_ON_ERROR_ACCEPT
#define SUSP PBS_LEASE_SUSPENDED
#define OVER PBS_LEASE_OVER_LIMIT
#define ANY PBS_SENDER_ANY
#define DOM PBS_SENDER_DOMAIN
#define ADDR PBS_SENDER_ADDRESS

/* An MTA for the failure messages. */
static const char *mta_name(enum pbs_mta mta)
{
	return mta == PBS_MTA_POSTFIX ? "Postfix" : mta == PBS_MTA_SENDMAIL ? "Sendmail" : "unknown MTA";
}

struct decide_row {
	/* trusted, authenticated, relay, never, lease, on_error, counted, sender rule, lease's
	 * user, sender */
	struct pbs_policy_facts facts;
	enum pbs_verdict verdict;
	const char *reason;
};

static const struct decide_row decide_rows[] = {
    /* trusted networks may relay, whatever else is true */
    {{T, F, T, F, UNK, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "trusted"},
    {{T, F, T, T, NONE, REJ, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "trusted"},
    {{T, T, T, F, SERR, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "trusted"},
    {{T, F, F, F, UNK, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "trusted"},
    /* SMTP AUTH may relay, even from a never-lease network or without a lease */
    {{F, T, T, F, UNK, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "auth"},
    {{F, T, T, T, NONE, REJ, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "auth"},
    {{F, T, T, F, SERR, REJ, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "auth"},
    {{F, T, F, F, UNK, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "auth"},
    /* mail for this site needs no lease, and no lookup */
    {{F, F, F, F, UNK, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "local"},
    {{F, F, F, T, UNK, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "local"},
    {{F, F, F, F, NONE, REJ, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "local"},
    {{F, F, F, F, SERR, REJ, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "local"},
    /* lease.never: refused before any lookup, and a lease does not help */
    {{F, F, T, T, UNK, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_REJECT, "never-lease"},
    {{F, F, T, T, LIVE, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_REJECT, "never-lease"},
    {{F, F, T, T, SERR, ACC, F, ANY, NULL, NULL}, PBS_VERDICT_REJECT, "never-lease"},
    /* relaying: the lease decides */
    {{F, F, T, F, UNK, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_NEED_LEASE, "lookup-needed"},
    {{F, F, T, F, UNK, ACC, F, ANY, NULL, NULL}, PBS_VERDICT_NEED_LEASE, "lookup-needed"},
    {{F, F, T, F, LIVE, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "lease"},
    {{F, F, T, F, LIVE, REJ, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "lease"},
    {{F, F, T, F, NONE, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_REJECT, "no-lease"},
    {{F, F, T, F, NONE, ACC, F, ANY, NULL, NULL}, PBS_VERDICT_REJECT, "no-lease"},
    /* the store failed: milter.on_store_error decides */
    {{F, F, T, F, SERR, TEMP, F, ANY, NULL, NULL}, PBS_VERDICT_TEMPFAIL, "store-error"},
    {{F, F, T, F, SERR, REJ, F, ANY, NULL, NULL}, PBS_VERDICT_REJECT, "store-error"},
    {{F, F, T, F, SERR, ACC, F, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "store-error"},
    /* a suspended user's lease relays nothing; a relay limit defers (even with accept) */
    {{F, F, T, F, SUSP, ACC, T, ANY, NULL, NULL}, PBS_VERDICT_REJECT, "user-suspended"},
    {{F, F, T, F, OVER, ACC, T, ANY, NULL, NULL}, PBS_VERDICT_TEMPFAIL, "rate-limit"},
    {{F, F, F, F, OVER, TEMP, T, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "local"},
    {{F, T, T, F, OVER, TEMP, T, ANY, NULL, NULL}, PBS_VERDICT_ALLOW, "auth"},
    {{F, F, T, F, LIVE, TEMP, T, ANY, "printer", NULL}, PBS_VERDICT_ALLOW, "lease"},
    /* lease.sender = address: MAIL FROM is the lease's user, compared without case */
    {{F, F, T, F, LIVE, TEMP, F, ADDR, "a@x.org", "<a@x.org>"}, PBS_VERDICT_ALLOW, "lease"},
    {{F, F, T, F, LIVE, TEMP, F, ADDR, "a@x.org", "A@X.Org"}, PBS_VERDICT_ALLOW, "lease"},
    {{F, F, T, F, LIVE, TEMP, F, ADDR, "a@x.org", "<b@x.org>"}, PBS_VERDICT_REJECT,
     "sender-address"},
    {{F, F, T, F, LIVE, TEMP, F, ADDR, "a@x.org", "<a@x.org.evil>"}, PBS_VERDICT_REJECT,
     "sender-address"},
    {{F, F, T, F, LIVE, TEMP, F, ADDR, "a@x.org", "<>"}, PBS_VERDICT_REJECT, "sender-address"},
    {{F, F, T, F, LIVE, TEMP, F, ADDR, "a@x.org", ""}, PBS_VERDICT_REJECT, "sender-address"},
    {{F, F, T, F, LIVE, TEMP, F, ADDR, "a@x.org", NULL}, PBS_VERDICT_REJECT, "sender-address"},
    {{F, F, T, F, LIVE, TEMP, F, ADDR, "a", "<a>"}, PBS_VERDICT_REJECT, "sender-address"},
    /* hostile forms fail closed: routes, quotes, '%', '!', several '@', literals */
    {{F, F, T, F, LIVE, TEMP, F, ADDR, "a@x.org", "<@evil.net:a@x.org>"}, PBS_VERDICT_REJECT,
     "sender-address"},
    {{F, F, T, F, LIVE, TEMP, F, ADDR, "a@x.org", "<\"a\"@x.org>"}, PBS_VERDICT_REJECT,
     "sender-address"},
    {{F, F, T, F, LIVE, TEMP, F, DOM, "a@x.org", "<b%evil.net@x.org>"}, PBS_VERDICT_REJECT,
     "sender-domain"},
    {{F, F, T, F, LIVE, TEMP, F, DOM, "a@x.org", "<evil.net!b@x.org>"}, PBS_VERDICT_REJECT,
     "sender-domain"},
    {{F, F, T, F, LIVE, TEMP, F, DOM, "a@x.org", "<b@evil.net@x.org>"}, PBS_VERDICT_REJECT,
     "sender-domain"},
    {{F, F, T, F, LIVE, TEMP, F, DOM, "a@x.org", "<b@[192.0.2.1]>"}, PBS_VERDICT_REJECT,
     "sender-domain"},
    {{F, F, T, F, LIVE, TEMP, F, DOM, "a@x.org", "<b@x.org.>"}, PBS_VERDICT_REJECT,
     "sender-domain"},
    /* lease.sender = domain: any sender of the user name's domain, no other */
    {{F, F, T, F, LIVE, TEMP, F, DOM, "a@x.org", "<b@x.org>"}, PBS_VERDICT_ALLOW, "lease"},
    {{F, F, T, F, LIVE, TEMP, F, DOM, "a@x.org", "b@X.ORG"}, PBS_VERDICT_ALLOW, "lease"},
    {{F, F, T, F, LIVE, TEMP, F, DOM, "a@x.org", "<b@sub.x.org>"}, PBS_VERDICT_REJECT,
     "sender-domain"},
    {{F, F, T, F, LIVE, TEMP, F, DOM, "a@x.org", "<b@xx.org>"}, PBS_VERDICT_REJECT,
     "sender-domain"},
    {{F, F, T, F, LIVE, TEMP, F, DOM, "alice", "<b@x.org>"}, PBS_VERDICT_REJECT,
     "sender-domain"},
    /* the rule binds only relay by lease */
    {{F, T, T, F, UNK, TEMP, F, ADDR, NULL, "<b@y.org>"}, PBS_VERDICT_ALLOW, "auth"},
    {{F, F, F, F, UNK, TEMP, F, ADDR, NULL, "<b@y.org>"}, PBS_VERDICT_ALLOW, "local"},
};

static void test_decide_table(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof decide_rows / sizeof decide_rows[0]; i++) {
		const struct decide_row *r = &decide_rows[i];
		const char *reason = NULL;
		enum pbs_verdict v = pbs_policy_decide(&r->facts, &reason);

		ROW_CHECK(v == r->verdict && reason != NULL && strcmp(reason, r->reason) == 0,
		          "row %zu (trusted=%d auth=%d relay=%d never=%d lease=%d on_error=%d): "
		          "got %s '%s', expected %s '%s'",
		          i + 1, r->facts.trusted, r->facts.authenticated, r->facts.relay,
		          r->facts.never_lease, (int)r->facts.lease, (int)r->facts.on_store_error,
		          verdict_name(v), reason ? reason : "(null)", verdict_name(r->verdict),
		          r->reason);
	}
	table_done("decide");
}

/* Every combination of facts, against rules that must hold whatever the order. */
static void test_decide_invariants(void **state)
{
	static const enum pbs_lease_state leases[] = {UNK, LIVE, NONE, SERR, SUSP, OVER};
	static const enum pbs_on_store_error errs[] = {TEMP, REJ, ACC};
	unsigned bits;
	size_t l, e, combos = 0;

	(void)state;
	for (bits = 0; bits < 32; bits++) {
		for (l = 0; l < 6; l++) {
			for (e = 0; e < 3; e++) {
				struct pbs_policy_facts f = {(bits & 1) != 0, (bits & 2) != 0,
				                             (bits & 4) != 0, (bits & 8) != 0,
				                             leases[l],       errs[e],
				                             (bits & 16) != 0, ANY, NULL, NULL};
				const char *reason = NULL;
				enum pbs_verdict v = pbs_policy_decide(&f, &reason);
				bool excused = f.trusted || f.authenticated || !f.relay;

				combos++;
				ROW_CHECK(reason != NULL && reason[0] != '\0',
				          "combination %u/%zu/%zu: no reason", bits, l, e);
				/* allowed relaying always has a cause */
				if (v == PBS_VERDICT_ALLOW && !excused)
					ROW_CHECK(!f.never_lease && (f.lease == LIVE ||
					                             (f.lease == SERR &&
					                              f.on_store_error == ACC)),
					          "combination %u/%zu/%zu: relay allowed without "
					          "lease",
					          bits, l, e);
				/* excused senders are never refused nor sent to the store */
				if (excused)
					ROW_CHECK(v == PBS_VERDICT_ALLOW,
					          "combination %u/%zu/%zu: excused sender got %s",
					          bits, l, e, verdict_name(v));
				/* a lookup is asked for only when none was made */
				if (v == PBS_VERDICT_NEED_LEASE)
					ROW_CHECK(f.lease == UNK && !excused && !f.never_lease,
					          "combination %u/%zu/%zu: pointless lookup", bits,
					          l, e);
				/* once looked up, the answer is final */
				if (f.lease != UNK)
					ROW_CHECK(v != PBS_VERDICT_NEED_LEASE,
					          "combination %u/%zu/%zu: asks again", bits, l, e);
				/* TEMPFAIL only for store trouble, when so configured, or
				 * a relay limit */
				if (v == PBS_VERDICT_TEMPFAIL)
					ROW_CHECK((f.lease == SERR && f.on_store_error == TEMP) ||
					              f.lease == OVER,
					          "combination %u/%zu/%zu: unexplained tempfail",
					          bits, l, e);
			}
		}
	}
	assert_int_equal(combos, 576);
	table_done("decide invariants");
}

/* ACCEPT for the whole message only when every later recipient would be allowed too. */
static void test_covers_message(void **state)
{
	static const enum pbs_lease_state leases[] = {UNK, LIVE, NONE, SERR, SUSP, OVER};
	static const enum pbs_on_store_error errs[] = {TEMP, REJ, ACC};
	static const struct {
		struct pbs_policy_facts facts;
		bool covers;
	} rows[] = {
	    {{T, F, F, F, UNK, TEMP, F, ANY, NULL, NULL}, true},   /* trusted, even at a local first recipient */
	    {{F, T, T, F, UNK, TEMP, F, ANY, NULL, NULL}, true},   /* AUTH, shown on a relay recipient */
	    {{F, T, F, F, UNK, TEMP, F, ANY, NULL, NULL}, false},  /* AUTH at a local recipient: no relay seen yet */
	    {{F, F, T, F, LIVE, TEMP, F, ANY, NULL, NULL}, true},  /* a live lease on a relay recipient */
	    {{F, F, F, F, UNK, TEMP, F, ANY, NULL, NULL}, false},  /* local recipient, no entitlement */
	    {{F, F, F, F, LIVE, TEMP, F, ANY, NULL, NULL}, false}, /* local recipient, lease already known */
	    {{F, F, T, F, SERR, ACC, F, ANY, NULL, NULL}, false},  /* on_store_error = accept: per recipient */
	    {{F, F, T, T, LIVE, TEMP, F, ANY, NULL, NULL}, false}, /* lease.never: refused */
	    {{F, F, T, F, NONE, TEMP, F, ANY, NULL, NULL}, false},
	    /* limits on: every relay recipient by lease is counted, so each one is asked */
	    {{F, F, T, F, LIVE, TEMP, T, ANY, NULL, NULL}, false},
	    {{F, T, T, F, UNK, TEMP, T, ANY, NULL, NULL}, true}, /* AUTH is never limited */
	    {{T, F, F, F, UNK, TEMP, T, ANY, NULL, NULL}, true},
	    {{F, F, T, F, OVER, TEMP, T, ANY, NULL, NULL}, false},
	    {{F, F, T, F, SUSP, TEMP, T, ANY, NULL, NULL}, false},
	};
	unsigned bits;
	size_t i, l, e, l2, checked = 0;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		const char *reason;
		enum pbs_verdict v = pbs_policy_decide(&rows[i].facts, &reason);

		ROW_CHECK(pbs_policy_covers_message(&rows[i].facts, v) == rows[i].covers,
		          "row %zu: covers_message is %d, expected %d", i + 1, !rows[i].covers,
		          rows[i].covers);
	}
	/* Safety: whatever the later recipients are (local or relay), and whatever a lookup
	 * not made yet would find, they are allowed once the message is covered. */
	for (bits = 0; bits < 32; bits++)
		for (l = 0; l < 6; l++)
			for (e = 0; e < 3; e++) {
				struct pbs_policy_facts f = {(bits & 1) != 0, (bits & 2) != 0,
				                             (bits & 4) != 0, (bits & 8) != 0,
				                             leases[l],       errs[e],
				                             (bits & 16) != 0, ANY, NULL, NULL};
				const char *reason;

				if (!pbs_policy_covers_message(&f, pbs_policy_decide(&f, &reason)))
					continue;
				for (l2 = 0; l2 < 6; l2++) {
					struct pbs_policy_facts later = f;

					if (f.lease != UNK && leases[l2] != f.lease)
						continue;
					later.lease = leases[l2];
					later.relay = !f.relay;
					ROW_CHECK(pbs_policy_decide(&later, &reason) == PBS_VERDICT_ALLOW &&
					              pbs_policy_decide(&f, &reason) == PBS_VERDICT_ALLOW,
					          "combination %u/%zu/%zu covers the message, but a later "
					          "recipient (lease %zu) is not allowed", bits, l, e, l2);
					checked++;
				}
			}
	assert_true(checked > 20);
	table_done("covers message");
}

/* The reply each gate's client gets: the milter's own, or under the policy gate the one of
 * Postfix's reject_unauth_destination, which its DUNNO leaves the refusal to. */
static void test_reply(void **state)
{
	static const struct {
		enum pbs_policy_gate gate;
		enum pbs_verdict verdict;
		const char *reason;
		const char *reply;
	} rows[] = {
	    {PBS_POLICY_GATE_MILTER, PBS_VERDICT_ALLOW, "lease", NULL},
	    {PBS_POLICY_GATE_MILTER, PBS_VERDICT_REJECT, "no-lease", "550 5.7.1"},
	    {PBS_POLICY_GATE_MILTER, PBS_VERDICT_TEMPFAIL, "store-error", "451 4.3.0"},
	    {PBS_POLICY_GATE_POLICY, PBS_VERDICT_ALLOW, "lease", NULL},
	    {PBS_POLICY_GATE_POLICY, PBS_VERDICT_REJECT, "no-lease",
	     "554 5.7.1 Relay access denied"},
	    {PBS_POLICY_GATE_POLICY, PBS_VERDICT_TEMPFAIL, "store-error", "451 4.3.0"},
	    /* popbsmtp's own replies, the same through every gate */
	    {PBS_POLICY_GATE_MILTER, PBS_VERDICT_TEMPFAIL, "rate-limit", "450 4.7.1"},
	    {PBS_POLICY_GATE_POLICY, PBS_VERDICT_TEMPFAIL, "rate-limit", "450 4.7.1"},
	    {PBS_POLICY_GATE_POLICY, PBS_VERDICT_REJECT, "user-suspended", "550 5.7.1"},
	    {PBS_POLICY_GATE_POLICY, PBS_VERDICT_REJECT, "sender-address", "550 5.7.1"},
	    {PBS_POLICY_GATE_MILTER, PBS_VERDICT_REJECT, "sender-domain", "550 5.7.1"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		const char *got = pbs_policy_reply(rows[i].gate, rows[i].verdict, rows[i].reason);

		if (rows[i].reply == NULL)
			assert_null(got);
		else
			assert_string_equal(got, rows[i].reply);
	}
}

/* The owner the relay script compares a lease's user with: lower case, the address or
 * its domain; nothing for a sender that is no plain address, or for lease.sender = any. */
static void test_sender_owner(void **state)
{
	static const struct {
		enum pbs_sender_rule rule;
		const char *sender, *owner;
	} rows[] = {
	    {ADDR, "<Erin@Client.Example>", "erin@client.example"},
	    {ADDR, "erin@client.example", "erin@client.example"},
	    {DOM, "<Frank@CLIENT.example>", "client.example"},
	    {DOM, "frank@sub.client.example", "sub.client.example"},
	    {ANY, "<erin@client.example>", ""},
	    {ADDR, "<>", ""},
	    {ADDR, "", ""},
	    {ADDR, NULL, ""},
	    {ADDR, "<erin%evil.example@client.example>", ""},
	    {DOM, "<@evil.example:erin@client.example>", ""},
	    {DOM, "<erin@[192.0.2.1]>", ""},
	};
	char owner[PBS_SENDER_MAX];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		pbs_policy_sender_owner(rows[i].rule, rows[i].sender, owner);
		assert_string_equal(owner, rows[i].owner);
	}
}

static void test_mta(void **state)
{
	static const struct {
		const char *v;
		enum pbs_mta mta;
	} rows[] = {
	    {"Postfix 3.7.11", PBS_MTA_POSTFIX},
	    {"Postfix 2.11.3", PBS_MTA_POSTFIX},
	    {"Postfix", PBS_MTA_POSTFIX},
	    {"8.17.1.9", PBS_MTA_SENDMAIL},
	    {"8.15.2", PBS_MTA_SENDMAIL},
	    {NULL, PBS_MTA_UNKNOWN},
	    {"", PBS_MTA_UNKNOWN},
	    {"8", PBS_MTA_UNKNOWN},
	    {"Exim 4", PBS_MTA_UNKNOWN},
	    {"OpenSMTPD", PBS_MTA_UNKNOWN},
	    {"3.7.11", PBS_MTA_UNKNOWN},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++)
		ROW_CHECK(pbs_policy_mta(rows[i].v) == rows[i].mta, "mta '%s': got %s",
		          rows[i].v ? rows[i].v : "(null)",
		          mta_name(pbs_policy_mta(rows[i].v)));
	table_done("mta");
}

/* Configurations the classification rows refer to. */
static char *domains_words[] = {"example.org", "Mail.Example.NET"};
static char *relay_words[] = {"lmtp", "smtp-internal-out"};
static char *local_words[] = {"local", "smtp-internal"};
static char *local_smtp_words[] = {"smtp"};

enum cfg_kind { CFG_DEFAULT, CFG_DOMAINS, CFG_RELAY, CFG_LOCAL, CFG_BOTH, CFG_LOCAL_SMTP };

static void make_cfg(enum cfg_kind kind, struct pbs_milter_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	if (kind == CFG_DOMAINS) {
		cfg->local_domains.items = domains_words;
		cfg->local_domains.count = 2;
	}
	if (kind == CFG_RELAY || kind == CFG_BOTH) {
		cfg->relay_mailers.items = relay_words;
		cfg->relay_mailers.count = 2;
	}
	if (kind == CFG_LOCAL || kind == CFG_BOTH) {
		cfg->local_mailers.items = local_words;
		cfg->local_mailers.count = 2;
	}
	if (kind == CFG_LOCAL_SMTP) {
		cfg->relay_mailers.items = relay_words;
		cfg->relay_mailers.count = 2;
		cfg->local_mailers.items = local_smtp_words;
		cfg->local_mailers.count = 1;
	}
}

#define PF PBS_MTA_POSTFIX
#define SM PBS_MTA_SENDMAIL
#define UN PBS_MTA_UNKNOWN

struct relay_row {
	enum pbs_mta mta;
	const char *mailer;
	const char *rcpt;     /* RCPT TO as the client gave it */
	const char *resolved; /* {rcpt_addr}: the MTA's resolution */
	enum cfg_kind cfg;
	bool relay;
};

#define R_COM "<u@example.com>", "u@example.com"

static const struct relay_row relay_rows[] = {
    /* Postfix defaults: only smtp leaves; its "relay" is inbound relay_domains */
    {PF, "smtp", R_COM, CFG_DEFAULT, T},
    {PF, "SMTP", R_COM, CFG_DEFAULT, T},
    {PF, "local", R_COM, CFG_DEFAULT, F},
    {PF, "virtual", R_COM, CFG_DEFAULT, F},
    {PF, "lmtp", R_COM, CFG_DEFAULT, F},
    {PF, "relay", R_COM, CFG_DEFAULT, F},
    {PF, "error", R_COM, CFG_DEFAULT, F},
    {PF, "esmtp", R_COM, CFG_DEFAULT, T},
    /* Sendmail defaults: its "relay" is the smart host */
    {SM, "esmtp", R_COM, CFG_DEFAULT, T},
    {SM, "smtp", R_COM, CFG_DEFAULT, T},
    {SM, "smtp8", R_COM, CFG_DEFAULT, T},
    {SM, "dsmtp", R_COM, CFG_DEFAULT, T},
    {SM, "relay", R_COM, CFG_DEFAULT, T},
    {SM, "local", R_COM, CFG_DEFAULT, F},
    {SM, "prog", R_COM, CFG_DEFAULT, F},
    {SM, "virtual", R_COM, CFG_DEFAULT, T},
    /* unknown MTA: relay-ish names and anything unknown leave; "local" stays */
    {UN, "smtp", R_COM, CFG_DEFAULT, T},
    {UN, "esmtp", R_COM, CFG_DEFAULT, T},
    {UN, "relay", R_COM, CFG_DEFAULT, T},
    {UN, "local", R_COM, CFG_DEFAULT, F},
    {UN, "lmtp", R_COM, CFG_DEFAULT, T},
    /* a mailer nobody knows counts as relay on every MTA: doubt fails closed */
    {PF, "smtp-out", R_COM, CFG_DEFAULT, T},
    {SM, "smtp-out", R_COM, CFG_DEFAULT, T},
    {UN, "smtp-out", R_COM, CFG_DEFAULT, T},
    /* no mailer at all: relay */
    {PF, NULL, R_COM, CFG_DEFAULT, T},
    {PF, "", R_COM, CFG_DEFAULT, T},
    {SM, NULL, R_COM, CFG_DEFAULT, T},
    {SM, "", R_COM, CFG_DEFAULT, T},
    {UN, NULL, NULL, NULL, CFG_DEFAULT, T},
    {UN, "", "", "", CFG_DEFAULT, T},
    /* milter.local_domains: a plain address the MTA resolved into a listed domain is local,
     * case-insensitively, with or without angle brackets */
    {PF, "smtp", "<u@example.org>", "u@example.org", CFG_DOMAINS, F},
    {PF, "smtp", "<u@EXAMPLE.ORG>", "u@example.org", CFG_DOMAINS, F},
    {SM, "relay", "<first.last+tag@mail.example.net>", "first.last+tag@Mail.Example.NET",
     CFG_DOMAINS, F},
    {SM, "esmtp", "<o'brien@example.org>", "o'brien@example.org", CFG_DOMAINS, F},
    {UN, NULL, "u@Example.Org", "<u@example.org>", CFG_DOMAINS, F},
    {PF, "local", R_COM, CFG_DOMAINS, F},
    /* ... never a domain that only looks like one of the list */
    {PF, "smtp", "<u@sub.example.org>", "u@sub.example.org", CFG_DOMAINS, T},
    {PF, "smtp", "<u@example.org.evil.test>", "u@example.org.evil.test", CFG_DOMAINS, T},
    {PF, "smtp", "<u@example.orgx>", "u@example.orgx", CFG_DOMAINS, T},
    {PF, "smtp", "<u@>", "u@", CFG_DOMAINS, T},
    {PF, "smtp", "<example.org>", "example.org", CFG_DOMAINS, T},
    {PF, "smtp", NULL, NULL, CFG_DOMAINS, T},
    /* ... nor when the MTA resolved it elsewhere, or said nothing: its routing decides */
    {PF, "smtp", "<u@example.org>", "u@remote.example", CFG_DOMAINS, T},
    {PF, "smtp", "<u@example.org>", NULL, CFG_DOMAINS, T},
    {PF, "smtp", "<u@example.org>", "", CFG_DOMAINS, T},
    {PF, "smtp", "<u@remote.example>", "u@example.org", CFG_DOMAINS, T},
    /* ... nor for sender routes that the MTA strips its own domain from (the open relay of
     * issue 11: Postfix and Sendmail deliver these to victim@remote.example) */
    {PF, "smtp", "<victim%remote.example@example.org>", "victim@remote.example", CFG_DOMAINS, T},
    {PF, "smtp", "<victim%remote.example@example.org>", "victim%remote.example@example.org",
     CFG_DOMAINS, T},
    {PF, "smtp", "<victim@remote.example@example.org>", "victim@remote.example", CFG_DOMAINS, T},
    {PF, "smtp", "<\"victim@remote.example\"@example.org>", "\"victim@remote.example\"@example.org",
     CFG_DOMAINS, T},
    {SM, "esmtp", "<remote.example!victim@example.org>", "victim@remote.example", CFG_DOMAINS, T},
    {SM, "relay", "<remote.example!victim@example.org>", "remote.example!victim@example.org",
     CFG_DOMAINS, T},
    {SM, "relay", "<@example.org:victim@remote.example>", "victim@remote.example", CFG_DOMAINS, T},
    {SM, "relay", "<@remote.example:victim@example.org>", "victim@example.org", CFG_DOMAINS, T},
    {PF, "smtp", "<victim\\@remote.example@example.org>", "victim@example.org", CFG_DOMAINS, T},
    {PF, "smtp", "<u@example.org.>", "u@example.org.", CFG_DOMAINS, T},
    {PF, "smtp", "<u@example.org>", "u@example.org.", CFG_DOMAINS, T},
    {PF, "smtp", "<u@[192.0.2.1]>", "u@[192.0.2.1]", CFG_DOMAINS, T},
    {PF, "smtp", "<u/x@example.org>", "u/x@example.org", CFG_DOMAINS, T},
    {PF, "smtp", "<u^x@example.org>", "u^x@example.org", CFG_DOMAINS, T},
    {PF, "smtp", "<u..x@example.org>", "u..x@example.org", CFG_DOMAINS, T},
    {PF, "smtp", "<.u@example.org>", ".u@example.org", CFG_DOMAINS, T},
    {PF, "smtp", "<u@example..org>", "u@example..org", CFG_DOMAINS, T},
    {PF, "smtp", "<u@example.org> ", "u@example.org", CFG_DOMAINS, T},
    {PF, "smtp", "<u@example.org", "u@example.org", CFG_DOMAINS, T},
    {PF, "smtp", "<u x@example.org>", "u x@example.org", CFG_DOMAINS, T},
    {PF, "smtp", "<u@example.org,v@remote.example>", "u@example.org", CFG_DOMAINS, T},
    {PF, "smtp", "<u\xc3\xa9@example.org>", "u\xc3\xa9@example.org", CFG_DOMAINS, T},
    /* configured relay_mailers replace the MTA's relay list */
    {PF, "lmtp", R_COM, CFG_RELAY, T},
    {PF, "LMTP", R_COM, CFG_RELAY, T},
    {PF, "smtp-internal-out", R_COM, CFG_RELAY, T},
    {SM, "local", R_COM, CFG_RELAY, F},
    {PF, "virtual", R_COM, CFG_RELAY, F},
    /* configured local_mailers replace the MTA's local list */
    {PF, "smtp-internal", R_COM, CFG_LOCAL, F},
    {SM, "SMTP-Internal", R_COM, CFG_LOCAL, F},
    {UN, "smtp-internal", R_COM, CFG_LOCAL, F},
    {PF, "virtual", R_COM, CFG_LOCAL, T},
    {SM, "prog", R_COM, CFG_LOCAL, T},
    {PF, "local", R_COM, CFG_LOCAL, F},
    {PF, "smtp", R_COM, CFG_LOCAL, T},
    /* both configured: neither default list counts any more */
    {PF, "lmtp", R_COM, CFG_BOTH, T},
    {PF, "smtp-internal", R_COM, CFG_BOTH, F},
    {PF, "smtp", R_COM, CFG_BOTH, T},
    {SM, "esmtp", R_COM, CFG_BOTH, T},
    {PF, "virtual", R_COM, CFG_BOTH, T},
    /* the administrator says smtp stays here (e.g. a content filter next door) */
    {PF, "smtp", R_COM, CFG_LOCAL_SMTP, F},
};

static void test_is_relay_table(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof relay_rows / sizeof relay_rows[0]; i++) {
		const struct relay_row *r = &relay_rows[i];
		struct pbs_milter_config cfg;
		bool got;

		make_cfg(r->cfg, &cfg);
		got = pbs_policy_is_relay(r->mta, r->mailer, r->rcpt, r->resolved, &cfg);
		ROW_CHECK(got == r->relay,
		          "row %zu: %s mailer '%s' rcpt '%s' resolved '%s' config %d: got %s", i + 1,
		          mta_name(r->mta), r->mailer ? r->mailer : "(null)",
		          r->rcpt ? r->rcpt : "(null)", r->resolved ? r->resolved : "(null)",
		          (int)r->cfg, got ? "relay" : "local");
	}
	table_done("is_relay");
}

/* The safety property, stated without the code under test: a recipient the relay mailer
 * routes out may count as local only when both addresses are a single '@', no routing
 * character anywhere, and the same listed domain after the '@'. */
static bool may_be_local(const char *rcpt, const char *resolved)
{
	const char *addrs[2] = {rcpt, resolved}, *domain[2];
	size_t k, len[2];

	for (k = 0; k < 2; k++) {
		const char *a = addrs[k], *at = strchr(a, '@');
		size_t n = strlen(a);
		if (at == NULL || strchr(at + 1, '@') != NULL || strpbrk(a, "%!\"\\:,;[]()/^ ") != NULL)
			return false;
		domain[k] = at + 1;
		len[k] = strcspn(at + 1, ">");
		if (len[k] == 0 || domain[k][len[k] - 1] == '.' || n == 0)
			return false;
	}
	return len[0] == len[1] && strncasecmp(domain[0], domain[1], len[0]) == 0 &&
	       ((len[0] == 11 && strncasecmp(domain[0], "example.org", 11) == 0) ||
	        (len[0] == 16 && strncasecmp(domain[0], "mail.example.net", 16) == 0));
}

/* Every combination of local parts, routing tricks and domains as RCPT and as {rcpt_addr}:
 * none that fails the property above may be called local. */
static void test_local_domains_property(void **state)
{
	static const char *const locals[] = {"u", "first.last", "victim%remote.example",
	    "remote.example!victim", "\"victim@remote.example\"", "victim@remote.example",
	    "@example.org:victim", "@remote.example:victim", "a\\@b", "u.", "o'brien", "u/x"};
	static const char *const domains[] = {"example.org", "EXAMPLE.org", "example.org.",
	    "remote.example", "[192.0.2.1]", "mail.example.net", "example.org>", "sub.example.org",
	    "example.org@remote.example", ""};
	static const char *const wraps[][2] = {{"", ""}, {"<", ">"}};
	char addrs[sizeof locals / sizeof locals[0] * 10 * 2][128];
	size_t n = 0, i, j, l, d, w;
	struct pbs_milter_config cfg;

	(void)state;
	make_cfg(CFG_DOMAINS, &cfg);
	for (l = 0; l < sizeof locals / sizeof locals[0]; l++)
		for (d = 0; d < sizeof domains / sizeof domains[0]; d++)
			for (w = 0; w < 2; w++)
				snprintf(addrs[n++], sizeof addrs[0], "%s%s@%s%s", wraps[w][0],
				         locals[l], domains[d], wraps[w][1]);
	for (i = 0; i < n; i++) {
		for (j = 0; j < n; j++) {
			bool relay = pbs_policy_is_relay(SM, "relay", addrs[i], addrs[j], &cfg);
			ROW_CHECK(relay || may_be_local(addrs[i], addrs[j]),
			          "rcpt '%s' resolved '%s' counted local", addrs[i], addrs[j]);
		}
	}
	/* and the property is not vacuous: the plain ones are local */
	ROW_CHECK(!pbs_policy_is_relay(SM, "relay", "<u@example.org>", "u@EXAMPLE.org", &cfg),
	          "a plain address in a listed domain is local");
	table_done("local_domains property");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_decide_table), cmocka_unit_test(test_decide_invariants),
	    cmocka_unit_test(test_covers_message), cmocka_unit_test(test_reply),
	    cmocka_unit_test(test_sender_owner),
	    cmocka_unit_test(test_mta),          cmocka_unit_test(test_is_relay_table),
	    cmocka_unit_test(test_local_domains_property),
	};

	return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
