//! The exit codes every command documents (README, `vmrun --help`): one enum, so that a code
//! cannot mean two things in two places.

/// What a command's exit status means to scripts and cron.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "i32", from = "i32")]
pub enum ExitCode {
    /// Success; for `run`/`stop`: the guest powered off (by itself or on ACPI request).
    Ok,
    /// A runtime failure: the host, QEMU or the firmware did not do what was needed.
    Failure,
    /// Usage error or invalid profile: fix the command line or the profile.
    Usage,
    /// `check` (or the preflight before `run`) found a failure, or `rom` found a problem.
    CheckFailed,
    /// `run`: the VM is already running.
    AlreadyRunning,
    /// `run`/`stop`: the guest did not power off within the timeout and was stopped by force.
    Forced,
    /// `run`/`stop`: QEMU refused to start, crashed, or the guest panicked.
    QemuFailed,
    /// `status`/`qmp`: the VM is not running.
    NotRunning,
    /// `run`/`stop`/`recover`: a passed device did not answer after the guest; it stays off
    /// its host driver and its journal entry is kept.
    DeviceStuck,
}

impl ExitCode {
    pub const ALL: [ExitCode; 9] = [
        ExitCode::Ok,
        ExitCode::Failure,
        ExitCode::Usage,
        ExitCode::CheckFailed,
        ExitCode::AlreadyRunning,
        ExitCode::Forced,
        ExitCode::QemuFailed,
        ExitCode::NotRunning,
        ExitCode::DeviceStuck,
    ];

    pub fn code(self) -> i32 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Failure => 1,
            ExitCode::Usage => 2,
            ExitCode::CheckFailed => 3,
            ExitCode::AlreadyRunning => 4,
            ExitCode::Forced => 5,
            ExitCode::QemuFailed => 6,
            ExitCode::NotRunning => 7,
            ExitCode::DeviceStuck => 8,
        }
    }

    /// What the code tells a script, for the manual page's EXIT STATUS.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Ok => "success; for run and stop: the guest powered off (by itself or on ACPI request)",
            ExitCode::Failure => "runtime failure (QMP, pinning, host preparation, recover could not restore everything)",
            ExitCode::Usage => "usage error or invalid profile (also a VM name that is not known, and \"auto\" pinning this host cannot give)",
            ExitCode::CheckFailed => "check found a failure, run refused to start because the host is not ready, or rom found a problem",
            ExitCode::AlreadyRunning => "run: the VM is already running",
            ExitCode::Forced => "run, stop: the guest did not power off in time and was stopped by force",
            ExitCode::QemuFailed => "run: QEMU refused to start, crashed, or the guest panicked",
            ExitCode::NotRunning => "status, qmp, usb: the VM is not running (stop of a stopped VM is 0)",
            ExitCode::DeviceStuck => "run, stop, recover: the guest ended but a passed device did not answer; it stays on vfio-pci and its journal entry is kept: suspend and resume or reboot, then vmrun recover NAME",
        }
    }

    /// A code read back from `last-run.json` or from the detached supervisor; unknown codes
    /// are runtime failures.
    pub fn from_code(code: i32) -> ExitCode {
        Self::ALL
            .into_iter()
            .find(|known| known.code() == code)
            .unwrap_or(ExitCode::Failure)
    }
}

impl From<ExitCode> for i32 {
    fn from(code: ExitCode) -> i32 {
        code.code()
    }
}

impl From<i32> for ExitCode {
    fn from(code: i32) -> Self {
        ExitCode::from_code(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_unknown_codes_are_failures() {
        for code in ExitCode::ALL {
            assert_eq!(ExitCode::from_code(code.code()), code);
        }
        assert_eq!(ExitCode::from_code(42), ExitCode::Failure);
        let codes: std::collections::BTreeSet<i32> =
            ExitCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            codes.len(),
            ExitCode::ALL.len(),
            "two variants share a code"
        );
    }
}
