//! Object identifiers and metadata trees.
//!
//! Ids are u64 on the wire and `o%016x` in metadata; bit 63 marks a blob.
//! `ObjectMeta` wraps the server's JSON object without losing anything:
//! serde_json keeps u64 numbers exact (never through f64), and the fields
//! vineyard stores as JSON-in-a-string (`shape_`, `columns_`, ...) are parsed
//! on demand by [`ObjectMeta::json_field`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A vineyard object id. Bit 63 set means a blob.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub u64);

impl ObjectId {
    /// The zero-length blob: never allocated, valid wherever a blob is.
    pub const EMPTY_BLOB: ObjectId = ObjectId(0x8000_0000_0000_0000);
    /// Not a usable object.
    pub const INVALID: ObjectId = ObjectId(u64::MAX);

    /// True for blob ids (bit 63).
    pub fn is_blob(self) -> bool {
        self.0 & (1 << 63) != 0
    }

    /// The raw u64 value.
    pub fn value(self) -> u64 {
        self.0
    }

    /// The one text grammar of ids, for metadata and for ids users type:
    /// `o` and 1 to 16 hex digits (either case), nothing else. vineyardd
    /// writes `o%016x` and reads `o` + hex (`ObjectIDFromString`), so a
    /// decimal string is refused: vineyardd would read `"o123"` and `"123"`
    /// as different objects, and nothing vineyardd or we print is decimal.
    pub fn parse(s: &str) -> Option<ObjectId> {
        let hex = s.strip_prefix('o')?;
        // `from_str_radix` alone would also take a sign (`o+1`).
        if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(ObjectId)
    }

    /// Reads an id from a JSON value: a u64 number or an `o…` string.
    pub fn from_json(v: &Value) -> Option<ObjectId> {
        match v {
            Value::Number(n) => n.as_u64().map(ObjectId),
            Value::String(s) => ObjectId::parse(s),
            _ => None,
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "o{:016x}", self.0)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ObjectId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectId::parse(s).ok_or_else(|| {
            format!("{s:?} is not an object id (expected 'o' and 1 to 16 hex digits)")
        })
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        ObjectId::from_json(&v)
            .ok_or_else(|| serde::de::Error::custom(format!("{v} is not an object id")))
    }
}

/// A metadata tree as vineyardd stores it: a JSON object whose object-valued
/// entries are members (sub-objects or blobs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectMeta(pub Map<String, Value>);

impl ObjectMeta {
    /// An empty tree with the given typename.
    pub fn new(typename: &str) -> ObjectMeta {
        let mut m = Map::new();
        m.insert("typename".into(), Value::String(typename.into()));
        ObjectMeta(m)
    }

    /// Wraps a JSON value; `None` unless it is an object.
    pub fn from_value(v: Value) -> Option<ObjectMeta> {
        match v {
            Value::Object(m) => Some(ObjectMeta(m)),
            _ => None,
        }
    }

    /// The object's id (`id` entry), if present and well-formed.
    pub fn id(&self) -> Option<ObjectId> {
        self.0.get("id").and_then(ObjectId::from_json)
    }

    /// The `typename` entry.
    pub fn typename(&self) -> Option<&str> {
        self.0.get("typename").and_then(Value::as_str)
    }

    /// The `instance_id` entry.
    pub fn instance_id(&self) -> Option<u64> {
        self.0.get("instance_id").and_then(Value::as_u64)
    }

    /// The `__name` entry set by `put_name`.
    pub fn name(&self) -> Option<&str> {
        self.0.get("__name").and_then(Value::as_str)
    }

    /// True when the object has been persisted.
    pub fn is_persistent(&self) -> bool {
        self.0.get("transient").and_then(Value::as_bool) == Some(false)
    }

    /// A raw entry.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// A string entry.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// An unsigned integer entry.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.0.get(key).and_then(Value::as_u64)
    }

    /// Parses an entry stored as JSON text inside a string (`"[2, 3]"`).
    pub fn json_field(&self, key: &str) -> Option<Value> {
        self.get_str(key).and_then(|s| serde_json::from_str(s).ok())
    }

    /// Stores `value` as JSON text inside a string, as the reference clients do.
    pub fn set_json_field(&mut self, key: &str, value: &Value) {
        self.0.insert(key.into(), Value::String(value.to_string()));
    }

    /// Sets a plain entry.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(key.into(), value.into());
    }

    /// A member subtree.
    pub fn member(&self, key: &str) -> Option<ObjectMeta> {
        match self.0.get(key) {
            Some(Value::Object(m)) => Some(ObjectMeta(m.clone())),
            _ => None,
        }
    }

    /// Every blob id in the tree, depth first, without duplicates.
    pub fn blob_ids(&self) -> Vec<ObjectId> {
        let mut out = Vec::new();
        collect_blobs(&self.0, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Blob ids of the tree together with the instance each lives on.
    pub fn blobs_with_instance(&self) -> Vec<(ObjectId, Option<u64>)> {
        let mut out = Vec::new();
        collect_blobs_with_instance(&self.0, &mut out);
        out.sort_unstable_by_key(|(id, _)| *id);
        out.dedup_by_key(|(id, _)| *id);
        out
    }

    /// Serialises the tree to compact JSON text.
    pub fn to_json(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }

    /// The underlying JSON value.
    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

fn collect_blobs(m: &Map<String, Value>, out: &mut Vec<ObjectId>) {
    collect_blobs_with(m, &mut |id, _| out.push(id));
}

fn collect_blobs_with_instance(m: &Map<String, Value>, out: &mut Vec<(ObjectId, Option<u64>)>) {
    collect_blobs_with(m, &mut |id, inst| out.push((id, inst)));
}

fn collect_blobs_with(m: &Map<String, Value>, f: &mut dyn FnMut(ObjectId, Option<u64>)) {
    for v in m.values() {
        if let Value::Object(sub) = v {
            match sub.get("id").and_then(ObjectId::from_json) {
                Some(id) if id.is_blob() => f(id, sub.get("instance_id").and_then(Value::as_u64)),
                _ => collect_blobs_with(sub, f),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_prints_and_parses() {
        let id = ObjectId(0x6889041a79c00005);
        assert_eq!(id.to_string(), "o6889041a79c00005");
        assert_eq!(ObjectId::parse("o6889041a79c00005"), Some(id));
        assert!(!id.is_blob());
        assert!(ObjectId::parse("oe889041a79400000").unwrap().is_blob());
        assert_eq!(ObjectId::EMPTY_BLOB.to_string(), "o8000000000000000");
        assert_eq!(ObjectId::parse("o"), None);
        assert_eq!(ObjectId::parse("o1234567890abcdef0"), None);
    }

    #[test]
    fn object_id_grammar_is_o_and_hex_only() {
        assert_eq!(ObjectId::parse("o1"), Some(ObjectId(1)));
        assert_eq!(
            ObjectId::parse("oFFFFFFFFFFFFFFFF"),
            Some(ObjectId::INVALID)
        );
        for junk in [
            "",
            "o",
            "1234",
            "o+1",
            "o-1",
            "o 1",
            " o1",
            "o1 ",
            "o_1",
            "0x1",
            "oxyz",
            "o1234567890abcdef0",
            "O1",
            "o１",
        ] {
            assert_eq!(ObjectId::parse(junk), None, "{junk:?}");
        }
        let err = "12".parse::<ObjectId>().unwrap_err();
        assert!(err.contains("\"12\" is not an object id"), "{err}");
    }

    #[test]
    fn u64_ids_survive_json_exactly() {
        let text = r#"{"id":"o6889041a79c00005","signature":18446744073709551615,
            "buffer_":{"id":"oe889041a79400000","typename":"vineyard::Blob","instance_id":0},
            "shape_":"[2, 3]","typename":"vineyard::Tensor<double>"}"#;
        let meta: ObjectMeta = serde_json::from_str(text).unwrap();
        assert_eq!(meta.get_u64("signature"), Some(u64::MAX));
        assert_eq!(meta.json_field("shape_"), Some(serde_json::json!([2, 3])));
        assert_eq!(meta.blob_ids(), vec![ObjectId(0xe889041a79400000)]);
        let back: ObjectMeta = serde_json::from_str(&meta.to_json()).unwrap();
        assert_eq!(back, meta);
    }
}
