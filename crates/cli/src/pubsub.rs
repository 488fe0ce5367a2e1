//! `tickwire pub`, `tickwire sub` and `tickwire tail`: publish to and read from a running
//! server. Data is carried as the JSON text it is (`RawValue`), never parsed into numbers, so
//! a price keeps exactly its digits.

use std::{
    collections::HashMap,
    io::{BufRead, Write},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tickwire_gateway::Scope;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message as WsMessage};

use crate::client::{problem_text, runtime, ClientArgs, Target};

/// Arguments of `tickwire pub`.
#[derive(Debug, Args)]
pub struct PubArgs {
    /// The channel, e.g. `chat.lobby` or `quotes.EURUSD`.
    pub channel: String,
    /// The message's data as JSON (prices as strings: '{"bid":"1.0841","ask":"1.0843"}').
    /// Without it, every non-empty line of standard input is one message's data.
    pub data: Option<String>,
    /// The message id (idempotent publish; only with DATA). By default each message gets a
    /// fresh id, so a retry after a lost answer cannot store it twice.
    #[arg(long)]
    pub msg_id: Option<String>,
    /// Send no message ids (a retry may then store a message twice).
    #[arg(long, conflicts_with = "msg_id")]
    pub no_msg_id: bool,
    /// Messages per HTTP request when reading standard input (at most 10,000).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// How `sub` and `tail` print messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `HH:MM:SS.mmm channel @offset data`, for people.
    Pretty,
    /// One JSON object per line: `{"ch","offset","ts","data"}` (a WebSocket push).
    Ndjson,
}

/// Arguments of `tickwire sub`.
#[derive(Debug, Args)]
pub struct SubArgs {
    /// Channels to subscribe to.
    #[arg(required = true)]
    pub channels: Vec<String>,
    /// Stream channels: start at this offset (history, then live, no gap).
    #[arg(long, conflicts_with = "last")]
    pub from: Option<u64>,
    /// The stream's epoch that `--from` belongs to (refused if the stream was recreated).
    #[arg(long, requires = "from")]
    pub epoch: Option<String>,
    /// Print the last N stored messages of each channel first, then follow.
    #[arg(long)]
    pub last: Option<usize>,
    /// Output format [default: pretty on a terminal, else ndjson].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `tickwire tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The channel.
    pub channel: String,
    /// How many stored messages to print before following.
    #[arg(short = 'n', long = "lines", default_value_t = 10)]
    pub lines: usize,
    /// Start at this offset instead (every stored message from it on).
    #[arg(long)]
    pub from: Option<u64>,
    /// Print the stored messages and exit instead of following.
    #[arg(long)]
    pub no_follow: bool,
    /// Output format [default: pretty on a terminal, else ndjson].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn exit(name: &str, r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickwire {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pub

/// Runs `tickwire pub`.
pub fn run_pub(a: PubArgs) -> ExitCode {
    exit("pub", runtime().and_then(|rt| rt.block_on(publish(a))))
}

#[derive(serde::Serialize)]
struct Item<'a> {
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg_id: Option<String>,
    data: &'a RawValue,
}

async fn publish(a: PubArgs) -> Result<(), String> {
    let target = a.client.resolve(Scope::Publish)?;
    let http = target.http(Some(Duration::from_secs(30)))?;
    let url = format!("{}/v1/publish", target.base);
    let prefix = format!("cli-{:016x}", rand::random::<u64>());
    let mut n = 0u64;
    let mut next_id = |explicit: Option<String>| {
        n += 1;
        if a.no_msg_id {
            None
        } else {
            Some(explicit.unwrap_or_else(|| format!("{prefix}-{n}")))
        }
    };
    let out = std::io::stdout();
    if let Some(d) = &a.data {
        let data =
            RawValue::from_string(d.clone()).map_err(|e| format!("DATA is not JSON: {e}"))?;
        let item = Item {
            channel: &a.channel,
            msg_id: next_id(a.msg_id.clone()),
            data: &data,
        };
        let acks = send(&http, &url, &[item]).await?;
        print_acks(&mut out.lock(), &acks)?;
        return Ok(());
    }
    if a.msg_id.is_some() {
        return Err("--msg-id needs DATA (standard input gets one id per line)".into());
    }
    let batch = a.batch.clamp(1, 10_000);
    let mut lines: Vec<(Box<RawValue>, Option<String>)> = Vec::new();
    let mut line_no = 0u64;
    // Standard input is read on this thread between requests: a command-line tool has
    // nothing else to do meanwhile.
    let mut input = std::io::stdin().lock().lines();
    loop {
        let line = input.next();
        let at_end = line.is_none();
        if let Some(line) = line {
            let line = line.map_err(|e| format!("reading standard input: {e}"))?;
            line_no += 1;
            if line.trim().is_empty() {
                continue;
            }
            let data = RawValue::from_string(line)
                .map_err(|e| format!("line {line_no} is not JSON: {e}"))?;
            lines.push((data, next_id(None)));
        }
        if !lines.is_empty() && (at_end || lines.len() >= batch) {
            let items: Vec<Item<'_>> = lines
                .iter()
                .map(|(d, msg_id)| Item {
                    channel: &a.channel,
                    msg_id: msg_id.clone(),
                    data: d,
                })
                .collect();
            let acks = send(&http, &url, &items).await?;
            print_acks(&mut out.lock(), &acks)?;
            lines.clear();
        }
        if at_end {
            return Ok(());
        }
    }
}

#[derive(Deserialize)]
struct Ack {
    channel: String,
    offset: u64,
    duplicate: bool,
}

/// One publish request with its retries: the same body (the same msg_ids) again after a
/// transport failure or a 503/429, so a message is stored once however often it is sent.
async fn send(http: &reqwest::Client, url: &str, items: &[Item<'_>]) -> Result<Vec<Ack>, String> {
    let body = if items.len() == 1 {
        serde_json::to_vec(&items[0])
    } else {
        serde_json::to_vec(items)
    }
    .map_err(|e| e.to_string())?;
    let mut delay = Duration::from_millis(200);
    for attempt in 0..6 {
        if attempt > 0 {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        let resp = match http
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if attempt < 5 => {
                eprintln!("tickwire pub: {e}; retrying with the same msg_ids");
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        let status = resp.status().as_u16();
        if (status == 503 || status == 429) && attempt < 5 {
            eprintln!(
                "tickwire pub: {}; retrying with the same msg_ids",
                problem_text(resp).await
            );
            continue;
        }
        if !resp.status().is_success() {
            return Err(problem_text(resp).await);
        }
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if items.len() == 1 {
            let ack: Ack = serde_json::from_str(&text).map_err(|e| format!("answer: {e}"))?;
            return Ok(vec![ack]);
        }
        #[derive(Deserialize)]
        struct Results {
            results: Vec<Ack>,
        }
        let r: Results = serde_json::from_str(&text).map_err(|e| format!("answer: {e}"))?;
        return Ok(r.results);
    }
    Err("gave up after 6 attempts".into())
}

fn print_acks(out: &mut impl Write, acks: &[Ack]) -> Result<(), String> {
    for a in acks {
        writeln!(
            out,
            "{}",
            serde_json::json!({"channel": a.channel, "offset": a.offset, "duplicate": a.duplicate})
        )
        .map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// sub and tail

/// Runs `tickwire sub`.
pub fn run_sub(a: SubArgs) -> ExitCode {
    let opts = Follow {
        from: a.from,
        epoch: a.epoch,
        last: a.last,
        follow: true,
        format: a.format.unwrap_or_else(default_format),
        count: a.count,
    };
    exit(
        "sub",
        runtime().and_then(|rt| rt.block_on(follow(&a.client, a.channels, opts))),
    )
}

/// Runs `tickwire tail`: the last lines (or everything from `--from`), then live.
pub fn run_tail(a: TailArgs) -> ExitCode {
    let opts = Follow {
        from: a.from,
        epoch: None,
        last: a.from.is_none().then_some(a.lines),
        follow: !a.no_follow,
        format: a.format.unwrap_or_else(default_format),
        count: a.count,
    };
    exit(
        "tail",
        runtime().and_then(|rt| rt.block_on(follow(&a.client, vec![a.channel], opts))),
    )
}

fn default_format() -> Format {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        Format::Pretty
    } else {
        Format::Ndjson
    }
}

struct Follow {
    from: Option<u64>,
    epoch: Option<String>,
    last: Option<usize>,
    /// False: print what is stored and stop (`tail --no-follow`).
    follow: bool,
    format: Format,
    count: Option<u64>,
}

/// One push, as the server sent it (`data` kept as its text).
#[derive(Deserialize)]
struct Push<'a> {
    ch: String,
    offset: u64,
    #[serde(default)]
    ts: u64,
    #[serde(default)]
    snapshot: bool,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Where each channel stands: the newest offset printed and its stream's epoch.
#[derive(Default, Clone)]
struct Position {
    printed: Option<u64>,
    epoch: Option<String>,
    stream: bool,
}

struct Printer {
    format: Format,
    printed: u64,
    count: Option<u64>,
}

impl Printer {
    /// Prints one message; false once `--count` is reached.
    fn print(&mut self, ch: &str, offset: u64, ts: u64, snapshot: bool, data: &RawValue) -> bool {
        let mut out = std::io::stdout().lock();
        let line = match self.format {
            Format::Ndjson => {
                let mut v = format!(
                    "{{\"ch\":{},\"offset\":{offset},\"ts\":{ts}",
                    serde_json::to_string(ch).unwrap_or_default()
                );
                if snapshot {
                    v.push_str(",\"snapshot\":true");
                }
                v.push_str(",\"data\":");
                v.push_str(data.get());
                v.push('}');
                v
            }
            Format::Pretty => {
                let ms = ts % 86_400_000;
                format!(
                    "{:02}:{:02}:{:02}.{:03} {ch} @{offset}{} {}",
                    ms / 3_600_000,
                    ms / 60_000 % 60,
                    ms / 1000 % 60,
                    ms % 1000,
                    if snapshot { " (snapshot)" } else { "" },
                    data.get()
                )
            }
        };
        // A closed pipe (`| head`) ends the command quietly.
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            return false;
        }
        self.printed += 1;
        self.count.is_none_or(|c| self.printed < c)
    }
}

/// Subscribes to `channels`, prints history as asked and then live messages, reconnecting
/// (and resuming stream channels after the last printed offset) when the server goes away.
async fn follow(client: &ClientArgs, channels: Vec<String>, opts: Follow) -> Result<(), String> {
    let target = client.resolve(Scope::SubscribeAll)?;
    let http = target.http(Some(Duration::from_secs(30)))?;
    let mut printer = Printer {
        format: opts.format,
        printed: 0,
        count: opts.count,
    };
    if opts.count == Some(0) {
        return Ok(());
    }
    let mut pos: HashMap<String, Position> = HashMap::new();
    let mut first = true;
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(
            &target,
            &http,
            &channels,
            &opts,
            &mut pos,
            first,
            &mut printer,
        )
        .await
        {
            Ok(Done::Stop) => return Ok(()),
            Ok(Done::Reconnect(why)) => {
                eprintln!("tickwire: {why}; reconnecting");
                backoff = Duration::from_millis(100);
            }
            Err(Fatal(e)) => return Err(e),
            Err(Retry(e)) if first => return Err(e),
            Err(Retry(e)) => {
                eprintln!("tickwire: {e}; reconnecting in {} ms", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        first = false;
    }
}

enum Done {
    Stop,
    Reconnect(String),
}

enum SessionError {
    /// The server refused what was asked: no point retrying.
    Fatal(String),
    /// The connection failed or dropped.
    Retry(String),
}
use SessionError::{Fatal, Retry};

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    error: Option<ReplyError>,
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    resume: Option<HashMap<String, u64>>,
    #[serde(default)]
    retention_gap: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ReplyError {
    code: String,
    message: String,
}

async fn session(
    target: &Target,
    http: &reqwest::Client,
    channels: &[String],
    opts: &Follow,
    pos: &mut HashMap<String, Position>,
    first: bool,
    printer: &mut Printer,
) -> Result<Done, SessionError> {
    let mut req = target
        .ws_url()
        .into_client_request()
        .map_err(|e| Fatal(format!("bad URL: {e}")))?;
    if let Some(t) = &target.token {
        let v = format!("Bearer {t}")
            .parse()
            .map_err(|_| Fatal("the token holds characters a header cannot carry".into()))?;
        req.headers_mut().insert("authorization", v);
    }
    let io = target
        .connect()
        .await
        .map_err(|e| Retry(format!("connecting to {}: {e}", target.ws_url())))?;
    let (mut ws, _) = tokio_tungstenite::client_async(req, io)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => Fatal(format!(
                "the server refused the connection: {}{}",
                r.status(),
                r.body()
                    .as_ref()
                    .map(|b| format!(" {}", String::from_utf8_lossy(b).trim()))
                    .unwrap_or_default()
            )),
            e => Retry(format!("connecting to {}: {e}", target.ws_url())),
        })?;
    for (i, ch) in channels.iter().enumerate() {
        let p = pos.entry(ch.clone()).or_default();
        let mut cmd = serde_json::json!({"id": i, "op": "subscribe", "channel": ch});
        // Resume after what was printed; the first time, where the user asked.
        match (p.printed, first) {
            (Some(last), _) if p.stream => {
                cmd["from"] = (last + 1).into();
                if let Some(e) = &p.epoch {
                    cmd["epoch"] = e.clone().into();
                }
            }
            (_, true) if opts.from.is_some() => {
                cmd["from"] = opts.from.into();
                if let Some(e) = &opts.epoch {
                    cmd["epoch"] = e.clone().into();
                }
            }
            _ => {}
        }
        ws.send(WsMessage::text(cmd.to_string()))
            .await
            .map_err(|e| Retry(e.to_string()))?;
    }
    let mut pending = channels.len();
    // Pushes that arrive before every reply is in are held, so history (--last) prints first.
    let mut held: Vec<String> = Vec::new();
    let mut history_done = !(first && opts.last.is_some());
    if history_done && !opts.follow {
        return Ok(Done::Stop);
    }
    loop {
        let msg = match ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(Retry(e.to_string())),
            None => return Err(Retry("the server closed the connection".into())),
        };
        let text = match msg {
            WsMessage::Text(t) => t,
            WsMessage::Close(_) => return Err(Retry("the server closed the connection".into())),
            _ => continue,
        };
        let text = text.as_str();
        if text.starts_with("{\"ch\":") {
            if !history_done {
                held.push(text.to_string());
                continue;
            }
            if !print_push(text, pos, printer).map_err(Fatal)? {
                let _ = ws.close(None).await;
                return Ok(Done::Stop);
            }
            continue;
        }
        let r: Reply = serde_json::from_str(text)
            .map_err(|e| Retry(format!("unreadable frame {text:?}: {e}")))?;
        if r.op.as_deref() == Some("disconnect") {
            for (ch, from) in r.resume.unwrap_or_default() {
                if let Some(p) = pos.get_mut(&ch) {
                    p.printed = Some(from.saturating_sub(1))
                        .filter(|_| from > 0)
                        .or(p.printed);
                }
            }
            return Ok(Done::Reconnect(format!(
                "server disconnected us ({})",
                r.code.unwrap_or_default()
            )));
        }
        if r.ok == Some(false) {
            let e = r.error.map_or_else(
                || "refused".to_string(),
                |e| format!("{}: {}", e.code, e.message),
            );
            let ch =
                r.id.and_then(|i| channels.get(i as usize))
                    .cloned()
                    .unwrap_or_default();
            return Err(Fatal(format!("{ch}: {e}")));
        }
        if r.ok == Some(true) && r.id.is_some() {
            if let Some(ch) = &r.channel {
                let p = pos.entry(ch.clone()).or_default();
                p.stream = r.class.as_deref() == Some("stream");
                if r.epoch.is_some() {
                    p.epoch = r.epoch.clone();
                }
                if let Some(g) = &r.retention_gap {
                    eprintln!("tickwire: {ch}: retention removed the start of the range: {g}");
                }
                if first {
                    if let Some(n) = opts.last {
                        let end = match r.offset {
                            Some(o) if p.stream => Some(o),
                            _ => latest_end(target, http, ch).await.map_err(Fatal)?,
                        };
                        if let Some(end) = end {
                            for m in last_n(target, http, ch, n, end).await.map_err(Fatal)? {
                                p.printed = Some(m.offset);
                                if !printer.print(ch, m.offset, m.ts, false, &m.data) {
                                    return Ok(Done::Stop);
                                }
                            }
                        }
                    }
                }
            }
            pending = pending.saturating_sub(1);
            if pending == 0 && !history_done {
                history_done = true;
                if !opts.follow {
                    let _ = ws.close(None).await;
                    return Ok(Done::Stop);
                }
                for t in std::mem::take(&mut held) {
                    if !print_push(&t, pos, printer).map_err(Fatal)? {
                        return Ok(Done::Stop);
                    }
                }
            }
        }
    }
}

/// Prints a push unless it was printed already (history overlaps live, or a resume); false
/// once `--count` is reached.
fn print_push(
    text: &str,
    pos: &mut HashMap<String, Position>,
    printer: &mut Printer,
) -> Result<bool, String> {
    let p: Push<'_> =
        serde_json::from_str(text).map_err(|e| format!("unreadable push {text:?}: {e}"))?;
    let entry = pos.entry(p.ch.clone()).or_default();
    if entry.printed.is_some_and(|last| p.offset <= last) {
        return Ok(true);
    }
    entry.printed = Some(p.offset);
    Ok(printer.print(&p.ch, p.offset, p.ts, p.snapshot, p.data))
}

/// A state channel's end: one past its newest value's offset (`None` if it has none).
async fn latest_end(
    target: &Target,
    http: &reqwest::Client,
    ch: &str,
) -> Result<Option<u64>, String> {
    let resp = http
        .get(format!("{}/v1/latest/{ch}", target.base))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status().as_u16() == 404 {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(problem_text(resp).await);
    }
    #[derive(Deserialize)]
    struct Latest {
        offset: u64,
    }
    let l: Latest = resp.json().await.map_err(|e| e.to_string())?;
    Ok(Some(l.offset + 1))
}

/// A stored message, data kept as its text.
#[derive(Deserialize)]
struct Stored {
    offset: u64,
    #[serde(default)]
    ts: u64,
    data: Box<RawValue>,
}

/// The last `n` messages of `ch` below `end`. Offsets are the namespace's (channels share
/// them), so the window below `end` grows until it holds `n` of this channel's messages or
/// reaches the stream's start.
async fn last_n(
    target: &Target,
    http: &reqwest::Client,
    ch: &str,
    n: usize,
    end: u64,
) -> Result<Vec<Stored>, String> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut window = (n as u64).saturating_mul(4).max(256);
    loop {
        let start = end.saturating_sub(window);
        let mut got = history(target, http, ch, start, end).await?;
        if got.len() >= n || start == 0 {
            let skip = got.len().saturating_sub(n);
            return Ok(got.split_off(skip));
        }
        window = window.saturating_mul(8);
    }
}

/// Every stored message of `ch` in `[from, end)`, paging through `/v1/history`.
async fn history(
    target: &Target,
    http: &reqwest::Client,
    ch: &str,
    mut from: u64,
    end: u64,
) -> Result<Vec<Stored>, String> {
    #[derive(Deserialize)]
    struct Page {
        messages: Vec<Stored>,
        next: u64,
    }
    let mut out = Vec::new();
    while from < end {
        let resp = http
            .get(format!(
                "{}/v1/history/{ch}?from={from}&limit=1000",
                target.base
            ))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(problem_text(resp).await);
        }
        let page: Page = resp.json().await.map_err(|e| e.to_string())?;
        let done = page.next <= from || (page.messages.is_empty() && page.next >= end);
        out.extend(page.messages.into_iter().filter(|m| m.offset < end));
        if done {
            break;
        }
        from = page.next;
    }
    Ok(out)
}
