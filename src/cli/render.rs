//! Deploy commands: `catalog render`, `argo render`, `docker render`,
//! `docker lint`. Thin shells over [`crate::deploy`]: read inputs, call the
//! renderer, write files (never overwriting a user's Dockerfile unless
//! asked), report what was written.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{DockerRenderArgs, Failure, Io};
use crate::deploy::{self, ArgoSpec, DockerSpec};

fn read(path: &Path, what: &str) -> Result<String, Failure> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::Error(format!("cannot read {what} from stdin: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Error(format!("cannot read {what} {}: {e}", path.display())))
}

fn write(path: &Path, text: &str) -> Result<(), Failure> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Error(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(path, text)
        .map_err(|e| Failure::Error(format!("cannot write {}: {e}", path.display())))
}

/// `catalog render --names a,b [--existing FILE] [--catch-all] [-o FILE] [--json]`.
pub(super) fn catalog(
    names: &[String],
    existing: Option<&Path>,
    catch_all: bool,
    output: Option<&Path>,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), Failure> {
    let source = existing.or(output.filter(|p| p.exists()));
    let current = match source {
        Some(p) if p.exists() => Some(read(p, "catalog")?),
        Some(p) if existing.is_some() => {
            return Err(Failure::Error(format!(
                "catalog {} does not exist",
                p.display()
            )))
        }
        _ => None,
    };
    let (yaml, added) = deploy::render_catalog(names, current.as_deref(), catch_all)?;
    if let (Some(path), false) = (output, added.is_empty()) {
        write(path, &yaml)?;
    }
    if json {
        writeln!(
            io.out,
            "{}",
            json!({"yaml": yaml, "added": added, "path": output.map(|p| p.display().to_string())})
        )?;
    } else if let Some(path) = output {
        if added.is_empty() {
            writeln!(io.out, "All datasets are already configured.")?;
        } else {
            writeln!(
                io.out,
                "Data Catalog YAML configuration was created: {}",
                path.display()
            )?;
        }
    } else {
        write!(io.out, "{yaml}")?;
    }
    Ok(())
}

/// `argo render --spec FILE.json [-o DIR|-]`.
pub(super) fn argo(spec_path: &Path, output: &Path, io: &mut Io<'_>) -> Result<(), Failure> {
    let text = read(spec_path, "Argo spec")?;
    let spec: ArgoSpec = serde_json::from_str(&text)
        .map_err(|e| Failure::Error(format!("invalid Argo spec {}: {e}", spec_path.display())))?;
    let rendered = deploy::render_workflow(&spec)?;
    for warning in &rendered.warnings {
        writeln!(io.err, "warning: {warning}")?;
    }
    let yaml = rendered.yaml;
    if output == Path::new("-") {
        write!(io.out, "{yaml}")?;
        return Ok(());
    }
    let path = output.join(deploy::argo_file_name(&spec.package_name));
    write(&path, &yaml)?;
    writeln!(io.out, "{}", path.display())?;
    Ok(())
}

/// `docker render --package P [...] [-o DIR|-] [--force]`.
pub(super) fn docker(args: &DockerRenderArgs, io: &mut Io<'_>) -> Result<(), Failure> {
    let spec = DockerSpec {
        package_name: args.package.clone(),
        base_image: args.base_image.clone(),
        requirements: args.requirements.clone(),
        with_vineyard: !args.no_vineyard,
        vineyard_requirement: args.vineyard_requirement.clone(),
        env: args.env.clone(),
        pipeline: args.pipeline.clone(),
    };
    let dockerfile = deploy::render_dockerfile(&spec)?;
    if args.output == Path::new("-") {
        write!(io.out, "{dockerfile}")?;
        return Ok(());
    }
    let files: [(PathBuf, String); 2] = [
        (args.output.join("Dockerfile"), dockerfile),
        (
            args.output.join(".dockerignore"),
            deploy::render_dockerignore(),
        ),
    ];
    for (path, text) in files {
        if path.exists() && !args.force {
            let _ = writeln!(
                io.err,
                "{} exists, kept it (--force overwrites)",
                path.display()
            );
            continue;
        }
        write(&path, &text)?;
        writeln!(io.out, "{}", path.display())?;
    }
    Ok(())
}

/// `docker lint FILE`: problems on stdout, exit code 1 if there are any.
pub(super) fn docker_lint(file: &Path, io: &mut Io<'_>) -> Result<(), Failure> {
    let problems = deploy::lint_dockerfile(&read(file, "Dockerfile")?);
    for p in &problems {
        writeln!(io.out, "{}: {p}", file.display())?;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Reported)
    }
}
