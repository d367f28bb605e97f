//! Kubernetes-safe names for arbitrary Kedro node names.
//!
//! Argo task names (and the `scheduling.k8s.v6d.io/job` label that repeats
//! them) must be DNS-1123 labels: lowercase ASCII letters, digits and `-`,
//! starting and ending with a letter or digit, at most 63 characters. Node
//! names are free text (`data_processing.preprocess`, `f([a,b]) -> [c]`,
//! unicode), so they are cleaned, shortened with a stable hash, and made
//! unique. The hash is FNV-1a (64 bit), fixed here so that names never change
//! between Rust versions (std's `DefaultHasher` makes no such promise).

use std::collections::{HashMap, HashSet};

/// Longest DNS-1123 label.
pub const MAX_LABEL: usize = 63;
/// Hex digits of the hash suffix.
const HASH_DIGITS: usize = 8;
/// Used when nothing of a name survives cleaning.
const FALLBACK: &str = "node";

/// FNV-1a, 64 bit, over `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The 8 hex digits that identify `name` in shortened labels.
fn short_hash(name: &str) -> String {
    format!("{:08x}", fnv1a64(name.as_bytes()) as u32)
}

/// True if `s` is a DNS-1123 label.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Lowercases ASCII, turns every other character run into one `-`, trims `-`.
fn clean(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// `base` cut to leave room for `-<suffix>`, then the suffix appended.
fn with_suffix(base: &str, suffix: &str) -> String {
    let room = MAX_LABEL - 1 - suffix.len();
    let mut cut: String = base.chars().take(room).collect();
    while cut.ends_with('-') {
        cut.pop();
    }
    if cut.is_empty() {
        suffix.to_string()
    } else {
        format!("{cut}-{suffix}")
    }
}

/// A DNS-1123 label for one name: cleaned, and if longer than 63 characters
/// cut to 54 plus `-` and 8 hex digits of the name's FNV-1a hash.
pub fn dns_label(name: &str) -> String {
    dns_label_within(name, MAX_LABEL)
}

/// Like [`dns_label`] with a smaller length limit `max` (at least 9; larger
/// values than 63 are treated as 63), for prefixes such as `generateName`.
pub fn dns_label_within(name: &str, max: usize) -> String {
    let max = max.clamp(HASH_DIGITS + 1, MAX_LABEL);
    let base = clean(name);
    if base.is_empty() {
        FALLBACK.to_string()
    } else if base.len() > max {
        let cut: String = base.chars().take(max - HASH_DIGITS - 1).collect();
        with_suffix(&cut, &short_hash(name))
    } else {
        base
    }
}

/// Distinct DNS-1123 labels for `names`, in order. Names whose cleaned forms
/// collide all get their hash suffix (so a label depends on the name, not on
/// its position); a label that is still taken gets `-2`, `-3`, ...
pub fn unique_dns_labels<S: AsRef<str>>(names: &[S]) -> Vec<String> {
    let bases: Vec<String> = names.iter().map(|n| dns_label(n.as_ref())).collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for b in &bases {
        *count.entry(b.as_str()).or_default() += 1;
    }
    let mut out = Vec::with_capacity(names.len());
    let mut used = HashSet::new();
    for (name, base) in names.iter().zip(&bases) {
        let mut label = if count[base.as_str()] > 1 {
            with_suffix(base, &short_hash(name.as_ref()))
        } else {
            base.clone()
        };
        let mut n = 2u64;
        while used.contains(&label) {
            label = with_suffix(base, &format!("{}-{n}", short_hash(name.as_ref())));
            n += 1;
        }
        used.insert(label.clone());
        out.push(label);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn ordinary_names_are_cleaned_readably() {
        assert_eq!(dns_label("split_data_node"), "split-data-node");
        assert_eq!(
            dns_label("data_processing.Preprocess"),
            "data-processing-preprocess"
        );
        assert_eq!(
            dns_label("split([example_iris_data,parameters]) -> [X_train]"),
            "split-example-iris-data-parameters-x-train"
        );
        assert_eq!(dns_label("__init__"), "init");
        assert_eq!(dns_label("数据"), "node");
        assert_eq!(dns_label("größe"), "gr-e");
    }

    #[test]
    fn long_names_are_cut_with_a_stable_hash() {
        let name = "a".repeat(100);
        let label = dns_label(&name);
        assert_eq!(label.len(), 63);
        assert!(label.ends_with(&format!("-{}", short_hash(&name))));
        assert_eq!(label, dns_label(&name));
        assert_ne!(label, dns_label(&"a".repeat(101)));
        let short = dns_label_within(&name, 20);
        assert_eq!(short.len(), 20);
        assert!(is_dns_label(&short));
    }

    #[test]
    fn collisions_are_disambiguated_independently_of_order() {
        let names = ["a.b", "a_b", "c"];
        let labels = unique_dns_labels(&names);
        assert_eq!(labels[2], "c");
        assert_ne!(labels[0], labels[1]);
        assert!(labels[0].starts_with("a-b-") && labels[1].starts_with("a-b-"));
        let swapped = unique_dns_labels(&["a_b", "a.b", "c"]);
        assert_eq!(swapped[0], labels[1]);
        assert_eq!(swapped[1], labels[0]);
    }

    #[test]
    fn identical_names_still_get_distinct_labels() {
        let labels = unique_dns_labels(&["x", "x", "x"]);
        let set: HashSet<_> = labels.iter().collect();
        assert_eq!(set.len(), 3);
        assert!(labels.iter().all(|l| is_dns_label(l)));
    }

    proptest! {
        #[test]
        fn any_name_gives_a_dns_label(name in "\\PC{0,150}") {
            prop_assert!(is_dns_label(&dns_label(&name)), "{:?}", dns_label(&name));
        }

        #[test]
        fn any_names_give_distinct_labels(names in proptest::collection::vec("[a-zA-Z_.]{0,70}|\\PC{0,5}", 0..30)) {
            let labels = unique_dns_labels(&names);
            prop_assert_eq!(labels.len(), names.len());
            prop_assert!(labels.iter().all(|l| is_dns_label(l)));
            let set: HashSet<_> = labels.iter().collect();
            prop_assert_eq!(set.len(), labels.len());
        }
    }
}
