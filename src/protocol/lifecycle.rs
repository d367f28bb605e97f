//! An object's life after it is created: existence, persistence, labels,
//! deletion.

use serde::{Deserialize, Serialize};

use super::Ack;
use crate::object::ObjectId;

/// `exists_request`: whether an object (or blob) exists; `id` is a scalar.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Exists {
    pub id: ObjectId,
}

request!(Exists, "exists_request" => "exists_reply", ExistsReply);

#[derive(Clone, Copy, Debug, Deserialize)]
pub struct ExistsReply {
    pub exists: bool,
}

/// `persist_request`: makes an object visible to other instances (and
/// nameable).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Persist {
    pub id: ObjectId,
}

request!(Persist, "persist_request" => "persist_reply", Ack);

/// `if_persist_request`: whether an object has been persisted.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct IfPersist {
    pub id: ObjectId,
}

request!(IfPersist, "if_persist_request" => "if_persist_reply", IfPersistReply);

#[derive(Clone, Copy, Debug, Deserialize)]
pub struct IfPersistReply {
    pub persist: bool,
}

/// `label_request`: merges `keys[i]` = `values[i]` into the object's
/// `__labels`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Label<'a> {
    pub id: ObjectId,
    pub keys: &'a [&'a str],
    pub values: &'a [&'a str],
}

request!(Label<'_>, "label_request" => "label_reply", Ack);

/// `del_data_request`: deletes objects (`id` is a list; unknown ids are
/// ignored). `force` also deletes objects others still reference, `deep`
/// their members that nothing else references. We never use the blob-only
/// `fastpath` nor `memory_trim`, but vineyardd requires both fields.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DelData<'a> {
    pub id: &'a [ObjectId],
    pub force: bool,
    pub deep: bool,
    pub fastpath: bool,
    pub memory_trim: bool,
}

impl<'a> DelData<'a> {
    pub fn new(id: &'a [ObjectId], force: bool, deep: bool) -> Self {
        DelData {
            id,
            force,
            deep,
            fastpath: false,
            memory_trim: false,
        }
    }
}

request!(DelData<'_>, "del_data_request" => "del_data_reply", Ack);

/// `clear_request`: force-deletes every object and blob of the instance.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Clear {}

request!(Clear, "clear_request" => "clear_reply", Ack);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_value;
    use crate::protocol::testing::{ctx, decode_err, encoded};
    use serde_json::json;

    const OBJ: ObjectId = ObjectId(0x6889_041a_79c0_0005);

    #[test]
    fn requests_are_what_the_protocol_specifies() {
        assert_eq!(
            encoded(&Exists { id: OBJ }),
            json!({"type": "exists_request", "id": OBJ.0})
        );
        assert_eq!(
            encoded(&Persist { id: OBJ }),
            json!({"type": "persist_request", "id": OBJ.0})
        );
        assert_eq!(
            encoded(&IfPersist { id: OBJ }),
            json!({"type": "if_persist_request", "id": OBJ.0})
        );
        assert_eq!(
            encoded(&Label {
                id: OBJ,
                keys: &["a"],
                values: &["b"]
            }),
            json!({"type": "label_request", "id": OBJ.0, "keys": ["a"], "values": ["b"]})
        );
        assert_eq!(
            encoded(&DelData::new(&[OBJ, ObjectId(5)], false, true)),
            json!({"type": "del_data_request", "id": [OBJ.0, 5], "force": false, "deep": true,
                   "fastpath": false, "memory_trim": false})
        );
        assert_eq!(encoded(&Clear {}), json!({"type": "clear_request"}));
    }

    #[test]
    fn replies_are_read_and_malformed_ones_name_the_field() {
        let r: ExistsReply =
            decode_value(&json!({"type": "exists_reply", "exists": true}), ctx()).unwrap();
        assert!(r.exists);
        let r: IfPersistReply = decode_value(
            &json!({"type": "if_persist_reply", "persist": false}),
            ctx(),
        )
        .unwrap();
        assert!(!r.persist);
        let e = decode_err::<ExistsReply>(json!({"type": "exists_reply"}));
        assert!(e.contains("exists"), "{e}");
        let e = decode_err::<IfPersistReply>(json!({"persist": "yes"}));
        assert!(e.contains("field persist"), "{e}");
        // Empty replies carry nothing to check.
        let _: Ack = decode_value(&json!({"type": "persist_reply", "x": 1}), ctx()).unwrap();
    }
}
