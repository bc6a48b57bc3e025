#!/bin/bash
# deb.sh SOURCE_DIR — the Debian packages, checked the way CI can without installing
# them: scripts/build-deb into a temp dir (the source tree stays as it was), lintian
# (no error, no warning), each package's files (dpkg -c) and control files (dpkg -e:
# conffiles, the user in postinst, the milter unit enabled, started and stopped the
# Debian way, no MTA or Dovecot configuration touched), then every package unpacked
# with dpkg -x into a temp root: the shipped configuration passes popbsmtp-milter -t,
# man finds the pages, and the end-to-end stories of both gates and of the Dovecot
# plugin (test/e2e/milter_postfix.sh, policy_postfix.sh, policy_daemon_postfix.sh,
# exim.sh, plugin_dovecot.sh: Redis, Dovecot, Postfix, Exim, real clients) run against the
# programs and the Exim ACL taken from the packages.
# The install, upgrade, remove and purge on a real system: scripts/test-deb-lifecycle.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib/common.sh"

if [ $# -ne 1 ] || [ ! -f "$1/debian/control" ]; then
	echo "usage: $0 SOURCE_DIR" >&2
	exit 2
fi
SRC=$(cd "$1" && pwd)
DIST=$PBS_TMP/dist
ROOT=$PBS_TMP/root
PACKAGES="popbsmtp-common popbsmtp-dovecot popbsmtp-milter popbsmtp-policy popbsmtp-tools"
VERSION=$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Version)

# ---- build ----

# git_state — the source tree as git sees it (empty outside a git checkout).
git_state() { git -C "$SRC" status --porcelain --ignored 2>/dev/null; }
before=$(git_state)
if "$SRC/scripts/build-deb" "$DIST" >"$PBS_TMP/build.log" 2>&1; then
	pbs_ok "scripts/build-deb builds the packages"
else
	pbs_fail "scripts/build-deb failed:"
	sed 's/^/# /' "$PBS_TMP/build.log"
	pbs_done
fi
pbs_check_eq "build-deb leaves the source tree as it was" "$before" "$(git_state)"

# deb PACKAGE — the path of PACKAGE's .deb in DIST.
deb() { ls "$DIST/$1"_*.deb; }
pbs_check_eq "one .deb per package, nothing else" \
	"$(for p in $PACKAGES; do printf '%s\n' "$p"; done)" \
	"$(ls "$DIST" | sed 's/_.*//' | sort)"
pbs_check_match "the Debian version is the CMake project version with a revision" \
	"^$(sed -n 's/^project(popbsmtp VERSION \([0-9.]*\) .*/\1/p' "$SRC/CMakeLists.txt" | sed 's/\./\\./g')-[0-9]+$" \
	"$VERSION"
for p in $PACKAGES; do
	pbs_check_eq "$p: version $VERSION" "$VERSION" "$(dpkg-deb -f "$(deb "$p")" Version)"
done

# ---- lintian ----

lintian --allow-root -I "$DIST"/*.deb >"$PBS_TMP/lintian.out" 2>&1
sed 's/^/# lintian: /' "$PBS_TMP/lintian.out"
pbs_check_eq "lintian: no error" "" "$(grep '^E:' "$PBS_TMP/lintian.out")"
pbs_check_eq "lintian: no warning (overrides say why, in debian/*.lintian-overrides)" "" \
	"$(grep '^W:' "$PBS_TMP/lintian.out")"

# ---- contents ----

# files PACKAGE — the files (not directories) PACKAGE ships, as absolute paths.
files() { dpkg-deb -c "$(deb "$1")" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }' | sort; }
# expect_files PACKAGE PATH… — PACKAGE ships each PATH.
expect_files() {
	local p=$1 f list
	shift
	list=$(files "$p")
	for f in "$@"; do
		if grep -qxF "$f" <<<"$list"; then pbs_ok "$p ships $f"; else pbs_fail "$p lacks $f"; fi
	done
}
expect_files popbsmtp-common /etc/popbsmtp/popbsmtp.conf /etc/popbsmtp/popbsmtp.conf.sample \
	/usr/share/man/man5/popbsmtp.conf.5.gz /usr/share/doc/popbsmtp-common/copyright \
	/usr/share/doc/popbsmtp-common/dovecot.md.gz /usr/share/doc/popbsmtp-common/postfix.md.gz
expect_files popbsmtp-dovecot /usr/sbin/popbsmtp-postlogin /usr/share/man/man8/popbsmtp-postlogin.8.gz \
	/usr/lib/dovecot/modules/lib90_popbsmtp_plugin.so
expect_files popbsmtp-policy /usr/sbin/popbsmtp-policy /usr/share/man/man8/popbsmtp-policy.8.gz
# Units where this release's debhelper puts them: /lib/systemd/system on Debian 12,
# /usr/lib/systemd/system on 13.
case $(. /etc/os-release && echo "$VERSION_ID") in 12) UNITDIR=/lib/systemd/system ;; *) UNITDIR=/usr/lib/systemd/system ;; esac
expect_files popbsmtp-milter /usr/sbin/popbsmtp-milter /usr/share/man/man8/popbsmtp-milter.8.gz \
	"$UNITDIR/popbsmtp-milter.service"
expect_files popbsmtp-tools /usr/sbin/popbsmtpctl /usr/share/man/man8/popbsmtpctl.8.gz \
	"$UNITDIR/popbsmtp-metrics.service" "$UNITDIR/popbsmtp-metrics.timer"
# Every doc README links to is in the packages (as a package user reads them).
for doc in $(grep -o 'docs/[a-z-]*\.md' "$SRC/README.md" | sort -u); do
	expect_files popbsmtp-common "/usr/share/doc/popbsmtp-common/${doc#docs/}.gz"
done
all=$(for p in $PACKAGES; do files "$p"; done | grep -v '^/usr/share/doc/')
pbs_check_eq "no file is in two packages" "" "$(sort <<<"$all" | uniq -d)"
for prog in $(grep '^/usr/sbin/' <<<"$all"); do
	for p in $PACKAGES; do files "$p" | grep -qxF "$prog" && break; done
	expect_files "$p" "/usr/share/man/man8/${prog##*/}.8.gz"
done
pbs_check_eq "only root owns files (Rules-Requires-Root: no)" "" \
	"$(for p in $PACKAGES; do dpkg-deb -c "$(deb "$p")"; done | awk '$2 != "root/root"')"
pbs_check_match "popbsmtp-dovecot depends on the ABI of the Dovecot its plugin was built for" \
	"(^|, )dovecot-abi-$(cat /usr/share/dovecot/dovecot-abi)(,|$)" \
	"$(dpkg-deb -f "$(deb popbsmtp-dovecot)" Depends)"
expect_files popbsmtp-policy "$UNITDIR/popbsmtp-policy.service" \
	/usr/share/popbsmtp/exim/popbsmtp.acl
pbs_check_eq "popbsmtp-policy has no init.d script" "" \
	"$(dpkg-deb -c "$(deb popbsmtp-policy)" | grep -E 'init\.d')"
for p in popbsmtp-dovecot popbsmtp-milter popbsmtp-policy popbsmtp-tools; do
	pbs_check_match "$p depends on popbsmtp-common of the same version" \
		"(^|, )popbsmtp-common \(= $VERSION\)(,|$)" "$(dpkg-deb -f "$(deb "$p")" Depends)"
done

# ---- control files ----

mkdir -p "$PBS_TMP/control"
for p in $PACKAGES; do dpkg-deb -e "$(deb "$p")" "$PBS_TMP/control/$p"; done
C=$PBS_TMP/control
pbs_check_eq "popbsmtp-common: conffiles are the configuration and its sample" \
	"/etc/popbsmtp/popbsmtp.conf /etc/popbsmtp/popbsmtp.conf.sample" "$(sort "$C/popbsmtp-common/conffiles" | paste -sd' ' -)"
pbs_check_match "popbsmtp-common postinst: creates the system user and group popbsmtp" \
	'adduser --system --group .*popbsmtp$' "$(cat "$C/popbsmtp-common/postinst")"
pbs_check_match "popbsmtp-common postinst: the configuration is root:popbsmtp 0640 (statoverride)" \
	'dpkg-statoverride --update --add root popbsmtp 0640 "\$CONF"' "$(cat "$C/popbsmtp-common/postinst")"
pbs_check_match "popbsmtp-common postinst: /etc/popbsmtp is root:popbsmtp 0750 (statoverride)" \
	'dpkg-statoverride --update --add root popbsmtp 0750 /etc/popbsmtp$' "$(cat "$C/popbsmtp-common/postinst")"
pbs_check_match "popbsmtp-common postrm: drops both statoverrides on purge" \
	'for path in /etc/popbsmtp/popbsmtp.conf /etc/popbsmtp; do.*dpkg-statoverride --remove "\$path"' \
	"$(tr '\n' ' ' <"$C/popbsmtp-common/postrm")"
# The socket's group, made before the unit is first started (which needs it as its Group=).
pbs_check_eq "popbsmtp-milter postinst: makes the system group popbsmtp-milter, then starts the unit" \
	"addgroup --system --quiet popbsmtp-milter|deb-systemd-invoke" \
	"$(grep -oE "addgroup --system --quiet popbsmtp-milter|deb-systemd-invoke" "$C/popbsmtp-milter/postinst" | head -n 2 | paste -sd'|' -)"
pbs_check_match "popbsmtp-milter postinst: enables the milter unit" \
	"deb-systemd-helper enable 'popbsmtp-milter.service'" "$(cat "$C/popbsmtp-milter/postinst")"
pbs_check_match "popbsmtp-milter postinst: starts (restarts on upgrade) the milter" \
	"deb-systemd-invoke \\\$_dh_action 'popbsmtp-milter.service'" "$(cat "$C/popbsmtp-milter/postinst")"
pbs_check_match "popbsmtp-milter postinst: says when the milter is not running (no systemd, or it failed)" \
	'systemd is not running here, so the milter was not started.*the milter did not start' \
	"$(tr '\n' ' ' <"$C/popbsmtp-milter/postinst")"
# dh_installsystemd --no-enable: the timer is enabled again on upgrade only if the
# administrator had enabled it, and never started by the package.
pbs_check_match "popbsmtp-tools postinst: the metrics timer is enabled only where it was before" \
	"if deb-systemd-helper debian-installed 'popbsmtp-metrics.timer'" "$(cat "$C/popbsmtp-tools/postinst")"
pbs_check_eq "popbsmtp-tools postinst: the metrics timer is never started by the package" "" \
	"$(grep "deb-systemd-invoke.*popbsmtp-metrics" "$C/popbsmtp-tools/postinst")"
# The policy daemon's unit: installed, never enabled or started by the package (spawn(8)
# needs none); its socket's group made at configure.
pbs_check_match "popbsmtp-policy postinst: makes the system group popbsmtp-policy" \
	"addgroup --system --quiet popbsmtp-policy" "$(cat "$C/popbsmtp-policy/postinst")"
pbs_check_match "popbsmtp-policy postinst: the daemon's unit is enabled only where it was before" \
	"if deb-systemd-helper debian-installed 'popbsmtp-policy.service'" "$(cat "$C/popbsmtp-policy/postinst")"
pbs_check_eq "popbsmtp-policy postinst: the daemon is never started by the package" "" \
	"$(grep "deb-systemd-invoke.*popbsmtp-policy" "$C/popbsmtp-policy/postinst")"
pbs_check_match "popbsmtp-policy prerm: stops the daemon on remove" \
	"deb-systemd-invoke stop 'popbsmtp-policy.service'" "$(cat "$C/popbsmtp-policy/prerm")"
pbs_check_match "popbsmtp-milter prerm: stops the milter on remove" \
	"deb-systemd-invoke stop 'popbsmtp-milter.service'" "$(cat "$C/popbsmtp-milter/prerm")"
pbs_check_match "popbsmtp-milter postrm: forgets the unit on purge" \
	"deb-systemd-helper purge 'popbsmtp-milter.service'" "$(cat "$C/popbsmtp-milter/postrm")"
pbs_check_eq "no maintainer script touches Postfix's, Sendmail's or Dovecot's configuration" "" \
	"$(grep -lE '/etc/(postfix|mail|dovecot)|postconf|doveconf|adduser +(postfix|dovecot|smmta)' "$C"/*/p* 2>/dev/null)"

# ---- unpacked ----

for p in $PACKAGES; do dpkg-deb -x "$(deb "$p")" "$ROOT"; done
pbs_check_eq "the configuration is a copy of the annotated sample" "" \
	"$(cmp "$ROOT/etc/popbsmtp/popbsmtp.conf" "$ROOT/etc/popbsmtp/popbsmtp.conf.sample" 2>&1)"
pbs_check_eq "the shipped configuration passes popbsmtp-milter -t" \
	"$ROOT/etc/popbsmtp/popbsmtp.conf: configuration OK" \
	"$("$ROOT/usr/sbin/popbsmtp-milter" -t -c "$ROOT/etc/popbsmtp/popbsmtp.conf" 2>&1)"
unit=$ROOT$UNITDIR/popbsmtp-milter.service
pbs_check_eq "the unit runs the packaged milter as popbsmtp with the packaged configuration" \
	"User=popbsmtp|ExecStart=/usr/sbin/popbsmtp-milter -f -c /etc/popbsmtp/popbsmtp.conf|" \
	"$(grep -E '^(User|ExecStart)=' "$unit" | tr '\n' '|')"
# Its socket and /run/popbsmtp get its primary group, the one the MTA joins; the group of
# the configuration only as a supplementary one (docs/postfix.md, "Socket permissions").
pbs_check_eq "the unit's groups: popbsmtp-milter (the socket's), popbsmtp (to read the configuration)" \
	"Group=popbsmtp-milter|SupplementaryGroups=popbsmtp|" \
	"$(grep -E '^(Group|SupplementaryGroups)=' "$unit" | tr '\n' '|')"
punit=$ROOT$UNITDIR/popbsmtp-policy.service
pbs_check_eq "the policy daemon's unit: as popbsmtp, its socket's group popbsmtp-policy, reads the configuration as popbsmtp" \
	"User=popbsmtp|Group=popbsmtp-policy|SupplementaryGroups=popbsmtp|ExecStart=/usr/sbin/popbsmtp-policy -L -c /etc/popbsmtp/popbsmtp.conf|RuntimeDirectory=popbsmtp-policy|" \
	"$(grep -E '^(User|Group|SupplementaryGroups|ExecStart|RuntimeDirectory)=' "$punit" | tr '\n' '|')"
pbs_check_eq "the policy daemon's unit is hardened as the milter's" \
	"$(sed -n '/^NoNewPrivileges/,/^SystemCallErrorNumber/p' "$unit")" \
	"$(sed -n '/^NoNewPrivileges/,/^SystemCallErrorNumber/p' "$punit")"
pbs_check_match "the shipped configuration's policy.listen is in the unit's RuntimeDirectory" \
	'^unix:/run/popbsmtp-policy/' \
	"$(sed -n 's/^[[:space:]]*#*[[:space:]]*listen = "\(.*\)";.*/\1/p' "$ROOT/etc/popbsmtp/popbsmtp.conf") $(grep -o 'unix:/run/popbsmtp-policy/policy.sock' "$ROOT/usr/share/popbsmtp/exim/popbsmtp.acl" | head -n 1)"
pbs_check_eq "the hook is linked statically (no NEEDED libraries)" "" \
	"$(readelf -d "$ROOT/usr/sbin/popbsmtp-postlogin" | grep NEEDED)"
for page in popbsmtpctl popbsmtp-milter popbsmtp-policy popbsmtp-postlogin popbsmtp.conf; do
	pbs_check_eq "man finds $page in the packages" "$ROOT/usr/share/man/man$([ $page = popbsmtp.conf ] && echo 5 || echo 8)/$page.$([ $page = popbsmtp.conf ] && echo 5 || echo 8).gz" \
		"$(man -M "$ROOT/usr/share/man" -w "$page" 2>&1)"
done
pbs_check_match "man popbsmtpctl renders the page" 'popbsmtpctl - list, check, grant and revoke' \
	"$(MANWIDTH=100 man -M "$ROOT/usr/share/man" popbsmtpctl 2>/dev/null | head -n 5)"

# The e2e stories want a build dir (hook/, milter/, policy/, plugin/, ctl/): links to the
# unpacked programs.
BIN=$PBS_TMP/bin
mkdir -p "$BIN/hook" "$BIN/milter" "$BIN/policy" "$BIN/plugin" "$BIN/ctl"
ln -s "$ROOT/usr/sbin/popbsmtp-postlogin" "$BIN/hook/"
ln -s "$ROOT/usr/sbin/popbsmtp-milter" "$BIN/milter/"
ln -s "$ROOT/usr/sbin/popbsmtp-policy" "$BIN/policy/"
ln -s "$ROOT/usr/lib/dovecot/modules/lib90_popbsmtp_plugin.so" "$BIN/plugin/"
ln -s "$ROOT/usr/sbin/popbsmtpctl" "$BIN/ctl/"
# exim.sh includes the packaged acl_popbsmtp (PBS_EXIM_ACL).
for story in milter_postfix policy_postfix policy_daemon_postfix exim plugin_dovecot; do
	PBS_EXIM_ACL=$ROOT/usr/share/popbsmtp/exim/popbsmtp.acl \
		bash "$SRC/test/e2e/$story.sh" "$BIN" >"$PBS_TMP/$story.out" 2>&1
	rc=$?
	sed "s/^/# $story: /" "$PBS_TMP/$story.out"
	pbs_check_eq "the end-to-end story $story.sh passes with the packaged programs" 0 "$rc"
done
pbs_done
