//! Fills an etcd with Kubernetes-like data until its database reaches a target size:
//! objects under `/registry/<resource>/<namespace>/<name>` with protobuf-looking values of
//! 1–12 KiB (compressible like real ones), each object written a few times so history
//! accumulates, as it does in a live cluster. Used by `make bench` and `make demo`.
//!
//! ```text
//! cargo run --release --example load_kubernetes -- --endpoint http://127.0.0.1:2379 \
//!     --target-bytes 1073741824
//! ```
//!
//! The shape can be changed (`make bench` uses three): `--objects N` writes N objects per
//! round (default 20,000, plus 1,000 more each round), `--rounds N` stops after N rounds
//! (1: one revision per object, as in a busy cluster after compaction), and
//! `--value-min`/`--value-max` set the value sizes in bytes (default 1024–12288).

use std::sync::Arc;
use std::time::Instant;

use etcd_client::{Client, TxnOp};
use tokio::sync::Semaphore;

const RESOURCES: &[&str] = &[
    "pods",
    "configmaps",
    "secrets",
    "events",
    "deployments",
    "replicasets",
    "services/specs",
    "endpointslices",
    "serviceaccounts",
    "leases",
];

struct Args {
    endpoint: String,
    target_bytes: u64,
    namespaces: usize,
    max_keys: u64,
    objects: Option<u64>,
    rounds: u64,
    value_min: usize,
    value_max: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        endpoint: "http://127.0.0.1:2379".into(),
        target_bytes: 64 << 20,
        namespaces: 40,
        max_keys: u64::MAX,
        objects: None,
        rounds: u64::MAX,
        value_min: 1024,
        value_max: 12 * 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint" => args.endpoint = value()?,
            "--target-bytes" => args.target_bytes = value()?.parse().map_err(|e| format!("{e}"))?,
            "--namespaces" => args.namespaces = value()?.parse().map_err(|e| format!("{e}"))?,
            "--max-keys" => args.max_keys = value()?.parse().map_err(|e| format!("{e}"))?,
            "--objects" => args.objects = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--rounds" => args.rounds = value()?.parse().map_err(|e| format!("{e}"))?,
            "--value-min" => args.value_min = value()?.parse().map_err(|e| format!("{e}"))?,
            "--value-max" => args.value_max = value()?.parse().map_err(|e| format!("{e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.value_min == 0 || args.value_max < args.value_min {
        return Err("--value-min must be at least 1 and at most --value-max".into());
    }
    Ok(args)
}

/// A small deterministic generator (xorshift), so runs are repeatable.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A value shaped like a Kubernetes protobuf object: the `k8s\0` magic and a
/// `runtime.Unknown` whose `raw` holds an `ObjectMeta` (name, namespace, uid,
/// creationTimestamp, labels) and then a body of repeated field names and a share of
/// random ids, so it compresses about as well as real objects and `lifeboat objects`
/// reads real metadata from it.
fn object_value(
    noise: &mut Noise,
    sizes: (usize, usize),
    resource: &str,
    ns: &str,
    name: &str,
    generation: u64,
) -> Vec<u8> {
    let (min, max) = sizes;
    let size = min + (noise.next() % (max - min + 1) as u64) as usize;
    let uid = format!("{:016x}-{:08x}", noise.next(), noise.next() as u32);
    let mut meta = Vec::new();
    field(&mut meta, 1, name.as_bytes());
    field(&mut meta, 3, ns.as_bytes());
    field(&mut meta, 5, uid.as_bytes());
    let mut time = vec![0x08];
    varint(&mut time, 1_764_000_000 + generation);
    field(&mut meta, 8, &time);
    for (k, v) in [
        ("app.kubernetes.io/name", name),
        ("app.kubernetes.io/part-of", resource),
    ] {
        let mut entry = Vec::new();
        field(&mut entry, 1, k.as_bytes());
        field(&mut entry, 2, v.as_bytes());
        field(&mut meta, 11, &entry);
    }
    let mut body = Vec::with_capacity(size);
    while body.len() + meta.len() + 32 < size {
        // Field names and templates repeat (as in real objects); ids, timestamps and
        // Secret-like data do not. Tuned to compress about 4x with zstd -3, close to
        // what Kubernetes' protobuf objects do.
        match noise.next() % 6 {
            0 => body.extend_from_slice(format!("{:016x}", noise.next()).as_bytes()),
            1 | 2 => {
                for _ in 0..3 {
                    body.extend_from_slice(&noise.next().to_le_bytes());
                }
            }
            3 => body.extend_from_slice(
                b" managedFields: manager=kube-controller-manager operation=Update ",
            ),
            4 => body.extend_from_slice(
                b" spec: containers: image=registry.example/app:1.2.3 resources: limits: cpu=500m memory=256Mi ",
            ),
            _ => body.extend_from_slice(
                format!(
                    " status: conditions: type=Ready status=True lastTransitionTime={} ",
                    noise.next() % 1_000_000_000
                )
                .as_bytes(),
            ),
        }
    }
    let mut raw = Vec::with_capacity(size);
    field(&mut raw, 1, &meta);
    field(&mut raw, 2, &body);
    let mut v = Vec::with_capacity(size + 32);
    v.extend_from_slice(b"k8s\0\n\x0b\n\x02v1\x12\x05Other");
    field(&mut v, 2, &raw);
    v
}

/// A length-delimited protobuf field.
fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    varint(out, number << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("load_kubernetes: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("load_kubernetes: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), etcd_client::Error> {
    let client = Client::connect([args.endpoint.as_str()], None).await?;
    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(16));
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let objects_per_round = 20_000u64;
    let mut written = 0u64;
    let mut round = 0u64;
    let mut maintenance = client.maintenance_client();
    'outer: loop {
        // Each round rewrites the same objects (new revisions) and adds a few new ones.
        let objects = args.objects.unwrap_or(objects_per_round + round * 1000);
        let mut batch = Vec::with_capacity(64);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..objects {
            if written >= args.max_keys {
                break;
            }
            let resource = RESOURCES[(i % RESOURCES.len() as u64) as usize];
            let ns = format!("team-{:02}", (i / 7) % args.namespaces as u64);
            let name = format!("{}-{i:06}", resource.replace('/', "-"));
            let key = format!("/registry/{resource}/{ns}/{name}");
            batch.push(TxnOp::put(
                key,
                object_value(
                    &mut noise,
                    (args.value_min, args.value_max),
                    resource,
                    &ns,
                    &name,
                    round,
                ),
                None,
            ));
            written += 1;
            if batch.len() == 64 {
                let ops = std::mem::take(&mut batch);
                let permit = in_flight
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore open");
                let mut kv = client.kv_client();
                tasks.spawn(async move {
                    let r = kv.txn(etcd_client::Txn::new().and_then(ops)).await;
                    drop(permit);
                    r.map(|_| ())
                });
            }
            while let Some(done) = tasks.try_join_next() {
                done.expect("task")?;
            }
        }
        if !batch.is_empty() {
            client
                .kv_client()
                .txn(etcd_client::Txn::new().and_then(batch))
                .await?;
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task")?;
        }
        let status = maintenance.status().await?;
        let db = status.db_size() as u64;
        eprintln!(
            "round {round}: {written} writes, db {:.1} MiB, {:.0}s",
            db as f64 / 1048576.0,
            started.elapsed().as_secs_f64()
        );
        round += 1;
        if db >= args.target_bytes || written >= args.max_keys || round >= args.rounds {
            break 'outer;
        }
    }
    println!("{written}");
    Ok(())
}
