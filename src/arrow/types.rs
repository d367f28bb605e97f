//! Names of our Arrow layouts; which types the official layouts carry and
//! how they are widened when stored; schemas as IPC schema messages, and
//! as base64 text (how we keep the types a value had before it was
//! widened).

use std::sync::Arc;

use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
use arrow_schema::{DataType, Field, Schema};
use serde_json::Value;

use super::write::arrow_error;
use crate::Result;

/// Our layout of a chunked array: `type_` (base64 schema of one field
/// `v`) and `__chunks_-<i>` arrays.
pub const CHUNKED: &str = "vineyard_kedro::ChunkedArray";
/// Our layout of one Arrow IPC stream (types the official layouts lack).
pub const IPC: &str = "vineyard_kedro::ArrowIPC";
/// The schema a table or batch had before it was stored.
pub const EXTRA_SCHEMA: &str = "vineyard_kedro_schema_";
/// The type an array had before it was stored.
pub const EXTRA_TYPE: &str = "vineyard_kedro_type_";

/// A schema from the base64 text of its IPC schema message.
pub fn schema_from_b64(text: &Value) -> Result<Schema, String> {
    let text = text
        .as_str()
        .ok_or("an Arrow schema should be a base64 string")?;
    let bytes = b64_decode(text).ok_or("an Arrow schema is not valid base64")?;
    std::panic::catch_unwind(|| arrow_ipc::convert::try_schema_from_ipc_buffer(&bytes))
        .map_err(|_| "bad Arrow schema".to_string())?
        .map_err(|e| format!("bad Arrow schema: {e}"))
}

/// The type of field 0 of a base64 schema of one field.
pub fn type_from_b64(text: &Value) -> Result<DataType, String> {
    let s = schema_from_b64(text)?;
    match s.fields().len() {
        1 => Ok(s.field(0).data_type().clone()),
        _ => Err("bad Arrow type".into()),
    }
}

/// True when the official layouts can carry type `t`.
pub fn portable(t: &DataType) -> bool {
    use DataType::*;
    match t {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float32 | Float64
        | Boolean | Null => true,
        Utf8 | LargeUtf8 | Binary | LargeBinary | FixedSizeBinary(_) => true,
        List(f) | LargeList(f) => portable(f.data_type()),
        _ => false,
    }
}

/// The type an array of type `t` has once stored (64-bit offsets; list
/// items named "item").
pub fn widen(t: &DataType) -> DataType {
    match t {
        DataType::Utf8 => DataType::LargeUtf8,
        DataType::Binary => DataType::LargeBinary,
        DataType::List(f) | DataType::LargeList(f) => DataType::LargeList(Arc::new(Field::new(
            "item",
            widen(f.data_type()),
            f.is_nullable(),
        ))),
        other => other.clone(),
    }
}

pub fn widen_schema(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(widen(f.data_type())))
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// The IPC schema message of `schema` (what pyarrow's `Schema.serialize`
/// gives: continuation marker, length, flatbuffer, padding).
pub fn schema_bytes(schema: &Schema) -> Result<Vec<u8>> {
    let options = IpcWriteOptions::default();
    let mut tracker = DictionaryTracker::new(false);
    let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
        schema,
        &mut tracker,
        &options,
    );
    let mut out = Vec::new();
    arrow_ipc::writer::write_message(&mut out, encoded, &options).map_err(arrow_error)?;
    Ok(out)
}

pub fn schema_b64(schema: &Schema) -> Result<String> {
    Ok(b64_encode(&schema_bytes(schema)?))
}

pub fn type_b64(t: &DataType) -> Result<String> {
    schema_b64(&Schema::new(vec![Field::new("v", t.clone(), true)]))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what Python's `base64.b64encode` writes).
pub fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict standard base64 (padding required, nothing else allowed).
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| ALPHABET.iter().position(|&a| a == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (k, quad) in bytes.chunks(4).enumerate() {
        let last = k + 1 == bytes.len() / 4;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_refuses_garbage() {
        for n in 0..20 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(b64_decode(&b64_encode(&bytes)).as_deref(), Some(&bytes[..]));
        }
        assert_eq!(b64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(b64_decode("aGVsbG8="), Some(b"hello".to_vec()));
        for bad in ["aGVsbG8", "aGV=bG8=", "a===", "aGVsbG8*"] {
            assert_eq!(b64_decode(bad), None, "{bad}");
        }
    }
}
