#!/bin/sh
# Start a VM from cron (or any script): returns once the VM runs with every vCPU pinned.
#   30 7 * * 1-5  /usr/local/share/vmrun/cron-start.sh win10 >>/var/log/vmrun-cron.log 2>&1
# Exit codes are vmrun's: 0 started, 3 host not ready (see the message), 4 already running,
# 6 QEMU refused to start. Being already running is fine for a schedule, so it counts as success.
set -u
vm=${1:?usage: cron-start.sh PROFILE}
vmrun run "$vm" --detach
code=$?
[ "$code" -eq 4 ] && exit 0
exit "$code"
