//! Fake CPU topologies: a real machine's `lscpu -e` (tests/fixtures/topology/*.lscpu) written out
//! as the sysfs files the kernel would show, under a fake root.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::repo_root;

struct Row {
    cpu: usize,
    node: usize,
    socket: usize,
    core: usize,
    l2: usize,
    l3: usize,
    online: bool,
    kind: Option<char>,
}

fn rows(fixture: &str) -> Vec<Row> {
    let text =
        std::fs::read_to_string(repo_root().join("tests/fixtures/topology").join(fixture)).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("CPU") && !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let caches: Vec<usize> = f[4].split(':').map(|c| c.parse().unwrap()).collect();
            Row {
                cpu: f[0].parse().unwrap(),
                node: f[1].parse().unwrap(),
                socket: f[2].parse().unwrap(),
                core: f[3].parse().unwrap(),
                l2: caches[2],
                l3: caches[3],
                online: f[5] == "yes",
                kind: f.get(6).and_then(|k| k.chars().next()),
            }
        })
        .collect()
}

fn list(cpus: impl Iterator<Item = usize>) -> String {
    vmrun::model::CpuSet::from_cpus(cpus).to_string()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{text}\n")).unwrap();
}

/// Writes the topology of `fixture` under `root`; every CPU's governor starts as `schedutil`.
pub fn write_topology(root: &Path, fixture: &str) {
    let rows = rows(fixture);
    let cpu_dir = root.join("sys/devices/system/cpu");
    write(
        &cpu_dir.join("online"),
        &list(rows.iter().filter(|r| r.online).map(|r| r.cpu)),
    );
    write(&cpu_dir.join("possible"), &list(rows.iter().map(|r| r.cpu)));
    for row in &rows {
        let dir = cpu_dir.join(format!("cpu{}", row.cpu));
        let siblings = list(
            rows.iter()
                .filter(|r| r.core == row.core && r.socket == row.socket)
                .map(|r| r.cpu),
        );
        let topology = dir.join("topology");
        write(&topology.join("core_id"), &row.core.to_string());
        write(
            &topology.join("physical_package_id"),
            &row.socket.to_string(),
        );
        write(&topology.join("die_id"), "0");
        write(&topology.join("thread_siblings_list"), &siblings);
        write(&topology.join("core_cpus_list"), &siblings);
        let cache = dir.join("cache");
        // index0..3 are L1d, L1i, L2, L3 on x86; the reader must go by `level`, not by name.
        write(&cache.join("index0/level"), "1");
        write(&cache.join("index0/shared_cpu_list"), &siblings);
        write(&cache.join("index2/level"), "2");
        write(
            &cache.join("index2/shared_cpu_list"),
            &list(rows.iter().filter(|r| r.l2 == row.l2).map(|r| r.cpu)),
        );
        write(&cache.join("index3/level"), "3");
        write(
            &cache.join("index3/shared_cpu_list"),
            &list(rows.iter().filter(|r| r.l3 == row.l3).map(|r| r.cpu)),
        );
        write(&dir.join("cpufreq/scaling_governor"), "schedutil");
    }
    let mut nodes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for row in &rows {
        nodes.entry(row.node).or_default().push(row.cpu);
    }
    for (node, cpus) in nodes {
        let dir = root.join(format!("sys/devices/system/node/node{node}"));
        write(&dir.join("cpulist"), &list(cpus.into_iter()));
        for name in ["nr_hugepages", "free_hugepages"] {
            write(&dir.join("hugepages/hugepages-2048kB").join(name), "0");
        }
    }
    if rows.iter().any(|r| r.kind.is_some()) {
        for (kind, dir) in [('P', "cpu_core"), ('E', "cpu_atom")] {
            write(
                &root.join(format!("sys/devices/{dir}/cpus")),
                &list(rows.iter().filter(|r| r.kind == Some(kind)).map(|r| r.cpu)),
            );
        }
    }
}

/// A fresh fake root holding only the topology of `fixture`.
pub fn topology_root(fixture: &str) -> crate::common::TestDir {
    let dir = crate::common::tempdir();
    write_topology(dir.path(), fixture);
    dir
}
