//! Readers of vineyard's Arrow layouts (NumericArray, BooleanArray,
//! BaseBinaryArray, FixedSizeBinaryArray, NullArray, LargeListArray,
//! RecordBatch, Table, SchemaProxy) and of ours (ChunkedArray, ArrowIPC),
//! into arrow-rs values whose buffers are the blobs themselves (zero-copy).
//!
//! The metadata may come from anyone with socket access, so every array is
//! validated by arrow-rs before it is returned (`ArrayData::build`: buffer
//! sizes, offsets, UTF-8 of string data), and an IPC stream is decoded with
//! arrow-ipc's own validation. Nothing here panics on bad input; the IPC
//! decoder, which is not ours, runs under `catch_unwind` all the same.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use arrow_array::{make_array, Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_buffer::Buffer;
use arrow_data::ArrayData;
use arrow_ipc::reader::StreamDecoder;
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use serde_json::Value;

use super::meta::{Meta, MAX_DEPTH, MAX_ITEMS};
use super::narrow::narrow;
use super::types::{schema_from_b64, type_from_b64, CHUNKED, EXTRA_SCHEMA, EXTRA_TYPE, IPC};
use crate::{ObjectId, Result};

/// The mapped blobs of one load.
pub trait Blobs {
    /// The bytes of blob `id` as an Arrow buffer that keeps the blob mapped
    /// (None when the blob is not local). The empty blob is always there.
    fn buffer(&self, id: ObjectId) -> Option<Buffer>;
}

/// What an Arrow layout holds.
pub enum ArrowValue {
    Array(ArrayRef),
    Batch(RecordBatch),
    /// A table: its schema and batches (a table may have none).
    Table(SchemaRef, Vec<RecordBatch>),
    /// A chunked array: its element field and chunks.
    Chunked(FieldRef, Vec<ArrayRef>),
    /// A `vineyard::SchemaProxy` loaded on its own.
    Schema(SchemaRef),
}

/// True when `typename` is one of the Arrow layouts read here.
pub fn is_arrow_layout(typename: &str) -> bool {
    typename.starts_with("vineyard::NumericArray<")
        || typename.starts_with("vineyard::BaseBinaryArray<")
        || ARRAY_LAYOUTS.contains(&typename)
        || matches!(
            typename,
            "vineyard::RecordBatch" | "vineyard::Table" | "vineyard::SchemaProxy" | CHUNKED | IPC
        )
}

/// Typenames of the array layouts besides the `NumericArray<T>` and
/// `BaseBinaryArray<T>` families (the Python codec registers its decoder
/// for these, through `_core.ARROW_ARRAY_LAYOUTS`).
pub const ARRAY_LAYOUTS: [&str; 8] = [
    "vineyard::BooleanArray",
    "vineyard::FixedSizeBinaryArray",
    "vineyard::NullArray",
    "vineyard::LargeListArray",
    "vineyard::LargeStringArray",
    "vineyard::LargeBinaryArray",
    "vineyard::StringArray",
    "vineyard::BinaryArray",
];

/// The value of an Arrow layout, with the types it had before it was
/// stored (`vineyard_kedro_schema_` / `vineyard_kedro_type_`) restored.
pub fn read_value(meta: &Value, blobs: &dyn Blobs) -> Result<ArrowValue> {
    let m = Meta::of(meta, "an Arrow object")?;
    let r = Reader { blobs };
    match m.typename() {
        "vineyard::RecordBatch" => {
            let original = original_schema(m)?;
            Ok(ArrowValue::Batch(r.batch(m, original.as_ref())?))
        }
        "vineyard::Table" => r.table(m),
        CHUNKED => r.chunked(m),
        IPC => r.ipc(m),
        "vineyard::SchemaProxy" => Ok(ArrowValue::Schema(Arc::new(r.schema(m)?))),
        _ => {
            let arr = r.array(m, 0)?;
            match m.get(EXTRA_TYPE) {
                Some(text) => {
                    let t = type_from_b64(text).map_err(|e| m.error(e))?;
                    Ok(ArrowValue::Array(narrow(arr, &t).map_err(|e| m.error(e))?))
                }
                None => Ok(ArrowValue::Array(arr)),
            }
        }
    }
}

/// The array of an array layout (also an `ArrowIPC` of kind array), in its
/// stored types.
pub fn read_array(meta: &Value, blobs: &dyn Blobs) -> Result<ArrayRef> {
    let m = Meta::of(meta, "an Arrow array")?;
    Reader { blobs }.array(m, 0)
}

fn original_schema(m: Meta<'_>) -> Result<Option<Schema>> {
    m.get(EXTRA_SCHEMA)
        .map(|text| schema_from_b64(text).map_err(|e| m.error(e)))
        .transpose()
}

struct Reader<'a> {
    blobs: &'a dyn Blobs,
}

/// `length_` and `offset_` of an array layout.
fn common(m: Meta<'_>) -> Result<(usize, usize)> {
    Ok((m.size("length_")?, m.size_or("offset_", 0)?))
}

/// `data`, once its `null_count_` (-1: unknown) is checked against the
/// nulls its bitmap holds: a count that lies is a corrupt layout.
fn counted(m: Meta<'_>, data: ArrayData) -> Result<ArrayData> {
    // A NullArray is all nulls without a bitmap: nothing to check.
    if m.has("null_count_") && data.data_type() != &DataType::Null {
        let stated = m.int_in("null_count_", -1, data.len() as i64)?;
        if stated >= 0 && stated as usize != data.null_count() {
            return Err(m.error(format!(
                "null_count_ = {stated} but the bitmap holds {} nulls",
                data.null_count()
            )));
        }
    }
    Ok(data)
}

impl Reader<'_> {
    fn blob(&self, m: Meta<'_>, key: &str) -> Result<Buffer> {
        let id = m.blob_id(key)?;
        match self.blobs.buffer(id) {
            Some(b) => Ok(b),
            None if id == ObjectId::EMPTY_BLOB => Ok(crate::arrow::empty_buffer()),
            None => Err(m.error(format!("blob {key:?} ({id}) is not local"))),
        }
    }

    /// A blob, or None when it is empty (no bitmap: no nulls).
    fn optional(&self, m: Meta<'_>, key: &str) -> Result<Option<Buffer>> {
        Ok(Some(self.blob(m, key)?).filter(|b| !b.is_empty()))
    }

    /// Offsets of `n` items at `offset`: the empty blob stands for no items.
    fn offsets(&self, m: Meta<'_>, n: usize, offset: usize, large: bool) -> Result<Buffer> {
        let b = self.blob(m, "buffer_offsets_")?;
        if !b.is_empty() {
            return Ok(b);
        }
        if n + offset > 0 {
            return Err(m.error(format!("no offsets for {n} items")));
        }
        Ok(if large {
            Buffer::from_vec(vec![0i64])
        } else {
            Buffer::from_vec(vec![0i32])
        })
    }

    fn array(&self, m: Meta<'_>, depth: usize) -> Result<ArrayRef> {
        if depth > MAX_DEPTH {
            return Err(m.error(format!("arrays nested deeper than {MAX_DEPTH}")));
        }
        let t = m.typename();
        if t == IPC {
            return match self.ipc(m)? {
                ArrowValue::Array(a) => Ok(a),
                _ => Err(m.error("not an array stream")),
            };
        }
        let data = if t == "vineyard::NullArray" {
            ArrayData::new_null(&DataType::Null, m.size("length_")?)
        } else if let Some(arg) = t.strip_prefix("vineyard::NumericArray<") {
            let dt = numeric_type(arg.strip_suffix('>').unwrap_or(""))
                .ok_or_else(|| m.error("unsupported element type"))?;
            self.flat(m, dt)?
        } else if t == "vineyard::BooleanArray" {
            self.flat(m, DataType::Boolean)?
        } else if t == "vineyard::FixedSizeBinaryArray" {
            let width = m.int_in("byte_width_", 0, 1 << 31)?;
            let width = i32::try_from(width).map_err(|_| m.error("byte_width_ too large"))?;
            self.flat(m, DataType::FixedSizeBinary(width))?
        } else if t == "vineyard::LargeListArray" {
            let values = self.array(m.member("values_")?, depth + 1)?;
            let (n, offset) = common(m)?;
            let item = Field::new("item", values.data_type().clone(), true);
            ArrayData::builder(DataType::LargeList(Arc::new(item)))
                .len(n)
                .offset(offset)
                .null_bit_buffer(self.optional(m, "null_bitmap_")?)
                .add_buffer(self.offsets(m, n, offset, true)?)
                .add_child_data(values.to_data())
                .build()
                .map_err(|e| m.error(format!("invalid array: {e}")))?
        } else if let Some(dt) = binary_type(t) {
            let (n, offset) = common(m)?;
            let large = matches!(dt, DataType::LargeUtf8 | DataType::LargeBinary);
            let offsets = self.offsets(m, n, offset, large)?;
            let data = self.blob(m, "buffer_data_")?;
            // Items before the array's end are all that is validated (and
            // so read): a preview of 5 rows reads 5 rows of a long column.
            let data = match last_offset(&offsets, offset + n, large) {
                Some(end) if end <= data.len() => data.slice_with_length(0, end),
                _ => data,
            };
            let bitmap = self.optional(m, "null_bitmap_")?;
            binary_data(m, &dt, n, offset, bitmap, offsets, data)?
        } else {
            return Err(m.error("is not an Arrow array layout"));
        };
        Ok(make_array(counted(m, data)?))
    }

    /// A layout of one values buffer (`buffer_`) and a validity bitmap.
    fn flat(&self, m: Meta<'_>, dt: DataType) -> Result<ArrayData> {
        let (n, offset) = common(m)?;
        ArrayData::builder(dt)
            .len(n)
            .offset(offset)
            .null_bit_buffer(self.optional(m, "null_bitmap_")?)
            .add_buffer(self.blob(m, "buffer_")?)
            .build()
            .map_err(|e| m.error(format!("invalid array: {e}")))
    }

    fn schema(&self, m: Meta<'_>) -> Result<Schema> {
        let bytes: Vec<u8>;
        let data: &[u8] = if let Ok(blob) = m.blob_id("buffer_") {
            let b = self.blob(m, "buffer_")?;
            bytes = b.to_vec();
            let _ = blob;
            &bytes
        } else {
            let text = m.str("schema_binary_")?;
            let parsed: Value = serde_json::from_str(text)
                .map_err(|e| m.error(format!("bad schema_binary_: {e}")))?;
            bytes = parsed
                .get("bytes")
                .and_then(Value::as_array)
                .ok_or_else(|| m.error("schema_binary_ has no bytes"))?
                .iter()
                .map(|v| v.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| m.error("schema_binary_ holds a non-byte"))?;
            &bytes
        };
        guarded(|| arrow_ipc::convert::try_schema_from_ipc_buffer(data))
            .map_err(|e| m.error(format!("bad schema: {e}")))
    }

    /// One batch; `original`: the schema the value had before it was stored.
    fn batch(&self, m: Meta<'_>, original: Option<&Schema>) -> Result<RecordBatch> {
        let stored = self.schema(m.member("schema_")?)?;
        let n = m.size_up_to("__columns_-size", MAX_ITEMS)?;
        if n != stored.fields().len() {
            return Err(m.error(format!(
                "{n} columns but the schema has {}",
                stored.fields().len()
            )));
        }
        let schema = original.unwrap_or(&stored);
        if schema.fields().len() != n {
            return Err(m.error("the original schema has another number of columns"));
        }
        let rows = if m.has("row_num_") {
            Some(m.size("row_num_")?)
        } else {
            None
        };
        let mut columns = Vec::with_capacity(n);
        for (i, field) in schema.fields().iter().enumerate() {
            let col = self.array(m.member(&format!("__columns_-{i}"))?, 0)?;
            if let Some(rows) = rows.filter(|r| *r != col.len()) {
                return Err(m.error(format!("column {i} has {} rows, not {rows}", col.len())));
            }
            columns.push(narrow(col, field.data_type()).map_err(|e| m.error(e))?);
        }
        // The columns decide nested field names and nullability (a list's
        // item field as the writer named it); the schema, its metadata.
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        let options = RecordBatchOptions::new().with_row_count(rows);
        RecordBatch::try_new_with_options(schema, columns, &options)
            .map_err(|e| m.error(format!("invalid batch: {e}")))
    }

    fn table(&self, m: Meta<'_>) -> Result<ArrowValue> {
        // The table's own schema is read (and must be valid) even when the
        // original one overrides it.
        let stored = self.schema(m.member("schema_")?)?;
        let schema = original_schema(m)?.unwrap_or(stored);
        let n = if m.has("batch_num_") {
            m.size_up_to("batch_num_", MAX_ITEMS)?
        } else {
            m.size_up_to("partitions_-size", MAX_ITEMS)?
        };
        let batches = (0..n)
            .map(|i| self.batch(m.member(&format!("partitions_-{i}"))?, Some(&schema)))
            .collect::<Result<Vec<_>>>()?;
        let schema = batches
            .first()
            .map_or_else(|| Arc::new(schema), RecordBatch::schema);
        if let Some(i) = batches.iter().position(|b| b.schema() != schema) {
            return Err(m.error(format!("batch {i} has another schema than batch 0")));
        }
        Ok(ArrowValue::Table(schema, batches))
    }

    fn chunked(&self, m: Meta<'_>) -> Result<ArrowValue> {
        let t = type_from_b64(m.get("type_").unwrap_or(&Value::Null)).map_err(|e| m.error(e))?;
        let n = m.size_up_to("__chunks_-size", MAX_ITEMS)?;
        let chunks = (0..n)
            .map(|i| {
                let c = self.array(m.member(&format!("__chunks_-{i}"))?, 0)?;
                narrow(c, &t).map_err(|e| m.error(e))
            })
            .collect::<Result<Vec<_>>>()?;
        let dt = chunks.first().map_or(t, |c| c.data_type().clone());
        Ok(ArrowValue::Chunked(
            Arc::new(Field::new("v", dt, true)),
            chunks,
        ))
    }

    /// Our `ArrowIPC` layout: one Arrow IPC stream, decoded in place (the
    /// batches' buffers are slices of the blob).
    fn ipc(&self, m: Meta<'_>) -> Result<ArrowValue> {
        let blob = self.blob(m, "buffer_")?;
        let size = if m.has("size_") {
            m.size_up_to("size_", blob.len() as u64)?
        } else {
            blob.len()
        };
        if size == 0 {
            return Err(m.error("empty stream"));
        }
        let kind = m.get("kind_").and_then(Value::as_str).unwrap_or("");
        let stream = blob.slice_with_length(0, size);
        let (schema, batches) = guarded(|| decode_stream(stream))
            .map_err(|e| m.error(format!("bad Arrow IPC stream: {e}")))?;
        match kind {
            "table" => Ok(ArrowValue::Table(schema, batches)),
            "record_batch" => match <[RecordBatch; 1]>::try_from(batches) {
                Ok([batch]) => Ok(ArrowValue::Batch(batch)),
                Err(batches) if batches.is_empty() => {
                    Ok(ArrowValue::Batch(RecordBatch::new_empty(schema)))
                }
                Err(batches) => concat_batches(&schema, &batches)
                    .map(ArrowValue::Batch)
                    .map_err(|e| m.error(e)),
            },
            "array" | "chunked_array" => {
                if schema.fields().len() != 1 {
                    return Err(m.error("an array stream needs one column"));
                }
                let field = schema.field(0).clone();
                let chunks: Vec<ArrayRef> = batches.iter().map(|b| b.column(0).clone()).collect();
                if kind == "chunked_array" {
                    return Ok(ArrowValue::Chunked(Arc::new(field), chunks));
                }
                match <[ArrayRef; 1]>::try_from(chunks) {
                    Ok([array]) => Ok(ArrowValue::Array(array)),
                    Err(chunks) => {
                        let parts: Vec<&dyn Array> = chunks.iter().map(|c| c.as_ref()).collect();
                        let array = if parts.is_empty() {
                            arrow_array::new_empty_array(field.data_type())
                        } else {
                            arrow_select::concat::concat(&parts).map_err(|e| m.error(e))?
                        };
                        Ok(ArrowValue::Array(array))
                    }
                }
            }
            other => Err(m.error(format!("unknown kind_ {other:?}"))),
        }
    }
}

/// Text from which validation is split across threads (UTF-8 checking
/// runs at memory speed; the page faults of first touching shared memory
/// are what threads share out).
pub(super) const PARALLEL_TEXT: usize = 8 << 20;

/// A binary or string array, validated by arrow-rs: for long text, in
/// parts on several threads, each part an array of its own over the same
/// buffers (neighbouring parts share their boundary offset, so together
/// they check every offset, every item and the bitmap's length).
fn binary_data(
    m: Meta<'_>,
    dt: &DataType,
    n: usize,
    offset: usize,
    bitmap: Option<Buffer>,
    offsets: Buffer,
    data: Buffer,
) -> Result<ArrayData> {
    let part = |start: usize, len: usize| {
        ArrayData::builder(dt.clone())
            .len(len)
            .offset(offset + start)
            .null_bit_buffer(bitmap.clone())
            .add_buffer(offsets.clone())
            .add_buffer(data.clone())
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(4);
    if threads < 2 || data.len() < PARALLEL_TEXT || n < threads {
        return part(0, n).build().map_err(|e| binary_error(m, e));
    }
    let per = n.div_ceil(threads);
    let checks: Vec<std::result::Result<(), arrow_schema::ArrowError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (start, end) = ((t * per).min(n), ((t + 1) * per).min(n));
                let part = &part;
                s.spawn(move || part(start, end - start).build().map(|_| ()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(arrow_schema::ArrowError::ComputeError(
                        "validation panicked".into(),
                    ))
                })
            })
            .collect()
    });
    for check in checks {
        check.map_err(|e| binary_error(m, e))?;
    }
    // SAFETY: arrow-rs validated every part above: each part's offsets are
    // in bounds and monotonic, its text UTF-8 on item boundaries, and the
    // bitmap long enough for it; the parts cover items 0..n and neighbours
    // share their boundary offset, so the whole array is valid.
    Ok(unsafe { part(0, n).build_unchecked() })
}

/// Offset number `i` of a (large) binary array's offsets, if it is there
/// and not negative.
fn last_offset(offsets: &Buffer, i: usize, large: bool) -> Option<usize> {
    let width = if large { 8 } else { 4 };
    let bytes = offsets.as_slice().get(i * width..(i + 1) * width)?;
    let v = match *bytes {
        [a, b, c, d] => i64::from(i32::from_le_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => i64::from_le_bytes([a, b, c, d, e, f, g, h]),
        _ => return None,
    };
    usize::try_from(v).ok()
}

fn decode_stream(
    mut stream: Buffer,
) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), arrow_schema::ArrowError> {
    let mut decoder = StreamDecoder::new();
    let mut batches = Vec::new();
    while !stream.is_empty() {
        if let Some(b) = decoder.decode(&mut stream)? {
            batches.push(b);
        }
    }
    decoder.finish()?;
    let schema = decoder
        .schema()
        .ok_or_else(|| arrow_schema::ArrowError::IpcError("no schema in the stream".into()))?;
    Ok((schema, batches))
}

/// Several batches of a `record_batch` stream as one (we write one; a
/// stream from elsewhere may hold more).
fn concat_batches(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> std::result::Result<RecordBatch, String> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let columns = (0..schema.fields().len())
        .map(|i| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            arrow_select::concat::concat(&parts).map_err(|e| e.to_string())
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(|e| e.to_string())
}

/// Runs code we do not own on hostile bytes: a panic becomes an error.
fn guarded<T>(
    f: impl FnOnce() -> std::result::Result<T, arrow_schema::ArrowError>,
) -> std::result::Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("arrow-ipc gave up on it (panicked)".into()),
    }
}

fn binary_error(m: Meta<'_>, e: arrow_schema::ArrowError) -> crate::Error {
    let text = e.to_string();
    if text.contains("UTF-8") || text.contains("utf8") || text.contains("utf-8") {
        m.error(format!("the string data is not valid UTF-8 ({text})"))
    } else {
        m.error(format!("invalid array: {text}"))
    }
}

/// The element type of `vineyard::NumericArray<arg>` (C++ and numpy spellings).
fn numeric_type(arg: &str) -> Option<DataType> {
    Some(match arg.trim() {
        "int8" | "int8_t" | "i1" | "<i1" | "|i1" => DataType::Int8,
        "uint8" | "uint8_t" | "u1" | "<u1" | "|u1" => DataType::UInt8,
        "int16" | "int16_t" | "i2" | "<i2" => DataType::Int16,
        "uint16" | "uint16_t" | "u2" | "<u2" => DataType::UInt16,
        "int32" | "int32_t" | "int" | "i4" | "<i4" => DataType::Int32,
        "uint32" | "uint32_t" | "uint" | "u4" | "<u4" => DataType::UInt32,
        "int64" | "int64_t" | "long" | "long long" | "i8" | "<i8" => DataType::Int64,
        "uint64" | "uint64_t" | "unsigned long" | "u8" | "<u8" => DataType::UInt64,
        "halffloat" | "float16" | "half" | "f2" | "<f2" => DataType::Float16,
        "float" | "float32" | "f4" | "<f4" => DataType::Float32,
        "double" | "float64" | "f8" | "<f8" => DataType::Float64,
        _ => return None,
    })
}

/// The type of a binary layout: `BaseBinaryArray<arrow::LargeStringArray>`
/// and friends, or the short names older writers used.
fn binary_type(typename: &str) -> Option<DataType> {
    let arg = typename
        .strip_prefix("vineyard::BaseBinaryArray<")
        .and_then(|a| a.strip_suffix('>'))
        .or_else(|| typename.strip_prefix("vineyard::"))?;
    let textual = arg.contains("String");
    let large = arg.contains("Large");
    if !textual && !arg.contains("Binary") {
        return None;
    }
    Some(match (textual, large) {
        (true, true) => DataType::LargeUtf8,
        (true, false) => DataType::Utf8,
        (false, true) => DataType::LargeBinary,
        (false, false) => DataType::Binary,
    })
}
