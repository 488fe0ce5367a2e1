//! `tickwire token`: mints a development JWT with the configured `[auth] jwt_hmac_secret`, so a
//! browser, an MQTT client or a FIX session can be tried as a user without an identity
//! provider. Production tokens come from your own auth server (docs/security.md).

use std::path::PathBuf;

use clap::Args;
use serde_json::value::RawValue;
use tickwire_server::{parse_duration, CliOverrides, Config};

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The user id (`sub`): owner of `user.<sub>`.
    #[arg(long)]
    sub: String,
    /// Lifetime: `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// A channel pattern the user may subscribe to beyond its namespaces' rules (repeat).
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// A channel pattern the user may publish to (repeat).
    #[arg(long = "publish")]
    publish: Vec<String>,
    /// JSON attached to the user's messages as `from.info`, e.g. '{"name":"Ann"}'.
    #[arg(long)]
    info: Option<String>,
    /// TOML configuration file holding `[auth] jwt_hmac_secret` (the environment's
    /// TICKWIRE_AUTH__JWT_HMAC_SECRET also works).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(a: TokenArgs) -> Result<(), String> {
    let cfg =
        Config::load(a.config.as_deref(), &CliOverrides::default()).map_err(|e| e.to_string())?;
    let secret = cfg.auth.jwt_hmac_secret.ok_or(
        "no [auth] jwt_hmac_secret configured (in --config or TICKWIRE_AUTH__JWT_HMAC_SECRET)",
    )?;
    let ttl = parse_duration(&a.ttl).map_err(|e| format!("--ttl {:?}: {e}", a.ttl))?;
    let now = tickwire_model::clock::now_nanos() / 1_000_000_000;
    let info = a
        .info
        .map(|i| RawValue::from_string(i).map_err(|e| format!("--info is not JSON: {e}")))
        .transpose()?;
    let claims = tickwire_gateway::Claims {
        sub: a.sub,
        exp: Some(now + ttl.as_secs()),
        channels: (!a.channels.is_empty()).then_some(a.channels),
        publish: (!a.publish.is_empty()).then_some(a.publish),
        info,
    };
    let token = tickwire_gateway::mint_hs256(secret.as_bytes(), &claims)?;
    println!("{token}");
    Ok(())
}
