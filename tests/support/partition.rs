//! A 3-member etcd cluster across two network namespaces, so one member can be cut off
//! from its peers for real while the other two keep quorum and keep writing, and while
//! clients can still reach the cut-off member.
//!
//! ```text
//!  host namespace                         namespace lbp-<pid>
//!  m0, m1: peers on 10.213.<n>.1          m2: peer 10.213.<n>.2  (veth "peer" pair)
//!          clients on 127.0.0.1               client 10.214.<n>.2 (veth "client" pair)
//! ```
//! [`PartitionedCluster::cut`] takes the host end of the peer pair down: m2 hears
//! nothing from m0/m1 (they still talk to each other through their local address), yet
//! stays reachable for clients through the client pair. Needs root (the tests run as
//! root, as CI does); anything else fails with the reason. Everything (processes,
//! namespace, links) is removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{self, kill_child, spawn_guarded};
use super::tools::EtcdVersion;

pub struct PartitionedCluster {
    pub version: EtcdVersion,
    ns: String,
    host_peer_link: String,
    host_client_link: String,
    children: Vec<Child>,
    /// Client URLs of m0, m1, m2.
    pub client_urls: Vec<String>,
    dir: tempfile::TempDir,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `ip` (Debian package iproute2) for the partition test: {e}")
    });
    assert!(
        out.status.success(),
        "`ip {}` failed (the partition test needs root to make network namespaces): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PartitionedCluster {
    pub fn start(version: EtcdVersion) -> PartitionedCluster {
        let etcd = version.etcd();
        let pid = std::process::id();
        let n = pid % 250 + 1;
        let ns = format!("lbp-{pid}");
        let (hp, np, hc, nc) = (
            format!("lbp{pid}h"),
            format!("lbp{pid}n"),
            format!("lbc{pid}h"),
            format!("lbc{pid}n"),
        );
        let (host_peer, ns_peer) = (format!("10.213.{n}.1"), format!("10.213.{n}.2"));
        let (host_client, ns_client) = (format!("10.214.{n}.1"), format!("10.214.{n}.2"));
        ip(&["netns", "add", &ns]);
        let mut me = PartitionedCluster {
            version,
            ns: ns.clone(),
            host_peer_link: hp.clone(),
            host_client_link: hc.clone(),
            children: Vec::new(),
            client_urls: Vec::new(),
            dir: process::owned_tempdir("etcd-partition"),
        };
        for (h, inner, host_ip, ns_ip) in [
            (&hp, &np, &host_peer, &ns_peer),
            (&hc, &nc, &host_client, &ns_client),
        ] {
            ip(&["link", "add", h, "type", "veth", "peer", "name", inner]);
            ip(&["link", "set", inner, "netns", &ns]);
            ip(&["addr", "add", &format!("{host_ip}/24"), "dev", h]);
            ip(&["link", "set", h, "up"]);
            ip(&[
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{ns_ip}/24"),
                "dev",
                inner,
            ]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", inner, "up"]);
        }
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);

        let ports = process::free_ports(4);
        let peer = [
            format!("http://{host_peer}:{}", ports[0]),
            format!("http://{host_peer}:{}", ports[1]),
            format!("http://{ns_peer}:2380"),
        ];
        me.client_urls = vec![
            format!("http://127.0.0.1:{}", ports[2]),
            format!("http://127.0.0.1:{}", ports[3]),
            format!("http://{ns_client}:2379"),
        ];
        let initial = (0..3)
            .map(|i| format!("m{i}={}", peer[i]))
            .collect::<Vec<_>>()
            .join(",");
        let token = process::unique_token("partition");
        for (i, peer_url) in peer.iter().enumerate() {
            let data = me.dir.path().join(format!("m{i}.etcd"));
            let log = me.dir.path().join(format!("m{i}.log"));
            let mut cmd = if i == 2 {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns]).arg(&etcd);
                c
            } else {
                Command::new(&etcd)
            };
            cmd.arg(format!("--name=m{i}"))
                .arg("--data-dir")
                .arg(&data)
                .arg(format!("--listen-client-urls={}", me.client_urls[i]))
                .arg(format!("--advertise-client-urls={}", me.client_urls[i]))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-state=new")
                .arg(format!("--initial-cluster-token={token}"))
                .args(["--logger=zap", "--log-outputs=stderr"]);
            let (out, err) = process::log_stdio(&log);
            cmd.stdin(Stdio::null()).stdout(out).stderr(err);
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("ETCD_") {
                    cmd.env_remove(k);
                }
            }
            me.children.push(spawn_guarded(cmd).expect("spawn etcd"));
        }
        me.wait_healthy(&[0, 1, 2], Duration::from_secs(60));
        me
    }

    /// `etcdctl` against the given members.
    pub fn etcdctl(&self, members: &[usize], args: &[&str]) -> std::process::Output {
        let endpoints: Vec<&str> = members
            .iter()
            .map(|&i| self.client_urls[i].as_str())
            .collect();
        let mut cmd = Command::new(self.version.etcdctl());
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg("--command-timeout=3s")
            .args(args);
        process::output_timeout(cmd, Duration::from_secs(30))
    }

    pub fn wait_healthy(&self, members: &[usize], limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ok = members
                .iter()
                .all(|&i| self.etcdctl(&[i], &["endpoint", "health"]).status.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "partitioned cluster not healthy: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Cuts m2 off from its peers (clients still reach it).
    pub fn cut(&self) {
        ip(&["link", "set", &self.host_peer_link, "down"]);
    }

    /// Heals the cut.
    pub fn heal(&self) {
        ip(&["link", "set", &self.host_peer_link, "up"]);
    }

    pub fn log_tail(&self) -> String {
        (0..3)
            .map(|i| {
                let p: PathBuf = self.dir.path().join(format!("m{i}.log"));
                format!("--- m{i}:\n{}", process::log_tail(&p, 15))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for PartitionedCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            kill_child(c);
        }
        for link in [&self.host_peer_link, &self.host_client_link] {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
