//! A real HTTP server on loopback that records what is POSTed to it, for the webhook
//! tests: each path answers as it is told (200, an error status, or never).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http1::{self, Request};

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
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let port = http1::serve(move |request| answer(request, &log, &scripts));
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

fn answer(request: Request, log: &Mutex<Vec<Received>>, scripts: &HashMap<String, Script>) {
    let path = request.path.clone();
    let nth = {
        let mut log = log.lock().unwrap();
        let nth = log.iter().filter(|r| r.path == path).count();
        log.push(Received {
            path: path.clone(),
            content_type: request
                .header("content-type")
                .unwrap_or_default()
                .to_owned(),
            body: request.body.clone(),
        });
        nth
    };
    let status = match scripts.get(&path) {
        None => Some(200),
        Some(s) => *s.get(nth).or(s.last()).unwrap_or(&Some(200)),
    };
    match status {
        Some(status) => request.respond(&format!("{status} X"), ""),
        // Never answer: hold the connection until the client gives up.
        None => std::thread::sleep(Duration::from_secs(60)),
    }
}
