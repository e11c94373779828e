//! The commands: each a short function over the client library, printing
//! exactly what the original printed (or JSON, see [`crate::output`]).

use crate::flags::Flags;
use crate::output::Out;
use crate::Failure;
use doozer_client::{Client, Cluster, ErrCode, Options, Tls, Watch};
use doozer_proto::MAX_VALUE;
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::time::Duration;

type Run = fn(Flags, Vec<String>) -> Pin<Box<dyn Future<Output = Result<(), Failure>>>>;

pub struct Command {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// The last argument may be left out.
    pub optional_last: bool,
    /// Any number of arguments may follow the last (`lock`'s command).
    pub variadic: bool,
    pub short: &'static str,
    pub help: &'static str,
    pub run: Run,
}

macro_rules! glob_rules {
    () => {
        "Rules for <glob> pattern-matching:
 - '?' matches a single char in a single path component
 - '*' matches zero or more chars in a single path component
 - '**' matches zero or more chars in zero or more components
 - any other sequence matches itself
"
    };
}

macro_rules! cmd {
    ($name:literal, [$($arg:literal),*], $short:literal, $help:expr, $f:ident) => {
        cmd!($name, [$($arg),*], false, $short, $help, $f)
    };
    ($name:literal, [$($arg:literal),*], $optional:literal, $short:literal, $help:expr, $f:path) => {
        Command {
            name: $name,
            args: &[$($arg),*],
            optional_last: $optional,
            variadic: false,
            short: $short,
            help: $help,
            run: |f, a| Box::pin($f(f, a)),
        }
    };
}

pub const COMMANDS: &[Command] = &[
    cmd!("add", ["<path>"], "add a key only if it isn't already set",
        "Sets the body of the file at <path> only if it does not exist yet.\n\nEquivalent to\n\n  set <path> 0\n\nThe body is read from stdin.\n\nPrints the new revision on stdout, or an error message on stderr.\n", add),
    cmd!("backup", ["<file>"], "save a consistent snapshot",
        "Writes every file, with its revision, as of the current revision (or -r)\nto <file> (\"-\" for stdout), in a checksummed format. Prints the revision.\nRestore with: doozerd --restore <file>\n", backup),
    Command {
        name: "cert",
        args: &["<op>", "<dir>", "<arg>..."],
        optional_last: true,
        variadic: true,
        short: "write TLS certificates: a CA, a node's, a client's",
        help: crate::cert::HELP,
        run: |f, a| Box::pin(crate::cert::cert(f, a)),
    },
    cmd!("completion", ["<shell>"], false, "print a shell completion script",
        "Prints a completion script for <shell>: bash, zsh, fish, elvish or powershell.\n\n  doozer completion bash > /etc/bash_completion.d/doozer\n", crate::docs::completion),
    cmd!("del", ["<path>", "<rev>"], "delete a file",
        "Deletes the file at <path>.\n\nIf <rev> is not greater than or equal to the revision of the file,\nno change will be made.\n", del),
    cmd!("force-new-cluster", ["yes"], true, "disaster recovery: make this node a new one-voter cluster",
        "When a majority of the cluster's voters is lost for good, makes the node in\nthe URI the only voter of a new cluster that keeps its files and revisions;\nthe lost members are forgotten, and each joins again with an empty data dir\nand -a. Without \"yes\", prints what it would do. Refused while a majority of\nthe voters still answers. A stopped durable node: doozerd --data-dir DIR\n--force-new-cluster.\n", force_new_cluster),
    cmd!("find", ["<path>"], "list files",
        "Prints the tree rooted at <path>\n\nPrints the path for each file or directory, one per line.\n", find),
    cmd!("get", ["<path>"], "read a file", "Prints the body of the file at <path>.\n", get),
    cmd!("help", ["<command>"], true, "provide detailed help on a command",
        "Prints detailed help on <command>, or the list of commands.\n", help),
    cmd!("journal", ["<file>"], "record every change",
        "Appends every change to <file>, starting with a snapshot, until stopped.\nRestarted, it resumes after the last whole entry. If the cluster's history\nno longer holds the next revision, it appends a fresh snapshot instead of\nleaving a gap. Entries reach the disk (fsync) within 50 ms.\nRestore with: doozerd --restore <backup> --journal <file>, or --journal <file> alone\n", journal),
    cmd!("elect", ["<path>", "<value>"], true, "campaign in an election, or observe it (-l)",
        crate::leases::ELECT_HELP, crate::leases::elect),
    cmd!("lease", ["<op>", "<arg>"], true, "grant, keep alive, revoke or inspect leases",
        crate::leases::LEASE_HELP, crate::leases::lease),
    Command {
        name: "lock",
        args: &["<path>", "<command>..."],
        optional_last: true,
        variadic: true,
        short: "run a command while holding a lock",
        help: crate::leases::LOCK_HELP,
        run: |f, a| Box::pin(crate::leases::lock(f, a)),
    },
    cmd!("log", ["<glob>"], false, "list a path's changes, newest first", LOG_HELP, crate::inspect::log),
    cmd!("man", [], false, "print the manual page",
        "Prints doozer's manual page (roff).\n\n  doozer man > /usr/local/share/man/man1/doozer.1\n", crate::docs::man),
    cmd!("members", [], false, "list the cluster's members",
        "Prints one line per member: its id, address, role (leader, voter or\nnon-voter) and the revision it has applied, asked of the member itself\n(\"unreachable\" if it does not answer within 2s).\n", crate::inspect::members),
    cmd!("nop", [], "consensus", "Performs a consensus cycle (a revision that changes nothing).\n", nop),
    cmd!("rev", [], "print the current revision", "Prints the current revision.\n", rev),
    cmd!("self", [], "identify a node", "Prints the node's ID.\n", self_id),
    cmd!("set", ["<path>", "<rev>"], "write a file",
        "Sets the body of the file at <path>.\n\nThe body is read from stdin. If <rev> is not greater than or equal to\nthe revision of the file, no change will be made.\n\nWith -lease <id> (an extension), the file is attached to that lease and\ndeleted when it ends (see doozer help lease).\n\nPrints the new revision on stdout, or an error message on stderr.\n", set),
    cmd!("stat", ["<path>"], "print file status",
        "Print the status for each <path>.\n\nIf path is a directory, prints \"d\" and the number of entries.\nOtherwise, prints its revision and length.\n", stat),
    cmd!("status", [], false, "check every member's health",
        "Asks every member, directly, how it is: one line each with its id,\naddress, whether it answered (within 2s), its role, the revision it has\napplied, how far that is behind the most advanced member (LAG), and its\nversion. Exits 2 if a member is unreachable.\n", crate::inspect::status),
    cmd!("touch", ["<path>"], "update rev of a file",
        "Attempts to update the rev of a file to a value greater than\nthe current rev. If a file does not exist, it will be created.\n", touch),
    cmd!("wait", ["<glob>"], "wait for a change", WAIT_HELP, wait),
    cmd!("watch", ["<glob>"], "watch for a change", WATCH_HELP, watch),
];

const LOG_HELP: &str = concat!(
    "Prints the changes to files matching <glob> that the cluster's history\n",
    "still holds (the last 2000 revisions by default, doozerd -hist), newest\n",
    "first. With -r, the changes at or before that revision.\n\n",
    glob_rules!(),
    "\nOutput is a sequence of records, one for each change, as watch prints them:\n\n",
    "  <path> <rev> <set|del> <len> LF <body> LF\n"
);

const WAIT_HELP: &str = concat!(
    "Prints the next change to a file matching <glob>.\n\n",
    "If flag -r is given, prints the next change on or after <rev>.\n",
    "If flag -t is given, gives up after that long (e.g. 30s, 1m30s).\n\n",
    glob_rules!(),
    "\nOutput is a sequence of records, one for each change. Format of each record:\n\n",
    "  <path> <rev> <set|del> <len> LF <body> LF\n\n",
    "Here, <path> is the file's path, <rev> is the revision of the change,\n",
    "<len> is the number of bytes in the body, and LF is an ASCII line-feed char.\n"
);

const WATCH_HELP: &str = concat!(
    "Prints changes to any file matching <glob>.\n\n",
    "If flag -r is given, prints changes beginning on <rev>.\n\n",
    glob_rules!(),
    "\nOutput is a sequence of records, one for each change. Format of each record:\n\n",
    "  <path> <rev> <set|del> <len> LF <body> LF\n\n",
    "Here, <path> is the file's path, <rev> is the revision of the change,\n",
    "<len> is the number of bytes in the body, and LF is an ASCII line-feed char.\n"
);

/// Parses a revision as Go's strconv.ParseInt does, with its error text.
fn parse_rev(s: &str) -> Result<i64, Failure> {
    s.parse::<i64>().map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => "value out of range",
            _ => "invalid syntax",
        };
        Failure::Message(format!("strconv.ParseInt: parsing {s:?}: {why}"))
    })
}

/// The `-r` flag as a read revision: -1 means "now".
pub(crate) fn read_rev(flags: &Flags) -> Option<i64> {
    (flags.rev != -1).then_some(flags.rev)
}

/// How the CLI connects: TLS from --cacert/--cert/--key, `cn=` through -b.
/// A URI of one address is tried once; with several, a call moves on to the
/// next for up to five seconds.
pub(crate) fn options(flags: &Flags) -> Result<Options, Failure> {
    let tls = match (&flags.cacert, &flags.cert, &flags.key) {
        (None, None, None) => None,
        (Some(ca), cert, key) => Some(Tls::from_files(ca, cert.as_deref(), key.as_deref())?),
        (None, _, _) => {
            return Err(Failure::Message(
                "--cert and --key need --cacert, the CA that signed the server's certificate".into(),
            ))
        }
    };
    let uri = doozer_client::parse_uri(&flags.uri);
    let several = uri.as_ref().is_ok_and(|u| u.addrs.len() != 1);
    let opts = Options {
        tls,
        boot: Some(flags.boot.clone()).filter(|b| !b.is_empty()),
        retry_for: if several { Duration::from_secs(5) } else { Duration::ZERO },
        ..Options::default()
    };
    // The URI's cacert=, cert=, key= count for every connection, as the flags
    // do (`members` and `status` dial each member).
    match uri {
        Ok(uri) => Ok(uri.options(&opts)?),
        Err(_) => Ok(opts),
    }
}

/// One connection, to the first node of the URI that answers.
pub(crate) async fn dial(flags: &Flags) -> Result<Client, Failure> {
    Ok(Client::dial_uri_with(&flags.uri, &options(flags)?).await?)
}

/// The cluster, for calls that may move to another node.
pub(crate) async fn cluster(flags: &Flags) -> Result<Cluster, Failure> {
    Ok(Cluster::connect_with(&flags.uri, options(flags)?).await?)
}

/// A watch of `glob` from `rev`, on `client` first and then the URI's other nodes.
pub(crate) fn watch_from(flags: &Flags, client: Client, glob: &str, rev: i64) -> Result<Watch, Failure> {
    Ok(Watch::with_options(&flags.uri, options(flags)?, glob, rev)?.starting_with(client))
}

/// `-r`, or the node's current revision if `-r` was not given.
pub(crate) async fn start_rev(c: &Client, flags: &Flags) -> Result<i64, Failure> {
    match read_rev(flags) {
        Some(r) => Ok(r),
        None => Ok(c.rev().await?),
    }
}

/// A read at a revision the cluster has not reached blocks until it does;
/// says so on stderr, so a person is not left looking at nothing.
pub(crate) async fn say_if_future(
    flags: &Flags,
    now: impl Future<Output = doozer_client::Result<i64>>,
) -> Result<(), Failure> {
    if let Some(r) = read_rev(flags) {
        let now = now.await?;
        if r > now {
            eprintln!("doozer: waiting for revision {r} (the cluster is at {now}); -t bounds the wait");
        }
    }
    Ok(())
}

/// A server's BAD_PATH, with the rule the path breaks.
pub(crate) fn path_error(path: &str) -> impl Fn(doozer_client::Error) -> Failure + '_ {
    move |e| match (e.code(), doozer_store::path_problem(path)) {
        (Some(ErrCode::BadPath), Some(problem)) => Failure::Message(format!("BAD_PATH: {problem}")),
        _ => Failure::Error(e),
    }
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).map_err(|e| Failure::Message(format!("read stdin: {e}")))?;
    Ok(body)
}

fn out(flags: &Flags) -> Out {
    Out { json: flags.json }
}

async fn backup(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    crate::backup::backup(flags, args).await
}

async fn journal(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    crate::backup::journal(flags, args).await
}

async fn set_with(flags: Flags, path: &str, rev: i64) -> Result<(), Failure> {
    let body = read_stdin()?;
    if body.len() > MAX_VALUE {
        return Err(Failure::Message(format!(
            "the body is {} bytes; doozerd takes at most {MAX_VALUE} (1 MiB) per file: nothing was sent",
            body.len()
        )));
    }
    let c = cluster(&flags).await?;
    let new_rev = match &flags.lease {
        Some(id) => c.set_leased(path, rev, body, crate::leases::parse_lease(id)?).await,
        None => c.set(path, rev, body).await,
    };
    let new_rev = new_rev.map_err(path_error(path))?;
    out(&flags).rev(Some(path), new_rev)
}

async fn set(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let rev = parse_rev(&args[1])?;
    set_with(flags, &args[0], rev).await
}

async fn add(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    set_with(flags, &args[0], 0).await
}

async fn del(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let rev = parse_rev(&args[1])?;
    cluster(&flags).await?.del(&args[0], rev).await.map_err(path_error(&args[0]))
}

async fn get(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = cluster(&flags).await?;
    say_if_future(&flags, c.rev()).await?;
    let (body, rev) = c.get(&args[0], read_rev(&flags)).await.map_err(path_error(&args[0]))?;
    out(&flags).file(&args[0], rev, &body)
}

async fn help(_flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let Some(name) = args.first() else {
        crate::usage_to(&mut std::io::stdout());
        return Ok(());
    };
    match COMMANDS.iter().find(|c| c.name == name) {
        Some(c) => {
            crate::help(c);
            Ok(())
        }
        None => {
            eprintln!("Unknown command: {name}");
            crate::usage();
            Err(Failure::Exit(127))
        }
    }
}

async fn force_new_cluster(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = dial(&flags).await?;
    match args.first().map(String::as_str) {
        None => {
            let plan = c.force_new_cluster(false).await?;
            println!("would force a new cluster: {plan}");
            println!("to do it: doozer force-new-cluster yes");
            Ok(())
        }
        Some("yes") => {
            println!("forced a new cluster: {}", c.force_new_cluster(true).await?);
            Ok(())
        }
        Some(other) => Err(Failure::Message(format!("force-new-cluster takes \"yes\" or nothing, not {other:?}"))),
    }
}

async fn nop(flags: Flags, _args: Vec<String>) -> Result<(), Failure> {
    Ok(cluster(&flags).await?.nop().await?)
}

async fn rev(flags: Flags, _args: Vec<String>) -> Result<(), Failure> {
    let rev = cluster(&flags).await?.rev().await?;
    out(&flags).rev(None, rev)
}

async fn self_id(flags: Flags, _args: Vec<String>) -> Result<(), Failure> {
    let id = cluster(&flags).await?.self_id().await?;
    out(&flags).id(&id)
}

async fn stat(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = cluster(&flags).await?;
    say_if_future(&flags, c.rev()).await?;
    let (len, rev) = c.stat(&args[0], read_rev(&flags)).await.map_err(path_error(&args[0]))?;
    if rev == 0 {
        eprintln!("No such file or directory: {}", args[0]);
        return Err(Failure::Exit(2));
    }
    out(&flags).stat(&args[0], len, rev)
}

async fn touch(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = cluster(&flags).await?;
    let (body, rev) = c.get(&args[0], None).await.map_err(path_error(&args[0]))?;
    c.set(&args[0], rev, body).await.map_err(path_error(&args[0]))?;
    Ok(())
}

/// Lists the tree under `root` at `rev`, parents before children. A missing
/// or unreadable root is an error; below it, as in the original, errors go
/// to stderr and the listing goes on.
async fn find(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let root = &args[0];
    let c = dial(&flags).await?;
    say_if_future(&flags, c.rev()).await?;
    let rev = start_rev(&c, &flags).await?;
    let (_, root_rev) = c.stat(root, Some(rev)).await.map_err(path_error(root))?;
    if root_rev == 0 {
        return Err(Failure::Message(format!("{root}: no such file or directory (at revision {rev})")));
    }
    let print = out(&flags);
    let mut stack = vec![root.clone()];
    while let Some(path) = stack.pop() {
        let (_, file_rev) = match c.stat(&path, Some(rev)).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                continue;
            }
        };
        if file_rev == 0 {
            eprintln!("{}", ErrCode::NoEnt);
            continue;
        }
        print.found(&path, file_rev == -2)?;
        if file_rev != -2 {
            continue;
        }
        match c.getdir_all(&path, Some(rev)).await {
            Ok(names) => {
                let base = if path == "/" { "" } else { path.as_str() };
                stack.extend(names.iter().rev().map(|n| format!("{base}/{n}")));
            }
            Err(e) => eprintln!("{e}"),
        }
    }
    Ok(())
}

async fn wait(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = dial(&flags).await?;
    let rev = start_rev(&c, &flags).await?;
    let event = c.wait(&args[0], rev).await?;
    out(&flags).event(&event)
}

/// Prints every change; with several `ca=` addresses it moves to another node
/// when its node is lost, resuming from the next revision.
async fn watch(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = dial(&flags).await?;
    let rev = start_rev(&c, &flags).await?;
    let mut watch = watch_from(&flags, c, &args[0], rev)?;
    loop {
        out(&flags).event(&watch.next().await?)?;
    }
}
