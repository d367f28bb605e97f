//! A structural Dockerfile lint (hadolint is not available everywhere):
//! `FROM` comes first (after global `ARG`s), base images have a tag other
//! than `latest`, every `ARG` is used, the final stage runs as a non-root
//! `USER` set before `CMD`, and `CMD` is in JSON (exec) form.

use std::collections::HashMap;

const KNOWN: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Why an image reference is not pinned, if it is not.
pub(super) fn image_problem(image: &str) -> Option<String> {
    if image.contains('@') {
        return None;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => Some(format!("base image {image} has no tag (it means `latest`)")),
        Some((_, "latest")) => Some(format!("base image {image} uses the `latest` tag")),
        Some((_, "")) => Some(format!("base image {image} has an empty tag")),
        Some(_) => None,
    }
}

/// Physical lines joined at trailing backslashes: `(first line number, text)`.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if current.is_some() && trimmed.starts_with('#') {
            continue; // comments inside a continuation are dropped by Docker
        }
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        if let Some(body) = raw.trim_end().strip_suffix('\\') {
            acc.push_str(body);
            acc.push(' ');
            current = Some((start, acc));
        } else {
            acc.push_str(raw);
            if !acc.trim().is_empty() && !acc.trim_start().starts_with('#') {
                out.push((start, acc.trim().to_string()));
            }
        }
    }
    if let Some((start, acc)) = current {
        out.push((start, acc.trim().to_string()));
    }
    out
}

/// Replaces `$NAME` and `${NAME}` with known values (others stay as written).
fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    out
}

/// True if `text` references variable `name`.
fn references(text: &str, name: &str) -> bool {
    if text.contains(&format!("${{{name}}}")) || text.contains(&format!("${{{name}:")) {
        return true;
    }
    text.match_indices(&format!("${name}")).any(|(i, m)| {
        !text[i + m.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or("").trim();
    name.is_empty() || name == "root" || name == "0"
}

/// Structural problems of a Dockerfile, one message each (`line N: ...`);
/// empty when the file passes.
pub fn lint_dockerfile(text: &str) -> Vec<String> {
    let lines = logical_lines(text);
    let mut problems = Vec::new();
    let mut global_args: HashMap<String, String> = HashMap::new();
    let mut stage_users: HashMap<String, Option<String>> = HashMap::new();
    let mut user: Option<String> = None; // effective user of the current stage
    let mut seen_from = false;
    let mut cmds = 0;
    let mut user_at_cmd: Option<Option<String>> = None;
    for (idx, (n, line)) in lines.iter().enumerate() {
        let (word, rest) = line
            .split_once(char::is_whitespace)
            .unwrap_or((line.as_str(), ""));
        let (keyword, rest) = (word.to_ascii_uppercase(), rest.trim());
        if !KNOWN.contains(&keyword.as_str()) {
            problems.push(format!("line {n}: unknown instruction {word}"));
            continue;
        }
        if !seen_from && keyword != "FROM" && keyword != "ARG" {
            problems.push(format!("line {n}: {keyword} before the first FROM"));
        }
        match keyword.as_str() {
            "ARG" => {
                let (name, default) = match rest.split_once('=') {
                    Some((name, default)) => (name.trim(), Some(default.trim().trim_matches('"'))),
                    None => (rest, None),
                };
                if let (false, Some(d)) = (seen_from, default) {
                    global_args.insert(name.into(), d.into());
                }
                let stage_end = lines[idx + 1..]
                    .iter()
                    .position(|(_, l)| l.to_ascii_uppercase().starts_with("FROM "))
                    .map_or(lines.len(), |p| idx + 1 + p);
                let scope = if seen_from {
                    &lines[idx + 1..stage_end]
                } else {
                    &lines[idx + 1..]
                };
                let used = scope.iter().any(|(_, l)| {
                    (seen_from || l.to_ascii_uppercase().starts_with("FROM "))
                        && references(l, name)
                });
                if !used {
                    problems.push(format!("line {n}: ARG {name} is never used"));
                }
            }
            "FROM" => {
                let mut parts = rest.split_whitespace().filter(|p| !p.starts_with("--"));
                let image = expand(parts.next().unwrap_or(""), &global_args);
                let alias = match (parts.next(), parts.next()) {
                    (Some(a), Some(name)) if a.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    _ => None,
                };
                if image.is_empty() {
                    problems.push(format!("line {n}: FROM without an image"));
                }
                if let Some(inherited) = stage_users.get(&image) {
                    user = inherited.clone();
                } else {
                    user = None;
                    if image.contains('$') {
                        problems.push(format!(
                            "line {n}: base image {image} depends on an ARG without a default"
                        ));
                    } else if let Some(p) = image_problem(&image) {
                        problems.push(format!("line {n}: {p}"));
                    }
                }
                if let Some(a) = alias {
                    stage_users.insert(a, None);
                }
                seen_from = true;
            }
            "USER" => user = Some(rest.to_string()),
            "CMD" => {
                cmds += 1;
                if !matches!(serde_json::from_str::<Vec<String>>(rest), Ok(v) if !v.is_empty()) {
                    problems.push(format!(
                        "line {n}: CMD is not in JSON form (a non-empty array of strings)"
                    ));
                }
                user_at_cmd = Some(user.clone());
            }
            _ => {}
        }
        // Keep the current stage's effective user for stages built on it.
        if let Some(alias) = current_alias(&lines[..=idx]) {
            stage_users.insert(alias, user.clone());
        }
    }
    if !seen_from {
        problems.push("no FROM instruction".into());
    }
    match (cmds, user_at_cmd) {
        (0, _) | (_, None) => problems.push("no CMD: the image does not say what it runs".into()),
        (_, Some(None)) => {
            problems.push("no USER before CMD: the container would run as root".into())
        }
        (_, Some(Some(u))) if is_root(&u) => problems.push(format!("USER {u} before CMD is root")),
        _ => {}
    }
    if cmds > 1 {
        problems.push(format!(
            "{cmds} CMD instructions: only the last one takes effect"
        ));
    }
    problems
}

/// The alias of the stage the last line belongs to, if it has one.
fn current_alias(lines: &[(usize, String)]) -> Option<String> {
    let (_, from) = lines
        .iter()
        .rev()
        .find(|(_, l)| l.to_ascii_uppercase().starts_with("FROM "))?;
    let parts: Vec<&str> = from
        .split_whitespace()
        .filter(|p| !p.starts_with("--"))
        .collect();
    match parts.as_slice() {
        [_, _, a, name] if a.eq_ignore_ascii_case("as") => Some((*name).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE} AS base\nARG UID=999\nRUN useradd \\\n    -u ${UID} app\nUSER app\n\nFROM base\nCMD [\"kedro\", \"run\"]\n";

    #[test]
    fn a_good_file_passes_and_user_is_inherited_from_the_stage() {
        assert_eq!(lint_dockerfile(GOOD), Vec::<String>::new());
    }

    #[test]
    fn each_rule_reports() {
        let has = |text: &str, what: &str| {
            let p = lint_dockerfile(text);
            assert!(p.iter().any(|m| m.contains(what)), "{what:?} not in {p:?}");
        };
        has(
            "RUN true\nFROM python:3.11\nUSER a\nCMD [\"x\"]\n",
            "before the first FROM",
        );
        has("FROM python\nUSER a\nCMD [\"x\"]\n", "has no tag");
        has(
            "ARG B=python:latest\nFROM $B\nUSER a\nCMD [\"x\"]\n",
            "`latest`",
        );
        has("ARG B\nFROM $B\nUSER a\nCMD [\"x\"]\n", "without a default");
        has(
            "FROM python:3.11\nARG X=1\nUSER a\nCMD [\"x\"]\n",
            "ARG X is never used",
        );
        has("FROM python:3.11\nCMD [\"x\"]\n", "no USER before CMD");
        has("FROM python:3.11\nUSER root\nCMD [\"x\"]\n", "is root");
        has("FROM python:3.11\nUSER 0:0\nCMD [\"x\"]\n", "is root");
        has("FROM python:3.11\nUSER a\nCMD kedro run\n", "JSON form");
        has("FROM python:3.11\nUSER a\n", "no CMD");
        has(
            "FROM python:3.11\nUSER a\nCMD [\"x\"]\nCMD [\"y\"]\n",
            "2 CMD",
        );
        has(
            "FROM python:3.11\nUSR a\nCMD [\"x\"]\n",
            "unknown instruction",
        );
        has("# only a comment\n", "no FROM");
    }

    #[test]
    fn a_user_in_an_unrelated_stage_does_not_count() {
        let text = "FROM python:3.11 AS a\nUSER app\nFROM python:3.11\nCMD [\"x\"]\n";
        assert!(lint_dockerfile(text).iter().any(|m| m.contains("no USER")));
    }

    #[test]
    fn arg_references_are_whole_names() {
        assert!(references("echo ${UID}", "UID"));
        assert!(references("echo $UID/x", "UID"));
        assert!(references("echo ${UID:-1}", "UID"));
        assert!(!references("echo $UIDS", "UID"));
    }
}
