use std::{path::PathBuf, str::FromStr, time::Duration};

use tickwire_model::NamespaceSpec;

use crate::HubError;

/// When the log is fsynced. Acknowledgements follow it: with `Always` an ack means the message
/// is on disk; with `Interval` or `Never` it means the message is in the OS page cache (survives
/// a process crash, not a power loss) and `Interval` bounds the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync every group-commit batch before acknowledging it.
    Always,
    /// fsync at most every N; acknowledge once written.
    Interval(Duration),
    /// Leave flushing to the OS.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = HubError;

    /// `always`, `never`, `interval:50ms`, `interval:2s`, or `interval:50` (milliseconds).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            HubError::Config(format!(
                "fsync policy {s:?}: expected always, never or interval:<N>ms"
            ))
        };
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => {
                let n = s.strip_prefix("interval:").ok_or_else(bad)?;
                let (num, mult) = if let Some(ms) = n.strip_suffix("ms") {
                    (ms, 1)
                } else if let Some(sec) = n.strip_suffix('s') {
                    (sec, 1000)
                } else {
                    (n, 1)
                };
                let v: u64 = num.parse().map_err(|_| bad())?;
                if v == 0 {
                    return Err(bad());
                }
                Ok(FsyncPolicy::Interval(Duration::from_millis(v * mult)))
            }
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}ms", d.as_millis()),
        }
    }
}

/// Everything the hub needs, resolved from the server's configuration.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub data_dir: PathBuf,
    pub namespaces: Vec<NamespaceSpec>,
    pub fsync: FsyncPolicy,
    /// Recent messages kept in memory per stream channel. A live subscriber that falls further
    /// behind than this is disconnected (`slow_consumer`) and resumes by offset.
    pub stream_buffer: usize,
    /// Client message ids remembered per namespace for idempotent publish.
    pub dedup_window: usize,
    /// Most subscriptions one session may hold.
    pub max_subscriptions: usize,
    pub segment_bytes: u64,
    /// Most publications one group-commit batch carries.
    pub max_batch: usize,
}

impl HubConfig {
    /// Defaults for a data directory: the default namespaces, fsync always.
    pub fn new(data_dir: impl Into<PathBuf>) -> HubConfig {
        HubConfig {
            data_dir: data_dir.into(),
            namespaces: NamespaceSpec::defaults(),
            fsync: FsyncPolicy::Always,
            stream_buffer: 1024,
            dedup_window: 100_000,
            max_subscriptions: 1024,
            segment_bytes: 64 * 1024 * 1024,
            max_batch: 8192,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_policies() {
        assert_eq!(
            "always".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Always
        );
        assert_eq!("never".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Never);
        assert_eq!(
            "interval:50ms".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Interval(Duration::from_millis(50))
        );
        assert_eq!(
            "interval:2s".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Interval(Duration::from_secs(2))
        );
        assert_eq!(
            "interval:7".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Interval(Duration::from_millis(7))
        );
        for bad in ["", "sometimes", "interval:", "interval:0", "interval:x"] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad}");
        }
        assert_eq!(
            FsyncPolicy::Interval(Duration::from_millis(50)).to_string(),
            "interval:50ms"
        );
    }
}
