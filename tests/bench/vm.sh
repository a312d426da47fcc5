#!/usr/bin/env bash
# Runs a command as root in a qemu virtual machine that boots Debian's kernel on this machine's
# own root filesystem (shared read-only over 9p; /tmp, /run and /var/tmp are the guest's
# tmpfs), with every capability, an open-file limit of VM_NOFILE, loopback and no network
# card. It is for what a container's limits forbid: 100,000 idle clients need 100,000
# descriptors in one process, and without CAP_SYS_RESOURCE the hard limit (ulimit -Hn) cannot
# be raised (README.md, "Memory per idle client"; `make bench-idle-vm`).
#
#   tests/bench/vm.sh OUTDIR COMMAND...
#
# COMMAND runs from the repository's root (read-only in the guest) with $VM_OUT naming OUTDIR,
# shared read-write; its output goes to OUTDIR/console.log, the guest's console to
# OUTDIR/serial.log, and this script exits with its status. Installs qemu-system-x86,
# linux-image-amd64 and busybox-static when missing. Settings: VM_MEM (MiB, default 8192),
# VM_CPUS (default: nproc), VM_NOFILE (default 300000), VM_TIMEOUT (seconds, default 3600),
# VM_ACCEL: tcg (default) or kvm. The default is qemu's emulator, 10-30 times slower than the
# machine, because on our test machines (KVM guests themselves) /dev/kvm opens but a nested
# guest faults before its kernel prints a line. Memory figures do not depend on the speed.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
[ $# -ge 2 ] || { echo "usage: $0 OUTDIR COMMAND..." >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)
shift
case "${VM_ACCEL:-tcg}" in
kvm) accel=(-accel kvm -cpu host) ;;
tcg) accel=(-accel "tcg,thread=multi,tb-size=512" -cpu max) ;;
*) echo "vm.sh: VM_ACCEL is kvm or tcg" >&2; exit 2 ;;
esac

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
compgen -G '/boot/vmlinuz-*' >/dev/null || need+=(linux-image-amd64)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    echo "vm.sh: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${need[@]}" >&2; }
fi
kernel=$(printf '%s\n' /boot/vmlinuz-* | sort -V | tail -1)
kver=${kernel#/boot/vmlinuz-}

# The initramfs: busybox and the modules for a 9p root over virtio, nothing else.
work=$(mktemp -d /tmp/pgmux-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/initrd/bin" "$work/initrd/mods" "$work/initrd/proc" "$work/initrd/sys" \
    "$work/initrd/dev" "$work/initrd/newroot"
cp /bin/busybox "$work/initrd/bin/busybox"
mods="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci netfs fscache"
mods="$mods 9pnet 9pnet_virtio 9p"
for m in $mods; do
    f=$(modinfo -k "$kver" -n "$m")
    case "$f" in
    *.ko) cp "$f" "$work/initrd/mods/$m.ko" ;;
    *.ko.xz) xz -dc "$f" >"$work/initrd/mods/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$work/initrd/mods/$m.ko" ;;
    *) echo "vm.sh: module $m: $f" >&2; exit 1 ;;
    esac
done
o9p=trans=virtio,version=9p2000.L,msize=512000
cat >"$work/initrd/init" <<EOF
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in $mods; do /bin/busybox insmod /mods/\$m.ko || echo "insmod \$m failed"; done
/bin/busybox mount -t 9p -o ro,cache=loose,$o9p host /newroot || exec /bin/busybox sh
/bin/busybox umount /proc /sys /dev
exec /bin/busybox switch_root /newroot /bin/sh -c '
    mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
    mount -t tmpfs tmp /tmp; chmod 1777 /tmp; mount -t tmpfs run /run; mkdir -p /run/lock
    mount -t tmpfs vartmp /var/tmp; chmod 1777 /var/tmp
    mkdir -p /dev/pts /dev/shm; mount -t devpts pts /dev/pts; mount -t tmpfs shm /dev/shm
    mkdir -p /run/vm-out; mount -t 9p -o $o9p,cache=none out /run/vm-out
    ip link set lo up
    ulimit -Hn $((${VM_NOFILE:-300000})); ulimit -n $((${VM_NOFILE:-300000}))
    cd "$root"
    export VM_OUT=/run/vm-out HOME=/root PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    rc=0; bash /run/vm-out/.vm-cmd >/run/vm-out/console.log 2>&1 || rc=\$?
    echo \$rc >/run/vm-out/.vm-rc; sync
    /bin/busybox poweroff -f'
EOF
chmod +x "$work/initrd/init"
(cd "$work/initrd" && find . | cpio -o -H newc --quiet | gzip -1 >"$work/initrd.gz")

# The guest starts with a bare environment: BENCH_* settings are carried into it.
{
    for v in $(compgen -e | grep '^BENCH_' || true); do printf 'export %s=%q\n' "$v" "${!v}"; done
    printf '%q ' "$@"
} >"$out/.vm-cmd"
rm -f "$out/.vm-rc" "$out/console.log"
timeout "${VM_TIMEOUT:-3600}" qemu-system-x86_64 "${accel[@]}" -machine q35 \
    -smp "${VM_CPUS:-$(nproc)}" -m "${VM_MEM:-8192}" -nographic -no-reboot -nic none \
    -kernel "$kernel" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 rw" \
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
    -virtfs local,path="$out",mount_tag=out,security_model=none \
    -serial file:"$out/serial.log" -monitor none </dev/null >/dev/null || true
if [ ! -f "$out/.vm-rc" ]; then
    echo "vm.sh: the guest ended without the command's status; its console:" >&2
    tail -40 "$out/serial.log" >&2
    exit 1
fi
rc=$(cat "$out/.vm-rc")
rm -f "$out/.vm-rc" "$out/.vm-cmd"
exit "$rc"
