//! `run` over TLS, as against the real API: both transports (the direct one of submissions, and
//! reqwest for the question of which server it is) verify the server's certificate against the
//! system's CA certificates (here `SSL_CERT_FILE`, which rustls-native-certs honours) and speak
//! HTTP/1.1 over rustls. The server is the simulator behind a TLS front on loopback, with the
//! certificate of `tests/fixtures/tls/` (`make.sh` there makes them).

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/tls").join(name)
}

/// A TLS front on loopback for `backend` (host:port of a plain HTTP server); its `https://` URL.
/// From its `serve`-th connection on, it accepts the TCP connection and never answers the TLS
/// handshake.
async fn tls_front(backend: String, serve: usize) -> String {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut stalled = Vec::new();
        for n in 0.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            if n >= serve {
                stalled.push(tcp);
                continue;
            }
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to forward.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut plain = TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_tls_verifies_the_certificate_and_submits() {
    let sim = simulator(quiet()).await;
    let backend = sim.base_url().trim_start_matches("http://").to_string();
    let url = tls_front(backend, usize::MAX).await;
    let (_dir, manifest, out) = txt2img_scratch("over-tls", 3, &[1, 2]);
    let args = run_args(&manifest, &url, &out, &["--max-attempts", "2"]);
    let trusted = vec![("SSL_CERT_FILE", fixture("ca.pem").display().to_string())];
    let o = run_bin(args.clone(), trusted).await;
    exits(&o, 0);
    all_submitted(&out, 3);
    assert_eq!(sim.stats().accepted, 3);

    // The system's own CA certificates do not know this one: nothing gets through.
    let mut args = args;
    set_option(
        &mut args,
        "-o",
        &out.with_file_name("untrusted.csv").display().to_string(),
    );
    let o = run_bin(args, vec![]).await;
    assert_ne!(o.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert_eq!(sim.stats().calls.submit_txt2img, 3);
}

/// Connecting includes the TLS handshake: one that never completes is a failure to connect
/// (nothing of the request was written), bounded by the connect timeout (10 s) and not by
/// `--timeout`, so the request is `failed` (sent again by the next run), never `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_ends_is_a_failure_to_connect() {
    let sim = simulator(quiet()).await;
    let backend = sim.base_url().trim_start_matches("http://").to_string();
    // The first connection (the question of which server it is) is served; the submission's
    // connection stalls.
    let url = tls_front(backend, 1).await;
    let (_dir, manifest, out) = txt2img_scratch("stalled-tls", 1, &[1]);
    let args = run_args(
        &manifest,
        &url,
        &out,
        &["--max-attempts", "1", "--timeout", "60s"],
    );
    let trusted = vec![("SSL_CERT_FILE", fixture("ca.pem").display().to_string())];
    let o = run_bin(args, trusted).await;
    let rows = results(&out);
    assert_eq!(rows.len(), 1, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(rows[0]["status"], "failed", "{rows:?}");
    assert!(
        rows[0]["message"].contains("no connection within 10s"),
        "{rows:?}"
    );
    assert_eq!(sim.stats().calls.submit_txt2img, 0);
}
