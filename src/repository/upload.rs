//! A multipart upload with bounded memory and an abort that keeps trying.
//!
//! Like object_store's `WriteMultipart` (equal-sized parts, a cap on parts in flight, the
//! caller waits for capacity), but `abort` can be retried: when the store goes away in
//! the middle of an upload, the abort is attempted again with backoff for a while, so a
//! store that comes back does not keep an unfinished multipart upload forever (S3 does
//! not clean those up by itself).

use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::{MultipartUpload, PutPayload};
use tokio::task::JoinSet;

/// How long an abort waits for the parts under way to end.
const SETTLE: Duration = Duration::from_secs(10);

pub struct ObjectUpload {
    upload: Box<dyn MultipartUpload>,
    parts: JoinSet<object_store::Result<()>>,
    buffer: Vec<u8>,
    part_size: usize,
    max_in_flight: usize,
    parts_sent: usize,
}

impl ObjectUpload {
    pub fn new(upload: Box<dyn MultipartUpload>, part_size: usize, max_in_flight: usize) -> Self {
        ObjectUpload {
            upload,
            parts: JoinSet::new(),
            buffer: Vec::with_capacity(part_size),
            part_size,
            max_in_flight: max_in_flight.max(1),
            parts_sent: 0,
        }
    }

    /// Adds bytes; full parts are sent, waiting while `max_in_flight` are under way.
    pub async fn write(&mut self, bytes: &[u8]) -> object_store::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = self.part_size - self.buffer.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.buffer.extend_from_slice(now);
            rest = later;
            if self.buffer.len() == self.part_size {
                let part = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.part_size));
                self.send(part).await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, part: Vec<u8>) -> object_store::Result<()> {
        while self.parts.len() >= self.max_in_flight {
            self.join_one().await?;
        }
        let fut = self.upload.put_part(PutPayload::from(Bytes::from(part)));
        self.parts.spawn(fut);
        self.parts_sent += 1;
        Ok(())
    }

    async fn join_one(&mut self) -> object_store::Result<()> {
        match self.parts.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(object_store::Error::Generic {
                store: "upload",
                source: Box::new(e),
            }),
            None => Ok(()),
        }
    }

    /// Sends the last part, waits for every part, and completes the upload: the object
    /// becomes visible.
    pub async fn finish(&mut self) -> object_store::Result<()> {
        if !self.buffer.is_empty() || self.parts_sent == 0 {
            let last = std::mem::take(&mut self.buffer);
            self.send(last).await?;
        }
        while !self.parts.is_empty() {
            self.join_one().await?;
        }
        self.upload.complete().await.map(|_| ())
    }

    /// Lets the parts under way end, then aborts the upload, retrying with backoff for up
    /// to `patience` while the store does not answer. Returns the last error if it never
    /// did.
    ///
    /// Parts are not cut off first: a part the store is still receiving can land after the
    /// abort and bring the upload back (S3's documentation says an abort may have to be
    /// repeated for this reason; SeaweedFS does it). Parts that do not end within
    /// [`SETTLE`] are dropped, and the upload is then aborted a second time.
    pub async fn abort(&mut self, patience: Duration) -> object_store::Result<()> {
        let settled = tokio::time::timeout(SETTLE, async {
            while self.parts.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        self.parts.abort_all();
        while self.parts.join_next().await.is_some() {}
        let deadline = Instant::now() + patience;
        let mut wait = Duration::from_millis(250);
        loop {
            match self.upload.abort().await {
                Ok(()) => {
                    if !settled {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        // Already gone is the expected answer.
                        let _ = self.upload.abort().await;
                    }
                    return Ok(());
                }
                Err(e) if Instant::now() + wait > deadline => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "abort of the multipart upload failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
