//! Answers reach the client over transports that buffer: TLS holds the
//! records a full socket did not take until it is written to again or
//! flushed, so a writer that waits for the next answer without flushing
//! leaves the last ones unsent and the client waits for ever (the hang seen
//! under `doozer-torture --tls` and `bench/compare-tls.sh`). Both tests fail
//! without the flush.

use bytes::BytesMut;
use doozer_proto::{encode_frame, read_frame, Request, Response, Verb, MAX_FRAME};
use doozer_server::access::Secrets;
use doozer_server::Settings;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

const DEADLINE: Duration = Duration::from_secs(30);

fn frame(r: &Request) -> BytesMut {
    let mut b = BytesMut::new();
    encode_frame(r, &mut b);
    b
}

/// Serves one client connection of `running` over `stream`, as `listen` does
/// once it has read the first four bytes.
fn serve<S>(running: &doozer_server::Running, mut stream: S)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let cluster = running.cluster.clone();
    tokio::spawn(async move {
        let mut first = [0u8; 4];
        stream.read_exact(&mut first).await.unwrap();
        doozer_server::conn::serve(stream, first, cluster, Arc::new(Secrets::default())).await
    });
}

async fn answer<S: AsyncRead + Unpin>(s: &mut S) -> Response {
    let body = tokio::time::timeout(DEADLINE, read_frame(s, MAX_FRAME))
        .await
        .expect("the answer never reached the client: it was not flushed")
        .unwrap()
        .unwrap();
    Response::decode(body).unwrap()
}

/// Behind a `BufWriter`, an unflushed answer never leaves, whatever the timing.
#[tokio::test]
async fn answers_over_a_buffering_transport_are_flushed() {
    let running = doozer_server::start(Settings::local()).await.unwrap();
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    client
        .write_all(&frame(&Request { tag: Some(7), verb: Some(Verb::Rev as i32), ..Request::default() }))
        .await
        .unwrap();
    serve(&running, BufWriter::new(server));
    let r = answer(&mut client).await;
    assert_eq!((r.tag, r.err_code), (Some(7), None));
    running.stop().await;
}

/// Real TLS over a pipe that holds only 1 KiB: the "socket" is full whenever
/// the writer hands an answer's last bytes to TLS, so only a flush sends the
/// final records. (One thread, so nothing drains the pipe in between.)
#[tokio::test]
async fn large_answers_over_tls_arrive_whole() {
    let running = doozer_server::start(Settings::local()).await.unwrap();
    let c = doozer_client::Client::connect(&running.addr).await.unwrap();
    c.set("/big", -1, vec![7u8; 256 * 1024]).await.unwrap();
    let (client, server) = tokio::io::duplex(1024);
    let (config, roots) = tls_configs();
    let accepting = tokio::spawn(tokio_rustls::TlsAcceptor::from(config).accept(server));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(roots).connect(name, client).await.unwrap();
    serve(&running, accepting.await.unwrap().unwrap());
    for tag in 0..4 {
        let get =
            Request { tag: Some(tag), verb: Some(Verb::Get as i32), path: Some("/big".into()), ..Request::default() };
        s.write_all(&frame(&get)).await.unwrap();
        s.flush().await.unwrap();
        let r = answer(&mut s).await;
        assert_eq!((r.tag, r.value.map(|v| v.len())), (Some(tag), Some(256 * 1024)));
    }
    running.stop().await;
}

/// The same for the Rust client's requests: a large SET over TLS through a
/// 1 KiB pipe reaches the server whole.
#[tokio::test]
async fn large_requests_from_the_client_over_tls_arrive_whole() {
    let running = doozer_server::start(Settings::local()).await.unwrap();
    let (client, server) = tokio::io::duplex(1024);
    let (config, roots) = tls_configs();
    let accepting = tokio::spawn(tokio_rustls::TlsAcceptor::from(config).accept(server));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let s = tokio_rustls::TlsConnector::from(roots).connect(name, client).await.unwrap();
    serve(&running, accepting.await.unwrap().unwrap());
    let c = doozer_client::Client::over(s, "pipe");
    for i in 0..4u8 {
        let set = tokio::time::timeout(DEADLINE, c.set("/big", -1, vec![i; 256 * 1024]));
        set.await.expect("the request never reached the server: it was not flushed").unwrap();
    }
    running.stop().await;
}

/// A server configuration for 127.0.0.1 and a client one that trusts it.
fn tls_configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&key).unwrap();
    let issuer = rcgen::Issuer::new(ca, key);
    let node_key = rcgen::KeyPair::generate().unwrap();
    let node =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&node_key, &issuer).unwrap();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(node_key.serialize_der()));
    let server =
        ServerConfig::builder().with_no_client_auth().with_single_cert(vec![node.der().clone()], private).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let client = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}
