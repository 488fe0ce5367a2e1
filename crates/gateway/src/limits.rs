//! Rate limits: token buckets per connection and per principal for publishes (messages and
//! bytes per second, with per-namespace overrides) and for commands (subscribe, unsubscribe,
//! history), and a cap on connections per client IP.
//!
//! The server API — an API key with the `publish` scope, and everyone in development mode —
//! is not limited: feed handlers publish hundreds of thousands of quotes a second. Limits are
//! for clients.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tickwire_wire::ErrorCode;

use crate::Refusal;

/// A rate: a sustained number per second and the burst a bucket holds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_sec: u64,
    pub burst: u64,
}

impl Rate {
    const fn new(per_sec: u64, burst: u64) -> Rate {
        Rate { per_sec, burst }
    }
}

/// Publish limits of one scope (a connection, or a principal across its connections).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublishLimits {
    pub messages: Rate,
    pub bytes: Rate,
}

/// Per-namespace publish limits (`[limits.namespaces.<ns>]`), replacing the defaults there.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceLimits {
    pub connection: PublishLimits,
    pub principal: PublishLimits,
}

/// The `[limits]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Publishes of one connection.
    pub connection: PublishLimits,
    /// Publishes of one principal (a user, an API key without `publish`) over all of its
    /// connections. Anonymous clients have no shared identity: they are limited per connection.
    pub principal: PublishLimits,
    /// Overrides per namespace.
    pub namespaces: BTreeMap<String, NamespaceLimits>,
    /// Commands (subscribe, unsubscribe, history reads) of one connection or REST principal.
    pub commands: Rate,
    /// Open connections from one client IP address (0: no cap).
    pub max_connections_per_ip: usize,
    /// Loopback clients (127.0.0.1, ::1: a local proxy, benchmarks) are not counted per IP.
    pub exempt_loopback: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            connection: PublishLimits {
                messages: Rate::new(50, 100),
                bytes: Rate::new(256 * 1024, 512 * 1024),
            },
            principal: PublishLimits {
                messages: Rate::new(100, 200),
                bytes: Rate::new(512 * 1024, 1024 * 1024),
            },
            namespaces: BTreeMap::new(),
            commands: Rate::new(100, 1024),
            max_connections_per_ip: 1000,
            exempt_loopback: true,
        }
    }
}

/// A token bucket. Tokens are counted in millionths so slow rates refill smoothly without
/// floats.
#[derive(Debug)]
struct Bucket {
    micro: u64,
    at: Instant,
}

const MICRO: u64 = 1_000_000;

impl Bucket {
    fn full(rate: Rate) -> Bucket {
        Bucket {
            micro: rate.burst.saturating_mul(MICRO),
            at: Instant::now(),
        }
    }

    /// Takes `n` tokens, or says how long until they are there.
    fn take(&mut self, rate: Rate, n: u64, now: Instant) -> Result<(), Duration> {
        if rate.per_sec == 0 {
            return Err(Duration::from_secs(1));
        }
        let elapsed = now.saturating_duration_since(self.at);
        self.at = now;
        let refill =
            (elapsed.as_micros().min(u128::from(u64::MAX)) as u64).saturating_mul(rate.per_sec);
        let cap = rate.burst.max(1).saturating_mul(MICRO);
        self.micro = self.micro.saturating_add(refill).min(cap);
        // A single item larger than the burst is let through once the bucket is full, so a
        // big message is slowed, never refused forever.
        let want = n.saturating_mul(MICRO).min(cap);
        if self.micro >= want {
            self.micro -= want;
            Ok(())
        } else {
            let missing = want - self.micro;
            Err(Duration::from_micros(missing.div_ceil(rate.per_sec)))
        }
    }
}

/// The buckets of one scope: per namespace, messages and bytes; and commands.
#[derive(Debug, Default)]
pub(crate) struct Buckets {
    publish: HashMap<String, (Bucket, Bucket)>,
    commands: Option<Bucket>,
}

impl Buckets {
    fn publish(
        &mut self,
        ns: &str,
        limits: &PublishLimits,
        bytes: u64,
        now: Instant,
    ) -> Result<(), Duration> {
        let (m, b) = self
            .publish
            .entry(ns.to_string())
            .or_insert_with(|| (Bucket::full(limits.messages), Bucket::full(limits.bytes)));
        // Both or neither: a refused message does not spend the byte budget.
        let at = (m.micro, m.at);
        m.take(limits.messages, 1, now)?;
        if let Err(wait) = b.take(limits.bytes, bytes, now) {
            (m.micro, m.at) = at;
            return Err(wait);
        }
        Ok(())
    }

    fn command(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.commands
            .get_or_insert_with(|| Bucket::full(rate))
            .take(rate, 1, now)
    }

    /// One command now, as a refusal when over `rate`.
    pub(crate) fn command_at(&mut self, rate: Rate) -> Result<(), Refusal> {
        self.command(rate, Instant::now())
            .map_err(|w| limited(&format!("{} subscribe/history commands/s", rate.per_sec), w))
    }
}

/// The refusal for a limit, with when to retry.
pub(crate) fn limited(what: &str, wait: Duration) -> Refusal {
    let mut r = Refusal::new(
        ErrorCode::RateLimited,
        format!(
            "rate limit: {what}; retry after {} ms",
            wait.as_millis().max(1)
        ),
    );
    r.retry_after = Some(wait);
    r
}

/// Limits shared by a gateway: the configuration and the per-principal and per-IP state.
pub(crate) struct Limiter {
    pub(crate) config: LimitsConfig,
    principals: Mutex<HashMap<String, Arc<Mutex<Buckets>>>>,
    ips: Mutex<HashMap<IpAddr, usize>>,
}

impl Limiter {
    pub(crate) fn new(config: LimitsConfig) -> Limiter {
        Limiter {
            config,
            principals: Mutex::new(HashMap::new()),
            ips: Mutex::new(HashMap::new()),
        }
    }

    fn publish_limits(&self, ns: &str) -> (PublishLimits, PublishLimits) {
        match self.config.namespaces.get(ns) {
            Some(n) => (n.connection, n.principal),
            None => (self.config.connection, self.config.principal),
        }
    }

    /// The shared buckets of `identity`, created on first use.
    pub(crate) fn principal(&self, identity: &str) -> Arc<Mutex<Buckets>> {
        self.principals
            .lock()
            .entry(identity.to_string())
            .or_default()
            .clone()
    }

    /// Forgets the shared buckets of `identity` when nothing else holds them.
    pub(crate) fn release_principal(&self, identity: &str, held: Arc<Mutex<Buckets>>) {
        let mut map = self.principals.lock();
        drop(held);
        if map.get(identity).is_some_and(|b| Arc::strong_count(b) == 1) {
            map.remove(identity);
        }
    }

    /// One publication of `bytes` to `ns`, against the connection's and the principal's
    /// buckets.
    pub(crate) fn publish(
        &self,
        conn: &mut Buckets,
        principal: Option<&Mutex<Buckets>>,
        ns: &str,
        bytes: u64,
    ) -> Result<(), Refusal> {
        let now = Instant::now();
        let (per_conn, per_principal) = self.publish_limits(ns);
        conn.publish(ns, &per_conn, bytes, now).map_err(|w| {
            limited(
                &format!(
                    "{} messages/s and {} bytes/s per connection in `{ns}`",
                    per_conn.messages.per_sec, per_conn.bytes.per_sec
                ),
                w,
            )
        })?;
        if let Some(p) = principal {
            p.lock()
                .publish(ns, &per_principal, bytes, now)
                .map_err(|w| {
                    limited(
                        &format!(
                            "{} messages/s and {} bytes/s per client identity in `{ns}`",
                            per_principal.messages.per_sec, per_principal.bytes.per_sec
                        ),
                        w,
                    )
                })?;
        }
        Ok(())
    }

    /// One publication against a principal's shared buckets only (no connection).
    pub(crate) fn publish_shared(
        &self,
        principal: &Mutex<Buckets>,
        ns: &str,
        bytes: u64,
    ) -> Result<(), Refusal> {
        let (_, per_principal) = self.publish_limits(ns);
        principal
            .lock()
            .publish(ns, &per_principal, bytes, Instant::now())
            .map_err(|w| {
                limited(
                    &format!(
                        "{} messages/s and {} bytes/s per client identity in `{ns}`",
                        per_principal.messages.per_sec, per_principal.bytes.per_sec
                    ),
                    w,
                )
            })
    }

    /// One command (subscribe, unsubscribe, a history read).
    pub(crate) fn command(&self, buckets: &Mutex<Buckets>) -> Result<(), Refusal> {
        let rate = self.config.commands;
        buckets
            .lock()
            .command(rate, Instant::now())
            .map_err(|w| limited(&format!("{} subscribe/history commands/s", rate.per_sec), w))
    }

    /// Counts a connection from `ip`; refused over the cap.
    pub(crate) fn connect_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        let cap = self.config.max_connections_per_ip;
        if cap == 0 || (self.config.exempt_loopback && ip.is_loopback()) {
            return Ok(());
        }
        let mut ips = self.ips.lock();
        let n = ips.entry(ip).or_default();
        if *n >= cap {
            return Err(limited(
                &format!("{cap} connections per client address"),
                Duration::from_secs(1),
            ));
        }
        *n += 1;
        Ok(())
    }

    pub(crate) fn disconnect_ip(&self, ip: IpAddr) {
        if self.config.max_connections_per_ip == 0
            || (self.config.exempt_loopback && ip.is_loopback())
        {
            return;
        }
        let mut ips = self.ips.lock();
        if let Some(n) = ips.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                ips.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = Rate::new(10, 5);
        let mut b = Bucket::full(rate);
        let t0 = Instant::now();
        for _ in 0..5 {
            b.take(rate, 1, t0).unwrap();
        }
        let wait = b.take(rate, 1, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(b.take(rate, 1, t0 + Duration::from_millis(99)).is_err());
        b.take(rate, 1, t0 + Duration::from_millis(200)).unwrap();
        // A single item over the burst waits for a full bucket instead of failing forever.
        let mut b = Bucket::full(rate);
        b.take(rate, 50, t0).unwrap();
    }

    #[test]
    fn a_refused_message_spends_no_bytes() {
        let limits = PublishLimits {
            messages: Rate::new(1, 1),
            bytes: Rate::new(100, 100),
        };
        let mut b = Buckets::default();
        let t0 = Instant::now();
        b.publish("chat", &limits, 10, t0).unwrap();
        assert!(b.publish("chat", &limits, 10, t0).is_err());
        let (_, bytes) = &b.publish["chat"];
        assert_eq!(bytes.micro, 90 * MICRO);
        // Another namespace has buckets of its own.
        b.publish("user", &limits, 10, t0).unwrap();
    }

    #[test]
    fn connections_per_ip_are_capped_and_released() {
        let l = Limiter::new(LimitsConfig {
            max_connections_per_ip: 2,
            exempt_loopback: false,
            ..LimitsConfig::default()
        });
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        l.connect_ip(ip).unwrap();
        l.connect_ip(ip).unwrap();
        assert_eq!(l.connect_ip(ip).unwrap_err().code, ErrorCode::RateLimited);
        l.disconnect_ip(ip);
        l.connect_ip(ip).unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        l.connect_ip(other).unwrap();
    }
}
