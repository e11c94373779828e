//! `put-seq` and `put-conc` against etcd v3 (`--etcd HOST:PORT,...`), for
//! the comparisons in docs/performance.md: the same loop, clocks and
//! histograms as against doozerd, with the same keys (distinct, under
//! `/bench/<pid>`) and values.
//!
//! Each client is its own HTTP/2 connection to one endpoint (round robin),
//! making one `etcdserverpb.KV/Put` gRPC call at a time, as each doozer
//! client makes one SET at a time on its own connection. The request is
//! encoded by hand (a PutRequest is two bytes fields: key 1, value 2) so
//! the bench needs no generated code; an answer counts once its gRPC status
//! is 0. Not here: reads, watches, leases (etcd has its own `benchmark`).

use super::{collect, histogram, progress, root, Args, Clock, Report};
use bytes::{BufMut, Bytes, BytesMut};
use std::time::Instant;
use tokio::net::TcpStream;

/// One gRPC connection to an etcd endpoint.
struct Conn {
    client: h2::client::SendRequest<Bytes>,
    authority: String,
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("etcd at {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (client, conn) = h2::client::handshake(tcp).await.map_err(|e| format!("etcd at {addr}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { client, authority: addr.to_string() })
    }

    /// One Put; `Err` unless etcd answers with gRPC status 0.
    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let failed = |e: h2::Error| format!("etcd put: {e}");
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}/etcdserverpb.KV/Put", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| e.to_string())?;
        let mut client = self.client.clone().ready().await.map_err(failed)?;
        let (answer, mut send) = client.send_request(req, false).map_err(failed)?;
        send.send_data(grpc_frame(&put_request(key, value)), true).map_err(failed)?;
        let mut body = answer.await.map_err(failed)?.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(failed)?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await.map_err(failed)?.unwrap_or_default();
        match trailers.get("grpc-status").map(|v| v.as_bytes()) {
            Some(b"0") => Ok(()),
            other => Err(format!("etcd put failed: grpc-status {other:?} {:?}", trailers.get("grpc-message"))),
        }
    }
}

/// A PutRequest: key (field 1) and value (field 2), both length-delimited.
fn put_request(key: &[u8], value: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(key.len() + value.len() + 12);
    for (tag, bytes) in [(0x0a, key), (0x12, value)] {
        out.put_u8(tag);
        varint(&mut out, bytes.len() as u64);
        out.put_slice(bytes);
    }
    out
}

fn varint(out: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        out.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

/// gRPC's length-prefixed message: not compressed, length, bytes.
fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.put_u8(0);
    out.put_u32(msg.len() as u32);
    out.put_slice(msg);
    out.freeze()
}

/// `clients` connections putting distinct keys until time is up.
pub async fn put(name: &str, args: &Args, endpoints: &[String], clients: usize) -> Result<Report, String> {
    let clock = Clock::new(args);
    let shown = progress(name, &clock);
    let value = vec![b'x'; args.size];
    let mut tasks = Vec::new();
    for w in 0..clients {
        let mut conn = Conn::open(&endpoints[w % endpoints.len()]).await?;
        let (clock, value, prefix) = (clock.clone(), value.clone(), format!("{}/{name}/{w}", root()));
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut n = 0u64;
            while clock.running() {
                let key = format!("{prefix}/{n}");
                let t = Instant::now();
                conn.put(key.as_bytes(), &value).await?;
                n += 1;
                clock.record(&mut h, t);
            }
            Ok::<_, String>(h)
        }));
    }
    let mut report = collect(name, &clock, shown, tasks, clients).await?;
    report.extra.push(("target".into(), "etcd".into()));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_request_is_two_length_delimited_fields() {
        assert_eq!(&put_request(b"k", b"vv")[..], b"\x0a\x01k\x12\x02vv");
        let long = vec![b'x'; 300];
        let encoded = put_request(b"", &long);
        assert_eq!(&encoded[..5], b"\x0a\x00\x12\xac\x02");
        assert_eq!(&grpc_frame(b"abc")[..], b"\x00\x00\x00\x00\x03abc");
    }
}
