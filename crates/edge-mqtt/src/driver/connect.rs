//! The CONNECT phase: reading the first packet, the broker-side rules the codec leaves to
//! us, and the refusals written before a connection closes.

use super::*;

pub(super) enum ConnectFailure {
    Io,
    Codec(Option<ProtocolVersion>, CodecError),
}

pub(super) async fn read_connect(
    io: &mut Transport,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Connect, ConnectFailure> {
    loop {
        match peek_connect_version(buf) {
            Err(e) => return Err(ConnectFailure::Codec(None, e)),
            Ok(Some(v)) => match decode(buf, v, max) {
                Ok(Some(Packet::Connect(c))) => return Ok(c),
                Ok(Some(_)) => {
                    return Err(ConnectFailure::Codec(
                        Some(v),
                        CodecError::ProtocolViolation {
                            packet: tickwire_mqtt::PacketType::Connect,
                            reason: "first packet is not CONNECT",
                        },
                    ))
                }
                Ok(None) => {}
                Err(e) => return Err(ConnectFailure::Codec(Some(v), e)),
            },
            Ok(None) => {}
        }
        match io.read(buf).await {
            Ok(true) => {}
            _ => return Err(ConnectFailure::Io),
        }
    }
}

/// A refusal written before the connection closes; boxed, as it is rare (see [`super::run`]).
pub(super) fn send_now<'a>(
    io: &'a mut Transport,
    p: &'a Packet,
    v: ProtocolVersion,
) -> std::pin::Pin<Box<impl std::future::Future<Output = io::Result<()>> + 'a>> {
    Box::pin(send_now_unboxed(io, p, v))
}

async fn send_now_unboxed(io: &mut Transport, p: &Packet, v: ProtocolVersion) -> io::Result<()> {
    let mut out = BytesMut::new();
    encode(p, v, &mut out).map_err(io::Error::other)?;
    tokio::time::timeout(Duration::from_secs(2), io.write(out.freeze()))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// The broker-side CONNECT rules the codec leaves to us: client id, credentials (through the
/// gateway), Will.
pub(super) fn accept(edge: &MqttEdge, c: &Connect) -> Result<(Accepted, Principal), Refused> {
    let gw = &edge.gateway;
    let v5 = c.protocol == ProtocolVersion::V5;
    let refused = |code, reason: &str| Refused {
        code,
        reason: reason.to_string(),
    };
    if c.properties.authentication_method().is_some() {
        return Err(refused(
            ReasonCode::BadAuthenticationMethod,
            "enhanced authentication is not supported; put the API key in the password",
        ));
    }
    let (client_id, assigned) = if c.client_id.is_empty() {
        if !v5 && !c.clean_start {
            // [MQTT-3.1.3-8]: a server-chosen id cannot name a session to come back to.
            return Err(refused(
                ReasonCode::ClientIdentifierNotValid,
                "an empty client id needs clean session",
            ));
        }
        (
            format!(
                "tw-{}-{}",
                std::process::id(),
                NEXT_ASSIGNED_ID.fetch_add(1, Ordering::Relaxed)
            ),
            true,
        )
    } else {
        (c.client_id.clone(), false)
    };
    if client_id.len() > MAX_CLIENT_ID {
        return Err(Refused {
            code: ReasonCode::ClientIdentifierNotValid,
            reason: format!("client ids are at most {MAX_CLIENT_ID} bytes"),
        });
    }
    // The credential (an API key or a JWT) travels as the password; without a password, an API
    // key may come as the user name (which is otherwise just a name).
    let principal = match &c.password {
        Some(pw) => {
            let secret = std::str::from_utf8(pw).ok();
            gw.authenticate(&Credentials::new(secret)).map_err(|r| {
                refused(
                    ReasonCode::BadUserNameOrPassword,
                    &format!("the password is not a valid API key or token: {}", r.reason),
                )
            })?
        }
        None => {
            let by_name = c
                .username
                .as_deref()
                .and_then(|u| gw.authenticate(&Credentials::new(Some(u))).ok());
            match by_name {
                Some(p) => p,
                None => gw
                    .authenticate(&Credentials::default())
                    .unwrap_or(Principal::Anonymous),
            }
        }
    };
    if let Some(will) = &c.will {
        publish::precheck(gw, &principal, &will.topic, &will.payload).map_err(|r| Refused {
            code: r.code,
            reason: format!("will: {}", r.reason),
        })?;
    }
    let requested = match c.protocol {
        ProtocolVersion::V4 if c.clean_start => 0,
        ProtocolVersion::V4 => u32::MAX,
        ProtocolVersion::V5 => c.properties.session_expiry_interval().unwrap_or(0),
    };
    let expiry_secs = edge.config.session().cap_session_expiry(requested);
    Ok((
        Accepted {
            client_id: client_id.into(),
            assigned,
            expiry_secs,
            expiry_capped: expiry_secs != requested,
            // The registry's string, shared, once the connection is admitted (`run`).
            owner: None,
        },
        principal,
    ))
}

/// Numbers the client ids the server assigns (`tw-<pid>-<n>`).
static NEXT_ASSIGNED_ID: AtomicU64 = AtomicU64::new(1);
