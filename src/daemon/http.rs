//! `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1, and `POST /backup` when it
//! is switched on ([`super::on_demand`]).

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
use super::on_demand::{Outcome, Trigger};

/// What the endpoint reads.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub max_age: Duration,
    /// `POST /backup`, when switched on.
    pub trigger: Option<Trigger>,
}

/// A connection carries one request. Its headers must come within this time...
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// ...and the whole exchange, a `POST /backup` of a large database included, within this.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

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
                async move { Ok::<_, Infallible>(route(&req, &shared).await) }
            });
            // A client that sends no request in time is dropped; one request per
            // connection, so none is held open idle.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, conn).await;
        });
    }
}

async fn route(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let now = chrono::Utc::now();
    match req.uri().path() {
        "/backup" => backup(req, shared).await,
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
            "not found: try /healthz, /readyz, /metrics or POST /backup\n".into(),
        ),
    }
}

/// `POST /backup`: 200 with the committed backup's id, 401 without the token, 409 from
/// a daemon that does not lead (naming the one that does), 500 when the backup failed.
async fn backup(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let json = "application/json";
    let Some(trigger) = &shared.trigger else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: POST /backup is off; set [daemon] backup-token-file to switch it on\n"
                .into(),
        );
    };
    if req.method() != hyper::Method::POST {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST /backup\n".into(),
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("POST"),
        );
        return r;
    }
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !trigger.authorized(auth) {
        tracing::warn!("POST /backup refused: no or a wrong bearer token");
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            json,
            error_body(
                "a bearer token is needed: Authorization: Bearer <the token>",
                None,
            ),
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if trigger.requests.send(tx).await.is_err() {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json,
            error_body("the daemon is shutting down", None),
        );
    }
    match rx.await.unwrap_or(Outcome::ShuttingDown) {
        Outcome::Committed { id, revision } => reply(
            StatusCode::OK,
            json,
            serde_json::json!({ "backup": id, "revision": revision }).to_string() + "\n",
        ),
        Outcome::Failed(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json,
            error_body(&format!("the backup failed: {e}"), None),
        ),
        Outcome::NotLeader(leader) => reply(
            StatusCode::CONFLICT,
            json,
            error_body(
                "this daemon does not lead: ask the leader (it takes the backups)",
                Some(leader.as_deref().unwrap_or("unknown")),
            ),
        ),
        Outcome::ShuttingDown => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json,
            error_body("the daemon is shutting down", None),
        ),
    }
}

fn error_body(error: &str, leader: Option<&str>) -> String {
    let mut v = serde_json::json!({ "error": error });
    if let Some(l) = leader {
        v["leader"] = l.into();
    }
    v.to_string() + "\n"
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
