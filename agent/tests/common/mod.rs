//! A stand-in for the control plane's agent gateway: TLS 1.3 with an rcgen CA,
//! optional client certificates, the `/agent/v1/*` routes with the channel crate's
//! real sealing and verification, and switches to make routes fail.
//!
//! It plays what the real server cannot be made to do on demand: refusing a
//! result, failing a route mid-way, forgetting tokens, issuing certificates
//! with chosen lifetimes, restarting. The agent against the real server is
//! tested in `server/tests/real_agent.rs`.
#![allow(clippy::unwrap_used, dead_code)]

use bytes::Bytes;
use channel::api::*;
use channel::{CommandHeader, KemPublicKey, KemSecretKey, ResultStatus, SigningKey, VerifyingKey};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use time::{Duration as TDuration, OffsetDateTime};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

pub const TOKEN_SECRET: &str = "0123456789abcdef0123456789abcdef";
pub const AGENT_ID: &str = "agt_test_1";

/// A result the fake control plane opened and accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub command_id: String,
    pub status: ResultStatus,
    pub output: String,
    pub signer: VerifyingKey,
}

#[derive(Default)]
pub struct Switches {
    /// Status to answer `/result` with instead of accepting (e.g. 503).
    pub result_status: Option<u16>,
    /// Refuse this many more result posts with 413 before accepting again.
    pub refuse_results: usize,
    pub metrics_status: Option<u16>,
    /// Every bearer token issued so far is forgotten (the next call gets 401).
    pub forget_tokens: bool,
}

pub struct Agent {
    pub identity: VerifyingKey,
    pub kem: Option<KemPublicKey>,
    pub client_cert: Vec<u8>,
}

pub struct State {
    pub agent: Option<Agent>,
    pub queue: Vec<DeliveredCommand>,
    pub results: Vec<Received>,
    pub result_posts: usize,
    pub samples: Vec<MetricSample>,
    pub tokens: Vec<String>,
    pub token_calls: usize,
    pub switches: Switches,
    pub handshakes: Vec<(rustls::ProtocolVersion, rustls::NamedGroup)>,
    pub next_sequence: u64,
    pub next_id: u64,
    /// Lifetime of certificates issued from now on: (started ago, ends in), minutes.
    pub cert_window: (i64, i64),
    pub renewals: usize,
    /// Every capabilities declaration received, oldest first.
    pub capabilities: Vec<CapabilitiesRequest>,
    /// The agent binary `GET /agent/v1/release/{platform}` serves (404 without).
    pub release: Option<Vec<u8>>,
    pub release_downloads: usize,
}

pub struct Pki {
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    leaf_der: CertificateDer<'static>,
    leaf_key_der: Vec<u8>,
}

impl Pki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Pilothouse test agent CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        Self {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            issuer,
            leaf_der: leaf.der().clone(),
            leaf_key_der: leaf_key.serialize_der(),
        }
    }

    pub fn pin_hex(&self) -> String {
        agent::token::CaPin::of_der(&self.ca_der).to_hex()
    }

    fn issue(&self, csr_pem: &str, window: (i64, i64)) -> (String, i64) {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        csr.params.not_before = now - TDuration::minutes(window.0);
        csr.params.not_after = now + TDuration::minutes(window.1);
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = csr.signed_by(&self.issuer).unwrap();
        let not_after = csr.params.not_after.unix_timestamp() * 1000;
        (cert.pem(), not_after)
    }
}

pub struct Fake {
    pub pki: Pki,
    pub command_key: SigningKey,
    pub control_kem: KemSecretKey,
    pub state: Mutex<State>,
}

pub type Shared = Arc<Fake>;

pub fn fake() -> Shared {
    Arc::new(Fake {
        pki: Pki::new(),
        command_key: SigningKey::generate(),
        control_kem: KemSecretKey::generate(),
        state: Mutex::new(State {
            agent: None,
            queue: vec![],
            results: vec![],
            result_posts: 0,
            samples: vec![],
            tokens: vec![],
            token_calls: 0,
            switches: Switches::default(),
            handshakes: vec![],
            next_sequence: 1,
            next_id: 0,
            cert_window: (1, 24 * 60),
            renewals: 0,
            capabilities: vec![],
            release: None,
            release_downloads: 0,
        }),
    })
}

impl Fake {
    pub fn token(&self) -> String {
        format!("pht1_{TOKEN_SECRET}_{}", self.pki.pin_hex())
    }

    /// Queues a command of `kind`: sealed if the agent has a KEM key, else signed.
    pub fn queue(&self, kind: &str) -> String {
        self.queue_cmd(kind, false, None).0
    }

    /// Queues a signed-only command even if the agent has a KEM key.
    pub fn queue_signed(&self, kind: &str) -> String {
        self.queue_cmd(kind, true, None).0
    }

    /// Queues a command; `sequence` overrides the next sequence number.
    pub fn queue_cmd(
        &self,
        kind: &str,
        force_signed: bool,
        sequence: Option<u64>,
    ) -> (String, DeliveredCommand) {
        self.queue_payload(kind, b"{}", force_signed, sequence)
    }

    /// Queues a command with `payload` as its arguments.
    pub fn queue_payload(
        &self,
        kind: &str,
        payload: &[u8],
        force_signed: bool,
        sequence: Option<u64>,
    ) -> (String, DeliveredCommand) {
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let id = format!("cmd-{}", st.next_id);
        let seq = sequence.unwrap_or(st.next_sequence);
        st.next_sequence = st.next_sequence.max(seq + 1);
        let now = agent::now_ms();
        let header = CommandHeader {
            agent_id: AGENT_ID.into(),
            command_id: id.clone(),
            sequence: seq,
            issued_at: now,
            expires_at: now + 300_000,
            kind: kind.into(),
            operation: None,
        };
        let kem = st
            .agent
            .as_ref()
            .unwrap()
            .kem
            .clone()
            .filter(|_| !force_signed);
        let cmd = match kem {
            Some(kem) => DeliveredCommand::Sealed {
                envelope: channel::seal_command(
                    &header,
                    payload,
                    &kem,
                    &self.command_key,
                    &mut channel::os_rng(),
                )
                .unwrap(),
            },
            None => DeliveredCommand::Signed {
                envelope: channel::sign_command(&header, payload, &self.command_key).unwrap(),
            },
        };
        st.queue.push(cmd.clone());
        (id, cmd)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

/// A running fake server; `stop` closes the listener and every connection.
pub struct Server {
    pub addr: SocketAddr,
    handles: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn stop(&self) {
        for h in self.handles.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn server_config(fake: &Fake) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(fake.pki.ca_der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![fake.pki.leaf_der.clone(), fake.pki.ca_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(fake.pki.leaf_key_der.clone())),
        )
        .unwrap()
}

/// Serves `fake` on `addr` (port 0 for a fresh one).
pub async fn serve(fake: Shared, addr: SocketAddr) -> Server {
    // A restarted server takes the port of the stopped one, once it is released.
    let mut tries = 0;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    };
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&fake)));
    let handles: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
    let conn_handles = handles.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let fake = fake.clone();
            let task = tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let peer = conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec());
                if let (Some(v), Some(g)) = (
                    conn.protocol_version(),
                    conn.negotiated_key_exchange_group(),
                ) {
                    fake.with(|s| s.handshakes.push((v, g.name())));
                }
                let svc = hyper::service::service_fn(move |req| {
                    let fake = fake.clone();
                    let peer = peer.clone();
                    async move { Ok::<_, Infallible>(route(&fake, peer, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
            conn_handles.lock().unwrap().push(task.abort_handle());
        }
    });
    handles.lock().unwrap().push(accept.abort_handle());
    Server { addr, handles }
}

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

fn error(status: u16, reason: &str) -> Response<Full<Bytes>> {
    reply(status, serde_json::json!({ "error": reason }).to_string())
}

fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    reply(200, serde_json::to_vec(value).unwrap())
}

async fn route(
    fake: &Fake,
    peer: Option<Vec<u8>>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if path == "/agent/v1/enrol" {
        return enrol(fake, &body);
    }
    // Everything else: mutual TLS with the agent's current certificate.
    let current = fake.with(|s| s.agent.as_ref().map(|a| a.client_cert.clone()));
    if peer.is_none() || peer != current {
        return error(401, "unknown client certificate");
    }
    if path == "/agent/v1/token" {
        return fake.with(|s| {
            s.token_calls += 1;
            s.switches.forget_tokens = false;
            let t = format!("jwt-{}", s.token_calls);
            s.tokens.push(t.clone());
            json(&TokenResponse {
                token: t,
                expires_in_secs: 300,
            })
        });
    }
    let token_ok = fake.with(|s| {
        if s.switches.forget_tokens {
            s.tokens.clear();
        }
        bearer.is_some_and(|b| s.tokens.contains(&b))
    });
    if !token_ok {
        return error(401, "invalid token");
    }
    match path.as_str() {
        "/agent/v1/poll" => {
            let _: PollRequest = serde_json::from_slice(&body).unwrap();
            fake.with(|s| {
                json(&PollResponse {
                    commands: s.queue.clone(),
                })
            })
        }
        "/agent/v1/result" => {
            let req: ResultRequest = serde_json::from_slice(&body).unwrap();
            fake.with(|s| {
                s.result_posts += 1;
                if let Some(code) = s.switches.result_status {
                    return error(code, "result store unavailable");
                }
                if s.switches.refuse_results > 0 {
                    s.switches.refuse_results -= 1;
                    return error(413, "the result is too large");
                }
                let signer = s.agent.as_ref().unwrap().identity.clone();
                let opened = match channel::open_result(
                    &req.result,
                    AGENT_ID,
                    &fake.control_kem,
                    &signer,
                    agent::now_ms(),
                ) {
                    Ok(o) => o,
                    Err(e) => return error(400, &format!("result refused: {e}")),
                };
                let id = opened.header().command_id.clone();
                s.queue.retain(|c| c.header().command_id != id);
                s.results.push(Received {
                    command_id: id,
                    status: opened.header().status,
                    output: String::from_utf8(opened.output().to_vec()).unwrap(),
                    signer,
                });
                reply(204, "")
            })
        }
        "/agent/v1/capabilities" => {
            let req: channel::api::CapabilitiesRequest = serde_json::from_slice(&body).unwrap();
            req.capabilities.check().unwrap();
            fake.with(|s| s.capabilities.push(req));
            reply(204, "")
        }
        p if p.starts_with(RELEASE_DOWNLOAD_PREFIX) && method == hyper::Method::GET => {
            let platform = &p[RELEASE_DOWNLOAD_PREFIX.len()..];
            fake.with(|s| {
                s.release_downloads += 1;
                match &s.release {
                    Some(bytes) if platform == channel::release::current_platform() => {
                        Response::builder()
                            .status(StatusCode::OK)
                            .header("content-type", "application/octet-stream")
                            .body(Full::new(Bytes::from(bytes.clone())))
                            .unwrap()
                    }
                    _ => Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .header("content-type", "text/plain; charset=utf-8")
                        .body(Full::new(Bytes::from(format!(
                            "no agent release for {platform} is published"
                        ))))
                        .unwrap(),
                }
            })
        }
        "/agent/v1/metrics" => {
            let batch: MetricsBatch = serde_json::from_slice(&body).unwrap();
            fake.with(|s| {
                if let Some(code) = s.switches.metrics_status {
                    return error(code, "metrics store unavailable");
                }
                assert!(batch.samples.len() <= MAX_BATCH_SAMPLES);
                let n = batch.samples.len();
                s.samples.extend(batch.samples);
                reply(200, serde_json::json!({ "accepted": n }).to_string())
            })
        }
        "/agent/v1/keys" => {
            let req: KeysRequest = serde_json::from_slice(&body).unwrap();
            keys(fake, req)
        }
        "/agent/v1/renew" => {
            let req: RenewRequest = serde_json::from_slice(&body).unwrap();
            // As the real control plane does: the CSR must be signed by the
            // agent's identity key.
            let identity = fake.with(|s| s.agent.as_ref().unwrap().identity.clone());
            if channel::verify_renewal(
                &req.renewal,
                &req.csr_pem,
                AGENT_ID,
                &identity,
                agent::now_ms(),
            )
            .is_err()
            {
                return error(400, "the renewal is not signed by the agent's identity key");
            }
            let window = fake.with(|s| s.cert_window);
            let (pem, not_after) = fake.pki.issue(&req.csr_pem, window);
            fake.with(|s| {
                s.renewals += 1;
                s.agent.as_mut().unwrap().client_cert = der_of(&pem);
            });
            json(&RenewResponse {
                client_cert_pem: pem,
                cert_not_after: not_after,
            })
        }
        _ => error(404, "no such route"),
    }
}

fn der_of(pem: &str) -> Vec<u8> {
    agent::pki::first_cert_der(pem).unwrap().to_vec()
}

fn enrol(fake: &Fake, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(req) = serde_json::from_slice::<EnrolRequest>(body) else {
        return error(400, "malformed enrolment");
    };
    if req.token != fake.token() {
        return error(401, "unknown registration token");
    }
    if fake.with(|s| s.agent.is_some()) {
        return error(409, "registration token already used");
    }
    let window = fake.with(|s| s.cert_window);
    let (pem, not_after) = fake.pki.issue(&req.csr_pem, window);
    fake.with(|s| {
        s.agent = Some(Agent {
            identity: req.identity_key.clone(),
            kem: req.kem_key.clone(),
            client_cert: der_of(&pem),
        })
    });
    json(&EnrolResponse {
        agent_id: AGENT_ID.into(),
        client_cert_pem: pem,
        ca_cert_pem: fake.pki.ca_pem.clone(),
        cert_not_after: not_after,
        command_verifying_key: fake.command_key.verifying_key().clone(),
        control_kem_key: fake.control_kem.public_key().clone(),
    })
}

fn keys(fake: &Fake, req: KeysRequest) -> Response<Full<Bytes>> {
    let current = fake.with(|s| s.agent.as_ref().unwrap().identity.clone());
    let verified = match channel::verify_registration(
        &req.registration,
        AGENT_ID,
        &current,
        agent::now_ms(),
    ) {
        Ok(v) => v.into_inner(),
        Err(e) => return error(400, &format!("registration refused: {e}")),
    };
    let fingerprint = req.csr_pem.as_deref().map(agent::pki::csr_fingerprint);
    if verified.tls_cert_fingerprint != fingerprint {
        return error(400, "CSR does not match the registration");
    }
    let window = fake.with(|s| s.cert_window);
    let issued = req.csr_pem.map(|csr| fake.pki.issue(&csr, window));
    fake.with(|s| {
        let a = s.agent.as_mut().unwrap();
        a.identity = verified.identity_key.clone();
        a.kem = Some(verified.kem_public_key.clone());
        if let Some((pem, _)) = &issued {
            a.client_cert = der_of(pem);
        }
    });
    json(&KeysResponse {
        cert_not_after: issued.as_ref().map(|(_, n)| *n),
        client_cert_pem: issued.map(|(p, _)| p),
    })
}
