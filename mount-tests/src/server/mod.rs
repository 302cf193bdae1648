//! A local S3-compatible server for tests and benchmarks: s3s for HTTP, XML and SigV4, our own
//! storage, and knobs for latency, bandwidth, faults and counters. It runs on a runtime of its own,
//! so tests may block (run `cat`, wait on a mount) without starving it.

mod knobs;
mod s3_api;
mod storage;
mod throttle;
pub mod tls;

use knobs::RequestKind;
pub use knobs::{BodyFault, CounterSnapshot, Counters, FaultStatus, FaultTrigger, Knobs};
pub use storage::{Storage, StoredObject};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use throttle::Throttled;

/// Access key pair the server accepts; without one it serves anonymous (unsigned) requests only.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Self { access_key: "fetchfs-test-access".into(), secret_key: "fetchfs-test-secret-key".into() }
    }
}

pub struct ServerConfig {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    pub storage: Arc<Storage>,
    pub knobs: Arc<Knobs>,
    pub credentials: Option<Credentials>,
    /// Serve HTTPS with this configuration instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            port: 0,
            storage: Arc::new(Storage::in_memory()),
            knobs: Arc::new(Knobs::default()),
            credentials: Some(Credentials::default()),
            tls: None,
        }
    }
}

/// A running server. Dropping it (or `stop`) closes the listener and cuts every open connection at
/// once, as a killed process would.
pub struct TestServer {
    addr: SocketAddr,
    storage: Arc<Storage>,
    knobs: Arc<Knobs>,
    credentials: Option<Credentials>,
    https: bool,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Option<oneshot::Sender<()>>,
    /// Behind a mutex only so the server is `Sync` (tests share it between reader threads).
    stopped: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl TestServer {
    pub fn start(config: ServerConfig) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-s3-server")
            .enable_all()
            .build()?;
        // Bound with std and adopted under `enter`, so starting works inside another runtime too.
        let listener = std::net::TcpListener::bind(("127.0.0.1", config.port))?;
        listener.set_nonblocking(true)?;
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let addr = listener.local_addr()?;

        let mut builder =
            S3ServiceBuilder::new(s3_api::TestS3::new(Arc::clone(&config.storage), Arc::clone(&config.knobs)));
        if let Some(c) = &config.credentials {
            builder.set_auth(s3s::auth::SimpleAuth::from_single(c.access_key.as_str(), c.secret_key.as_str()));
        }
        let service = builder.build();
        let (shutdown, shutdown_rx) = oneshot::channel();
        let (stopped_tx, stopped) = std::sync::mpsc::channel();
        let knobs = Arc::clone(&config.knobs);
        let https = config.tls.is_some();
        let tls = config.tls.map(tokio_rustls::TlsAcceptor::from);
        runtime.spawn(async move {
            serve(listener, service, knobs, tls, shutdown_rx).await;
            let _ = stopped_tx.send(());
        });
        Ok(Self {
            addr,
            storage: config.storage,
            knobs: config.knobs,
            credentials: config.credentials,
            https,
            runtime: Some(runtime),
            shutdown: Some(shutdown),
            stopped: std::sync::Mutex::new(stopped),
        })
    }

    /// A server with default settings and one empty bucket.
    pub fn with_bucket(bucket: &str) -> Self {
        let server = Self::start(ServerConfig::default()).expect("start the test server");
        server.storage().create_bucket(bucket).expect("create the bucket");
        server
    }

    /// A server whose `bucket` holds `count` files under `dir/`, file i named `f{i:05}` and holding
    /// `data::content(i, size)`.
    pub fn with_files(bucket: &str, dir: &str, count: u64, size: usize) -> Self {
        let server = Self::with_bucket(bucket);
        for i in 0..count {
            let object = StoredObject::new(crate::data::content(i, size), None);
            server.storage().put(bucket, &format!("{dir}/f{i:05}"), object).expect("put");
        }
        server
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn knobs(&self) -> &Arc<Knobs> {
        &self.knobs
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Stops serving, cutting open connections; the port is free again when this returns.
    /// Safe to call from async code too (it waits on a plain channel, not on the runtime).
    pub fn stop(mut self) {
        if let Some(tx) = self.shutdown.take()
            && tx.send(()).is_ok()
        {
            let stopped = self.stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let _ = stopped.recv_timeout(std::time::Duration::from_secs(5));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn serve(
    listener: TcpListener,
    service: s3s::service::S3Service,
    knobs: Arc<Knobs>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: oneshot::Receiver<()>,
) {
    let http = ConnBuilder::new(TokioExecutor::new());
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
            _ = &mut stopped => {
                // Cut every connection mid-response, as a killed server would, before the
                // listener closes on return.
                connections.shutdown().await;
                return;
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        knobs.counters().count_connection();
        let _ = stream.set_nodelay(true);
        let io = Throttled::new(stream, Arc::clone(&knobs));
        let service = service.clone();
        let knobs = Arc::clone(&knobs);
        let (http, tls) = (http.clone(), tls.clone());
        connections.spawn(async move {
            let handler = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let service = service.clone();
                let knobs = Arc::clone(&knobs);
                async move { faults::answer(req, &service, &knobs).await }
            });
            let served = match tls {
                Some(acceptor) => match acceptor.accept(io).await {
                    Ok(tls_io) => http.serve_connection(TokioIo::new(tls_io), handler).await,
                    Err(e) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                },
                None => http.serve_connection(TokioIo::new(io), handler).await,
            };
            if let Err(e) = served {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

mod faults {
    //! The request-level knobs: the delay before the first byte and injected error statuses.

    use super::throttle::TIMER_TICK;
    use super::*;
    use s3s::{Body, HttpError, HttpResponse};
    use std::time::Duration;

    pub async fn answer(
        req: http::Request<hyper::body::Incoming>,
        service: &s3s::service::S3Service,
        knobs: &Knobs,
    ) -> Result<HttpResponse, HttpError> {
        let delay = knobs.first_byte_delay();
        if !delay.is_zero() {
            precise_sleep(delay).await;
        }
        let part_upload = req.method() == http::Method::PUT
            && req.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("partNumber=")));
        let kind = match *req.method() {
            _ if part_upload => RequestKind::PartUpload,
            http::Method::DELETE if req.uri().query().is_none_or(|q| !q.contains("uploadId=")) => RequestKind::Delete,
            http::Method::PUT if !req.headers().contains_key("x-amz-copy-source") => RequestKind::Put,
            _ => RequestKind::Other,
        };
        if let Some(status) = knobs.admit_request(kind) {
            knobs.counters().count_injected_fault();
            return Ok(error_response(status));
        }
        if part_upload && knobs.take_part_reset() {
            knobs.counters().count_injected_fault();
            // An error from the service makes hyper close the connection without an answer.
            return Err(HttpError::new(Box::new(std::io::Error::other("injected connection reset"))));
        }
        service.call(req.map(Body::from)).await
    }

    /// Sleeps for `delay` to within a tenth of a millisecond. tokio's timer rounds every deadline
    /// up to its next millisecond tick, which made a 10 ms profile answer after 11 ms: the last
    /// stretch is slept on a blocking thread, whose `nanosleep` is that precise.
    async fn precise_sleep(delay: Duration) {
        let deadline = std::time::Instant::now() + delay;
        if let Some(coarse) = delay.checked_sub(TIMER_TICK * 2) {
            tokio::time::sleep(coarse).await;
        }
        let rest = deadline.saturating_duration_since(std::time::Instant::now());
        if tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await.is_err() {
            tracing::warn!("the first-byte delay's thread ended early");
        }
    }

    fn error_response(status: FaultStatus) -> HttpResponse {
        let (code, http_status, message) = match status {
            FaultStatus::SlowDown => {
                ("SlowDown", http::StatusCode::SERVICE_UNAVAILABLE, "Please reduce your request rate.")
            }
            FaultStatus::InternalError => (
                "InternalError",
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "We encountered an internal error. Please try again.",
            ),
            FaultStatus::InvalidObjectState => (
                "InvalidObjectState",
                http::StatusCode::FORBIDDEN,
                "The operation is not valid for the object's storage class",
            ),
        };
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        );
        let mut response = http::Response::new(Body::from(xml));
        *response.status_mut() = http_status;
        response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/xml"));
        response
    }
}
