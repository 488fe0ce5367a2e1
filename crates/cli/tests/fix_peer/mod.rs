//! The QuickFIX counterparty (tests/interop/fix/peer.py) driven from a test: commands on its
//! stdin, JSON events from its stdout. Shared by the FIX interop and the cluster suites.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// The QuickFIX peer process: commands on stdin, JSON events on stdout.
pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<Value>,
    /// Every event seen so far, for assertions over the whole run.
    pub seen: Vec<Value>,
    /// The port the peer listens on or connects to (its "ready" event says; a provider
    /// started with `--port 0` picked it, race-free, itself).
    pub port: u16,
}

impl Peer {
    pub fn start(args: &[&str]) -> Peer {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/interop/fix/peer.py"
        );
        let mut child = Command::new(std::env::var("PYTHON").unwrap_or("python3".into()))
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python peer");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let mut p = Peer {
            child,
            stdin,
            rx,
            seen: Vec::new(),
            port: 0,
        };
        let r = p.wait(|e| e["ev"] == "ready");
        eprintln!("quickfix peer ready: {r}");
        p.port = r["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("the peer's port in its ready event");
        p
    }

    pub fn cmd(&mut self, c: &str) {
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
        let first = c.split_whitespace().next().unwrap().to_string();
        self.wait(|e| {
            (e["ev"] == "ok" || e["ev"] == "error")
                && (e["cmd"] == first.as_str() || e["where"] == first.as_str())
        });
        let last = self.seen.last().unwrap().clone();
        assert_eq!(last["ev"], "ok", "peer command {c:?} failed: {last}");
    }

    /// Waits for the next event matching `f` (events before it are kept in `seen`).
    pub fn wait(&mut self, f: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(WAIT, f)
            .unwrap_or_else(|| panic!("timed out; peer events so far: {:#?}", self.seen))
    }

    pub fn wait_for(&mut self, d: Duration, f: impl Fn(&Value) -> bool) -> Option<Value> {
        let end = Instant::now() + d;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["ev"] == "error" {
                        panic!("peer error: {v}");
                    }
                    if f(&v) {
                        return Some(v);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    pub fn count(&self, f: impl Fn(&Value) -> bool) -> usize {
        self.seen.iter().filter(|v| f(v)).count()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
