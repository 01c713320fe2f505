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
# end [VM...]: on a failure, the end of each named VM's vmrun.log goes to the serial log.
end() {
    if [ "$failed" = 0 ]; then echo "SCENARIO $scenario: PASS"; return; fi
    for vm; do tail -n 40 "/var/lib/vmrun/$vm/vmrun.log" 2>/dev/null | sed "s|^|LOG $scenario $vm: |"; done
    echo "SCENARIO $scenario: FAIL"
}
wait_gone() { n=0; while [ -e "/proc/$1" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; [ ! -e "/proc/$1" ]; }
# The power and reset attributes of a function, on one line: reset_method d3cold_allowed
# power/control power_state.
power() { for a in reset_method d3cold_allowed power/control power_state; do printf '%s ' "$(cat "/sys/bus/pci/devices/$1/$a" 2>/dev/null || echo -)"; done; }
# reset_method d3cold_allowed power/control: what the power-reset scenario changes and restores.
pm_settings() { for a in reset_method d3cold_allowed power/control; do printf '%s|' "$(cat "/sys/bus/pci/devices/$1/$a" 2>/dev/null)"; done; }
# Polls the inner QEMU's query-pci (a minute at most) for an Intel (32902) function with the
# device id given in decimal.
inner_sees() {
    n=0
    while [ $n -lt 120 ]; do
        $V qmp "$1" query-pci > /tmp/pci.json 2>&1
        tr -d ' \n' < /tmp/pci.json | grep -q "\"device\":$2,[^}]*\"vendor\":32902" && return 0
        sleep 0.5; n=$((n+1))
    done
    return 1
}
# crash VM: kill -9 of the VM's vmrun (its supervisor) while the guest runs, and QEMU must die
# with it; /tmp/status.json keeps what `status --json` said just before.
crash() {
    $V status "$1" --json > /tmp/status.json
    supervisor=$(json_number vmrun_pid /tmp/status.json)
    qemu=$(json_number pid /tmp/status.json)
    kill -9 "$supervisor"
    check "QEMU ($qemu) dies with its supervisor ($supervisor)" wait_gone "$qemu"
}
journal_gone() { [ ! -e "/var/lib/vmrun/$1/journal" ]; }
wait_netif() { n=0; while [ -z "$(netifs "$1")" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done; }

profile() { # name address-or-pci-keys [extra toml]
    case "$2" in *=*) pci=$2 ;; *) pci="address = \"$2\"" ;; esac
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
$pci
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
end nic

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
end nicrescan

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
end gpu

# --- crash: kill -9 of vmrun while the guest runs (started from a path), then vmrun recover by name ---
begin crash
$V run /bed/nic.toml --detach; rc=$?
check "vmrun run --detach exits 0 (got $rc)" [ "$rc" = 0 ]
check "$NIC is on vfio-pci" [ "$(driver $NIC)" = vfio-pci ]
crash nic
check "the host is still changed: $NIC on $(driver $NIC)" [ "$(driver $NIC)" = vfio-pci ]
# By name: the journal holds everything, the profile is not needed (nor on the search path).
$V recover nic; rc=$?
check "vmrun recover nic (by name) exits 0 (got $rc)" [ "$rc" = 0 ]
wait_netif $NIC
check "$NIC is back on e1000e (now: $(driver $NIC))" [ "$(driver $NIC)" = e1000e ]
check "its interface is back ($(netifs $NIC))" [ "$(netifs $NIC)" = "$nic_ifaces" ]
check "the journal is gone" journal_gone nic
end nic

# --- not viable: one function of a shared group is refused before anything changes ---
begin not-viable
pair_group=$(basename "$(readlink /sys/bus/pci/devices/$PAIR/iommu_group)")
check "$PAIR shares group $pair_group with $(ls /sys/kernel/iommu_groups/$pair_group/devices | tr '\n' ' ')" [ -n "$OTHER" ]
$V run /bed/pair.toml > /tmp/pair.out 2>&1; rc=$?
check "vmrun run exits 3 (got $rc)" [ "$rc" = 3 ]
check "the refusal names the other NIC $OTHER" grep -q "$OTHER" /tmp/pair.out
check "both NICs stay on e1000e" [ "$(driver "$PAIR")" = e1000e -a "$(driver "$OTHER")" = e1000e ]
check "no host change was journaled" journal_gone pair
end pair

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
crash iso
check "the vCPU's run delay is reported" grep -q '"run_delay_ms_per_s"' /tmp/status.json
check "the workqueue cpumask is still CPU 0 only after the crash" [ "$(mask_value $WQ)" = 1 ]
$V recover iso; rc=$?
check "vmrun recover iso exits 0 (got $rc)" [ "$rc" = 0 ]
host_state > /tmp/iso.after
check "after kill -9 and recover: everything as before" cmp -s /tmp/iso.before /tmp/iso.after
end iso

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
crash unpriv
check "$node is still 1000's after the crash (uid $(owner))" [ "$(owner)" = 1000 ]
$V recover unpriv; rc=$?
check "vmrun recover unpriv exits 0 (got $rc)" [ "$rc" = 0 ]
check "$node is root's again after recover (uid $(owner), mode $(stat -c %a "$node" 2>/dev/null))" [ "$(owner)" = 0 -a "$(stat -c %a "$node" 2>/dev/null)" = "$mode" ]
check "the journal is gone" journal_gone unpriv
# The NIC back to e1000e, as the host had it before this scenario.
echo > "/sys/bus/pci/devices/$NIC/driver_override"
echo "$NIC" > /sys/bus/pci/drivers/vfio-pci/unbind
echo "$NIC" > /sys/bus/pci/drivers_probe
wait_netif $NIC
check "$NIC is back on e1000e (now: $(driver $NIC))" [ "$(driver $NIC)" = e1000e ]
end unpriv


# --- power-reset: the igb PF (behind its root port it has flr, pm and bus) with the profile's
#     reset_method, D3cold forbidden and runtime PM off while the VM runs; all three as before
#     after stop, and after kill -9 + recover. Runtime PM starts on `auto` (as powertop or TLP
#     leave a NIC), so that there is something to turn off and back ---
begin power-reset
pfdir=/sys/bus/pci/devices/$IGB
methods=$(cat $pfdir/reset_method)
wanted=${methods##* }  # the last the kernel offers, not the one it tries first
echo auto > $pfdir/power/control
igb_ifaces=$(netifs $IGB)
before=$(pm_settings $IGB)
check "$IGB on igb ($igb_ifaces) offers reset methods '$methods'; the profile asks for '$wanted'" [ "$wanted" != "${methods%% *}" -a "$(driver $IGB)" = igb ]
check "before: $(power $IGB)" [ "$(cat $pfdir/d3cold_allowed)" = 1 -a "$(cat $pfdir/power/control)" = auto ]
profile pwr "$IGB" "reset_method = \"$wanted\""
$V check /bed/pwr.toml > /tmp/pwr-check.out 2>&1
check "vmrun check: $(grep -o "reset_method \"$wanted\" is written[^)]*)" /tmp/pwr-check.out)" grep -q "reset_method \"$wanted\" is written for the run (now $methods)" /tmp/pwr-check.out
# A method the function does not offer: the e1000e on the root bus has only pm.
profile badreset "$NIC" 'reset_method = "flr"'
$V run /bed/badreset.toml > /tmp/badreset.out 2>&1; rc=$?
check "reset_method = \"flr\" on $NIC ($(cat /sys/bus/pci/devices/$NIC/reset_method)) is refused with exit 3 (got $rc), $NIC still on $(driver $NIC)" [ "$rc" = 3 -a "$(driver $NIC)" = e1000e ]
check "the refusal says what it offers: $(grep -o "does not offer[^.]*" /tmp/badreset.out | head -1)" grep -q "does not offer the reset method flr" /tmp/badreset.out
$V run /bed/pwr.toml --detach; rc=$?
check "vmrun run --detach exits 0 (got $rc)" [ "$rc" = 0 ]
check "while it runs: $(power $IGB)on $(driver $IGB)" [ "$(pm_settings $IGB)" = "$wanted|0|on|" -a "$(driver $IGB)" = vfio-pci ]
check "the inner QEMU shows the PF as 8086:10c9 (query-pci)" inner_sees pwr 4297
$V stop pwr; rc=$?
check "vmrun stop exits 5 (got $rc)" [ "$rc" = 5 ]
wait_netif $IGB
check "after stop: $(power $IGB)on $(driver $IGB) with $(netifs $IGB)" [ "$(pm_settings $IGB)" = "$before" -a "$(driver $IGB)" = igb -a "$(netifs $IGB)" = "$igb_ifaces" ]
check "the health check read it before igb got it back: $(grep -o "$IGB answers ([^)]*)" /var/lib/vmrun/pwr/vmrun.log | tail -1)" grep -q "$IGB answers (vendor 8086 device 10c9" /var/lib/vmrun/pwr/vmrun.log
$V run /bed/pwr.toml --detach; rc=$?
check "a second run starts (got $rc)" [ "$rc" = 0 ]
crash pwr
check "status --json shows its power_state: $(tr -d ' \n' < /tmp/status.json | grep -o '"power_state":"[^"]*"' | head -1)" grep -q '"power_state"' /tmp/status.json
check "still changed after the crash: $(power $IGB)" [ "$(pm_settings $IGB)" = "$wanted|0|on|" ]
$V recover pwr; rc=$?
check "vmrun recover pwr exits 0 (got $rc)" [ "$rc" = 0 ]
wait_netif $IGB
check "after recover: $(power $IGB)on $(driver $IGB) with $(netifs $IGB)" [ "$(pm_settings $IGB)" = "$before" -a "$(driver $IGB)" = igb -a "$(netifs $IGB)" = "$igb_ifaces" ]
check "the journal is gone" journal_gone pwr
echo on > $pfdir/power/control
end pwr

# --- holders: a service holding the bochs GPU's /dev/dri/card0 is named and the single-GPU run
#     refused with nothing changed; with [holders] stop naming it, it is stopped for the run and
#     started again after. The stub systemctl runs it in its own cgroup, as systemd would ---
begin holders
grep -q " /sys/fs/cgroup cgroup2 " /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup
unit=gpu-holder.service
cgroup=/sys/fs/cgroup/system.slice/$unit
mkdir -p /run/units
echo 'exec sleep 100000 < /dev/dri/card0' > /run/units/$unit
holder_pid() { head -1 "$cgroup/cgroup.procs" 2>/dev/null; }
holds_card() { [ "$(readlink "/proc/$1/fd/0" 2>/dev/null)" = /dev/dri/card0 ]; }
wait_holder() { n=0; while ! holds_card "$(holder_pid)" && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done; }
systemctl start $unit
wait_holder
holder=$(holder_pid)
echo active > /run/services/display-manager.service
check "$unit runs $(cat /proc/$holder/comm 2>/dev/null) ($holder) with fd 0 on $(readlink /proc/$holder/fd/0 2>/dev/null), cgroup $(cat /proc/$holder/cgroup 2>/dev/null)" holds_card "$holder"
$V run /bed/gpu.toml > /tmp/holders.out 2>&1; rc=$?
check "vmrun run refuses with exit 3 (got $rc): $(grep -o "sleep (pid [^)]*)[^;]*" /tmp/holders.out | head -1)" [ "$rc" = 3 ]
check "the refusal names the holder: sleep, pid $holder, its unit" grep -q "sleep (pid $holder, user [^,]*, unit $unit) holds /dev/dri/card0 of $VGA" /tmp/holders.out
check "nothing changed: $VGA on $(driver $VGA), display manager $(cat /run/services/display-manager.service), holder alive" [ "$(driver $VGA)" = bochs-drm -a "$(cat /run/services/display-manager.service)" = active -a -e /proc/$holder ]
check "no host change was journaled" journal_gone gpu
$V check /bed/gpu.toml > /tmp/holders-check.out 2>&1
check "vmrun check lists it too: $(grep -o "holders.*sleep (pid [^)]*)" /tmp/holders-check.out | head -1)" grep -q "sleep (pid $holder" /tmp/holders-check.out
profile gpuheld "$VGA" "[single_gpu]
modules = [\"bochs\"]
[holders]
stop = [\"$unit\"]"
$V run /bed/gpuheld.toml --detach; rc=$?
check "with [holders] stop = [\"$unit\"] the run starts (got $rc)" [ "$rc" = 0 ]
check "the holder ($holder) is gone while the VM runs ($unit $(cat /run/services/$unit), cgroup procs: $(cat $cgroup/cgroup.procs | tr '\n' ' '))" [ ! -e /proc/$holder -a ! -s $cgroup/cgroup.procs ]
check "$VGA is on vfio-pci (now: $(driver $VGA))" [ "$(driver $VGA)" = vfio-pci ]
$V stop gpuheld; rc=$?
check "vmrun stop exits 5 (got $rc)" [ "$rc" = 5 ]
check "$VGA is back on bochs-drm (now: $(driver $VGA)), display manager $(cat /run/services/display-manager.service)" [ "$(driver $VGA)" = bochs-drm -a "$(cat /run/services/display-manager.service)" = active ]
wait_holder
check "$unit runs again: $(holder_pid) holds $(readlink /proc/$(holder_pid)/fd/0 2>/dev/null)" holds_card "$(holder_pid)"
check "the health check read the GPU before bochs got it back: $(grep -o "$VGA answers ([^)]*)" /var/lib/vmrun/gpuheld/vmrun.log | tail -1)" grep -q "$VGA answers (vendor 1234 device 1111" /var/lib/vmrun/gpuheld/vmrun.log
systemctl stop $unit
rm /run/units/$unit
end gpu gpuheld

# --- sriov: [[pci]] pf + vf: vmrun makes the igb's first VF (8086:10ca) with host drivers not
#     probing it, gives it the profile's MAC and VLAN through the PF (iproute2's ip), binds it
#     to vfio-pci and passes it; after stop, and after kill -9 + recover,
#     sriov_numvfs is 0 again and the PF still on igb with its interface ---
begin sriov
pfdir=/sys/bus/pci/devices/$IGB
igb_ifaces=$(netifs $IGB)
igbvf_probes() { dmesg | grep -c "igbvf 0000:"; }
probes=$(igbvf_probes)
check "$IGB on igb ($igb_ifaces): sriov_numvfs $(cat $pfdir/sriov_numvfs) of $(cat $pfdir/sriov_totalvfs), autoprobe $(cat $pfdir/sriov_drivers_autoprobe), igbvf loaded" [ "$(cat $pfdir/sriov_numvfs)" = 0 -a -n "$(grep "^igbvf " /proc/modules)" ]
profile sriov "pf = \"$IGB\"
vf = 0
mac = \"52:54:00:12:34:56\"
vlan = 100"
$V run /bed/sriov.toml --detach; rc=$?
check "vmrun run --detach exits 0 (got $rc)" [ "$rc" = 0 ]
# By path: busybox sh runs its own ip applet for a bare `ip`.
/usr/local/bin/ip link show dev "${igb_ifaces% }" > /tmp/pf-link.txt 2>&1
check "the PF's interface shows VF 0 with the profile's MAC and VLAN: $(grep "vf 0" /tmp/pf-link.txt | tr -s ' ')" grep -q "vf 0 .*52:54:00:12:34:56.*vlan 100" /tmp/pf-link.txt
vf=$(basename "$(readlink $pfdir/virtfn0)")
check "sriov_numvfs is $(cat $pfdir/sriov_numvfs): VF $vf is $(cat /sys/bus/pci/devices/$vf/vendor 2>/dev/null):$(cat /sys/bus/pci/devices/$vf/device 2>/dev/null)" [ "$(cat $pfdir/sriov_numvfs)" = 1 -a "$(cat /sys/bus/pci/devices/$vf/device 2>/dev/null)" = 0x10ca ]
check "$vf is on vfio-pci (now: $(driver $vf)), in group $(basename "$(readlink /sys/bus/pci/devices/$vf/iommu_group)") alone" [ "$(driver $vf)" = vfio-pci -a "$(ls /sys/bus/pci/devices/$vf/iommu_group/devices)" = "$vf" ]
# Autoprobe stays 0 while the VM runs: a VF driver loaded now must not take the VFs.
check "igbvf never probed it ($probes → $(igbvf_probes) igbvf lines in dmesg); autoprobe $(cat $pfdir/sriov_drivers_autoprobe) while the VM runs" [ "$(igbvf_probes)" = "$probes" -a "$(cat $pfdir/sriov_drivers_autoprobe)" = 0 ]
check "the inner QEMU shows the VF as 8086:10ca (query-pci)" inner_sees sriov 4298
$V stop sriov; rc=$?
check "vmrun stop exits 5 (got $rc)" [ "$rc" = 5 ]
check "after stop: sriov_numvfs $(cat $pfdir/sriov_numvfs), $IGB on $(driver $IGB) with $(netifs $IGB)" [ "$(cat $pfdir/sriov_numvfs)" = 0 -a "$(driver $IGB)" = igb -a "$(netifs $IGB)" = "$igb_ifaces" ]
check "after stop: autoprobe back to $(cat $pfdir/sriov_drivers_autoprobe)" [ "$(cat $pfdir/sriov_drivers_autoprobe)" = 1 ]
$V run /bed/sriov.toml --detach; rc=$?
check "a second run starts (got $rc)" [ "$rc" = 0 ]
crash sriov
check "after the crash the VF is still there: sriov_numvfs $(cat $pfdir/sriov_numvfs), $vf on $(driver $vf)" [ "$(cat $pfdir/sriov_numvfs)" = 1 ]
$V recover sriov; rc=$?
check "vmrun recover sriov exits 0 (got $rc)" [ "$rc" = 0 ]
check "after recover: sriov_numvfs $(cat $pfdir/sriov_numvfs), $IGB on $(driver $IGB) with $(netifs $IGB)" [ "$(cat $pfdir/sriov_numvfs)" = 0 -a "$(driver $IGB)" = igb -a "$(netifs $IGB)" = "$igb_ifaces" ]
check "after recover: autoprobe back to $(cat $pfdir/sriov_drivers_autoprobe)" [ "$(cat $pfdir/sriov_drivers_autoprobe)" = 1 ]
check "the journal is gone" journal_gone sriov
# The control: what vmrun avoided. With autoprobe on, igbvf takes a new VF at once.
echo 1 > $pfdir/sriov_numvfs
n=0; while [ -z "$(driver $vf)" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
check "control: a VF made with autoprobe on goes to $(driver $vf) ($(igbvf_probes) igbvf lines in dmesg)" [ "$(driver $vf)" = igbvf -a "$(igbvf_probes)" -gt "$probes" ]
echo 0 > $pfdir/sriov_numvfs
[ "$failed" = 0 ] || sed 's/^/LOG sriov ip: /' /tmp/pf-link.txt
end sriov

# --- acpi-rom: the outer QEMU gave this machine a VFCT table (-acpitable, run.sh) holding the
#     committed ATI VGA BIOS at GPU c1:00.0, as an AMD APU's firmware does; the kernel lists it in
#     /sys/firmware/acpi/tables. `vmrun rom --from-acpi` reads it there (no fake root), walks the
#     image and writes it for romfile: the same bytes, mode 0644, never over an existing file ---
begin acpi-rom
table=/sys/firmware/acpi/tables/VFCT
check "the kernel lists the firmware's VFCT ($(stat -c %s $table 2>/dev/null) bytes)" [ -s $table ]
vmrun rom --from-acpi --output /tmp/apu.rom --json > /tmp/acpi.json 2>/tmp/acpi.err; rc=$?
check "vmrun rom --from-acpi --output exits 0 (got $rc: $(head -c 300 /tmp/acpi.err))" [ "$rc" = 0 ]
check "the table's checksum, as QEMU completed it, is reported ok" grep -q '"checksum_ok": true' /tmp/acpi.json
one_image() { [ "$(grep -c '"address"' /tmp/acpi.json)" = 1 ] && grep -q '"address": "c1:00.0"' /tmp/acpi.json && grep -q '"ids_match": true' /tmp/acpi.json; }
check "one image, for c1:00.0, whose PCI header carries the table's 1002:5159" one_image
check "the written ROM is the committed one byte for byte ($(stat -c %s /tmp/apu.rom 2>/dev/null) bytes)" cmp -s /tmp/apu.rom /bed/vfct-image.rom
check "it is written with mode $(stat -c %a /tmp/apu.rom 2>/dev/null) (0644 asked)" [ "$(stat -c %a /tmp/apu.rom 2>/dev/null)" = 644 ]
vmrun rom /tmp/apu.rom > /tmp/acpi-check.txt 2>&1; rc=$?
check "vmrun rom accepts the written file as a romfile (exit $rc)" [ "$rc" = 0 ]
echo keep > /tmp/apu.rom
vmrun rom --from-acpi --output /tmp/apu.rom > /dev/null 2>&1; rc=$?
check "without --force an existing file is refused (exit $rc, 2 expected) and left as it was" [ "$rc" = 2 -a "$(cat /tmp/apu.rom)" = keep ]
[ "$failed" = 0 ] || sed 's/^/LOG acpi-rom: /' /tmp/acpi.json /tmp/acpi.err /tmp/acpi-check.txt
end acpi-rom
