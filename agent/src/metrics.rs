//! Host metrics: sampling CPU, memory, disks, network and load from `/proc` and
//! `statvfs`, and the bounded backlog that keeps samples while the control plane is
//! out of reach.
//!
//! Invariants: the parsers take text and never panic on odd input (a field they
//! cannot read makes the sample skip that part, not the process fail); the backlog
//! never holds more than [`BACKLOG_CAP`] samples (48 h at one a minute, the oldest
//! dropped first) and is uploaded oldest first in batches of at most
//! [`MAX_BATCH_SAMPLES`].

use channel::api::{DiskUsage, MetricSample, MAX_BATCH_SAMPLES};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::path::Path;
use std::time::Instant;

/// Most samples kept while offline: 48 hours at one a minute.
pub const BACKLOG_CAP: usize = 48 * 60;

/// Cumulative CPU time from the `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Reads the aggregate `cpu` line of `/proc/stat`. Guest time is already counted
/// in user time, so it is not added again.
pub fn parse_cpu(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let idle = field(3) + field(4);
    let total: u64 = v.iter().sum();
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// CPU use between two readings, in percent of all CPUs.
pub fn cpu_percent(prev: CpuTimes, now: CpuTimes) -> f64 {
    let total = now.total.saturating_sub(prev.total);
    if total == 0 {
        return 0.0;
    }
    let busy = now.busy.saturating_sub(prev.busy).min(total);
    busy as f64 * 100.0 / total as f64
}

/// `(used, total)` bytes from `/proc/meminfo`: used = total − available. Kernels
/// without `MemAvailable` (before 3.14) fall back to free + buffers + cached.
pub fn parse_meminfo(meminfo: &str) -> Option<(u64, u64)> {
    let mut total = None;
    let mut available = None;
    let (mut free, mut buffers, mut cached) = (0, 0, 0);
    for line in meminfo.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(kib) = value.parse::<u64>() else {
            continue;
        };
        let bytes = kib.saturating_mul(1024);
        match key {
            "MemTotal:" => total = Some(bytes),
            "MemAvailable:" => available = Some(bytes),
            "MemFree:" => free = bytes,
            "Buffers:" => buffers = bytes,
            "Cached:" => cached = bytes,
            _ => {}
        }
    }
    let total = total?;
    let available = available.unwrap_or(free + buffers + cached).min(total);
    Some((total - available, total))
}

/// Received and transmitted bytes over all interfaces except loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetTotals {
    pub rx: u64,
    pub tx: u64,
}

/// Sums `/proc/net/dev`, skipping `lo`.
pub fn parse_net_dev(dev: &str) -> NetTotals {
    let mut t = NetTotals::default();
    for line in dev.lines() {
        let Some((iface, counters)) = line.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<&str> = counters.split_ascii_whitespace().collect();
        // receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes ...
        if let (Some(rx), Some(tx)) = (f.first(), f.get(8)) {
            if let (Ok(rx), Ok(tx)) = (rx.parse::<u64>(), tx.parse::<u64>()) {
                t.rx = t.rx.saturating_add(rx);
                t.tx = t.tx.saturating_add(tx);
            }
        }
    }
    t
}

/// Bytes per second between two readings. A counter that went backwards (an
/// interface removed, a counter reset) counts as zero, not as a huge value.
pub fn rate(prev: u64, now: u64, secs: f64) -> f64 {
    if secs <= 0.0 || now < prev {
        return 0.0;
    }
    (now - prev) as f64 / secs
}

/// The three load averages of `/proc/loadavg`.
pub fn parse_loadavg(loadavg: &str) -> Option<[f64; 3]> {
    let mut it = loadavg.split_ascii_whitespace().map(|f| f.parse().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Filesystems that hold no user data (or live in memory) and are never reported.
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "overlay",
    "cgroup",
    "cgroup2",
    "squashfs",
    "securityfs",
    "pstore",
    "debugfs",
    "tracefs",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "bpf",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "efivarfs",
    "ramfs",
    "selinuxfs",
    "nfsd",
    "iso9660",
    "udf",
];

/// Network filesystems: skipped because `statvfs` on an unreachable server can
/// block for minutes, and their space belongs to another host.
const NETWORK_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
    "lustre",
];

/// One mount to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
}

/// The real, local filesystems of `/proc/mounts`, one entry per device (bind
/// mounts and btrfs subvolumes of the same device would count its space twice).
pub fn parse_mounts(mounts: &str) -> Vec<Mount> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in mounts.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(device), Some(point), Some(fs_type)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if PSEUDO_FS.contains(&fs_type)
            || NETWORK_FS.contains(&fs_type)
            || fs_type.starts_with("fuse.")
            || fs_type == "fuse"
        {
            continue;
        }
        let point = unescape_mount(point);
        if !point.starts_with('/') || !seen.insert(device.to_string()) {
            continue;
        }
        out.push(Mount {
            device: device.to_string(),
            mount_point: point,
            fs_type: fs_type.to_string(),
        });
    }
    out
}

/// `/proc/mounts` writes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Used and total bytes of one mounted filesystem.
pub fn disk_usage(mount_point: &str) -> Option<DiskUsage> {
    let st = rustix::fs::statvfs(Path::new(mount_point)).ok()?;
    let frsize = st.f_frsize;
    let total = st.f_blocks.saturating_mul(frsize);
    if total == 0 {
        return None;
    }
    let used = st
        .f_blocks
        .saturating_sub(st.f_bfree)
        .saturating_mul(frsize);
    Some(DiskUsage {
        mount: mount_point.to_string(),
        used_bytes: used,
        total_bytes: total,
    })
}

struct Reading {
    cpu: Option<CpuTimes>,
    net: NetTotals,
    at: Instant,
}

fn read_proc(name: &str) -> String {
    std::fs::read_to_string(Path::new("/proc").join(name)).unwrap_or_default()
}

fn reading() -> Reading {
    Reading {
        cpu: parse_cpu(&read_proc("stat")),
        net: parse_net_dev(&read_proc("net/dev")),
        at: Instant::now(),
    }
}

/// Takes samples; rates and CPU use are deltas since the previous reading.
pub struct Sampler {
    prev: Reading,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// Takes the first reading, the baseline of the first sample.
    pub fn new() -> Self {
        Self { prev: reading() }
    }

    /// One sample dated `now_ms`. Parts that cannot be read are zero or empty.
    pub fn collect_sample(&mut self, now_ms: i64) -> MetricSample {
        let now = reading();
        let secs = now.at.duration_since(self.prev.at).as_secs_f64();
        let cpu_pct = match (self.prev.cpu, now.cpu) {
            (Some(a), Some(b)) => cpu_percent(a, b),
            _ => 0.0,
        };
        let (mem_used_bytes, mem_total_bytes) =
            parse_meminfo(&read_proc("meminfo")).unwrap_or((0, 0));
        let disks = parse_mounts(&read_proc("mounts"))
            .iter()
            .filter_map(|m| disk_usage(&m.mount_point))
            .collect();
        let sample = MetricSample {
            at: now_ms,
            cpu_pct,
            mem_used_bytes,
            mem_total_bytes,
            disks,
            net_rx_bytes_per_sec: rate(self.prev.net.rx, now.net.rx, secs),
            net_tx_bytes_per_sec: rate(self.prev.net.tx, now.net.tx, secs),
            load: parse_loadavg(&read_proc("loadavg")).unwrap_or([0.0; 3]),
            units: Vec::new(),
            backups: Vec::new(),
        };
        self.prev = now;
        sample
    }
}

/// Samples waiting for upload, oldest first.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Backlog {
    samples: VecDeque<MetricSample>,
}

impl Backlog {
    /// A backlog restored from disk, trimmed to the cap (oldest dropped).
    pub fn from_samples(samples: Vec<MetricSample>) -> Self {
        let mut b = Self {
            samples: samples.into(),
        };
        b.trim();
        b
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Adds a sample; beyond the cap the oldest is dropped.
    pub fn push(&mut self, sample: MetricSample) {
        self.samples.push_back(sample);
        self.trim();
    }

    fn trim(&mut self) {
        while self.samples.len() > BACKLOG_CAP {
            self.samples.pop_front();
        }
    }

    /// The oldest samples, at most one batch.
    pub fn next_batch(&mut self) -> &[MetricSample] {
        let n = self.samples.len().min(MAX_BATCH_SAMPLES);
        &self.samples.make_contiguous()[..n]
    }

    /// Drops the `n` oldest samples (after they were accepted).
    pub fn acknowledge(&mut self, n: usize) {
        self.samples.drain(..n.min(self.samples.len()));
    }

    /// Everything, oldest first, for persisting.
    pub fn to_vec(&self) -> Vec<MetricSample> {
        self.samples.iter().cloned().collect()
    }

    /// Uploads the backlog oldest first, one batch at a time, until it is empty or
    /// a batch fails. Returns how many samples were accepted; on failure those
    /// accepted before it are already dropped.
    pub async fn flush<E, F, Fut>(&mut self, mut send: F) -> (usize, Result<(), E>)
    where
        F: FnMut(Vec<MetricSample>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let mut sent = 0;
        while !self.is_empty() {
            let batch = self.next_batch().to_vec();
            let n = batch.len();
            if let Err(e) = send(batch).await {
                return (sent, Err(e));
            }
            self.acknowledge(n);
            sent += n;
        }
        (sent, Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  4705 356 584 3699176 23 23 0 0 0 0\n\
                        cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n\
                        intr 1462898\n";

    #[test]
    fn cpu_percent_from_stat_deltas() {
        let a = parse_cpu(STAT).unwrap();
        assert_eq!(a.total, 4705 + 356 + 584 + 3_699_176 + 23 + 23);
        assert_eq!(a.busy, 4705 + 356 + 584 + 23);
        let b = parse_cpu("cpu  4805 356 584 3699476 23 23 0 0 0 0\n").unwrap();
        assert!((cpu_percent(a, b) - 25.0).abs() < 1e-9);
        assert_eq!(cpu_percent(a, a), 0.0);
        assert_eq!(cpu_percent(b, a), 0.0);
        assert!(parse_cpu("cpu0 1 2 3 4\n").is_none());
        assert!(parse_cpu("cpu  1 2 x 4\n").is_none());
        assert!(parse_cpu("cpu  1 2\n").is_none());
    }

    #[test]
    fn memory_used_is_total_minus_available() {
        let m = "MemTotal:       16303088 kB\nMemFree:         1034388 kB\n\
                 MemAvailable:    9812344 kB\nBuffers:          532948 kB\nCached:          7812936 kB\n";
        assert_eq!(
            parse_meminfo(m),
            Some(((16_303_088 - 9_812_344) * 1024, 16_303_088 * 1024))
        );
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n";
        assert_eq!(parse_meminfo(old), Some((600 * 1024, 1000 * 1024)));
        assert_eq!(parse_meminfo("garbage"), None);
    }

    #[test]
    fn network_totals_skip_loopback() {
        let dev = "Inter-|   Receive                                                |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                   lo: 9000000   100    0    0    0     0          0         0  9000000   100    0    0    0     0       0          0\n  \
                   eth0: 1000       10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0\n \
                   wlan0:500 5 0 0 0 0 0 0 700 7 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(dev), NetTotals { rx: 1500, tx: 2700 });
        assert_eq!(rate(1000, 4000, 60.0), 50.0);
        assert_eq!(rate(4000, 1000, 60.0), 0.0);
        assert_eq!(rate(0, 10, 0.0), 0.0);
    }

    #[test]
    fn load_averages() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 1/467 12345\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("0.52 0.58"), None);
        assert_eq!(parse_loadavg("a b c"), None);
    }

    #[test]
    fn mounts_keep_real_local_filesystems_once_per_device() {
        let mounts = "sysfs /sys sysfs rw,nosuid 0 0\n\
                      proc /proc proc rw 0 0\n\
                      udev /dev devtmpfs rw 0 0\n\
                      /dev/sda1 / ext4 rw,relatime 0 0\n\
                      tmpfs /run tmpfs rw 0 0\n\
                      cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n\
                      /dev/loop0 /snap/core/1 squashfs ro 0 0\n\
                      overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0\n\
                      /dev/sdb1 /srv/my\\040data xfs rw 0 0\n\
                      /dev/sda1 /var/lib/docker ext4 rw 0 0\n\
                      nas:/export /mnt/nas nfs4 rw 0 0\n\
                      sshfs#u@h: /mnt/s fuse.sshfs rw 0 0\n\
                      tank/home /home zfs rw 0 0\n\
                      broken line\n";
        let got: Vec<(String, String)> = parse_mounts(mounts)
            .into_iter()
            .map(|m| (m.mount_point, m.fs_type))
            .collect();
        assert_eq!(
            got,
            [
                ("/".to_string(), "ext4".to_string()),
                ("/srv/my data".into(), "xfs".into()),
                ("/home".into(), "zfs".into()),
            ]
        );
        assert_eq!(unescape_mount("a\\011b\\134c\\0"), "a\tb\\c\\0");
    }

    #[test]
    fn a_live_sample_reads_this_host() {
        let mut s = Sampler::new();
        let sample = s.collect_sample(1);
        assert_eq!(sample.at, 1);
        assert!(sample.mem_total_bytes > 0);
        assert!((0.0..=100.0).contains(&sample.cpu_pct));
        assert!(disk_usage("/").is_some());
    }

    fn sample(at: i64) -> MetricSample {
        MetricSample {
            at,
            cpu_pct: 0.0,
            mem_used_bytes: 0,
            mem_total_bytes: 0,
            disks: vec![],
            net_rx_bytes_per_sec: 0.0,
            net_tx_bytes_per_sec: 0.0,
            load: [0.0; 3],
            units: Vec::new(),
            backups: Vec::new(),
        }
    }

    #[test]
    fn backlog_is_bounded_and_drops_the_oldest() {
        let mut b = Backlog::default();
        for at in 0..(BACKLOG_CAP as i64 + 10) {
            b.push(sample(at));
        }
        assert_eq!(b.len(), BACKLOG_CAP);
        assert_eq!(b.next_batch()[0].at, 10);
        let restored = Backlog::from_samples((0..3000).map(sample).collect());
        assert_eq!(restored.len(), BACKLOG_CAP);
        assert_eq!(restored.to_vec()[0].at, 3000 - BACKLOG_CAP as i64);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn backlog_uploads_oldest_first_in_batches_and_keeps_what_failed() {
        let mut b = Backlog::from_samples((0..400).map(sample).collect());
        let mut batches: Vec<(i64, usize)> = Vec::new();
        let (sent, r) = b
            .flush(|batch| {
                let first = batch[0].at;
                let n = batch.len();
                let fail = batches.len() == 1;
                batches.push((first, n));
                async move {
                    if fail {
                        Err("down")
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert_eq!(r, Err("down"));
        assert_eq!(sent, 180);
        assert_eq!(batches, [(0, 180), (180, 180)]);
        assert_eq!(b.len(), 220);

        let mut sizes = Vec::new();
        let (sent, r) = b
            .flush(|batch| {
                sizes.push((batch[0].at, batch.len()));
                async { Ok::<(), ()>(()) }
            })
            .await;
        assert_eq!((sent, r), (220, Ok(())));
        assert_eq!(sizes, [(180, 180), (360, 40)]);
        assert!(b.is_empty());
    }
}
