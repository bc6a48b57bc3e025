/*
 * listen.c — open a listening socket named in the milter's notation (listen.h). The
 * milter gets its socket from libmilter; popbsmtp-policy --listen gets it here, wrapped
 * in pbs_privsep_open_socket() for its mode and group, so both read the same notation
 * and set ownership the same way.
 */
#include "popbsmtp/listen.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "popbsmtp/log.h"

const char *pbs_listen_unix_path(const char *spec)
{
	if (strncmp(spec, "unix:", 5) == 0)
		return spec + 5;
	if (strncmp(spec, "local:", 6) == 0)
		return spec + 6;
	if (spec[0] == '/')
		return spec;
	return NULL;
}

/* Split an inet spec into FAMILY, PORT and HOST ("" for any). 0 or -1. */
static int inet_parts(const char *spec, int *family, char *port, size_t port_size, char *host,
		      size_t host_size)
{
	const char *rest, *at;
	size_t n;

	if (strncmp(spec, "inet:", 5) == 0) {
		*family = AF_INET;
		rest = spec + 5;
	} else if (strncmp(spec, "inet6:", 6) == 0) {
		*family = AF_INET6;
		rest = spec + 6;
	} else {
		return -1;
	}
	at = strchr(rest, '@');
	n = at != NULL ? (size_t)(at - rest) : strlen(rest);
	if (n == 0 || n >= port_size || strspn(rest, "0123456789") != n || atoi(rest) < 1 ||
	    atoi(rest) > 65535)
		return -1;
	memcpy(port, rest, n);
	port[n] = '\0';
	if (at == NULL) {
		host[0] = '\0';
		return 0;
	}
	if (at[1] == '\0' || strlen(at + 1) >= host_size)
		return -1;
	strcpy(host, at + 1);
	/* "[::1]" as libmilter takes it */
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	return 0;
}

bool pbs_listen_valid(const char *spec)
{
	const char *path = pbs_listen_unix_path(spec);
	char port[8], host[256];
	int family;

	if (path != NULL)
		return path[0] == '/' && strlen(path) < sizeof ((struct sockaddr_un *)0)->sun_path;
	return inet_parts(spec, &family, port, sizeof port, host, sizeof host) == 0;
}

/* A new socket of FAMILY, close-on-exec and non-blocking. */
static int new_socket(int family)
{
	return socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
}

/* Bind L to the unix socket PATH, replacing a stale socket node (never another file). */
static int open_unix(const char *path, struct pbs_listener *l)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct stat st;

	strcpy(sun.sun_path, path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			pbs_log(LOG_ERR, "%s exists and is not a socket: not replaced", path);
			return -1;
		}
		if (unlink(path) != 0 && errno != ENOENT) {
			pbs_log(LOG_ERR, "cannot remove the stale socket %s: %s", path,
				strerror(errno));
			return -1;
		}
	}
	if ((l->fd = new_socket(AF_UNIX)) < 0 ||
	    bind(l->fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		pbs_log(LOG_ERR, "cannot bind %s: %s", path, strerror(errno));
		return -1;
	}
	if (lstat(path, &st) == 0) {
		l->dev = st.st_dev;
		l->ino = st.st_ino;
	}
	snprintf(l->path, sizeof l->path, "%s", path);
	return 0;
}

/* Bind L to an inet SPEC. */
static int open_inet(const char *spec, struct pbs_listener *l)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char port[8], host[256];
	int family, one = 1, rc;

	if (inet_parts(spec, &family, port, sizeof port, host, sizeof host) != 0) {
		pbs_log(LOG_ERR, "bad socket '%s' (unix:/path or inet:port@host)", spec);
		return -1;
	}
	hints.ai_family = family;
	if ((rc = getaddrinfo(host[0] != '\0' ? host : NULL, port, &hints, &res)) != 0) {
		pbs_log(LOG_ERR, "socket '%s': %s", spec, gai_strerror(rc));
		return -1;
	}
	if ((l->fd = new_socket(res->ai_family)) < 0 ||
	    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(l->fd, res->ai_addr, res->ai_addrlen) != 0) {
		pbs_log(LOG_ERR, "cannot bind %s: %s", spec, strerror(errno));
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	return 0;
}

int pbs_listen_open(const char *spec, int backlog, struct pbs_listener *l)
{
	const char *path = pbs_listen_unix_path(spec);
	int rc;

	memset(l, 0, sizeof *l);
	l->fd = -1;
	if (path != NULL && !pbs_listen_valid(spec)) {
		pbs_log(LOG_ERR, "bad socket '%s': the path must be absolute and short", spec);
		return -1;
	}
	rc = path != NULL ? open_unix(path, l) : open_inet(spec, l);
	if (rc == 0 && listen(l->fd, backlog) != 0) {
		pbs_log(LOG_ERR, "cannot listen on %s: %s", spec, strerror(errno));
		rc = -1;
	}
	if (rc != 0 && l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
	return rc;
}

void pbs_listen_close(struct pbs_listener *l)
{
	struct stat st;

	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	/* Only the node this process made: the directory's owner may have put another there. */
	if (l->path[0] != '\0' && lstat(l->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    st.st_dev == l->dev && st.st_ino == l->ino)
		unlink(l->path);
	l->path[0] = '\0';
}
