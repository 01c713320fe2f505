//! A small synchronous QMP client over a Unix socket.
//!
//! QMP sends one JSON object per line: a greeting, then replies (`return` / `error`, carrying the
//! `id` we sent) and asynchronous events. An event can arrive before the reply of the command
//! that caused it, so events read while waiting for a reply are queued for the caller.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {}: {source}", .path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer on QMP within {0:?} while waiting for {1}")]
    Timeout(Duration, String),
    #[error("QEMU closed the QMP connection")]
    Closed,
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event: String,
    #[serde(default)]
    pub data: Value,
}

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    partial: Vec<u8>,
    next_id: u64,
    events: VecDeque<Event>,
    timeout: Duration,
}

/// One message from QEMU.
enum Message {
    Return {
        id: Option<Value>,
        value: Value,
    },
    Error {
        id: Option<Value>,
        class: String,
        desc: String,
    },
    Event(Event),
    Greeting,
}

fn classify(value: Value) -> Result<Message, QmpError> {
    let Value::Object(mut object) = value else {
        return Err(QmpError::Protocol(format!("not a JSON object: {value}")));
    };
    let id = object.remove("id");
    if let Some(value) = object.remove("return") {
        return Ok(Message::Return { id, value });
    }
    if let Some(error) = object.remove("error") {
        let field = |name: &str| {
            error
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        return Ok(Message::Error {
            id,
            class: field("class"),
            desc: field("desc"),
        });
    }
    if object.contains_key("event") {
        let event: Event = serde_json::from_value(Value::Object(object))
            .map_err(|e| QmpError::Protocol(format!("malformed event: {e}")))?;
        return Ok(Message::Event(event));
    }
    if object.contains_key("QMP") {
        return Ok(Message::Greeting);
    }
    Err(QmpError::Protocol(format!(
        "unexpected message: {}",
        Value::Object(object)
    )))
}

impl Qmp {
    /// Connects to a running VM's monitor (vmrun binds it before QEMU starts, so a refused
    /// connection means nothing listens), then reads the greeting and leaves capabilities
    /// negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path).map_err(|source| QmpError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        Self::handshake(stream, timeout)
    }

    /// Takes over a connected stream: greeting, then `qmp_capabilities`.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Self, QmpError> {
        let writer = stream.try_clone()?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            partial: Vec::new(),
            next_id: 1,
            events: VecDeque::new(),
            timeout,
        };
        match qmp.read_message(Instant::now() + timeout, "the QMP greeting")? {
            Message::Greeting => {}
            _ => {
                return Err(QmpError::Protocol(
                    "the first message was not a QMP greeting".into(),
                ))
            }
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Reads one message, waiting at most until `deadline`.
    fn read_message(&mut self, deadline: Instant, waiting_for: &str) -> Result<Message, QmpError> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(QmpError::Timeout(self.timeout, waiting_for.to_string()));
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(deadline - now))?;
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) => return Err(QmpError::Closed),
                Ok(_) if !self.partial.ends_with(b"\n") => return Err(QmpError::Closed),
                Ok(_) => {
                    let line = std::mem::take(&mut self.partial);
                    let text = String::from_utf8_lossy(&line);
                    if text.trim().is_empty() {
                        continue;
                    }
                    let value: Value = serde_json::from_str(text.trim()).map_err(|e| {
                        QmpError::Protocol(format!("invalid JSON ({e}): {}", text.trim()))
                    })?;
                    return classify(value);
                }
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Err(QmpError::Timeout(self.timeout, waiting_for.to_string()));
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == ErrorKind::ConnectionReset => {
                    return Err(QmpError::Closed)
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn send(&mut self, command: &str, arguments: Option<Value>) -> Result<u64, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let mut line = message.to_string();
        line.push('\n');
        match self.writer.write_all(line.as_bytes()) {
            Ok(()) => Ok(id),
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
                ) =>
            {
                Err(QmpError::Closed)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Runs one command and returns its `return` value. Events that arrive meanwhile are queued.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let id = self.send(command, arguments)?;
        let deadline = Instant::now() + self.timeout;
        let waiting_for = format!("the reply to `{command}`");
        loop {
            match self.read_message(deadline, &waiting_for)? {
                Message::Event(event) => self.events.push_back(event),
                Message::Return {
                    id: reply_id,
                    value,
                } if reply_id == Some(json!(id)) => return Ok(value),
                Message::Error {
                    id: reply_id,
                    class,
                    desc,
                } if reply_id == Some(json!(id)) => {
                    return Err(QmpError::Command {
                        command: command.to_string(),
                        class,
                        desc,
                    })
                }
                // A reply to a command we gave up on (timed out) earlier.
                Message::Return { .. } | Message::Error { .. } => continue,
                Message::Greeting => {
                    return Err(QmpError::Protocol("a second greeting mid-session".into()));
                }
            }
        }
    }

    /// `quit`: QEMU may close the socket before or after replying; both are success.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None) {
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The next event: a queued one, or one read before `deadline`. `Ok(None)` on timeout.
    pub fn next_event(&mut self, deadline: Instant) -> Result<Option<Event>, QmpError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(Some(event));
        }
        loop {
            match self.read_message(deadline, "an event") {
                Ok(Message::Event(event)) => return Ok(Some(event)),
                Ok(_) => continue,
                Err(QmpError::Timeout(..)) => return Ok(None),
                Err(error) => return Err(error),
            }
        }
    }

    /// Events already read, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Whether a message may be waiting without reading the socket (buffered or queued).
    pub fn has_pending(&self) -> bool {
        !self.events.is_empty() || !self.reader.buffer().is_empty() || !self.partial.is_empty()
    }

    pub fn socket(&self) -> &UnixStream {
        self.reader.get_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}"#;

    /// A scripted QMP peer: for each command it receives, writes the lines the script gives.
    fn peer(
        script: Vec<(&'static str, Vec<String>)>,
    ) -> (UnixStream, std::thread::JoinHandle<Vec<Value>>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let handle = std::thread::spawn(move || {
            let mut received = Vec::new();
            let mut writer = theirs.try_clone().unwrap();
            writeln!(writer, "{GREETING}").unwrap();
            let mut reader = BufReader::new(theirs);
            for (expected, lines) in script {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                let value: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(value["execute"], expected);
                let id = value["id"].clone();
                received.push(value);
                for reply in lines {
                    if reply == "CLOSE" {
                        return received;
                    }
                    writeln!(writer, "{}", reply.replace("$ID", &id.to_string())).unwrap();
                }
            }
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            received
        });
        (ours, handle)
    }

    fn ok() -> String {
        r#"{"return": {}, "id": $ID}"#.to_string()
    }

    #[test]
    fn negotiates_then_returns_values_and_queues_early_events() {
        let (stream, handle) = peer(vec![
            ("qmp_capabilities", vec![ok()]),
            (
                "system_powerdown",
                vec![
                    r#"{"event": "POWERDOWN", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}"#.into(),
                    ok(),
                ],
            ),
            ("query-status", vec![r#"{"return": {"status": "running", "running": true}, "id": $ID}"#.into()]),
        ]);
        let mut qmp = Qmp::handshake(stream, Duration::from_secs(5)).unwrap();
        qmp.execute("system_powerdown", None).unwrap();
        let status = qmp.execute("query-status", None).unwrap();
        assert_eq!(status["status"], "running");
        let events = qmp.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "POWERDOWN");
        drop(qmp);
        let sent = handle.join().unwrap();
        assert_eq!(sent[1]["id"], 2, "ids increase");
    }

    #[test]
    fn errors_are_typed_with_class_and_description() {
        let (stream, _handle) = peer(vec![
            ("qmp_capabilities", vec![ok()]),
            (
                "cont",
                vec![r#"{"error": {"class": "GenericError", "desc": "no way"}, "id": $ID}"#.into()],
            ),
        ]);
        let mut qmp = Qmp::handshake(stream, Duration::from_secs(5)).unwrap();
        match qmp.execute("cont", None).unwrap_err() {
            QmpError::Command {
                command,
                class,
                desc,
            } => {
                assert_eq!(
                    (command.as_str(), class.as_str(), desc.as_str()),
                    ("cont", "GenericError", "no way")
                );
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn eof_after_quit_is_success_and_eof_elsewhere_is_closed() {
        let (stream, _handle) = peer(vec![
            ("qmp_capabilities", vec![ok()]),
            ("quit", vec!["CLOSE".into()]),
        ]);
        let mut qmp = Qmp::handshake(stream, Duration::from_secs(5)).unwrap();
        qmp.quit().unwrap();

        let (stream, _handle) = peer(vec![
            ("qmp_capabilities", vec![ok()]),
            ("query-status", vec!["CLOSE".into()]),
        ]);
        let mut qmp = Qmp::handshake(stream, Duration::from_secs(5)).unwrap();
        assert!(matches!(
            qmp.execute("query-status", None),
            Err(QmpError::Closed)
        ));
    }

    #[test]
    fn a_silent_peer_times_out_and_events_wait_until_a_deadline() {
        let (stream, _handle) = peer(vec![
            ("qmp_capabilities", vec![ok()]),
            ("query-status", vec![]),
        ]);
        let mut qmp = Qmp::handshake(stream, Duration::from_millis(200)).unwrap();
        let started = Instant::now();
        assert!(matches!(
            qmp.execute("query-status", None),
            Err(QmpError::Timeout(..))
        ));
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(
            qmp.next_event(Instant::now() + Duration::from_millis(50))
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_peer_without_a_greeting_is_refused() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut writer = theirs.try_clone().unwrap();
        writeln!(writer, r#"{{"return": {{}}}}"#).unwrap();
        let error = Qmp::handshake(ours, Duration::from_secs(1)).err().unwrap();
        assert!(matches!(error, QmpError::Protocol(_)), "{error}");
    }

    #[test]
    fn connect_times_out_on_a_missing_socket() {
        let dir = tempfile::tempdir().unwrap();
        let error = Qmp::connect(&dir.path().join("none.sock"), Duration::from_millis(50))
            .err()
            .unwrap();
        assert!(error.to_string().contains("none.sock"), "{error}");
    }
}
