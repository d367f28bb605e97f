//! Starts a private vineyardd, puts bytes into a blob, names the object,
//! reads it back through a second connection, then stops the server.
//!
//! Run: `cargo run --example put_get` (needs `pip install vineyard-bdist`
//! or `VINEYARDD=/path/to/vineyardd`).

use vineyard_kedro::{Client, ObjectMeta, Server, ServerOptions};

fn main() -> vineyard_kedro::Result<()> {
    let server = Server::start(&ServerOptions::default())?;
    println!("started vineyardd at {}", server.socket().display());

    let mut writer = Client::connect(server.socket())?;
    let payload = b"hello from vineyard-kedro";
    let blob = writer.create_buffer(payload.len() as u64)?;
    // SAFETY: the blob was just created by this connection and is not sealed.
    unsafe { blob.as_mut_slice() }.copy_from_slice(payload);
    writer.seal(blob.id())?;

    let mut meta = ObjectMeta::new("vineyard::Blob.example");
    meta.set("typename", "vineyard_kedro::Bytes");
    meta.set("instance_id", writer.instance_id());
    meta.set("nbytes", payload.len() as u64);
    meta.set("buffer_", serde_json::json!({"id": blob.id().to_string(), "typename": "vineyard::Blob", "instance_id": writer.instance_id()}));
    let created = writer.create_data(&meta)?;
    writer.persist(created.id)?;
    writer.put_name(created.id, "example/greeting")?;
    println!(
        "put {} bytes as {} named example/greeting",
        payload.len(),
        created.id
    );

    let mut reader = Client::connect(server.socket())?;
    let id = reader.get_name("example/greeting", false)?;
    let meta = reader.get_meta(id, false)?;
    let blobs = reader.get_buffers(&meta.blob_ids())?;
    let bytes = blobs
        .values()
        .next()
        .map(|b| b.as_slice().to_vec())
        .unwrap_or_default();
    println!("got {} back: {:?}", id, String::from_utf8_lossy(&bytes));
    assert_eq!(bytes, payload);

    reader.del_data(&[id], false, true)?;
    println!("deleted; stopping vineyardd");
    Ok(())
}
