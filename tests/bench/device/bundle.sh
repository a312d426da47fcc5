#!/usr/bin/env bash
# `make bench-bundle`: everything tests/bench/device/scaling.sh needs, packed to run on a bare
# x86-64 Linux that has neither PostgreSQL nor PgBouncer nor our libraries (nor Debian's libc).
#
#   build/bundle/pgmux-bundle/   the tree      build/bundle.tar.gz   the same, compressed
#
# Every ELF file in it is patched (patchelf) to load the bundled dynamic loader from a fixed
# path, $PREFIX/lib/ld-linux-x86-64.so.2, and to find its libraries through DT_RPATH relative to
# itself. DT_RPATH, not DT_RUNPATH: RPATH also serves the libraries' own dependencies and wins
# over an LD_LIBRARY_PATH the other machine may export. The loader path must be absolute, so the
# tree has to sit at $PREFIX there: scaling.sh extracts it to that place.
#
# Layout: bin/ (pgmux, pgbouncer, relay, pinrun, idle_clients), lib/ (every shared library, libc and the
# loader included), and PostgreSQL 15 in Debian's relative layout (usr/lib/postgresql/15/bin,
# .../lib, usr/share/postgresql/15), which PostgreSQL resolves relative to its own binaries.
# LLVM JIT is left out (scaling.sh sets jit = off): libLLVM alone would be ~100 MiB.
set -euo pipefail
cd "$(dirname "$0")/../../.."

PREFIX=${PGMUX_BUNDLE_PREFIX:-/opt/pgmux-bundle}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGLIB=$(dirname "$PGBIN")/lib
PGSHARE=${PGSHARE:-/usr/share/postgresql/15}
PGBOUNCER=${PGBOUNCER:-$(command -v pgbouncer || echo /usr/sbin/pgbouncer)}
OUTDIR=build/bundle
NAME=$(basename "$PREFIX")
B=$OUTDIR/$NAME
TARBALL=build/bundle.tar.gz

die() { echo "bench-bundle: $*" >&2; exit 1; }
command -v patchelf >/dev/null || die "patchelf is missing (tests/deps.sh bundle installs it)"
[ -x build/release/pgmux ] || die "build/release/pgmux is missing (run make first)"
for f in "$PGBIN/postgres" "$PGBIN/pg_ctl" "$PGBIN/initdb" "$PGBIN/pgbench" "$PGBOUNCER" \
         "$PGSHARE/postgres.bki"; do
    [ -e "$f" ] || die "$f is missing (tests/deps.sh installs postgresql-15 and pgbouncer)"
done

rm -rf "$OUTDIR" "$TARBALL"
mkdir -p "$B/bin" "$B/lib" "$B/usr/lib/postgresql/15/bin" "$B/usr/lib/postgresql/15/lib" \
         "$B/usr/share/postgresql"

cc=${CC:-cc}
flags="-O2 -g0 -Wall -Wextra -Werror"
$cc $flags -o "$B/bin/relay" tests/bench/relay.c
$cc -std=c11 -D_GNU_SOURCE $flags -o "$B/bin/pinrun" tests/bench/device/pinrun.c
$cc $flags -o "$B/bin/idle_clients" tests/bench/idle_clients.c -lcrypto
cp build/release/pgmux "$B/bin/pgmux"
cp "$PGBOUNCER" "$B/bin/pgbouncer"
for p in postgres pg_ctl initdb pgbench psql pg_isready; do
    cp "$PGBIN/$p" "$B/usr/lib/postgresql/15/bin/$p"
done
# Modules PostgreSQL dlopens: plpgsql (initdb creates it), dict_snowball (initdb's text search
# configurations), the encoding conversions, and the contrib modules, which cost little.
for so in "$PGLIB"/*.so; do
    case $(basename "$so") in llvmjit*) continue ;; esac
    cp "$so" "$B/usr/lib/postgresql/15/lib/"
done
cp -rL "$PGSHARE" "$B/usr/share/postgresql/15"
# Debian's build reads time zones from the system's /usr/share/zoneinfo (--with-system-tzdata);
# scaling.sh sets timezone = 'GMT', which PostgreSQL knows without any file, and a few zones
# come along for a run that wants another.
mkdir -p "$B/usr/share/zoneinfo"
for z in UTC GMT Etc/UTC; do
    [ -e "/usr/share/zoneinfo/$z" ] && install -D -m 644 "/usr/share/zoneinfo/$z" "$B/usr/share/zoneinfo/$z"
done

# Collect the shared libraries every ELF file loads, recursively (ldd already is recursive).
elf_files() {
    find "$B/bin" "$B/usr/lib/postgresql/15/bin" "$B/usr/lib/postgresql/15/lib" -type f
}
loader=""
while read -r f; do
    out=$(ldd "$f" 2>&1) || die "ldd $f failed: $out"
    if grep -q "not found" <<<"$out"; then
        case $f in
            */usr/lib/postgresql/15/lib/*)
                echo "bench-bundle: leaving out $(basename "$f"): $(grep 'not found' <<<"$out" | head -1 | xargs)" >&2
                rm -f "$f"; continue ;;
            *) die "$f: $(grep 'not found' <<<"$out" | head -1)" ;;
        esac
    fi
    while read -r soname _ path _; do
        [ -n "$path" ] && [ "${path:0:1}" = / ] || continue
        [ -e "$B/lib/$soname" ] || cp -L "$path" "$B/lib/$soname"
    done < <(grep '=>' <<<"$out")
    l=$(awk '$1 ~ /^\/.*ld-linux-x86-64\.so\.2$/ {print $1}' <<<"$out")
    [ -n "$l" ] && loader=$l
done < <(elf_files)
[ -n "$loader" ] || die "no dynamic loader (ld-linux-x86-64.so.2) seen in ldd's output"
cp -L "$loader" "$B/lib/ld-linux-x86-64.so.2"
chmod 755 "$B/lib/ld-linux-x86-64.so.2"

interp=$PREFIX/lib/ld-linux-x86-64.so.2
for f in "$B"/bin/* "$B"/usr/lib/postgresql/15/bin/*; do
    patchelf --set-interpreter "$interp" --force-rpath --set-rpath '$ORIGIN/../lib' "$f"
done
for f in "$B"/usr/lib/postgresql/15/bin/*; do
    patchelf --force-rpath --set-rpath '$ORIGIN/../../../../../lib' "$f"
done
for f in "$B"/usr/lib/postgresql/15/lib/*.so; do
    patchelf --force-rpath --set-rpath '$ORIGIN/../../../../../lib' "$f"
done
# glibc's own libraries need nothing but each other and the loader: left as Debian built them.
for f in "$B"/lib/*; do
    case $(basename "$f") in
        ld-linux-x86-64.so.2|libc.so.6|libm.so.6|libpthread.so.0|libdl.so.2|libresolv.so.2|librt.so.1) ;;
        *) patchelf --force-rpath --set-rpath '$ORIGIN' "$f" ;;
    esac
done
strip --strip-unneeded "$B"/bin/* "$B"/usr/lib/postgresql/15/bin/* 2>/dev/null || true

{
    echo "prefix $PREFIX"
    echo "built $(date -u +%Y-%m-%dT%H:%MZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "pgmux $(git describe --always --dirty 2>/dev/null || echo unknown) ($(build/release/pgmux --version))"
    dpkg-query -W -f='${Package} ${Version}\n' postgresql-15 pgbouncer libc6 2>/dev/null || true
} > "$B/MANIFEST"
echo "$PREFIX" > "$B/PREFIX"

# gzip -9 saves 0.5% for six times the time (libicudata dominates)
tar -C "$OUTDIR" -cf - "$NAME" | gzip -6 > "$TARBALL"
size=$(du -k "$TARBALL" | cut -f1)
echo "bench-bundle: $TARBALL: $((size / 1024)) MiB ($(du -sk "$B" | cut -f1) KiB unpacked, $(ls "$B/lib" | wc -l) libraries); unpacks to $PREFIX"
[ "$size" -lt $((48 * 1024)) ] || die "the bundle is over 48 MiB: the device takes at most 64 MiB in all"
