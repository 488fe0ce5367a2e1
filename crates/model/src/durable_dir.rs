//! Creating directories so they survive power loss.
//!
//! `create_dir_all` makes new directory entries in their parents, but an entry is only on disk
//! once its parent directory has been fsynced: without that, a file written and fsynced inside
//! a freshly created directory can vanish with the directory after a power cut. Stores that
//! promise durability (persistent MQTT sessions, FIX sequence numbers) create their directories
//! through here.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

/// Creates `dir` and any missing ancestors, then fsyncs the parent of each directory it created
/// (deepest first), so every new entry is durable. Does nothing when `dir` exists.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // The directories about to be created, deepest first.
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    for d in &missing {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_nested_directories_and_is_idempotent() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a").join("b").join("c");
        create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_durable(&deep).unwrap();
        // A file in the way is an error, not a silent success.
        let file = root.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(create_dir_durable(&file.join("sub")).is_err());
    }
}
