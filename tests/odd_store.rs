//! The CLI survives any store (issue 18), against a REAL vineyardd, with the
//! odd objects made as the probe made them: an object whose member is itself
//! (then `gc --orphans`: vineyardd survives, and gc frees no blob an object
//! refers to), a 1,000-deep object (then
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
    store::put(c, &tree, &[Source::from_slice(data)], &opts)
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

/// Stores `data` under `tree` (unnamed unless `name`), persisted or not.
fn put_tree(
    c: &mut Client,
    tree: Value,
    data: &[u8],
    name: Option<&str>,
    persist: bool,
) -> ObjectId {
    let opts = PutOptions {
        persist,
        name: name.map(str::to_string),
        ..Default::default()
    };
    store::put(c, &tree, &[Source::from_slice(data)], &opts)
        .expect("put")
        .id
}

fn assert_loads(c: &mut Client, id: ObjectId, data: &[u8], what: &str) {
    let f = store::get(c, id).unwrap_or_else(|e| panic!("{what} no longer loads: {e}"));
    assert!(
        f.blobs.values().any(|b| b.as_slice() == data),
        "{what}: its blob was freed"
    );
}

#[test]
fn gc_orphans_survives_a_self_referencing_object() {
    // The probe's order: a self-referencing object, then `gc --orphans`.
    // gc lists blobs without expanding any object, so vineyardd survives,
    // the orphan is freed and the named object keeps its blob.
    let server = start_server("128Mi");
    let mut c = connect(&server);
    let kept = vec![1u8; 1 << 20];
    let kept_id = put_named(&mut c, "ns/kept", &kept);
    let cyclic = self_referencing(&mut c);
    let orphan = orphan_blob(&server, 3 << 20);
    drop(c);

    let (code, out, err) = cli(&server, &["gc", "--orphans", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["orphan_blobs"], 1, "{report}");
    assert_eq!(report["orphan_bytes"], 3 << 20, "{report}");
    assert_eq!(report["blobs_referenced_kept"], 1, "{report}");

    let mut c = connect(&server);
    c.instance_status().expect("vineyardd survived");
    assert!(!c.exists(orphan).unwrap(), "the orphan blob was not freed");
    assert!(c.exists(cyclic).unwrap(), "gc touched the odd object");
    assert_loads(&mut c, kept_id, &kept, "ns/kept");
    // and again: nothing left to free, nothing lost
    let (code, out, err) = cli(&server, &["gc", "--orphans", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["orphan_blobs"], 0, "{report}");
    assert_loads(&mut c, kept_id, &kept, "ns/kept");
}

#[test]
fn gc_orphans_frees_no_blob_that_an_object_refers_to() {
    // The blobs gc deletes are the ones no connection holds; vineyardd keeps
    // those an object refers to, whatever the object: a member's member,
    // unnamed and transient, or made by another client with its own
    // typename. None of them is held by a connection when gc runs.
    let server = start_server("128Mi");
    let mut c = connect(&server);
    let (a, b, d) = (vec![2u8; 1 << 20], vec![3u8; 1 << 19], vec![4u8; 1 << 18]);
    let nested = put_tree(
        &mut c,
        json!({"typename": "test::Outer", "inner": {"typename": "test::Inner", "b0": {"__blob__": 0}}}),
        &a,
        Some("ns/nested"),
        true,
    );
    let transient = put_tree(
        &mut c,
        json!({"typename": "test::Blobs", "b0": {"__blob__": 0}}),
        &b,
        None,
        false,
    );
    let foreign = {
        let mut other = connect(&server);
        let blob = other.create_buffers(&[d.len() as u64]).unwrap().remove(0);
        // SAFETY: the blob is fresh, unsealed and ours.
        unsafe { blob.as_mut_slice() }.copy_from_slice(&d);
        other.seal(blob.id()).unwrap();
        let mut m = bare(&other);
        m.set(
            "buffer_",
            json!({"id": blob.id().to_string(), "typename": "vineyard::Blob", "instance_id": other.instance_id(), "transient": true}),
        );
        let id = other.create_data(&m).unwrap().id;
        other.persist(id).unwrap();
        id
    };
    let orphan = orphan_blob(&server, 1 << 20);
    drop(c);
    let mut c = connect(&server);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for id in [nested, transient, foreign] {
        for blob in c.get_meta(id, false).unwrap().blob_ids() {
            while c.is_in_use(blob).unwrap() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a closed connection still holds {blob}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    let (code, out, err) = cli(&server, &["gc", "--orphans", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["orphan_blobs"], 1, "{report}");
    assert_eq!(report["orphan_bytes"], 1 << 20, "{report}");
    assert_eq!(report["blobs_referenced_kept"], 3, "{report}");
    assert!(!c.exists(orphan).unwrap(), "the orphan blob was not freed");
    assert_loads(&mut c, nested, &a, "the nested object");
    assert_loads(&mut c, transient, &b, "the unnamed transient object");
    assert_loads(&mut c, foreign, &d, "another client's object");
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

    // `gc --orphans` expands none of it (its blobs are listed alone).
    let (code, out, err) = cli(&server, &["gc", "--orphans", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
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
    let ok = store::put(
        &mut c,
        &nested(MAX_TREE_DEPTH),
        &[Source::from_slice(&data)],
        &opts,
    );
    assert!(ok.is_ok(), "{ok:?}");
    c.del_data(&[ok.unwrap().id], false, true).unwrap();
    c.drop_name("deep").unwrap();
    let err = store::put(
        &mut c,
        &nested(MAX_TREE_DEPTH + 1),
        &[Source::from_slice(&data)],
        &opts,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at most 64 levels"), "{err}");
    assert_eq!(c.memory_usage().unwrap(), before);
    assert!(c.try_get_name("deep").unwrap().is_none());
}
