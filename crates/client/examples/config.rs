//! Configuration identical on every machine: read a value, then follow it.
//! Every process running this prints the same values in the same order.
//!
//!     cargo run -p doozer-client --example config -- /config/greeting
//!
//! Uses DOOZER_URI (default `doozer:?ca=127.0.0.1:8046`); with several `ca=`
//! addresses it keeps following across the loss of a node.

use doozer_client::{Cluster, Result};

#[tokio::main]
async fn main() -> Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/config/greeting".into());
    let uri = std::env::var("DOOZER_URI").unwrap_or_else(|_| "doozer:?ca=127.0.0.1:8046".into());
    let c = Cluster::connect(&uri).await?;
    let now = c.rev().await?;
    match c.get_file(&path, Some(now)).await? {
        Some(f) => println!("{path} = {} (rev {})", String::from_utf8_lossy(&f.body), f.rev),
        None => println!("{path} is not set yet"),
    }
    let mut changes = c.watch(&path, now + 1).await?;
    loop {
        let e = changes.next().await?;
        match e.is_del() {
            true => println!("{path} deleted (rev {})", e.rev),
            false => println!("{path} = {} (rev {})", String::from_utf8_lossy(&e.body), e.rev),
        }
    }
}
