//! A real HTTP server on loopback that records what is POSTed to it, for the webhook
//! tests: each path answers as it is told (200, an error status, or never).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a path answers: a status for each request in turn (the last one repeats), or
/// `None` to never answer.
pub type Script = Vec<Option<u16>>;

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

pub struct Receiver {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Listens on a free loopback port; paths not in `scripts` answer 200.
    pub fn start(scripts: HashMap<String, Script>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (log, scripts) = (received.clone(), Arc::new(scripts));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, scripts) = (log.clone(), scripts.clone());
                std::thread::spawn(move || serve(stream, &log, &scripts));
            }
        });
        Receiver { port, received }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What `path` has received so far.
    pub fn at(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Received>>, scripts: &HashMap<String, Script>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
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
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let nth = {
        let mut log = log.lock().unwrap();
        let nth = log.iter().filter(|r| r.path == path).count();
        log.push(Received {
            path: path.clone(),
            content_type: headers.get("content-type").cloned().unwrap_or_default(),
            body,
        });
        nth
    };
    let status = match scripts.get(&path) {
        None => Some(200),
        Some(s) => *s.get(nth).or(s.last()).unwrap_or(&Some(200)),
    };
    let Some(status) = status else {
        // Never answer: hold the connection until the client gives up.
        std::thread::sleep(Duration::from_secs(60));
        return;
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
}
