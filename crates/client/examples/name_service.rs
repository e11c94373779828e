//! A name service: registers this instance of a service, lists the others,
//! and prints every change to the list as instances come and go.
//!
//!     cargo run -p doozer-client --example name_service -- api 10.0.0.5:8080
//!
//! Uses DOOZER_URI (default `doozer:?ca=127.0.0.1:8046`).

use doozer_client::{Cluster, Result};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let service = args.next().unwrap_or_else(|| "api".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let uri = std::env::var("DOOZER_URI").unwrap_or_else(|_| "doozer:?ca=127.0.0.1:8046".into());
    let c = Cluster::connect(&uri).await?;

    // One file per instance, named after the node id of the doozerd we talk to
    // and our process id, so two instances never share a name.
    let me = format!("{}-{}", String::from_utf8_lossy(&c.self_id().await?), std::process::id());
    let dir = format!("/service/{service}");
    let rev = c.set(&format!("{dir}/{me}"), -1, addr.clone()).await?;
    println!("registered {service} at {addr} as {me} (rev {rev})");

    for id in c.getdir_all(&dir, Some(rev)).await? {
        if let Some(f) = c.get_file(&format!("{dir}/{id}"), Some(rev)).await? {
            println!("  {id} {}", String::from_utf8_lossy(&f.body));
        }
    }
    let mut changes = c.watch(&format!("{dir}/*"), rev + 1).await?;
    loop {
        let e = changes.next().await?;
        let what = if e.is_del() { "gone".to_string() } else { String::from_utf8_lossy(&e.body).into_owned() };
        println!("{} {what} (rev {})", e.path, e.rev);
    }
}
