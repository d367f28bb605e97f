//! The command line (`vineyard-kedro` and `kedro vineyard`): one clap definition.
//!
//! Store commands talk to a vineyardd through [`crate::Client`]. The deploy
//! commands (catalog, docker, argo) need a Kedro project and live in the
//! Python `kedro vineyard` group only, which calls [`crate::deploy`]
//! through the binding. [`run`] never exits the process
//! (it may be running inside Kedro's interpreter): it returns 0 on success,
//! 1 when a command fails, 2 on a usage error. Data goes to stdout, errors
//! and progress to stderr.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod serve;
mod store;

/// Stores and deploys Kedro datasets kept in vineyard.
#[derive(Debug, Parser)]
#[command(
    name = "vineyard-kedro",
    version,
    about,
    disable_help_subcommand = true
)]
struct Cli {
    /// vineyardd's IPC socket (for `serve`: where to expose the new server's socket)
    #[arg(long, global = true, env = "VINEYARD_IPC_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List named objects: name, id, type, size, namespace
    Ls {
        /// Only names under NAMESPACE/ (a run's or workflow's objects)
        #[arg(long, short = 'n', value_parser = clap::builder::NonEmptyStringValueParser::new())]
        namespace: Option<String>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Print an object's metadata tree as JSON
    Inspect {
        /// An object name, or an id (o0123456789abcdef)
        target: String,
    },
    /// Delete named objects (with their members) and drop the names
    Rm {
        /// Names to delete
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Delete every named object under NAMESPACE/ and drop the names, and/or
    /// free orphan blobs
    Gc {
        /// The namespace (a run id, or an Argo workflow's uid)
        #[arg(long, short = 'n', value_parser = clap::builder::NonEmptyStringValueParser::new(),
              required_unless_present = "orphans")]
        namespace: Option<String>,
        /// Also free orphan blobs: sealed, referenced by no object and held by
        /// no live connection (what a writer killed mid-save leaves). A bare
        /// blob another client stored without any object looks the same:
        /// do not use on a store shared with such clients
        #[arg(long)]
        orphans: bool,
        /// Print JSON instead of a sentence
        #[arg(long)]
        json: bool,
    },
    /// Show the instance status and its memory use
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Run a vineyardd in the foreground until Ctrl-C or SIGTERM
    Serve(ServeArgs),
}

/// Options of `serve`.
#[derive(Debug, Args)]
struct ServeArgs {
    /// Shared memory limit (vineyardd syntax: 256Mi, 4Gi)
    #[arg(long, default_value = "256Mi")]
    size: String,
    /// Where the metadata lives
    #[arg(long, value_enum, default_value_t = MetaKind::Local)]
    meta: MetaKind,
    /// etcd endpoint (with --meta etcd)
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    etcd_endpoint: String,
    /// etcd key prefix (with --meta etcd)
    #[arg(long, default_value = "vineyard")]
    etcd_prefix: String,
    /// Enable RPC on this port (off when not given)
    #[arg(long)]
    rpc_port: Option<u16>,
    /// The vineyardd binary (default: $VINEYARDD, then the virtualenv, then $PATH)
    #[arg(long, value_name = "PATH")]
    vineyardd: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum MetaKind {
    Local,
    Etcd,
}

/// How a command failed.
#[derive(Debug)]
enum Failure {
    /// Bad invocation: exit code 2.
    Usage(String),
    /// The command failed: exit code 1.
    Error(String),
    /// Failed and already said why: exit code 1.
    Reported,
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        Failure::Error(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Error(format!("cannot write output: {e}"))
    }
}

/// stdout and stderr of a command.
struct Io<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
}

/// `(name, one-line help)` of every subcommand, in the order `--help` lists them.
pub fn subcommands() -> Vec<(String, String)> {
    use clap::CommandFactory;
    Cli::command()
        .get_subcommands()
        .map(|c| {
            let about = c.get_about().map(ToString::to_string).unwrap_or_default();
            (c.get_name().to_string(), about)
        })
        .collect()
}

/// Runs the CLI with `args` (program name first) and returns the exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    run_with(args, &mut stdout.lock(), &mut stderr.lock())
}

/// Like [`run`], writing to `out` and `err` instead of stdout and stderr (for
/// tests, and for callers that must route output through their own streams).
pub fn run_with<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            let _ = if e.use_stderr() {
                err.write_all(text.as_bytes())
            } else {
                out.write_all(text.as_bytes())
            };
            return e.exit_code();
        }
    };
    let mut io = Io { out, err };
    let result = dispatch(cli, &mut io);
    let _ = io.out.flush();
    match result {
        Ok(()) => 0,
        Err(Failure::Usage(msg)) => {
            let _ = writeln!(io.err, "error: {msg}");
            2
        }
        Err(Failure::Error(msg)) => {
            let _ = writeln!(io.err, "error: {msg}");
            1
        }
        Err(Failure::Reported) => 1,
    }
}

fn dispatch(cli: Cli, io: &mut Io<'_>) -> Result<(), Failure> {
    let socket = cli.socket;
    let need_socket = || {
        socket.clone().ok_or_else(|| {
            Failure::Usage(
                "no vineyardd socket: pass --socket PATH or set VINEYARD_IPC_SOCKET".into(),
            )
        })
    };
    match cli.command {
        Command::Ls { namespace, json } => {
            store::ls(&need_socket()?, namespace.as_deref(), json, io)
        }
        Command::Inspect { target } => store::inspect(&need_socket()?, &target, io),
        Command::Rm { names } => store::rm(&need_socket()?, &names, io),
        Command::Gc {
            namespace,
            orphans,
            json,
        } => store::gc(&need_socket()?, namespace.as_deref(), orphans, json, io),
        Command::Status { json } => store::status(&need_socket()?, json, io),
        Command::Serve(args) => serve::serve(socket.as_deref(), &args, io),
    }
}

/// `1536` -> `1.5 KiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_are_human_readable() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(256 << 20), "256.0 MiB");
        assert_eq!(human_bytes(4 << 30), "4.0 GiB");
    }
}
