#!/usr/bin/env bash
# The real-kernel VFIO test bed: boots Debian's own kernel under QEMU/TCG with an emulated Intel
# IOMMU and runs vmrun inside it against the real sysfs, real vfio-pci and real drivers (e1000e
# NICs, an igb NIC with SR-IOV, the std VGA on bochs-drm with fbcon). Everything comes from
# Debian packages. The outer QEMU is 10.0 (bookworm-backports, scripts/install-deps.sh --qemu10):
# 7.2 has no igb. The inner QEMU, the one vmrun starts, is the release's.
# Usage: tests/vfio-bed/run.sh  (as root; VFIO_BED_DIR caches the build, default target/vfio-bed)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${VFIO_BED_DIR:-$repo/target/vfio-bed}
timeout_s=${VFIO_BED_TIMEOUT:-540}
mkdir -p "$work/debs"
log() { echo "vfio-bed: $*" >&2; }

for tool in cpio depmod; do
    command -v "$tool" >/dev/null || { log "installing cpio kmod"; apt-get install -y -q cpio kmod >/dev/null; break; }
done
command -v ip >/dev/null || { log "installing iproute2"; apt-get install -y -q iproute2 >/dev/null; }
outer_qemu=/opt/vmrun-tests/qemu-10.0/bin/qemu-system-x86_64
[ -x "$outer_qemu" ] || "$repo/scripts/install-deps.sh" --qemu10 >&2

# Debian's kernel and busybox, downloaded once.
cd "$work/debs"
kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kernel_pkg" ] || { apt-get update -q >/dev/null; kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); }
if [ ! -d "$work/kernel/$kernel_pkg" ]; then
    log "downloading $kernel_pkg and busybox-static"
    rm -f ./*.deb
    apt-get download -q "$kernel_pkg" busybox-static 2>/dev/null
    rm -rf "$work/kernel" "$work/busybox"
    mkdir -p "$work/kernel/$kernel_pkg" "$work/busybox"
    dpkg-deb -x "$kernel_pkg"_*.deb "$work/kernel/$kernel_pkg"
    dpkg-deb -x busybox-static_*.deb "$work/busybox"
fi
kroot="$work/kernel/$kernel_pkg"
kver=$(ls "$kroot/lib/modules")
[ -e "$kroot/lib/modules/$kver/modules.dep" ] || depmod -b "$kroot" "$kver"

log "building vmrun (release)"
(cd "$repo" && cargo build --release --locked -q)

# A VFCT table as an AMD APU's firmware leaves it (issue 25's `rom --from-acpi`), built around
# the committed ATI VGA BIOS: the body after the 36-byte ACPI header, which QEMU's `-acpitable
# sig=VFCT,data=` completes with the length and checksum. The kernel then lists it in
# /sys/firmware/acpi/tables like a firmware's. Layout: src/rom/vfct.rs.
le() { # value bytes: the value little-endian
    local value=$1 i
    for ((i = 0; i < $2; i++)); do printf "\\$(printf %03o $(((value >> (8 * i)) & 255)))"; done
}
rom="$repo/tests/fixtures/roms/vgabios-ati.bin"
{
    head -c 16 /dev/zero              # table UUID
    le $((0x4c)) 4; le 0 4            # first image block at 0x4c, no GOP library
    head -c 16 /dev/zero              # reserved
    le $((0xc1)) 4; le 0 4; le 0 4    # bus c1, device 0, function 0: an APU's usual place
    le $((0x1002)) 2; le $((0x5159)) 2; le 0 2; le 0 2; le 0 4
    le "$(stat -c %s "$rom")" 4
    cat "$rom"
} > "$work/vfct-body.bin"

log "assembling the initramfs"
root="$work/root"
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,usr/share,proc,sys,dev,run,tmp,var/lib,etc,bed}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
copy() { # copy a file to the same path inside the root, following links
    mkdir -p "$root$(dirname "$1")"
    cp -L "$1" "$root$1"
}
# One module per call: further arguments would be taken as the first module's parameters.
modules=$(for m in e1000e igb igbvf vfio-pci vfio_iommu_type1 bochs; do
    modprobe -d "$kroot" -S "$kver" --show-depends "$m"
done | awk '/^insmod/ {print $2}' | sort -u)
for module in $modules; do
    relative=${module#"$kroot"}
    mkdir -p "$root$(dirname "$relative")"
    cp "$module" "$root$relative"
done
cp "$kroot/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/"
depmod -b "$root" "$kver"
qemu=$(command -v qemu-system-x86_64)
copy "$qemu"
copy /usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so
copy "$repo/target/release/vmrun"
mv "$root$repo/target/release/vmrun" "$root/usr/local/bin/vmrun"
# iproute2's ip, first on PATH: vmrun sets a VF's MAC and VLAN with `ip link set PFIF vf N
# ...`, which busybox's ip (/sbin/ip) does not know.
iproute=$(readlink -f "$(command -v ip)")
cp "$iproute" "$root/usr/local/bin/ip"
for binary in "$qemu" /usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so "$repo/target/release/vmrun" "$iproute"; do
    ldd "$binary" | awk '/=> \// {print $3} /^[ \t]*\// {print $1}' | while read -r lib; do copy "$lib"; done
done
cp -r /usr/share/qemu /usr/share/seabios "$root/usr/share/"
cp "$here/init" "$root/init"
cp "$here/scenarios.sh" "$root/bed/scenarios.sh"
cp "$rom" "$root/bed/vfct-image.rom"
: > "$root/bed/outer-guest"  # scenarios.sh refuses to run without it
cp "$here/systemctl" "$root/usr/local/bin/systemctl"
chmod +x "$root/init" "$root/usr/local/bin/systemctl"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$work/initrd.cpio"
log "initramfs: $(du -h "$work/initrd.cpio" | cut -f1)"

log "booting $kernel_pkg under TCG with an Intel IOMMU on $("$outer_qemu" --version | head -n 1) (timeout ${timeout_s}s)"
serial="$work/serial.log"
started=$(date +%s)
# The igb (82576, up to 7 VFs) sits on a pcie-root-port of its own: it is alone in its IOMMU
# group and each VF it makes gets a group of its own (the sriov scenario checks it).
set +e
timeout "$timeout_s" "$outer_qemu" \
    -machine q35,kernel-irqchip=split -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
    -device intel-iommu,intremap=on,caching-mode=on \
    -nodefaults -display none -no-reboot \
    -kernel "$kroot/boot/vmlinuz-$kver" -initrd "$work/initrd.cpio" \
    -append "console=ttyS0 intel_iommu=on panic=-1 loglevel=4" \
    -serial stdio \
    -netdev user,id=nic0 -device e1000e,netdev=nic0,addr=0x2.0 \
    -device pcie-pci-bridge,id=pcibridge,addr=0x3.0 \
    -netdev user,id=nic1 -device e1000e,netdev=nic1,bus=pcibridge,addr=0x1 \
    -netdev user,id=nic2 -device e1000e,netdev=nic2,bus=pcibridge,addr=0x2 \
    -device VGA,addr=0x4.0 \
    -device pcie-root-port,id=igbport,chassis=1,addr=0x5.0 \
    -netdev user,id=nic3 -device igb,netdev=nic3,bus=igbport,romfile= \
    -acpitable sig=VFCT,rev=1,oem_id=VMRUN,oem_table_id=VMRUNBED,data="$work/vfct-body.bin" \
    < /dev/null | tee "$serial" | grep --line-buffered -E "^(SCENARIO|CHECK|BED|LOG)" >&2
status=${PIPESTATUS[0]}
set -e
log "outer guest ended after $(( $(date +%s) - started ))s (qemu status $status)"
passed=$(grep -c '^SCENARIO .*: PASS' "$serial" || true)
failed=$(grep -c '^SCENARIO .*: FAIL' "$serial" || true)
if ! grep -q '^BED DONE' "$serial"; then
    log "the outer guest did not finish; last lines of $serial:"
    tail -30 "$serial" >&2
    failed=$((failed + 1))
fi
echo "vfio-bed: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -eq 11 ]
