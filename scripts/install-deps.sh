#!/usr/bin/env bash
# Installs what vmrun needs to boot VMs on Debian/Ubuntu: QEMU and OVMF (what the quick start
# needs). With --tests also what the test suite runs against: swtpm + swtpm-tools for [tpm];
# QEMU's PulseAudio module (qemu-system-gui) for [audio]; PulseAudio with pactl, which the audio
# test starts for a throwaway user; tmux, the terminal `vmrun top` is tested in; and libvirt for
# the tests that check `vmrun export libvirt` with libvirt itself (a private session daemon; the
# system daemon is never used). Does nothing when all are present. Needs root (uses sudo when
# not root).
set -euo pipefail

tests=false
[ "${1:-}" = --tests ] && tests=true

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
# `vmrun top` is tested on a real terminal: tmux, read back with capture-pane.
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
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
