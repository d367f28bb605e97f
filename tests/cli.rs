//! The command line through `cli::run_with` (and the built binary for
//! `serve`): usage errors, and store commands against a real vineyardd.
//! (The deploy commands are `kedro vineyard catalog|docker|argo` only: see
//! tests/python/test_cli_*.py.)

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vineyard_kedro::cli::{run, run_with};
use vineyard_kedro::{Client, ObjectId, ObjectMeta};

/// Runs the CLI; returns (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let argv = std::iter::once("vineyard-kedro").chain(args.iter().copied());
    let code = run_with(argv, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// Like [`cli`] with `--socket` added.
fn on(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let socket = socket.to_str().unwrap();
    cli(&[args, &["--socket", socket]].concat())
}

/// Puts `bytes` as a named, persisted object (a blob plus a tree naming it).
fn put_named(client: &mut Client, name: &str, bytes: &[u8]) -> ObjectId {
    let blob = client.create_buffer(bytes.len() as u64).unwrap();
    // SAFETY: the blob was just created by this connection and is not sealed yet.
    unsafe { blob.as_mut_slice() }.copy_from_slice(bytes);
    client.seal(blob.id()).unwrap();
    let mut meta = ObjectMeta::new("vineyard_kedro::Bytes");
    meta.set("instance_id", client.instance_id());
    meta.set("nbytes", bytes.len() as u64);
    meta.set("buffer_", json!({"id": blob.id().to_string(), "typename": "vineyard::Blob", "instance_id": client.instance_id()}));
    let created = client.create_data(&meta).unwrap();
    client.persist(created.id).unwrap();
    client.put_name(created.id, name).unwrap();
    created.id
}

fn memory_usage(socket: &Path) -> u64 {
    Client::connect(socket).unwrap().memory_usage().unwrap()
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["rm", "--socket", "/x"],
        &["gc", "--socket", "/x"],
        &["gc", "-n", "", "--socket", "/x"],
        &["argo", "render"],
        &["serve", "--meta", "zookeeper"],
    ] {
        let (code, out, err) = cli(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(!err.is_empty(), "{args:?} said nothing on stderr");
    }
    let (code, out, _) = cli(&["--help"]);
    assert_eq!(code, 0);
    for cmd in ["ls", "inspect", "rm", "gc", "status", "serve"] {
        assert!(
            out.contains(&format!("\n  {cmd} ")),
            "{cmd} missing from help:\n{out}"
        );
    }
    for cmd in ["catalog", "argo", "docker"] {
        assert!(
            !out.contains(&format!("\n  {cmd} ")),
            "{cmd} in help:\n{out}"
        );
    }
    assert_eq!(cli(&["ls", "--help"]).0, 0);
    assert_eq!(run(["vineyard-kedro", "--version"]), 0);
}

#[test]
fn store_commands_against_a_real_vineyardd() {
    let server = common::start_server("64Mi");
    let socket = server.socket();
    let baseline = memory_usage(socket);
    let ids = {
        let mut writer = Client::connect(socket).unwrap();
        [
            ("run-1/a", 1000),
            ("run-1/b", 2000),
            ("run-1/sub/c", 300),
            ("other/keep", 40),
            ("plain", 5),
        ]
        .map(|(n, len)| (n, put_named(&mut writer, n, &vec![7u8; len])))
    }; // the writer disconnects: its references to the blobs go away
    assert!(
        memory_usage(socket) >= baseline + 3345,
        "the objects take memory"
    );

    let (code, out, err) = on(socket, &["ls", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 5);
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap().clone();
    assert_eq!(row("run-1/a")["id"], ids[0].1.to_string());
    assert_eq!(row("run-1/a")["typename"], "vineyard_kedro::Bytes");
    assert_eq!(row("run-1/a")["size"], 1000);
    assert_eq!(row("run-1/a")["namespace"], "run-1");
    assert_eq!(row("run-1/sub/c")["namespace"], "run-1/sub");
    assert_eq!(row("plain")["namespace"], "");

    let (code, out, _) = on(socket, &["ls", "-n", "run-1", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), 3);
    let (code, out, _) = on(socket, &["ls"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("run-1/b") && l.contains("2.0 KiB") && l.ends_with("run-1")),
        "{out}"
    );

    let (code, out, _) = on(socket, &["inspect", "run-1/a"]);
    assert_eq!(code, 0);
    let meta: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(meta["typename"], "vineyard_kedro::Bytes");
    assert_eq!(meta["buffer_"]["typename"], "vineyard::Blob");
    let (code, out, _) = on(socket, &["inspect", &ids[1].1.to_string()]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["nbytes"], 2000);
    let (code, _, err) = on(socket, &["inspect", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("nope"), "{err}");

    let (code, out, _) = on(socket, &["rm", "plain"]);
    assert_eq!(code, 0);
    assert!(out.contains("removed plain"));
    let (code, _, err) = on(socket, &["rm", "plain", "other/keep"]);
    assert_eq!(code, 1, "a missing name fails the command");
    assert!(err.contains("\"plain\""), "{err}");
    let mut client = Client::connect(socket).unwrap();
    assert_eq!(
        client.try_get_name("other/keep").unwrap(),
        None,
        "the existing name was still removed"
    );
    assert!(!client.exists(ids[3].1).unwrap());

    let (code, out, _) = on(socket, &["gc", "--namespace", "run-1/", "--json"]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["deleted"], 3);
    assert_eq!(report["namespace"], "run-1");
    for (_, id) in &ids[..3] {
        assert!(!client.exists(*id).unwrap(), "{id} survived gc");
    }
    let (code, out, _) = on(socket, &["gc", "--namespace", "run-1"]);
    assert_eq!(code, 0, "an empty namespace is not an error");
    assert!(out.contains("deleted 0"), "{out}");
    assert_eq!(on(socket, &["ls", "--json"]).1.trim(), "[]");
    drop(client);

    let deadline = Instant::now() + Duration::from_secs(5);
    while memory_usage(socket) != baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        memory_usage(socket),
        baseline,
        "memory did not return to its baseline after gc"
    );
    let (code, out, _) = on(socket, &["status", "--json"]);
    assert_eq!(code, 0);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["memory_usage"], baseline);
    assert_eq!(status["memory_limit"], 64u64 << 20);
    let (code, out, _) = on(socket, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("of 64.0 MiB"), "{out}");
}

#[test]
fn store_commands_report_an_unreachable_socket() {
    let (code, _, err) = cli(&["ls", "--socket", "/nonexistent/vineyard.sock"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/vineyard.sock"), "{err}");
}

#[test]
fn serve_runs_until_sigterm_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("v.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vineyard-kedro"))
        .args([
            "serve",
            "--size",
            "32Mi",
            "--socket",
            link.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    if first.is_empty() {
        let _ = child.wait();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        panic!("serve did not start: {err}");
    }
    assert_eq!(first.trim(), link.to_str().unwrap());
    let (code, out, err) = on(&link, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("of 32.0 MiB"), "{out}");
    assert_eq!(
        on(&link, &["serve"]).0,
        1,
        "a second server on a live socket is refused"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "the socket link was left behind"
    );
}
