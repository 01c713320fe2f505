#!/bin/sh
# Stop a VM from cron: ACPI power-off, and after TIMEOUT seconds (default: the profile's
# shutdown.timeout) QMP quit, SIGTERM, SIGKILL. Waits until the host is restored.
#   0 23 * * *  /usr/local/share/vmrun/cron-stop.sh win10 300 >>/var/log/vmrun-cron.log 2>&1
# Exit codes: 0 the guest shut down (or was not running), 5 it had to be forced.
set -u
vm=${1:?usage: cron-stop.sh PROFILE [TIMEOUT]}
if [ $# -ge 2 ]; then
    exec vmrun stop "$vm" --timeout "$2"
fi
exec vmrun stop "$vm"
