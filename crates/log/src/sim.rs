//! A simulated disk for the power-loss tests (`crate::power_loss`), in the style of
//! FoundationDB's and TigerBeetle's deterministic simulation: everything the log does to files
//! goes through [`SimFs`], which keeps, per file, what reads see (the page cache) apart from
//! what would survive a power failure, and, per directory, the entries a directory fsync made
//! durable apart from the live ones.
//!
//! - A write or truncation is volatile until an fsync of that file completes; then every
//!   operation on the file before it is durable. A failed fsync (injected) drops the writes it
//!   should have flushed, as Linux does: reads still see them, the disk never will.
//! - Creating, removing a file or a directory is volatile until the directory is fsynced.
//! - [`SimFs::fail_after`] cuts the power after a number of mutating operations: that one and
//!   every later operation fail, wherever the log was (in an append, a roll, retention, the
//!   middle of recovery).
//! - [`SimFs::crash`] is the disk after the power came back, chosen by a seeded generator: each
//!   file keeps its durable contents plus some of what was not fsynced — nothing, everything,
//!   an in-order prefix with the last write torn at a random byte, or a random subset of pages
//!   with the file size from some prefix of the operations (past a persisted size and not
//!   written: zeroes). Each directory keeps its durable entries plus an in-order prefix of the
//!   later changes (journaled metadata commits in order). Same seed, same disk.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::vfs::{VFile, Vfs};

/// What a page cache writes back at once; unsynced writes persist or not page by page.
const PAGE: u64 = 4096;

/// splitmix64: tiny, fast, and a run is replayed from its seed alone.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write { pos: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl Op {
    /// The file length after this operation, from `len` before it.
    fn len_after(&self, len: u64) -> u64 {
        match self {
            Op::Write { pos, bytes } => len.max(pos + bytes.len() as u64),
            Op::SetLen(n) => *n,
        }
    }
}

#[derive(Debug, Default)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a power failure for sure.
    durable: Vec<u8>,
    /// Operations since the last fsync (completed or failed), oldest first.
    pending: Vec<Op>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, Node),
    Unlink(String),
}

#[derive(Debug, Default)]
struct Dir {
    entries: BTreeMap<String, Node>,
    durable: BTreeMap<String, Node>,
    pending: Vec<DirOp>,
}

#[derive(Debug, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    /// Every directory by path; one whose parent is not here is a root and always survives.
    dirs: BTreeMap<PathBuf, Dir>,
    next_ino: u64,
    /// Mutating operations left before the power fails.
    budget: Option<u64>,
    /// The power failed: every operation fails.
    dead: bool,
    /// Fail the next file fsync with EIO.
    fail_next_sync: bool,
}

fn power_failure() -> io::Error {
    io::Error::other("simulated power failure")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl State {
    fn alive(&self) -> io::Result<()> {
        if self.dead {
            Err(power_failure())
        } else {
            Ok(())
        }
    }

    /// Counts one mutating operation against the budget; the one that exhausts it fails.
    fn mutate(&mut self) -> io::Result<()> {
        self.alive()?;
        if let Some(left) = self.budget {
            if left == 0 {
                self.dead = true;
                return Err(power_failure());
            }
            self.budget = Some(left - 1);
        }
        Ok(())
    }

    fn split(path: &Path) -> io::Result<(PathBuf, String)> {
        let parent = path.parent().ok_or_else(|| not_found(path))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| not_found(path))?;
        Ok((parent.to_path_buf(), name.to_string()))
    }

    fn lookup(&self, path: &Path) -> io::Result<Node> {
        let (parent, name) = State::split(path)?;
        self.dirs
            .get(&parent)
            .and_then(|d| d.entries.get(&name))
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn link(&mut self, path: &Path, node: Node) -> io::Result<()> {
        let (parent, name) = State::split(path)?;
        let dir = self
            .dirs
            .get_mut(&parent)
            .ok_or_else(|| not_found(&parent))?;
        dir.entries.insert(name.clone(), node);
        dir.pending.push(DirOp::Link(name, node));
        Ok(())
    }

    fn new_file(&mut self, path: &Path) -> io::Result<u64> {
        self.next_ino += 1;
        let ino = self.next_ino;
        self.inodes.insert(ino, Inode::default());
        self.link(path, Node::File(ino))?;
        Ok(ino)
    }

    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::other("stale simulated inode"))
    }
}

/// The simulated file system; clones share one disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct SimFs {
    state: Arc<Mutex<State>>,
}

impl SimFs {
    /// A disk with `roots` as existing, durable directories.
    pub fn new(roots: &[&Path]) -> SimFs {
        let fs = SimFs::default();
        {
            let mut st = fs.lock();
            for r in roots {
                st.dirs.insert(r.to_path_buf(), Dir::default());
            }
        }
        fs
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handle the log takes.
    pub fn shared(&self) -> Arc<dyn Vfs> {
        Arc::new(self.clone())
    }

    /// Cuts the power at the `ops`-th mutating operation from now.
    pub fn fail_after(&self, ops: u64) {
        self.lock().budget = Some(ops);
    }

    /// Whether the power has failed.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Makes the next file fsync fail with EIO (and drop the writes it covered).
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// The disk after a power failure now (see the module docs); a new, live file system.
    pub fn crash(&self, rng: &mut Rng) -> SimFs {
        let st = self.lock();
        // Directory entries: durable ones plus an in-order prefix of later changes.
        let mut entries: BTreeMap<PathBuf, BTreeMap<String, Node>> = BTreeMap::new();
        for (path, dir) in &st.dirs {
            let mut e = dir.durable.clone();
            let keep = rng.below(dir.pending.len() as u64 + 1) as usize;
            for op in &dir.pending[..keep] {
                match op {
                    DirOp::Link(name, node) => {
                        e.insert(name.clone(), *node);
                    }
                    DirOp::Unlink(name) => {
                        e.remove(name);
                    }
                }
            }
            entries.insert(path.clone(), e);
        }
        // Directories survive if reachable from a root through surviving entries; files too.
        let mut new = State {
            next_ino: st.next_ino,
            ..State::default()
        };
        let roots: Vec<PathBuf> = st
            .dirs
            .keys()
            .filter(|p| {
                p.parent()
                    .is_none_or(|parent| !st.dirs.contains_key(parent))
            })
            .cloned()
            .collect();
        let mut stack = roots;
        while let Some(path) = stack.pop() {
            let e = entries.remove(&path).unwrap_or_default();
            for (name, node) in &e {
                match node {
                    Node::Dir => stack.push(path.join(name)),
                    Node::File(ino) => {
                        if let Some(inode) = st.inodes.get(ino) {
                            let data = after_power_failure(inode, rng);
                            new.inodes.insert(
                                *ino,
                                Inode {
                                    durable: data.clone(),
                                    data,
                                    pending: Vec::new(),
                                },
                            );
                        }
                    }
                }
            }
            new.dirs.insert(
                path,
                Dir {
                    durable: e.clone(),
                    entries: e,
                    pending: Vec::new(),
                },
            );
        }
        SimFs {
            state: Arc::new(Mutex::new(new)),
        }
    }
}

/// One file's contents after a power failure: its durable bytes plus a seeded choice of the
/// operations since its last fsync.
fn after_power_failure(inode: &Inode, rng: &mut Rng) -> Vec<u8> {
    let ops = &inode.pending;
    let n = ops.len();
    let mut lens = Vec::with_capacity(n + 1);
    lens.push(inode.durable.len() as u64);
    for op in ops {
        let last = lens.last().copied().unwrap_or(0);
        lens.push(op.len_after(last));
    }
    // Which bytes of each write reach the disk, and how many operations' size changes do.
    let mut pieces: Vec<Vec<(u64, u64)>> = vec![Vec::new(); n];
    let (sized, len) = match rng.below(4) {
        // Nothing after the last fsync.
        0 => (0, lens[0]),
        // Everything (what a process crash leaves, the page cache intact).
        1 => {
            for (i, op) in ops.iter().enumerate() {
                if let Op::Write { bytes, .. } = op {
                    pieces[i].push((0, bytes.len() as u64));
                }
            }
            (n, lens[n])
        }
        // In order up to a point, the write there torn at a random byte.
        2 => {
            let k = rng.below(n as u64 + 1) as usize;
            for (i, op) in ops.iter().enumerate().take(k) {
                if let Op::Write { bytes, .. } = op {
                    pieces[i].push((0, bytes.len() as u64));
                }
            }
            let mut len = lens[k];
            if let Some(Op::Write { pos, bytes }) = ops.get(k) {
                let torn = rng.below(bytes.len() as u64 + 1);
                pieces[k].push((0, torn));
                if torn > 0 {
                    len = len.max(pos + torn);
                }
            }
            (k, len)
        }
        // Any subset of pages, any persisted size.
        _ => {
            for (i, op) in ops.iter().enumerate() {
                if let Op::Write { pos, bytes } = op {
                    let end = pos + bytes.len() as u64;
                    let mut at = *pos;
                    while at < end {
                        let page_end = ((at / PAGE) + 1) * PAGE;
                        let to = page_end.min(end);
                        if rng.chance(1, 2) {
                            pieces[i].push((at - pos, to - pos));
                        }
                        at = to;
                    }
                }
            }
            let k = rng.below(n as u64 + 1) as usize;
            (k, lens[k])
        }
    };
    let mut data = inode.durable.clone();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::SetLen(l) => {
                if i < sized {
                    data.resize(*l as usize, 0);
                }
            }
            Op::Write { pos, bytes } => {
                for &(from, to) in &pieces[i] {
                    let at = (pos + from) as usize;
                    let end = (pos + to) as usize;
                    if data.len() < end {
                        data.resize(end, 0);
                    }
                    data[at..end].copy_from_slice(&bytes[from as usize..to as usize]);
                }
            }
        }
    }
    // A size that persisted without its data reads as zeroes.
    data.resize(len as usize, 0);
    data
}

impl Vfs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.alive()?;
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(p) = at {
            if st.dirs.contains_key(p) {
                break;
            }
            missing.push(p.to_path_buf());
            at = p.parent();
        }
        for p in missing.into_iter().rev() {
            st.mutate()?;
            if p.parent()
                .is_some_and(|parent| st.dirs.contains_key(parent))
            {
                st.link(&p, Node::Dir)?;
            }
            st.dirs.insert(p, Dir::default());
        }
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> bool {
        let st = self.lock();
        !st.dead && st.dirs.contains_key(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        st.alive()?;
        let d = st.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        Ok(d.entries.keys().cloned().collect())
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn VFile>> {
        let st = self.lock();
        st.alive()?;
        match st.lookup(path)? {
            Node::File(ino) => Ok(Box::new(SimFile {
                fs: self.clone(),
                ino,
            })),
            Node::Dir => Err(io::Error::other("is a directory")),
        }
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn VFile>> {
        let mut st = self.lock();
        st.mutate()?;
        let ino = match st.lookup(path) {
            Ok(Node::File(ino)) => {
                let inode = st.inode(ino)?;
                inode.data.clear();
                inode.pending.push(Op::SetLen(0));
                ino
            }
            Ok(Node::Dir) => return Err(io::Error::other("is a directory")),
            Err(_) => st.new_file(path)?,
        };
        Ok(Box::new(SimFile {
            fs: self.clone(),
            ino,
        }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VFile>> {
        let mut st = self.lock();
        st.mutate()?;
        if st.lookup(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let ino = st.new_file(path)?;
        Ok(Box::new(SimFile {
            fs: self.clone(),
            ino,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut st = self.lock();
        st.alive()?;
        match st.lookup(path)? {
            Node::File(ino) => Ok(st.inode(ino)?.data.clone()),
            Node::Dir => Err(io::Error::other("is a directory")),
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.mutate()?;
        let (parent, name) = State::split(path)?;
        let dir = st.dirs.get_mut(&parent).ok_or_else(|| not_found(path))?;
        if dir.entries.remove(&name).is_none() {
            return Err(not_found(path));
        }
        dir.pending.push(DirOp::Unlink(name));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.mutate()?;
        let d = st.dirs.get_mut(dir).ok_or_else(|| not_found(dir))?;
        d.durable = d.entries.clone();
        d.pending.clear();
        Ok(())
    }
}

/// An open simulated file.
#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    ino: u64,
}

impl SimFile {
    fn sync(&self) -> io::Result<()> {
        let mut st = self.fs.lock();
        st.mutate()?;
        let fail = std::mem::take(&mut st.fail_next_sync);
        let inode = st.inode(self.ino)?;
        let pending = std::mem::take(&mut inode.pending);
        if fail {
            // Linux marks the pages clean after a failed writeback: the data stays readable
            // and is never written. A later fsync "succeeds" without it.
            return Err(io::Error::other("simulated EIO from fsync"));
        }
        let mut durable = std::mem::take(&mut inode.durable);
        for op in pending {
            match op {
                Op::SetLen(l) => durable.resize(l as usize, 0),
                Op::Write { pos, bytes } => {
                    let end = pos as usize + bytes.len();
                    if durable.len() < end {
                        durable.resize(end, 0);
                    }
                    durable[pos as usize..end].copy_from_slice(&bytes);
                }
            }
        }
        inode.durable = durable;
        Ok(())
    }
}

impl VFile for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let mut st = self.fs.lock();
        st.alive()?;
        let data = &st.inode(self.ino)?.data;
        let Some(avail) = data.get(pos as usize..) else {
            return Ok(0);
        };
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let mut st = self.fs.lock();
        st.mutate()?;
        let inode = st.inode(self.ino)?;
        let end = pos as usize + buf.len();
        if inode.data.len() < end {
            inode.data.resize(end, 0);
        }
        inode.data[pos as usize..end].copy_from_slice(buf);
        inode.pending.push(Op::Write {
            pos,
            bytes: buf.to_vec(),
        });
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.fs.lock();
        st.mutate()?;
        let inode = st.inode(self.ino)?;
        inode.data.resize(len as usize, 0);
        inode.pending.push(Op::SetLen(len));
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        let mut st = self.fs.lock();
        st.alive()?;
        Ok(st.inode(self.ino)?.data.len() as u64)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/d")
    }

    #[test]
    fn only_fsynced_writes_and_entries_are_sure_to_survive() {
        let fs = SimFs::new(&[&dir()]);
        let a = fs.create(&dir().join("a")).unwrap();
        a.write_all_at(b"hello", 0).unwrap();
        a.sync_data().unwrap();
        fs.sync_dir(&dir()).unwrap();
        a.write_all_at(b" world", 5).unwrap();
        let b = fs.create(&dir().join("b")).unwrap();
        b.write_all_at(b"new", 0).unwrap();
        b.sync_data().unwrap(); // data durable, but its directory entry is not
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let after = fs.crash(&mut Rng::new(seed));
            let a = after.read(&dir().join("a")).unwrap();
            assert!(a.starts_with(b"hello"), "{a:?}");
            let b = after.read(&dir().join("b")).ok();
            assert!(b.is_none() || b.as_deref() == Some(&b"new"[..]));
            outcomes.insert((a, b.is_some()));
        }
        // Some crashes keep the unsynced write, some tear it, some lose it; some keep b.
        assert!(outcomes.len() >= 4, "{outcomes:?}");
        assert!(outcomes.contains(&(b"hello".to_vec(), false)));
        assert!(outcomes.contains(&(b"hello world".to_vec(), true)));
    }

    #[test]
    fn the_same_seed_gives_the_same_disk() {
        let fs = SimFs::new(&[&dir()]);
        let f = fs.create(&dir().join("f")).unwrap();
        for i in 0..50u8 {
            f.write_all_at(&[i; 3000], u64::from(i) * 1000).unwrap();
        }
        let a = fs.crash(&mut Rng::new(7)).read(&dir().join("f")).ok();
        let b = fs.crash(&mut Rng::new(7)).read(&dir().join("f")).ok();
        assert_eq!(a, b);
    }

    #[test]
    fn the_power_fails_at_the_budgeted_operation_and_stays_off() {
        let fs = SimFs::new(&[&dir()]);
        let f = fs.create(&dir().join("f")).unwrap();
        fs.fail_after(2);
        f.write_all_at(b"1", 0).unwrap();
        f.write_all_at(b"2", 1).unwrap();
        assert!(f.write_all_at(b"3", 2).is_err());
        assert!(fs.is_dead());
        assert!(f.sync_data().is_err());
        assert!(f.read_at(&mut [0; 4], 0).is_err());
    }

    #[test]
    fn a_failed_fsync_drops_what_it_covered() {
        let fs = SimFs::new(&[&dir()]);
        let f = fs.create(&dir().join("f")).unwrap();
        fs.sync_dir(&dir()).unwrap();
        f.write_all_at(b"lost", 0).unwrap();
        fs.fail_next_sync();
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap(); // "succeeds" without the dropped pages
        let mut buf = [0u8; 4];
        assert_eq!(
            f.read_at(&mut buf, 0).unwrap(),
            4,
            "still readable from the cache"
        );
        for seed in 0..20 {
            let after = fs.crash(&mut Rng::new(seed));
            assert!(after.read(&dir().join("f")).unwrap().is_empty());
        }
    }

    #[test]
    fn a_new_directory_needs_its_parent_fsynced() {
        let fs = SimFs::new(&[&dir()]);
        fs.create_dir_all(&dir().join("sub")).unwrap();
        let f = fs.create(&dir().join("sub").join("f")).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&dir().join("sub")).unwrap();
        let lost = (0..50).any(|s| fs.crash(&mut Rng::new(s)).list(&dir().join("sub")).is_err());
        assert!(lost, "without an fsync of /d, sub may vanish");
        fs.sync_dir(&dir()).unwrap();
        for s in 0..50 {
            let after = fs.crash(&mut Rng::new(s));
            assert_eq!(after.read(&dir().join("sub").join("f")).unwrap(), b"x");
        }
    }
}
