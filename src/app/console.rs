//! `vmrun console`: the guest's first serial port, interactive, as `virsh console` offers it.
//! QEMU listens on the console's socket (`qemu/console.sock` in the VM's runtime directory)
//! and keeps logging to `console.log` whether a client is connected or not; this module
//! connects, puts the terminal in raw mode (restored however it ends) and copies both ways
//! until Ctrl-] (detach), the end of input, or the VM's end.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, SetArg, Termios};

use super::{App, AppError};
use crate::run::{control, state};

/// The byte Ctrl-] sends: what `virsh console` and telnet detach on.
pub const DETACH: u8 = 0x1d;

/// After the input ends, the session lasts until the guest has written nothing for this
/// long (so that `echo cmd | vmrun console vm` prints the answer), and at most `DRAIN_LIMIT`.
const DRAIN_QUIET_MS: u16 = 1000;
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How a console session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Ctrl-] was typed.
    Detached,
    /// The input ended (a pipe, or the terminal went away) and the guest then went quiet.
    InputClosed,
    /// QEMU closed the connection: the VM stopped.
    VmStopped,
}

impl App {
    /// The console socket of a running VM, or why there is none.
    pub fn console_socket(&self, name_or_profile: &str) -> Result<PathBuf, AppError> {
        let target = self.target(name_or_profile)?;
        if state::running(&target.paths).is_none() {
            return Err(AppError::Control(control::ControlError::NotRunning(
                target.name,
            )));
        }
        let socket = target.paths.console_socket.clone();
        if !socket.exists() {
            return Err(AppError::Host(format!(
                "{} has no serial console socket ({}): the VM was started without `[console] serial = \"log\"`, \
                 or by a vmrun before `vmrun console` existed; add it and start the VM again",
                target.name,
                socket.display()
            )));
        }
        Ok(socket)
    }
}

/// Raw mode on a terminal for as long as this lives: every key reaches the guest as typed
/// (Ctrl-C included), nothing is echoed twice.
pub struct RawTerminal<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawTerminal<'a> {
    /// None when `fd` is not a terminal (a pipe, a file): then nothing changes.
    pub fn enter(fd: BorrowedFd<'a>) -> Option<Self> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { fd, saved })
    }
}

impl Drop for RawTerminal<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// Copies `input` to the socket and the socket to `output` until Ctrl-] in the input, the end
/// of the input or the end of the connection.
pub fn attach(
    socket: &mut UnixStream,
    input: &mut (impl Read + AsFd),
    output: &mut impl Write,
) -> std::io::Result<Ended> {
    let mut buffer = [0u8; 4096];
    // After the input ended: when it did.
    let mut draining: Option<std::time::Instant> = None;
    loop {
        let (input_ready, socket_ready) = {
            let ready = |fd: &PollFd| {
                fd.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                })
            };
            if let Some(since) = draining {
                let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
                let quiet = poll(&mut fds, PollTimeout::from(DRAIN_QUIET_MS))
                    .map_err(std::io::Error::from)?
                    == 0;
                if quiet || since.elapsed() > DRAIN_LIMIT {
                    return Ok(Ended::InputClosed);
                }
                (false, ready(&fds[0]))
            } else {
                let mut fds = [
                    PollFd::new(input.as_fd(), PollFlags::POLLIN),
                    PollFd::new(socket.as_fd(), PollFlags::POLLIN),
                ];
                poll(&mut fds, PollTimeout::NONE).map_err(std::io::Error::from)?;
                (ready(&fds[0]), ready(&fds[1]))
            }
        };
        if socket_ready {
            let count = match socket.read(&mut buffer) {
                Ok(count) => count,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(error) => return Err(error),
            };
            if count == 0 {
                return Ok(Ended::VmStopped);
            }
            output.write_all(&buffer[..count])?;
            output.flush()?;
        }
        if input_ready {
            let count = match input.read(&mut buffer) {
                Ok(count) => count,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if count == 0 {
                // Input from a pipe ends before the guest has read it all (a serial port
                // takes a few bytes at a time, and QEMU drops the rest when the client
                // leaves): stay until the guest has been quiet for a moment.
                draining = Some(std::time::Instant::now());
                continue;
            }
            let typed = &buffer[..count];
            match typed.iter().position(|byte| *byte == DETACH) {
                Some(at) => {
                    socket.write_all(&typed[..at])?;
                    return Ok(Ended::Detached);
                }
                None => socket.write_all(typed)?,
            }
        }
    }
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: &impl AsRawFd) -> bool {
    nix::unistd::isatty(fd.as_raw_fd()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_goes_to_the_guest_until_ctrl_bracket_and_output_comes_back() {
        let (mut ours, mut guest) = UnixStream::pair().unwrap();
        let (mut input_writer, mut input) = UnixStream::pair().unwrap();
        guest.write_all(b"Shell> ").unwrap();
        input_writer.write_all(b"ver\r").unwrap();
        let reader = std::thread::spawn(move || {
            let mut typed = [0u8; 4];
            guest.read_exact(&mut typed).unwrap();
            // Only after the guest saw the command does the user detach.
            input_writer.write_all(b"x\x1dnot sent").unwrap();
            let mut rest = Vec::new();
            guest
                .set_read_timeout(Some(std::time::Duration::from_millis(200)))
                .unwrap();
            let _ = guest.read_to_end(&mut rest);
            (typed, rest)
        });
        let mut output = Vec::new();
        let ended = attach(&mut ours, &mut input, &mut output).unwrap();
        drop(ours);
        let (typed, rest) = reader.join().unwrap();
        assert_eq!(ended, Ended::Detached);
        assert_eq!(&typed, b"ver\r");
        assert_eq!(
            rest, b"x",
            "the bytes before Ctrl-] are sent, the rest are not"
        );
        assert_eq!(output, b"Shell> ");
    }

    #[test]
    fn the_end_of_the_connection_ends_the_session() {
        let (mut ours, guest) = UnixStream::pair().unwrap();
        let (_input_writer, mut input) = UnixStream::pair().unwrap();
        drop(guest);
        let mut output = Vec::new();
        assert_eq!(
            attach(&mut ours, &mut input, &mut output).unwrap(),
            Ended::VmStopped
        );
    }
}
