#!/usr/bin/env bash
# Run scaling.sh here as if on a bare machine: in a private mount namespace where Debian's
# shared libraries (/usr/lib/x86_64-linux-gnu, hence the system's dynamic loader too),
# PostgreSQL, PgBouncer and the time zone files are hidden, with only static busybox and static
# bash for the shell tools. Every dynamically linked program that runs must then come from the
# bundle and load only the bundle's libraries, or it fails. `make bench-scaling` uses it.
#   tests/bench/device/bare.sh BUNDLE.tar.gz        (as root; settings as for scaling.sh)
# Needs unshare (util-linux) and the Debian packages busybox-static and bash-static
# (tests/deps.sh bundle).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PGMUX_BARE_INNER:-}" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "bare.sh: needs root (mount namespace)" >&2; exit 1; }
    for f in /bin/busybox /bin/bash-static; do
        [ -x $f ] || { echo "bare.sh: $f missing (tests/deps.sh bundle)" >&2; exit 1; }
    done
    exec unshare --mount --propagation private env PGMUX_BARE_INNER=1 bash "$0" "$@"
fi

tools=$(mktemp -d /tmp/pgmux-bare-tools.XXXXXX)
/bin/busybox --install -s "$tools"
ln -sf /bin/bash-static "$tools/bash"
ln -sf /bin/bash-static "$tools/sh"
bb=/bin/busybox
# From here on only static programs may be started until the bundle's. The system's /bin/sh
# (dash, which pg_ctl's popen runs) becomes busybox's sh.
$bb mount --bind /bin/busybox "$(readlink -f /bin/sh)"
$bb mount --bind /bin/busybox /usr/bin/env  # for #!/usr/bin/env lines
$bb mount --bind /dev/null "$(readlink -f /usr/sbin/pgbouncer)"
# Private copies of the user database without a postgres user, as on a fresh machine: scaling.sh
# must then create its own, and the real files stay untouched.
# (Not in $tools: its passwd is a link to busybox.)
etc=$(mktemp -d /tmp/pgmux-bare-etc.XXXXXX)
for f in passwd group; do
    grep -v '^postgres:' /etc/$f > "$etc/$f"
    $bb mount --bind "$etc/$f" /etc/$f
done
for d in /usr/lib/postgresql /usr/share/postgresql /usr/share/postgresql-common \
         /usr/share/zoneinfo /usr/local/lib /usr/lib/x86_64-linux-gnu; do
    [ -d "$d" ] && $bb mount -t tmpfs -o size=1m,mode=755 none "$d"
done
export PATH=$tools
unset LD_LIBRARY_PATH
if ls /bin/ls >/dev/null 2>&1 && /usr/bin/ls / >/dev/null 2>&1; then
    echo "bare.sh: Debian's dynamically linked programs still run: the simulation is broken" >&2
    exit 1
fi
echo "bare.sh: Debian's libraries, loader, PostgreSQL, PgBouncer and zoneinfo are hidden; PATH=$PATH"
status=0
bash "$here/scaling.sh" "$@" || status=$?
grep "^pgmuxbench:" /etc/passwd && echo "bare.sh: (that user lived in this namespace's copy of /etc/passwd only)"
$bb umount /etc/passwd /etc/group 2>/dev/null
rm -rf "$tools" "$etc"
exit $status
