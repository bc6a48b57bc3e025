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

/* An MTA for the failure messages. */
static const char *mta_name(enum pbs_mta mta)
{
	return mta == PBS_MTA_POSTFIX ? "Postfix" : mta == PBS_MTA_SENDMAIL ? "Sendmail" : "unknown MTA";
}

struct decide_row {
	struct pbs_policy_facts facts; /* trusted, authenticated, relay, never, lease, on_error */
	enum pbs_verdict verdict;
	const char *reason;
};

static const struct decide_row decide_rows[] = {
    /* trusted networks may relay, whatever else is true */
    {{T, F, T, F, UNK, TEMP}, PBS_VERDICT_ALLOW, "trusted"},
    {{T, F, T, T, NONE, REJ}, PBS_VERDICT_ALLOW, "trusted"},
    {{T, T, T, F, SERR, TEMP}, PBS_VERDICT_ALLOW, "trusted"},
    {{T, F, F, F, UNK, TEMP}, PBS_VERDICT_ALLOW, "trusted"},
    /* SMTP AUTH may relay, even from a never-lease network or without a lease */
    {{F, T, T, F, UNK, TEMP}, PBS_VERDICT_ALLOW, "auth"},
    {{F, T, T, T, NONE, REJ}, PBS_VERDICT_ALLOW, "auth"},
    {{F, T, T, F, SERR, REJ}, PBS_VERDICT_ALLOW, "auth"},
    {{F, T, F, F, UNK, TEMP}, PBS_VERDICT_ALLOW, "auth"},
    /* mail for this site needs no lease, and no lookup */
    {{F, F, F, F, UNK, TEMP}, PBS_VERDICT_ALLOW, "local"},
    {{F, F, F, T, UNK, TEMP}, PBS_VERDICT_ALLOW, "local"},
    {{F, F, F, F, NONE, REJ}, PBS_VERDICT_ALLOW, "local"},
    {{F, F, F, F, SERR, REJ}, PBS_VERDICT_ALLOW, "local"},
    /* lease.never: refused before any lookup, and a lease does not help */
    {{F, F, T, T, UNK, TEMP}, PBS_VERDICT_REJECT, "never-lease"},
    {{F, F, T, T, LIVE, TEMP}, PBS_VERDICT_REJECT, "never-lease"},
    {{F, F, T, T, SERR, ACC}, PBS_VERDICT_REJECT, "never-lease"},
    /* relaying: the lease decides */
    {{F, F, T, F, UNK, TEMP}, PBS_VERDICT_NEED_LEASE, "lookup-needed"},
    {{F, F, T, F, UNK, ACC}, PBS_VERDICT_NEED_LEASE, "lookup-needed"},
    {{F, F, T, F, LIVE, TEMP}, PBS_VERDICT_ALLOW, "lease"},
    {{F, F, T, F, LIVE, REJ}, PBS_VERDICT_ALLOW, "lease"},
    {{F, F, T, F, NONE, TEMP}, PBS_VERDICT_REJECT, "no-lease"},
    {{F, F, T, F, NONE, ACC}, PBS_VERDICT_REJECT, "no-lease"},
    /* the store failed: milter.on_store_error decides */
    {{F, F, T, F, SERR, TEMP}, PBS_VERDICT_TEMPFAIL, "store-error"},
    {{F, F, T, F, SERR, REJ}, PBS_VERDICT_REJECT, "store-error"},
    {{F, F, T, F, SERR, ACC}, PBS_VERDICT_ALLOW, "store-error"},
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
	static const enum pbs_lease_state leases[] = {UNK, LIVE, NONE, SERR};
	static const enum pbs_on_store_error errs[] = {TEMP, REJ, ACC};
	unsigned bits;
	size_t l, e, combos = 0;

	(void)state;
	for (bits = 0; bits < 16; bits++) {
		for (l = 0; l < 4; l++) {
			for (e = 0; e < 3; e++) {
				struct pbs_policy_facts f = {(bits & 1) != 0, (bits & 2) != 0,
				                             (bits & 4) != 0, (bits & 8) != 0,
				                             leases[l],       errs[e]};
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
				/* TEMPFAIL only for store trouble, when so configured */
				if (v == PBS_VERDICT_TEMPFAIL)
					ROW_CHECK(f.lease == SERR && f.on_store_error == TEMP,
					          "combination %u/%zu/%zu: unexplained tempfail",
					          bits, l, e);
			}
		}
	}
	assert_int_equal(combos, 192);
	table_done("decide invariants");
}

/* ACCEPT for the whole message only when every later recipient would be allowed too. */
static void test_covers_message(void **state)
{
	static const enum pbs_lease_state leases[] = {UNK, LIVE, NONE, SERR};
	static const enum pbs_on_store_error errs[] = {TEMP, REJ, ACC};
	static const struct {
		struct pbs_policy_facts facts;
		bool covers;
	} rows[] = {
	    {{T, F, F, F, UNK, TEMP}, true},   /* trusted, even at a local first recipient */
	    {{F, T, T, F, UNK, TEMP}, true},   /* AUTH, shown on a relay recipient */
	    {{F, T, F, F, UNK, TEMP}, false},  /* AUTH at a local recipient: no relay seen yet */
	    {{F, F, T, F, LIVE, TEMP}, true},  /* a live lease on a relay recipient */
	    {{F, F, F, F, UNK, TEMP}, false},  /* local recipient, no entitlement */
	    {{F, F, F, F, LIVE, TEMP}, false}, /* local recipient, lease already known */
	    {{F, F, T, F, SERR, ACC}, false},  /* on_store_error = accept: per recipient */
	    {{F, F, T, T, LIVE, TEMP}, false}, /* lease.never: refused */
	    {{F, F, T, F, NONE, TEMP}, false},
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
	for (bits = 0; bits < 16; bits++)
		for (l = 0; l < 4; l++)
			for (e = 0; e < 3; e++) {
				struct pbs_policy_facts f = {(bits & 1) != 0, (bits & 2) != 0,
				                             (bits & 4) != 0, (bits & 8) != 0,
				                             leases[l],       errs[e]};
				const char *reason;

				if (!pbs_policy_covers_message(&f, pbs_policy_decide(&f, &reason)))
					continue;
				for (l2 = 0; l2 < 4; l2++) {
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
	const char *domain;
	enum cfg_kind cfg;
	bool relay;
};

static const struct relay_row relay_rows[] = {
    /* Postfix defaults: only smtp leaves; its "relay" is inbound relay_domains */
    {PF, "smtp", "example.com", CFG_DEFAULT, T},
    {PF, "SMTP", "example.com", CFG_DEFAULT, T},
    {PF, "local", "example.com", CFG_DEFAULT, F},
    {PF, "virtual", "example.com", CFG_DEFAULT, F},
    {PF, "lmtp", "example.com", CFG_DEFAULT, F},
    {PF, "relay", "example.com", CFG_DEFAULT, F},
    {PF, "error", "example.com", CFG_DEFAULT, F},
    {PF, "esmtp", "example.com", CFG_DEFAULT, T},
    /* Sendmail defaults: its "relay" is the smart host */
    {SM, "esmtp", "example.com", CFG_DEFAULT, T},
    {SM, "smtp", "example.com", CFG_DEFAULT, T},
    {SM, "smtp8", "example.com", CFG_DEFAULT, T},
    {SM, "dsmtp", "example.com", CFG_DEFAULT, T},
    {SM, "relay", "example.com", CFG_DEFAULT, T},
    {SM, "local", "example.com", CFG_DEFAULT, F},
    {SM, "prog", "example.com", CFG_DEFAULT, F},
    {SM, "virtual", "example.com", CFG_DEFAULT, T},
    /* unknown MTA: relay-ish names and anything unknown leave; "local" stays */
    {UN, "smtp", "example.com", CFG_DEFAULT, T},
    {UN, "esmtp", "example.com", CFG_DEFAULT, T},
    {UN, "relay", "example.com", CFG_DEFAULT, T},
    {UN, "local", "example.com", CFG_DEFAULT, F},
    {UN, "lmtp", "example.com", CFG_DEFAULT, T},
    /* a mailer nobody knows counts as relay on every MTA: doubt fails closed */
    {PF, "smtp-out", "example.com", CFG_DEFAULT, T},
    {SM, "smtp-out", "example.com", CFG_DEFAULT, T},
    {UN, "smtp-out", "example.com", CFG_DEFAULT, T},
    /* no mailer at all: relay */
    {PF, NULL, "example.com", CFG_DEFAULT, T},
    {PF, "", "example.com", CFG_DEFAULT, T},
    {SM, NULL, "example.com", CFG_DEFAULT, T},
    {SM, "", "example.com", CFG_DEFAULT, T},
    {UN, NULL, NULL, CFG_DEFAULT, T},
    {UN, "", "", CFG_DEFAULT, T},
    /* milter.local_domains: always local, case-insensitively, whatever the mailer */
    {PF, "smtp", "example.org", CFG_DOMAINS, F},
    {PF, "smtp", "EXAMPLE.ORG", CFG_DOMAINS, F},
    {SM, "esmtp", "mail.example.net", CFG_DOMAINS, F},
    {UN, NULL, "Example.Org", CFG_DOMAINS, F},
    {PF, "smtp", "sub.example.org", CFG_DOMAINS, T},
    {PF, "smtp", "example.org.evil.test", CFG_DOMAINS, T},
    {PF, "smtp", "", CFG_DOMAINS, T},
    {PF, "smtp", NULL, CFG_DOMAINS, T},
    {PF, "local", "example.com", CFG_DOMAINS, F},
    /* configured relay_mailers replace the MTA's relay list */
    {PF, "lmtp", "example.com", CFG_RELAY, T},
    {PF, "LMTP", "example.com", CFG_RELAY, T},
    {PF, "smtp-internal-out", "example.com", CFG_RELAY, T},
    {SM, "local", "example.com", CFG_RELAY, F},
    {PF, "virtual", "example.com", CFG_RELAY, F},
    /* configured local_mailers replace the MTA's local list */
    {PF, "smtp-internal", "example.com", CFG_LOCAL, F},
    {SM, "SMTP-Internal", "example.com", CFG_LOCAL, F},
    {UN, "smtp-internal", "example.com", CFG_LOCAL, F},
    {PF, "virtual", "example.com", CFG_LOCAL, T},
    {SM, "prog", "example.com", CFG_LOCAL, T},
    {PF, "local", "example.com", CFG_LOCAL, F},
    {PF, "smtp", "example.com", CFG_LOCAL, T},
    /* both configured: neither default list counts any more */
    {PF, "lmtp", "example.com", CFG_BOTH, T},
    {PF, "smtp-internal", "example.com", CFG_BOTH, F},
    {PF, "smtp", "example.com", CFG_BOTH, T},
    {SM, "esmtp", "example.com", CFG_BOTH, T},
    {PF, "virtual", "example.com", CFG_BOTH, T},
    /* the administrator says smtp stays here (e.g. a content filter next door) */
    {PF, "smtp", "example.com", CFG_LOCAL_SMTP, F},
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
		got = pbs_policy_is_relay(r->mta, r->mailer, r->domain, &cfg);
		ROW_CHECK(got == r->relay, "row %zu: %s mailer '%s' domain '%s' config %d: got %s",
		          i + 1, mta_name(r->mta), r->mailer ? r->mailer : "(null)",
		          r->domain ? r->domain : "(null)", (int)r->cfg, got ? "relay" : "local");
	}
	table_done("is_relay");
}

static void test_rcpt_domain(void **state)
{
	static const struct {
		const char *rcpt;
		const char *domain;
	} rows[] = {
	    {"<a@Example.COM>", "Example.COM"},
	    {"a@example.com", "example.com"},
	    {"<a@example.com> NOTIFY=NEVER", "example.com"},
	    {"<@route:a@b>", "b"},
	    {"<@r1,@r2:user@dest.example>", "dest.example"},
	    {"<\"a@b\"@c.example>", "c.example"},
	    {"<postmaster>", ""},
	    {"postmaster", ""},
	    {"<>", ""},
	    {"", ""},
	    {NULL, ""},
	    {"<a@>", ""},
	    {"<a@[192.0.2.1]>", "[192.0.2.1]"},
	};
	char out[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		memset(out, 'X', sizeof out);
		out[sizeof out - 1] = '\0';
		pbs_policy_rcpt_domain(rows[i].rcpt, out, sizeof out);
		ROW_CHECK(strcmp(out, rows[i].domain) == 0,
		          "domain of '%s': got '%s', expected '%s'",
		          rows[i].rcpt ? rows[i].rcpt : "(null)", out, rows[i].domain);
	}

	/* A domain that does not fit OUT is not cut short into another domain. */
	{
		char small[8];
		memset(small, 'X', sizeof small);
		pbs_policy_rcpt_domain("<a@example.com>", small, sizeof small);
		ROW_CHECK(strcmp(small, "") == 0, "too long for OUT: got '%.8s'", small);
		pbs_policy_rcpt_domain("<a@ex.com>", small, sizeof small);
		ROW_CHECK(strcmp(small, "ex.com") == 0, "just fits: got '%s'", small);
	}
	table_done("rcpt_domain");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_decide_table), cmocka_unit_test(test_decide_invariants),
	    cmocka_unit_test(test_covers_message),
	    cmocka_unit_test(test_mta),          cmocka_unit_test(test_is_relay_table),
	    cmocka_unit_test(test_rcpt_domain),
	};

	return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
