//! Names of persisted objects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Ack;
use crate::object::ObjectId;

/// `put_name_request`: points `name` at a persisted object.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PutName<'a> {
    pub object_id: ObjectId,
    pub name: &'a str,
}

request!(PutName<'_>, "put_name_request" => "put_name_reply", Ack);

/// `get_name_request`: the object a name points to (`wait` is required:
/// true blocks until the name exists). A miss is an error reply (code 12).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GetName<'a> {
    pub name: &'a str,
    pub wait: bool,
}

request!(GetName<'_>, "get_name_request" => "get_name_reply", GetNameReply);

#[derive(Clone, Copy, Debug, Deserialize)]
pub struct GetNameReply {
    pub object_id: ObjectId,
}

/// `drop_name_request`: removes a name (a missing one is not an error).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DropName<'a> {
    pub name: &'a str,
}

request!(DropName<'_>, "drop_name_request" => "drop_name_reply", Ack);

/// `list_name_request`: names matching a glob (or a full-match regex), at
/// most `limit` (required) of them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ListName<'a> {
    pub pattern: &'a str,
    pub regex: bool,
    pub limit: usize,
}

request!(ListName<'_>, "list_name_request" => "list_name_reply", ListNameReply);

/// The names found and their objects (`names` absent or `null`: none).
#[derive(Clone, Debug, Deserialize)]
pub struct ListNameReply {
    pub names: Option<BTreeMap<String, ObjectId>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_value;
    use crate::protocol::testing::{ctx, decode_err, encoded};
    use serde_json::json;

    const OBJ: ObjectId = ObjectId(7532556363512152069);

    #[test]
    fn requests_are_what_the_protocol_specifies() {
        assert_eq!(
            encoded(&PutName {
                object_id: OBJ,
                name: "tensor1"
            }),
            json!({"type": "put_name_request", "object_id": OBJ.0, "name": "tensor1"})
        );
        assert_eq!(
            encoded(&GetName {
                name: "tensor1",
                wait: false
            }),
            json!({"type": "get_name_request", "name": "tensor1", "wait": false})
        );
        assert_eq!(
            encoded(&DropName { name: "tensor1" }),
            json!({"type": "drop_name_request", "name": "tensor1"})
        );
        assert_eq!(
            encoded(&ListName {
                pattern: "*",
                regex: false,
                limit: 10
            }),
            json!({"type": "list_name_request", "pattern": "*", "regex": false, "limit": 10})
        );
    }

    #[test]
    fn replies_are_read_and_malformed_ones_name_the_field() {
        let r: GetNameReply = decode_value(
            &json!({"type": "get_name_reply", "object_id": OBJ.0}),
            ctx(),
        )
        .unwrap();
        assert_eq!(r.object_id, OBJ);
        let r: ListNameReply = decode_value(
            &json!({"type": "list_name_reply", "size": 1, "names": {"tensor1": OBJ.0}}),
            ctx(),
        )
        .unwrap();
        assert_eq!(r.names.unwrap()["tensor1"], OBJ);
        let r: ListNameReply =
            decode_value(&json!({"type": "list_name_reply", "names": null}), ctx()).unwrap();
        assert!(r.names.is_none());
        let e = decode_err::<GetNameReply>(json!({"type": "get_name_reply"}));
        assert!(e.contains("object_id"), "{e}");
        let e = decode_err::<GetNameReply>(json!({"object_id": "tensor1"}));
        assert!(e.contains("object_id"), "{e}");
        let e = decode_err::<ListNameReply>(json!({"names": {"a/b": [1]}}));
        assert!(e.contains("names.a/b"), "{e}");
        let e = decode_err::<ListNameReply>(json!({"names": [["a", 1]]}));
        assert!(e.contains("names"), "{e}");
    }
}
