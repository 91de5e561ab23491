//! The HTTP server under limits: hyper's HTTP/1 connection with a header-read timeout, a
//! request timeout (tower-http), and a bounded number of connections.
//!
//! Why not `axum::serve`: it sets no timer (so no header-read timeout: an idle or half-sent
//! connection stays open for ever), takes every connection it can, and answers running out of
//! file descriptors by logging an error and sleeping a second while every open connection keeps
//! its descriptor. Here each connection holds a slot (a semaphore permit, taken before the TLS
//! handshake); when the slots or the descriptors run out, the connection idle the longest is
//! closed through hyper's graceful shutdown (at once when it waits for a request, after its
//! answer otherwise), so a flood of idle connections cannot keep a scraper out.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// Upper bound of `server.max_connections` (a typo guard, not a tuning advice).
pub const MAX_CONNECTIONS_CEILING: usize = 65_536;

/// The `server:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// A request's head must be complete this long after the connection opened or the previous
    /// answer was sent (hyper's `header_read_timeout`); so it is also the idle timeout of a
    /// kept-alive connection, and the TLS handshake's limit.
    pub header_read_timeout: Duration,
    /// The whole request, body included, must be handled within this (else 408).
    pub request_timeout: Duration,
    /// Connections served at once; beyond it the one idle the longest is closed.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            // Half the usual 1024 descriptors: the rest is for the store, the upstream clients
            // and the OTLP exporter.
            max_connections: 512,
        }
    }
}

/// One open connection, as the accept loop sees it.
struct Conn {
    /// Requests being answered.
    busy: AtomicUsize,
    /// Milliseconds since the server started, of the accept or the last request's end.
    last_active: AtomicU64,
    /// Asked to close already (so the next eviction picks another).
    closing: AtomicBool,
    close: Notify,
}

/// The open connections, to choose which one to close when there is no room.
struct Registry {
    start: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let c = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now_ms()),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(id, c.clone());
        (id, c)
    }

    fn remove(&self, id: u64) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Ask the connection idle the longest (else the oldest busy one) to close. False when
    /// every connection is closing already.
    fn evict_one(&self) -> bool {
        let g = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let pick = g
            .values()
            .filter(|c| !c.closing.load(Ordering::Relaxed))
            .min_by_key(|c| (c.busy.load(Ordering::Relaxed) > 0, c.last_active.load(Ordering::Relaxed)));
        match pick {
            Some(c) => {
                c.closing.store(true, Ordering::Relaxed);
                // notify_one stores a permit: a connection not yet waiting still sees it.
                c.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn close_all(&self) {
        for c in self.conns.lock().unwrap_or_else(|e| e.into_inner()).values() {
            c.closing.store(true, Ordering::Relaxed);
            c.close.notify_one();
        }
    }
}

/// Counts a request on its connection for as long as it runs (also when it is cancelled).
struct Busy<'a>(&'a Conn, &'a Registry);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.last_active.store(self.1.now_ms(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serve `app` on `tcp` (TLS when `tls` is set) within `limits` until `shutdown` resolves; then
/// stop accepting, close idle connections and let the others finish their answer.
pub async fn serve(
    tcp: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = app.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let registry =
        Arc::new(Registry { start: Instant::now(), next_id: AtomicU64::new(0), conns: Mutex::new(HashMap::new()) });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let builder = Arc::new(builder);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    let mut accept_errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            r = tcp.accept() => r,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            // The peer gave up before we took it: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            // Out of descriptors (EMFILE/ENFILE) and the like: free one by closing the idlest
            // connection, and wait a moment instead of spinning on the error.
            Err(e) => {
                registry.evict_one();
                accept_errors.note(&e);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Full: make room by closing the connection idle the longest. An idle one closes at
                // once; a busy one after its answer (bounded by the request timeout).
                registry.evict_one();
                match tokio::time::timeout(limits.request_timeout, slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        tracing::debug!(%peer, "no connection slot freed in time; closing the new connection");
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, conn) = registry.add();
        let (registry, builder, app, tls, mut stop) =
            (registry.clone(), builder.clone(), app.clone(), tls.clone(), stop_rx.clone());
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_conn(stream, peer, &builder, app, &conn, &registry, &mut stop).await,
                Some(acceptor) => {
                    let hs = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
                    let done = tokio::select! {
                        r = hs => match r {
                            Ok(Ok(tls)) => Some(tls),
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                None
                            }
                        },
                        _ = conn.close.notified() => None,
                        _ = stopped(&mut stop) => None,
                    };
                    if let Some(tls) = done {
                        serve_conn(tls, peer, &builder, app, &conn, &registry, &mut stop).await;
                    }
                }
            }
            registry.remove(id);
        });
    }
    // Stop: idle connections close now, busy ones after their answer (the request timeout
    // bounds that).
    let _ = stop_tx.send(true);
    registry.close_all();
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.request_timeout, slots.acquire_many(all)).await;
}

async fn serve_conn<I>(
    io: I,
    peer: std::net::SocketAddr,
    builder: &hyper::server::conn::http1::Builder,
    app: Router,
    conn: &Arc<Conn>,
    registry: &Arc<Registry>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (c, r) = (conn.clone(), registry.clone());
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (c, r) = (c.clone(), r.clone());
        let mut app = app.clone();
        async move {
            c.busy.fetch_add(1, Ordering::Relaxed);
            let _busy = Busy(&c, &r);
            let mut req = req.map(axum::body::Body::new);
            // The client's address, for basic auth's per-client limit on failed attempts.
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            tower::Service::call(&mut app, req).await
        }
    });
    let served = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    let mut asked = false;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = conn.close.notified(), if !asked => {
                asked = true;
                served.as_mut().graceful_shutdown();
            }
            _ = stopped(stop), if !asked => {
                asked = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; it must not live across an await.
    let _ = stop.wait_for(|s| *s).await.is_ok();
}

/// `accept` errors that concern one connection only (the peer reset it while queued).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted)
}

/// Logs accept failures at most every 10 s, with how many there were, so running out of
/// descriptors is visible without a line per attempt.
#[derive(Default)]
struct AcceptErrors {
    last_log: Option<Instant>,
    since: u64,
}

impl AcceptErrors {
    fn note(&mut self, e: &std::io::Error) {
        self.since += 1;
        if self.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(error = %e, failures = self.since, "accept failed; closing the idlest connection to make room");
            self.last_log = Some(Instant::now());
            self.since = 0;
        }
    }
}
