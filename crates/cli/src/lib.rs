//! `doozer`: the command-line client, with the original's commands, flags,
//! output formats and exit codes (0 success, 1 REV_MISMATCH, 2 other errors,
//! 127 usage errors).
//!
//! Where the original had a defect, this
//! one fixes it: a rev mismatch exits 1 as documented, and `get` and `stat`
//! honour `-r`.

mod backup;
mod cert;
mod commands;
mod docs;
mod flags;
mod inspect;
mod leases;
mod output;

use commands::{Command, COMMANDS};
use flags::Flags;
use std::io::Write;
use std::process::ExitCode;

/// How a command ended, other than success.
pub enum Failure {
    /// A protocol, connection or argument error, printed as `Error: <text>`.
    Error(doozer_client::Error),
    /// An error message printed as `Error: <text>` with exit code 2.
    Message(String),
    /// Already reported; exit with this code.
    Exit(u8),
}

impl From<doozer_client::Error> for Failure {
    fn from(e: doozer_client::Error) -> Failure {
        Failure::Error(e)
    }
}

const USAGE_INTRO: &str = "
Each command takes zero or more options and zero or more arguments.
In addition, there are some global options that can be used with any command.
The exit status is 0 on success, 1 for a rev mismatch, 2 for other errors,
and 127 for usage errors.

Global Options:
  -a string
    \tthe cluster to connect to: doozer:?ca=HOST:PORT&ca=...&sk=SECRET, or HOST:PORT
    \t(default \"doozer:?ca=127.0.0.1:8046\")
  -b string
    \tthe DzNS uri
  -cacert file
    \tTLS: trust the CA certificate(s) in this PEM file (env DOOZER_CACERT)
  -cert file, -key file
    \tTLS: present this client certificate and key (env DOOZER_CERT, DOOZER_KEY)
  -h, --help
    \tshow help
  -json, -w json
    \tprint one JSON object per line
  -l
    \telect: observe the election instead of campaigning
  -lease id
    \tset: attach the file to this lease (hex id from `doozer lease grant`)
  -r int
    \trequest rev (default -1)
  -t duration
    \ttimeout for the whole command (e.g. 2s, 1m30s; default: none)
  -ttl int
    \tlock, elect: the lease's TTL in seconds (default 10)
  -v, --version
    \tprint version string

Environment:

  DOOZER_URI - The doozer cluster to bind to; overriden by -a.

  DOOZER_BOOT_URI - The DzNS to lookup address in; overriden by -b.

  DOOZER_CACERT, DOOZER_CERT, DOOZER_KEY - TLS files; overridden by -cacert, -cert, -key.

Commands:
";

fn usage_text() -> String {
    let mut s = String::from("Use: doozer [options] <command> [options] [args]\n");
    s.push_str(USAGE_INTRO);
    let line = |c: &Command| match (c.optional_last, c.args.split_last()) {
        (true, Some((last, rest))) => {
            format!("{} {}[{last}]", c.name, rest.iter().map(|a| format!("{a} ")).collect::<String>())
        }
        _ => format!("{} {}", c.name, c.args.join(" ")),
    };
    let width = COMMANDS.iter().map(|c| line(c).len()).max().unwrap_or(0);
    for c in COMMANDS {
        s.push_str(&format!("  {:<width$} - {}\n", line(c), c.short));
    }
    s
}

/// The usage on stderr, where the original printed it.
fn usage() {
    eprint!("{}", usage_text());
}

/// The usage where asked for (`doozer help` prints it on stdout).
pub(crate) fn usage_to(w: &mut dyn Write) {
    let _ = w.write_all(usage_text().as_bytes());
}

fn help(c: &Command) {
    print!("Use: doozer [options] {} [options] {}\n\n{}", c.name, c.args.join(" "), c.help);
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("{msg}");
    usage();
    ExitCode::from(127)
}

/// The CLI's entry point.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut flags = Flags::from_env();
    let rest = match flags.parse(&args) {
        Ok(r) => r,
        Err(e) => return usage_error(&e),
    };
    if flags.help {
        usage();
        return ExitCode::SUCCESS;
    }
    if flags.version {
        println!("doozer {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let Some(name) = rest.first() else {
        return usage_error("doozer: missing command");
    };
    let Some(cmd) = COMMANDS.iter().find(|c| c.name == name) else {
        return usage_error(&format!("Unknown command: {name}"));
    };
    let args = match flags.parse(&rest[1..]) {
        Ok(a) => a,
        Err(e) => return usage_error(&e),
    };
    if flags.help {
        help(cmd);
        return ExitCode::SUCCESS;
    }
    let fewest = cmd.args.len() - usize::from(cmd.optional_last);
    if args.len() < fewest || (args.len() > cmd.args.len() && !cmd.variadic) {
        eprintln!("{}: wrong number of arguments", cmd.name);
        help(cmd);
        return ExitCode::from(127);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let run = (cmd.run)(flags.clone(), args);
    let result = runtime.block_on(async {
        if flags.timeout.is_zero() {
            return run.await;
        }
        match tokio::time::timeout(flags.timeout, run).await {
            Ok(r) => r,
            // The original's words for wait; scripts may look for them.
            Err(_) if cmd.name == "wait" => Err(Failure::Message("wait timeout".into())),
            Err(_) => Err(Failure::Message(format!("{} timed out after {:?} (-t)", cmd.name, flags.timeout))),
        }
    });
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(f, &flags),
    }
}

/// Words after a server's error that say what to do about it.
fn hint(e: &doozer_client::Error) -> &'static str {
    use doozer_client::ErrCode;
    match e {
        doozer_client::Error::Server { code: ErrCode::Other, detail, .. } if detail.contains("permission denied") => {
            " (this cluster needs its secret: add &sk=SECRET to the uri in -a or DOOZER_URI)"
        }
        // TLS 1.3 refuses a client certificate after the handshake, on the first request.
        doozer_client::Error::Disconnected(m) if m.contains("CertificateRequired") => {
            " (this node takes only clients with a certificate from its --client-ca: give --cert and --key)"
        }
        doozer_client::Error::Disconnected(m) if m.contains("alert") && m.contains("Certificate") => {
            " (this node does not accept the client certificate: is it from the CA in its --client-ca?)"
        }
        doozer_client::Error::Server { code: ErrCode::UnknownVerb, .. } => {
            " (the server does not know this request: `log` needs a doozerd that has the LOG extension)"
        }
        // The original's other error lines stay exactly as they were: scripts match them.
        _ => "",
    }
}

fn report(f: Failure, flags: &Flags) -> ExitCode {
    use doozer_client::{ErrCode, Error};
    match f {
        Failure::Exit(code) => ExitCode::from(code),
        Failure::Message(m) => {
            eprintln!("Error: {m}");
            ExitCode::from(2)
        }
        Failure::Error(Error::Dial(m)) => {
            eprintln!(
                "Error: {m} (is doozerd running there? choose the cluster with -a or DOOZER_URI; now {})",
                flags.uri
            );
            ExitCode::from(2)
        }
        Failure::Error(Error::InvalidUri) => {
            eprintln!("Error: invalid uri (use doozer:?ca=HOST:PORT or HOST:PORT; got {:?})", flags.uri);
            ExitCode::from(2)
        }
        Failure::Error(e) => {
            eprintln!("Error: {e}{}", hint(&e));
            ExitCode::from(if e.code() == Some(ErrCode::RevMismatch) { 1 } else { 2 })
        }
    }
}
