//! `POST /v1/admin/backup`: a consistent copy of the running server's data directory,
//! streamed as a tar archive (`tickwire backup` unpacks and checks it; docs/deploy.md).
//!
//! Consistent means: opened as a data directory, the copy is what this server would have
//! had if it had stopped at one moment — every record below each namespace's `next_offset`,
//! projections' state from no later than that. The order makes it so:
//!
//! 1. the candle store, copied in one read transaction into a fresh file (its positions are
//!    then at most the logs' ends below, because projections only read durable records);
//! 2. every other file of the directory (MQTT sessions, FIX sequence numbers, the book's
//!    state, import markers): each is replaced atomically by its writer, so a file opened is
//!    one whole version, and positions in them are behind the logs as in 1;
//! 3. each namespace's stream last, through the stream seam ([`Stream::backup`]): sealed
//!    segments whole, the active one to the end of its last complete record.
//!
//! A restored server replays projections from their copied checkpoints to the copied logs'
//! ends, as after any restart. The archive ends with `BACKUP.json` (the manifest: every file
//! and its length, each namespace's epoch and offsets): an archive without it is incomplete.

use std::{
    collections::BTreeMap,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use axum::{
    body::{Body, Bytes},
    extract::{RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use serde::Serialize;
use tickwire_gateway::{Credentials, ErrorCode, Gateway};
use tickwire_model::DataDir;
use tickwire_proj_candles::CandleService;
use tickwire_stream::BackupFile;

/// The manifest's name, the archive's last entry.
pub const MANIFEST: &str = "BACKUP.json";
/// Where the candle store's copy is made before it is streamed (inside the data directory:
/// the same disk, and writable where the root file system is not).
const SCRATCH: &str = "backup-tmp";

/// What the backup route needs.
pub struct BackupService {
    gateway: Arc<Gateway>,
    data: DataDir,
    candles: Option<Arc<CandleService>>,
    running: AtomicBool,
}

impl BackupService {
    pub fn new(
        gateway: Arc<Gateway>,
        data: DataDir,
        candles: Option<Arc<CandleService>>,
    ) -> Arc<BackupService> {
        Arc::new(BackupService {
            gateway,
            data,
            candles,
            running: AtomicBool::new(false),
        })
    }
}

/// The manifest: what the archive holds.
#[derive(Debug, Serialize)]
struct Manifest {
    format: u32,
    tickwire: &'static str,
    created_ms: u64,
    /// Per namespace: the copied stream's epoch and offsets (`null` for a stream kept
    /// elsewhere, a cluster's JetStream).
    namespaces: BTreeMap<String, Option<NamespaceCopy>>,
    /// Where the copied candle projection resumes, per source namespace.
    candle_positions: BTreeMap<String, u64>,
    /// Every other entry of the archive and its length.
    files: Vec<FileEntry>,
}

#[derive(Debug, Serialize)]
struct NamespaceCopy {
    epoch: String,
    start_offset: u64,
    next_offset: u64,
}

#[derive(Debug, Serialize)]
struct FileEntry {
    path: String,
    len: u64,
}

/// The route, merged into the server's router.
pub fn routes(svc: Arc<BackupService>) -> Router {
    Router::new()
        .route("/v1/admin/backup", post(backup))
        .with_state(svc)
}

/// Clears the one-backup-at-a-time flag however the backup ends.
struct Running(Arc<BackupService>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

async fn backup(
    State(svc): State<Arc<BackupService>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = tickwire_edge_http::parse_query(q.as_deref());
    let admin = svc
        .gateway
        .authenticate(&Credentials::new(tickwire_edge_http::credential(
            &params, &headers,
        )))
        .and_then(|p| svc.gateway.require_admin(&p));
    if let Err(r) = admin {
        return tickwire_edge_http::Problem::from(r).into_response();
    }
    if svc.running.swap(true, Ordering::AcqRel) {
        return tickwire_edge_http::Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "a backup is already running; try again when it ends",
        )
        .into_response();
    }
    let running = Running(svc.clone());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let _running = running;
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        match write_backup(&svc, out) {
            Ok(m) => tracing::info!(
                files = m.files.len(),
                bytes = m.files.iter().map(|f| f.len).sum::<u64>(),
                "backup streamed"
            ),
            Err(e) => {
                tracing::error!(error = %e, "backup failed");
                // The body ends with an error, so the client never takes a cut archive for a
                // whole one (it also lacks the manifest).
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-tar"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tickwire-backup.tar\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Bytes per body chunk.
const CHUNK: usize = 256 * 1024;

/// A `Write` that hands chunks to the response body; fails once the client has gone.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A stream file as a `Read` (the tar builder copies from it).
struct FileReader<'a> {
    file: &'a BackupFile,
    pos: u64,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn header(len: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(len);
    h.set_mode(0o640);
    h.set_mtime(tickwire_model::clock::now_nanos() / 1_000_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn write_backup(svc: &BackupService, out: ChannelWriter) -> io::Result<Manifest> {
    let mut tar = tar::Builder::new(out);
    let mut manifest = Manifest {
        format: 1,
        tickwire: env!("CARGO_PKG_VERSION"),
        created_ms: tickwire_model::clock::now_nanos() / 1_000_000,
        namespaces: BTreeMap::new(),
        candle_positions: BTreeMap::new(),
        files: Vec::new(),
    };
    let root = svc.data.root().to_path_buf();
    let scratch = root.join(SCRATCH);
    match std::fs::remove_dir_all(&scratch) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // 1. The candle store, as of one read transaction.
    let store_path = svc.data.candle_store();
    if let Some(c) = &svc.candles {
        std::fs::create_dir_all(&scratch)?;
        let copy = scratch.join("candles.redb");
        manifest.candle_positions = c
            .store
            .backup_to(&copy)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let rel = relative(&root, &store_path)?;
        let mut f = std::fs::File::open(&copy)?;
        let len = f.metadata()?.len();
        tar.append_data(&mut header(len), &rel, &mut f)?;
        manifest.files.push(FileEntry { path: rel, len });
        drop(f);
        std::fs::remove_dir_all(&scratch)?;
    }
    // 2. Every other file but the logs, the lock and what the store copy replaced.
    let skip: Vec<PathBuf> = vec![
        svc.data.lock_file(),
        svc.data.logs(),
        store_path.clone(),
        scratch.clone(),
    ];
    let mut files = Vec::new();
    walk(&root, &skip, &mut files)?;
    files.sort();
    for path in files {
        let rel = relative(&root, &path)?;
        // A file removed since it was listed (an expired MQTT session) is simply not copied.
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        tar.append_data(&mut header(len), &rel, &mut (&mut f).take(len))?;
        manifest.files.push(FileEntry { path: rel, len });
    }
    // 3. The streams, last.
    let hub = svc.gateway.hub();
    for ns in hub.namespaces() {
        let stream = hub
            .stream(&ns.name)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let copy = stream
            .backup()
            .map_err(|e| io::Error::other(e.to_string()))?;
        let Some(copy) = copy else {
            manifest.namespaces.insert(ns.name.clone(), None);
            continue;
        };
        let dir = relative(&root, &svc.data.log(&ns.name))?;
        for f in &copy.files {
            let rel = format!("{dir}/{}", f.name);
            tar.append_data(
                &mut header(f.len),
                &rel,
                &mut FileReader { file: f, pos: 0 },
            )?;
            manifest.files.push(FileEntry {
                path: rel,
                len: f.len,
            });
        }
        manifest.namespaces.insert(
            ns.name.clone(),
            Some(NamespaceCopy {
                epoch: copy.epoch.to_string(),
                start_offset: copy.start_offset,
                next_offset: copy.next_offset,
            }),
        );
    }
    let text = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
    tar.append_data(&mut header(text.len() as u64), MANIFEST, text.as_slice())?;
    let mut out = tar.into_inner()?;
    out.flush()?;
    Ok(manifest)
}

/// Files under `dir`, not under any of `skip`, leaving out temporary files (`*.tmp`: a
/// writer's half-made replacement).
fn walk(dir: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if skip.iter().any(|s| s == &path) {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, skip, out)?;
        } else if kind.is_file() && path.extension().is_none_or(|e| e != "tmp") {
            out.push(path);
        }
    }
    Ok(())
}

/// `path` relative to the data directory, `/`-separated.
fn relative(root: &Path, path: &Path) -> io::Result<String> {
    let rel = path.strip_prefix(root).map_err(|_| {
        io::Error::other(format!(
            "{} is not under the data directory",
            path.display()
        ))
    })?;
    Ok(rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/"))
}
