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

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
};

/// `text` with whatever looks like a file path (a word with `/` or `\` in it) replaced by
/// `<path>`: for texts a client gets from a server-side failure, whose I/O errors name files
/// under the data directory. The server log keeps the whole text.
pub fn redact_paths(text: &str) -> Cow<'_, str> {
    const LEAD: &[char] = &['(', '[', '"', '\'', '`'];
    const TRAIL: &[char] = &[')', ']', '"', '\'', '`', ':', ',', ';', '.'];
    if !text.contains(['/', '\\']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for piece in text.split_inclusive(char::is_whitespace) {
        let word = piece.trim_end_matches(char::is_whitespace);
        let space = &piece[word.len()..];
        let core = word.trim_start_matches(LEAD).trim_end_matches(TRAIL);
        if core.contains(['/', '\\']) {
            let start = word.len() - word.trim_start_matches(LEAD).len();
            out.push_str(&word[..start]);
            out.push_str("<path>");
            out.push_str(&word[start + core.len()..]);
        } else {
            out.push_str(word);
        }
        out.push_str(space);
    }
    Cow::Owned(out)
}

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

    #[test]
    fn paths_are_redacted() {
        let text = "storage error in namespace `chat`: write failed on /tmp/d/log/chat/00000000000000000000.log: No space left on device (os error 28)";
        assert_eq!(
            redact_paths(text),
            "storage error in namespace `chat`: write failed on <path>: No space left on device (os error 28)"
        );
        assert_eq!(
            redact_paths("open (tickwire-data/candles/candles.redb) failed"),
            "open (<path>) failed"
        );
        assert_eq!(redact_paths(r"C:\data\log failed"), "<path> failed");
        assert!(matches!(
            redact_paths("the server is shutting down"),
            Cow::Borrowed(_)
        ));
    }
}
