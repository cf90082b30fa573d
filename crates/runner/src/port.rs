//! Connections to TCP ports inside a sandbox, for preview URLs.
//!
//! A sandbox's network namespace has no route from the host, so the runner creates the socket
//! inside it: a long-lived thread enters the namespace of the sandbox's PID 1 with `setns`,
//! creates a non-blocking socket there and returns to the host's namespace. A socket keeps the namespace it was created
//! in, so the connect that follows, on the async runtime, reaches the sandbox's loopback.
//! Apps that listen on `0.0.0.0`, `127.0.0.1`, `::` or `::1` are all reachable this way.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use tokio::net::{TcpSocket, TcpStream};

use crate::runner::Runner;

/// Errors of connecting to a port inside a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("sandbox {sandbox_id} is not running")]
    NotRunning { sandbox_id: String },
    #[error("failed to create a socket in the network namespace of sandbox {sandbox_id}")]
    Socket {
        sandbox_id: String,
        #[source]
        source: io::Error,
    },
    #[error("nothing accepts connections on port {port} of sandbox {sandbox_id}")]
    Refused {
        sandbox_id: String,
        port: u16,
        #[source]
        source: io::Error,
    },
}

impl Runner {
    /// Opens a TCP connection to `port` on the loopback of a started sandbox: `127.0.0.1`
    /// first, then `::1`, so apps bound to either address family are reached.
    pub async fn connect_to_port(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<TcpStream, PortError> {
        let namespace = self.network_namespace(sandbox_id).await?;
        let socket_error = |source| PortError::Socket {
            sandbox_id: sandbox_id.to_owned(),
            source,
        };

        let (ipv4, ipv6) = sockets_in(namespace).await.map_err(socket_error)?;
        let (ipv4, ipv6) = (to_tcp_socket(ipv4), ipv6.map(to_tcp_socket));

        let ipv4_error = match ipv4
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
        {
            Ok(stream) => return Ok(stream),
            Err(error) => error,
        };
        // A sandbox may lack IPv6 on loopback; then the IPv4 error is the one that explains.
        let Some(ipv6) = ipv6 else {
            return Err(refused(sandbox_id, port, ipv4_error));
        };
        ipv6.connect(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
            .await
            .map_err(|_| refused(sandbox_id, port, ipv4_error))
    }

    /// Opens the network namespace of a running sandbox's PID 1.
    async fn network_namespace(&self, sandbox_id: &str) -> Result<File, PortError> {
        let not_running = || PortError::NotRunning {
            sandbox_id: sandbox_id.to_owned(),
        };
        let instance = self.instance(sandbox_id).map_err(|_| not_running())?;
        let record = instance.record.lock().await;
        let process = record.process.as_ref().ok_or_else(not_running)?;
        if !self.runtime.is_running(process) {
            return Err(not_running());
        }
        // The record lock keeps a stop from ending PID 1 (and a new process from taking
        // its pid) between the check above and this open.
        File::open(format!("/proc/{}/ns/net", process.pid)).map_err(|_| not_running())
    }
}

fn refused(sandbox_id: &str, port: u16, source: io::Error) -> PortError {
    PortError::Refused {
        sandbox_id: sandbox_id.to_owned(),
        port,
        source,
    }
}

/// Sockets made inside a namespace: IPv4, and IPv6 when the namespace has it.
type Sockets = (OwnedFd, Option<OwnedFd>);

/// A request to the socket thread.
type Job = (File, tokio::sync::oneshot::Sender<io::Result<Sockets>>);

/// The socket thread's queue, while the thread runs.
static SOCKET_THREAD: Mutex<Option<std::sync::mpsc::Sender<Job>>> = Mutex::new(None);

/// Creates an IPv4 and, when the namespace has IPv6, an IPv6 TCP socket inside `namespace`.
///
/// `setns` changes the namespace of the calling thread only, so one long-lived thread does
/// it for every sandbox: it enters the namespace, creates the sockets and returns to the
/// host's namespace. The thread starts on first use, and again if it ever failed to return.
async fn sockets_in(namespace: File) -> io::Result<Sockets> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    {
        let mut thread = SOCKET_THREAD.lock().unwrap_or_else(|e| e.into_inner());
        let job = (namespace, reply);
        let unsent = match thread.as_ref() {
            Some(sender) => sender.send(job).err().map(|error| error.0),
            None => Some(job),
        };
        if let Some(job) = unsent {
            start_socket_thread(&mut thread)?
                .send(job)
                .map_err(|_| gone())?;
        }
    }
    answer.await.map_err(|_| gone())?
}

fn gone() -> io::Error {
    io::Error::other("the socket thread ended")
}

/// Starts the socket thread and returns its queue, kept in `thread` as well.
fn start_socket_thread(
    thread: &mut Option<std::sync::mpsc::Sender<Job>>,
) -> io::Result<std::sync::mpsc::Sender<Job>> {
    let host = File::open("/proc/thread-self/ns/net")?;
    let (sender, jobs) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("netns-sockets".to_owned())
        .spawn(move || {
            for (namespace, reply) in jobs {
                let result = setns(&namespace, CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)
                    .and_then(|()| {
                        let ipv4 = new_socket(AddressFamily::Inet);
                        let ipv6 = new_socket(AddressFamily::Inet6).ok();
                        Ok((ipv4?, ipv6))
                    });
                // A thread that cannot return to the host's namespace must create no more
                // sockets: it ends, and the next request starts a new one.
                let returned = setns(&host, CloneFlags::CLONE_NEWNET);
                let _ = reply.send(result);
                if returned.is_err() {
                    tracing::error!(
                        "the socket thread failed to return to the host's network namespace"
                    );
                    return;
                }
            }
        })?;
    *thread = Some(sender.clone());
    Ok(sender)
}

fn new_socket(family: AddressFamily) -> io::Result<OwnedFd> {
    socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

fn to_tcp_socket(fd: OwnedFd) -> TcpSocket {
    TcpSocket::from_std_stream(std::net::TcpStream::from(fd))
}
