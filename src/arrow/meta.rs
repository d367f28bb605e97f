//! Checked access to the metadata of an Arrow layout (JSON as vineyardd
//! returns it, written by us, the official clients or anyone with socket
//! access): every integer is range-checked and every member must be an
//! object, and a violation is an [`Error::Layout`] naming the field.

use serde_json::{Map, Value};

use crate::{Error, ObjectId, Result};

/// Most items a list member (columns, batches, chunks) may declare.
pub const MAX_ITEMS: u64 = 1 << 24;
/// Deepest nesting of arrays (lists of lists ...) read.
pub const MAX_DEPTH: usize = 64;

/// One object's metadata, for reading.
#[derive(Clone, Copy)]
pub struct Meta<'a>(pub &'a Map<String, Value>);

impl<'a> Meta<'a> {
    /// The object `v` must be.
    pub fn of(v: &'a Value, what: &str) -> Result<Meta<'a>> {
        v.as_object()
            .map(Meta)
            .ok_or_else(|| layout(ObjectId::INVALID, format!("{what} is not an object")))
    }

    pub fn id(&self) -> ObjectId {
        self.0
            .get("id")
            .and_then(ObjectId::from_json)
            .unwrap_or(ObjectId::INVALID)
    }

    pub fn typename(&self) -> &'a str {
        self.0
            .get("typename")
            .and_then(Value::as_str)
            .unwrap_or("<object without typename>")
    }

    /// A layout error about this object.
    pub fn error(&self, detail: impl std::fmt::Display) -> Error {
        layout(self.id(), format!("{}: {detail}", self.typename()))
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key)
    }

    /// An integer entry (a JSON number or a decimal string) in `lo..=hi`.
    pub fn int_in(&self, key: &str, lo: i64, hi: i64) -> Result<i64> {
        let v = self
            .0
            .get(key)
            .ok_or_else(|| self.error(format!("key {key:?} is missing")))?;
        let n = match v {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9e18)
                    .map(|f| f as i64)
            }),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (lo..=hi).contains(&n) => Ok(n),
            Some(n) => Err(self.error(format!("{key:?} = {n} is out of range [{lo}, {hi}]"))),
            None => Err(self.error(format!("{key:?} should be an integer, not {v}"))),
        }
    }

    /// A non-negative integer entry up to 2^62, as usize.
    pub fn size(&self, key: &str) -> Result<usize> {
        self.size_up_to(key, 1 << 62)
    }

    pub fn size_up_to(&self, key: &str, hi: u64) -> Result<usize> {
        let hi = i64::try_from(hi).unwrap_or(i64::MAX);
        let n = self.int_in(key, 0, hi)?;
        usize::try_from(n).map_err(|_| self.error(format!("{key:?} = {n} does not fit in memory")))
    }

    /// Like [`Meta::size`], `default` when the key is absent.
    pub fn size_or(&self, key: &str, default: usize) -> Result<usize> {
        if self.has(key) {
            self.size(key)
        } else {
            Ok(default)
        }
    }

    /// The member object at `key`.
    pub fn member(&self, key: &str) -> Result<Meta<'a>> {
        self.0
            .get(key)
            .and_then(Value::as_object)
            .map(Meta)
            .ok_or_else(|| self.error(format!("member {key:?} is missing")))
    }

    /// The blob id of member `key`.
    pub fn blob_id(&self, key: &str) -> Result<ObjectId> {
        let m = self.member(key)?;
        let id =
            m.0.get("id")
                .and_then(ObjectId::from_json)
                .ok_or_else(|| self.error(format!("member {key:?} has no valid id")))?;
        if !id.is_blob() {
            return Err(self.error(format!("member {key:?} is not a blob")));
        }
        Ok(id)
    }

    /// A string entry.
    pub fn str(&self, key: &str) -> Result<&'a str> {
        self.0
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| self.error(format!("{key:?} should be a string")))
    }

    /// True for `true`, `"true"` or 1 at `key`.
    pub fn flag(&self, key: &str) -> bool {
        match self.0.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            Some(Value::Number(n)) => n.as_u64() == Some(1),
            _ => false,
        }
    }
}

pub fn layout(id: ObjectId, detail: String) -> Error {
    Error::Layout { id, detail }
}
