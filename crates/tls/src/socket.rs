//! Options every edge sets on a TCP connection it accepted, so a WebSocket, SSE, MQTT, FIX or
//! gRPC client is served alike.

use tokio::net::TcpStream;

/// Unsent bytes the kernel holds per connection before it reports the socket full.
#[cfg(any(target_os = "linux", target_os = "android"))]
const NOTSENT_LOWAT: u32 = 64 * 1024;

/// Sets the options on an accepted connection. Best effort: a socket that refuses one is
/// served without it.
pub fn tune_accepted(tcp: &TcpStream) {
    // Without TCP_NODELAY a small frame written while an earlier one is unacked waits for the
    // client's delayed ACK (~40 ms on Linux): that alone was the p99 of every fan-out run.
    // Frames are already coalesced per flush, so Nagle buys nothing.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("could not set TCP_NODELAY on a connection: {e}");
    }
    // Keeps at most this much written-but-unsent data in the kernel: beyond it the socket
    // reports itself full. What a slow reader has not taken then waits in the hub, where a
    // newer price replaces an older one, instead of in megabytes of kernel buffer no one can
    // conflate, and a connection's replies are not queued behind them.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_notsent_lowat(NOTSENT_LOWAT) {
        tracing::debug!("could not set TCP_NOTSENT_LOWAT on a connection: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_accepted_connection_gets_nodelay_and_a_bounded_unsent_backlog() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (tcp, _) = listener.accept().await.expect("accept");
        assert!(!tcp.nodelay().expect("read TCP_NODELAY"));
        tune_accepted(&tcp);
        assert!(tcp.nodelay().expect("read TCP_NODELAY"));
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert_eq!(
            socket2::SockRef::from(&tcp)
                .tcp_notsent_lowat()
                .expect("read TCP_NOTSENT_LOWAT"),
            NOTSENT_LOWAT
        );
    }
}
