//! Writers of vineyard's Arrow layouts (read back by `read.rs` and by the
//! official clients), and of our Arrow IPC layout for the types the
//! official layouts lack.
//!
//! The official layouts carry integers, float32/64, bool, null, strings and
//! binaries (stored widened to 64-bit offsets), fixed-size binaries, and
//! lists of those (stored as large lists). Buffers are stored sliced to the
//! array: offsets rebased to 0, and bitmaps copied from the byte holding
//! the first bit, `offset_` (< 8) skipping the bits in front, so a slice
//! never drags its parent's memory along. One exception: when every buffer
//! of a (non-list) array is exactly a blob this process loaded, the buffers
//! are kept whole and `offset_` is the array's offset, so the save
//! references the blobs instead of copying a slice of them.
//!
//! The output is a metadata tree whose blobs are `{"__blob__": i}`, the
//! i-th part (counting from a base the caller gives), and those parts:
//! buffers to copy, or an IPC stream to write straight into its blob.

use std::sync::Arc;

use arrow_array::{make_array, Array, ArrayRef, RecordBatch};
use arrow_buffer::{bit_util, BooleanBufferBuilder, Buffer};
use arrow_data::ArrayData;
use arrow_schema::{DataType, Field, Schema};
use serde_json::{json, Map, Value};

use super::ipc::{IpcStream, Part};
use super::read::ArrowValue;
use super::scratch::scratch;
use super::types::{
    portable, schema_b64, schema_bytes, type_b64, widen, widen_schema, CHUNKED, EXTRA_SCHEMA,
    EXTRA_TYPE, IPC,
};
use crate::{Error, Result};

/// A written layout: its tree and what its blobs hold.
pub struct Written {
    pub tree: Value,
    pub buffers: Vec<Part>,
}

/// Given a buffer, the whole loaded blob it lies in, and how many bytes
/// into the blob it starts (arrow-rs arrays fold their offset into their
/// buffers, and a buffer imported through the C Data Interface ends where
/// its array does, short of the blob's end).
pub type WholeBlob<'a> = &'a dyn Fn(&Buffer) -> Option<(Buffer, usize)>;

/// Writes `value` (an array, record batch, table or chunked array).
/// `whole` finds the loaded blobs buffers begin (kept whole, see the module
/// comment); `base` is the index of the first buffer.
pub fn write_value(value: &ArrowValue, whole: WholeBlob<'_>, base: usize) -> Result<Written> {
    let mut w = Writer {
        buffers: Vec::new(),
        base,
        whole,
    };
    let tree = match value {
        ArrowValue::Array(a) => {
            if portable(a.data_type()) {
                let mut t = w.array(&a.to_data())?;
                if widen(a.data_type()) != *a.data_type() {
                    t.insert(EXTRA_TYPE.into(), type_b64(a.data_type())?.into());
                }
                t
            } else {
                w.ipc(value, "array")?
            }
        }
        ArrowValue::Batch(b) => {
            if b.schema().fields().iter().all(|f| portable(f.data_type())) {
                let stored = widen_schema(&b.schema());
                let mut t = w.batch(b, &stored)?;
                if stored != *b.schema() {
                    t.insert(EXTRA_SCHEMA.into(), schema_b64(&b.schema())?.into());
                }
                t
            } else {
                w.ipc(value, "record_batch")?
            }
        }
        ArrowValue::Table(schema, batches) => {
            if schema.fields().iter().all(|f| portable(f.data_type())) {
                w.table(schema, batches)?
            } else {
                w.ipc(value, "table")?
            }
        }
        ArrowValue::Chunked(field, chunks) => {
            if portable(field.data_type()) {
                let mut t = Map::new();
                t.insert("typename".into(), CHUNKED.into());
                t.insert("type_".into(), type_b64(field.data_type())?.into());
                t.insert("__chunks_-size".into(), chunks.len().into());
                let mut nbytes = 0;
                for (i, c) in chunks.iter().enumerate() {
                    let tree = w.array(&c.to_data())?;
                    nbytes += tree.get("nbytes").and_then(Value::as_u64).unwrap_or(0);
                    t.insert(format!("__chunks_-{i}"), tree.into());
                }
                t.insert("nbytes".into(), nbytes.into());
                t
            } else {
                w.ipc(value, "chunked_array")?
            }
        }
        ArrowValue::Schema(_) => {
            return Err(Error::Unsupported(
                "an Arrow schema alone is not stored".into(),
            ))
        }
    };
    Ok(Written {
        tree: Value::Object(tree),
        buffers: w.buffers,
    })
}

/// The bare layout of an array of a portable type, as other layouts embed
/// it (no note of its type before widening: the embedding layout keeps that).
pub fn write_layout(value: &ArrowValue, whole: WholeBlob<'_>, base: usize) -> Result<Written> {
    let ArrowValue::Array(a) = value else {
        return Err(Error::Usage("an embedded Arrow layout is an array".into()));
    };
    if !portable(a.data_type()) {
        return Err(Error::Unsupported(format!(
            "no official layout for Arrow type {}",
            a.data_type()
        )));
    }
    let mut w = Writer {
        buffers: Vec::new(),
        base,
        whole,
    };
    let tree = w.array(&a.to_data())?;
    Ok(Written {
        tree: Value::Object(tree),
        buffers: w.buffers,
    })
}

pub(super) fn arrow_error(e: arrow_schema::ArrowError) -> Error {
    Error::Unsupported(format!("cannot store the Arrow value: {e}"))
}

/// The name vineyard gives an element type (`NumericArray<...>`), as
/// pyarrow spells it.
fn numeric_name(t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Int8 => "int8",
        DataType::Int16 => "int16",
        DataType::Int32 => "int32",
        DataType::Int64 => "int64",
        DataType::UInt8 => "uint8",
        DataType::UInt16 => "uint16",
        DataType::UInt32 => "uint32",
        DataType::UInt64 => "uint64",
        DataType::Float32 => "float",
        DataType::Float64 => "double",
        _ => return None,
    })
}

struct Writer<'a> {
    buffers: Vec<Part>,
    base: usize,
    whole: WholeBlob<'a>,
}

impl Writer<'_> {
    fn add(&mut self, b: Buffer) -> Value {
        self.add_part(Part::Bytes(b))
    }

    fn add_part(&mut self, p: Part) -> Value {
        self.buffers.push(p);
        json!({ "__blob__": self.base + self.buffers.len() - 1 })
    }

    fn empty(&mut self) -> Value {
        self.add(super::empty_buffer())
    }

    /// The validity bitmap of items `start..start+n` of `data` (`start`
    /// counts from the buffers' beginning, `r` items before the array's
    /// first), from the byte holding bit `start`; empty when there are no
    /// nulls.
    fn validity(&mut self, data: &ArrayData, r: usize, n: usize) -> Result<Value> {
        let Some(nulls) = data.nulls().filter(|nulls| nulls.null_count() > 0) else {
            return Ok(self.empty());
        };
        let bits = nulls.inner();
        let buffer = match bits.offset().checked_sub(r).filter(|first| first % 8 == 0) {
            // The bitmap lines up with the values (as Arrow producers keep
            // it): its bytes are stored as they are.
            Some(first) => cut(bits.inner(), first / 8, bit_util::ceil(n, 8))?,
            None => {
                let mut b = BooleanBufferBuilder::new(n);
                b.append_n(r, false);
                b.append_buffer(bits);
                b.finish().into_inner()
            }
        };
        Ok(self.add(buffer))
    }

    /// Rebased 64-bit offsets of items `start..start+n`: (blob, first, last).
    fn offsets(
        &mut self,
        data: &ArrayData,
        start: usize,
        n: usize,
        large: bool,
    ) -> Result<(Value, usize, usize)> {
        let width = if large { 8 } else { 4 };
        let raw = cut(&data.buffers()[0], start * width, (n + 1) * width)?;
        let read = |bytes: &[u8]| -> i64 {
            match *bytes {
                [a, b, c, d] => i64::from(i32::from_le_bytes([a, b, c, d])),
                [a, b, c, d, e, f, g, h] => i64::from_le_bytes([a, b, c, d, e, f, g, h]),
                _ => 0,
            }
        };
        let first = to_usize(read(&raw.as_slice()[..width]))?;
        let last = to_usize(read(&raw.as_slice()[n * width..]))?;
        if large && first == 0 {
            return Ok((self.add(raw), first, last));
        }
        let base = first as i64;
        let mut rebased = scratch(n + 1);
        let out = rebased.as_mut_slice();
        // Typed when aligned (Arrow buffers are), so the loop vectorises.
        match (large, raw.as_ptr().align_offset(width)) {
            (false, 0) => {
                for (o, &v) in out.iter_mut().zip(raw.typed_data::<i32>()) {
                    *o = i64::from(v) - base;
                }
            }
            (true, 0) => {
                for (o, &v) in out.iter_mut().zip(raw.typed_data::<i64>()) {
                    *o = v - base;
                }
            }
            _ => {
                for (o, v) in out.iter_mut().zip(raw.as_slice().chunks_exact(width)) {
                    *o = read(v) - base;
                }
            }
        }
        Ok((self.add(rebased.into_buffer()), first, last))
    }

    /// The layout of one array of a portable type.
    fn array(&mut self, data: &ArrayData) -> Result<Map<String, Value>> {
        let t = data.data_type();
        let n = data.len();
        if *t == DataType::Null {
            let mut m = Map::new();
            m.insert("typename".into(), "vineyard::NullArray".into());
            m.insert("length_".into(), n.into());
            m.insert("nbytes".into(), 0.into());
            return Ok(m);
        }
        if let Some(m) = self.whole_array(data) {
            return Ok(m);
        }
        let first_blob = self.buffers.len();
        let has_bitmap = data.nulls().is_some_and(|b| b.null_count() > 0);
        // Bitmaps are copied from the byte holding the first bit: up to 7
        // leading items stay in front, and offset_ skips them.
        let bits = *t == DataType::Boolean || has_bitmap;
        let r = if bits { data.offset() % 8 } else { 0 };
        let start = data.offset() - r;
        let mut m = Map::new();
        m.insert("length_".into(), n.into());
        m.insert("null_count_".into(), data.null_count().into());
        m.insert("offset_".into(), r.into());
        let values = data.buffers().first();
        match t {
            DataType::Boolean => {
                m.insert("typename".into(), "vineyard::BooleanArray".into());
                let v = match values.filter(|_| n > 0) {
                    Some(b) => self.add(cut(b, start / 8, bit_util::ceil(r + n, 8))?),
                    None => self.empty(),
                };
                m.insert("buffer_".into(), v);
            }
            DataType::FixedSizeBinary(width) => {
                let width = *width as usize;
                m.insert("typename".into(), "vineyard::FixedSizeBinaryArray".into());
                m.insert("byte_width_".into(), width.into());
                let v = match values.filter(|_| n > 0 && width > 0) {
                    Some(b) => self.add(cut(b, start * width, (r + n) * width)?),
                    None => self.empty(),
                };
                m.insert("buffer_".into(), v);
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary => {
                let large = matches!(t, DataType::LargeUtf8 | DataType::LargeBinary);
                let textual = matches!(t, DataType::Utf8 | DataType::LargeUtf8);
                let (offsets, first, last) = self.offsets(data, start, r + n, large)?;
                m.insert(
                    "typename".into(),
                    if textual {
                        "vineyard::BaseBinaryArray<arrow::LargeStringArray>"
                    } else {
                        "vineyard::BaseBinaryArray<arrow::LargeBinaryArray>"
                    }
                    .into(),
                );
                m.insert("buffer_offsets_".into(), offsets);
                let text = self.add(cut(&data.buffers()[1], first, last.saturating_sub(first))?);
                m.insert("buffer_data_".into(), text);
            }
            DataType::List(_) | DataType::LargeList(_) => {
                let large = matches!(t, DataType::LargeList(_));
                let (offsets, first, last) = self.offsets(data, start, r + n, large)?;
                m.insert("typename".into(), "vineyard::LargeListArray".into());
                m.insert("buffer_offsets_".into(), offsets);
                let child = data
                    .child_data()
                    .first()
                    .ok_or_else(|| Error::Internal("a list array without values".into()))?;
                if first > last || last > child.len() {
                    return Err(Error::Unsupported(format!(
                        "list offsets {first}..{last} outside {} values",
                        child.len()
                    )));
                }
                let values = make_array(child.clone())
                    .slice(first, last - first)
                    .to_data();
                let tree = self.array(&values)?;
                m.insert("values_".into(), tree.into());
            }
            other => {
                let name = numeric_name(other).ok_or_else(|| {
                    Error::Internal(format!("no official layout for Arrow type {other}"))
                })?;
                let size = other.primitive_width().unwrap_or(1);
                m.insert(
                    "typename".into(),
                    format!("vineyard::NumericArray<{name}>").into(),
                );
                let v = match values.filter(|_| n > 0) {
                    Some(b) => self.add(cut(b, start * size, (r + n) * size)?),
                    None => self.empty(),
                };
                m.insert("buffer_".into(), v);
            }
        }
        let bitmap = self.validity(data, r, r + n)?;
        m.insert("null_bitmap_".into(), bitmap);
        let nbytes: usize = self.buffers[first_blob..].iter().map(Part::len).sum();
        m.insert("nbytes".into(), nbytes.into());
        Ok(m)
    }

    /// The layout of a flat array whose every buffer lies in a loaded blob,
    /// at one item offset: the blobs whole, `offset_` that offset, so a
    /// slice of a loaded array is saved without a copy. Only when the slice
    /// uses at least half of those blobs' bytes: a small slice is copied
    /// rather than keep much more memory alive than it holds.
    fn whole_array(&mut self, data: &ArrayData) -> Option<Map<String, Value>> {
        let t = data.data_type();
        let (typename, bits_per_item) = match t {
            DataType::Boolean => ("vineyard::BooleanArray".to_string(), 1),
            DataType::LargeUtf8 => (
                "vineyard::BaseBinaryArray<arrow::LargeStringArray>".into(),
                64,
            ),
            DataType::LargeBinary => (
                "vineyard::BaseBinaryArray<arrow::LargeBinaryArray>".into(),
                64,
            ),
            DataType::FixedSizeBinary(w) => (
                "vineyard::FixedSizeBinaryArray".into(),
                8 * usize::try_from(*w).ok()?,
            ),
            other => (
                format!("vineyard::NumericArray<{}>", numeric_name(other)?),
                8 * other.primitive_width()?,
            ),
        };
        if bits_per_item == 0 {
            return None;
        }
        let textual = matches!(t, DataType::LargeUtf8 | DataType::LargeBinary);
        let bufs = data.buffers();
        // The item offset the first buffer (values, or offsets) starts at.
        let (first, delta) = (self.whole)(bufs.first()?)?;
        let bit = delta * 8 + data.offset() * bits_per_item;
        if !bit.is_multiple_of(bits_per_item) {
            return None;
        }
        let offset = bit / bits_per_item;
        let mut whole = vec![first];
        if textual {
            // Offsets count from the start of the data blob.
            let (text, at) = (self.whole)(bufs.get(1)?)?;
            if at != 0 {
                return None;
            }
            whole.push(text);
        }
        let nulls = data.nulls().filter(|b| b.null_count() > 0);
        let bitmap = match nulls {
            Some(n) => {
                let (b, at) = (self.whole)(n.buffer())?;
                if at * 8 + n.offset() != offset {
                    return None;
                }
                Some(b)
            }
            None => None,
        };
        let total: usize = whole.iter().chain(&bitmap).map(Buffer::len).sum();
        if data.get_slice_memory_size().ok()? * 2 < total {
            return None;
        }
        let first_blob = self.buffers.len();
        let mut m = Map::new();
        m.insert("typename".into(), typename.into());
        m.insert("length_".into(), data.len().into());
        m.insert("null_count_".into(), data.null_count().into());
        m.insert("offset_".into(), offset.into());
        if let DataType::FixedSizeBinary(width) = t {
            m.insert("byte_width_".into(), (*width).into());
        }
        let mut whole = whole.into_iter();
        if textual {
            let offsets = self.add(whole.next()?);
            m.insert("buffer_offsets_".into(), offsets);
            let text = self.add(whole.next()?);
            m.insert("buffer_data_".into(), text);
        } else {
            let v = self.add(whole.next()?);
            m.insert("buffer_".into(), v);
        }
        let b = match bitmap {
            Some(b) => self.add(b),
            None => self.empty(),
        };
        m.insert("null_bitmap_".into(), b);
        let nbytes: usize = self.buffers[first_blob..].iter().map(Part::len).sum();
        m.insert("nbytes".into(), nbytes.into());
        Some(m)
    }

    fn schema_tree(&self, schema: &Schema) -> Result<Value> {
        let data = schema_bytes(schema)?;
        let text = serde_json::to_string(&json!({ "bytes": data }))
            .map_err(|e| Error::Internal(format!("schema JSON: {e}")))?;
        Ok(json!({
            "typename": "vineyard::SchemaProxy",
            "schema_binary_": text,
            "nbytes": data.len(),
        }))
    }

    fn batch(&mut self, batch: &RecordBatch, stored: &Schema) -> Result<Map<String, Value>> {
        let mut m = Map::new();
        m.insert("typename".into(), "vineyard::RecordBatch".into());
        m.insert("row_num_".into(), batch.num_rows().into());
        m.insert("column_num_".into(), batch.num_columns().into());
        m.insert("__columns_-size".into(), batch.num_columns().into());
        m.insert("schema_".into(), self.schema_tree(stored)?);
        let mut nbytes = 0;
        for (i, c) in batch.columns().iter().enumerate() {
            let tree = self.array(&c.to_data())?;
            nbytes += tree.get("nbytes").and_then(Value::as_u64).unwrap_or(0);
            m.insert(format!("__columns_-{i}"), tree.into());
        }
        m.insert("nbytes".into(), nbytes.into());
        Ok(m)
    }

    fn table(&mut self, schema: &Schema, batches: &[RecordBatch]) -> Result<Map<String, Value>> {
        let stored = widen_schema(schema);
        let mut m = Map::new();
        m.insert("typename".into(), "vineyard::Table".into());
        m.insert(
            "num_rows_".into(),
            batches
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>()
                .into(),
        );
        m.insert("num_columns_".into(), schema.fields().len().into());
        m.insert("batch_num_".into(), batches.len().into());
        m.insert("partitions_-size".into(), batches.len().into());
        m.insert("schema_".into(), self.schema_tree(&stored)?);
        if stored != *schema {
            m.insert(EXTRA_SCHEMA.into(), schema_b64(schema)?.into());
        }
        let mut nbytes = 0;
        for (i, b) in batches.iter().enumerate() {
            let tree = self.batch(b, &stored)?;
            nbytes += tree.get("nbytes").and_then(Value::as_u64).unwrap_or(0);
            m.insert(format!("partitions_-{i}"), tree.into());
        }
        m.insert("nbytes".into(), nbytes.into());
        Ok(m)
    }

    /// One Arrow IPC stream in a blob.
    fn ipc(&mut self, value: &ArrowValue, kind: &str) -> Result<Map<String, Value>> {
        let column = |a: &ArrayRef| -> Result<RecordBatch> {
            let schema = Schema::new(vec![Field::new("v", a.data_type().clone(), true)]);
            RecordBatch::try_new(Arc::new(schema), vec![a.clone()]).map_err(arrow_error)
        };
        let (schema, batches): (Arc<Schema>, Vec<RecordBatch>) = match value {
            ArrowValue::Array(a) => {
                let b = column(a)?;
                (b.schema(), vec![b])
            }
            ArrowValue::Batch(b) => (b.schema(), vec![b.clone()]),
            ArrowValue::Table(s, b) => (s.clone(), b.clone()),
            ArrowValue::Chunked(f, chunks) => {
                let schema = Arc::new(Schema::new(vec![f.as_ref().clone().with_name("v")]));
                let batches = chunks
                    .iter()
                    .map(|c| {
                        RecordBatch::try_new(schema.clone(), vec![c.clone()]).map_err(arrow_error)
                    })
                    .collect::<Result<Vec<_>>>()?;
                (schema, batches)
            }
            ArrowValue::Schema(_) => {
                return Err(Error::Unsupported(
                    "an Arrow schema alone is not stored".into(),
                ))
            }
        };
        let stream = IpcStream::new(schema, batches)?;
        let size = stream.len();
        let mut m = Map::new();
        m.insert("typename".into(), IPC.into());
        m.insert("kind_".into(), kind.into());
        m.insert("size_".into(), size.into());
        m.insert("nbytes".into(), size.into());
        let blob = self.add_part(Part::Ipc(stream));
        m.insert("buffer_".into(), blob);
        Ok(m)
    }
}

/// `len` bytes at `offset` of `b`, or an error (never a panic) when they
/// are not all there.
fn cut(b: &Buffer, offset: usize, len: usize) -> Result<Buffer> {
    match offset.checked_add(len) {
        Some(end) if end <= b.len() => Ok(b.slice_with_length(offset, len)),
        _ => Err(Error::Unsupported(format!(
            "an Arrow buffer of {} bytes is shorter than its array says ({len} bytes at {offset})",
            b.len()
        ))),
    }
}

fn to_usize(v: i64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::Unsupported(format!("a negative Arrow offset ({v})")))
}
