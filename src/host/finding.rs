//! One line of a preflight: what `check` prints and what `run` refuses to start on. Host steps
//! report their own findings, so the type lives with them.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub status: Status,
    pub check: String,
    pub message: String,
}

impl Finding {
    pub fn new(status: Status, check: &str, message: impl Into<String>) -> Self {
        Finding {
            status,
            check: check.to_string(),
            message: message.into(),
        }
    }

    pub fn pass(check: &str, message: impl Into<String>) -> Self {
        Self::new(Status::Pass, check, message)
    }

    pub fn warn(check: &str, message: impl Into<String>) -> Self {
        Self::new(Status::Warn, check, message)
    }

    pub fn fail(check: &str, message: impl Into<String>) -> Self {
        Self::new(Status::Fail, check, message)
    }
}
