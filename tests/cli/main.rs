//! The one integration-test binary: library-level checks of each stage and the real `vmrun`
//! command line, with real QEMU where a test needs it.

mod accel_probe;
mod commands;
mod common;
mod console;
mod countdown;
mod crash_undo;
mod fake_host;
mod fake_topology;
mod firmware_selection;
mod golden;
mod hardening;
mod holders;
mod host_e2e;
mod host_preflight;
mod host_session;
mod isolation;
mod least_privilege;
mod libvirt;
mod loader_props;
mod logs;
mod new_profile;
mod qemu_caps;
mod qemu_escaping;
mod reset_method;
mod rom;
mod run_e2e;
mod shell_completion;
mod started_hook;
mod top;
mod topology;
mod usb;
mod validation;
mod view;
mod win11_e2e;
mod win11_profile;
