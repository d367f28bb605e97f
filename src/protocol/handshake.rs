//! The start and end of a connection: `register_request`, `exit_request`.

use serde::{Deserialize, Serialize};

/// The version string we announce; the server never checks it.
pub const CLIENT_VERSION: &str = "0.24.2";

/// `register_request`: must come first on a connection. We ask for the
/// default bulk store (`store_type` 1) of the root session, with no
/// credentials (vineyardd checks them only with `--htpasswd`).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Register {
    pub version: &'static str,
    pub store_type: u32,
    pub session_id: i64,
    pub username: &'static str,
    pub password: &'static str,
}

impl Default for Register {
    fn default() -> Self {
        Register {
            version: CLIENT_VERSION,
            store_type: 1,
            session_id: 0,
            username: "",
            password: "",
        }
    }
}

request!(Register, "register_request" => "register_reply", RegisterReply);

/// What the server says about itself. Only `instance_id` is required: the
/// strings are informational (empty when absent or not strings), and
/// `store_match` is false only when the server says so.
#[derive(Clone, Debug, Deserialize)]
pub struct RegisterReply {
    pub instance_id: u64,
    #[serde(default, deserialize_with = "super::lenient")]
    pub version: String,
    #[serde(default, deserialize_with = "super::lenient")]
    pub rpc_endpoint: String,
    #[serde(default, deserialize_with = "super::lenient")]
    pub ipc_socket: String,
    #[serde(default, deserialize_with = "super::lenient")]
    pub store_match: Option<bool>,
}

/// `exit_request`: closes the connection. vineyardd sends no reply.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Exit {}

message!(Exit, "exit_request");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_value;
    use crate::protocol::testing::{ctx, decode_err, encoded};
    use serde_json::json;

    #[test]
    fn requests_are_what_the_protocol_specifies() {
        assert_eq!(
            encoded(&Register::default()),
            json!({"type": "register_request", "version": "0.24.2", "store_type": 1,
                   "session_id": 0, "username": "", "password": ""})
        );
        assert_eq!(encoded(&Exit {}), json!({"type": "exit_request"}));
    }

    #[test]
    fn register_reply_as_vineyardd_sends_it_is_read() {
        let r: RegisterReply = decode_value(
            &json!({"instance_id": 3, "ipc_socket": "/tmp/vy1/v.sock", "rpc_endpoint": "vm:9600",
                    "session_id": 0, "store_match": true, "support_rpc_compression": true,
                    "type": "register_reply", "version": "0.24.2"}),
            ctx(),
        )
        .unwrap();
        assert_eq!(r.instance_id, 3);
        assert_eq!(
            (r.version.as_str(), r.rpc_endpoint.as_str()),
            ("0.24.2", "vm:9600")
        );
        assert_eq!(r.ipc_socket, "/tmp/vy1/v.sock");
        assert_eq!(r.store_match, Some(true));
        // Informational fields are optional.
        let r: RegisterReply = decode_value(
            &json!({"instance_id": 0, "version": 24, "store_match": "no"}),
            ctx(),
        )
        .unwrap();
        assert_eq!((r.version.as_str(), r.store_match), ("", None));
    }

    #[test]
    fn register_reply_without_a_usable_instance_id_is_refused() {
        let e = decode_err::<RegisterReply>(json!({"type": "register_reply"}));
        assert!(e.contains("instance_id"), "{e}");
        let e = decode_err::<RegisterReply>(json!({"instance_id": -1}));
        assert!(e.contains("instance_id"), "{e}");
    }
}
