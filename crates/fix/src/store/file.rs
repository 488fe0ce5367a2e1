//! The file-backed sequence store: the only module of the crate that does I/O.

use super::{SeqNums, SeqStore};
use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &str = "tickwire-fix-seq 1";

/// Sequence numbers in a small text file, replaced atomically (write a temp file, rename over).
///
/// A crash leaves either the old or the new numbers, never a torn file. With `fsync` (the
/// default) the data and the directory entry are flushed before `save` returns, so the numbers
/// also survive a power loss; without it they survive a process crash only.
#[derive(Debug)]
pub struct FileSeqStore {
    path: PathBuf,
    tmp: PathBuf,
    fsync: bool,
    last: Option<SeqNums>,
}

impl FileSeqStore {
    /// Opens (or, on first save, creates) the store at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let mut store = FileSeqStore {
            path,
            tmp: PathBuf::from(tmp),
            fsync: true,
            last: None,
        };
        store.last = store.read()?;
        Ok(store)
    }

    /// Turns fsync on every save on or off.
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, context: &'static str) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: self.path.clone(),
            context,
            source,
        }
    }

    fn read(&self) -> Result<Option<SeqNums>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("read")(e)),
        };
        let corrupt = |reason| Error::StoreCorrupt {
            path: self.path.clone(),
            reason,
        };
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(corrupt("unknown header line"));
        }
        let mut num = |key: &str| -> Result<u64> {
            let line = lines.next().ok_or_else(|| corrupt("missing line"))?;
            let v = line
                .strip_prefix(key)
                .and_then(|r| r.strip_prefix('='))
                .ok_or_else(|| corrupt("unexpected key"))?;
            match v.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(corrupt("sequence number is not a positive integer")),
            }
        };
        Ok(Some(SeqNums {
            next_sender: num("next_sender")?,
            next_target: num("next_target")?,
        }))
    }
}

impl SeqStore for FileSeqStore {
    fn load(&mut self) -> Result<SeqNums> {
        Ok(self.last.unwrap_or_default())
    }

    fn save(&mut self, seqs: SeqNums) -> Result<()> {
        if self.last == Some(seqs) {
            return Ok(());
        }
        let text = format!(
            "{MAGIC}\nnext_sender={}\nnext_target={}\n",
            seqs.next_sender, seqs.next_target
        );
        let mut f = File::create(&self.tmp).map_err(self.io("create temp file"))?;
        f.write_all(text.as_bytes())
            .map_err(self.io("write temp file"))?;
        if self.fsync {
            f.sync_all().map_err(self.io("fsync temp file"))?;
        }
        drop(f);
        fs::rename(&self.tmp, &self.path).map_err(self.io("rename temp file"))?;
        if self.fsync {
            // The rename is durable only once the directory itself is flushed.
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(self.io("fsync directory"))?;
            }
        }
        self.last = Some(seqs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_rejects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.seq");
        let mut s = FileSeqStore::open(&path).unwrap();
        assert_eq!(s.load().unwrap(), SeqNums::default());
        let n = SeqNums {
            next_sender: 42,
            next_target: 7,
        };
        s.save(n).unwrap();
        drop(s);
        assert_eq!(FileSeqStore::open(&path).unwrap().load().unwrap(), n);
        assert!(!dir.path().join("s.seq.tmp").exists());
        fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            FileSeqStore::open(&path),
            Err(Error::StoreCorrupt { .. })
        ));
    }
}
