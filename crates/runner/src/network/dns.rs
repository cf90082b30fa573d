//! The sandboxes' resolver: answers only the names a sandbox's policy allows, forwards them
//! to the upstream server, and lets the sandbox reach the addresses in the answer.
//!
//! It listens on UDP port 53 of [`Addressing::resolver`] inside the hub and recognizes the
//! sandbox by the query's source address, which the hub's reverse path check ties to the
//! sandbox's interface.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use super::addressing::Addressing;
use super::firewall::Firewall;
use super::link::{self, LinkError};
use super::policy::EgressPolicy;

/// How long the resolver waits for the upstream server.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Most queries in flight at once, for all sandboxes together and for one sandbox. Each holds
/// an upstream socket for up to [`UPSTREAM_TIMEOUT`]; queries over a limit are dropped, and
/// the sandbox's resolver library sends them again.
const MAX_IN_FLIGHT: usize = 256;
const MAX_IN_FLIGHT_PER_SANDBOX: usize = 16;

const RCODE_SERVFAIL: u8 = 2;
const RCODE_REFUSED: u8 = 5;

/// The policies the resolver applies, by sandbox index.
pub type Policies = Arc<Mutex<HashMap<u32, EgressPolicy>>>;

/// The resolver's shared parts.
pub struct Resolver {
    hub: PathBuf,
    addressing: Addressing,
    upstream: SocketAddr,
    firewall: Firewall,
    policies: Policies,
}

impl Resolver {
    /// Binds the resolver's socket in the hub and serves queries until the task is aborted.
    pub async fn start(
        hub: &Path,
        addressing: Addressing,
        upstream: SocketAddr,
        firewall: Firewall,
        policies: Policies,
    ) -> Result<tokio::task::JoinHandle<()>, LinkError> {
        let listen = SocketAddrV4::new(addressing.resolver(), 53);
        let socket = bind_in(hub, SocketAddr::V4(listen)).await?;
        let resolver = Arc::new(Self {
            hub: hub.to_owned(),
            addressing,
            upstream,
            firewall,
            policies,
        });
        Ok(tokio::spawn(resolver.serve(socket)))
    }

    async fn serve(self: Arc<Self>, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let mut buffer = vec![0u8; 4096];
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let per_client = Arc::new(Mutex::new(HashMap::new()));
        loop {
            let (length, client) = match socket.recv_from(&mut buffer).await {
                Ok(received) => received,
                Err(error) => {
                    tracing::warn!(%error, "the sandbox resolver failed to receive a query");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                continue;
            };
            let Some(client_slot) = ClientSlot::take(&per_client, client) else {
                continue;
            };
            let query = buffer[..length].to_vec();
            let resolver = self.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                let _slots = (slot, client_slot);
                if let Some(reply) = resolver.answer(&query, client).await {
                    let _ = socket.send_to(&reply, client).await;
                }
            });
        }
    }

    /// The reply to one query, or `None` for a packet that is not a query.
    async fn answer(&self, query: &[u8], client: SocketAddr) -> Option<Vec<u8>> {
        let name = question_name(query)?;
        let SocketAddr::V4(client_v4) = client else {
            return Some(error_reply(query, RCODE_REFUSED));
        };
        let Some(index) = self.addressing.index_of(*client_v4.ip()) else {
            return Some(error_reply(query, RCODE_REFUSED));
        };
        let policy = self
            .policies
            .lock()
            .expect("policies lock")
            .get(&index)
            .cloned();
        let Some(policy) = policy.filter(|policy| policy.resolves(&name)) else {
            return Some(error_reply(query, RCODE_REFUSED));
        };

        let reply = match self.forward(query).await {
            Ok(reply) => reply,
            Err(error) => {
                tracing::debug!(%error, name, "upstream name server failed");
                return Some(error_reply(query, RCODE_SERVFAIL));
            }
        };
        // Answers open the firewall only for a domain allow list: with a CIDR list alone every
        // name resolves, but only the listed networks are reachable.
        if policy.opens_resolved_addresses() {
            let addresses = answer_addresses(&reply);
            // The addresses must be reachable before the sandbox sees them, or its first
            // connection races the rule.
            if let Err(error) = self.firewall.allow_resolved(index, &addresses).await {
                tracing::warn!(%error, name, "failed to allow resolved addresses");
                return Some(error_reply(query, RCODE_SERVFAIL));
            }
        }
        Some(reply)
    }

    async fn forward(&self, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let socket = bind_in(&self.hub, any)
            .await
            .map_err(std::io::Error::other)?;
        socket.connect(self.upstream).await?;
        socket.send(query).await?;
        let mut buffer = vec![0u8; 4096];
        let length = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buffer))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        buffer.truncate(length);
        if buffer.get(..2) != query.get(..2) {
            return Err(std::io::Error::other("the upstream reply has another id"));
        }
        Ok(buffer)
    }
}

/// One query in flight for a client address; counts against
/// [`MAX_IN_FLIGHT_PER_SANDBOX`] until dropped.
struct ClientSlot {
    counts: Arc<Mutex<HashMap<SocketAddr, usize>>>,
    client: SocketAddr,
}

impl ClientSlot {
    fn take(counts: &Arc<Mutex<HashMap<SocketAddr, usize>>>, client: SocketAddr) -> Option<Self> {
        // Counted by address without the port: a sandbox sends from many ports.
        let client = SocketAddr::new(client.ip(), 0);
        let mut map = counts.lock().expect("resolver counts lock");
        let count = map.entry(client).or_insert(0);
        if *count >= MAX_IN_FLIGHT_PER_SANDBOX {
            return None;
        }
        *count += 1;
        Some(Self {
            counts: Arc::clone(counts),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().expect("resolver counts lock");
        if let Some(count) = map.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.client);
            }
        }
    }
}

/// A UDP socket bound in the namespace at `namespace`.
async fn bind_in(namespace: &Path, address: SocketAddr) -> Result<UdpSocket, LinkError> {
    let socket = link::in_namespace(namespace, move || {
        let socket = std::net::UdpSocket::bind(address)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    })
    .await?;
    UdpSocket::from_std(socket).map_err(|source| LinkError::Enter {
        path: namespace.to_owned(),
        source,
    })
}

/// The name in a standard query's one question, lowercase and without the trailing dot.
/// `None` for replies, other opcodes and a question count other than one, so that no name
/// the policy did not check travels upstream.
pub fn question_name(message: &[u8]) -> Option<String> {
    let flags = *message.get(2)?;
    let question_count = u16::from_be_bytes([*message.get(4)?, *message.get(5)?]);
    let opcode = (flags >> 3) & 0x0f;
    if flags & 0x80 != 0 || opcode != 0 || question_count != 1 {
        return None;
    }
    let (name, _) = read_name(message, 12)?;
    Some(name)
}

/// Reads a possibly compressed name at `offset`; returns it and the offset after it.
fn read_name(message: &[u8], mut offset: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut end = None;
    // Bounds pointer loops: a name has at most 127 labels.
    for _ in 0..128 {
        let length = *message.get(offset)?;
        match length {
            0 => {
                let name = labels.join(".").to_ascii_lowercase();
                return Some((name, end.unwrap_or(offset + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let pointer =
                    usize::from(u16::from_be_bytes([l & 0x3f, *message.get(offset + 1)?]));
                end.get_or_insert(offset + 2);
                offset = pointer;
            }
            l if l < 64 => {
                let label = message.get(offset + 1..offset + 1 + usize::from(l))?;
                // A dot inside a label would read as two labels once joined.
                if label.contains(&b'.') {
                    return None;
                }
                labels.push(String::from_utf8_lossy(label).into_owned());
                offset += 1 + usize::from(l);
            }
            _ => return None,
        }
    }
    None
}

/// The IPv4 addresses in a reply's answer section (A records of class IN).
pub fn answer_addresses(message: &[u8]) -> Vec<Ipv4Addr> {
    let mut addresses = Vec::new();
    let count = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([
            *message.get(at)?,
            *message.get(at + 1)?,
        ]))
    };
    let (Some(questions), Some(answers)) = (count(4), count(6)) else {
        return addresses;
    };
    let mut offset = 12;
    for _ in 0..questions {
        let Some((_, after)) = read_name(message, offset) else {
            return addresses;
        };
        offset = after + 4;
    }
    for _ in 0..answers {
        let Some((_, after)) = read_name(message, offset) else {
            break;
        };
        let (Some(kind), Some(class), Some(length)) =
            (count(after), count(after + 2), count(after + 8))
        else {
            break;
        };
        let data = after + 10;
        let Some(rdata) = message.get(data..data + usize::from(length)) else {
            break;
        };
        if kind == 1 && class == 1 && rdata.len() == 4 {
            addresses.push(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
        }
        offset = data + usize::from(length);
    }
    addresses
}

/// A reply with `rcode` and the query's question, without answers.
fn error_reply(query: &[u8], rcode: u8) -> Vec<u8> {
    let mut reply = query.to_vec();
    if reply.len() >= 12 {
        // QR set, opcode and RD kept; RA set; the rcode replaced.
        reply[2] = 0x80 | (reply[2] & 0x79);
        reply[3] = 0x80 | rcode;
        // No answers, authority or additional records (an EDNS record would be stale).
        reply[6..12].fill(0);
        if let Some((_, after)) = read_name(&reply, 12) {
            reply.truncate((after + 4).min(reply.len()));
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str) -> Vec<u8> {
        let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            message.push(label.len() as u8);
            message.extend_from_slice(label.as_bytes());
        }
        message.extend_from_slice(&[0, 0, 1, 0, 1]);
        message
    }

    #[test]
    fn question_name_read() {
        assert_eq!(
            question_name(&query("Allowed.Test")).as_deref(),
            Some("allowed.test")
        );
        assert_eq!(question_name(&[0; 5]), None);
    }

    #[test]
    fn answers_with_compression_read() {
        let mut reply = query("a.test");
        reply[2] = 0x81;
        reply[3] = 0x80;
        reply[7] = 2;
        // Two A records whose names point at the question.
        for last in [10u8, 11] {
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 51, 100, last]);
        }
        assert_eq!(
            answer_addresses(&reply),
            vec![
                Ipv4Addr::new(198, 51, 100, 10),
                Ipv4Addr::new(198, 51, 100, 11)
            ]
        );
    }

    #[test]
    fn refused_reply_keeps_question() {
        let query = query("denied.test");
        let reply = error_reply(&query, RCODE_REFUSED);
        assert_eq!(reply.len(), query.len());
        assert_eq!(reply[3] & 0x0f, RCODE_REFUSED);
        assert_eq!(reply[2] & 0x80, 0x80);
        assert_eq!(&reply[..2], &query[..2]);
    }
}
