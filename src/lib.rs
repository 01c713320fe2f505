//! vmrun: QEMU/KVM GPU-passthrough VMs from one TOML profile, without libvirt.
//!
//! The modules follow the data: `profile` (find and parse) → `model` (validate) →
//! `firmware` + `plan` (paths, argv) → `check` (read-only preflight) → `cli`.

pub mod check;
pub mod cli;
pub mod firmware;
pub mod host;
pub mod libvirt;
pub mod log;
pub mod model;
pub mod plan;
pub mod profile;
pub mod qmp;
pub mod rom;
pub mod run;
