//! Master election with fencing: run several of these; one leads at a
//! time, and writes a counter to a protected file that refuses any holder
//! whose token is lower than one it has accepted (a leader that paused,
//! lost its lease and woke up believing it still leads).
//!
//!     cargo run -p doozer-client --example election -- NAME
//!
//! Kill the leader (or `kill -STOP` it past the 5 s TTL) and another takes
//! over within the TTL; a stopped one that is continued is refused.
//! Uses DOOZER_URI (default `doozer:?ca=127.0.0.1:8046`).

use doozer_client::{Cluster, Election, ErrCode, Error, Result, Rev};
use std::time::Duration;

/// The protected resource: `/example/counter` holds `TOKEN COUNT`.
const RESOURCE: &str = "/example/counter";

/// Writes `count` to the resource if no higher token than `token` has
/// written it: read, compare, then SET at the revision read (so a writer
/// between the read and the write makes it fail, and it is read again).
async fn fenced_write(c: &Cluster, token: Rev, count: u64) -> Result<bool> {
    loop {
        let (stored, rev) = match c.get_file(RESOURCE, None).await? {
            Some(f) => {
                let text = String::from_utf8_lossy(&f.body).into_owned();
                (text.split(' ').next().and_then(|t| t.parse::<Rev>().ok()).unwrap_or(0), f.rev)
            }
            None => (0, 0),
        };
        if stored > token {
            return Ok(false);
        }
        match c.set(RESOURCE, rev, format!("{token} {count}")).await {
            Ok(_) => return Ok(true),
            Err(e) if e.code() == Some(ErrCode::RevMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let name = std::env::args().nth(1).unwrap_or_else(|| format!("pid-{}", std::process::id()));
    let uri = std::env::var("DOOZER_URI").unwrap_or_else(|_| "doozer:?ca=127.0.0.1:8046".into());
    let c = Cluster::connect(&uri).await?;
    let election = Election::new(&c, "/example/election");
    if let Some(l) = election.leader().await? {
        println!("{} leads (token {}); waiting", String::from_utf8_lossy(&l.value), l.token);
    }
    let held = election.campaign(name.clone(), 5).await?;
    println!("{name} leads, token {}", held.token());
    let mut count = 0u64;
    loop {
        tokio::select! {
            _ = held.lost() => {
                println!("{name} lost its lease: no longer leading");
                return Err(Error::Disconnected("leadership lost".into()));
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        count += 1;
        if !fenced_write(&c, held.token(), count).await? {
            println!("{name}: refused, a newer leader wrote; stepping down");
            held.release().await?;
            return Ok(());
        }
        println!("{name} wrote {count} under token {}", held.token());
    }
}
