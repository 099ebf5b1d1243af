//! The server side of HTTP/1.1 for the loopback stand-ins (the webhook receiver, Entra
//! ID's token endpoint, the EKS Pod Identity agent): one request per connection, read
//! whole, answered with `Connection: close`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Bodies above this are not read (nothing here sends more than a few KiB).
const MAX_BODY: usize = 1 << 20;

/// One request, read whole.
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    conn: TcpStream,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Answers `status` (e.g. `200 OK`) with a JSON `body` and closes the connection.
    pub fn respond(mut self, status: &str, body: &str) {
        let _ = write!(
            self.conn,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = self.conn.flush();
    }
}

/// Listens on a free loopback port and hands every request to `handler`, each
/// connection on a thread of its own (a handler may hold one open). Returns the port.
pub fn serve(handler: impl Fn(Request) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("address").port();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let handler = handler.clone();
            std::thread::spawn(move || {
                if let Some(request) = read_request(conn) {
                    handler(request);
                }
            });
        }
    });
    port
}

/// The request on `conn`, or `None` when the client closes or stalls (30 s) before
/// its body is complete.
fn read_request(conn: TcpStream) -> Option<Request> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_owned();
    let path = words.next().unwrap_or("").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(MAX_BODY)];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
        conn: reader.into_inner(),
    })
}
