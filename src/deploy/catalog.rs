//! Catalog entries that send datasets through vineyard
//! (`kedro vineyard catalog create`).
//!
//! New entries are `NAME: {type: <DATASET_TYPE>, ds_name: NAME}`, or one
//! catch-all `"{default}"` pattern (Kedro 1.x dataset factories). An existing
//! file is merged, never clobbered: a name it already defines is left alone,
//! and when possible the new entries are appended to the user's text as is,
//! so their comments, anchors and layout survive. Only when appending would
//! change the meaning of the file (flow style, a `...` end marker) is the
//! merged mapping written out whole.

use serde_yaml::{Mapping, Value};

use super::{DeployError, Result};

/// The dataset class the entries name: the old plugin's module, with the
/// `VineyardDataset` spelling of the class (the same class as `VineyardDataSet`),
/// because Kedro >= 0.19 warns about every `...DataSet` type it loads.
pub const DATASET_TYPE: &str = "vineyard.contrib.kedro.io.dataset.VineyardDataset";
/// The catch-all pattern written with `catch_all`.
pub const CATCH_ALL: &str = "{default}";

/// True for a catch-all dataset pattern: one placeholder and nothing else
/// (`"{default}"`, `"{name}"`). Kedro accepts only one per catalog.
pub fn is_catch_all_pattern(key: &str) -> bool {
    key.len() > 2
        && key.starts_with('{')
        && key.ends_with('}')
        && !key[1..key.len() - 1].contains(['{', '}'])
}

/// Names that are never datasets for vineyard: parameters.
fn is_parameter(name: &str) -> bool {
    name == "parameters" || name.starts_with("params:")
}

/// One catalog entry.
fn entry(ds_name: &str) -> Value {
    let mut m = Mapping::new();
    m.insert("type".into(), DATASET_TYPE.into());
    m.insert("ds_name".into(), ds_name.into());
    Value::Mapping(m)
}

/// Parses the existing file: `None`, empty and comment-only text give an empty mapping.
fn parse_existing(existing: Option<&str>) -> Result<Mapping> {
    let Some(text) = existing else {
        return Ok(Mapping::new());
    };
    match serde_yaml::from_str::<Value>(text)? {
        Value::Null => Ok(Mapping::new()),
        Value::Mapping(m) => Ok(m),
        Value::Sequence(_) => Err(DeployError::NotAMapping("a sequence")),
        Value::Tagged(_) => Err(DeployError::NotAMapping("a tagged value")),
        _ => Err(DeployError::NotAMapping("a scalar")),
    }
}

/// Merges vineyard entries into a catalog file's text.
///
/// `names` are the pipeline's datasets that the catalog does not define
/// (parameters are skipped here too, and duplicates ignored); `existing` is
/// the current text of the file being written, if any. With `catch_all`,
/// `names` are ignored and one `"{default}"` entry is added unless the file
/// already has a catch-all pattern. Returns the new text and the keys added;
/// when nothing is added the text is `existing` unchanged.
pub fn render_catalog<S: AsRef<str>>(
    names: &[S],
    existing: Option<&str>,
    catch_all: bool,
) -> Result<(String, Vec<String>)> {
    let current = parse_existing(existing)?;
    let wanted: Vec<&str> = if catch_all {
        let has_pattern = current
            .keys()
            .filter_map(Value::as_str)
            .any(is_catch_all_pattern);
        if has_pattern {
            Vec::new()
        } else {
            vec![CATCH_ALL]
        }
    } else {
        names
            .iter()
            .map(AsRef::as_ref)
            .filter(|n| !n.is_empty() && !is_parameter(n))
            .collect()
    };
    let mut added = Mapping::new();
    let mut added_names = Vec::new();
    for name in wanted {
        let key = Value::from(name);
        if current.contains_key(&key) || added.contains_key(&key) {
            continue;
        }
        added.insert(key, entry(name));
        added_names.push(name.to_string());
    }
    let text = existing.unwrap_or("");
    if added.is_empty() {
        return Ok((text.to_string(), added_names));
    }
    let mut merged = current.clone();
    merged.extend(added.clone());
    let mut appended = text.to_string();
    if !appended.is_empty() && !appended.ends_with('\n') {
        appended.push('\n');
    }
    appended.push_str(&serde_yaml::to_string(&added)?);
    // Appending is only right if the result means exactly "existing + added".
    let same =
        matches!(serde_yaml::from_str::<Value>(&appended), Ok(Value::Mapping(m)) if m == merged);
    let out = if same {
        appended
    } else {
        serde_yaml::to_string(&merged)?
    };
    Ok((out, added_names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Mapping {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn new_file_gets_one_entry_per_dataset() {
        let (text, added) = render_catalog(&["X_train", "y_pred", "X_train"], None, false).unwrap();
        assert_eq!(added, ["X_train", "y_pred"]);
        let m = parse(&text);
        assert_eq!(m.len(), 2);
        assert_eq!(m["X_train"]["type"], DATASET_TYPE);
        assert_eq!(m["X_train"]["ds_name"], "X_train");
        assert_eq!(m["y_pred"]["ds_name"], "y_pred");
    }

    #[test]
    fn parameters_are_never_written() {
        let (text, added) =
            render_catalog(&["parameters", "params:ratio", "model", ""], None, false).unwrap();
        assert_eq!(added, ["model"]);
        assert_eq!(parse(&text).len(), 1);
    }

    #[test]
    fn user_entries_and_comments_survive() {
        let existing = "# my catalog\nX_train:\n  type: pandas.CSVDataset  # keep me\n  filepath: data/x.csv\n";
        let (text, added) = render_catalog(&["X_train", "y_train"], Some(existing), false).unwrap();
        assert_eq!(added, ["y_train"]);
        assert!(text.starts_with(existing), "{text}");
        let m = parse(&text);
        assert_eq!(m["X_train"]["type"], "pandas.CSVDataset");
        assert_eq!(m["y_train"]["type"], DATASET_TYPE);
    }

    #[test]
    fn nothing_to_add_returns_the_file_unchanged() {
        let existing = "a: {type: x}\n";
        let (text, added) = render_catalog(&["a"], Some(existing), false).unwrap();
        assert!(added.is_empty());
        assert_eq!(text, existing);
    }

    #[test]
    fn flow_style_files_are_rewritten_as_a_whole() {
        let existing = "{a: {type: x}}";
        let (text, added) = render_catalog(&["b"], Some(existing), false).unwrap();
        assert_eq!(added, ["b"]);
        let m = parse(&text);
        assert_eq!(m["a"]["type"], "x");
        assert_eq!(m["b"]["ds_name"], "b");
    }

    #[test]
    fn anchors_are_kept_when_appending() {
        let existing =
            "_csv: &csv\n  type: pandas.CSVDataset\nraw:\n  <<: *csv\n  filepath: r.csv\n";
        let (text, _) = render_catalog(&["out"], Some(existing), false).unwrap();
        assert!(text.starts_with(existing));
    }

    #[test]
    fn catch_all_writes_one_default_pattern() {
        let (text, added) = render_catalog(&["a", "b"], Some("# empty\n"), true).unwrap();
        assert_eq!(added, [CATCH_ALL]);
        assert!(text.starts_with("# empty\n"));
        let m = parse(&text);
        assert_eq!(m.len(), 1);
        assert_eq!(m[CATCH_ALL]["type"], DATASET_TYPE);
        assert_eq!(m[CATCH_ALL]["ds_name"], CATCH_ALL);
        let (again, added) = render_catalog::<&str>(&[], Some(&text), true).unwrap();
        assert!(added.is_empty());
        assert_eq!(again, text);
    }

    #[test]
    fn an_existing_catch_all_is_not_doubled() {
        let (_, added) =
            render_catalog::<&str>(&[], Some("\"{name}\":\n  type: MemoryDataset\n"), true)
                .unwrap();
        assert!(added.is_empty());
        assert!(is_catch_all_pattern("{default}"));
        assert!(!is_catch_all_pattern("{a}_{b}"));
        assert!(!is_catch_all_pattern("{ns}.x"));
        assert!(!is_catch_all_pattern("{}"));
    }

    #[test]
    fn non_mapping_files_are_refused() {
        assert!(matches!(
            render_catalog(&["a"], Some("- a\n- b\n"), false),
            Err(DeployError::NotAMapping(_))
        ));
        assert!(matches!(
            render_catalog(&["a"], Some("a: [\n"), false),
            Err(DeployError::Yaml(_))
        ));
    }
}
