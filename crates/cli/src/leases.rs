//! The lease commands (extensions; the original had none): `lease`,
//! `lock` and `elect`, in the spirit of `etcdctl lease/lock/elect` and
//! `consul lock`. Lease ids are printed and read in hex.

use crate::commands::cluster;
use crate::flags::Flags;
use crate::output::{write_out, Out};
use crate::Failure;
use doozer_client::{Cluster, Election, Held, LeaseId, Lock};
use serde_json::json;
use std::time::Duration;

pub const LEASE_HELP: &str = "Manages leases: a lease lives <ttl> seconds past its last keep-alive, and
when it ends (revoked or expired) every file set under it is deleted at once.

  lease grant <ttl>      prints the new lease's id (hex)
  lease keepalive <id>   keeps the lease alive until stopped (-t bounds it);
                         prints its TTL at each keep-alive; exits 2 once it ended
  lease revoke <id>      ends it now; prints the revision of the deletions
  lease ttl <id>         prints <seconds left> <granted TTL>, then its files
  lease list             prints one line per lease: <id> <granted TTL> <files>

Attach a file with: doozer set -lease <id> <path> <rev>
";

pub const LOCK_HELP: &str = "Runs <command> while holding the lock in the directory <path>, then
releases it; exits with the command's status. Waiters are served in the
order they came. The holder's fencing token (it only grows from holder to
holder) is in DOOZER_LOCK_TOKEN, the lock's file in DOOZER_LOCK_PATH.

If the lock is lost (no keep-alive got through for -ttl seconds, 10 by
default: this process was paused or cut off), the command is killed and
doozer exits 2. Without a command, prints the token and holds the lock
until interrupted.

  doozer lock /locks/backup -- pg_dump ...
";

pub const ELECT_HELP: &str = "Campaigns in the election in the directory <path> with <value>; prints
<token> <value> once elected and leads until interrupted (or exits 2 when
the lease is lost: -ttl, 10 s by default). The token is the fencing token.

With -l, observes instead: prints <token> <value> of the leader now and at
every change (\"0 \" when none leads).

  doozer elect /election/db host-a:5432
  doozer elect -l /election/db
";

/// A lease id as printed (hex, `0x` optional).
pub fn parse_lease(s: &str) -> Result<LeaseId, Failure> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    match i64::from_str_radix(digits, 16) {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(Failure::Message(format!("invalid lease id {s:?}: the hex id `doozer lease grant` printed"))),
    }
}

fn parse_ttl(s: &str) -> Result<i64, Failure> {
    s.parse().map_err(|_| Failure::Message(format!("invalid TTL {s:?}: whole seconds, 1 to 86400")))
}

fn arg<'a>(args: &'a [String], i: usize, what: &str) -> Result<&'a str, Failure> {
    args.get(i).map(String::as_str).ok_or_else(|| Failure::Message(format!("lease: missing {what}")))
}

pub async fn lease(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = cluster(&flags).await?;
    let out = Out { json: flags.json };
    match args[0].as_str() {
        "grant" => {
            let ttl = parse_ttl(arg(&args, 1, "<ttl>")?)?;
            let id = c.grant(ttl).await?;
            out.row(&format!("{id:x}\n"), json!({"lease": format!("{id:x}"), "ttl": ttl}))
        }
        "keepalive" => keep_alive(&c, parse_lease(arg(&args, 1, "<id>")?)?, out).await,
        "revoke" => {
            let id = parse_lease(arg(&args, 1, "<id>")?)?;
            let rev = c.revoke(id).await?;
            out.row(&format!("{rev}\n"), json!({"lease": format!("{id:x}"), "rev": rev}))
        }
        "ttl" => {
            let id = parse_lease(arg(&args, 1, "<id>")?)?;
            let info = c.lease_ttl(id).await?;
            let files = c.lease_files(id).await?;
            let left = info.remaining.unwrap_or(0);
            let text: String = std::iter::once(format!("{left} {}\n", info.granted))
                .chain(files.iter().map(|f| format!("{f}\n")))
                .collect();
            out.row(&text, json!({"lease": format!("{id:x}"), "ttl": left, "granted": info.granted, "files": files}))
        }
        "list" => {
            for l in c.leases().await? {
                let text = format!("{:x} {} {}\n", l.id, l.granted, l.files);
                out.row(&text, json!({"lease": format!("{:x}", l.id), "granted": l.granted, "files": l.files}))?;
            }
            Ok(())
        }
        other => Err(Failure::Message(format!(
            "lease: unknown operation {other:?}: grant, keepalive, revoke, ttl or list (doozer help lease)"
        ))),
    }
}

/// Keeps `id` alive every third of its TTL until it is found ended.
async fn keep_alive(c: &Cluster, id: LeaseId, out: Out) -> Result<(), Failure> {
    loop {
        let ttl = c.keep_alive(id).await?;
        out.row(&format!("{ttl}\n"), json!({"lease": format!("{id:x}"), "ttl": ttl}))?;
        tokio::time::sleep(Duration::from_secs(u64::try_from(ttl).unwrap_or(1).max(1)) / 3).await;
    }
}

/// Waits for SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Holds `held` until interrupted (released then) or lost (an error).
async fn hold(held: Held, what: &str) -> Result<(), Failure> {
    tokio::select! {
        _ = interrupted() => {
            held.release().await?;
            Ok(())
        }
        _ = held.lost() => Err(Failure::Message(format!("lost the {what}: no keep-alive got through for its TTL"))),
    }
}

pub async fn lock(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let dir = &args[0];
    let command: Vec<&String> = args[1..].iter().skip_while(|a| *a == "--").collect();
    let c = cluster(&flags).await?;
    let held = Lock::new(&c, dir).acquire(flags.ttl).await?;
    let Some((program, rest)) = command.split_first() else {
        write_out(format!("{}\n", held.token()).as_bytes())?;
        return hold(held, "lock").await;
    };
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .env("DOOZER_LOCK_TOKEN", held.token().to_string())
        .env("DOOZER_LOCK_PATH", held.path())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::Message(format!("cannot run {program}: {e}")))?;
    tokio::select! {
        status = child.wait() => {
            let status = status.map_err(|e| Failure::Message(format!("{program}: {e}")))?;
            held.release().await?;
            match status.code() {
                Some(0) => Ok(()),
                code => Err(Failure::Exit(code.and_then(|c| u8::try_from(c).ok()).unwrap_or(2))),
            }
        }
        _ = held.lost() => {
            let _ = child.kill().await;
            Err(Failure::Message(format!("lost the lock {dir}: {program} was killed")))
        }
        _ = interrupted() => {
            let _ = child.kill().await;
            held.release().await?;
            Err(Failure::Exit(130))
        }
    }
}

pub async fn elect(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = cluster(&flags).await?;
    let election = Election::new(&c, &args[0]);
    let out = Out { json: flags.json };
    if flags.observe {
        let mut observer = election.observe().await?;
        loop {
            let leader = observer.next().await?;
            let (token, value) =
                leader.map_or((0, String::new()), |l| (l.token, String::from_utf8_lossy(&l.value).into_owned()));
            out.row(&format!("{token} {value}\n"), json!({"token": token, "value": value}))?;
        }
    }
    let Some(value) = args.get(1) else {
        return Err(Failure::Message("elect: missing <value> (or -l to observe)".into()));
    };
    let held = election.campaign(value.clone(), flags.ttl).await?;
    out.row(&format!("{} {value}\n", held.token()), json!({"token": held.token(), "value": value}))?;
    hold(held, "election").await
}
