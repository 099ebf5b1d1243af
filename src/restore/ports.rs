//! Whether a member's etcd is really stopped (step 4): only a refused connection counts,
//! never a name that does not resolve or a host that does not answer.

use std::time::{Duration, Instant};

/// What a connection attempt says about a member's port.
#[derive(Debug, PartialEq)]
enum PortState {
    /// It accepted: something still listens.
    Open,
    /// Refused by the host: nothing listens, the member is stopped.
    Closed,
    /// No answer either way (the name does not resolve, the host is unreachable, the
    /// attempt timed out): that is not "stopped".
    Unknown(String),
}

/// `host:port` of an http(s) URL.
fn url_address(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

async fn port_state(url: &str) -> PortState {
    let addr = url_address(url);
    let addrs = match tokio::net::lookup_host(addr).await {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return PortState::Unknown(format!("cannot resolve {addr:?}: {e}")),
    };
    if addrs.is_empty() {
        return PortState::Unknown(format!("cannot resolve {addr:?}: no address"));
    }
    // A name may give addresses this host cannot use at all (`localhost` as ::1 without
    // IPv6): those say nothing; another address's refusal does.
    let (mut refused, mut unknown, mut unusable) = (false, None, Vec::new());
    for a in addrs {
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(a)).await
        {
            Ok(Ok(_)) => return PortState::Open,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused = true,
            Ok(Err(e))
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT | libc::ENETUNREACH)
                ) =>
            {
                unusable.push(format!("{a}: {e}"));
            }
            Ok(Err(e)) => unknown = Some(format!("cannot connect to {a}: {e}")),
            Err(_) => unknown = Some(format!("cannot connect to {a}: no answer within 1 s")),
        }
    }
    match (unknown, refused) {
        (Some(reason), _) => PortState::Unknown(reason),
        (None, true) => PortState::Closed,
        (None, false) => PortState::Unknown(format!("cannot connect: {}", unusable.join(", "))),
    }
}

/// Waits until every URL refuses connections. A URL that cannot be resolved or reached
/// is not taken for stopped: when the limit is reached the step fails, saying so.
pub(super) async fn wait_closed(urls: &[String], limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let mut open = Vec::new();
        let mut unknown = Vec::new();
        for u in urls {
            match port_state(u).await {
                PortState::Closed => {}
                PortState::Open => open.push(u.as_str()),
                PortState::Unknown(reason) => unknown.push(format!("{u}: {reason}")),
            }
        }
        if open.is_empty() && unknown.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut why = Vec::new();
            if !open.is_empty() {
                why.push(format!(
                    "still answering after {} s: {} (is etcd really stopped?)",
                    limit.as_secs(),
                    open.join(", ")
                ));
            }
            if !unknown.is_empty() {
                why.push(format!(
                    "cannot tell whether etcd stopped, neither an answer nor a refusal: {} \
                     (check the URL and that this host can reach the member)",
                    unknown.join("; ")
                ));
            }
            return Err(why.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn only_a_refusal_counts_as_stopped() {
        let rt = rt();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = format!("http://{}", listener.local_addr().unwrap());
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/", l.local_addr().unwrap())
        };
        assert_eq!(rt.block_on(port_state(&closed)), PortState::Closed);
        assert_eq!(rt.block_on(port_state(&open)), PortState::Open);
        let limit = Duration::from_millis(300);
        assert!(
            rt.block_on(wait_closed(std::slice::from_ref(&closed), limit))
                .is_ok()
        );
        let e = rt
            .block_on(wait_closed(&[open.clone(), closed.clone()], limit))
            .unwrap_err();
        assert!(e.contains("still answering") && e.contains(&open), "{e}");
        // Addresses that neither answer nor refuse (here: no valid port, so they fail to
        // resolve without any DNS query). They used to pass as stopped.
        for bad in ["http://127.0.0.1:99999", "http://127.0.0.1"] {
            let e = rt
                .block_on(wait_closed(&[bad.to_string()], limit))
                .unwrap_err();
            assert!(
                e.contains("cannot tell") && e.contains("cannot resolve") && e.contains(bad),
                "{bad}: {e}"
            );
        }
        drop(listener);
    }
}
