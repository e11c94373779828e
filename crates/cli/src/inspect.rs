//! Commands that look at the cluster rather than at one file: `members`,
//! `status` (each member asked directly, like `etcdctl endpoint status`) and
//! `log` (a path's changes within the history window, newest first).

use crate::commands::{dial, options, path_error, read_rev, say_if_future};
use crate::flags::Flags;
use crate::output::Out;
use crate::Failure;
use doozer_client::{Client, Options};
use serde_json::json;
use std::time::Duration;

/// How long a member has to answer `members` and `status`.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// A member as `/ctl` lists it.
struct Member {
    id: String,
    addr: String,
    role: String,
    version: String,
}

/// Leader first, then voters, then the rest; by id within each.
fn rank(role: &str) -> u8 {
    match role {
        "leader" => 0,
        "voter" => 1,
        _ => 2,
    }
}

async fn listed(c: &Client) -> Result<Vec<Member>, Failure> {
    let rev = c.rev().await?;
    let text = |path: String| {
        let c = c.clone();
        async move { c.get(&path, Some(rev)).await.map(|(b, _)| String::from_utf8_lossy(&b).into_owned()) }
    };
    let mut members = Vec::new();
    for id in c.getdir_all("/ctl/node", Some(rev)).await? {
        let addr = text(format!("/ctl/node/{id}/addr")).await?;
        let role = text(format!("/ctl/node/{id}/role")).await?;
        let version = text(format!("/ctl/node/{id}/version")).await?;
        members.push(Member { id, addr, role, version });
    }
    members.sort_by(|a, b| (rank(&a.role), &a.id).cmp(&(rank(&b.role), &b.id)));
    Ok(members)
}

/// The revision a member has applied, asked of the member itself.
async fn applied(addr: &str, opts: &Options, secret: Option<&str>) -> Option<i64> {
    let asked = async {
        let c = Client::connect_with(addr, opts).await?;
        if let Some(sk) = secret {
            c.access(sk.as_bytes()).await?;
        }
        c.rev().await
    };
    tokio::time::timeout(ASK_TIMEOUT, asked).await.ok()?.ok()
}

async fn ask_all(flags: &Flags) -> Result<Vec<(Member, Option<i64>)>, Failure> {
    let c = dial(flags).await?;
    let opts = options(flags)?;
    let secret = doozer_client::parse_uri(&flags.uri).ok().and_then(|u| u.secret);
    let members = listed(&c).await?;
    let asks = members.iter().map(|m| applied(&m.addr, &opts, secret.as_deref()));
    let revs = futures_util::future::join_all(asks).await;
    Ok(members.into_iter().zip(revs).collect())
}

pub async fn members(flags: Flags, _args: Vec<String>) -> Result<(), Failure> {
    let out = Out { json: flags.json };
    if !out.json {
        out.row(&format!("{:<16}  {:<21}  {:<9}  {}\n", "ID", "ADDR", "ROLE", "APPLIED"), json!(null))?;
    }
    for (m, rev) in ask_all(&flags).await? {
        let shown = rev.map_or_else(|| "unreachable".to_string(), |r| r.to_string());
        let text = format!("{:<16}  {:<21}  {:<9}  {shown}\n", m.id, m.addr, m.role);
        out.row(
            &text,
            json!({"id": m.id, "addr": m.addr, "role": m.role, "applied": rev, "reachable": rev.is_some()}),
        )?;
    }
    Ok(())
}

pub async fn status(flags: Flags, _args: Vec<String>) -> Result<(), Failure> {
    let out = Out { json: flags.json };
    let rows = ask_all(&flags).await?;
    let newest = rows.iter().filter_map(|(_, r)| *r).max().unwrap_or(0);
    if !out.json {
        let head = format!(
            "{:<16}  {:<21}  {:<9}  {:<9}  {:>9}  {:>6}  {}\n",
            "ID", "ADDR", "REACHABLE", "ROLE", "APPLIED", "LAG", "VERSION"
        );
        out.row(&head, json!(null))?;
    }
    let mut unreachable = 0;
    for (m, rev) in &rows {
        let (reachable, applied, lag) = match rev {
            Some(r) => ("yes", r.to_string(), (newest - r).to_string()),
            None => {
                unreachable += 1;
                ("no", "-".to_string(), "-".to_string())
            }
        };
        let text = format!(
            "{:<16}  {:<21}  {reachable:<9}  {:<9}  {applied:>9}  {lag:>6}  {}\n",
            m.id, m.addr, m.role, m.version
        );
        let object = json!({
            "id": m.id, "addr": m.addr, "reachable": rev.is_some(), "role": m.role,
            "applied": rev, "lag": rev.map(|r| newest - r), "version": m.version,
        });
        out.row(&text, object)?;
    }
    if unreachable > 0 {
        eprintln!("doozer: {unreachable} of {} members did not answer within {ASK_TIMEOUT:?}", rows.len());
        return Err(Failure::Exit(2));
    }
    Ok(())
}

/// Changes kept at most: the history window is bounded, this is a guard.
const LOG_MAX: usize = 1_000_000;

pub async fn log(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let glob = &args[0];
    let c = dial(&flags).await?;
    say_if_future(&flags, c.rev()).await?;
    let events = c.log_all(glob, read_rev(&flags), LOG_MAX).await.map_err(path_error(glob))?;
    let out = Out { json: flags.json };
    for e in &events {
        out.event(e)?;
    }
    Ok(())
}
