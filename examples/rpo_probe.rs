//! Measures the change log's RPO: writes at a fixed rate for a while, notes when etcd
//! acknowledged each write (its revision), polls a recording daemon's
//! `lifeboat_changes_durable_revision` every 10 ms, and reports per write the time from
//! the acknowledgement to the first poll that saw it durable in storage: p50, p99, max.
//! Used by `make bench` (the `changes` step).
//!
//! ```text
//! cargo run --release --example rpo_probe -- --endpoint http://127.0.0.1:2379 \
//!     --metrics http://127.0.0.1:9479/metrics --rate 1000 --seconds 30
//! ```
//! Prints one JSON line.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::sync::Mutex;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

async fn durable(http: &str) -> Option<i64> {
    // A tiny HTTP/1.0 GET, to keep the probe free of an HTTP client.
    let rest = http.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("lifeboat_changes_durable_revision "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = arg(&args, "--endpoint").unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let metrics = arg(&args, "--metrics").unwrap_or_else(|| "http://127.0.0.1:9479/metrics".into());
    let rate: u64 = arg(&args, "--rate")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seconds: u64 = arg(&args, "--seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    // With --writes N, the writers stop after N writes in total (or `seconds`).
    let limit: u64 = arg(&args, "--writes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let writers: u64 = arg(&args, "--writers")
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);

    // The poller: (time, durable revision) every 10 ms.
    let seen: Arc<Mutex<Vec<(Instant, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicI64::new(0));
    let poller = {
        let (seen, stop, metrics) = (seen.clone(), stop.clone(), metrics.clone());
        tokio::spawn(async move {
            while stop.load(Ordering::SeqCst) == 0 {
                if let Some(r) = durable(&metrics).await {
                    seen.lock().await.push((Instant::now(), r));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // The writers: `rate` puts per second in total, each noting (ack time, revision).
    let acks: Arc<Mutex<Vec<(Instant, i64)>>> = Arc::default();
    let issued = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t0 = Instant::now();
    let per_writer = Duration::from_secs_f64(writers as f64 / rate as f64);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (endpoint, acks, issued) = (endpoint.clone(), acks.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect([endpoint], None).await.expect("connect");
            let mut tick = tokio::time::interval(per_writer);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut i = 0u64;
            while t0.elapsed() < Duration::from_secs(seconds)
                && issued.fetch_add(1, Ordering::SeqCst) < limit
            {
                tick.tick().await;
                let key = format!("/registry/configmaps/rpo/w{w}-{}", i % 200);
                let value = vec![b'x'; 512];
                if let Ok(r) = c.put(key, value, None).await
                    && let Some(h) = r.header()
                {
                    acks.lock().await.push((Instant::now(), h.revision()));
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let written = t0.elapsed().as_secs_f64();
    let last = acks.lock().await.iter().map(|a| a.1).max().unwrap_or(0);
    // Wait until the last write is durable (at most 60 s more).
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().await.last().is_none_or(|s| s.1 < last) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(1, Ordering::SeqCst);
    let _ = poller.await;
    let seen = seen.lock().await.clone();
    let acks = acks.lock().await.clone();
    let mut delays: Vec<f64> = Vec::with_capacity(acks.len());
    let mut missing = 0u64;
    for (at, rev) in &acks {
        // The first poll at or after the ack that saw the revision durable.
        match seen.iter().find(|(t, r)| t >= at && *r >= *rev) {
            Some((t, _)) => delays.push(t.duration_since(*at).as_secs_f64()),
            None => missing += 1,
        }
    }
    delays.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{}",
        serde_json::json!({
            "writes": acks.len(),
            "writes_per_second": acks.len() as f64 / written,
            "p50_seconds": percentile(&delays, 0.50),
            "p99_seconds": percentile(&delays, 0.99),
            "max_seconds": delays.last().copied().unwrap_or(0.0),
            "never_durable": missing,
            "last_revision": last,
        })
    );
}
