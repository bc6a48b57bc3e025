/*
 * lease.c — key names and the value format of a lease. Version 1 value:
 *   "1|<granted unix seconds>|<service>|<user>"
 * The user comes last so it needs no escaping: everything after the third '|' is the
 * user. Service names are restricted to [a-z0-9-] so they can never contain '|'.
 * And the revocation records "<prefix>revoked:<subject>" and "<prefix>revoked-user:<user>",
 * whose version 1 value "1|<revoked, ms of the store's clock>" says when the last revoke
 * was, and the Lua scripts that read and write all of these inside Redis: the format is
 * known here and nowhere else, in C and in Lua alike.
 */
#include "popbsmtp/lease.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *pbs_lease_subject(const pbs_addr *client, unsigned ipv4_bits, unsigned ipv6_bits,
			      char out[PBS_ADDR_STRLEN])
{
	unsigned bits = client->family == AF_INET ? ipv4_bits : ipv6_bits;
	pbs_addr net = *client;
	size_t len;

	pbs_addr_mask(&net, bits);
	pbs_addr_format(&net, out);
	if (bits < pbs_addr_width(&net)) {
		len = strlen(out);
		snprintf(out + len, PBS_ADDR_STRLEN - len, "/%u", bits);
	}
	return out;
}

int pbs_lease_key(const char *prefix, const char *subject, char out[PBS_KEY_MAX])
{
	/* Refused, not truncated: a cut key would name another lease. */
	int n = snprintf(out, PBS_KEY_MAX, "%slease:%s", prefix, subject);

	return (n < 0 || n >= PBS_KEY_MAX) ? -1 : 0;
}

/* "<prefix><kind><name>" into OUT; refused, not truncated. Returns 0 or -1. */
static int lease_key_of(const char *prefix, const char *kind, const char *name,
			char out[PBS_KEY_MAX])
{
	int n = snprintf(out, PBS_KEY_MAX, "%s%s%s", prefix, kind, name);

	return (n < 0 || n >= PBS_KEY_MAX) ? -1 : 0;
}

int pbs_lease_revoked_key(const char *prefix, const char *subject, char out[PBS_KEY_MAX])
{
	return lease_key_of(prefix, "revoked:", subject, out);
}

/* C with an ASCII capital in lower case, as Lua's string.lower() in Redis (the C locale). */
static char ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* "<prefix><kind><user>" with USER's ASCII letters in lower case, as the scripts' own
 * string.lower() gives them (Redis runs Lua in the C locale): one person's keys whatever
 * case a login spelt the name in, where the password database ignores case. */
static int lease_user_key_of(const char *prefix, const char *kind, const char *user,
			     char out[PBS_KEY_MAX])
{
	size_t at = strlen(prefix) + strlen(kind);
	char *p;

	if (lease_key_of(prefix, kind, user, out) != 0)
		return -1;
	for (p = out + at; *p != '\0'; p++)
		*p = ascii_lower(*p);
	return 0;
}

bool pbs_lease_same_user(const char *a, const char *b)
{
	for (; ascii_lower(*a) == ascii_lower(*b); a++, b++)
		if (*a == '\0')
			return true;
	return false;
}

int pbs_lease_revoked_user_key(const char *prefix, const char *user, char out[PBS_KEY_MAX])
{
	return lease_user_key_of(prefix, "revoked-user:", user, out);
}

int pbs_lease_users_key(const char *prefix, const char *subject, char out[PBS_KEY_MAX])
{
	return lease_key_of(prefix, "users:", subject, out);
}

int pbs_lease_limit_key(const char *prefix, const char *kind, long long hour, const char *name,
			char out[PBS_KEY_MAX])
{
	char head[PBS_KEY_MAX];
	int n = snprintf(head, sizeof head, "limit:%s:%lld:", kind, hour);

	if (n < 0 || n >= (int)sizeof head)
		return -1;
	return strcmp(kind, "user") == 0 ? lease_user_key_of(prefix, head, name, out)
					 : lease_key_of(prefix, head, name, out);
}

int pbs_lease_suspended_key(const char *prefix, const char *user, char out[PBS_KEY_MAX])
{
	return lease_user_key_of(prefix, "suspended:", user, out);
}

const char *pbs_lease_reason_problem(const char *reason)
{
	const unsigned char *p;

	if (strlen(reason) > PBS_REASON_MAX)
		return "reason longer than 200 bytes";
	for (p = (const unsigned char *)reason; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			return "reason holds control characters";
	return NULL;
}

int pbs_lease_clock_key(const char *prefix, char out[PBS_KEY_MAX])
{
	return lease_key_of(prefix, "clock", "", out);
}

int pbs_lease_revocation_ttl(int lease_ttl)
{
	return lease_ttl > 43200 ? 2 * lease_ttl : 86400;
}

const char *pbs_lease_user_problem(const char *user)
{
	size_t len;
	const unsigned char *p;

	if (user == NULL || user[0] == '\0')
		return "empty user name";
	len = strlen(user);
	if (len > PBS_USER_MAX)
		return "user name longer than 256 bytes";
	for (p = (const unsigned char *)user; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			return "user name holds control characters";
	return NULL;
}

const char *pbs_lease_service_problem(const char *service)
{
	const char *p;

	if (strlen(service) > PBS_SERVICE_MAX)
		return "service name longer than 32 bytes";
	for (p = service; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
			return "service name may hold only a-z, 0-9 and '-'";
	return NULL;
}

const char *pbs_lease_make(pbs_lease *lease, const char *user, const char *service,
			   long long granted)
{
	const char *problem = pbs_lease_user_problem(user);

	if (problem == NULL)
		problem = pbs_lease_service_problem(service);
	if (problem != NULL)
		return problem;
	strcpy(lease->user, user);
	strcpy(lease->service, service);
	lease->granted = granted;
	return NULL;
}

size_t pbs_lease_encode(const pbs_lease *lease, char out[PBS_LEASE_VALUE_MAX])
{
	int n = snprintf(out, PBS_LEASE_VALUE_MAX, "%d|%lld|%s|%s", PBS_LEASE_VERSION,
			 lease->granted, lease->service, lease->user);
	return (size_t)n;
}

/* Parse the decimal field at *P up to '|', advancing past it. Returns 0 or -1. */
static int lease_number(const char **p, const char *end, long long *value)
{
	char digits[24];
	const char *bar = memchr(*p, '|', (size_t)(end - *p));
	size_t len = bar ? (size_t)(bar - *p) : 0;
	char *stop;

	if (bar == NULL || len == 0 || len >= sizeof digits || **p < '0' || **p > '9')
		return -1;
	memcpy(digits, *p, len);
	digits[len] = '\0';
	errno = 0;
	*value = strtoll(digits, &stop, 10);
	if (errno != 0 || *stop != '\0')
		return -1;
	*p = bar + 1;
	return 0;
}

int pbs_lease_decode(const char *value, size_t len, pbs_lease *lease)
{
	const char *p = value, *end = value + len, *bar;
	long long version;
	char user[PBS_USER_MAX + 1], service[PBS_SERVICE_MAX + 1];
	size_t n;

	/* A NUL anywhere would cut a field short when it is later used as a C string. */
	if (memchr(value, '\0', len) != NULL)
		return -1;
	if (lease_number(&p, end, &version) != 0 || version != PBS_LEASE_VERSION)
		return -1;
	/* Digits only, so never negative; a time no one can show is no grant time. */
	if (lease_number(&p, end, &lease->granted) != 0 || lease->granted > PBS_LEASE_GRANTED_MAX)
		return -1;
	bar = memchr(p, '|', (size_t)(end - p));
	if (bar == NULL || (size_t)(bar - p) > PBS_SERVICE_MAX)
		return -1;
	memcpy(service, p, (size_t)(bar - p));
	service[bar - p] = '\0';
	n = (size_t)(end - bar - 1);
	if (n > PBS_USER_MAX)
		return -1;
	memcpy(user, bar + 1, n);
	user[n] = '\0';
	return pbs_lease_make(lease, user, service, lease->granted) == NULL ? 0 : -1;
}

int pbs_lease_suspension_decode(const char *value, size_t len, long long *since_ms,
				char reason[PBS_REASON_MAX + 1])
{
	const char *p = value, *end = value + len;
	long long version;
	size_t n;

	if (memchr(value, '\0', len) != NULL || lease_number(&p, end, &version) != 0 ||
	    version != PBS_LEASE_VERSION || lease_number(&p, end, since_ms) != 0)
		return -1;
	n = (size_t)(end - p);
	if (n > PBS_REASON_MAX)
		return -1;
	memcpy(reason, p, n);
	reason[n] = '\0';
	return pbs_lease_reason_problem(reason) == NULL ? 0 : -1;
}

/*
 * The scripts. Lua 5.1 as Redis embeds it; numbers are doubles, exact for the 13-digit
 * millisecond times used here (anything longer than 15 digits is refused as not a time).
 * Common to all: clock() is the store's time, Redis TIME but never less than the last
 * time handed out (last_time) plus one, so every grant and revoke is ordered by one clock whatever
 * the hosts' clocks say; revoked() reads a record: a record that does not decode counts
 * as a revoke (when in doubt, the revoke wins); owner() is the user a lease value names,
 * or nil when it is not a version-1 lease.
 */
#define LEASE_LUA_COMMON \
	"local function redis_ms()\n" \
	"  local t = redis.call('TIME')\n" \
	"  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n" \
	"end\n" \
	"local function last_time(key)\n" \
	"  local last = redis.call('GET', key)\n" \
	"  if last and string.match(last, '^%d+$') and #last <= 15 then return tonumber(last) end\n" \
	"  return 0\n" \
	"end\n" \
	"local function clock(key)\n" \
	"  local now, last = redis_ms(), last_time(key)\n" \
	"  if last >= now then now = last + 1 end\n" \
	"  redis.call('SET', key, string.format('%.0f', now))\n" \
	"  return now\n" \
	"end\n" \
	"local function revoked(key, since)\n" \
	"  local record = redis.call('GET', key)\n" \
	"  if not record then return false end\n" \
	"  local ms = string.match(record, '^1|(%d+)$')\n" \
	"  if not ms or #ms > 15 then return true end\n" \
	"  return tonumber(ms) >= since\n" \
	"end\n" \
	"local function owner(value)\n" \
	"  return value and string.match(value, '^1|%d+|[a-z0-9-]*|(.+)$')\n" \
	"end\n"

const char pbs_lease_script_clock[] = LEASE_LUA_COMMON "return clock(KEYS[1])\n";

/* A login's grant is refused when a revoke came after the login began (STARTED, read from
 * the same clock before the login's grant was sent), or when it arrives later than its
 * writer waits for it: a late write must not bring back what a revoke took. It is refused
 * too while the user is suspended, and when the address already has as many other users
 * as lease.max_users_per_address allows, counted over the lease's ttl in a sorted set
 * whose members are the users and whose scores are their last logins. The counters
 * go through pcall: one Redis refuses costs its count, never the lease. The lease key is
 * an argument, not a KEY, so that a writer may run it with write-only rights on leases
 * (Redis checks a script's KEYS for read and write). */
const char pbs_lease_script_grant[] = LEASE_LUA_COMMON
	"local now = clock(KEYS[1])\n"
	"local started = tonumber(ARGV[4])\n"
	"if now > started + tonumber(ARGV[5]) then return {'late', now, ''} end\n"
	"if revoked(ARGV[6], started) or revoked(ARGV[7], started) then\n"
	"  return {'revoked', now, ''}\n"
	"end\n"
	"if redis.call('EXISTS', ARGV[8]) == 1 then return {'suspended', now, ''} end\n"
	"redis.call('ZREMRANGEBYSCORE', ARGV[9], '-inf', '(' .. (now - ARGV[3] * 1000))\n"
	"if tonumber(ARGV[10]) > 0 and not redis.call('ZSCORE', ARGV[9], ARGV[11]) and\n"
	"   redis.call('ZCARD', ARGV[9]) >= tonumber(ARGV[10]) then\n"
	"  return {'shared', now, ''}\n"
	"end\n"
	"redis.call('ZADD', ARGV[9], now, ARGV[11])\n"
	"redis.call('EXPIRE', ARGV[9], ARGV[3])\n"
	"redis.call('SET', ARGV[1], ARGV[2], 'EX', ARGV[3])\n"
	"local err, i = '', 12\n"
	"while i <= #ARGV do\n"
	"  local n = tonumber(ARGV[i])\n"
	"  local r = redis.pcall(unpack(ARGV, i + 1, i + n))\n"
	"  if type(r) == 'table' and r.err and err == '' then err = r.err end\n"
	"  i = i + n + 1\n"
	"end\n"
	"return {'granted', now, err}\n";

/* An open session's refresh. A suspension of its user and the revocation records are read
 * first, every time: a session suspended or revoked since its login keeps nothing alive,
 * not even another's lease. It keeps
 * a lease naming its own user (the same person's other session or device), leaves another
 * user's alone, and writes its own back where none is only when allowed to. */
const char pbs_lease_script_refresh[] = LEASE_LUA_COMMON
	"local login = tonumber(ARGV[3])\n"
	"if redis.call('EXISTS', ARGV[8]) == 1 then return 'suspended' end\n"
	"if revoked(ARGV[6], login) or revoked(ARGV[7], login) then return 'revoked' end\n"
	"local current = redis.call('GET', KEYS[1])\n"
	"if current then\n"
	"  if owner(current) ~= ARGV[5] then return 'other' end\n"
	"  redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
	"  local t = redis.call('TIME')\n"
	"  redis.call('ZADD', ARGV[9], 'XX', tonumber(t[1]) * 1000, ARGV[5])\n"
	"  redis.call('EXPIRE', ARGV[9], ARGV[2])\n"
	"  return 'kept'\n"
	"end\n"
	"if ARGV[4] ~= '1' then return 'gone' end\n"
	"redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\n"
	"return 'restored'\n";

/* The record and the removal in one step: no refresh or grant can come in between. */
const char pbs_lease_script_revoke[] = LEASE_LUA_COMMON
	"local now = clock(KEYS[2])\n"
	"redis.call('SET', KEYS[1], '1|' .. string.format('%.0f', now), 'EX', ARGV[1])\n"
	"local removed = 0\n"
	"if KEYS[3] then removed = redis.call('DEL', KEYS[3]) end\n"
	"return {removed, now}\n";

const char pbs_lease_script_remove_if_user[] = LEASE_LUA_COMMON
	"local user = owner(redis.call('GET', KEYS[1]))\n"
	"if not user or string.lower(user) ~= string.lower(ARGV[1]) then return 0 end\n"
	"return redis.call('DEL', KEYS[1])\n";

/* The suspension's record, at the store's clock, for as long as asked (or until lifted). */
const char pbs_lease_script_suspend[] = LEASE_LUA_COMMON
	"local now = clock(KEYS[2])\n"
	"local value = '1|' .. string.format('%.0f', now) .. '|' .. ARGV[2]\n"
	"if tonumber(ARGV[1]) > 0 then redis.call('SET', KEYS[1], value, 'EX', ARGV[1])\n"
	"else redis.call('SET', KEYS[1], value) end\n"
	"return now\n";

/* A relay recipient's lease, checked and counted in one step (limits on). Under lease.sender
 * a lease whose user MAIL FROM does not agree with (as pbs_policy_sender_owner gives it:
 * the address, or its domain, in lower case) is answered "sender" and nothing is counted:
 * a NAT neighbour refused for the sender cannot use up the user's hour. The counters are
 * per clock hour of the store's time (read, never advanced: a gate's count orders nothing),
 * "<prefix>limit:user:<hour>:<user>" and "<prefix>limit:lease:<hour>:<subject>", the hour
 * first so that no user name can make one key look like another's. A recipient over a
 * limit is not counted (it was not relayed); a counter that is not a number counts as
 * over (when in doubt, no relay). Refusals by a limit are counted per store day
 * ("<prefix>limit:refused:<day>:<user>") when suspend_after is set, and the refusal that
 * reaches it suspends the user. A suspended user's lease is refused before anything is
 * counted, so an administrator's suspension is never replaced by a shorter one. */
const char pbs_lease_script_relay[] = LEASE_LUA_COMMON
	"local function count(key)\n"
	"  local v = redis.pcall('GET', key)\n"
	"  if not v then return 0 end\n"
	"  if type(v) ~= 'string' or not string.match(v, '^%d+$') or #v > 15 then\n"
	"    return math.huge\n"
	"  end\n"
	"  return tonumber(v)\n"
	"end\n"
	"local function bump(key, ttl)\n"
	"  local n = redis.call('INCR', key)\n"
	"  if n == 1 then redis.call('EXPIRE', key, ttl) end\n"
	"  return n\n"
	"end\n"
	"local value = redis.pcall('GET', ARGV[1])\n"
	"if type(value) == 'table' then return {'bad', '', 0, 0, 0} end\n"
	"if not value then return {'none', '', 0, 0, 0} end\n"
	"local user = owner(value)\n"
	"if not user then return {'bad', value, 0, 0, 0} end\n"
	"local p, who = ARGV[2], string.lower(user)\n"
	"if redis.call('EXISTS', p .. 'suspended:' .. who) == 1 then\n"
	"  return {'suspended', value, 0, 0, 0}\n"
	"end\n"
	"local rule, want = ARGV[9], ARGV[10]\n"
	"local mine = who\n"
	"if rule == 'domain' then mine = string.match(mine, '^[^@]+@([^@]+)$') end\n"
	"if rule ~= 'any' and mine ~= want then return {'sender', value, 0, 0, 0} end\n"
	"local now = math.max(redis_ms(), last_time(ARGV[3]))\n"
	"local hour = string.format('%.0f', math.floor(now / 3600000))\n"
	"local ukey = p .. 'limit:user:' .. hour .. ':' .. who\n"
	"local lkey = p .. 'limit:lease:' .. hour .. ':' .. ARGV[4]\n"
	"local ulimit, llimit = tonumber(ARGV[5]), tonumber(ARGV[6])\n"
	"local users, leases = count(ukey), count(lkey)\n"
	"local over = nil\n"
	"if ulimit > 0 and users >= ulimit then over = 'user-limit'\n"
	"elseif llimit > 0 and leases >= llimit then over = 'lease-limit' end\n"
	"if over then\n"
	"  local after = tonumber(ARGV[7])\n"
	"  if after <= 0 or over ~= 'user-limit' then return {over, value, ulimit, llimit, 0} end\n"
	"  local day = string.format('%.0f', math.floor(now / 86400000))\n"
	"  local refused = p .. 'limit:refused:' .. day .. ':' .. who\n"
	"  local n = bump(refused, 172800)\n"
	"  if n < after then return {over, value, ulimit, llimit, 0} end\n"
	"  redis.call('SET', refused, '0', 'KEEPTTL')\n"
	"  redis.call('SET', p .. 'suspended:' .. who, '1|' .. string.format('%.0f', now) ..\n"
	"    '|' .. over .. ': ' .. after .. ' refusals by a relay limit in a day', 'EX', ARGV[8])\n"
	"  return {over, value, ulimit, llimit, 1}\n"
	"end\n"
	"if ulimit > 0 then users = bump(ukey, 7200) end\n"
	"if llimit > 0 then leases = bump(lkey, 7200) end\n"
	"return {'relay', value, users, leases, 0}\n";
