//! The commands: each a short function over the client library, printing
//! exactly what the original printed.

use crate::flags::Flags;
use crate::Failure;
use doozer_client::{Client, ErrCode, Event};
use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;

type Run = fn(Flags, Vec<String>) -> Pin<Box<dyn Future<Output = Result<(), Failure>>>>;

pub struct Command {
    pub name: &'static str,
    pub args: &'static [&'static str],
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
        Command { name: $name, args: &[$($arg),*], short: $short, help: $help, run: |f, a| Box::pin($f(f, a)) }
    };
}

pub const COMMANDS: &[Command] = &[
    cmd!("add", ["<path>"], "add a key only if it isn't already set",
        "Sets the body of the file at <path> only if it does not exist yet.\n\nEquivalent to\n\n  set <path> 0\n\nThe body is read from stdin.\n\nPrints the new revision on stdout, or an error message on stderr.\n", add),
    cmd!("backup", ["<file>"], "save a consistent snapshot",
        "Writes every file, with its revision, as of the current revision (or -r)\nto <file> (\"-\" for stdout), in a checksummed format. Prints the revision.\nRestore with: doozerd --restore <file>\n", backup),
    cmd!("del", ["<path>", "<rev>"], "delete a file",
        "Deletes the file at <path>.\n\nIf <rev> is not greater than or equal to the revision of the file,\nno change will be made.\n", del),
    cmd!("find", ["<path>"], "list files",
        "Prints the tree rooted at <path>\n\nPrints the path for each file or directory, one per line.\n", find),
    cmd!("get", ["<path>"], "read a file", "Prints the body of the file at <path>.\n", get),
    cmd!("help", ["<command>"], "provide detailed help on a command", "Prints detailed help on <command>.\n", help),
    cmd!("journal", ["<file>"], "record every change",
        "Appends every change to <file>, starting with a snapshot, until stopped.\nRestarted, it resumes after the last whole entry. If the cluster's history\nno longer holds the next revision, it appends a fresh snapshot instead of\nleaving a gap. Entries reach the disk (fsync) within 50 ms.\nRestore with: doozerd --restore <backup> --journal <file>, or --journal <file> alone\n", journal),
    cmd!("members", [], "list the cluster's members",
        "Prints one line per member: its id, address, role (leader, voter or\nnon-voter) and the revision it has applied, asked of the member itself\n(\"unreachable\" if it does not answer within 2s).\n", members),
    cmd!("nop", [], "consensus", "Performs a consensus cycle (a revision that changes nothing).\n", nop),
    cmd!("rev", [], "print the current revision", "Prints the current revision.\n", rev),
    cmd!("self", [], "identify a node", "Prints the node's ID.\n", self_id),
    cmd!("set", ["<path>", "<rev>"], "write a file",
        "Sets the body of the file at <path>.\n\nThe body is read from stdin. If <rev> is not greater than or equal to\nthe revision of the file, no change will be made.\n\nPrints the new revision on stdout, or an error message on stderr.\n", set),
    cmd!("stat", ["<path>"], "print file status",
        "Print the status for each <path>.\n\nIf path is a directory, prints \"d\" and the number of entries.\nOtherwise, prints its revision and length.\n", stat),
    cmd!("touch", ["<path>"], "update rev of a file",
        "Attempts to update the rev of a file to a value greater than\nthe current rev. If a file does not exist, it will be created.\n", touch),
    cmd!("wait", ["<glob>"], "wait for a change", WAIT_HELP, wait),
    cmd!("watch", ["<glob>"], "watch for a change", WATCH_HELP, watch),
];

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
fn read_rev(flags: &Flags) -> Option<i64> {
    (flags.rev != -1).then_some(flags.rev)
}

pub(crate) async fn dial(flags: &Flags) -> Result<Client, Failure> {
    Ok(Client::dial_uri(&flags.uri).await?)
}

/// `-r`, or the node's current revision if `-r` was not given.
pub(crate) async fn start_rev(c: &Client, flags: &Flags) -> Result<i64, Failure> {
    match read_rev(flags) {
        Some(r) => Ok(r),
        None => Ok(c.rev().await?),
    }
}

fn write_out(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).map_err(|e| Failure::Message(format!("write stdout: {e}")))
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).map_err(|e| Failure::Message(format!("read stdin: {e}")))?;
    Ok(body)
}

async fn backup(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    crate::backup::backup(flags, args).await
}

async fn journal(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    crate::backup::journal(flags, args).await
}

async fn set_with(flags: Flags, path: &str, rev: i64) -> Result<(), Failure> {
    let c = dial(&flags).await?;
    let body = read_stdin()?;
    let new_rev = c.set(path, rev, body).await?;
    write_out(format!("{new_rev}\n").as_bytes())
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
    Ok(dial(&flags).await?.del(&args[0], rev).await?)
}

async fn get(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let (body, _) = dial(&flags).await?.get(&args[0], read_rev(&flags)).await?;
    write_out(&body)
}

async fn help(_flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    match COMMANDS.iter().find(|c| c.name == args[0]) {
        Some(c) => {
            crate::help(c);
            Ok(())
        }
        None => {
            eprintln!("Unknown command: {}", args[0]);
            crate::usage();
            Err(Failure::Exit(127))
        }
    }
}

async fn nop(flags: Flags, _args: Vec<String>) -> Result<(), Failure> {
    Ok(dial(&flags).await?.nop().await?)
}

async fn rev(flags: Flags, _args: Vec<String>) -> Result<(), Failure> {
    let rev = dial(&flags).await?.rev().await?;
    write_out(format!("{rev}\n").as_bytes())
}

async fn self_id(flags: Flags, _args: Vec<String>) -> Result<(), Failure> {
    let id = dial(&flags).await?.self_id().await?;
    write_out(&id)
}

async fn stat(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let (len, rev) = dial(&flags).await?.stat(&args[0], read_rev(&flags)).await?;
    match rev {
        0 => {
            eprintln!("No such file or directory: {}", args[0]);
            Err(Failure::Exit(2))
        }
        -2 => write_out(format!("d {len}\n").as_bytes()),
        _ => write_out(format!("{rev} {len}\n").as_bytes()),
    }
}

async fn touch(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = dial(&flags).await?;
    let (body, rev) = c.get(&args[0], None).await?;
    c.set(&args[0], rev, body).await?;
    Ok(())
}

/// Lists the tree under `root` at `rev`, parents before children. Like the
/// original, errors go to stderr and do not change the exit status.
async fn find(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = dial(&flags).await?;
    let rev = start_rev(&c, &flags).await?;
    let mut stack = vec![args[0].clone()];
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
        write_out(format!("{path}\n").as_bytes())?;
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

/// One member's line: id, address, role, applied revision.
async fn member_line(id: &str, addr: &str, role: &str) -> String {
    let asked = async {
        let c = Client::connect(addr).await?;
        c.rev().await
    };
    let applied = match tokio::time::timeout(std::time::Duration::from_secs(2), asked).await {
        Ok(Ok(rev)) => rev.to_string(),
        _ => "unreachable".to_string(),
    };
    format!("{id:<16}  {addr:<21}  {role:<9}  {applied}\n")
}

async fn members(flags: Flags, _args: Vec<String>) -> Result<(), Failure> {
    let c = dial(&flags).await?;
    let rev = c.rev().await?;
    let text = |path: String| {
        let c = c.clone();
        async move { c.get(&path, Some(rev)).await.map(|(b, _)| String::from_utf8_lossy(&b).into_owned()) }
    };
    let mut rows = Vec::new();
    for id in c.getdir_all("/ctl/node", Some(rev)).await? {
        let addr = text(format!("/ctl/node/{id}/addr")).await?;
        let role = text(format!("/ctl/node/{id}/role")).await?;
        let rank = match role.as_str() {
            "leader" => 0,
            "voter" => 1,
            _ => 2,
        };
        rows.push((rank, id, addr, role));
    }
    rows.sort();
    let mut out = format!("{:<16}  {:<21}  {:<9}  {}\n", "ID", "ADDR", "ROLE", "APPLIED");
    for (_, id, addr, role) in &rows {
        out.push_str(&member_line(id, addr, role).await);
    }
    write_out(out.as_bytes())
}

fn print_event(e: &Event) -> Result<(), Failure> {
    let kind = if e.is_set() {
        "set"
    } else if e.is_del() {
        "del"
    } else {
        ""
    };
    let mut record = format!("{} {} {} {}\n", e.path, e.rev, kind, e.body.len()).into_bytes();
    record.extend_from_slice(&e.body);
    record.push(b'\n');
    write_out(&record)
}

async fn wait(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = dial(&flags).await?;
    let rev = start_rev(&c, &flags).await?;
    let event = if flags.timeout.is_zero() {
        c.wait(&args[0], rev).await?
    } else {
        match tokio::time::timeout(flags.timeout, c.wait(&args[0], rev)).await {
            Ok(r) => r?,
            Err(_) => return Err(Failure::Message("wait timeout".into())),
        }
    };
    print_event(&event)
}

/// Prints every change; with several `ca=` addresses it moves to another node
/// when its node is lost, resuming from the next revision.
async fn watch(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = dial(&flags).await?;
    let rev = start_rev(&c, &flags).await?;
    let mut watch = doozer_client::Watch::with_client(c, &flags.uri, &args[0], rev)?;
    loop {
        print_event(&watch.next().await?)?;
    }
}
