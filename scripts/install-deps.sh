#!/usr/bin/env bash
# Installs what vmrun needs to boot VMs on Debian/Ubuntu: QEMU and OVMF (what the quick start
# needs). With --tests also what the test suite runs against: swtpm + swtpm-tools for [tpm];
# QEMU's PulseAudio module (qemu-system-gui) for [audio]; PulseAudio with pactl, which the audio
# test starts for a throwaway user; PipeWire (the daemon, pw-dump, its library for QEMU's
# pipewire module) for the PipeWire audio test; libvirt for the tests that check `vmrun export
# libvirt` with libvirt itself (a private session daemon; the system daemon is never used) and
# xmllint, which its virt-xml-validate runs (libxml2-utils, only a Recommends); man-db, whose
# `man -l` renders the manual pages in their tests; tmux, the terminal the `vmrun console`,
# `stop` countdown and `vmrun top` tests type into; util-linux's unshare for the /dev/kvm
# variants. Does nothing when all are present. Needs root (uses sudo when not root).
#
# --qemu10 [PREFIX]: QEMU 10.0 from Debian's bookworm-backports, unpacked into PREFIX (default
# /opt/vmrun-tests/qemu-10.0) next to the release's QEMU, never installed over it: the
# packages are fetched with `apt-get download` through a private apt state in PREFIX (a deb822
# source for bookworm-backports; /etc/apt is not changed) and unpacked with `dpkg-deb -x`.
# PREFIX/bin/qemu-system-x86_64 runs it with its own modules (QEMU_MODULE_DIR) and data
# (-L PREFIX/usr/share/qemu); point the tests at it with VMRUN_TEST_QEMU=that path, or a
# profile with [qemu] binary.
set -euo pipefail

tests=false
[ "${1:-}" = --tests ] && tests=true

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

if [ "${1:-}" = --qemu10 ]; then
    prefix=${2:-/opt/vmrun-tests/qemu-10.0}
    wrapper=$prefix/bin/qemu-system-x86_64
    if [ -x "$wrapper" ] && "$wrapper" --version | grep -q 'version 10\.0'; then
        exit 0
    fi
    apt_dir=$prefix/apt
    "${sudo[@]}" mkdir -p "$apt_dir/sources" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" \
        "$apt_dir/debs" "$prefix/bin"
    "${sudo[@]}" tee "$apt_dir/sources/backports.sources" >/dev/null <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    apt_options=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources"
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
        -o "APT::Sandbox::User=root")
    echo "vmrun: fetching QEMU 10.0 from bookworm-backports into $prefix" >&2
    "${sudo[@]}" apt-get -q "${apt_options[@]}" update
    # The system emulator, its modules (audio, SPICE, USB) and data; libraries come from the
    # release (install-deps --tests installs what the modules link against).
    (cd "$apt_dir/debs" && "${sudo[@]}" apt-get -q "${apt_options[@]}" download \
        qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
        qemu-system-data/bookworm-backports qemu-system-gui/bookworm-backports \
        qemu-system-modules-spice/bookworm-backports qemu-system-modules-opengl/bookworm-backports)
    for deb in "$apt_dir"/debs/*.deb; do
        "${sudo[@]}" dpkg-deb -x "$deb" "$prefix"
    done
    "${sudo[@]}" tee "$wrapper" >/dev/null <<WRAPPER
#!/bin/sh
# QEMU 10.0 from bookworm-backports, unpacked by scripts/install-deps.sh --qemu10: its own
# modules and data, the release's firmware (SeaBIOS, iPXE, OVMF).
QEMU_MODULE_DIR=$prefix/usr/lib/x86_64-linux-gnu/qemu exec $prefix/usr/bin/qemu-system-x86_64 -L $prefix/usr/share/qemu "\$@"
WRAPPER
    "${sudo[@]}" chmod 0755 "$wrapper"
    "${sudo[@]}" chmod -R a+rX "$prefix"
    "$wrapper" --version | head -n 1
    exit 0
fi

missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -e /usr/share/OVMF/OVMF_CODE.fd ] || missing+=(ovmf)
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
[ -e /usr/lib/ipxe/qemu/efi-e1000e.rom ] || missing+=(ipxe-qemu)
[ -e /usr/share/seabios/vgabios-stdvga.bin ] || missing+=(seabios)
if $tests; then
command -v libvirtd >/dev/null 2>&1 || [ -x /usr/sbin/libvirtd ] || missing+=(libvirt-daemon)
[ -e /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so ] \
    || missing+=(libvirt-daemon-driver-qemu)
command -v virsh >/dev/null 2>&1 && command -v virt-xml-validate >/dev/null 2>&1 \
    || missing+=(libvirt-clients)
command -v swtpm >/dev/null 2>&1 || missing+=(swtpm)
command -v swtpm_setup >/dev/null 2>&1 || missing+=(swtpm-tools)
# QEMU's `pa` audio backend is a module Debian ships in qemu-system-gui.
compgen -G '/usr/lib/*/qemu/audio-pa.so' >/dev/null || missing+=(qemu-system-gui)
command -v pulseaudio >/dev/null 2>&1 || missing+=(pulseaudio)
command -v pactl >/dev/null 2>&1 || missing+=(pulseaudio-utils)
# `man -l` renders vmrun(1) and vmrun.toml(5) in the manual page tests.
command -v man >/dev/null 2>&1 || missing+=(man-db)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v xmllint >/dev/null 2>&1 || missing+=(libxml2-utils)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v pipewire >/dev/null 2>&1 && command -v pw-dump >/dev/null 2>&1 || missing+=(pipewire-bin)
compgen -G '/usr/lib/*/libpipewire-0.3.so.0' >/dev/null || missing+=(libpipewire-0.3-0)
compgen -G '/usr/lib/*/spa-0.2/support/libspa-support.so' >/dev/null || missing+=(libspa-0.2-modules)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
echo "vmrun: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -q
if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    # A qemu-utils from backports (newer than the release's QEMU) blocks the release's
    # qemu-system-x86; take qemu-utils from the release so that both match.
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    echo "vmrun: retrying with qemu-utils from ${codename}" >&2
    others=()
    for package in "${missing[@]}"; do
        case "$package" in qemu-system-x86 | ovmf | qemu-utils) ;; *) others+=("$package") ;; esac
    done
    "${sudo[@]}" apt-get install -y -q --no-install-recommends --allow-downgrades \
        qemu-system-x86 ovmf "qemu-utils/${codename}" "${others[@]}"
fi
