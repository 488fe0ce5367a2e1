//! PUBCOMP (spec 3.7).

super::ack::ack_packet!(
    /// QoS 2 delivery part 3: publish complete.
    PubComp,
    PubComp,
    "A successful PUBCOMP for `packet_id`."
);
