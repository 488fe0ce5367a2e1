//! Real MQTT clients (paho-mqtt over TCP and WebSocket, mosquitto_sub / mosquitto_pub), MQTT
//! 3.1.1 and 5, against the real binary: tests/interop/mqtt/interop.py does the talking.
//! Needs scripts/install-mqtt-peers.sh; without the peers the test says so and passes, unless
//! MQTT_INTEROP_REQUIRED=1 (scripts/test-mqtt-interop.sh sets it), where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn have_peers() -> bool {
    let paho = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .status()
        .is_ok_and(|s| s.success());
    let mosquitto = Command::new("mosquitto_pub").arg("--help").output().is_ok();
    paho && mosquitto
}

#[test]
fn paho_and_mosquitto_clients_v311_and_v5() {
    if !have_peers() {
        assert!(
            std::env::var("MQTT_INTEROP_REQUIRED").as_deref() != Ok("1"),
            "paho-mqtt or mosquitto-clients missing: run scripts/install-mqtt-peers.sh"
        );
        eprintln!(
            "SKIPPED: paho-mqtt / mosquitto-clients not installed (scripts/install-mqtt-peers.sh)"
        );
        return;
    }
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
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
