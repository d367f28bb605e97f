//! Metadata trees: creating objects, reading and listing their trees.
//!
//! The trees themselves stay [`ObjectMeta`] (JSON objects): only the
//! envelopes are typed, so a tree read back is exactly what the server sent
//! (depth-pruned by `parse_body`, nothing else).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::object::{ObjectId, ObjectMeta};

/// `create_data_request`: creates one object from its tree.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CreateData<'a> {
    pub content: &'a ObjectMeta,
}

request!(CreateData<'_>, "create_data_request" => "create_data_reply", CreateDataReply);

/// The new object's id, its signature and the instance it lives on
/// (`u64::MAX` for a global object).
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct CreateDataReply {
    pub id: ObjectId,
    pub signature: u64,
    pub instance_id: u64,
}

/// `create_datas_request`: creates many objects at once.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CreateDatas<'a> {
    pub num: usize,
    pub contents: &'a [ObjectMeta],
}

impl<'a> CreateDatas<'a> {
    pub fn new(contents: &'a [ObjectMeta]) -> Self {
        CreateDatas {
            num: contents.len(),
            contents,
        }
    }
}

request!(CreateDatas<'_>, "create_datas_request" => "create_datas_reply", CreateDatasReply);

/// One entry per created object, in request order.
#[derive(Clone, Debug, Deserialize)]
pub struct CreateDatasReply {
    pub ids: Vec<ObjectId>,
    pub signatures: Vec<u64>,
    pub instance_ids: Vec<u64>,
}

/// `get_data_request`: the trees of `id` (a list, even for one id).
/// `sync_remote` pulls the cluster's metadata first; `wait` defers the
/// reply until every id exists.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GetData<'a> {
    pub id: &'a [ObjectId],
    pub sync_remote: bool,
    pub wait: bool,
}

request!(GetData<'_>, "get_data_request" => "get_data_reply", DataReply);

/// `list_data_request`: the trees of objects whose typename matches a glob
/// (or a full-match regex), at most `limit` of them. Answered with a
/// `get_data_reply`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ListData<'a> {
    pub pattern: &'a str,
    pub regex: bool,
    pub limit: usize,
}

request!(ListData<'_>, "list_data_request" => "get_data_reply", DataReply);

/// The trees found, keyed by id: missing ids are left out, and `content`
/// is `null` when none was found.
#[derive(Clone, Debug, Deserialize)]
pub struct DataReply {
    pub content: Option<HashMap<ObjectId, ObjectMeta>>,
}

impl DataReply {
    /// The trees found (none for a `null` content).
    pub fn trees(self) -> HashMap<ObjectId, ObjectMeta> {
        self.content.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_value;
    use crate::protocol::testing::{ctx, decode_err, encoded};
    use serde_json::json;

    const OBJ: ObjectId = ObjectId(0x6889_041a_79c0_0005);

    fn tensor() -> ObjectMeta {
        serde_json::from_value(json!({
            "typename": "vineyard::Tensor<int64>", "instance_id": 0, "transient": true,
            "nbytes": 16, "shape_": "[2]", "partition_index_": "[]", "order_": "\"C\"",
            "value_type_": "int64", "value_type_meta_": "<i8",
            "buffer_": {"id": "oe889041a79400000", "typename": "vineyard::Blob",
                        "instance_id": 0, "length": 16, "nbytes": 16, "transient": true}}))
        .unwrap()
    }

    #[test]
    fn requests_are_what_the_protocol_specifies() {
        let t = tensor();
        assert_eq!(
            encoded(&CreateData { content: &t }),
            json!({"type": "create_data_request", "content": t.clone().into_value()})
        );
        let mut b = ObjectMeta::new("my::B");
        b.set("instance_id", 0u64);
        b.set("signature", 42u64);
        let both = [ObjectMeta::new("my::A"), b];
        assert_eq!(
            encoded(&CreateDatas::new(&both)),
            json!({"type": "create_datas_request", "num": 2, "contents": [
                {"typename": "my::A"}, {"typename": "my::B", "instance_id": 0, "signature": 42}]})
        );
        assert_eq!(
            encoded(&GetData {
                id: &[OBJ],
                sync_remote: false,
                wait: false
            }),
            json!({"type": "get_data_request", "id": [7532556363512152069u64],
                   "sync_remote": false, "wait": false})
        );
        assert_eq!(
            encoded(&ListData {
                pattern: "my::*",
                regex: false,
                limit: 10
            }),
            json!({"type": "list_data_request", "pattern": "my::*", "regex": false, "limit": 10})
        );
    }

    #[test]
    fn replies_as_vineyardd_sends_them_are_read() {
        let r: CreateDataReply = decode_value(
            &json!({"type": "create_data_reply", "id": 7532556363512152069u64,
                    "signature": 7532556363512152068u64, "instance_id": 0}),
            ctx(),
        )
        .unwrap();
        assert_eq!(
            (r.id, r.signature, r.instance_id),
            (OBJ, 7532556363512152068, 0)
        );
        let r: CreateDatasReply = decode_value(
            &json!({"type": "create_datas_reply", "num": 2, "ids": [OBJ.0, OBJ.0 + 1],
                    "signatures": [186, 42], "instance_ids": [0, 0]}),
            ctx(),
        )
        .unwrap();
        assert_eq!(r.ids, vec![OBJ, ObjectId(OBJ.0 + 1)]);
        assert_eq!((r.signatures, r.instance_ids), (vec![186, 42], vec![0, 0]));
        let tree = json!({"__timestamp": 1795901385191u64, "id": "o6889041a79c00005",
                          "typename": "vineyard::Tensor<int64>", "buffer_": {"id": "oe889041a79400000"}});
        let r: DataReply = decode_value(
            &json!({"type": "get_data_reply", "content": {"o6889041a79c00005": tree.clone()}}),
            ctx(),
        )
        .unwrap();
        let trees = r.trees();
        assert_eq!(trees.len(), 1);
        assert_eq!(
            trees[&OBJ].clone().into_value(),
            tree,
            "trees are kept as sent"
        );
        let r: DataReply =
            decode_value(&json!({"type": "get_data_reply", "content": null}), ctx()).unwrap();
        assert!(r.trees().is_empty());
        let r: DataReply = decode_value(&json!({"type": "get_data_reply"}), ctx()).unwrap();
        assert!(r.trees().is_empty());
    }

    #[test]
    fn malformed_replies_name_the_field() {
        let e = decode_err::<CreateDataReply>(json!({"id": OBJ.0, "signature": 1}));
        assert!(e.contains("instance_id"), "{e}");
        let e =
            decode_err::<CreateDataReply>(json!({"id": true, "signature": 1, "instance_id": 0}));
        assert!(e.contains("field id"), "{e}");
        let e = decode_err::<CreateDatasReply>(
            json!({"ids": [1], "signatures": ["x"], "instance_ids": [0]}),
        );
        assert!(e.contains("signatures[0]"), "{e}");
        let e = decode_err::<CreateDatasReply>(json!({"ids": [1], "signatures": [1]}));
        assert!(e.contains("instance_ids"), "{e}");
        let e = decode_err::<DataReply>(json!({"content": {"zzz": {"typename": "x"}}}));
        assert!(e.contains("zzz"), "{e}");
        let e = decode_err::<DataReply>(json!({"content": {"o1": 5}}));
        assert!(e.contains("content.o1"), "{e}");
        let e = decode_err::<DataReply>(json!({"content": "none"}));
        assert!(e.contains("content"), "{e}");
    }
}
