//! Lifetimes across connections (`vineyard_kedro::lease`) against a REAL
//! vineyardd: a connection that maps an object keeps its memory from being
//! freed by another connection's delete, until it lets go or disappears.
//! Each connection here stands for a process: vineyardd only knows
//! connections, and a process that dies closes its own.

mod common;

use std::time::{Duration, Instant};

use common::{pattern, start_server};
use serde_json::json;
use vineyard_kedro::lease;
use vineyard_kedro::store::{self, PutOptions, Source};
use vineyard_kedro::{Client, ObjectId, Server};

const MIB: usize = 1 << 20;

fn connect(server: &Server) -> Client {
    Client::connect(server.socket()).expect("connect to the test vineyardd")
}

/// Stores `data` as a one-blob object named `name`.
fn put_named(c: &mut Client, data: &[u8], name: &str) -> ObjectId {
    let tree = json!({"typename": "vineyard_kedro::TestBytes", "nbytes": data.len(), "buffer_": {"__blob__": 0}});
    let opts = PutOptions {
        persist: true,
        name: Some(name.to_string()),
        ..Default::default()
    };
    store::put(c, &tree, &[Source::from_slice(data)], &opts)
        .expect("put")
        .id
}

/// Fills `len` bytes of fresh memory with `byte` (reuses freed memory).
fn fill(c: &mut Client, len: usize, byte: u8, name: &str) -> ObjectId {
    put_named(c, &vec![byte; len], name)
}

fn wait_usage(c: &mut Client, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.memory_usage().unwrap() != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.memory_usage().unwrap(), want, "memory usage");
}

#[test]
fn a_named_save_keeps_no_reference_of_its_writer() {
    let server = start_server("64Mi");
    let mut w = connect(&server);
    let id = put_named(&mut w, &pattern(MIB, 1), "w/x");
    let meta = w.get_meta(id, false).unwrap();
    assert_eq!(
        meta.get_str(lease::SAVED_AS_KEY),
        Some("w/x"),
        "the tree records its name"
    );
    for b in meta.blob_ids() {
        assert!(!w.is_in_use(b).unwrap(), "the writer still holds blob {b}");
    }
}

#[test]
fn a_mapped_object_is_retired_not_freed_and_freed_on_release() {
    let server = start_server("64Mi");
    let (mut w, mut r) = (connect(&server), connect(&server));
    let base = w.memory_usage().unwrap();
    let data = pattern(8 * MIB, 2);
    let id = put_named(&mut w, &data, "ns/x");
    let view = store::get(&mut r, id).expect("map");
    assert!(lease::confirm(&mut r, id).unwrap());

    w.drop_name("ns/x").unwrap();
    let done = lease::delete(&mut w, &[id], false).unwrap();
    assert_eq!(done.retired, vec![id]);
    assert!(done.freed.is_empty());
    // The memory is not handed out again while R maps it.
    let filler = fill(&mut w, 8 * MIB, 42, "ns/filler");
    let blob = view
        .blobs
        .keys()
        .find(|b| **b != ObjectId::EMPTY_BLOB)
        .copied()
        .unwrap();
    assert!(
        view.blobs[&blob].as_slice() == data.as_slice(),
        "the reader's bytes changed under it"
    );
    // A later reader sees it retired and must not use it.
    let mut late = connect(&server);
    let _late_view = store::get(&mut late, id).expect("still mapped");
    assert!(!lease::confirm(&mut late, id).unwrap());

    // Both let go: the last release frees it.
    let blobs: Vec<ObjectId> = view.blobs.keys().copied().collect();
    let first = lease::release(&mut late, &blobs, &[id]).unwrap();
    assert_eq!(first.retired, vec![id], "R still maps it");
    drop(view);
    let last = lease::release(&mut r, &blobs, &[id]).unwrap();
    assert_eq!(last.freed, vec![id]);
    assert!(!w.exists(id).unwrap());
    lease::delete(&mut w, &[filler], false).unwrap();
    wait_usage(&mut w, base);
}

#[test]
fn a_dead_holder_lets_gc_reclaim_the_memory() {
    let server = start_server("64Mi");
    let mut w = connect(&server);
    let base = w.memory_usage().unwrap();
    let id = put_named(&mut w, &pattern(4 * MIB, 3), "ns/y");
    let mut r = connect(&server);
    let view = store::get(&mut r, id).unwrap();
    w.drop_name("ns/y").unwrap();
    assert_eq!(
        lease::delete(&mut w, &[id], false).unwrap().retired,
        vec![id]
    );
    // Nothing frees it while R lives.
    assert_eq!(lease::sweep(&mut w).unwrap().retired, vec![id]);
    // R dies without releasing (its connection closes, as a SIGKILL would).
    drop(view);
    drop(r);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut freed = Vec::new();
    while freed.is_empty() && Instant::now() < deadline {
        freed = lease::sweep(&mut w).unwrap().freed;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(freed, vec![id]);
    wait_usage(&mut w, base);
}

#[test]
fn an_unmapped_object_is_freed_at_once() {
    let server = start_server("64Mi");
    let mut w = connect(&server);
    let base = w.memory_usage().unwrap();
    let id = put_named(&mut w, &pattern(MIB, 4), "ns/z");
    w.drop_name("ns/z").unwrap();
    let done = lease::delete(&mut w, &[id], false).unwrap();
    assert_eq!(done.freed, vec![id]);
    wait_usage(&mut w, base);
}

#[test]
fn a_save_that_died_after_persist_is_reclaimed_by_gc_orphans() {
    let server = start_server("64Mi");
    let mut gc = connect(&server);
    let base = gc.memory_usage().unwrap();
    // A writer that created and persisted its object but died before the
    // naming: the steps of `store::put` up to `persist`, then a closed
    // connection.
    let mut w = connect(&server);
    let data = pattern(2 * MIB, 5);
    let blob = w.create_buffer(data.len() as u64).unwrap();
    // SAFETY: the blob is fresh, unsealed and ours.
    unsafe { blob.as_mut_slice() }.copy_from_slice(&data);
    w.seal(blob.id()).unwrap();
    let mut meta = vineyard_kedro::ObjectMeta::new("vineyard_kedro::TestBytes");
    meta.set("instance_id", w.instance_id());
    meta.set(lease::SAVED_AS_KEY, "ns/dead");
    meta.set(
        "buffer_",
        json!({"id": blob.id().to_string(), "typename": "vineyard::Blob", "instance_id": w.instance_id()}),
    );
    let id = w.create_data(&meta).unwrap().id;
    w.persist(id).unwrap();
    // While the writer lives, its seal keeps the object: a save under way,
    // left alone (not even retired: the save may still name it).
    assert!(lease::abandoned(&mut gc).unwrap().is_empty());
    assert_eq!(
        lease::reclaim(&mut gc, true).unwrap(),
        lease::Outcome::default()
    );
    assert!(lease::confirm(&mut gc, id).unwrap());
    drop(blob);
    drop(w);
    // A named object of ours is not touched.
    let keep = put_named(&mut gc, &pattern(MIB, 6), "ns/keep");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut freed = Vec::new();
    while freed.is_empty() && Instant::now() < deadline {
        freed = lease::reclaim(&mut gc, true).unwrap().freed;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(freed, vec![id]);
    assert!(gc.exists(keep).unwrap());
    lease::delete_namespace(&mut gc, "ns/").unwrap();
    wait_usage(&mut gc, base);
}

#[test]
fn deleting_a_namespace_retires_what_is_viewed_and_frees_the_rest() {
    let server = start_server("64Mi");
    let mut w = connect(&server);
    let base = w.memory_usage().unwrap();
    let a = put_named(&mut w, &pattern(MIB, 7), "run/a");
    let b = put_named(&mut w, &pattern(MIB, 8), "run/b");
    let other = put_named(&mut w, &pattern(MIB, 9), "runx/c");
    let mut r = connect(&server);
    let view = store::get(&mut r, a).unwrap();
    let done = lease::delete_namespace(&mut w, "run/").unwrap();
    assert_eq!(done.names, vec!["run/a".to_string(), "run/b".to_string()]);
    assert_eq!(done.outcome.retired, vec![a]);
    assert_eq!(done.outcome.freed, vec![b]);
    assert!(w.try_get_name("runx/c").unwrap() == Some(other));
    let blobs: Vec<ObjectId> = view.blobs.keys().copied().collect();
    drop(view);
    assert_eq!(lease::release(&mut r, &blobs, &[a]).unwrap().freed, vec![a]);
    lease::delete(&mut w, &[other], false).unwrap();
    wait_usage(&mut w, base);
}

#[test]
fn a_save_that_knows_what_its_name_points_to_names_and_releases_the_same() {
    // `PutOptions::previous` (a run's private names): no `get_name`, the
    // same naming, the same dropped writer references, the old object
    // handed back for deleting.
    let server = start_server("64Mi");
    let mut w = connect(&server);
    let tree = json!({"typename": "vineyard_kedro::TestBytes", "buffer_": {"__blob__": 0}});
    let put = |w: &mut Client, seed: u64, previous: Option<ObjectId>| {
        let data = pattern(MIB, seed);
        let opts = PutOptions {
            persist: true,
            name: Some("run/x".into()),
            previous: Some(previous),
            ..Default::default()
        };
        store::put(w, &tree, &[Source::from_slice(&data)], &opts).expect("put")
    };
    let first = put(&mut w, 1, None);
    assert_eq!(first.replaced, None);
    assert_eq!(w.get_name("run/x", false).unwrap(), first.id);
    let second = put(&mut w, 2, Some(first.id));
    assert_eq!(second.replaced, Some(first.id));
    assert_eq!(w.get_name("run/x", false).unwrap(), second.id);
    for b in w.get_meta(second.id, false).unwrap().blob_ids() {
        assert!(!w.is_in_use(b).unwrap(), "the writer still holds {b}");
    }
    lease::delete(&mut w, &[first.id], false).unwrap();
    let f = store::get(&mut w, second.id).unwrap();
    assert!(f
        .blobs
        .values()
        .any(|b| b.as_slice() == &pattern(MIB, 2)[..]));
}

#[test]
fn the_loser_of_two_saves_racing_on_one_name_is_reclaimed_by_gc_orphans() {
    // Two saves of one name that both found the same old object: the first
    // one named is left unnamed (it keeps the `__name` vineyardd wrote) and
    // deleted by nobody. It is a failed save for gc, unlike a migrated copy.
    let server = start_server("64Mi");
    let mut w = connect(&server);
    let tree = json!({"typename": "vineyard_kedro::TestBytes", "buffer_": {"__blob__": 0}});
    let put = |w: &mut Client, seed: u64| {
        let data = pattern(MIB, seed);
        let opts = PutOptions {
            persist: true,
            name: Some("race/x".into()),
            previous: Some(None),
            ..Default::default()
        };
        store::put(w, &tree, &[Source::from_slice(&data)], &opts)
            .expect("put")
            .id
    };
    let lost = put(&mut w, 1);
    let won = put(&mut w, 2);
    assert!(w.get_meta(lost, false).unwrap().name().is_some());
    let mut gc = connect(&server);
    let done = lease::reclaim(&mut gc, true).unwrap();
    assert_eq!(done.freed, vec![lost]);
    assert!(!gc.exists(lost).unwrap());
    assert_eq!(gc.get_name("race/x", false).unwrap(), won);
    let f = store::get(&mut gc, won).unwrap();
    assert!(f
        .blobs
        .values()
        .any(|b| b.as_slice() == &pattern(MIB, 2)[..]));
}
