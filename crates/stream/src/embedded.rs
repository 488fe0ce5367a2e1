//! The default backend: each namespace is our own segmented log (`tickwire-log`) in
//! `<data>/log/<namespace>/`, with its epoch in an `EPOCH` file beside the segments.

use std::{
    fs::File,
    io::Write,
    ops::Range,
    path::{Path, PathBuf},
    sync::Arc,
};

use tickwire_log::{Entry, Log, LogConfig, LogReader, RecoveryReport, SyncPoint};
use tickwire_model::{DataDir, Epoch, NamespaceSpec, Offset};

use crate::{
    record, AppendItem, Appender, Backend, BackupFile, DurabilityPoint, Opened, ReadBatch,
    RecoveryStats, StorageStats, Stream, StreamBackup, StreamError, Watermark,
};

/// Settings the embedded log takes from the server configuration (the rest comes from each
/// namespace's spec: record size and retention).
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Log segment size, bytes.
    pub segment_bytes: u64,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The embedded backend over one data directory, whose lock it holds while it lives: a second
/// process on the same directory would interleave appends and corrupt the logs.
pub struct Embedded {
    dir: DataDir,
    config: EmbeddedConfig,
    _lock: File,
}

impl Embedded {
    /// Takes the data directory's lock; namespaces are opened with [`Backend::open`].
    pub fn open(dir: DataDir, config: EmbeddedConfig) -> Result<Embedded, StreamError> {
        let lock = lock_data_dir(&dir)?;
        Ok(Embedded {
            dir,
            config,
            _lock: lock,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// Opens one namespace with the concrete types (tools and tests that want the recovery
    /// report).
    pub fn open_namespace(
        &self,
        spec: &NamespaceSpec,
    ) -> Result<(Arc<EmbeddedStream>, EmbeddedAppender), StreamError> {
        let name = &spec.name;
        // The log creates its directory itself, and fsyncs the directories above a new one so
        // a power loss cannot take the namespace with it.
        let path = self.dir.log(name);
        let cfg = LogConfig {
            segment_bytes: self.config.segment_bytes.max(4096),
            max_record_bytes: u32::try_from(spec.max_message_bytes.saturating_add(1024))
                .unwrap_or(u32::MAX),
            retention_bytes: spec.retention_bytes,
            retention_age: spec.retention_age,
            ..LogConfig::default()
        };
        let log = Log::open(&path, cfg).map_err(|e| StreamError::storage(name, e))?;
        report_recovery(name, log.recovery());
        // Only a log with no segments at all is new: an empty log that was opened before keeps
        // its epoch, or every restart would tell readers of it that the stream was recreated.
        let epoch = load_or_create_epoch(&path, log.recovery().created)
            .map_err(|e| StreamError::storage(name, e))?;
        let watermark = Arc::new(Watermark::new(log.next_offset()));
        let stream = Arc::new(EmbeddedStream {
            namespace: name.clone(),
            dir: path.clone(),
            reader: log.reader(),
            epoch,
            watermark: watermark.clone(),
            recovery: log.recovery().clone(),
        });
        let appender = EmbeddedAppender {
            namespace: name.clone(),
            log,
            watermark,
            values: Vec::with_capacity(1 << 16),
            spans: Vec::new(),
        };
        Ok((stream, appender))
    }
}

impl Backend for Embedded {
    fn open(&self, spec: &NamespaceSpec) -> Result<Opened, StreamError> {
        let (stream, appender) = self.open_namespace(spec)?;
        Ok(Opened {
            stream,
            writer: crate::Writer::Sole(Box::new(appender)),
        })
    }
}

/// Recovery actions are logged where they happen, so an operator sees them without a test
/// reading the report: a torn tail is what a crash leaves and a warning; damage with valid
/// records after it is corruption, lost data, and an error with an exact account.
fn report_recovery(namespace: &str, r: &RecoveryReport) {
    for q in &r.quarantined {
        tracing::error!(
            namespace,
            segment = %q.segment.display(),
            bytes = ?q.bytes,
            byte_count = q.bytes.end - q.bytes.start,
            lost_offsets = ?q.offsets,
            lost_records = q.offsets.end - q.offsets.start,
            copy = %q.copy.display(),
            reason = %q.reason,
            "log recovery found corruption in the active segment with valid records after it: \
             the damaged bytes were quarantined, the records in them are lost, every later \
             record was kept"
        );
    }
    if r.truncated_bytes > 0 {
        tracing::warn!(
            namespace,
            bytes = r.truncated_bytes,
            at = ?r.truncated_at,
            reason = r.truncation_reason.as_deref().unwrap_or(""),
            "log recovery cut a torn tail off the active segment (an incomplete last write)"
        );
    }
    if r.indexes_rebuilt > 0 || r.orphans_removed > 0 {
        tracing::info!(
            namespace,
            indexes_rebuilt = r.indexes_rebuilt,
            orphans_removed = r.orphans_removed,
            "log recovery repaired index files"
        );
    }
}

fn recovery_stats(r: &RecoveryReport) -> RecoveryStats {
    RecoveryStats {
        truncated_bytes: r.truncated_bytes,
        quarantined_bytes: r.quarantined_bytes(),
        quarantined_records: r.lost_records(),
        indexes_rebuilt: r.indexes_rebuilt as u64,
    }
}

const EPOCH_FILE: &str = "EPOCH";

/// The stream's epoch from `<log dir>/EPOCH`; a new random one when the log is new (or has no
/// file yet: a directory from before epochs existed keeps its offsets and gets an epoch now).
/// Written durably before anything is appended.
fn load_or_create_epoch(dir: &Path, new_log: bool) -> std::io::Result<Epoch> {
    let path = dir.join(EPOCH_FILE);
    if !new_log {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return Epoch::parse(text.trim()).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} does not hold an epoch: {text:?}", path.display()),
                    )
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let epoch = Epoch(random_u64());
    let tmp = dir.join("EPOCH.tmp");
    {
        let mut f = File::create(&tmp)?;
        writeln!(f, "{epoch}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(epoch)
}

/// 64 random bits without a dependency: std's per-process random hash keys (seeded by the OS)
/// over the clock and the process id.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(tickwire_model::clock::now_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

/// Takes an exclusive advisory lock on `<data>/LOCK`, released when the file closes (also on
/// kill -9, so a crashed server never leaves a stale lock behind).
pub fn lock_data_dir(dir: &DataDir) -> Result<File, StreamError> {
    let storage = |reason: String| StreamError::storage("", reason);
    let root = dir.root();
    std::fs::create_dir_all(root)
        .map_err(|e| storage(format!("creating {}: {e}", root.display())))?;
    let path = dir.lock_file();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| storage(format!("opening {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(storage(format!(
            "data directory {} is in use by another tickwire process",
            root.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(storage(format!("locking {}: {e}", path.display())))
        }
    }
}

/// The read side of one embedded namespace log.
pub struct EmbeddedStream {
    namespace: String,
    /// The namespace's log directory.
    dir: PathBuf,
    reader: LogReader,
    epoch: Epoch,
    watermark: Arc<Watermark>,
    recovery: RecoveryReport,
}

impl EmbeddedStream {
    /// What the log's recovery found and repaired when it was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }
}

impl Stream for EmbeddedStream {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn epoch(&self) -> Epoch {
        self.epoch
    }

    fn start_offset(&self) -> Offset {
        self.reader.start_offset()
    }

    fn next_offset(&self) -> Offset {
        self.reader.next_offset()
    }

    fn read(
        &self,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadBatch, StreamError> {
        let from = from.max(self.reader.start_offset());
        let mut out = ReadBatch {
            publications: Vec::new(),
            next: from,
            skipped: 0,
            lost: 0,
        };
        // Only what the writer has announced: a batch it appended but has not yet handed to
        // the append feed stays out of sight until it has (`Appender::append_unannounced`).
        let announced =
            usize::try_from(self.watermark.get().saturating_sub(from)).unwrap_or(usize::MAX);
        if announced == 0 {
            return Ok(out);
        }
        let records = self
            .reader
            .read(from, max_records.min(announced), max_bytes)
            .map_err(|e| StreamError::storage(&self.namespace, e))?;
        out.publications.reserve(records.len());
        for rec in records {
            out.next = rec.offset + 1;
            if rec.is_lost() {
                out.lost += 1;
                continue;
            }
            match record::decode(rec) {
                Some(p) => out.publications.push(p),
                None => out.skipped += 1,
            }
        }
        Ok(out)
    }

    fn watermark(&self) -> &Arc<Watermark> {
        &self.watermark
    }

    fn recovery_stats(&self) -> RecoveryStats {
        recovery_stats(&self.recovery)
    }

    fn storage_stats(&self) -> Option<StorageStats> {
        // Read from the directory at scrape time: segments come and go with rolls and
        // retention, and a stat per segment every scrape is cheap next to keeping a count
        // in step with both.
        let mut st = StorageStats::default();
        for entry in std::fs::read_dir(&self.dir).ok()?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                st.segments += 1;
                st.bytes += entry.metadata().map_or(0, |m| m.len());
            }
        }
        Some(st)
    }

    fn backup(&self) -> Result<Option<StreamBackup>, StreamError> {
        let snap = self
            .reader
            .snapshot()
            .map_err(|e| StreamError::storage(&self.namespace, e))?;
        let mut files = vec![BackupFile::bytes(
            EPOCH_FILE,
            format!("{}\n", self.epoch).into_bytes(),
        )];
        files.extend(snap.files.into_iter().map(BackupFile::log));
        // Quarantined bytes are evidence of corruption an operator may still want to read;
        // each file is written once and never changed.
        let quarantine = self.dir.join("quarantine");
        if let Ok(entries) = std::fs::read_dir(&quarantine) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let bytes = std::fs::read(entry.path()).map_err(|e| {
                    StreamError::storage(&self.namespace, format!("reading quarantine/{name}: {e}"))
                })?;
                files.push(BackupFile::bytes(format!("quarantine/{name}"), bytes));
            }
        }
        Ok(Some(StreamBackup {
            epoch: self.epoch,
            start_offset: snap.start_offset,
            next_offset: snap.next_offset,
            files,
        }))
    }
}

/// The writer of one embedded namespace log.
pub struct EmbeddedAppender {
    namespace: String,
    log: Log,
    watermark: Arc<Watermark>,
    /// Every value of a batch, back to back (header + data), so a batch is one buffer and one
    /// write however many items it has.
    values: Vec<u8>,
    spans: Vec<Range<usize>>,
}

impl EmbeddedAppender {
    fn storage(&self, e: impl std::fmt::Display) -> StreamError {
        StreamError::storage(&self.namespace, e)
    }
}

impl Appender for EmbeddedAppender {
    fn append(&mut self, items: &[AppendItem<'_>], timestamp: u64) -> Result<Offset, StreamError> {
        let first = self.append_unannounced(items, timestamp)?;
        self.announce();
        Ok(first)
    }

    fn append_unannounced(
        &mut self,
        items: &[AppendItem<'_>],
        timestamp: u64,
    ) -> Result<Offset, StreamError> {
        self.values.clear();
        self.spans.clear();
        for it in items {
            let start = self.values.len();
            record::write_header(it.msg_id, &mut self.values);
            self.values.extend_from_slice(it.data);
            self.spans.push(start..self.values.len());
        }
        let entries: Vec<Entry<'_>> = items
            .iter()
            .zip(&self.spans)
            .map(|(it, span)| Entry {
                timestamp,
                key: it.channel.as_str().as_bytes(),
                value: &self.values[span.clone()],
            })
            .collect();
        let first = self
            .log
            .append(&entries)
            .map_err(|e| StreamError::storage(&self.namespace, e))?;
        // A large batch must not keep its buffer forever.
        if self.values.capacity() > 8 << 20 {
            self.values = Vec::with_capacity(1 << 16);
        }
        Ok(first)
    }

    fn announce(&mut self) {
        self.watermark.advance(self.log.next_offset());
    }

    fn durability_point(&mut self) -> Result<Box<dyn DurabilityPoint>, StreamError> {
        let point = self.log.sync_point().map_err(|e| self.storage(e))?;
        Ok(Box::new(EmbeddedPoint {
            namespace: self.namespace.clone(),
            point,
        }))
    }

    fn sync(&mut self) -> Result<(), StreamError> {
        self.log.sync().map_err(|e| self.storage(e))
    }

    fn is_poisoned(&self) -> bool {
        self.log.is_poisoned()
    }

    fn next_offset(&self) -> Offset {
        self.log.next_offset()
    }

    fn start_offset(&self) -> Offset {
        self.log.start_offset()
    }

    fn retention_cutoff(&self, now: u64) -> Offset {
        self.log.retention_cutoff(now)
    }

    fn enforce_retention(&mut self, now: u64) -> Result<usize, StreamError> {
        self.log.enforce_retention(now).map_err(|e| self.storage(e))
    }
}

/// A sync point of the embedded log.
struct EmbeddedPoint {
    namespace: String,
    point: SyncPoint,
}

impl DurabilityPoint for EmbeddedPoint {
    fn upto(&self) -> Offset {
        self.point.upto()
    }

    fn absorb(&mut self, older: Box<dyn DurabilityPoint>) {
        let older: Box<dyn std::any::Any> = older;
        if let Ok(older) = older.downcast::<EmbeddedPoint>() {
            self.point.absorb(older.point);
        }
    }

    fn run(self: Box<Self>) -> Result<Offset, StreamError> {
        let EmbeddedPoint { namespace, point } = *self;
        point.run().map_err(|e| StreamError::storage(&namespace, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_model::{Channel, NamespaceSpec};

    fn spec(name: &str) -> NamespaceSpec {
        NamespaceSpec::defaults()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
    }

    #[test]
    fn append_read_tail_and_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let chat = spec("chat");
        let epoch;
        {
            let backend = Embedded::open(data.clone(), EmbeddedConfig::default()).unwrap();
            assert!(
                Embedded::open(data.clone(), EmbeddedConfig::default()).is_err(),
                "the data directory is locked"
            );
            let (stream, mut appender) = backend.open_namespace(&chat).unwrap();
            let stream: Arc<dyn Stream> = stream;
            epoch = stream.epoch();
            let a = Channel::parse("chat.a").unwrap();
            let b = Channel::parse("chat.b").unwrap();
            let items: Vec<AppendItem<'_>> = (0..10)
                .map(|i| AppendItem {
                    channel: if i % 2 == 0 { &a } else { &b },
                    msg_id: (i == 3).then_some("m3"),
                    data: b"{}",
                })
                .collect();
            let mut tail = stream.clone().tail(4);
            assert_eq!(appender.append(&items, 7).unwrap(), 0);
            appender.durability_point().unwrap().run().unwrap();
            let got = tail.poll().unwrap();
            assert_eq!(got.first().map(|p| p.offset), Some(4));
            assert_eq!(got.len(), 6);
            let page = stream.read_channel(&b, 0, 10, 100, 1000).unwrap();
            let offs: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
            assert_eq!(offs, vec![1, 3, 5, 7, 9]);
            assert_eq!(page.publications[1].msg_id.as_deref(), Some("m3"));
            let page = stream.read_channel(&a, 3, 10, 2, 1000).unwrap();
            let offs: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
            assert_eq!(offs, vec![4, 6]);
            assert!(page.next <= 8 && page.next > 6, "{}", page.next);
        }
        let backend = Embedded::open(data.clone(), EmbeddedConfig::default()).unwrap();
        let opened = backend.open(&chat).unwrap();
        assert_eq!(opened.stream.epoch(), epoch, "the epoch survives a restart");
        assert_eq!(opened.stream.next_offset(), 10);
        drop(opened);
        drop(backend);
        std::fs::remove_dir_all(data.log("chat")).unwrap();
        let backend = Embedded::open(data, EmbeddedConfig::default()).unwrap();
        let opened = backend.open(&chat).unwrap();
        assert_ne!(
            opened.stream.epoch(),
            epoch,
            "a recreated stream has a new epoch"
        );
        assert_eq!(opened.stream.next_offset(), 0);
    }

    #[test]
    fn an_empty_log_keeps_its_epoch_and_a_wiped_one_gets_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let open = || {
            let backend = Embedded::open(data.clone(), EmbeddedConfig::default()).unwrap();
            backend.open(&spec("trades")).unwrap().stream.epoch()
        };
        let first = open();
        assert_eq!(
            open(),
            first,
            "an empty log opened again is the same stream"
        );
        // Segments deleted by hand, EPOCH left behind: offsets restart, so the epoch must change.
        for entry in std::fs::read_dir(data.log("trades")).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n != "EPOCH") {
                std::fs::remove_file(path).unwrap();
            }
        }
        assert_ne!(open(), first, "a wiped log is a new stream");
    }

    /// A record lost to corruption (a placeholder after recovery) is passed over by reads,
    /// channel pages and tails, counted as lost, and reported in the recovery stats.
    #[test]
    fn records_lost_to_corruption_are_passed_over_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let ch = Channel::parse("chat.x").unwrap();
        {
            let backend = Embedded::open(data.clone(), EmbeddedConfig::default()).unwrap();
            let opened = backend.open(&spec("chat")).unwrap();
            let crate::Writer::Sole(mut appender) = opened.writer else {
                panic!("the embedded log is its stream's sole writer");
            };
            let items: Vec<AppendItem<'_>> = (0..10)
                .map(|_| AppendItem {
                    channel: &ch,
                    msg_id: None,
                    data: b"{}",
                })
                .collect();
            appender.append(&items, 1).unwrap();
            appender.sync().unwrap();
        }
        // Flip a byte in the value of the record at offset 4 (records here are all one size).
        let seg = data.log("chat").join("00000000000000000000.log");
        let mut bytes = std::fs::read(&seg).unwrap();
        let rec_len = (bytes.len() - 16) / 10;
        bytes[16 + 4 * rec_len + rec_len - 1] ^= 1;
        std::fs::write(&seg, &bytes).unwrap();

        let backend = Embedded::open(data, EmbeddedConfig::default()).unwrap();
        let (stream, _appender) = backend.open_namespace(&spec("chat")).unwrap();
        let stats = stream.recovery_stats();
        assert_eq!(stats.quarantined_records, 1);
        assert_eq!(stats.quarantined_bytes, rec_len as u64);
        assert_eq!(stats.truncated_bytes, 0);
        let batch = stream.read(0, 100, 1 << 20).unwrap();
        let offsets: Vec<u64> = batch.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);
        assert_eq!((batch.lost, batch.skipped, batch.next), (1, 0, 10));
        // A read of just the lost offset returns nothing but moves on past it.
        let batch = stream.read(4, 1, 1 << 20).unwrap();
        assert!(batch.publications.is_empty());
        assert_eq!((batch.lost, batch.next), (1, 5));
        let page = stream.read_channel(&ch, 0, 10, 100, 1000).unwrap();
        assert_eq!(page.publications.len(), 9);
        let stream: Arc<dyn Stream> = stream;
        let mut tail = stream.tail(4);
        let got: Vec<u64> = tail.poll().unwrap().iter().map(|p| p.offset).collect();
        assert_eq!(got, vec![5, 6, 7, 8, 9]);
        assert!(tail.caught_up());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tail_goes_live_without_gap() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Embedded::open(DataDir::new(dir.path()), EmbeddedConfig::default()).unwrap();
        let (stream, mut appender) = backend.open_namespace(&spec("chat")).unwrap();
        let stream: Arc<dyn Stream> = stream;
        let ch = Channel::parse("chat.x").unwrap();
        let item = AppendItem {
            channel: &ch,
            msg_id: None,
            data: b"1",
        };
        appender.append(&[item, item], 1).unwrap();
        let mut tail = stream.clone().tail(0);
        let writer = std::thread::spawn(move || {
            let ch = Channel::parse("chat.x").unwrap();
            let item = AppendItem {
                channel: &ch,
                msg_id: None,
                data: b"1",
            };
            for _ in 0..50 {
                appender.append(&[item], 1).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let mut seen = Vec::new();
        while seen.len() < 52 {
            for p in tail.next().await.unwrap() {
                seen.push(p.offset);
            }
        }
        writer.join().unwrap();
        assert_eq!(seen, (0..52).collect::<Vec<u64>>());
    }
}
