//! The cluster and the instance: members, status, migration.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::object::ObjectId;

/// `cluster_meta`: the instances of the cluster. The request and its reply
/// have the same `type`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ClusterMeta {}

request!(ClusterMeta, "cluster_meta" => "cluster_meta", MetaReply);

/// `instance_status_request`: memory and connections of this instance.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct InstanceStatus {}

request!(InstanceStatus, "instance_status_request" => "instance_status_reply", MetaReply);

/// The `meta` object of `cluster_meta` (instances keyed `i<id>`) and of
/// `instance_status_reply` (`memory_usage`, `memory_limit`, ...), kept
/// whole: the CLI and the binding show all of it.
#[derive(Clone, Debug, Deserialize)]
pub struct MetaReply {
    pub meta: Map<String, Value>,
}

/// The memory figures of an `instance_status_reply`'s `meta`, each `None`
/// when absent or not a byte count.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct Memory {
    #[serde(default, deserialize_with = "super::lenient")]
    pub memory_usage: Option<u64>,
    #[serde(default, deserialize_with = "super::lenient")]
    pub memory_limit: Option<u64>,
}

/// One instance of `cluster_meta`'s `meta`: what migration needs of it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Instance {
    /// `host:port` of its RPC listener (`None` when absent or not a string).
    #[serde(default, deserialize_with = "super::lenient")]
    pub rpc_endpoint: Option<String>,
}

/// `migrate_object_request`: copies a persisted object from the instance
/// that holds it to this one.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MigrateObject {
    pub object_id: ObjectId,
}

request!(MigrateObject, "migrate_object_request" => "migrate_object_reply", MigrateObjectReply);

/// The local copy (the same id when the object was local already).
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct MigrateObjectReply {
    pub object_id: ObjectId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_value;
    use crate::protocol::testing::{ctx, decode_err, encoded};
    use serde_json::json;

    #[test]
    fn requests_are_what_the_protocol_specifies() {
        assert_eq!(encoded(&ClusterMeta {}), json!({"type": "cluster_meta"}));
        assert_eq!(
            encoded(&InstanceStatus {}),
            json!({"type": "instance_status_request"})
        );
        assert_eq!(
            encoded(&MigrateObject {
                object_id: ObjectId(7532556576914145282)
            }),
            json!({"type": "migrate_object_request", "object_id": 7532556576914145282u64})
        );
    }

    #[test]
    fn replies_as_vineyardd_sends_them_are_read() {
        let r: MetaReply = decode_value(
            &json!({"type": "cluster_meta", "meta": {
                "i0": {"hostid": 960604611941u64, "hostname": "vm", "ipc_socket": "/tmp/vy4/a.sock",
                       "member_id": "23424168", "nodename": "vm", "rpc_endpoint": "vm:9600",
                       "timestamp": 7713337921574567646u64},
                "i1": {"rpc_endpoint": "vm:9601"}}}),
            ctx(),
        )
        .unwrap();
        assert_eq!(r.meta.len(), 2);
        let i1: Instance = decode_value(&r.meta["i1"], ctx()).unwrap();
        assert_eq!(i1.rpc_endpoint.as_deref(), Some("vm:9601"));
        let i: Instance = decode_value(&json!({"rpc_endpoint": 9601}), ctx()).unwrap();
        assert_eq!(i.rpc_endpoint, None);
        let r: MetaReply = decode_value(
            &json!({"type": "instance_status_reply", "meta": {"instance_id": 0, "deployment": "local",
                    "memory_usage": 28, "memory_limit": 268435456, "deferred_requests": 0,
                    "ipc_connections": 2, "rpc_connections": 0}}),
            ctx(),
        )
        .unwrap();
        let m: Memory = decode_value(&Value::Object(r.meta), ctx()).unwrap();
        assert_eq!(
            (m.memory_usage, m.memory_limit),
            (Some(28), Some(268435456))
        );
        let m: Memory = decode_value(&json!({"memory_usage": "lots"}), ctx()).unwrap();
        assert_eq!((m.memory_usage, m.memory_limit), (None, None));
        let r: MigrateObjectReply = decode_value(
            &json!({"type": "migrate_object_reply", "object_id": 7532556581540466690u64}),
            ctx(),
        )
        .unwrap();
        assert_eq!(r.object_id, ObjectId(7532556581540466690));
    }

    #[test]
    fn malformed_replies_name_the_field() {
        let e = decode_err::<MetaReply>(json!({"type": "cluster_meta"}));
        assert!(e.contains("meta"), "{e}");
        let e = decode_err::<MetaReply>(json!({"meta": [1]}));
        assert!(e.contains("field meta"), "{e}");
        let e = decode_err::<MigrateObjectReply>(json!({"object_id": null}));
        assert!(e.contains("object_id"), "{e}");
    }
}
