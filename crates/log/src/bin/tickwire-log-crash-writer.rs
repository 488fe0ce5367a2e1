//! Crash-test writer: appends deterministic batches forever, syncing each one, and prints the
//! last offset of a batch only after its sync returned. `tests/crash.rs` SIGKILLs it at random
//! moments and checks that every printed (acknowledged) offset survives intact.
//!
//! Usage: `tickwire-log-crash-writer <dir> [segment_bytes] [batch]`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use tickwire_log::{Entry, Log, LogConfig};

/// The value stored at `offset`: its length and bytes both derive from the offset, so a reader can
/// verify any record without knowing how it was written.
fn value_for(offset: u64, out: &mut Vec<u8>) {
    out.clear();
    let mut x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let len = 40 + (offset % 120) as usize;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: <dir> [segment_bytes] [batch]")?);
    let segment_bytes = match args.next() {
        Some(s) => s.parse().map_err(|e| format!("segment_bytes: {e}"))?,
        None => 256 * 1024,
    };
    let batch: u64 = match args.next() {
        Some(s) => s.parse().map_err(|e| format!("batch: {e}"))?,
        None => 64,
    };
    let cfg = LogConfig {
        segment_bytes,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    };
    let mut log = Log::open(&dir, cfg).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut values: Vec<Vec<u8>> = (0..batch).map(|_| Vec::new()).collect();
    let mut keys: Vec<[u8; 8]> = vec![[0; 8]; batch as usize];
    loop {
        let first = log.next_offset();
        for (i, (v, k)) in values.iter_mut().zip(keys.iter_mut()).enumerate() {
            let offset = first + i as u64;
            value_for(offset, v);
            *k = offset.to_be_bytes();
        }
        let entries: Vec<Entry<'_>> = values
            .iter()
            .zip(keys.iter())
            .enumerate()
            .map(|(i, (v, k))| Entry {
                timestamp: first + i as u64,
                key: k,
                value: v,
            })
            .collect();
        let got = log.append(&entries).map_err(|e| e.to_string())?;
        if got != first {
            return Err(format!("append returned {got}, expected {first}"));
        }
        log.sync().map_err(|e| e.to_string())?;
        let mut out = stdout.lock();
        writeln!(out, "{}", first + batch - 1).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickwire-log-crash-writer: {e}");
            ExitCode::FAILURE
        }
    }
}
