//! Pinning before the guest runs: each vCPU thread to its host CPU with its scheduling policy,
//! iothreads to their set, then a read-back of every QEMU thread from /proc.

use std::collections::HashSet;

use serde_json::Value;

use super::threads::{self, ThreadError, ThreadInfo};
use crate::log::Log;
use crate::model::{CpuSet, Pinning};
use crate::qmp::{Pending, Qmp, QmpError};

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    Thread(#[from] ThreadError),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("QEMU reports {found} vCPU threads but the profile pins {expected}")]
    VcpuCount { found: usize, expected: usize },
    #[error("{0}")]
    Malformed(String),
    #[error(
        "pinning.scheduler = \"{0}\" needs CAP_SYS_NICE, which this vmrun does not have: run it as root \
         (sudo), or set scheduler = \"other\""
    )]
    NoCapability(String),
    #[error("after pinning, /proc disagrees: {0}")]
    Verify(String),
}

/// The queries pinning needs, written right behind `qmp_capabilities` so that QEMU answers
/// them in the same wake-up as the handshake. QEMU runs one command per turn of its main loop,
/// each answer a hand-over between its threads and vmrun's: iothreads are asked for only when
/// the profile places them.
pub struct Queries {
    cpus: Pending,
    iothreads: Option<Pending>,
}

pub fn submit_queries(qmp: &mut Qmp, pinning: &Pinning) -> Result<Queries, QmpError> {
    Ok(Queries {
        cpus: qmp.submit("query-cpus-fast", None)?,
        iothreads: match pinning.iothreads {
            Some(_) => Some(qmp.submit("query-iothreads", None)?),
            None => None,
        },
    })
}

/// `(vCPU index, thread id)` from `query-cpus-fast`.
fn vcpu_threads(reply: Value) -> Result<Vec<(usize, i32)>, PinError> {
    let list = reply
        .as_array()
        .ok_or_else(|| PinError::Malformed(format!("query-cpus-fast returned {reply}")))?;
    let mut threads = Vec::new();
    for cpu in list {
        let index = cpu["cpu-index"].as_u64();
        let tid = cpu["thread-id"].as_i64();
        match (index, tid) {
            (Some(index), Some(tid)) => threads.push((index as usize, tid as i32)),
            _ => {
                return Err(PinError::Malformed(format!(
                    "query-cpus-fast entry without ids: {cpu}"
                )))
            }
        }
    }
    threads.sort_unstable();
    Ok(threads)
}

fn iothread_ids(reply: Value) -> Vec<i32> {
    reply
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|t| t["thread-id"].as_i64())
                .map(|t| t as i32)
                .collect()
        })
        .unwrap_or_default()
}

/// The threads vmrun placed; every other QEMU thread belongs on the emulator CPUs.
pub struct Pinned {
    pub summary: String,
    placed: HashSet<i32>,
}

impl Pinned {
    /// Moves QEMU threads created since the last sweep (they inherit the affinity of the thread
    /// that created them, a vCPU's included) to the emulator CPUs. Returns how many moved.
    pub fn sweep(&mut self, pid: u32, emulator: &CpuSet, log: &Log) -> usize {
        let Ok(all) = threads::threads_of(pid) else {
            return 0;
        };
        let wanted = emulator.to_string();
        let mut moved = 0;
        for info in all {
            if self.placed.contains(&info.tid) || info.affinity == wanted {
                continue;
            }
            match threads::set_affinity(info.tid, emulator) {
                Ok(()) => {
                    log.debug(&format!(
                        "thread {} ({}) {} → emulator CPUs {wanted}",
                        info.tid, info.name, info.affinity
                    ));
                    moved += 1;
                }
                Err(error) => log.debug(&format!("cannot move thread {}: {error}", info.tid)),
            }
        }
        moved
    }
}

/// Pins every vCPU (and iothread) of the paused QEMU `pid`, then verifies from /proc.
pub fn pin_all(
    qmp: &mut Qmp,
    queries: Queries,
    pid: u32,
    pinning: &Pinning,
    log: &Log,
) -> Result<Pinned, PinError> {
    if pinning.scheduler.is_realtime()
        && !caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_NICE,
        )
        .unwrap_or(false)
    {
        return Err(PinError::NoCapability(pinning.scheduler.as_str().into()));
    }
    let vcpus = vcpu_threads(qmp.reply(queries.cpus)?)?;
    if vcpus.len() != pinning.vcpus.len() {
        return Err(PinError::VcpuCount {
            found: vcpus.len(),
            expected: pinning.vcpus.len(),
        });
    }
    for (index, tid) in &vcpus {
        let cpu = pinning.vcpus[*index];
        threads::set_affinity(*tid, &CpuSet::from_cpus([cpu]))?;
        threads::set_policy(*tid, pinning.scheduler, pinning.priority)?;
        log.debug(&format!(
            "vCPU {index} (thread {tid}) → CPU {cpu}, SCHED_{} {}",
            pinning.scheduler.as_str().to_uppercase(),
            pinning.priority
        ));
    }
    let iothreads = match queries.iothreads {
        Some(pending) => iothread_ids(qmp.reply(pending)?),
        None => Vec::new(),
    };
    if let Some(set) = &pinning.iothreads {
        for tid in &iothreads {
            threads::set_affinity(*tid, set)?;
            log.debug(&format!("iothread {tid} → CPUs {set}"));
        }
    }
    verify(pid, pinning, &vcpus, &iothreads)?;
    let mut placed: HashSet<i32> = vcpus.iter().map(|(_, tid)| *tid).collect();
    if pinning.iothreads.is_some() {
        placed.extend(iothreads.iter().copied());
    }
    let summary = format!(
        "pinned {} vCPUs ({}) with SCHED_{} priority {}; verified from /proc",
        vcpus.len(),
        vcpus
            .iter()
            .map(|(index, _)| format!("{index}→{}", pinning.vcpus[*index]))
            .collect::<Vec<_>>()
            .join(" "),
        pinning.scheduler.as_str().to_uppercase(),
        pinning.priority
    );
    Ok(Pinned { summary, placed })
}

fn verify(
    pid: u32,
    pinning: &Pinning,
    vcpus: &[(usize, i32)],
    iothreads: &[i32],
) -> Result<(), PinError> {
    let all = threads::threads_of(pid)?;
    let mut problems = Vec::new();
    let find = |tid: i32| -> Option<&ThreadInfo> { all.iter().find(|t| t.tid == tid) };
    for (index, tid) in vcpus {
        let Some(info) = find(*tid) else {
            problems.push(format!("vCPU {index} thread {tid} is gone"));
            continue;
        };
        let want_cpu = pinning.vcpus[*index].to_string();
        if info.affinity != want_cpu {
            problems.push(format!(
                "vCPU {index} is on CPUs {} instead of {want_cpu}",
                info.affinity
            ));
        }
        if info.policy != pinning.scheduler.as_str() || info.priority != u32::from(pinning.priority)
        {
            problems.push(format!(
                "vCPU {index} has {} {} instead of {} {}",
                info.policy,
                info.priority,
                pinning.scheduler.as_str(),
                pinning.priority
            ));
        }
    }
    for info in &all {
        if vcpus.iter().any(|(_, tid)| *tid == info.tid) {
            continue;
        }
        if info.policy != "other" {
            problems.push(format!(
                "thread {} ({}) is {}, not SCHED_OTHER",
                info.tid, info.name, info.policy
            ));
        }
        if let (Some(set), true) = (&pinning.iothreads, iothreads.contains(&info.tid)) {
            if info.affinity != set.to_string() {
                problems.push(format!(
                    "iothread {} is on CPUs {} instead of {set}",
                    info.tid, info.affinity
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PinError::Verify(problems.join("; ")))
    }
}

/// vCPU placement for `status`: index, thread id and what /proc says, in index order.
pub fn vcpu_report(
    pid: u32,
    cpus: Option<&Value>,
) -> Result<Vec<(usize, ThreadInfo)>, ThreadError> {
    let all = threads::threads_of(pid)?;
    let mut report: Vec<(usize, ThreadInfo)> = match cpus.and_then(Value::as_array) {
        Some(list) => list
            .iter()
            .filter_map(|cpu| {
                let index = cpu["cpu-index"].as_u64()? as usize;
                let tid = cpu["thread-id"].as_i64()? as i32;
                Some((index, all.iter().find(|t| t.tid == tid)?.clone()))
            })
            .collect(),
        None => all
            .iter()
            .filter_map(|t| Some((t.vcpu_index()?, t.clone())))
            .collect(),
    };
    report.sort_by_key(|(index, _)| *index);
    Ok(report)
}
