//! Saves that reference blobs already in the store, against a REAL
//! vineyardd: a source that is exactly an unchanged blob this process
//! loaded becomes a reference to it; anything else is copied; the shared
//! blob lives until the last object referencing it is deleted.

mod common;

use common::{pattern, start_server};
use serde_json::json;
use vineyard_kedro::lease;
use vineyard_kedro::store::{self, PutOptions, PutResult, RawSource, Source};
use vineyard_kedro::{BlobBytes, Client, ObjectId, PrivateBytes, Server};

const MIB: usize = 1 << 20;

fn connect(server: &Server) -> Client {
    Client::connect(server.socket()).expect("connect to the test vineyardd")
}

/// Stores the `len` bytes at `ptr` as a one-blob object named `name`.
///
/// # Safety
/// The bytes must stay valid and unchanged during the call.
unsafe fn put_raw(
    c: &mut Client,
    ptr: *const u8,
    len: usize,
    name: &str,
    reference: bool,
) -> PutResult {
    let tree =
        json!({"typename": "vineyard_kedro::TestBytes", "nbytes": len, "buffer_": {"__blob__": 0}});
    let opts = PutOptions {
        persist: true,
        name: Some(name.to_string()),
        reference_loaded: reference,
        ..Default::default()
    };
    // SAFETY: forwarded caller contract.
    let source = unsafe { Source::from_raw(RawSource::Contiguous { ptr, len }) };
    store::put(c, &tree, &[source], &opts).expect("put")
}

fn put_bytes(c: &mut Client, data: &[u8], name: &str) -> PutResult {
    // SAFETY: `data` outlives the call and is not modified during it.
    unsafe { put_raw(c, data.as_ptr(), data.len(), name, true) }
}

/// The one blob of a stored object, mapped.
fn load(c: &mut Client, id: ObjectId) -> BlobBytes {
    let f = store::get(c, id).expect("get");
    let blob = f.meta.blob_ids()[0];
    f.blobs.get(&blob).expect("mapped").clone()
}

fn private_slice(p: &PrivateBytes) -> &[u8] {
    // SAFETY: `p` maps `p.len()` bytes, private to this test.
    unsafe { std::slice::from_raw_parts(p.as_mut_ptr(), p.len()) }
}

/// Flips the bits of one byte of a private mapping.
fn flip(p: &PrivateBytes, at: usize) {
    assert!(at < p.len());
    // SAFETY: in range (checked), writable, private to this test.
    unsafe { *p.as_mut_ptr().add(at) ^= 0xff };
}

/// Drops `blob`'s view, releases this connection's lease on it and frees
/// what was retired meanwhile among `owners`.
fn let_go(c: &mut Client, blob: BlobBytes, owners: &[ObjectId]) {
    let id = blob.id();
    drop(blob);
    lease::release(c, &[id], owners).expect("release");
}

#[test]
fn an_unchanged_private_load_is_referenced_and_outlives_its_source() {
    let server = start_server("128Mi");
    let mut c = connect(&server);
    let base = c.memory_usage().unwrap();
    let data = pattern(8 * MIB, 1);
    let source = put_bytes(&mut c, &data, "src").id;
    let blob = load(&mut c, source);
    let private = blob.map_private().expect("private map");
    assert_eq!(private_slice(&private), &data[..], "reads see the blob");

    // SAFETY: `private` lives until after the put; nothing writes to it.
    let derived = unsafe { put_raw(&mut c, private.as_mut_ptr(), private.len(), "dst", true) };
    assert_eq!((derived.bytes, derived.referenced), (0, data.len() as u64));
    let meta = c.get_meta(derived.id, false).unwrap();
    assert_eq!(
        meta.blob_ids(),
        vec![blob.id()],
        "the new object names the loaded blob"
    );
    assert_eq!(
        c.memory_usage().unwrap(),
        base + data.len() as u64,
        "nothing was copied"
    );

    // Delete the source first: the blob stays for the derived object.
    drop(private);
    let_go(&mut c, blob, &[source]);
    c.drop_name("src").unwrap();
    let done = lease::delete(&mut c, &[source], false).unwrap();
    assert_eq!(done.freed, vec![source]);
    assert!(!c.exists(source).unwrap());
    assert_eq!(c.memory_usage().unwrap(), base + data.len() as u64);
    let again = load(&mut c, derived.id);
    assert_eq!(again.as_slice(), &data[..]);
    let_go(&mut c, again, &[derived.id]);

    // Deleting the derived object frees the blob: back at the baseline.
    c.drop_name("dst").unwrap();
    let done = lease::delete(&mut c, &[derived.id], false).unwrap();
    assert_eq!(done.freed, vec![derived.id]);
    assert_eq!(c.memory_usage().unwrap(), base);
}

#[test]
fn a_written_page_part_of_a_blob_or_referencing_off_copies() {
    let server = start_server("128Mi");
    let mut c = connect(&server);
    let data = pattern(4 * MIB, 2);
    let source = put_bytes(&mut c, &data, "src").id;
    let blob = load(&mut c, source);

    // Referencing off: the same unchanged load is copied.
    let private = blob.map_private().expect("private map");
    // SAFETY: `private` outlives the put and is unchanged during it.
    let off = unsafe { put_raw(&mut c, private.as_mut_ptr(), private.len(), "off", false) };
    assert_eq!((off.bytes, off.referenced), (data.len() as u64, 0));

    // A part of the blob is copied.
    // SAFETY: the first half of the mapping, unchanged during the put.
    let half = unsafe {
        put_raw(
            &mut c,
            private.as_mut_ptr(),
            private.len() / 2,
            "half",
            true,
        )
    };
    assert_eq!((half.bytes, half.referenced), (data.len() as u64 / 2, 0));

    // One written byte: the edit is saved, the source stays as it was.
    flip(&private, 3 * MIB + 5);
    // SAFETY: as above.
    let edited = unsafe { put_raw(&mut c, private.as_mut_ptr(), private.len(), "edited", true) };
    assert_eq!((edited.bytes, edited.referenced), (data.len() as u64, 0));
    let mut want = data.clone();
    want[3 * MIB + 5] ^= 0xff;
    assert_eq!(load(&mut c, edited.id).as_slice(), &want[..]);
    assert_eq!(blob.as_slice(), &data[..], "the stored source is unchanged");
    assert_ne!(
        c.get_meta(edited.id, false).unwrap().blob_ids(),
        vec![blob.id()]
    );

    // Another private mapping of the same blob, unchanged, is referenced.
    let fresh = blob.map_private().expect("private map");
    // SAFETY: as above.
    let clean = unsafe { put_raw(&mut c, fresh.as_mut_ptr(), fresh.len(), "clean", true) };
    assert_eq!((clean.bytes, clean.referenced), (0, data.len() as u64));
}

#[test]
fn the_shared_mapping_is_referenced_while_registered() {
    let server = start_server("64Mi");
    let mut c = connect(&server);
    let data = pattern(MIB, 3);
    let source = put_bytes(&mut c, &data, "src").id;
    let blob = load(&mut c, source);
    // Not handed out (not registered): copied.
    // SAFETY: the blob is sealed and mapped until `blob` drops.
    let plain = unsafe { put_raw(&mut c, blob.as_ptr(), blob.len(), "plain", true) };
    assert_eq!(plain.referenced, 0);
    let shown = blob.register_shared(Some(source));
    // SAFETY: as above.
    let shared = unsafe { put_raw(&mut c, blob.as_ptr(), blob.len(), "shared", true) };
    assert_eq!((shared.bytes, shared.referenced), (0, data.len() as u64));
    drop(shown);
    // SAFETY: as above.
    let after = unsafe { put_raw(&mut c, blob.as_ptr(), blob.len(), "after", true) };
    assert_eq!(after.referenced, 0, "the registration ended");
}

#[test]
fn a_blob_of_another_vineyardd_or_connection_is_copied() {
    let (a, b) = (start_server("64Mi"), start_server("64Mi"));
    let (mut ca, mut cb) = (connect(&a), connect(&b));
    let data = pattern(2 * MIB, 4);
    let source = put_bytes(&mut ca, &data, "src").id;
    // B's connection maps a memory file of its own first.
    put_bytes(&mut cb, &pattern(MIB, 5), "other");
    let blob = load(&mut ca, source);
    let private = blob.map_private().expect("private map");
    // SAFETY: `private` outlives the put and is unchanged during it.
    let there = unsafe { put_raw(&mut cb, private.as_mut_ptr(), private.len(), "copy", true) };
    assert_eq!((there.bytes, there.referenced), (data.len() as u64, 0));
    assert_eq!(load(&mut cb, there.id).as_slice(), &data[..]);

    // Another connection to the same vineyardd holds no lease on the blob
    // (its loads are its own): it copies too.
    let mut other = connect(&a);
    put_bytes(&mut other, &pattern(MIB, 6), "mapped");
    // SAFETY: as above.
    let here = unsafe {
        put_raw(
            &mut other,
            private.as_mut_ptr(),
            private.len(),
            "copy2",
            true,
        )
    };
    assert_eq!((here.bytes, here.referenced), (data.len() as u64, 0));
    // SAFETY: as above.
    let own = unsafe { put_raw(&mut ca, private.as_mut_ptr(), private.len(), "own", true) };
    assert_eq!((own.bytes, own.referenced), (0, data.len() as u64));
}

/// Saves `derived` referencing the blob of `source` as loaded by `c`, and
/// lets go of that load. Returns the derived object and the blob.
fn derive(c: &mut Client, source: ObjectId, name: &str) -> (ObjectId, ObjectId) {
    let blob = load(c, source);
    let private = blob.map_private_for(Some(source)).expect("private map");
    // SAFETY: `private` outlives the put and is unchanged during it.
    let d = unsafe { put_raw(c, private.as_mut_ptr(), private.len(), name, true) };
    assert_eq!(d.bytes, 0);
    let meta = c.get_meta(d.id, false).unwrap();
    assert_eq!(
        lease::linked(&meta),
        vec![source],
        "the derived object names its source"
    );
    let back = lease::linked(&c.get_meta(source, false).unwrap());
    assert!(
        back.contains(&d.id),
        "the source is labelled with the derived object"
    );
    drop(private);
    let id = blob.id();
    let_go(c, blob, &[source]);
    (d.id, id)
}

#[test]
fn a_source_retired_while_mapped_through_the_derived_object_is_freed_by_its_release() {
    let server = start_server("64Mi");
    let (mut c, mut reader) = (connect(&server), connect(&server));
    let base = c.memory_usage().unwrap();
    let data = pattern(4 * MIB, 6);
    let source = put_bytes(&mut c, &data, "src").id;
    let (derived, _) = derive(&mut c, source, "dst");

    // The reader maps the shared blob through the derived object only.
    let view = load(&mut reader, derived);
    c.drop_name("src").unwrap();
    let done = lease::delete(&mut c, &[source], false).unwrap();
    assert_eq!(done.retired, vec![source], "the blob is mapped: retired");
    // The reader lets go, naming the object it loaded: the source it
    // shares the blob with is freed too.
    let_go(&mut reader, view, &[derived]);
    assert!(!c.exists(source).unwrap(), "the retired source was freed");
    assert_eq!(c.memory_usage().unwrap(), base + data.len() as u64);
    c.drop_name("dst").unwrap();
    lease::delete(&mut c, &[derived], false).unwrap();
    assert_eq!(c.memory_usage().unwrap(), base, "nothing leaked");
}

#[test]
fn a_derived_object_retired_while_mapped_through_its_source_is_freed_by_its_release() {
    let server = start_server("64Mi");
    let (mut c, mut reader) = (connect(&server), connect(&server));
    let base = c.memory_usage().unwrap();
    let data = pattern(4 * MIB, 7);
    let source = put_bytes(&mut c, &data, "src").id;
    // A link to an object deleted since is skipped.
    let (gone, _) = derive(&mut c, source, "gone");
    c.drop_name("gone").unwrap();
    assert_eq!(
        lease::delete(&mut c, &[gone], false).unwrap().freed,
        vec![gone]
    );
    let (derived, _) = derive(&mut c, source, "dst");

    let view = load(&mut reader, source);
    c.drop_name("dst").unwrap();
    let done = lease::delete(&mut c, &[derived], false).unwrap();
    assert_eq!(done.retired, vec![derived]);
    let_go(&mut reader, view, &[source]);
    assert!(
        !c.exists(derived).unwrap(),
        "the retired derived object was freed"
    );
    c.drop_name("src").unwrap();
    lease::delete(&mut c, &[source], false).unwrap();
    assert_eq!(c.memory_usage().unwrap(), base, "nothing leaked");
}
