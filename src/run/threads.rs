//! QEMU's threads as the kernel sees them (`/proc/PID/task/TID`), and the two syscalls that
//! place a thread: CPU affinity and scheduling policy.

use std::path::PathBuf;

use serde::Serialize;

use crate::model::{CpuSet, Scheduler};

#[derive(Debug, thiserror::Error)]
pub enum ThreadError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {}: {what}", .path.display())]
    Parse { path: PathBuf, what: String },
    #[error("cannot set the CPU affinity of thread {tid} to {cpus}: {errno}")]
    Affinity {
        tid: i32,
        cpus: String,
        errno: nix::errno::Errno,
    },
    #[error(
        "cannot give thread {tid} SCHED_{} priority {priority}: {source}{hint}",
        .policy.to_uppercase()
    )]
    Policy {
        tid: i32,
        policy: String,
        priority: u8,
        source: std::io::Error,
        hint: &'static str,
    },
}

/// One thread's placement, read from /proc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ThreadInfo {
    pub tid: i32,
    pub name: String,
    pub affinity: String,
    pub policy: String,
    pub priority: u32,
}

impl ThreadInfo {
    /// The vCPU index of a thread named `CPU n/KVM` (or `/TCG`), as `debug-threads=on` names them.
    pub fn vcpu_index(&self) -> Option<usize> {
        let rest = self.name.strip_prefix("CPU ")?;
        let (index, _accel) = rest.split_once('/')?;
        index.parse().ok()
    }
}

pub fn policy_name(policy: u32) -> String {
    match policy as i32 {
        libc::SCHED_OTHER => "other".into(),
        libc::SCHED_FIFO => "fifo".into(),
        libc::SCHED_RR => "rr".into(),
        libc::SCHED_BATCH => "batch".into(),
        libc::SCHED_IDLE => "idle".into(),
        other => format!("policy-{other}"),
    }
}

fn read(path: PathBuf) -> Result<String, ThreadError> {
    std::fs::read_to_string(&path).map_err(|source| ThreadError::Read { path, source })
}

/// A `stat` line as its name and the fields after it (field 3, the state, first).
pub fn split_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let (name, after_comm) = stat
        .split_once(" (")
        .and_then(|(_, rest)| rest.rsplit_once(')'))?;
    Some((name, after_comm.split_whitespace().collect()))
}

/// One file and one syscall per thread: `stat` holds the name, policy and priority, the
/// affinity comes from the kernel directly. Pinning verifies every QEMU thread this way before
/// the guest runs, so it is on the start's critical path.
pub fn thread_info(pid: u32, tid: i32) -> Result<ThreadInfo, ThreadError> {
    let stat_path = PathBuf::from(format!("/proc/{pid}/task/{tid}/stat"));
    let stat = read(stat_path.clone())?;
    // `TID (comm) state ...`: the name may itself hold spaces and parentheses, so it ends at
    // the last `)`. After it, field 3 (state) comes first; rt_priority is field 40 and policy
    // field 41.
    let (name, fields) = split_stat(&stat).ok_or_else(|| ThreadError::Parse {
        path: stat_path.clone(),
        what: "no (name)".into(),
    })?;
    let field = |number: usize| -> Result<u32, ThreadError> {
        fields
            .get(number - 3)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| ThreadError::Parse {
                path: stat_path.clone(),
                what: format!("field {number}"),
            })
    };
    let mask = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(tid)).map_err(|errno| {
        // Ended since its stat was read: as gone as a missing file.
        let source = if errno == nix::errno::Errno::ESRCH {
            std::io::Error::new(std::io::ErrorKind::NotFound, errno)
        } else {
            std::io::Error::from(errno)
        };
        ThreadError::Read {
            path: stat_path.clone(),
            source,
        }
    })?;
    let cpus = (0..nix::sched::CpuSet::count()).filter(|&cpu| mask.is_set(cpu).unwrap_or(false));
    Ok(ThreadInfo {
        tid,
        name: name.to_string(),
        affinity: CpuSet::from_cpus(cpus).to_string(),
        priority: field(40)?,
        policy: policy_name(field(41)?),
    })
}

/// How long a thread ran and waited to run, from the kernel's per-thread scheduler counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SchedCounters {
    /// Time on a CPU (`schedstat` field 1), in nanoseconds.
    pub run_ns: u64,
    /// Time runnable but waiting for a CPU (`schedstat` field 2: the run delay), in nanoseconds.
    pub wait_ns: u64,
    /// Times the thread was preempted (`nonvoluntary_ctxt_switches`).
    pub involuntary_switches: u64,
}

/// `/proc/PID/task/TID/schedstat` and the thread's involuntary context switches; None when the
/// thread is gone or the kernel keeps no such counters (CONFIG_SCHED_INFO off).
pub fn sched_counters(pid: u32, tid: i32) -> Option<SchedCounters> {
    sched_counters_in(&PathBuf::from(format!("/proc/{pid}/task/{tid}")))
}

/// The same counters from a thread's directory under any root (`vmrun top` reads through the
/// host root, so that its sampling runs on a fake `/proc` too).
pub fn sched_counters_in(dir: &std::path::Path) -> Option<SchedCounters> {
    let schedstat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
    let mut fields = schedstat.split_whitespace().map(|f| f.parse::<u64>().ok());
    let run_ns = fields.next()??;
    let wait_ns = fields.next()??;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let involuntary_switches = status
        .lines()
        .find_map(|line| line.strip_prefix("nonvoluntary_ctxt_switches:"))
        .and_then(|value| value.trim().parse().ok())?;
    Some(SchedCounters {
        run_ns,
        wait_ns,
        involuntary_switches,
    })
}

/// Every thread of a process, in thread-id order.
pub fn threads_of(pid: u32) -> Result<Vec<ThreadInfo>, ThreadError> {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    let entries =
        std::fs::read_dir(&dir).map_err(|source| ThreadError::Read { path: dir, source })?;
    let mut tids: Vec<i32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    let mut threads = Vec::new();
    for tid in tids {
        match thread_info(pid, tid) {
            Ok(info) => threads.push(info),
            // A thread that ended between listing and reading is simply gone.
            Err(ThreadError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(threads)
}

pub fn set_affinity(tid: i32, cpus: &CpuSet) -> Result<(), ThreadError> {
    let mut set = nix::sched::CpuSet::new();
    for cpu in cpus.iter() {
        set.set(cpu).map_err(|errno| ThreadError::Affinity {
            tid,
            cpus: cpus.to_string(),
            errno,
        })?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set).map_err(|errno| {
        ThreadError::Affinity {
            tid,
            cpus: cpus.to_string(),
            errno,
        }
    })
}

/// `sched_setscheduler(2)`, which nix does not wrap.
fn sched_setscheduler(tid: i32, policy: i32, priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the call; the kernel
    // only reads it, and an invalid tid or policy is reported through the return value.
    let result = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub fn set_policy(tid: i32, scheduler: Scheduler, priority: u8) -> Result<(), ThreadError> {
    // Threads a vCPU thread creates later (QEMU's I/O workers) must not inherit its real-time
    // policy: SCHED_RESET_ON_FORK starts them as SCHED_OTHER.
    let policy = match scheduler {
        Scheduler::RoundRobin => libc::SCHED_RR | libc::SCHED_RESET_ON_FORK,
        Scheduler::Fifo => libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK,
        Scheduler::Other => libc::SCHED_OTHER,
    };
    sched_setscheduler(tid, policy, i32::from(priority)).map_err(|source| {
        let hint = if source.raw_os_error() == Some(libc::EPERM) {
            "; real-time scheduling needs CAP_SYS_NICE (run vmrun as root) and, under cgroup v2 with \
             CONFIG_RT_GROUP_SCHED, a real-time budget for vmrun's cgroup"
        } else {
            ""
        };
        ThreadError::Policy {
            tid,
            policy: scheduler.as_str().to_string(),
            priority,
            source,
            hint,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_threads() {
        let pid = std::process::id();
        let threads = threads_of(pid).unwrap();
        assert!(!threads.is_empty());
        let main = threads.iter().find(|t| t.tid == pid as i32).unwrap();
        assert_eq!(main.policy, "other");
        assert_eq!(main.priority, 0);
        assert!(!main.affinity.is_empty());
    }

    #[test]
    fn a_thread_named_with_parentheses_reads_back_its_name_and_affinity() {
        let pid = std::process::id();
        let (told, heard) = std::sync::mpsc::channel();
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("w (x) y".into())
            .spawn(move || {
                let tid = nix::unistd::gettid().as_raw();
                set_affinity(tid, &CpuSet::from_cpus([0])).unwrap();
                told.send(tid).unwrap();
                finished.recv().unwrap();
            })
            .unwrap();
        let tid = heard.recv().unwrap();
        let info = thread_info(pid, tid).unwrap();
        finish.send(()).unwrap();
        worker.join().unwrap();
        assert_eq!(info.name, "w (x) y");
        assert_eq!(info.affinity, "0");
        assert_eq!((info.policy.as_str(), info.priority), ("other", 0));
        let gone = thread_info(pid, tid);
        assert!(
            matches!(&gone, Err(ThreadError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound),
            "{gone:?}"
        );
    }

    #[test]
    fn a_busy_thread_has_run_time_in_its_counters() {
        let pid = std::process::id();
        let tid = nix::unistd::gettid().as_raw();
        let before = sched_counters(pid, tid).unwrap();
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let after = sched_counters(pid, tid).unwrap();
        assert!(
            after.run_ns >= before.run_ns + 10_000_000,
            "{before:?} → {after:?}"
        );
        assert!(after.wait_ns >= before.wait_ns);
    }

    #[test]
    fn vcpu_thread_names_give_their_index() {
        let info = |name: &str| ThreadInfo {
            tid: 1,
            name: name.into(),
            affinity: "0".into(),
            policy: "other".into(),
            priority: 0,
        };
        assert_eq!(info("CPU 3/KVM").vcpu_index(), Some(3));
        assert_eq!(info("CPU 12/TCG").vcpu_index(), Some(12));
        assert_eq!(info("qemu-system-x86").vcpu_index(), None);
        assert_eq!(info("IO iothread0").vcpu_index(), None);
    }
}
