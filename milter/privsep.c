/*
 * privsep.c — socket permissions, daemonizing, pidfile and privilege drop. Done in this
 * order by main: the socket is opened as root (so it can live in a root-owned run
 * directory), then the process becomes milter.user before it serves any session.
 */
#include "privsep.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

#include "popbsmtp/log.h"

static char *pidfile_path;
static pid_t pidfile_pid;

/* The path of a "unix:" or "local:" socket spec, or NULL for inet sockets. */
static const char *unix_path(const char *spec)
{
	if (strncmp(spec, "unix:", 5) == 0)
		return spec + 5;
	if (strncmp(spec, "local:", 6) == 0)
		return spec + 6;
	if (spec[0] == '/')
		return spec;
	return NULL;
}

/* Give the unix socket at PATH the configured group and mode. */
static int socket_permissions(const char *path, const struct pbs_milter_config *cfg)
{
	struct group *gr;

	if (cfg->socket_group[0] != '\0') {
		if ((gr = getgrnam(cfg->socket_group)) == NULL) {
			pbs_log(LOG_ERR, "milter.socket_group '%s' does not exist",
				cfg->socket_group);
			return -1;
		}
		if (chown(path, (uid_t)-1, gr->gr_gid) != 0) {
			pbs_log(LOG_ERR, "cannot chown %s: %s", path, strerror(errno));
			return -1;
		}
	}
	if (chmod(path, (mode_t)cfg->socket_mode) != 0) {
		pbs_log(LOG_ERR, "cannot chmod %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* True when a process already serves the unix socket at PATH: removing it as stale would
 * cut that running milter off from its MTA. */
static bool socket_in_use(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd, rc;

	if (strlen(path) >= sizeof sun.sun_path ||
	    (fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return false;
	strcpy(sun.sun_path, path);
	rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
	close(fd);
	return rc == 0;
}

int pbs_privsep_open_socket(const struct pbs_milter_config *cfg)
{
	const char *path = unix_path(cfg->socket);
	mode_t old;
	int rc;

	if (path != NULL && socket_in_use(path)) {
		pbs_log(LOG_ERR, "%s is in use by a running milter; not starting a second one",
			cfg->socket);
		return -1;
	}
	old = umask(0177); /* nobody may connect before the mode is set */
	rc = smfi_opensocket(true);

	umask(old);
	if (rc != MI_SUCCESS) {
		pbs_log(LOG_ERR, "cannot open milter socket %s (does its directory exist? is it "
				 "in use?)", cfg->socket);
		return -1;
	}
	return path ? socket_permissions(path, cfg) : 0;
}

/* The pid recorded in PATH if that process is alive, else 0. */
static pid_t live_pid_in(const char *path)
{
	FILE *f = fopen(path, "r");
	long pid = 0;

	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld", &pid) != 1 || pid <= 1)
		pid = 0;
	fclose(f);
	if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH)
		pid = 0;
	return (pid_t)pid;
}

/* Write our pid to PATH; never through a symlink, never into someone else's file. */
static int write_pidfile(const char *path)
{
	char buf[32];
	int fd, len;

	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		pbs_log(LOG_ERR, "cannot write pidfile %s: %s", path, strerror(errno));
		return -1;
	}
	len = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
	if (write(fd, buf, (size_t)len) != len) {
		pbs_log(LOG_ERR, "cannot write pidfile %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	pidfile_path = strdup(path);
	pidfile_pid = getpid();
	return 0;
}

int pbs_privsep_daemonize(const char *pidfile)
{
	pid_t pid, running;
	int null;

	if (pidfile[0] != '\0' && (running = live_pid_in(pidfile)) != 0) {
		pbs_log(LOG_ERR, "already running as pid %ld (pidfile %s)", (long)running, pidfile);
		return -1;
	}
	if ((pid = fork()) < 0) {
		pbs_log(LOG_ERR, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid > 0)
		_exit(0);
	setsid();
	if (chdir("/") != 0)
		return -1;
	if ((null = open("/dev/null", O_RDWR)) >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	return pidfile[0] != '\0' ? write_pidfile(pidfile) : 0;
}

void pbs_privsep_remove_pidfile(void)
{
	/* Only the process that wrote it removes it, and only if it still names us. */
	if (pidfile_path != NULL && pidfile_pid == getpid() && live_pid_in(pidfile_path) == getpid())
		unlink(pidfile_path);
}

int pbs_privsep_drop(const char *user)
{
	struct passwd *pw;

	if (geteuid() != 0 || user[0] == '\0')
		return 0;
	if ((pw = getpwnam(user)) == NULL) {
		pbs_log(LOG_ERR, "milter.user '%s' does not exist (set it to \"\" to stay root)",
			user);
		return -1;
	}
	if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
	    setuid(pw->pw_uid) != 0) {
		pbs_log(LOG_ERR, "cannot become user %s: %s", user, strerror(errno));
		return -1;
	}
	/* Make sure there is no way back. */
	if (pw->pw_uid != 0 && setuid(0) == 0) {
		pbs_log(LOG_ERR, "privileges could be regained after dropping to %s", user);
		return -1;
	}
	return 0;
}
