//! Real MQTT clients (paho-mqtt over TCP and WebSocket, mosquitto_sub / mosquitto_pub), MQTT
//! 3.1.1 and 5, against the real binary: tests/interop/mqtt/interop.py does the talking.
//! Run by scripts/test-mqtt-interop.sh, which installs the peers first; ignored in a plain
//! `cargo test` (the peers may be missing there), so it never passes without having run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
#[ignore = "needs paho-mqtt and mosquitto-clients: run scripts/test-mqtt-interop.sh"]
fn paho_and_mosquitto_clients_v311_and_v5() {
    let paho = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .status()
        .is_ok_and(|s| s.success());
    let mosquitto = Command::new("mosquitto_pub").arg("--help").output().is_ok();
    assert!(
        paho && mosquitto,
        "paho-mqtt (python3: {paho}) or mosquitto-clients ({mosquitto}) missing: run \
         scripts/install-mqtt-peers.sh"
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/mqtt/interop.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_tickwire"))
        .output()
        .expect("run interop.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "MQTT interop failed:\n{stdout}");
    // The script's own count is the authority (it knows how many checks it has); this only
    // refuses a summary that reports nothing checked.
    let summary = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("MQTT interop: "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    let passed: u32 = summary
        .split(" passed")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("unreadable summary {summary:?}"));
    assert!(passed > 0, "MQTT interop checked nothing: {summary}");
    assert!(summary.contains(" 0 failed"), "{summary}");
}
