//! Service registration: each instance puts its address under
//! `/example/services/web/<name>` for as long as it lives; a client lists
//! and watches the directory. Kill an instance and its entry goes within
//! its 3 s TTL.
//!
//!     cargo run -p doozer-client --example registry -- register NAME ADDR
//!     cargo run -p doozer-client --example registry -- list
//!
//! Uses DOOZER_URI (default `doozer:?ca=127.0.0.1:8046`).

use doozer_client::{Cluster, Registration, Result};

const DIR: &str = "/example/services/web";

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let uri = std::env::var("DOOZER_URI").unwrap_or_else(|_| "doozer:?ca=127.0.0.1:8046".into());
    let c = Cluster::connect(&uri).await?;
    match args.first().map(String::as_str) {
        Some("register") => {
            let name = args.get(1).cloned().unwrap_or_else(|| format!("pid-{}", std::process::id()));
            let addr = args.get(2).cloned().unwrap_or_else(|| "127.0.0.1:8080".into());
            let reg = Registration::register(&c, DIR, &name, addr.clone(), 3).await?;
            println!("registered {} = {addr}", reg.path());
            reg.lost().await;
            println!("the registration was lost");
        }
        _ => {
            let now = c.rev().await?;
            for (name, addr) in Registration::instances(&c, DIR).await? {
                println!("{name} {}", String::from_utf8_lossy(&addr));
            }
            let mut changes = c.watch(&format!("{DIR}/*"), now + 1).await?;
            loop {
                let e = changes.next().await?;
                let name = e.path.rsplit('/').next().unwrap_or_default().to_string();
                match e.is_del() {
                    true => println!("- {name}"),
                    false => println!("+ {name} {}", String::from_utf8_lossy(&e.body)),
                }
            }
        }
    }
    Ok(())
}
