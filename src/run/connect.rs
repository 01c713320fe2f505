//! The supervisor's QMP handshake, made while watching QEMU: an early exit is reported with
//! QEMU's own message instead of a connection error. It is pipelined: `qmp_capabilities` and
//! the caller's first queries are written before QEMU has even accepted the connection, so
//! QEMU answers them all at once when its main loop starts.

use std::os::unix::net::UnixStream;
use std::process::Child;
use std::time::{Duration, Instant};

use super::spawn::{refused, setup_error};
use super::RunError;
use crate::plan::Plan;
use crate::qmp::{Qmp, QmpError};

pub(super) const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Completes the QMP handshake on the supervisor's connection, with `early` submitting the
/// first commands behind `qmp_capabilities`. QEMU accepts on its monitor before it creates
/// devices, so it can greet and then die on a bad `-device`: a failed handshake waits a moment
/// for that exit, to report QEMU's own message.
pub(super) fn handshake<T>(
    child: &mut Child,
    plan: &Plan,
    stream: UnixStream,
    early: impl FnOnce(&mut Qmp) -> Result<T, QmpError>,
) -> Result<(Qmp, T), RunError> {
    let qemu_log = &plan.paths.qemu_log;
    let attempt = Qmp::begin(stream, QMP_TIMEOUT).and_then(|(mut qmp, capabilities)| {
        let queued = early(&mut qmp)?;
        qmp.reply(capabilities)?;
        Ok((qmp, queued))
    });
    match attempt {
        Ok(connected) => Ok(connected),
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
