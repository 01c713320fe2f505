# The scenarios, run by /init inside the outer guest against the real kernel.
# Each prints CHECK lines and one "SCENARIO name: PASS|FAIL" line.
# They move real devices between drivers: never on a real machine, only in the bed's guest,
# whose initramfs alone carries the marker run.sh writes.
if [ ! -e /bed/outer-guest ]; then
    echo "scenarios.sh runs only inside the VFIO test bed's guest (tests/vfio-bed/run.sh): it rebinds real devices" >&2
    exit 1
fi
NIC=0000:00:02.0     # e1000e alone in its IOMMU group
# Two e1000e behind a PCIe-to-PCI bridge share one IOMMU group (with the bridge): found below.
VGA=0000:00:04.0     # std VGA on bochs-drm, fbcon on top
IGB=$(basename "$(ls -d /sys/bus/pci/drivers/igb/0000:* 2>/dev/null | head -1)")  # 82576, SR-IOV, own root port
V="vmrun -q --state-dir /var/lib/vmrun --runtime-dir /run/vmrun"

driver() { basename "$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null)" 2>/dev/null; }
netifs() { ls "/sys/bus/pci/devices/$1/net" 2>/dev/null | tr '\n' ' '; }
loaded() { grep -q "^$1 " /proc/modules; }
json_number() { grep "\"$1\"" "$2" | head -1 | sed 's/[^0-9]//g'; }
begin() { scenario=$1; failed=0; echo "CHECK $scenario: begins ($(cut -d" " -f1 /proc/uptime) s after boot)"; }
check() {
    description=$1; shift
    if "$@"; then echo "CHECK $scenario: ok: $description"; else echo "CHECK $scenario: FAILED: $description"; failed=1; fi
}
not() { ! "$@"; }
end() { if [ "$failed" = 0 ]; then echo "SCENARIO $scenario: PASS"; else echo "SCENARIO $scenario: FAIL"; fi; }
wait_gone() { n=0; while [ -e "/proc/$1" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; [ ! -e "/proc/$1" ]; }
# The power and reset attributes of a function, on one line: reset_method d3cold_allowed
# power/control power_state.
power() { for a in reset_method d3cold_allowed power/control power_state; do printf '%s ' "$(cat "/sys/bus/pci/devices/$1/$a" 2>/dev/null || echo -)"; done; }
wait_netif() { n=0; while [ -z "$(netifs "$1")" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done; }

profile() { # name address [extra toml]
    cat > "/bed/$1.toml" <<EOT
name = "$1"
[machine]
memory = "64M"
accel = "tcg"
[cpu]
cores = 1
[pinning]
vcpus = [1]
emulator = "0"
scheduler = "rr"
priority = 1
[firmware]
type = "seabios"
[network]
mode = "none"
[display]
vga = "none"
[shutdown]
timeout = 1
[[pci]]
address = "$2"
$3
EOT
}

profile nic "$NIC"
profile nicrescan "$NIC" 'rescan = true'
profile gpu "$VGA" '[single_gpu]
modules = ["bochs"]'
PAIR=""; OTHER=""
for device in /sys/bus/pci/drivers/e1000e/0000:*; do
    address=$(basename "$device")
    members=$(ls "/sys/bus/pci/devices/$address/iommu_group/devices" | wc -l)
    if [ "$members" -ge 3 ]; then
        if [ -z "$PAIR" ]; then PAIR=$address; else OTHER=$address; fi
    fi
done
profile pair "$PAIR"

# --- device: an e1000e goes to the inner guest and comes back ---
begin device
nic_ifaces=$(netifs $NIC)
check "$NIC starts on e1000e with interface(s) $nic_ifaces" [ "$(driver $NIC)" = e1000e -a -n "$nic_ifaces" ]
nic_power=$(power $NIC)
check "$NIC reset_method d3cold_allowed power/control power_state: $nic_power" [ -e /sys/bus/pci/devices/$NIC/reset_method ]
check "vfio-pci is not loaded yet" sh -c '! grep -q "^vfio_pci " /proc/modules'
$V run /bed/nic.toml --detach; rc=$?
check "vmrun run --detach exits 0 (got $rc)" [ "$rc" = 0 ]
check "$NIC is on vfio-pci while the guest runs (now: $(driver $NIC))" [ "$(driver $NIC)" = vfio-pci ]
check "while it runs: $(power $NIC)" [ -e /sys/bus/pci/devices/$NIC/reset_method ]
group=$(basename "$(readlink /sys/bus/pci/devices/$NIC/iommu_group)")
check "/dev/vfio/$group exists" [ -e "/dev/vfio/$group" ]
# Devices behind the root port show in query-pci once the inner firmware has numbered the buses.
n=0
while [ $n -lt 120 ]; do
    $V qmp nic query-pci > /tmp/pci.json 2>&1
    tr -d ' \n' < /tmp/pci.json | grep -q '"device":4307,[^}]*"vendor":32902' && break
    sleep 0.5; n=$((n+1))
done
seen() { tr -d ' \n' < /tmp/pci.json | grep -q '"device":4307,[^}]*"vendor":32902'; }
check "the inner QEMU shows the NIC as 8086:10d3 (query-pci, after $((n/2)) s)" seen
$V status nic --json > /tmp/status.json
check "vCPU 0 is pinned to CPU 1 with SCHED_RR 1 (status --json from /proc)" sh -c 'grep -q "\"affinity\": \"1\"" /tmp/status.json && grep -q "\"policy\": \"rr\"" /tmp/status.json'
$V stop nic; rc=$?
check "vmrun stop exits 5: SeaBIOS ignores ACPI, so quit forced it (got $rc)" [ "$rc" = 5 ]
wait_netif $NIC
check "$NIC is back on e1000e (now: $(driver $NIC))" [ "$(driver $NIC)" = e1000e ]
check "its interface is back ($(netifs $NIC))" [ "$(netifs $NIC)" = "$nic_ifaces" ]
check "vfio-pci, which vmrun loaded, is unloaded again" sh -c '! grep -q "^vfio_pci " /proc/modules'
end

# --- rescan: the NIC is removed and the bus rescanned before it goes to vfio-pci ---
begin rescan
# The kernel announces a device each time it enumerates it: once at boot, once per rescan.
announced() { dmesg | grep -c "pci $NIC: \[8086:10d3\]"; }
before=$(announced)
$V run /bed/nicrescan.toml --detach; rc=$?
check "vmrun run --detach exits 0 (got $rc)" [ "$rc" = 0 ]
after=$(announced)
check "the kernel enumerated $NIC again ($before → $after announcements)" [ "$after" -gt "$before" ]
check "vmrun logged the remove and rescan" grep -q "removing $NIC and rescanning the PCI bus" /var/lib/vmrun/nicrescan/vmrun.log
check "$NIC is on vfio-pci after the rescan (now: $(driver $NIC))" [ "$(driver $NIC)" = vfio-pci ]
$V stop nicrescan; rc=$?
check "vmrun stop exits 5 (got $rc)" [ "$rc" = 5 ]
wait_netif $NIC
check "$NIC is back on e1000e (now: $(driver $NIC))" [ "$(driver $NIC)" = e1000e ]
check "it has an interface again ($(netifs $NIC))" [ -n "$(netifs $NIC)" ]
end

# --- single GPU: the VGA leaves bochs and fbcon, and comes back ---
begin single-gpu
echo active > /run/services/display-manager.service
# fbcon's vtconsole, by name: consoles renumber when fbcon comes and goes.
fbcon_bound() {
    for console in /sys/class/vtconsole/vtcon*; do
        grep -q "frame buffer" "$console/name" 2>/dev/null && [ "$(cat "$console/bind")" = 1 ] && return 0
    done
    return 1
}
check "$VGA starts on bochs-drm" [ "$(driver $VGA)" = bochs-drm ]
check "fbcon is bound to a vtconsole" fbcon_bound
$V run /bed/gpu.toml --detach; rc=$?
check "vmrun run --detach exits 0 (got $rc)" [ "$rc" = 0 ]
check "the display manager was stopped" [ "$(cat /run/services/display-manager.service)" = inactive ]
check "no vtconsole is bound to fbcon" not fbcon_bound
check "bochs is unloaded" sh -c '! grep -q "^bochs " /proc/modules'
check "$VGA is on vfio-pci (now: $(driver $VGA))" [ "$(driver $VGA)" = vfio-pci ]
$V stop gpu; rc=$?
check "vmrun stop exits 5 (got $rc)" [ "$rc" = 5 ]
check "bochs is loaded again" loaded bochs
check "$VGA is back on bochs-drm (now: $(driver $VGA))" [ "$(driver $VGA)" = bochs-drm ]
check "fbcon is bound to a vtconsole again" fbcon_bound
check "the display manager runs again" [ "$(cat /run/services/display-manager.service)" = active ]
end

# --- crash: kill -9 of vmrun while the guest runs (started from a path), then vmrun recover by name ---
begin crash
$V run /bed/nic.toml --detach; rc=$?
check "vmrun run --detach exits 0 (got $rc)" [ "$rc" = 0 ]
$V status nic --json > /tmp/status.json
supervisor=$(json_number vmrun_pid /tmp/status.json)
qemu=$(json_number pid /tmp/status.json)
check "$NIC is on vfio-pci" [ "$(driver $NIC)" = vfio-pci ]
kill -9 "$supervisor"
check "QEMU ($qemu) dies with its supervisor ($supervisor)" wait_gone "$qemu"
check "the host is still changed: $NIC on $(driver $NIC)" [ "$(driver $NIC)" = vfio-pci ]
# By name: the journal holds everything, the profile is not needed (nor on the search path).
$V recover nic; rc=$?
check "vmrun recover nic (by name) exits 0 (got $rc)" [ "$rc" = 0 ]
wait_netif $NIC
check "$NIC is back on e1000e (now: $(driver $NIC))" [ "$(driver $NIC)" = e1000e ]
check "its interface is back ($(netifs $NIC))" [ "$(netifs $NIC)" = "$nic_ifaces" ]
check "the journal is gone" [ ! -e /var/lib/vmrun/nic/journal ]
end

# --- not viable: one function of a shared group is refused before anything changes ---
begin not-viable
pair_group=$(basename "$(readlink /sys/bus/pci/devices/$PAIR/iommu_group)")
check "$PAIR shares group $pair_group with $(ls /sys/kernel/iommu_groups/$pair_group/devices | tr '\n' ' ')" [ -n "$OTHER" ]
$V run /bed/pair.toml > /tmp/pair.out 2>&1; rc=$?
check "vmrun run exits 3 (got $rc)" [ "$rc" = 3 ]
check "the refusal names the other NIC $OTHER" grep -q "$OTHER" /tmp/pair.out
check "both NICs stay on e1000e" [ "$(driver "$PAIR")" = e1000e -a "$(driver "$OTHER")" = e1000e ]
check "no host change was journaled" [ ! -e /var/lib/vmrun/pair/journal ]
end

# --- isolation: the real kernel's IRQ affinities and workqueue cpumask go to CPU 0 while the
#     inner guest runs on CPU 1, and come back exactly: after stop, and after kill -9 + recover ---
begin isolation
# AllowedCPUs needs cgroup v2 with cpuset (the stub systemctl only records it here).
grep -q " /sys/fs/cgroup cgroup2 " /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup
cat > /bed/iso.toml <<EOT
name = "iso"
[machine]
memory = "64M"
accel = "tcg"
[cpu]
cores = 1
[pinning]
vcpus = [1]
emulator = "0"
scheduler = "other"
[firmware]
type = "seabios"
[network]
mode = "none"
[display]
vga = "none"
[shutdown]
timeout = 1
[isolation]
host_cpus = "0"
EOT
WQ=/sys/devices/virtual/workqueue/cpumask
irqs() { for f in /proc/irq/*/smp_affinity_list; do echo "$f $(cat "$f")"; done; }
host_state() { irqs; echo "default $(cat /proc/irq/default_smp_affinity)"; echo "workqueue $(cat $WQ)"; }
mask_value() { printf '%d' "0x$(tr -d ',' < "$1")"; }
host_state > /tmp/iso.before
check "the kernel has $(irqs | wc -l) IRQs with an affinity list and a workqueue cpumask" [ -e $WQ -a "$(irqs | wc -l)" -gt 0 ]
$V run /bed/iso.toml --detach; rc=$?
check "vmrun run --detach exits 0 (got $rc)" [ "$rc" = 0 ]
check "the workqueue cpumask is CPU 0 only (now: $(cat $WQ))" [ "$(mask_value $WQ)" = 1 ]
check "default_smp_affinity is CPU 0 only (now: $(cat /proc/irq/default_smp_affinity))" [ "$(mask_value /proc/irq/default_smp_affinity)" = 1 ]
on_cpu0=$(irqs | awk '$2 == "0"' | wc -l)
check "$on_cpu0 IRQs moved to CPU 0" [ "$on_cpu0" -gt 0 ]
check "system.slice was restricted to CPU 0" grep -q "set-property --runtime system.slice AllowedCPUs=0" /run/systemctl.log
$V stop iso; rc=$?
check "vmrun stop exits 5 (got $rc)" [ "$rc" = 5 ]
host_state > /tmp/iso.after
check "IRQ affinities, default_smp_affinity and the workqueue cpumask are as before" cmp -s /tmp/iso.before /tmp/iso.after
$V run /bed/iso.toml --detach; rc=$?
check "a second run starts (got $rc)" [ "$rc" = 0 ]
$V status iso --json > /tmp/status.json
supervisor=$(json_number vmrun_pid /tmp/status.json)
qemu=$(json_number pid /tmp/status.json)
check "the vCPU's run delay is reported" grep -q '"run_delay_ms_per_s"' /tmp/status.json
kill -9 "$supervisor"
check "QEMU ($qemu) dies with its supervisor ($supervisor)" wait_gone "$qemu"
check "the workqueue cpumask is still CPU 0 only after the crash" [ "$(mask_value $WQ)" = 1 ]
$V recover iso; rc=$?
check "vmrun recover iso exits 0 (got $rc)" [ "$rc" = 0 ]
host_state > /tmp/iso.after
check "after kill -9 and recover: everything as before" cmp -s /tmp/iso.before /tmp/iso.after
end

# --- unprivileged: QEMU runs as uid 1000 (numeric: the bed has no user database), and the
#     NIC's /dev/vfio/N is 1000's only while the VM runs: after stop, and after kill -9 +
#     recover, it is root's again with its mode. The NIC is put on vfio-pci first, as a host
#     that keeps a device there does, so that the node outlives the run and can be checked ---
begin unprivileged
profile unpriv "$NIC" '[qemu]
user = "1000"'
modprobe vfio-pci
echo vfio-pci > "/sys/bus/pci/devices/$NIC/driver_override"
[ -n "$(driver $NIC)" ] && echo "$NIC" > "/sys/bus/pci/drivers/$(driver $NIC)/unbind"
echo "$NIC" > /sys/bus/pci/drivers_probe
group=$(basename "$(readlink /sys/bus/pci/devices/$NIC/iommu_group)")
node=/dev/vfio/$group
owner() { stat -c %u "$node" 2>/dev/null; }
mode=$(stat -c %a "$node" 2>/dev/null)
check "$NIC is on vfio-pci before the run (now: $(driver $NIC))" [ "$(driver $NIC)" = vfio-pci ]
check "$node is root's (uid $(owner), mode $mode)" [ "$(owner)" = 0 ]
$V run /bed/unpriv.toml --detach; rc=$?
check "vmrun run --detach exits 0 (got $rc)" [ "$rc" = 0 ]
check "$node belongs to 1000 while the VM runs (uid $(owner))" [ "$(owner)" = 1000 ]
$V status unpriv --json > /tmp/status.json
qemu=$(json_number pid /tmp/status.json)
field() { awk -v key="$1:" '$1 == key {print $2}' "/proc/$qemu/status"; }
check "QEMU ($qemu) runs as uid 1000 (Uid: $(field Uid))" [ "$(field Uid)" = 1000 ]
check "QEMU has no capabilities (CapEff: $(field CapEff))" [ "$(field CapEff)" = 0000000000000000 ]
check "QEMU has no_new_privs (NoNewPrivs: $(field NoNewPrivs))" [ "$(field NoNewPrivs)" = 1 ]
$V stop unpriv; rc=$?
check "vmrun stop exits 5 (got $rc)" [ "$rc" = 5 ]
check "$node is root's again after stop (uid $(owner))" [ "$(owner)" = 0 ]
check "with its mode $mode (now $(stat -c %a "$node" 2>/dev/null))" [ "$(stat -c %a "$node" 2>/dev/null)" = "$mode" ]
$V run /bed/unpriv.toml --detach; rc=$?
check "a second run starts (got $rc)" [ "$rc" = 0 ]
$V status unpriv --json > /tmp/status.json
supervisor=$(json_number vmrun_pid /tmp/status.json)
qemu=$(json_number pid /tmp/status.json)
kill -9 "$supervisor"
check "QEMU ($qemu) dies with its supervisor ($supervisor)" wait_gone "$qemu"
check "$node is still 1000's after the crash (uid $(owner))" [ "$(owner)" = 1000 ]
$V recover unpriv; rc=$?
check "vmrun recover unpriv exits 0 (got $rc)" [ "$rc" = 0 ]
check "$node is root's again after recover (uid $(owner), mode $(stat -c %a "$node" 2>/dev/null))" [ "$(owner)" = 0 -a "$(stat -c %a "$node" 2>/dev/null)" = "$mode" ]
check "the journal is gone" [ ! -e /var/lib/vmrun/unpriv/journal ]
# The NIC back to e1000e, as the host had it before this scenario.
echo > "/sys/bus/pci/devices/$NIC/driver_override"
echo "$NIC" > /sys/bus/pci/drivers/vfio-pci/unbind
echo "$NIC" > /sys/bus/pci/drivers_probe
wait_netif $NIC
check "$NIC is back on e1000e (now: $(driver $NIC))" [ "$(driver $NIC)" = e1000e ]
end

# --- TEMPORARY (phase 1): a VF of the igb made by hand, bound to vfio-pci by hand, passed by address ---
begin vf-by-hand
pf=/sys/bus/pci/devices/$IGB
check "igb PF $IGB ($(cat $pf/vendor 2>/dev/null):$(cat $pf/device 2>/dev/null)) has interface $(netifs $IGB), totalvfs $(cat $pf/sriov_totalvfs 2>/dev/null), offset $(cat $pf/sriov_offset 2>/dev/null) stride $(cat $pf/sriov_stride 2>/dev/null)" [ -n "$IGB" -a -n "$(netifs $IGB)" ]
check "PF power: $(power $IGB); group $(basename "$(readlink $pf/iommu_group)") holds $(ls $pf/iommu_group/devices | tr '\n' ' ')" [ -e $pf/sriov_numvfs ]
echo 0 > $pf/sriov_drivers_autoprobe
echo 1 > $pf/sriov_numvfs; rc=$?
vf=$(basename "$(readlink $pf/virtfn0)")
check "echo 1 > sriov_numvfs (rc $rc) made VF $vf ($(cat /sys/bus/pci/devices/$vf/vendor):$(cat /sys/bus/pci/devices/$vf/device))" [ "$(cat /sys/bus/pci/devices/$vf/device 2>/dev/null)" = 0x10ca ]
vfgroup=$(basename "$(readlink /sys/bus/pci/devices/$vf/iommu_group)")
check "VF group $vfgroup holds $(ls /sys/bus/pci/devices/$vf/iommu_group/devices | tr '\n' ' ')" [ "$(ls /sys/bus/pci/devices/$vf/iommu_group/devices)" = "$vf" ]
check "VF driver with autoprobe 0: '$(driver $vf)'; power: $(power $vf)" [ -z "$(driver $vf)" ]
modprobe vfio-pci
echo vfio-pci > /sys/bus/pci/devices/$vf/driver_override
echo $vf > /sys/bus/pci/drivers_probe
check "VF on vfio-pci (now: $(driver $vf))" [ "$(driver $vf)" = vfio-pci ]
profile vfhand "$vf"
$V run /bed/vfhand.toml --detach; rc=$?
check "vmrun run --detach with the VF by address exits 0 (got $rc)" [ "$rc" = 0 ]
n=0
while [ $n -lt 120 ]; do
    $V qmp vfhand query-pci > /tmp/pci.json 2>&1
    tr -d ' \n' < /tmp/pci.json | grep -q '"device":4298,[^}]*"vendor":32902' && break
    sleep 0.5; n=$((n+1))
done
check "the inner QEMU shows the VF as 8086:10ca (query-pci, after $((n/2)) s)" sh -c "tr -d ' \n' < /tmp/pci.json | grep -q '\"device\":4298,[^}]*\"vendor\":32902'"
$V stop vfhand; rc=$?
check "vmrun stop exits 5 (got $rc); VF on $(driver $vf)" [ "$rc" = 5 ]
echo > /sys/bus/pci/devices/$vf/driver_override
echo 0 > $pf/sriov_numvfs
echo 1 > $pf/sriov_drivers_autoprobe
check "sriov_numvfs back to $(cat $pf/sriov_numvfs), PF on $(driver $IGB) with $(netifs $IGB)" [ "$(cat $pf/sriov_numvfs)" = 0 -a "$(driver $IGB)" = igb ]
end
