//! One IPC connection to vineyardd: framed JSON requests and replies, plus the
//! file descriptors that follow some replies in-band.
//!
//! Reads are exact (`read_exact`), never buffered ahead: an over-read would
//! swallow the byte that carries an fd and the kernel would close the fd.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::protocol::handshake::Exit;
use crate::protocol::{self, Ctx, Encoded};
use crate::shm;

/// Timeouts of a connection. `None` waits forever.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timeouts {
    /// Bound on connecting (retries included).
    pub connect: Duration,
    /// Bound on each blocking read.
    pub read: Option<Duration>,
    /// Bound on each blocking write.
    pub write: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            read: Some(Duration::from_secs(300)),
            write: Some(Duration::from_secs(60)),
        }
    }
}

/// How often a wait for a reply checks that the server is not stopped.
const STOP_CHECK: Duration = Duration::from_secs(1);

/// A framed connection over a UNIX socket.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    socket: PathBuf,
    timeouts: Timeouts,
    /// The server's pid, when this host's /proc shows it (SO_PEERCRED).
    peer_pid: Option<i32>,
}

/// True when `/proc/<pid>/stat` says the process is stopped (`T`) or
/// stopped by a tracer (`t`).
fn is_stopped(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": comm may hold spaces and parentheses
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| state == 'T' || state == 't')
}

impl Connection {
    /// Connects, retrying briefly while the socket is refused or missing (a
    /// server that is starting), but never longer than `timeouts.connect`.
    pub fn connect(socket: &Path, timeouts: Timeouts) -> Result<Connection> {
        let deadline = std::time::Instant::now() + timeouts.connect;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) => {
                    let retry = matches!(
                        e.kind(),
                        ErrorKind::ConnectionRefused | ErrorKind::NotFound | ErrorKind::WouldBlock
                    );
                    if !retry || std::time::Instant::now() >= deadline {
                        return Err(Error::Connect {
                            socket: socket.to_path_buf(),
                            source: e,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        let io = |e| Error::Connect {
            socket: socket.to_path_buf(),
            source: e,
        };
        stream.set_read_timeout(timeouts.read).map_err(io)?;
        stream.set_write_timeout(timeouts.write).map_err(io)?;
        let peer_pid =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .ok()
                .map(|c| c.pid())
                .filter(|p| *p > 0);
        Ok(Connection {
            stream,
            socket: socket.to_path_buf(),
            timeouts,
            peer_pid,
        })
    }

    /// The socket path this connection talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Changes the read timeout (used around requests that block on purpose).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        self.stream
            .set_read_timeout(t)
            .map_err(|e| self.io_error("set_read_timeout", e, false))
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Sends one request and reads its reply, checking the reply type.
    pub fn call(&mut self, msg: &Encoded) -> Result<Map<String, Value>> {
        self.send_raw(&msg.frame, msg.request)?;
        let reply = self.recv(msg.request)?;
        protocol::check_reply(reply, msg.reply, self.ctx(msg.request))
    }

    /// Sends frames (or other raw bytes) as they are.
    pub fn send_raw(&mut self, bytes: &[u8], request: &str) -> Result<()> {
        self.stream
            .write_all(bytes)
            .map_err(|e| self.io_error(request, e, true))
    }

    /// Waits until a reply starts to arrive, in slices of [`STOP_CHECK`],
    /// checking between slices that the server process is not stopped: a
    /// SIGSTOPped vineyardd keeps its socket open and never answers, and
    /// the read timeout (300 s by default) is a long way to find out. The
    /// read timeout in force still bounds the whole wait.
    fn wait_for_reply(&self, request: &str) -> Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;

        let Some(pid) = self.peer_pid else {
            return Ok(());
        };
        let limit = self.stream.read_timeout().ok().flatten();
        let start = std::time::Instant::now();
        loop {
            let slice = limit.map_or(STOP_CHECK, |l| {
                STOP_CHECK.min(l.saturating_sub(start.elapsed()))
            });
            let ms = PollTimeout::try_from(slice).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => {}
                // readable, closed, or poll failed: the read itself reports
                _ => return Ok(()),
            }
            if is_stopped(pid) {
                return Err(Error::Stopped {
                    socket: self.socket.clone(),
                    request: request.to_string(),
                    pid,
                });
            }
            if let Some(l) = limit {
                if start.elapsed() >= l {
                    return Err(Error::Timeout {
                        socket: self.socket.clone(),
                        request: request.to_string(),
                        seconds: l.as_secs_f64(),
                    });
                }
            }
        }
    }

    /// Reads one frame with exact reads.
    pub fn recv(&mut self, request: &str) -> Result<Map<String, Value>> {
        self.wait_for_reply(request)?;
        let mut header = [0u8; 8];
        self.read_exact(&mut header, request)?;
        let len = protocol::frame_len(header, self.ctx(request))?;
        let mut body = vec![0u8; len];
        self.read_exact(&mut body, request)?;
        protocol::parse_body(&body, self.ctx(request))
    }

    /// Reads exactly `buf.len()` raw bytes.
    pub fn read_exact(&mut self, buf: &mut [u8], request: &str) -> Result<()> {
        self.stream
            .read_exact(buf)
            .map_err(|e| self.io_error(request, e, false))
    }

    /// Receives one fd message; an fd promised but not sent is an error.
    pub fn recv_fd(&mut self, request: &str) -> Result<OwnedFd> {
        match shm::recv_fd(&self.stream) {
            Ok(Some(fd)) => Ok(fd),
            Ok(None) => Err(self
                .ctx(request)
                .protocol("the reply promised a file descriptor but none was attached")),
            Err(e) => Err(self.io_error(request, e, false)),
        }
    }

    /// Error context for `request`.
    pub fn ctx<'a>(&'a self, request: &'a str) -> Ctx<'a> {
        Ctx {
            socket: &self.socket,
            request,
        }
    }

    fn io_error(&self, request: &str, e: std::io::Error, writing: bool) -> Error {
        let socket = self.socket.clone();
        let request = request.to_string();
        match e.kind() {
            ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => {
                Error::Closed { socket, request }
            }
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                // The timeout in force (reads may run with a changed one).
                let t = if writing {
                    self.stream.write_timeout()
                } else {
                    self.stream.read_timeout()
                };
                let seconds = t.ok().flatten().map_or(0.0, |d| d.as_secs_f64());
                Error::Timeout {
                    socket,
                    request,
                    seconds,
                }
            }
            _ => Error::Io {
                socket,
                request,
                source: e,
            },
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // exit_request has no reply; best effort, the server also handles EOF.
        // A wedged server must not block the drop.
        let _ = self
            .stream
            .set_write_timeout(Some(Duration::from_millis(100)));
        if let Ok(frame) = protocol::encode_message(&Exit {}) {
            let _ = self.stream.write_all(&frame);
        }
    }
}
