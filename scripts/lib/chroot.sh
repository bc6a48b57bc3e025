# shellcheck shell=sh
# chroot.sh — Debian chroots for popbsmtp's scripts (POSIX sh, sourced; run as root):
# make one with debootstrap, install packages in it, and run a command in it in its own
# namespaces. Used by scripts/test-chroot (the suite on another Debian release) and
# scripts/test-deb-lifecycle (the packages' install, upgrade, remove and purge).
#
# Every mount is made inside a private mount namespace (unshare --mount, whose mounts
# util-linux makes private): it disappears with the namespace's last process, so neither a
# failure nor a kill -9 can leave /proc or /dev/pts mounted under the chroot, where a later
# rm -rf of the chroot would reach the host's files through them.

# chroot_debootstrap SUITE DIR — a minbase Debian SUITE in DIR (which must not hold one yet)
# from Debian's archive (or DEBOOTSTRAP_MIRROR), whose packaged daemons never start.
# On failure prints debootstrap's last lines and returns 1.
chroot_debootstrap() {
	command -v debootstrap >/dev/null ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null ||
		{ echo "chroot: cannot install debootstrap" >&2; return 1; }
	mkdir -p "$2" || return 1
	# Its root directory: mktemp's 0700 would shut every user but root out of the chroot.
	chmod 755 "$2"
	# In a private mount namespace: debootstrap mounts /proc and /sys in DIR while it runs;
	# there they go with it, even when it is killed, and no rm -rf of DIR can reach the
	# host's /proc through them.
	# shellcheck disable=SC2086 # no mirror: debootstrap's default, Debian's archive
	unshare --mount debootstrap --variant=minbase "$1" "$2" ${DEBOOTSTRAP_MIRROR:-} \
		>"$2.debootstrap.log" 2>&1 ||
		{ tail -n 20 "$2.debootstrap.log" >&2; echo "chroot: debootstrap $1 failed" >&2; return 1; }
	rm -f "$2.debootstrap.log"
	# invoke-rc.d asks policy-rc.d before starting a service; 101 = "not allowed": the
	# packages' postinst then neither start Redis, Dovecot, Postfix… nor fail for it.
	printf '#!/bin/sh\n# popbsmtp: no packaged daemon starts in this chroot.\nexit 101\n' \
		>"$2/usr/sbin/policy-rc.d" && chmod 755 "$2/usr/sbin/policy-rc.d"
}

# chroot_mounts_under DIR — print the mount points of this namespace under DIR (none normally).
chroot_mounts_under() {
	awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts
}

# chroot_net DIR COMMAND… — run COMMAND inside DIR with the network (for apt) but in its
# own pid and mount namespaces, /proc mounted; returns COMMAND's status.
chroot_net() {
	# shellcheck disable=SC2016 # expanded by that sh
	unshare --mount --pid --fork --kill-child sh -c 'mount -t proc proc "$1/proc" &&
		mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$1/dev/pts" && d=$1 && shift && exec chroot "$d" "$@"' \
		sh "$@"
}

# chroot_isolated DIR COMMAND… — run COMMAND inside DIR in its own network (loopback only, up),
# pid, mount, UTS and IPC namespaces with /proc, /sys, a private /dev/pts, and tmpfs on /run,
# /tmp and /dev/shm: no daemon it starts outlives it (the pid namespace dies with COMMAND), none
# can reach or collide with the host's services, and the host's /tmp is not touched. DIR is
# bound onto itself first: a chroot's / must be a mount point for a namespace made inside
# it (the Sendmail tests run under unshare --mount) to change its propagation.
# Returns COMMAND's status.
chroot_isolated() {
	# shellcheck disable=SC2016 # expanded by that sh
	unshare --net --pid --mount --uts --ipc --fork --kill-child sh -c '
		d=$1 && shift &&
		ip link set lo up &&
		mount --bind "$d" "$d" &&
		mount -t proc proc "$d/proc" &&
		mount -t sysfs sysfs "$d/sys" &&
		mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$d/dev/pts" &&
		mount -t tmpfs -o mode=0755 tmpfs "$d/run" &&
		mount -t tmpfs -o mode=1777 tmpfs "$d/tmp" &&
		mkdir -p "$d/dev/shm" && mount -t tmpfs -o mode=1777 tmpfs "$d/dev/shm" &&
		exec chroot "$d" "$@"' sh "$@"
}
