//! `tickwire backup`: asks a running server for a consistent copy of its data directory
//! (`POST /v1/admin/backup`, crates/server/src/backup.rs), unpacks it into a new directory,
//! checks it against the manifest and fsyncs it. The directory is a data directory: restore by
//! starting a server on it (docs/deploy.md).

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Args;
use serde::Deserialize;
use tickwire_gateway::Scope;

use crate::client::ClientArgs;

/// Arguments of `tickwire backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The directory to create (it must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    namespaces: BTreeMap<String, Option<NamespaceCopy>>,
    files: Vec<FileEntry>,
}

#[derive(Debug, Deserialize)]
struct NamespaceCopy {
    epoch: String,
    start_offset: u64,
    next_offset: u64,
}

#[derive(Debug, Deserialize)]
struct FileEntry {
    path: String,
    len: u64,
}

/// Runs `tickwire backup`.
pub fn run(a: BackupArgs) -> ExitCode {
    match backup(&a) {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickwire backup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn backup(a: &BackupArgs) -> Result<String, String> {
    let target = a.client.resolve(Scope::Admin)?;
    match std::fs::read_dir(&a.out) {
        Ok(mut d) => {
            if d.next().is_some() {
                return Err(format!("{} exists and is not empty", a.out.display()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&a.out)
                .map_err(|e| format!("creating {}: {e}", a.out.display()))?;
        }
        Err(e) => return Err(format!("{}: {e}", a.out.display())),
    }
    let mut client = reqwest::blocking::Client::builder()
        // A big data directory takes as long as it takes; only a stall is an error.
        .timeout(None::<Duration>)
        .connect_timeout(Duration::from_secs(10));
    if let Some(tls) = &target.tls {
        client = client.use_preconfigured_tls((**tls).clone());
    }
    let mut req = client
        .build()
        .map_err(|e| e.to_string())?
        .post(format!("{}/v1/admin/backup", target.base));
    if let Some(t) = &target.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().map_err(|e| format!("{}: {e}", target.base))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().unwrap_or_default();
        return Err(format!("{status}: {}", body.trim()));
    }
    // `unpack` refuses entries that would land outside the directory.
    tar::Archive::new(resp)
        .unpack(&a.out)
        .map_err(|e| format!("the archive was cut or unreadable: {e}"))?;
    let manifest_path = a.out.join("BACKUP.json");
    let text = std::fs::read(&manifest_path).map_err(|_| {
        "the archive has no BACKUP.json: it is incomplete (the server log says why)".to_string()
    })?;
    let m: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("BACKUP.json is unreadable: {e}"))?;
    let mut bytes = 0u64;
    for f in &m.files {
        let p = a.out.join(&f.path);
        let len = std::fs::metadata(&p)
            .map_err(|e| format!("{} is missing: {e}", f.path))?
            .len();
        if len != f.len {
            return Err(format!(
                "{} has {len} bytes, the manifest says {}",
                f.path, f.len
            ));
        }
        bytes += len;
    }
    sync_tree(&a.out).map_err(|e| format!("fsync of {}: {e}", a.out.display()))?;
    let mut out = format!(
        "backup of {} in {}: {} files, {} bytes\n",
        target.base,
        a.out.display(),
        m.files.len(),
        bytes
    );
    for (ns, c) in &m.namespaces {
        match c {
            Some(c) => out.push_str(&format!(
                "  {ns:<10} epoch {} offsets {}..{}\n",
                c.epoch, c.start_offset, c.next_offset
            )),
            None => out.push_str(&format!(
                "  {ns:<10} kept by the cluster (not in this copy)\n"
            )),
        }
    }
    out.push_str(&format!(
        "restore: stop the server, then start it with --data {}\n",
        a.out.display()
    ));
    Ok(out)
}

/// fsyncs every file and directory under `dir`, so the copy survives a power loss.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}
