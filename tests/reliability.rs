//! Reliability of the core against a REAL vineyardd: a full store, a writer
//! that dies mid-save, a server that dies under a client, and the bounds of
//! every wait. Each test states the bound it proves.
//!
//! Needs the vineyardd binary (`VINEYARDD=...` or vineyard-bdist in the
//! active virtualenv), like tests/client.rs.

mod common;

use std::time::{Duration, Instant};

use common::start_server;
use serde_json::{json, Value};
use vineyard_kedro::cli::run_with;
use vineyard_kedro::store::{self, PutOptions, Source};
use vineyard_kedro::{Client, Error, ObjectId, Server, Timeouts};

const MIB: u64 = 1 << 20;

fn connect(server: &Server) -> Client {
    Client::connect(server.socket()).expect("connect to the test vineyardd")
}

/// A tree of `n` blob members `b0..`, one per source.
fn tree_of(n: usize) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("typename".into(), "test::Blobs".into());
    for i in 0..n {
        m.insert(format!("b{i}"), json!({ "__blob__": i }));
    }
    Value::Object(m)
}

/// Puts `buffers` under `name`; returns the put's result.
fn put_named(c: &mut Client, name: &str, buffers: &[&[u8]]) -> vineyard_kedro::Result<ObjectId> {
    let sources: Vec<Source> = buffers.iter().map(|b| Source::from_slice(b)).collect();
    let opts = PutOptions {
        persist: true,
        name: Some(name.to_string()),
        ..Default::default()
    };
    let r = store::put(c, &tree_of(buffers.len()), &sources, &opts)?;
    if let Some(old) = r.replaced {
        c.del_data(&[old], false, true)?;
    }
    Ok(r.id)
}

/// The bytes of every blob of the object under `name`, by member key.
fn read_named(c: &mut Client, name: &str) -> Vec<Vec<u8>> {
    let id = c.get_name(name, false).expect("the name resolves");
    let f = store::get(c, id).expect("the object loads");
    let mut keys: Vec<String> = f
        .meta
        .0
        .keys()
        .filter(|k| k.starts_with('b'))
        .cloned()
        .collect();
    keys.sort_by_key(|k| k[1..].parse::<usize>().unwrap());
    keys.iter()
        .map(|k| {
            let bid = f.meta.member(k).and_then(|m| m.id()).unwrap();
            f.blobs[&bid].as_slice().to_vec()
        })
        .collect()
}

fn sealed_blobs(c: &mut Client) -> Vec<ObjectId> {
    let mut v: Vec<ObjectId> = c
        .list_data("vineyard::Blob", false, 1 << 20)
        .unwrap()
        .into_keys()
        .collect();
    v.sort();
    v
}

fn gc(server: &Server, args: &[&str]) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let socket = server.socket().to_str().unwrap();
    let argv = ["vineyard-kedro", "gc", "--socket", socket]
        .into_iter()
        .chain(args.iter().copied());
    let code = run_with(argv, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

// ---- store full ----------------------------------------------------------------

/// A multi-blob save that does not fit fails with the bytes asked for and the
/// bytes free, and leaves the store exactly as it was: the old value under
/// the name, the same memory usage, the same blobs. (vineyardd 0.24.2 keeps
/// the first blobs of a failed `create_buffers` batch; the client must not
/// send a batch that can fail half way.)
#[test]
fn a_save_that_does_not_fit_leaves_the_store_exactly_as_it_was() {
    let server = start_server("64Mi");
    let mut c = connect(&server);
    let old = vec![3u8; (10 * MIB) as usize];
    put_named(&mut c, "full/x", &[&old]).unwrap();
    let usage = c.memory_usage().unwrap();
    let blobs = sealed_blobs(&mut c);
    let free = (64 * MIB) - usage;

    // 20 + 20 + 30 MiB: the first two fit, the third does not.
    let (a, b, d) = (
        vec![1u8; (20 * MIB) as usize],
        vec![2u8; (20 * MIB) as usize],
        vec![4u8; (30 * MIB) as usize],
    );
    let err = put_named(&mut c, "full/x", &[&a, &b, &d]).unwrap_err();
    match &err {
        Error::StoreFull {
            requested,
            available,
            limit,
            socket,
            ..
        } => {
            assert_eq!(*requested, 70 * MIB, "{err}");
            assert_eq!(*available, free, "{err}");
            assert_eq!(*limit, 64 * MIB);
            assert_eq!(socket, server.socket());
        }
        other => panic!("expected StoreFull, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&(70 * MIB).to_string()) && text.contains(&free.to_string()),
        "{text}"
    );
    assert_eq!(
        c.memory_usage().unwrap(),
        usage,
        "a failed save left memory allocated"
    );
    assert_eq!(sealed_blobs(&mut c), blobs);
    assert_eq!(read_named(&mut c, "full/x"), vec![old.clone()]);

    // A save that fits, but too tightly for a batch to be safe, goes through
    // the one-by-one path and succeeds.
    let (e, f) = (
        vec![5u8; (24 * MIB) as usize],
        vec![6u8; (24 * MIB) as usize],
    );
    put_named(&mut c, "full/x", &[&e, &f]).unwrap();
    assert_eq!(read_named(&mut c, "full/x"), vec![e, f]);
    assert_eq!(c.memory_usage().unwrap(), 48 * MIB);
}

/// Many small failing saves in a row do not creep: memory stays put.
#[test]
fn repeated_failing_saves_do_not_leak() {
    let server = start_server("64Mi");
    let mut c = connect(&server);
    let base = c.memory_usage().unwrap();
    let big = vec![0u8; (40 * MIB) as usize];
    for _ in 0..20 {
        let err =
            put_named(&mut c, "leak/x", &[&big[..(8 * MIB) as usize], &big, &big]).unwrap_err();
        assert!(matches!(err, Error::StoreFull { .. }), "{err:?}");
    }
    assert_eq!(c.memory_usage().unwrap(), base);
    assert_eq!(c.try_get_name("leak/x").unwrap(), None);
}

// ---- a writer that dies mid-save -----------------------------------------------

/// What a save killed during its copy leaves (sealed blobs, no metadata, no
/// live connection) is freed by `gc --orphans`; a live writer's sealed but
/// not yet referenced blobs, and every named object's blobs, are not.
#[test]
fn gc_orphans_frees_a_dead_writers_blobs_and_nothing_else() {
    let server = start_server("256Mi");
    let mut keeper = connect(&server);
    let kept = vec![9u8; MIB as usize];
    put_named(&mut keeper, "ns/kept", &[&kept]).unwrap();
    let baseline = keeper.memory_usage().unwrap();

    // A dead writer: allocated and sealed (as put does before copying), then
    // its connection is gone.
    let dead_ids: Vec<ObjectId> = {
        let mut dead = connect(&server);
        let blobs = dead.create_buffers(&[8 * MIB, 4 * MIB]).unwrap();
        for b in &blobs {
            dead.seal(b.id()).unwrap();
        }
        blobs.iter().map(|b| b.id()).collect()
    };
    // A live writer in the same state.
    let mut live = connect(&server);
    let live_blobs = live.create_buffers(&[2 * MIB]).unwrap();
    live.seal(live_blobs[0].id()).unwrap();
    // The dead connection's teardown is asynchronous in vineyardd.
    let deadline = Instant::now() + Duration::from_secs(5);
    while dead_ids.iter().any(|b| keeper.is_in_use(*b).unwrap()) {
        assert!(
            Instant::now() < deadline,
            "vineyardd kept a dead connection's references"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(keeper.memory_usage().unwrap(), baseline + 14 * MIB);

    let (code, out, err) = gc(&server, &["--orphans", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["orphan_blobs"], 2, "{report}");
    assert_eq!(report["orphan_bytes"], 12 * MIB, "{report}");
    // Unreferenced but held by a live connection: the live writer's blob.
    // The keeper's blob of ns/kept is referenced, so it is not a candidate.
    assert_eq!(report["blobs_in_use_skipped"], 1, "{report}");
    assert_eq!(keeper.memory_usage().unwrap(), baseline + 2 * MIB);
    assert!(
        live.exists(live_blobs[0].id()).unwrap(),
        "a live writer's blob was freed"
    );
    assert_eq!(read_named(&mut keeper, "ns/kept"), vec![kept]);

    // Once the live writer finishes its object, a second gc has nothing to do.
    let mut meta = vineyard_kedro::ObjectMeta::new("test::Blobs");
    meta.set("instance_id", live.instance_id());
    meta.set(
        "b0",
        json!({"id": live_blobs[0].id().to_string(), "typename": "vineyard::Blob", "instance_id": live.instance_id()}),
    );
    live.create_data(&meta).unwrap();
    drop(live);
    std::thread::sleep(Duration::from_millis(100));
    let (code, out, _) = gc(&server, &["--orphans", "--json"]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["orphan_blobs"], 0, "{report}");
    assert_eq!(keeper.memory_usage().unwrap(), baseline + 2 * MIB);
}

#[test]
fn gc_needs_a_namespace_or_orphans() {
    let server = start_server("64Mi");
    let (code, _, err) = gc(&server, &[]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = gc(&server, &["--orphans"]);
    assert_eq!(code, 0);
    assert!(out.contains("freed 0 orphan blob(s)"), "{out}");
}

// ---- a server that dies --------------------------------------------------------

/// After SIGKILL of vineyardd: a request on an open connection fails at once
/// (the kernel closes the server's end), and a new connection fails within
/// the default 2 s connect timeout (+0.5 s slack), naming the socket.
#[test]
fn a_killed_server_is_an_error_within_the_connect_timeout() {
    let mut server = start_server("64Mi");
    let socket = server.socket().to_path_buf();
    let mut c = connect(&server);
    let blob = c.create_buffer(MIB).unwrap();
    server.kill();
    let t = Instant::now();
    let err = c.seal(blob.id()).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(err.is_fatal_to_connection(), "{err:?}");
    assert!(err.to_string().contains(socket.to_str().unwrap()), "{err}");
    // The mapping we still hold stays readable (no SIGBUS).
    assert_eq!(blob.as_slice().len(), MIB as usize);

    let t = Instant::now();
    let err = Client::connect(&socket).unwrap_err();
    let took = t.elapsed();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(socket.to_str().unwrap()), "{err}");
    assert!(
        took < Duration::from_millis(2500),
        "connect gave up after {took:?}"
    );
}

#[test]
fn a_socket_nobody_listens_on_fails_within_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file whose listener is gone, and a path with no file at all.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for (path, bound) in [
        (stale, Duration::from_millis(2500)),
        (dir.path().join("missing.sock"), Duration::from_millis(2500)),
    ] {
        let t = Instant::now();
        let err = Client::connect(&path).unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        assert!(t.elapsed() < bound, "{path:?}: {:?}", t.elapsed());
    }
    // The bound is a setting.
    let t = Instant::now();
    let quick = Timeouts {
        connect: Duration::from_millis(200),
        ..Timeouts::default()
    };
    Client::connect_with(&dir.path().join("missing.sock"), quick).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
}

/// A large save racing a SIGKILL of the server ends, in a bounded time, in a
/// connection error naming the socket, whatever phase it was in.
#[test]
fn a_save_racing_a_server_kill_ends_in_an_error() {
    for delay_ms in [0u64, 5, 30, 80] {
        let mut server = start_server("1Gi");
        let socket = server.socket().to_path_buf();
        let data = vec![7u8; (256 * MIB) as usize];
        let worker = {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let mut c = Client::connect(&socket)?;
                let mut res = Ok(ObjectId(0));
                for _ in 0..50 {
                    res = put_named(&mut c, "race/x", &[&data[..(128 * MIB) as usize], &data]);
                    if res.is_err() {
                        break;
                    }
                }
                res.map(|_| t.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        server.kill();
        let t = Instant::now();
        let res = worker.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        let err = res.expect_err("50 saves of 384 MiB cannot all finish before the kill");
        assert!(
            matches!(
                err,
                Error::Closed { .. } | Error::Io { .. } | Error::Connect { .. }
            ),
            "delay {delay_ms} ms: {err:?}"
        );
        assert!(err.to_string().contains(socket.to_str().unwrap()), "{err}");
    }
}
