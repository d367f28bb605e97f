//! The grammar of object names, and which names belong to a namespace.
//!
//! ```text
//! object name = dataset | namespace "/" dataset
//! namespace   = 1*part-char
//! dataset     = 1*part-char
//! part-char   = any Unicode scalar except "/" and NUL
//! ```
//! and an object name is at most [`MAX_NAME_BYTES`] bytes of UTF-8.
//!
//! Neither part may contain the separator, so a name splits one way only:
//! namespace `a` with dataset `b/c` and namespace `a/b` with dataset `c`
//! are both rejected instead of both becoming `a/b/c`. A name belongs to
//! namespace `ns` exactly when it is `ns/<dataset>` ([`in_namespace`]):
//! not `ns/x/y`, not `nsx/y`, not a plain name.
//!
//! The length bound keeps every request that carries a name small (vineyardd
//! echoes names in its error replies), so pipelined requests stay far below
//! the socket buffers (see `Client::call_many`).

use crate::error::{Error, Result};

/// Separator between a namespace and a dataset name.
pub const SEPARATOR: char = '/';

/// The longest object name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 4096;

/// A short, printable form of a name for error messages (names may be huge).
fn shown(name: &str) -> String {
    const KEEP: usize = 60;
    if name.len() <= KEEP {
        return format!("{name:?}");
    }
    let mut end = KEEP;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &name[..end], name.len())
}

fn invalid(kind: &str, value: &str, reason: &str) -> Error {
    Error::Name(format!("invalid {kind} {}: {reason}", shown(value)))
}

/// Checks one part (`kind` is "namespace" or "dataset name").
pub fn check_part(kind: &str, part: &str) -> Result<()> {
    if part.is_empty() {
        return Err(invalid(kind, part, "it is empty"));
    }
    if part.contains(SEPARATOR) {
        return Err(invalid(
            kind,
            part,
            "it contains '/', the separator between a namespace and a dataset name",
        ));
    }
    if part.contains('\0') {
        return Err(invalid(kind, part, "it contains a NUL character"));
    }
    if part.len() > MAX_NAME_BYTES {
        return Err(too_long(kind, part));
    }
    Ok(())
}

fn too_long(kind: &str, value: &str) -> Error {
    invalid(
        kind,
        value,
        &format!("it is longer than {MAX_NAME_BYTES} bytes"),
    )
}

/// Checks the length of any name sent to vineyardd (names other clients
/// chose need not follow the grammar, but none of ours is longer).
pub fn check_length(name: &str) -> Result<()> {
    if name.len() > MAX_NAME_BYTES {
        return Err(too_long("object name", name));
    }
    Ok(())
}

/// The object name of `dataset` in `namespace` (None or empty: no namespace).
pub fn object_name(namespace: Option<&str>, dataset: &str) -> Result<String> {
    check_part("dataset name", dataset)?;
    let name = match namespace.filter(|n| !n.is_empty()) {
        None => dataset.to_string(),
        Some(ns) => {
            check_part("namespace", ns)?;
            format!("{ns}{SEPARATOR}{dataset}")
        }
    };
    check_length(&name)?;
    Ok(name)
}

/// Checks a namespace given on its own (`gc --namespace`, a runner's run id).
pub fn check_namespace(namespace: &str) -> Result<()> {
    check_part("namespace", namespace)
}

/// True when `name` is `<namespace>/<dataset>` for a valid dataset name.
pub fn in_namespace(name: &str, namespace: &str) -> bool {
    name.strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix(SEPARATOR))
        .is_some_and(|dataset| check_part("dataset name", dataset).is_ok())
}

/// The namespace of a name that follows the grammar; "" for a plain name or
/// one that does not split in exactly two parts.
pub fn namespace_of(name: &str) -> &str {
    match name.split_once(SEPARATOR) {
        Some((ns, dataset)) if in_namespace(name, ns) && !ns.is_empty() && !dataset.is_empty() => {
            ns
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_collision_is_rejected_both_ways() {
        assert!(object_name(Some("a"), "b/c").is_err());
        assert!(object_name(Some("a/b"), "c").is_err());
        assert_eq!(object_name(Some("a"), "b").unwrap(), "a/b");
        assert_eq!(object_name(None, "b").unwrap(), "b");
        assert_eq!(object_name(Some(""), "b").unwrap(), "b");
    }

    #[test]
    fn bad_parts_say_what_is_wrong() {
        let e = object_name(Some("a/b"), "c").unwrap_err().to_string();
        assert!(e.contains("namespace \"a/b\"") && e.contains("'/'"), "{e}");
        let e = object_name(None, "").unwrap_err().to_string();
        assert!(e.contains("dataset name") && e.contains("empty"), "{e}");
        assert!(object_name(None, "x\0y").is_err());
        let huge = "n".repeat(1 << 20);
        let e = object_name(None, &huge).unwrap_err().to_string();
        assert!(e.contains("longer than 4096 bytes") && e.len() < 300, "{e}");
        let edge = "é".repeat(2048);
        assert!(object_name(None, &edge).is_ok());
        assert!(object_name(Some("n"), &edge).is_err());
    }

    #[test]
    fn a_namespace_holds_its_own_names_only() {
        assert!(in_namespace("a/x", "a"));
        assert!(!in_namespace("a/b/x", "a"));
        assert!(!in_namespace("ab/x", "a"));
        assert!(!in_namespace("a/", "a"));
        assert!(!in_namespace("a", "a"));
        assert!(!in_namespace("x", "a"));
        assert_eq!(namespace_of("run-1/X_train"), "run-1");
        assert_eq!(namespace_of("plain"), "");
        assert_eq!(namespace_of("a/b/c"), "");
        assert_eq!(namespace_of("/x"), "");
    }
}
