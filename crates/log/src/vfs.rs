//! The file operations the log uses, behind one seam, so the power-loss simulation
//! (`crate::sim`, tests only) runs the real append, sync, roll, retention and recovery code over
//! a disk that forgets what was not fsynced. [`StdFs`] is the real one: every method is the
//! same `std::fs` call the log made before, behind one indirect call (against a syscall, noise:
//! `cargo bench -p tickwire-log`, before/after in the commit that added this).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Directory and file-creation operations.
pub(crate) trait Vfs: Send + Sync + fmt::Debug {
    /// `mkdir -p`.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Whether `path` is an existing directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Names of the entries of `dir` (names that are not UTF-8 are left out: the log never
    /// writes one).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn VFile>>;
    /// Creates a file, or truncates an existing one, for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn VFile>>;
    /// Creates a file that must not exist yet (`ErrorKind::AlreadyExists` otherwise).
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VFile>>;
    /// A whole file's contents.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Unlinks a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// fsync of a directory: entries created, removed or renamed in it survive power loss.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// One open file; positional I/O only, so one handle serves the writer and every reader.
pub(crate) trait VFile: Send + Sync + fmt::Debug {
    /// `pread`: bytes read into `buf` from `pos`, 0 at end of file.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// `pwrite` of all of `buf` at `pos`.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// `ftruncate`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`.
    fn sync_all(&self) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StdFs;

impl StdFs {
    /// The shared handle the log keeps.
    pub fn shared() -> Arc<dyn Vfs> {
        Arc::new(StdFs)
    }
}

impl Vfs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn VFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(f))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn VFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(f))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(f))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl VFile for File {
    #[inline]
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, pos)
    }

    #[inline]
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, pos)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }
}
