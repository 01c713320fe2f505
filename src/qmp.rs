//! A small synchronous QMP client over a Unix socket.
//!
//! QMP sends one JSON object per line: a greeting, then replies (`return` / `error`, carrying the
//! `id` we sent) and asynchronous events. An event can arrive before the reply of the command
//! that caused it, so events read while waiting for a reply are queued for the caller.
//!
//! Commands can be pipelined: `submit` writes one and `reply` claims its answer later, so
//! several round trips to QEMU's main loop become one. QEMU reads its input only after it sent
//! the greeting and runs commands one at a time, in order, so even `qmp_capabilities` and the
//! commands after it may be written before the greeting arrives (`Qmp::begin`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
    /// The greeting was read: every later message is a reply or an event.
    greeted: bool,
    /// Commands written whose replies nobody has claimed yet.
    awaited: BTreeSet<u64>,
    /// Replies read while an earlier command's reply was being waited for.
    stashed: BTreeMap<u64, Reply>,
}

/// A command written to QEMU whose reply is still to be claimed with `Qmp::reply`.
#[must_use = "claim the reply with Qmp::reply"]
pub struct Pending {
    id: u64,
    command: String,
}

type Reply = Result<Value, (String, String)>;

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

fn answer(command: &str, reply: Reply) -> Result<Value, QmpError> {
    reply.map_err(|(class, desc)| QmpError::Command {
        command: command.to_string(),
        class,
        desc,
    })
}

impl Qmp {
    /// Connects to a running VM's monitor (vmrun binds it before QEMU starts, so a refused
    /// connection means nothing listens), then leaves capabilities negotiation mode, asked for
    /// before the greeting is read (one round trip instead of two).
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path).map_err(|source| QmpError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let (mut qmp, capabilities) = Self::begin(stream, timeout)?;
        qmp.reply(capabilities)?;
        Ok(qmp)
    }

    /// Takes over a connected stream: greeting, then `qmp_capabilities`, one after the other
    /// (as a minimal client does; vmrun itself pipelines with `begin`).
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Self, QmpError> {
        let mut qmp = Self::new(stream, timeout)?;
        qmp.read_greeting(Instant::now() + timeout)?;
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Takes over a connected stream and writes `qmp_capabilities` at once, without waiting
    /// for the greeting: commands `submit`ted next wait in the socket too, and QEMU answers
    /// them all as soon as it accepts. Claiming the returned reply reads the greeting first.
    pub fn begin(stream: UnixStream, timeout: Duration) -> Result<(Self, Pending), QmpError> {
        let mut qmp = Self::new(stream, timeout)?;
        let capabilities = qmp.submit("qmp_capabilities", None)?;
        Ok((qmp, capabilities))
    }

    fn new(stream: UnixStream, timeout: Duration) -> Result<Self, QmpError> {
        let writer = stream.try_clone()?;
        Ok(Qmp {
            reader: BufReader::new(stream),
            writer,
            partial: Vec::new(),
            next_id: 1,
            events: VecDeque::new(),
            timeout,
            greeted: false,
            awaited: BTreeSet::new(),
            stashed: BTreeMap::new(),
        })
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

    fn read_greeting(&mut self, deadline: Instant) -> Result<(), QmpError> {
        match self.read_message(deadline, "the QMP greeting")? {
            Message::Greeting => {
                self.greeted = true;
                Ok(())
            }
            _ => Err(QmpError::Protocol(
                "the first message was not a QMP greeting".into(),
            )),
        }
    }

    /// The next reply or event, the greeting read first while it is still to come; what
    /// follows the greeting gets the whole timeout again, as when it was read on its own.
    fn next_message(
        &mut self,
        deadline: &mut Instant,
        waiting_for: &str,
    ) -> Result<Message, QmpError> {
        if !self.greeted {
            self.read_greeting(*deadline)?;
            *deadline = Instant::now() + self.timeout;
        }
        match self.read_message(*deadline, waiting_for)? {
            Message::Greeting => Err(QmpError::Protocol("a second greeting mid-session".into())),
            other => Ok(other),
        }
    }

    /// Writes one command without waiting for its reply; claim that with `reply`.
    pub fn submit(&mut self, command: &str, arguments: Option<Value>) -> Result<Pending, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let mut line = message.to_string();
        line.push('\n');
        match self.writer.write_all(line.as_bytes()) {
            Ok(()) => {
                self.awaited.insert(id);
                Ok(Pending {
                    id,
                    command: command.to_string(),
                })
            }
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

    /// The `return` value of a submitted command. Events that arrive meanwhile are queued, and
    /// replies to other submitted commands are kept until they are claimed.
    pub fn reply(&mut self, pending: Pending) -> Result<Value, QmpError> {
        let Pending { id, command } = pending;
        if let Some(reply) = self.stashed.remove(&id) {
            return answer(&command, reply);
        }
        let mut deadline = Instant::now() + self.timeout;
        let waiting_for = format!("the reply to `{command}`");
        loop {
            let (reply_id, reply) = match self.next_message(&mut deadline, &waiting_for) {
                Ok(Message::Event(event)) => {
                    self.events.push_back(event);
                    continue;
                }
                Ok(Message::Return { id, value }) => (id, Ok(value)),
                Ok(Message::Error { id, class, desc }) => (id, Err((class, desc))),
                Ok(Message::Greeting) => {
                    return Err(QmpError::Protocol("a second greeting mid-session".into()))
                }
                Err(error) => {
                    // A reply that comes after all belongs to nobody.
                    self.awaited.remove(&id);
                    return Err(error);
                }
            };
            if reply_id.as_ref().and_then(Value::as_u64) == Some(id) {
                self.awaited.remove(&id);
                return answer(&command, reply);
            }
            self.keep(reply_id, reply);
        }
    }

    /// Keeps the reply to a submitted command until it is claimed; drops one to a command
    /// given up on (timed out) earlier.
    fn keep(&mut self, id: Option<Value>, reply: Reply) {
        if let Some(id) = id.as_ref().and_then(Value::as_u64) {
            if self.awaited.remove(&id) {
                self.stashed.insert(id, reply);
            }
        }
    }

    /// Runs one command and returns its `return` value. Events that arrive meanwhile are queued.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let pending = self.submit(command, arguments)?;
        self.reply(pending)
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
                Ok(Message::Return { id, value }) => self.keep(id, Ok(value)),
                Ok(Message::Error { id, class, desc }) => self.keep(id, Err((class, desc))),
                Ok(Message::Greeting) => continue,
                Err(QmpError::Timeout(..)) => return Ok(None),
                Err(error) => return Err(error),
            }
        }
    }

    /// Events already read, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
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
    fn pipelined_replies_may_be_claimed_in_any_order() {
        let (stream, handle) = peer(vec![
            ("qmp_capabilities", vec![ok()]),
            (
                "query-status",
                vec![
                    r#"{"event": "RESUME", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}"#.into(),
                    r#"{"return": {"status": "running"}, "id": $ID}"#.into(),
                ],
            ),
            ("query-cpus-fast", vec![r#"{"return": [], "id": $ID}"#.into()]),
            ("cont", vec![r#"{"error": {"class": "GenericError", "desc": "no"}, "id": $ID}"#.into()]),
        ]);
        let (mut qmp, capabilities) = Qmp::begin(stream, Duration::from_secs(5)).unwrap();
        let status = qmp.submit("query-status", None).unwrap();
        let cpus = qmp.submit("query-cpus-fast", None).unwrap();
        let cont = qmp.submit("cont", None).unwrap();
        assert_eq!(qmp.reply(cpus).unwrap(), json!([]));
        qmp.reply(capabilities).unwrap();
        assert!(matches!(qmp.reply(cont), Err(QmpError::Command { .. })));
        assert_eq!(qmp.reply(status).unwrap()["status"], "running");
        assert_eq!(qmp.take_events().len(), 1);
        drop(qmp);
        assert_eq!(handle.join().unwrap().len(), 4);
    }

    #[test]
    fn commands_may_be_written_before_the_greeting_arrives() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut reader = BufReader::new(theirs.try_clone().unwrap());
            let mut writer = theirs;
            let mut ids = Vec::new();
            for _ in 0..2 {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let value: Value = serde_json::from_str(&line).unwrap();
                ids.push(value["id"].clone());
            }
            writeln!(writer, "{GREETING}").unwrap();
            for id in ids {
                writeln!(writer, r#"{{"return": {{}}, "id": {id}}}"#).unwrap();
            }
        });
        let (mut qmp, capabilities) = Qmp::begin(ours, Duration::from_secs(5)).unwrap();
        let status = qmp.submit("query-status", None).unwrap();
        qmp.reply(capabilities).unwrap();
        qmp.reply(status).unwrap();
        peer.join().unwrap();
    }

    #[test]
    fn a_pipelined_peer_without_a_greeting_is_refused() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut writer = theirs.try_clone().unwrap();
        writeln!(writer, r#"{{"return": {{}}, "id": 1}}"#).unwrap();
        let (mut qmp, capabilities) = Qmp::begin(ours, Duration::from_secs(1)).unwrap();
        let error = qmp.reply(capabilities).err().unwrap();
        assert!(matches!(error, QmpError::Protocol(_)), "{error}");
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
