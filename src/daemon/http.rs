//! `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics::{Metrics, age};

/// What the endpoint reads.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub max_age: Duration,
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&req, &shared)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // Probes and scrapes are short; a client that hangs is dropped.
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

fn route(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let now = chrono::Utc::now();
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let (code, text) = readiness(shared, now);
            reply(code, "text/plain", text)
        }
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render(now),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

/// Ready while the newest backup in storage is younger than max-age.
pub fn readiness(shared: &Shared, now: chrono::DateTime<chrono::Utc>) -> (StatusCode, String) {
    let max = shared.max_age.as_secs_f64();
    if let Some(reason) = shared.metrics.changes().and_then(|c| c.broken) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the change log is broken ({reason}); a new chain starts from a new full backup\n"
            ),
        );
    }
    match shared.metrics.newest() {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no backup in storage yet\n".into(),
        ),
        Some(n) => {
            let a = age(n.finished_at, now);
            if a <= max {
                (
                    StatusCode::OK,
                    format!(
                        "ok: newest backup {} is {a:.0} s old (max-age {max:.0} s)\n",
                        n.id
                    ),
                )
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "not ready: newest backup {} is {a:.0} s old, more than max-age {max:.0} s\n",
                        n.id
                    ),
                )
            }
        }
    }
}

fn reply(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
