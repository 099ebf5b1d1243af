//! A real TCP proxy on 127.0.0.1 in front of an etcd client URL (plain HTTP/2), which
//! corrupts the snapshot's sha256 trailer in transit: the database bytes arrive intact,
//! the last byte of the trailer does not. That is what a flipped bit on the wire looks
//! like to a client that checks the trailer, and it is deterministic.
//!
//! How it finds the trailer: etcd sends the trailer as the last message of the Snapshot
//! stream, so it ends the last DATA frame of that stream, the frame just before the
//! HEADERS frame (gRPC status) that ends the stream. The proxy parses the server's frames
//! (9-byte header: length, type, flags, stream id), holds back the latest DATA frame of
//! any stream that has carried more than 1 MiB (only the snapshot does), and when the
//! next frame is that stream's end-of-stream HEADERS, flips the last byte of the held
//! frame before passing both on. Client-to-server bytes pass unchanged.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const END_STREAM: u8 = 1;
const PADDED: u8 = 8;
/// A stream that has carried more than this is the snapshot.
const LARGE: usize = 1 << 20;

pub struct TrailerTamper {
    port: u16,
    stop: Arc<AtomicBool>,
    flipped: Arc<AtomicUsize>,
}

impl TrailerTamper {
    /// Proxies to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> TrailerTamper {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flipped = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let (stop2, flipped2) = (stop.clone(), flipped.clone());
        thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (upstream, flipped) = (upstream.clone(), flipped2.clone());
                        thread::spawn(move || {
                            let _ = handle(client, &upstream, &flipped);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TrailerTamper {
            port,
            stop,
            flipped,
        }
    }

    /// `http://127.0.0.1:PORT`, the endpoint to give the client.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many snapshot trailers were corrupted so far.
    pub fn flipped(&self) -> usize {
        self.flipped.load(Ordering::SeqCst)
    }
}

impl Drop for TrailerTamper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn handle(client: TcpStream, upstream: &str, flipped: &AtomicUsize) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect(upstream)?;
    let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
    thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let result = server_to_client(server, &client, flipped);
    let _ = client.shutdown(Shutdown::Both);
    result
}

/// One frame: its 9-byte header and payload.
struct Frame {
    bytes: Vec<u8>,
}

impl Frame {
    fn kind(&self) -> u8 {
        self.bytes[3]
    }
    fn flags(&self) -> u8 {
        self.bytes[4]
    }
    fn stream(&self) -> u32 {
        u32::from_be_bytes([self.bytes[5], self.bytes[6], self.bytes[7], self.bytes[8]])
            & 0x7fff_ffff
    }
    fn payload_len(&self) -> usize {
        self.bytes.len() - 9
    }
}

fn server_to_client(
    mut server: TcpStream,
    mut client: &TcpStream,
    flipped: &AtomicUsize,
) -> std::io::Result<()> {
    let mut sent: HashMap<u32, usize> = HashMap::new();
    let mut held: Option<Frame> = None;
    loop {
        let Some(frame) = read_frame(&mut server)? else {
            if let Some(h) = held.take() {
                client.write_all(&h.bytes)?;
            }
            return Ok(());
        };
        if let Some(mut h) = held.take() {
            let ends_it = frame.kind() == HEADERS
                && frame.flags() & END_STREAM != 0
                && frame.stream() == h.stream();
            // An unpadded DATA frame's payload is message bytes only: its last byte is
            // the trailer's last byte.
            if ends_it && h.flags() & PADDED == 0 && h.payload_len() > 0 {
                let last = h.bytes.len() - 1;
                h.bytes[last] ^= 0x01;
                flipped.fetch_add(1, Ordering::SeqCst);
            }
            client.write_all(&h.bytes)?;
        }
        if frame.kind() == DATA {
            let total = sent.entry(frame.stream()).or_default();
            *total += frame.payload_len();
            if *total > LARGE {
                held = Some(frame);
                continue;
            }
        }
        client.write_all(&frame.bytes)?;
    }
}

/// The next frame, or `None` at the end of the connection.
fn read_frame(server: &mut TcpStream) -> std::io::Result<Option<Frame>> {
    let mut header = [0u8; 9];
    match server.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut bytes = Vec::with_capacity(9 + len);
    bytes.extend_from_slice(&header);
    bytes.resize(9 + len, 0);
    server.read_exact(&mut bytes[9..])?;
    Ok(Some(Frame { bytes }))
}
