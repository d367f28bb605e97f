//! Helpers shared by the integration tests.
//!
//! * [`start_server`] launches a real, private vineyardd (`--meta=local
//!   --rpc=false`) and fails the test loudly when no binary can be found.
//! * [`FakeServer`] is a tiny in-process stand-in for vineyardd, used only
//!   for fault injection: a UNIX listener in a temp dir served by one thread
//!   that runs a scripted closure against the first connection. The script
//!   reads frames and writes whatever it likes (frames, raw bytes, fds).
//!   A panic in the script (a failed expectation about what the client sent)
//!   fails the test when the `FakeServer` is dropped.

#![allow(dead_code)]

pub mod cluster;

use std::fs::File;
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vineyard_kedro::{Server, ServerOptions};

/// Starts a private vineyardd with `--size=<size>`.
///
/// The binary comes from `$VINEYARDD` or the launcher's search (virtualenv,
/// `$PATH`). If none is found the calling test panics, so a machine without
/// vineyardd shows failures rather than a silently green run.
pub fn start_server(size: &str) -> Server {
    let opts = ServerOptions {
        size: size.to_string(),
        ..ServerOptions::default()
    };
    match Server::start(&opts) {
        Ok(server) => server,
        Err(e) => panic!(
            "cannot start a real vineyardd for this test: {e}\n\
             Set VINEYARDD=/path/to/vineyardd (e.g. <venv>/lib/python3.*/site-packages/vineyard/bdist/vineyardd) \
             or install it with `pip install vineyard-bdist`."
        ),
    }
}

/// The register reply the fake sends (what a `--rpc=false` vineyardd says).
pub fn register_reply() -> Value {
    json!({"type": "register_reply", "instance_id": 0, "version": "0.24.2",
           "rpc_endpoint": "0.0.0.0:0", "ipc_socket": "x", "session_id": 0, "store_match": true})
}

/// How long the fake waits for the client to connect or to send something
/// before it gives up (and fails the test).
const FAKE_PATIENCE: Duration = Duration::from_secs(10);

/// A scripted in-process vineyardd stand-in (one connection).
pub struct FakeServer {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Listens on a fresh socket and runs `script` on the first connection.
    pub fn start<F>(script: F) -> FakeServer
    where
        F: FnOnce(&mut Peer) + Send + 'static,
    {
        let dir = tempfile::tempdir().expect("fake vineyardd: temp dir");
        let socket = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&socket).expect("fake vineyardd: bind");
        listener
            .set_nonblocking(true)
            .expect("fake vineyardd: nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("fake-vineyardd".into())
            .spawn(move || {
                let deadline = Instant::now() + FAKE_PATIENCE;
                let stream = loop {
                    match listener.accept() {
                        Ok((s, _)) => break s,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            if stop2.load(Ordering::SeqCst) {
                                return; // the test ended without connecting
                            }
                            assert!(
                                Instant::now() < deadline,
                                "fake vineyardd: no client connected within {FAKE_PATIENCE:?}"
                            );
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => panic!("fake vineyardd: accept failed: {e}"),
                    }
                };
                stream
                    .set_nonblocking(false)
                    .expect("fake vineyardd: blocking stream");
                stream
                    .set_read_timeout(Some(FAKE_PATIENCE))
                    .expect("fake vineyardd: read timeout");
                let mut peer = Peer { stream };
                script(&mut peer);
            })
            .expect("fake vineyardd: spawn");
        FakeServer {
            _dir: dir,
            socket,
            stop,
            handle: Some(handle),
        }
    }

    /// The socket path to connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Waits for the script to end; re-raises a panic of the script.
    pub fn finish(mut self) {
        self.join();
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            if let Err(panic) = h.join() {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.join();
    }
}

/// The fake's side of the connection.
pub struct Peer {
    stream: UnixStream,
}

impl Peer {
    /// Reads one frame; `None` on a clean EOF before the header.
    pub fn read_frame(&mut self) -> Option<Value> {
        let mut header = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            match self.stream.read(&mut header[got..]) {
                Ok(0) if got == 0 => return None,
                Ok(0) => panic!("fake vineyardd: client closed mid-header"),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("fake vineyardd: reading a header failed: {e}"),
            }
        }
        let len = u64::from_le_bytes(header);
        assert!(
            len <= 1 << 20,
            "fake vineyardd: client sent a frame of {len} bytes"
        );
        let mut body = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut body)
            .expect("fake vineyardd: client closed mid-frame");
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "fake vineyardd: client sent invalid JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        assert!(
            v.is_object(),
            "fake vineyardd: client sent a non-object: {v}"
        );
        Some(v)
    }

    /// Reads one frame and checks its `type`.
    pub fn expect(&mut self, ty: &str) -> Value {
        let v = self
            .read_frame()
            .unwrap_or_else(|| panic!("fake vineyardd: EOF while waiting for {ty}"));
        assert_eq!(v["type"], ty, "fake vineyardd: unexpected request {v}");
        v
    }

    /// Answers the `register_request` that `Client::connect_with` sends first.
    pub fn register(&mut self) {
        self.expect("register_request");
        self.write_frame(&register_reply());
    }

    /// Writes one well-formed frame.
    pub fn write_frame(&mut self, v: &Value) {
        let body = v.to_string();
        let mut out = (body.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(body.as_bytes());
        self.write_raw(&out);
    }

    /// Writes a frame header announcing `len` bytes.
    pub fn write_header(&mut self, len: u64) {
        self.write_raw(&len.to_le_bytes());
    }

    /// Writes arbitrary bytes. A client that already hung up (it gave up on
    /// a bad reply, which is what fault tests provoke) is not an error here.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        match self.stream.write_all(bytes) {
            Ok(()) => {}
            Err(e) if client_gone(&e) => {}
            Err(e) => panic!("fake vineyardd: write failed: {e}"),
        }
    }

    /// Sends one fd the way vineyardd does: one data byte plus SCM_RIGHTS.
    pub fn send_fd(&mut self, fd: &OwnedFd) {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let raw = [fd.as_raw_fd()];
        let iov = [IoSlice::new(&[0x14])];
        let cmsg = [ControlMessage::ScmRights(&raw)];
        match sendmsg::<()>(
            self.stream.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => assert_eq!(n, 1),
            Err(e) if client_gone(&std::io::Error::from(e)) => {}
            Err(e) => panic!("fake vineyardd: sendmsg failed: {e}"),
        }
    }

    /// Waits until the client closes the connection, ignoring whatever it
    /// sends meanwhile (its `exit_request` on drop).
    pub fn wait_for_close(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("fake vineyardd: client did not close the connection: {e}"),
            }
        }
    }

    /// Closes both directions now (the client sees EOF).
    pub fn close(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A memory file like vineyardd's: a memfd of `len` bytes starting with `init`.
pub struct MemFile {
    pub file: File,
}

impl MemFile {
    pub fn new(len: u64, init: &[u8]) -> MemFile {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create(c"vineyard-bulk-fake", MFdFlags::MFD_CLOEXEC).expect("memfd_create");
        let file = File::from(fd);
        file.set_len(len).expect("ftruncate memfd");
        file.write_all_at(init, 0).expect("write memfd");
        MemFile { file }
    }

    /// A second handle to the same memory file, to send to the client.
    pub fn fd(&self) -> OwnedFd {
        OwnedFd::from(self.file.try_clone().expect("dup memfd"))
    }

    /// Reads `len` bytes at `offset` (what the client wrote through its mapping).
    pub fn read_at(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.file
            .read_exact_at(&mut out, offset)
            .expect("read memfd");
        out
    }
}

/// A blob payload as vineyardd writes it.
pub fn payload(
    id: u64,
    store_fd: i64,
    data_offset: u64,
    data_size: u64,
    map_size: u64,
    sealed: bool,
) -> Value {
    json!({"object_id": id, "store_fd": store_fd, "data_offset": data_offset, "data_size": data_size,
           "map_size": map_size, "pointer": 140489557016640u64, "is_sealed": sealed, "is_owner": true, "is_gpu": false})
}

/// True when a write failed only because the client closed its end.
fn client_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    )
}

/// Deterministic, position-dependent bytes (catches offset and length bugs,
/// and is incompressible enough to exercise a migration's zstd framing).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
