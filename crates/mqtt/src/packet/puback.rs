//! PUBACK (spec 3.4).

super::ack::ack_packet!(
    /// QoS 1 acknowledgment.
    PubAck,
    PubAck,
    "A successful PUBACK for `packet_id`."
);
