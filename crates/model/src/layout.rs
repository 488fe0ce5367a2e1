//! The data directory's layout: the one place that spells where each store lives, so the
//! server, `tickwire import` and the tools open the same files. Paths only; no I/O here.
//!
//! ```text
//! <data>/LOCK                      held by the one process that writes the directory
//! <data>/log/<namespace>/          a namespace's embedded log (segments, index, EPOCH)
//! <data>/candles/candles.redb      closed bars, aggregator snapshots, projection positions
//! <data>/projections/<name>/       other projections' state
//! <data>/mqtt-sessions/            persistent MQTT sessions, one file per client id
//! <data>/fix/                      FIX sequence-number files, one per session
//! <data>/imports/                  `tickwire import` progress markers
//! ```

use std::path::{Path, PathBuf};

/// A data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The advisory lock file (see the stream crate's `lock_data_dir`).
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("LOCK")
    }

    /// Parent of every namespace log.
    pub fn logs(&self) -> PathBuf {
        self.root.join("log")
    }

    /// One namespace's embedded log.
    pub fn log(&self, namespace: &str) -> PathBuf {
        self.logs().join(namespace)
    }

    /// The candle store file.
    pub fn candle_store(&self) -> PathBuf {
        self.root.join("candles").join("candles.redb")
    }

    /// The state directory of a projection other than candles.
    pub fn projection(&self, name: &str) -> PathBuf {
        self.root.join("projections").join(name)
    }

    /// Persistent MQTT sessions.
    pub fn mqtt_sessions(&self) -> PathBuf {
        self.root.join("mqtt-sessions")
    }

    /// FIX sequence-number files.
    pub fn fix(&self) -> PathBuf {
        self.root.join("fix")
    }

    /// `tickwire import` progress markers.
    pub fn imports(&self) -> PathBuf {
        self.root.join("imports")
    }
}

impl From<&Path> for DataDir {
    fn from(p: &Path) -> DataDir {
        DataDir::new(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_documented_ones() {
        let d = DataDir::new("/d");
        assert_eq!(d.log("chat"), PathBuf::from("/d/log/chat"));
        assert_eq!(d.lock_file(), PathBuf::from("/d/LOCK"));
        assert_eq!(d.candle_store(), PathBuf::from("/d/candles/candles.redb"));
        assert_eq!(d.mqtt_sessions(), PathBuf::from("/d/mqtt-sessions"));
        assert_eq!(d.fix(), PathBuf::from("/d/fix"));
        assert_eq!(d.imports(), PathBuf::from("/d/imports"));
    }
}
