//! PUBREL (spec 3.6).

super::ack::ack_packet!(
    /// QoS 2 delivery part 2: publish release.
    PubRel,
    PubRel,
    "A successful PUBREL for `packet_id`."
);
