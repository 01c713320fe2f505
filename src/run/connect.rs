//! The supervisor's QMP connection, made while watching QEMU: an early exit is reported with
//! QEMU's own message instead of a connection error.

use std::process::Child;
use std::time::{Duration, Instant};

use super::spawn::{refused, setup_error};
use super::RunError;
use crate::plan::Plan;
use crate::qmp::{self, Qmp};

pub(super) const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// QEMU opens its QMP socket before it creates devices, so it can accept the connection and
/// then die on a bad `-device`: a failed handshake waits a moment for that exit.
pub(super) fn connect_qmp(child: &mut Child, plan: &Plan) -> Result<Qmp, RunError> {
    let qemu_log = &plan.paths.qemu_log;
    let mut exited = None;
    let stream = qmp::connect_retrying(&plan.paths.qmp_socket, QMP_TIMEOUT, || {
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                exited = Some(status);
                false
            }
            Err(_) => false,
        }
    });
    if let Some(status) = exited {
        return Err(refused(qemu_log, status));
    }
    match Qmp::handshake(stream?, QMP_TIMEOUT) {
        Ok(qmp) => Ok(qmp),
        Err(error) => {
            let patience = Instant::now() + Duration::from_secs(3);
            while Instant::now() < patience {
                if let Some(status) = child.try_wait().map_err(setup_error(qemu_log))? {
                    return Err(refused(qemu_log, status));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error.into())
        }
    }
}
