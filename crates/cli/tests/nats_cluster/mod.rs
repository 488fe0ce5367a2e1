//! A NATS cluster with JetStream on loopback for the cluster-mode tests: three `nats-server`
//! processes (the binary from `TICKWIRE_NATS_SERVER`, which scripts/test-cluster.sh installs),
//! their configuration and JetStream stores in a temporary directory, routes between them.
//! Every process is killed when the value is dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::common::{free_ports, Server};

pub struct NatsServer {
    pub name: String,
    pub port: u16,
    pub monitor: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
    bin: PathBuf,
    pub dir: tempfile::TempDir,
}

/// The nats-server binary the suite runs against.
pub fn nats_bin() -> PathBuf {
    std::env::var_os("TICKWIRE_NATS_SERVER")
        .map(PathBuf::from)
        .expect("TICKWIRE_NATS_SERVER is not set: run scripts/test-cluster.sh, which installs nats-server and sets it")
}

impl NatsCluster {
    /// Starts `n` servers routed to each other and waits until JetStream is up on all.
    pub fn start(n: usize) -> NatsCluster {
        let bin = nats_bin();
        let dir = tempfile::tempdir().unwrap();
        // Ports picked beforehand (racy, see common::free_ports), not nats-server's own `-1`: every
        // server's route list names the others' cluster ports before any of them starts, and
        // a restarted server ([`NatsCluster::restart`]) must come back on the ports the nodes
        // and the other servers know.
        let ports: Vec<(u16, u16, u16)> = free_ports(3 * n)
            .chunks(3)
            .map(|p| (p[0], p[1], p[2]))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c, _)| format!("nats-route://127.0.0.1:{c}"))
            .collect();
        let mut servers = Vec::new();
        for (i, (port, cport, mport)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(format!("js-{name}"));
            let conf = dir.path().join(format!("{name}.conf"));
            // Stream reservations count against max_file_store, not the disk: generous, so
            // the default namespaces' 8 GiB retention limits fit three times over.
            let cluster = if n > 1 {
                format!(
                    "cluster {{ name: tw-test, listen: 127.0.0.1:{cport}, routes: [{}] }}",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{mport}\n\
                     jetstream {{ store_dir: \"{}\", max_memory_store: 1GB, max_file_store: 200GB }}\n{cluster}\n",
                    store.display()
                ),
            )
            .unwrap();
            servers.push(NatsServer {
                name: name.clone(),
                port: *port,
                monitor: *mport,
                conf,
                log: dir.path().join(format!("{name}.log")),
                child: None,
            });
        }
        let mut c = NatsCluster { servers, bin, dir };
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    fn spawn(&mut self, i: usize) {
        let s = &mut self.servers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&s.conf)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn nats-server");
        s.child = Some(child);
    }

    /// Client URLs of every server.
    pub fn urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.port))
            .collect()
    }

    /// `[cluster]` for a Tickwire node on this NATS cluster.
    pub fn tickwire_toml(&self, node: &str, replicas: usize, extra: &str) -> String {
        let urls: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            "[cluster]\nnats = [{}]\nnode = \"{node}\"\nreplicas = {replicas}\nack_timeout_ms = 3000\n{extra}\n",
            urls.join(", ")
        )
    }

    /// SIGKILL of server `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM of server `i` (a clean stop: JetStream flushes its stores), waiting for it.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            for _ in 0..200 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts server `i` again on its configuration and store.
    pub fn restart(&mut self, i: usize) {
        self.kill9(i);
        self.spawn(i);
    }

    /// Starts server `i` if it is not running.
    pub fn start_again(&mut self, i: usize) {
        if self.servers[i].child.is_none() {
            self.spawn(i);
        }
    }

    /// Waits until every running server reports JetStream healthy.
    pub fn wait_healthy(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        for s in self.servers.iter().filter(|s| s.child.is_some()) {
            loop {
                if http_status(s.monitor, "/healthz") == Some(200) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "nats-server {} not healthy; log:\n{}",
                    s.name,
                    std::fs::read_to_string(&s.log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The index of the server leading stream `stream`'s replicas, if one is known.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let st = self.stream_detail(stream)?;
        let l = st["cluster"]["leader"].as_str()?;
        self.servers.iter().position(|x| x.name == l)
    }

    /// How many messages stream `stream` holds, as a running server reports it.
    pub fn stream_messages(&self, stream: &str) -> Option<u64> {
        self.stream_detail(stream)?["state"]["messages"].as_u64()
    }

    /// Stream `stream`'s entry in the first running server's `/jsz` that lists it.
    fn stream_detail(&self, stream: &str) -> Option<Value> {
        for s in self.servers.iter().filter(|s| s.child.is_some()) {
            let Some(body) = http_get(s.monitor, "/jsz?streams=true") else {
                continue;
            };
            let json = body.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            let Ok(v) = serde_json::from_str::<Value>(json) else {
                continue;
            };
            for acc in v["account_details"].as_array().into_iter().flatten() {
                for st in acc["stream_detail"].as_array().into_iter().flatten() {
                    if st["name"] == stream {
                        return Some(st.clone());
                    }
                }
            }
        }
        None
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill9(i);
        }
    }
}

/// A plain HTTP/1.0 GET on loopback (the monitoring port), without a client library.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let r = http_get(port, path)?;
    r.split_whitespace().nth(1)?.parse().ok()
}

/// Starts `n` Tickwire nodes named a, b, c… on the cluster, streams and buckets at
/// `replicas`, each with its data directory under `work`.
pub fn nodes(nats: &NatsCluster, work: &std::path::Path, n: usize, replicas: usize) -> Vec<Server> {
    (0..n)
        .map(|i| {
            let name = ((b'a' + i as u8) as char).to_string();
            start_node(
                &work.join(&name),
                &nats.tickwire_toml(&name, replicas, ""),
                &[],
            )
        })
        .collect()
}

/// Starts a Tickwire node on the cluster (its own data directory in `dir`).
pub fn start_node(dir: &std::path::Path, toml: &str, env: &[(&str, &str)]) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("tickwire.toml");
    std::fs::write(&cfg, toml).unwrap();
    Server::start(
        &dir.join("data"),
        &["--config", cfg.to_str().unwrap(), "--fsync", "never"],
        env,
    )
}
