//! Cross-node events over NATS (`--nats nats://HOST:PORT[,...]`). PostgreSQL stays the source
//! of truth: the bus carries only ids, as wake-ups and notices, never envelopes, usernames or
//! keys. Every node publishes and subscribes on one subject, [`SUBJECT`]; a node ignores its
//! own events.
//!
//! | event | sent when | a receiving node |
//! |---|---|---|
//! | `wake(uids)` | a send committed envelopes for these devices | wakes their local connections |
//! | `connected(uid, conn)` | a device opened a WebSocket on the sender | closes its own connection of that device |
//! | `deleted(uids)` | an account was deleted | closes those devices' connections |
//! | `keys` | the shared key material changed (franking rotation) | reloads it from the database |
//!
//! The bus is best effort, by design: a lost event (NATS down, a node reconnecting, the
//! outgoing queue full) never loses a message, it only delays it, by at most `ws_poll_secs`
//! (every connection re-reads its queue that often). After a reconnection to NATS a node wakes
//! every local connection once, since wake-ups may have been missed meanwhile. Publishing never
//! blocks a request: events go through a bounded queue ([`OUTGOING_QUEUE`]) to a publisher task
//! and are dropped (and counted) when it is full.
//!
//! Wire format (version 1): `0x01 || kind (u8) || node id [16] || body`, integers big-endian:
//! kind 1 `wake`: `n × uid (i64)`; kind 2 `connected`: `uid (i64) || conn (u64)`; kind 3
//! `deleted`: `n × uid (i64)`; kind 4 `keys`: empty. At most [`MAX_IDS`] uids per event.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The subject every node publishes to and subscribes on.
pub const SUBJECT: &str = "parley.v1.events";
/// Events waiting for the publisher task; beyond this they are dropped (and counted).
pub const OUTGOING_QUEUE: usize = 8192;
/// Most uids in one event (a send reaches at most `max_envelopes_per_send` devices).
pub const MAX_IDS: usize = 4096;

const VERSION: u8 = 1;
const HEADER: usize = 2 + 16;

/// A node's random id, drawn at start (tells a node's own events from the others').
pub type NodeId = [u8; 16];

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// A server address is malformed.
    #[error("invalid NATS address {0:?}: {1}")]
    Address(String, String),
    /// No NATS server could be reached.
    #[error("cannot connect to NATS at {0}: {1}")]
    Connect(String, String),
    /// The subscription failed.
    #[error("cannot subscribe on NATS: {0}")]
    Subscribe(String),
}

/// One event on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Envelopes were committed for these devices.
    Wake(Vec<i64>),
    /// Device `uid` opened connection `conn` on the sending node.
    Connected {
        /// The device.
        uid: i64,
        /// The connection's number on its node.
        conn: u64,
    },
    /// These devices' account was deleted.
    Deleted(Vec<i64>),
    /// The shared key material changed.
    Keys,
}

/// Why a received event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than its header or its kind requires, or not a whole number of ids.
    #[error("malformed event")]
    Malformed,
    /// Another format version.
    #[error("unknown event version {0}")]
    Version(u8),
    /// An unknown kind.
    #[error("unknown event kind {0}")]
    Kind(u8),
    /// More than [`MAX_IDS`] ids.
    #[error("too many ids in one event")]
    TooMany,
}

fn push_ids(out: &mut Vec<u8>, ids: &[i64]) {
    for id in ids.iter().take(MAX_IDS) {
        out.extend_from_slice(&id.to_be_bytes());
    }
}

fn read_ids(body: &[u8]) -> Result<Vec<i64>, DecodeError> {
    if !body.len().is_multiple_of(8) {
        return Err(DecodeError::Malformed);
    }
    if body.len() / 8 > MAX_IDS {
        return Err(DecodeError::TooMany);
    }
    body.chunks_exact(8)
        .map(|c| <[u8; 8]>::try_from(c).map(i64::from_be_bytes).map_err(|_| DecodeError::Malformed))
        .collect()
}

/// Encodes `event` from `node` (module docs for the format).
pub fn encode(node: &NodeId, event: &Event) -> Vec<u8> {
    let kind = match event {
        Event::Wake(_) => 1,
        Event::Connected { .. } => 2,
        Event::Deleted(_) => 3,
        Event::Keys => 4,
    };
    let mut out = Vec::with_capacity(HEADER + 16);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(node);
    match event {
        Event::Wake(ids) | Event::Deleted(ids) => push_ids(&mut out, ids),
        Event::Connected { uid, conn } => {
            out.extend_from_slice(&uid.to_be_bytes());
            out.extend_from_slice(&conn.to_be_bytes());
        }
        Event::Keys => {}
    }
    out
}

/// Decodes an event: its sending node and the event. Bounded cost; never panics.
pub fn decode(bytes: &[u8]) -> Result<(NodeId, Event), DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Malformed)?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let (&kind, rest) = rest.split_first().ok_or(DecodeError::Malformed)?;
    let (node, body) = rest.split_first_chunk::<16>().ok_or(DecodeError::Malformed)?;
    let event = match kind {
        1 => Event::Wake(read_ids(body)?),
        2 => {
            let (uid, conn) = body.split_first_chunk::<8>().ok_or(DecodeError::Malformed)?;
            let conn: [u8; 8] = conn.try_into().map_err(|_| DecodeError::Malformed)?;
            Event::Connected { uid: i64::from_be_bytes(*uid), conn: u64::from_be_bytes(conn) }
        }
        3 => Event::Deleted(read_ids(body)?),
        4 if body.is_empty() => Event::Keys,
        4 => return Err(DecodeError::Malformed),
        k => return Err(DecodeError::Kind(k)),
    };
    Ok((*node, event))
}

/// The node's side of the bus: publishing (never blocks) and the incoming events.
pub struct Bus {
    node: NodeId,
    outgoing: mpsc::Sender<Vec<u8>>,
    publisher: JoinHandle<()>,
    subscriber: JoinHandle<()>,
    client: async_nats::Client,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("node", &node_name(&self.node)).finish_non_exhaustive()
    }
}

/// What the node receives from the bus.
#[derive(Debug)]
pub enum Incoming {
    /// An event from another node.
    Event(Event),
    /// The connection to NATS was re-established: wake-ups may have been missed.
    Reconnected,
}

/// A node id as hex (logs).
pub fn node_name(node: &NodeId) -> String {
    node.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `nats://HOST:PORT[,nats://HOST:PORT...]`.
pub fn parse_servers(list: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    let addrs: Vec<_> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| BusError::Address(s.to_string(), e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err(BusError::Address(list.to_string(), "no server given".into()));
    }
    Ok(addrs)
}

impl Bus {
    /// Connects to the NATS servers in `list` (any one reachable is enough; the client learns
    /// the rest of the cluster and reconnects on its own, without limit), subscribes, and
    /// starts the publisher.
    /// Returns the bus and the stream of incoming events (for the node's listener task).
    pub async fn connect(
        list: &str,
        node: NodeId,
    ) -> Result<(Self, mpsc::Receiver<Incoming>), BusError> {
        let addrs = parse_servers(list)?;
        let (incoming_tx, incoming) = mpsc::channel::<Incoming>(OUTGOING_QUEUE);
        let events_tx = incoming_tx.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("parley-{}", node_name(&node)))
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let tx = events_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("NATS connection (re)established");
                            metrics::gauge!("parley_bus_connected").set(1.0);
                            let _ = tx.try_send(Incoming::Reconnected);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("NATS connection lost; reconnecting");
                            metrics::gauge!("parley_bus_connected").set(0.0);
                        }
                        other => tracing::info!(event = %other, "NATS event"),
                    }
                }
            })
            .connect(addrs)
            .await
            .map_err(|e| BusError::Connect(list.to_string(), e.to_string()))?;
        let mut sub =
            client.subscribe(SUBJECT).await.map_err(|e| BusError::Subscribe(e.to_string()))?;
        client.flush().await.map_err(|e| BusError::Subscribe(e.to_string()))?;
        metrics::gauge!("parley_bus_connected").set(1.0);
        let own = node;
        let subscriber = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                match decode(&msg.payload) {
                    Ok((from, _)) if from == own => {}
                    Ok((_, event)) => {
                        metrics::counter!("parley_bus_events_received_total").increment(1);
                        if incoming_tx.send(Incoming::Event(event)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        metrics::counter!("parley_bus_events_refused_total").increment(1);
                        tracing::debug!(error = %e, "refused a bus event");
                    }
                }
            }
        });
        let (outgoing, mut rx) = mpsc::channel::<Vec<u8>>(OUTGOING_QUEUE);
        let publishing = client.clone();
        let publisher = tokio::spawn(async move {
            while let Some(payload) = rx.recv().await {
                match publishing.publish(SUBJECT, payload.into()).await {
                    Ok(()) => metrics::counter!("parley_bus_events_sent_total").increment(1),
                    Err(e) => {
                        metrics::counter!("parley_bus_events_dropped_total").increment(1);
                        tracing::debug!(error = %e, "bus publish failed");
                    }
                }
            }
        });
        tracing::info!(node = %node_name(&node), servers = list, "connected to NATS");
        Ok((Self { node, outgoing, publisher, subscriber, client }, incoming))
    }

    /// Publishes `event` without waiting; dropped (and counted) if the queue is full.
    pub fn publish(&self, event: &Event) {
        if self.outgoing.try_send(encode(&self.node, event)).is_err() {
            metrics::counter!("parley_bus_events_dropped_total").increment(1);
        }
    }

    /// Sends what is queued (best effort, bounded by `timeout`), then stops publishing and
    /// listening (the NATS connection closes once the last handle is dropped).
    pub async fn close(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.client.flush()).await;
        self.publisher.abort();
        self.subscriber.abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn events_round_trip_and_garbage_is_refused() {
        let node = [7u8; 16];
        for ev in [
            Event::Wake(vec![1, 2, i64::MAX]),
            Event::Wake(vec![]),
            Event::Connected { uid: 42, conn: u64::MAX },
            Event::Deleted(vec![9]),
            Event::Keys,
        ] {
            let bytes = encode(&node, &ev);
            assert_eq!(decode(&bytes).unwrap(), (node, ev.clone()), "{ev:?}");
            for cut in 0..bytes.len() {
                // Any prefix either decodes to something shorter or is refused; never panics.
                let _ = decode(&bytes[..cut]);
            }
        }
        assert_eq!(decode(&[]), Err(DecodeError::Malformed));
        assert_eq!(decode(&[2, 1]), Err(DecodeError::Version(2)));
        let mut bad = encode(&node, &Event::Keys);
        bad[1] = 9;
        assert_eq!(decode(&bad), Err(DecodeError::Kind(9)));
        let mut odd = encode(&node, &Event::Wake(vec![1]));
        odd.push(0);
        assert_eq!(decode(&odd), Err(DecodeError::Malformed));
        let mut huge = encode(&node, &Event::Wake(vec![]));
        huge.extend(std::iter::repeat_n(0u8, 8 * (MAX_IDS + 1)));
        assert_eq!(decode(&huge), Err(DecodeError::TooMany));
        let short = encode(&node, &Event::Connected { uid: 1, conn: 2 });
        assert_eq!(decode(&short[..short.len() - 1]), Err(DecodeError::Malformed));
        assert!(parse_servers("nats://127.0.0.1:4222, nats://127.0.0.1:4223").unwrap().len() == 2);
        assert!(parse_servers("").is_err());
        assert!(parse_servers(" , ").is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8.., 0..300)) {
            if let Ok((node, event)) = decode(&bytes) {
                // What decodes re-encodes to the same bytes.
                proptest::prop_assert_eq!(encode(&node, &event), bytes);
            }
        }
    }
}
