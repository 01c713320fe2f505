#!/usr/bin/env bash
# The whole test suite: installs QEMU and OVMF when missing, then formatting, lints, every test
# (unit, integration against the real vmrun binary, real-QEMU tests, property tests), the
# end-to-end tests again on the /dev/kvm variants users' hosts have and against QEMU 10.0, and
# the real-kernel VFIO test bed (tests/vfio-bed/run.sh: Debian's kernel under QEMU with an IOMMU).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --tests
./scripts/install-deps.sh --qemu10
qemu10=/opt/vmrun-tests/qemu-10.0/bin/qemu-system-x86_64
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# The output goes to a file that is followed, not through a pipe: a process a failing test
# leaves behind would hold a pipe open and hang the run.
cargo test --locked >"$log" 2>&1 &
tests=$!
tail -n +1 -f --pid="$tests" "$log"
wait "$tests" || status=$?
e2e=(run_e2e:: win11_e2e:: accel_probe:: least_privilege:: countdown::
    # Compares a lone vCPU's run delay with a shared one's: in these reruns the other guests'
    # real-time vCPUs on the same CPU make the lone one wait too (916 ms/s seen under KVM), so
    # it runs in the main run and under QEMU 10 only.
    --skip run_e2e::status_shows_a_vcpu_sharing_its_cpu_with_busy_threads_waiting_longer_than_one_alone)

# The tests that boot guests, again, each time in a mount namespace whose /dev/kvm is what
# another host has (this host's own /dev/kvm is the run above): none at all; a node every user
# may open (0666, as udev leaves it on most distributions); a node of a group QEMU's user is
# not in (0660 root:kvm, the group vmrun lends QEMU for the run). Whatever this host's KVM
# does with `-cpu host` (a nested host aborts; the wrapper test covers that on every variant),
# each variant prints what its tests chose and why.
variant() {
    local name=$1 setup=$2
    shift 2
    local out
    out=$(mktemp)
    echo "== variant $name: $setup" | tee -a "$log"
    local rc=0
    unshare --mount --propagation private bash -c "set -e; $setup; exec \"\$@\"" variant \
        "$@" >"$out" 2>&1 || rc=$?
    cat "$out" >>"$log"
    # What ran: the accelerator lines the tests print, once each, and the counts.
    grep -ho 'accelerator: [a-z]*, -cpu [a-z0-9]* ([^;]*; [^)]\{0,160\}' "$out" | sort | uniq -c | sed "s/^/variant $name: /" || true
    grep -h '^test result:\|^test .* FAILED$' "$out" | sed "s/^/variant $name: /"
    # Why a test failed, where the log of this run shows it.
    grep -h -A4 "^thread '.*' (.*) panicked at" "$out" | sed "s/^/variant $name: /" || true
    rm -f "$out"
    [ "$rc" -eq 0 ] || status=$rc
}
dev_without_kvm='old=$(mktemp -d); mount --rbind /dev "$old"; mount -t tmpfs -o mode=755 devtmp /dev;
    for entry in "$old"/*; do name=${entry##*/}; [ "$name" = kvm ] && continue;
        if [ -L "$entry" ]; then cp -P "$entry" /dev/;
        elif [ -d "$entry" ]; then mkdir "/dev/$name"; mount --rbind "$entry" "/dev/$name";
        else touch "/dev/$name"; mount --bind "$entry" "/dev/$name"; fi; done; umount -l "$old";
    # Terminals for the tests that drive vmrun through tmux and script: a pty instance of
    # this namespace, since the host'"'"'s /dev/ptmx does not follow into a rebuilt /dev.
    umount -l /dev/pts; mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts;
    umount -l /dev/ptmx 2>/dev/null || true; rm -f /dev/ptmx; ln -s pts/ptmx /dev/ptmx'
kvm_node() { # mode group: a real KVM node with that mode and group over /dev/kvm
    echo "node=\$(mktemp -d); mount -t tmpfs -o mode=755 kvmnode \$node; mknod -m $1 \$node/kvm c 10 232;
        chgrp $2 \$node/kvm; [ -e /dev/kvm ] || touch /dev/kvm; mount --bind \$node/kvm /dev/kvm"
}
# This host as it is, again with the tests' own output shown: what they chose here and why.
variant this-host ":" cargo test --locked --test cli -- "${e2e[@]}" --nocapture
if [ -e /dev/kvm ]; then
    variant kvm-missing "$dev_without_kvm" cargo test --locked --test cli -- "${e2e[@]}" --nocapture
    variant kvm-0666 "$(kvm_node 0666 0)" cargo test --locked --test cli -- "${e2e[@]}" --nocapture
    # gid 36 is `kvm` on Fedora; no user here is in it, so only vmrun's grant reaches it.
    variant kvm-0660-group "$(kvm_node 0660 36)" cargo test --locked --test cli -- "${e2e[@]}" --nocapture
else
    echo "== no /dev/kvm on this host: the main run was the kvm-missing variant" | tee -a "$log"
fi
# QEMU 10.0 (bookworm-backports, unpacked by install-deps --qemu10): every test of the cli
# binary, which holds the ones that run QEMU.
echo "== QEMU 10.0: $("$qemu10" --version | head -n 1)" | tee -a "$log"
qemu10_out=$(mktemp)
VMRUN_TEST_QEMU=$qemu10 cargo test --locked --test cli >"$qemu10_out" 2>&1 || status=$?
cat "$qemu10_out" >>"$log"
grep -h '^test result:\|FAILED' "$qemu10_out" | sed 's/^/QEMU 10.0: /'
grep -h -A4 "^thread '.*' (.*) panicked at" "$qemu10_out" | sed 's/^/QEMU 10.0: /' || true
rm -f "$qemu10_out"
bed_status=0
tests/vfio-bed/run.sh 2>&1 | tee -a "$log" || bed_status=$?
[ "$bed_status" -eq 0 ] || status=$bed_status
# One closing line for the whole run: every test binary's result plus the bed's scenarios.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^vfio-bed: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
