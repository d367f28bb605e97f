//! Round trips through the layouts without a server: `write_value`'s
//! buffers become blobs of a map, its tree's `{"__blob__": i}` become blob
//! ids, and `read_value` must give the value back, types included; and
//! hostile metadata must fail with a layout error, never a panic.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, LargeListBuilder};
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, DictionaryArray, FixedSizeBinaryArray,
    Float64Array, Int64Array, LargeStringArray, NullArray, RecordBatch, StringArray, UInt8Array,
};
use arrow_buffer::Buffer;
use arrow_schema::{Field, Schema};
use serde_json::{json, Value};

use super::{read_value, write_value, ArrowValue, Blobs};
use crate::ObjectId;

struct Map(HashMap<u64, Buffer>);

impl Blobs for Map {
    fn buffer(&self, id: ObjectId) -> Option<Buffer> {
        self.0.get(&id.value()).cloned()
    }
}

/// The tree with every `{"__blob__": i}` replaced by a blob id.
fn with_ids(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            if let Some(i) = m.get("__blob__").and_then(Value::as_u64) {
                return json!({ "id": format!("o{:016x}", (1u64 << 63) | (i + 1)), "typename": "vineyard::Blob" });
            }
            Value::Object(m.iter().map(|(k, v)| (k.clone(), with_ids(v))).collect())
        }
        other => other.clone(),
    }
}

/// Writes `value`, then reads it back.
fn round_trip(value: &ArrowValue) -> (Value, crate::Result<ArrowValue>) {
    let written = write_value(value, &|_| None, 0).expect("write");
    let blobs = written
        .buffers
        .iter()
        .enumerate()
        .map(|(i, b)| ((1u64 << 63) | (i as u64 + 1), b.to_buffer().expect("bytes")))
        .collect();
    let tree = with_ids(&written.tree);
    let back = read_value(&tree, &Map(blobs));
    (tree, back)
}

fn same_array(value: ArrayRef) {
    let (tree, back) = round_trip(&ArrowValue::Array(value.clone()));
    match back {
        Ok(ArrowValue::Array(a)) => assert_eq!(a.to_data(), value.to_data(), "{tree}"),
        Ok(_) => panic!("not an array: {tree}"),
        Err(e) => panic!("{e}: {tree}"),
    }
}

#[test]
fn arrays_of_every_official_layout_come_back_equal() {
    let ints = Int64Array::from(vec![
        Some(1),
        None,
        Some(3),
        Some(4),
        None,
        Some(6),
        Some(7),
        Some(8),
        Some(9),
    ]);
    same_array(Arc::new(ints.clone()));
    // Slices at every bit offset: bitmaps are stored from the byte holding
    // the first bit, offset_ skipping the rest.
    for start in 0..8 {
        same_array(Arc::new(ints.slice(start, 9 - start)));
    }
    same_array(Arc::new(Float64Array::from(vec![1.5, -2.0])));
    same_array(Arc::new(UInt8Array::from(Vec::<u8>::new())));
    let bools = BooleanArray::from(vec![
        Some(true),
        None,
        Some(false),
        Some(true),
        Some(true),
        None,
        Some(false),
        Some(true),
        Some(false),
        Some(true),
    ]);
    for start in 0..8 {
        same_array(Arc::new(bools.slice(start, 10 - start)));
    }
    let strings = StringArray::from(vec![Some("héllo"), None, Some(""), Some("vineyard")]);
    same_array(Arc::new(strings.slice(1, 3)));
    same_array(Arc::new(LargeStringArray::from(vec!["a", "bc"])));
    same_array(Arc::new(BinaryArray::from(vec![b"x".as_ref(), b"yz"])));
    same_array(Arc::new(
        FixedSizeBinaryArray::try_from_iter(vec![b"abc".to_vec(), b"def".to_vec()].into_iter())
            .expect("fixed"),
    ));
    same_array(Arc::new(NullArray::new(3)));
    let mut lists = LargeListBuilder::new(Int32Builder::new());
    lists.values().append_value(1);
    lists.values().append_value(2);
    lists.append(true);
    lists.append(false);
    lists.values().append_null();
    lists.append(true);
    same_array(Arc::new(lists.finish().slice(1, 2)));
}

#[test]
fn batches_tables_chunks_and_ipc_keep_their_schema() {
    let schema = Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("s", arrow_schema::DataType::Utf8, true),
            Field::new("i", arrow_schema::DataType::Int64, false),
        ],
        std::collections::HashMap::from([("pandas".to_string(), "{}".to_string())]),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(Int64Array::from(vec![1, 2])),
        ],
    )
    .expect("batch");
    match round_trip(&ArrowValue::Batch(batch.clone())) {
        (_, Ok(ArrowValue::Batch(b))) => assert_eq!(b, batch),
        (tree, _) => panic!("{tree}"),
    }
    match round_trip(&ArrowValue::Table(
        schema.clone(),
        vec![batch.clone(), batch.slice(1, 1)],
    )) {
        (_, Ok(ArrowValue::Table(s, b))) => assert_eq!(
            (s, b),
            (schema.clone(), vec![batch.clone(), batch.slice(1, 1)])
        ),
        (tree, _) => panic!("{tree}"),
    }
    let dict: DictionaryArray<Int32Type> = vec!["x", "y", "x"].into_iter().collect();
    let (tree, back) = round_trip(&ArrowValue::Array(Arc::new(dict.clone())));
    assert_eq!(tree["typename"], "vineyard_kedro::ArrowIPC");
    match back {
        Ok(ArrowValue::Array(a)) => assert_eq!(a.to_data(), dict.to_data()),
        _ => panic!("{tree}"),
    }
    let field = Arc::new(Field::new("v", arrow_schema::DataType::Int64, true));
    let chunks: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1])),
        Arc::new(Int64Array::from(vec![2, 3])),
    ];
    match round_trip(&ArrowValue::Chunked(field, chunks.clone())) {
        (_, Ok(ArrowValue::Chunked(_, c))) => assert_eq!(c.len(), 2),
        (tree, _) => panic!("{tree}"),
    }
}

/// The written tree of `value`, its blobs, and a reader over them.
fn written(value: ArrayRef) -> (Value, HashMap<u64, Buffer>) {
    let w = write_value(&ArrowValue::Array(value), &|_| None, 0).expect("write");
    let blobs = w
        .buffers
        .into_iter()
        .enumerate()
        .map(|(i, b)| ((1u64 << 63) | (i as u64 + 1), b.to_buffer().expect("bytes")))
        .collect();
    (with_ids(&w.tree), blobs)
}

fn layout_error(tree: &Value, blobs: &HashMap<u64, Buffer>) -> String {
    match read_value(tree, &Map(blobs.clone())) {
        Err(e @ crate::Error::Layout { .. }) => e.to_string(),
        Err(e) => panic!("not a layout error: {e}"),
        Ok(_) => panic!("read a hostile layout: {tree}"),
    }
}

#[test]
fn hostile_layouts_are_layout_errors() {
    let (tree, blobs) = written(Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])));
    for (key, bad) in [
        ("length_", json!(1000)),
        ("offset_", json!(1u64 << 40)),
        ("null_count_", json!(2)),
        ("length_", json!("x")),
    ] {
        let mut t = tree.clone();
        t[key] = bad;
        layout_error(&t, &blobs);
    }
    let (tree, mut blobs) = written(Arc::new(LargeStringArray::from(vec!["ab", "c"])));
    let offsets_id = tree["buffer_offsets_"]["id"]
        .as_str()
        .and_then(ObjectId::parse)
        .expect("id")
        .value();
    let data_id = tree["buffer_data_"]["id"]
        .as_str()
        .and_then(ObjectId::parse)
        .expect("id")
        .value();
    blobs.insert(offsets_id, Buffer::from_vec(vec![0i64, 2, 1000]));
    assert!(layout_error(&tree, &blobs).contains("invalid array"));
    blobs.insert(offsets_id, Buffer::from_vec(vec![0i64, 2, 3]));
    blobs.insert(data_id, Buffer::from_vec(vec![0x61u8, 0xff, 0x62]));
    assert!(layout_error(&tree, &blobs).contains("UTF-8"));
    let mut t = tree.clone();
    t["buffer_data_"]["id"] = json!("o0000000000000005");
    assert!(layout_error(&t, &blobs).contains("not a blob"));
    let mut deep = json!({"typename": "vineyard::NullArray", "length_": 1});
    for _ in 0..100 {
        deep = json!({"typename": "vineyard::LargeListArray", "length_": 0, "values_": deep,
                      "buffer_offsets_": {"id": "o8000000000000000"}, "null_bitmap_": {"id": "o8000000000000000"}});
    }
    assert!(layout_error(&deep, &HashMap::new()).contains("nested deeper"));
    let garbage = json!({"typename": "vineyard_kedro::ArrowIPC", "kind_": "table", "buffer_": {"id": "o8000000000000001"}});
    let junk: HashMap<u64, Buffer> =
        [((1u64 << 63) | 1, Buffer::from_vec(vec![0xffu8; 64]))].into();
    assert!(layout_error(&garbage, &junk).contains("IPC"));
}

#[test]
fn long_text_is_validated_in_parts_and_every_part_counts() {
    let items: Vec<String> = (0..1_000_000).map(|i| format!("item-{i:07}")).collect();
    let strings = LargeStringArray::from(items.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(strings.value_data().len() >= super::read::PARALLEL_TEXT);
    same_array(Arc::new(strings.clone()));
    same_array(Arc::new(strings.slice(3, 999_990)));
    let (tree, mut blobs) = written(Arc::new(strings));
    let data_id = tree["buffer_data_"]["id"]
        .as_str()
        .and_then(ObjectId::parse)
        .expect("id")
        .value();
    let offsets_id = tree["buffer_offsets_"]["id"]
        .as_str()
        .and_then(ObjectId::parse)
        .expect("id")
        .value();
    let text = blobs[&data_id].to_vec();
    let offsets = blobs[&offsets_id].to_vec();
    // Bad bytes near the end (in the last part), then near the start.
    for at in [text.len() - 5, 7] {
        let mut bad = text.clone();
        bad[at] = 0xff;
        let mut b = blobs.clone();
        b.insert(data_id, Buffer::from_vec(bad));
        assert!(layout_error(&tree, &b).contains("UTF-8"), "byte {at}");
    }
    // An offset that goes back, right where two parts meet.
    let mut bad = offsets.clone();
    let mid = 500_000 * 8;
    bad[mid..mid + 8].copy_from_slice(&1i64.to_le_bytes());
    blobs.insert(offsets_id, Buffer::from_vec(bad));
    layout_error(&tree, &blobs);
}
