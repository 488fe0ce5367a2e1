//! Real TLS peers (curl, Python websockets, mosquitto_sub / mosquitto_pub, paho-mqtt, a FIX
//! client over Python's ssl) against the real binary, with certificates from the openssl CLI
//! and tokens from PyJWT and `tickwire token`: tests/interop/tls/interop.py does the talking.
//! tests/interop/tls/pyjwt_interop.py mints HS256, RS256, ES256 and EdDSA tokens with PyJWT
//! (keys from `cryptography`, published by a JWKS endpoint on 127.0.0.1) and checks that REST,
//! SSE, the WebSocket and MQTT accept them and refuse expired, wrong-audience, wrong-issuer,
//! wrong-key and unsigned ones with the documented errors.
//! Run by scripts/test-tls.sh, which installs the peers first; ignored in a plain `cargo test`
//! (the peers may be missing there), so it never passes without having run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// Whether the peers are installed; the assertion names what is missing.
fn peers_present() {
    let have = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let python = have(
        "python3",
        &[
            "-c",
            "import jwt, cryptography.hazmat.primitives.asymmetric.ed25519, paho.mqtt.client, \
             websockets.sync.client; jwt.get_algorithm_by_name('EdDSA')",
        ],
    );
    let tools = have("curl", &["--version"]) && have("openssl", &["version"]);
    let mosquitto = Command::new("mosquitto_pub").arg("--help").output().is_ok();
    assert!(
        python && tools && mosquitto,
        "peers missing (python modules: {python}, curl and openssl: {tools}, mosquitto-clients: \
         {mosquitto}): run scripts/install-tls-peers.sh"
    );
}

/// Runs `tests/interop/tls/<script>` against the binary; its summary line starts with
/// `label: ` and must report checks passed and none failed.
fn run_script(script: &str, label: &str) {
    peers_present();
    let path = format!(
        "{}/../../tests/interop/tls/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("python3")
        .arg(&path)
        .arg(env!("CARGO_BIN_EXE_tickwire"))
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{label} failed:\n{stdout}");
    // The script's own count is the authority (it knows how many checks it has); this only
    // refuses a summary that reports nothing checked.
    let prefix = format!("{label}: ");
    let summary = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    let passed: u32 = summary
        .split(" passed")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("unreadable summary {summary:?}"));
    assert!(passed > 0, "{label} checked nothing: {summary}");
    assert!(summary.contains(" 0 failed"), "{summary}");
}

#[test]
#[ignore = "needs curl, openssl, mosquitto-clients, websockets, PyJWT, paho-mqtt: run scripts/test-tls.sh"]
fn curl_websockets_mosquitto_paho_and_python_ssl_over_tls() {
    run_script("interop.py", "TLS interop");
}

#[test]
#[ignore = "needs PyJWT, cryptography, websockets, paho-mqtt, openssl: run scripts/test-tls.sh"]
fn pyjwt_hs256_rs256_es256_eddsa_tokens_over_rest_sse_websocket_and_mqtt() {
    run_script("pyjwt_interop.py", "PyJWT interop");
}
