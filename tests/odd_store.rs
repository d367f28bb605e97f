//! The CLI survives any store (issue 18), against a REAL vineyardd, with the
//! odd objects made as the probe made them: an object whose member is itself
//! (then `gc --orphans`: vineyardd survives), a 1,000-deep object (then
//! `ls`, `inspect`, `gc`), an object with a dangling member (`ls` lists the
//! others), and saves deeper than the documented limit (refused, nothing
//! left behind).

mod common;

use common::start_server;
use serde_json::{json, Map, Value};
use vineyard_kedro::cli::run_with;
use vineyard_kedro::store::{self, PutOptions, Source, MAX_TREE_DEPTH};
use vineyard_kedro::{Client, ObjectId, ObjectMeta, Server};

fn connect(server: &Server) -> Client {
    Client::connect(server.socket()).expect("connect to the test vineyardd")
}

fn cli(server: &Server, args: &[&str]) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let socket = server.socket().to_str().unwrap();
    let argv = ["vineyard-kedro"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--socket", socket]);
    let code = run_with(argv, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn put_named(c: &mut Client, name: &str, data: &[u8]) -> ObjectId {
    let tree = json!({"typename": "test::Blobs", "b0": {"__blob__": 0}});
    let opts = PutOptions {
        persist: true,
        name: Some(name.into()),
        ..Default::default()
    };
    // SAFETY: `data` outlives the call and is not modified during it.
    unsafe { store::put(c, &tree, &[Source::from_slice(data)], &opts) }
        .expect("put")
        .id
}

/// A bare object of typename `T` (what another client can create).
fn bare(c: &Client) -> ObjectMeta {
    let mut m = ObjectMeta::new("T");
    m.set("instance_id", c.instance_id());
    m.set("transient", true);
    m.set("nbytes", 0);
    m
}

/// An object whose member `m` is itself, made as the probe made it:
/// vineyardd accepts member ids that do not exist yet, and gives out ids in
/// a predictable order.
fn self_referencing(c: &mut Client) -> ObjectId {
    for _ in 0..200 {
        let first = c.create_data(&bare(c)).expect("create").id;
        let next = ObjectId(first.0 + 2);
        let mut m = bare(c);
        m.set(
            "m",
            json!({"id": next.to_string(), "typename": "T", "instance_id": c.instance_id(), "transient": true}),
        );
        let got = c.create_data(&m).expect("create").id;
        if got == next {
            return got;
        }
        c.del_data(&[got], false, false).expect("delete a miss");
    }
    panic!("could not predict vineyardd's next object id");
}

/// An orphan blob: what a writer killed during its copy leaves (a sealed
/// blob, no object, no live connection).
fn orphan_blob(server: &Server, len: u64) -> ObjectId {
    let id = {
        let mut dead = connect(server);
        let blobs = dead.create_buffers(&[len]).unwrap();
        dead.seal(blobs[0].id()).unwrap();
        blobs[0].id()
    };
    let mut c = connect(server);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while c.is_in_use(id).unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "vineyardd kept a dead connection's reference"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    id
}

#[test]
fn gc_orphans_keeps_the_blobs_of_objects_nobody_holds() {
    // A named save drops its writer's references (see `lease`): nothing but
    // the object itself keeps its blob, and vineyardd would free the blob on
    // a delete of its id, so gc must find the reference itself.
    let server = start_server("128Mi");
    let mut c = connect(&server);
    let kept = vec![1u8; 1 << 20];
    put_named(&mut c, "ns/kept", &kept);
    let orphan = orphan_blob(&server, 3 << 20);
    drop(c);

    let (code, out, err) = cli(&server, &["gc", "--orphans", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["orphan_blobs"], 1, "{report}");
    assert_eq!(report["orphan_bytes"], 3 << 20, "{report}");

    let mut c = connect(&server);
    assert!(!c.exists(orphan).unwrap(), "the orphan blob was not freed");
    let id = c.get_name("ns/kept", false).unwrap();
    let f = store::get(&mut c, id).expect("the named object still loads");
    assert!(
        f.blobs.values().any(|b| b.as_slice() == &kept[..]),
        "the named object's blob was freed"
    );
}

#[test]
fn an_object_that_is_its_own_member_crashes_vineyardd_when_expanded() {
    // The limit README's Security section states: vineyardd 0.24.2 accepts
    // such an object and then crashes expanding it (get_data, list_data,
    // del_data), so no client can list a store that holds one.
    let server = start_server("64Mi");
    let mut c = connect(&server);
    let cyclic = self_referencing(&mut c);
    let res = c.get_data(&[cyclic], false, false);
    assert!(
        matches!(res, Err(vineyard_kedro::Error::Closed { .. })),
        "expected vineyardd to crash on the self-referencing object, got {res:?}"
    );
}

#[test]
fn ls_inspect_and_gc_handle_a_1000_deep_object() {
    let server = start_server("64Mi");
    let mut c = connect(&server);
    put_named(&mut c, "ns/plain", &[5u8; 100]);
    // a chain built bottom-up, each object's member `m` the previous one
    let mut id = c.create_data(&bare(&c)).unwrap().id;
    for _ in 0..1000 {
        let mut parent = bare(&c);
        parent.set(
            "m",
            json!({"id": id.to_string(), "typename": "T", "instance_id": c.instance_id(), "transient": true}),
        );
        id = c.create_data(&parent).expect("create").id;
    }
    c.persist(id).expect("persist");
    c.put_name(id, "ns/deep").expect("name");

    let (code, out, err) = cli(&server, &["ls", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    let typenames: Map<String, Value> = rows
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["typename"].clone(),
            )
        })
        .collect();
    assert_eq!(typenames["ns/deep"], "T", "{out}");
    assert_eq!(typenames["ns/plain"], "test::Blobs", "{out}");

    let (code, out, err) = cli(&server, &["inspect", "ns/deep"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(vineyard_kedro::protocol::PRUNED), "{out}");

    // Not `gc --orphans`: it lists every object, and vineyardd expands a
    // chain once per level (quadratic: minutes at this depth).
    let (code, out, err) = cli(&server, &["gc", "--namespace", "ns", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(c.try_get_name("ns/plain").unwrap().is_none());
}

#[test]
fn ls_lists_the_others_when_one_object_cannot_be_read() {
    let server = start_server("64Mi");
    let mut c = connect(&server);
    put_named(&mut c, "ns/plain", &[5u8; 100]);
    // a member deleted (forcibly) under its parent: vineyardd can no longer
    // build the parent's tree
    let child = c.create_data(&bare(&c)).unwrap().id;
    let mut m = bare(&c);
    m.set(
        "m",
        json!({"id": child.to_string(), "typename": "T", "instance_id": c.instance_id(), "transient": true}),
    );
    let id = c.create_data(&m).unwrap().id;
    c.persist(id).unwrap();
    c.put_name(id, "ns/dangling").unwrap();
    c.del_data(&[child], true, false).unwrap();
    let (code, out, err) = cli(&server, &["ls", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    let plain = rows.iter().find(|r| r["name"] == "ns/plain").unwrap();
    assert_eq!(plain["typename"], "test::Blobs");
    let dangling = rows.iter().find(|r| r["name"] == "ns/dangling").unwrap();
    assert!(dangling["error"].is_string(), "{out}");
    assert!(err.contains("cannot read ns/dangling"), "{err}");
}

#[test]
fn saves_deeper_than_the_limit_are_refused_and_leave_nothing() {
    let server = start_server("64Mi");
    let mut c = connect(&server);
    let data = vec![3u8; 1 << 20];
    let nested = |levels: usize| {
        let mut t = json!({"typename": "test::Leaf", "b0": {"__blob__": 0}});
        for _ in 0..levels {
            t = json!({"typename": "test::Node", "m": t});
        }
        t
    };
    let opts = PutOptions {
        persist: true,
        name: Some("deep".into()),
        ..Default::default()
    };
    let before = c.memory_usage().unwrap();
    // SAFETY: `data` outlives the calls and is not modified during them.
    let ok = unsafe {
        store::put(
            &mut c,
            &nested(MAX_TREE_DEPTH),
            &[Source::from_slice(&data)],
            &opts,
        )
    };
    assert!(ok.is_ok(), "{ok:?}");
    c.del_data(&[ok.unwrap().id], false, true).unwrap();
    c.drop_name("deep").unwrap();
    // SAFETY: as above.
    let err = unsafe {
        store::put(
            &mut c,
            &nested(MAX_TREE_DEPTH + 1),
            &[Source::from_slice(&data)],
            &opts,
        )
    }
    .unwrap_err()
    .to_string();
    assert!(err.contains("at most 64 levels"), "{err}");
    assert_eq!(c.memory_usage().unwrap(), before);
    assert!(c.try_get_name("deep").unwrap().is_none());
}
