//! vmrun: QEMU/KVM GPU-passthrough VMs from one TOML profile, without libvirt.
//!
//! The modules follow the data, each layer using only those before it: `profile` (find and
//! parse) → `model` (validate) → `firmware` + `plan` (paths, argv) → `host` (host steps as
//! data, their session and journal) → `check` (read-only preflight) and `run` (QEMU, QMP,
//! pinning, supervision) → `app` (one recipe for every command) → `cli` (arguments and
//! rendering). `exit`, `log`, `process`, `progress`, `qmp`, `qemu_advice` and `rom` are leaves any layer
//! may use.

pub mod app;
pub mod check;
pub mod cli;
pub mod exit;
pub mod firmware;
pub mod fsutil;
pub mod host;
pub mod libvirt;
pub mod log;
pub mod model;
pub mod plan;
pub mod process;
pub mod profile;
pub mod progress;
pub mod qemu_advice;
pub mod qemu_caps;
pub mod qmp;
pub mod rom;
pub mod run;
pub mod top;
