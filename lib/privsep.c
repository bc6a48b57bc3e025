/*
 * privsep.c — socket permissions, daemonizing, pidfile and privilege drop, for every
 * daemon (the milter, the policy daemon). Done in this order by their main: the socket
 * is opened as root (so it can live in a root-owned run directory), then the process
 * becomes its configured user before it serves any session. How the socket itself is
 * made is the caller's (libmilter's smfi_opensocket, or pbs_listen_open): this file
 * only sets the umask and the effective group around it.
 */
#include "popbsmtp/privsep.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "popbsmtp/listen.h"
#include "popbsmtp/log.h"

static char *pidfile_path; /* the daemon's pidfile, held open and locked in pidfile_fd */
static int pidfile_fd = -1;

/* The gid socket_group of CFG names into *GID: 1, 0 when it is empty, -1 (logged). */
static int socket_gid(const struct pbs_socket_spec *cfg, gid_t *gid)
{
	struct group *gr;

	if (cfg->socket_group[0] == '\0')
		return 0;
	if ((gr = getgrnam(cfg->socket_group)) == NULL) {
		pbs_log(LOG_ERR, "%s.socket_group '%s' does not exist", cfg->key, cfg->socket_group);
		return -1;
	}
	*gid = gr->gr_gid;
	return 1;
}

/* Refuse a setgid directory of another group: bind() would give the socket the
 * directory's group, and nothing changes it afterwards. */
static int check_socket_dir(const char *path, const struct pbs_socket_spec *cfg, gid_t gid)
{
	char *copy = strdup(path);
	struct stat st;
	int rc = -1;

	if (copy == NULL) {
		pbs_log(LOG_ERR, "out of memory");
		return -1;
	}
	if (stat(dirname(copy), &st) != 0)
		pbs_log(LOG_ERR, "cannot open %s socket %s: its directory: %s", cfg->key, path,
			strerror(errno));
	else if ((st.st_mode & S_ISGID) != 0 && st.st_gid != gid)
		pbs_log(LOG_ERR, "the directory of %s is setgid to group %ld, which new files "
				 "get instead of %s.socket_group '%s': clear its setgid bit or "
				 "give it that group", path, (long)st.st_gid, cfg->key, cfg->socket_group);
	else
		rc = 0;
	free(copy);
	return rc;
}

/* bind() the socket: its mode comes from the umask and, as root, its group from the
 * effective gid, so the node is created as configured and root never changes a file
 * through the socket's path, which the directory's owner could swap for a symlink. */
static int bind_socket(const struct pbs_socket_spec *cfg, bool set_group, gid_t gid,
		       pbs_privsep_bind_fn *bind_fn, void *arg)
{
	gid_t egid = getegid();
	bool switch_gid = set_group && gid != egid && geteuid() == 0;
	mode_t old;
	int rc;

	if (switch_gid && setegid(gid) != 0) {
		pbs_log(LOG_ERR, "cannot take group '%s' to create the socket: %s",
			cfg->socket_group, strerror(errno));
		return -1;
	}
	old = umask(~(mode_t)cfg->socket_mode & 0777);
	rc = bind_fn(cfg, arg);
	umask(old);
	if (switch_gid && setegid(egid) != 0) {
		pbs_log(LOG_ERR, "cannot restore group %ld: %s", (long)egid, strerror(errno));
		return -1;
	}
	if (rc != 0) {
		pbs_log(LOG_ERR, "cannot open %s socket %s (does its directory exist? is it "
				 "in use?)", cfg->key, cfg->socket);
		return -1;
	}
	return 0;
}

/* Without root the socket was created with the process's own group: give it the
 * configured one. lchown() never follows a symlink, and unprivileged it can change
 * nothing the daemon's user could not change anyway. */
static int give_group_unprivileged(const char *path, const struct pbs_socket_spec *cfg,
				   gid_t gid)
{
	if (geteuid() == 0 || gid == getegid() || lchown(path, (uid_t)-1, gid) == 0)
		return 0;
	pbs_log(LOG_ERR, "cannot give %s the group '%s' (started as a non-member?): %s", path,
		cfg->socket_group, strerror(errno));
	return -1;
}

/* Say so when the node at PATH is not the socket as configured (a default ACL on the
 * directory, or someone replaced it). Only a warning: fixing it would mean following
 * the path. */
static void check_socket_node(const char *path, const struct pbs_socket_spec *cfg,
			      bool set_group, gid_t gid)
{
	struct stat st;

	if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode) ||
	    (st.st_mode & 07777) != (mode_t)cfg->socket_mode || (set_group && st.st_gid != gid))
		pbs_log(LOG_WARNING, "%s is not (or no longer) a socket with mode %04o%s%s; "
				     "check its directory", path, (unsigned)cfg->socket_mode,
			set_group ? " and group " : "", set_group ? cfg->socket_group : "");
}

/* True when a process already serves the unix socket at PATH: removing it as stale would
 * cut that running daemon off from its MTA. */
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

int pbs_privsep_open_socket(const struct pbs_socket_spec *cfg, pbs_privsep_bind_fn *bind_fn,
			    void *arg)
{
	const char *path = pbs_listen_unix_path(cfg->socket);
	gid_t gid = 0;
	int set_group;

	if (path == NULL)
		return bind_socket(cfg, false, 0, bind_fn, arg);
	if (socket_in_use(path)) {
		pbs_log(LOG_ERR, "%s is in use by a running %s; not starting a second one",
			cfg->socket, cfg->key);
		return -1;
	}
	if ((set_group = socket_gid(cfg, &gid)) < 0 ||
	    (set_group && check_socket_dir(path, cfg, gid) != 0) ||
	    bind_socket(cfg, set_group, gid, bind_fn, arg) != 0 ||
	    (set_group && give_group_unprivileged(path, cfg, gid) != 0))
		return -1;
	check_socket_node(path, cfg, set_group, gid);
	return 0;
}

/* A daemon holds an exclusive flock() on its open pidfile for as long as it lives: whether
 * that lock is held, not whether the pid in the file is alive, tells if one is running.
 * A pidfile left behind (the milter user may not remove it) therefore blocks no start,
 * even once its pid names another process. */

/* Log that the milter holding FD's lock runs, with the pid it wrote. */
static void report_running(int fd, const char *path)
{
	char buf[32], safe[PBS_LOG_SAFE_MAX];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);

	buf[n > 0 ? n : 0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	pbs_log(LOG_ERR, "already running as pid %s (pidfile %s is locked)",
		pbs_log_safe(buf[0] != '\0' ? buf : "?", safe), path);
}

/* True when PATH still names the file open in FD. */
static bool same_file(int fd, const char *path)
{
	struct stat st, now;

	return fstat(fd, &st) == 0 && lstat(path, &now) == 0 && st.st_dev == now.st_dev &&
	       st.st_ino == now.st_ino;
}

/* True when FD is still what PATH names, a plain file of ours with no other link: safe to
 * keep and write. */
static bool own_plain_file(int fd, const char *path)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
	       st.st_nlink == 1 && same_file(fd, path);
}

/* One try at taking PATH: the existing file if it is unlocked and ours, else a new one in
 * its place (never through a symlink, never into someone else's file). Returns the
 * locked descriptor, -1 to give up (logged), -2 to try again (PATH changed meanwhile). */
static int take_pidfile_once(const char *path)
{
	int fd = open(path, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC), locked;

	if (fd >= 0) {
		if ((locked = flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EWOULDBLOCK) {
			report_running(fd, path);
			close(fd);
			return -1;
		}
		if (locked == 0 && own_plain_file(fd, path) && ftruncate(fd, 0) == 0)
			return fd;
		close(fd);
	}
	if (unlink(path) != 0 && errno != ENOENT) {
		pbs_log(LOG_ERR, "cannot replace pidfile %s: %s", path, strerror(errno));
		return -1;
	}
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0 && errno == EEXIST)
		return -2;
	if (fd < 0) {
		pbs_log(LOG_ERR, "cannot write pidfile %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == 0 && own_plain_file(fd, path))
		return fd;
	close(fd);
	return -2;
}

/* Take PATH for this daemon: a locked descriptor, or -1 (logged) if a milter holds it. */
static int take_pidfile(const char *path)
{
	int tries, fd = -2;

	for (tries = 0; tries < 5 && fd == -2; tries++)
		fd = take_pidfile_once(path);
	if (fd == -2)
		pbs_log(LOG_ERR, "pidfile %s keeps changing; is another milter starting?", path);
	return fd < 0 ? -1 : fd;
}

/* Record PID in the pidfile FD. */
static int write_pid(int fd, const char *path, pid_t pid)
{
	char buf[32];
	int len = snprintf(buf, sizeof buf, "%ld\n", (long)pid);

	if (pwrite(fd, buf, (size_t)len, 0) == len)
		return 0;
	pbs_log(LOG_ERR, "cannot write pidfile %s: %s", path, strerror(errno));
	return -1;
}

int pbs_privsep_daemonize(const char *pidfile)
{
	pid_t pid;
	int null, fd = -1;

	/* Locked before the fork: the lock belongs to the open file, which the child keeps. */
	if (pidfile[0] != '\0' && (fd = take_pidfile(pidfile)) < 0)
		return -1;
	if ((pid = fork()) < 0) {
		pbs_log(LOG_ERR, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid > 0) {
		/* Written before the starting command exits, for whoever reads it then. */
		if (fd >= 0 && write_pid(fd, pidfile, pid) != 0) {
			kill(pid, SIGKILL);
			return -1;
		}
		_exit(0);
	}
	pidfile_fd = fd;
	pidfile_path = fd >= 0 ? strdup(pidfile) : NULL; /* NULL: left at exit, stale */
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
	return 0;
}

void pbs_privsep_remove_pidfile(void)
{
	/* Only while PATH still names the file we hold locked. Where the milter user may not
	 * remove it, it stays: stale, as nothing holds its lock. */
	if (pidfile_path != NULL && same_file(pidfile_fd, pidfile_path))
		unlink(pidfile_path);
}

int pbs_privsep_drop(const char *user, const char *key)
{
	struct passwd *pw;

	if (geteuid() != 0 || user[0] == '\0')
		return 0;
	if ((pw = getpwnam(user)) == NULL) {
		pbs_log(LOG_ERR, "%s.user '%s' does not exist (set it to \"\" to stay root)", key,
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
