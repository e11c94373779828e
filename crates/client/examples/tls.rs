//! Talking to a doozerd started with `-tlscert cert.pem -tlskey key.pem`:
//! trust the CA that signed its certificate (and, if it asks for one,
//! present a client certificate).
//!
//!     cargo run -p doozer-client --example tls -- ca.pem localhost:8046

use doozer_client::{Client, Options, Result, Tls};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let ca = args.next().unwrap_or_else(|| "ca.pem".into());
    let addr = args.next().unwrap_or_else(|| "localhost:8046".into());
    let opts = Options { tls: Some(Tls::from_files(&ca, None, None)?), ..Options::default() };
    let c = Client::connect_with(&addr, &opts).await?;
    println!("connected over TLS to {} at revision {}", addr, c.rev().await?);
    Ok(())
}
