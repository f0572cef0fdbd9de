//! A task's usage as containerd's metrics: cgroup v1 or v2 messages, as
//! runc's shim sends them, whatever the usage was read from.

use containerd_shim::protos::protobuf::{MessageDyn, MessageField};

use crate::cgroup::Usage;

/// The metrics message of `usage` (v2 on a unified hierarchy, else v1).
pub fn metrics(usage: &Usage) -> Box<dyn MessageDyn> {
    if usage.unified {
        use containerd_shim::protos::cgroups_v2::metrics as v2;
        Box::new(v2::Metrics {
            memory: MessageField::some(v2::MemoryStat {
                usage: usage.memory_bytes,
                usage_limit: usage.memory_limit,
                ..Default::default()
            }),
            cpu: MessageField::some(v2::CPUStat {
                usage_usec: usage.cpu_nanos / 1000,
                ..Default::default()
            }),
            pids: MessageField::some(v2::PidsStat {
                current: usage.pids,
                ..Default::default()
            }),
            ..Default::default()
        })
    } else {
        use containerd_shim::protos::cgroups::metrics as v1;
        // Every message field is set, even when empty: Docker's stats
        // reader dereferences them without checking (it crashed dockerd
        // 28 on a missing `cpu.throttling`).
        Box::new(v1::Metrics {
            memory: MessageField::some(v1::MemoryStat {
                usage: MessageField::some(v1::MemoryEntry {
                    usage: usage.memory_bytes,
                    limit: usage.memory_limit,
                    ..Default::default()
                }),
                hierarchical_memory_limit: usage.memory_limit,
                swap: MessageField::some(v1::MemoryEntry::default()),
                kernel: MessageField::some(v1::MemoryEntry::default()),
                kernel_tcp: MessageField::some(v1::MemoryEntry::default()),
                ..Default::default()
            }),
            cpu: MessageField::some(v1::CPUStat {
                usage: MessageField::some(v1::CPUUsage {
                    total: usage.cpu_nanos,
                    ..Default::default()
                }),
                throttling: MessageField::some(v1::Throttle::default()),
                ..Default::default()
            }),
            blkio: MessageField::some(v1::BlkIOStat::default()),
            pids: MessageField::some(v1::PidsStat {
                current: usage.pids,
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}
