//! The tests' WebSocket client: replies (by id) apart from pushes, and the `disconnect` a
//! server sends before it closes.

use std::{collections::VecDeque, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};

use super::TIMEOUT;

/// A WebSocket client that separates replies (by id) from pushes.
pub struct Ws {
    pub ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    pushes: VecDeque<Value>,
    replies: VecDeque<Value>,
    pub closed: Option<Value>,
    next_id: u64,
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Ws::from_stream(ws)
    }

    /// Wraps a connection opened by the caller (to inspect a refused upgrade first).
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>) -> Ws {
        Ws {
            ws,
            pushes: VecDeque::new(),
            replies: VecDeque::new(),
            closed: None,
            next_id: 1,
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// Sends a command (an `id` is added) and returns its reply.
    pub async fn cmd(&mut self, mut v: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        v["id"] = id.into();
        self.send_text(&v.to_string()).await;
        self.reply(Some(id)).await
    }

    /// Reads frames until the reply with `id` arrives (pushes before it are kept).
    pub async fn reply(&mut self, id: Option<u64>) -> Value {
        loop {
            if let Some(i) = self.replies.iter().position(|r| r["id"].as_u64() == id) {
                return self.replies.remove(i).unwrap();
            }
            self.read_one()
                .await
                .unwrap_or_else(|| panic!("connection closed before reply {id:?}"));
        }
    }

    pub async fn push(&mut self) -> Value {
        self.try_push(TIMEOUT).await.expect("expected a push")
    }

    pub async fn try_push(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(p) = self.pushes.pop_front() {
                return Some(p);
            }
            match tokio::time::timeout_at(deadline, self.read_one()).await {
                Ok(Some(())) => {}
                _ => return None,
            }
        }
    }

    /// Reads one frame into the buffers; None when the connection ended.
    async fn read_one(&mut self) -> Option<()> {
        loop {
            let m = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("read timed out");
            match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v.get("ch").is_some() {
                        self.pushes.push_back(v);
                    } else if v["op"] == "disconnect" {
                        self.closed = Some(v);
                    } else {
                        self.replies.push_back(v);
                    }
                    return Some(());
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }
}
