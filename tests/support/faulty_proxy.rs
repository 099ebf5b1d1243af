//! A real TCP proxy on 127.0.0.1 in front of an HTTP server (SeaweedFS's S3 endpoint),
//! which loses the reply of chosen requests: the request reaches the server and is
//! carried out, but the client never hears back, as when a connection breaks after the
//! server stored an object. Every connection carries one request (`Connection: close`
//! is forced), so each request is inspected.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

type Rule = dyn Fn(&str, &str) -> bool + Send + Sync;

pub struct FaultyProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
}

impl FaultyProxy {
    /// Proxies to `upstream` (`host:port`); a request whose (method, path) `lose_reply`
    /// accepts is forwarded and answered by the server, but its reply is dropped.
    pub fn start(
        upstream: &str,
        lose_reply: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
    ) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicUsize::new(0));
        let rule: Arc<Rule> = Arc::new(lose_reply);
        let upstream = upstream.to_owned();
        let (stop2, lost2) = (stop.clone(), lost.clone());
        thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (rule, upstream, lost) =
                            (rule.clone(), upstream.clone(), lost2.clone());
                        thread::spawn(move || {
                            let _ = handle(client, &upstream, &*rule, &lost);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultyProxy { port, stop, lost }
    }

    /// `http://127.0.0.1:PORT`, the endpoint to give the client.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many replies were lost so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn handle(
    client: TcpStream,
    upstream: &str,
    rule: &Rule,
    lost: &AtomicUsize,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    let mut request_line = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if request_line.is_empty() {
            request_line = line.clone();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue; // replaced below
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let drop_reply = rule(method, path);

    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&head)?;
    server.write_all(&body)?;
    let mut reply = Vec::new();
    server.read_to_end(&mut reply)?; // the server closes: Connection: close
    let mut client = client;
    if drop_reply {
        lost.fetch_add(1, Ordering::SeqCst);
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    client.write_all(&reply)?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}
