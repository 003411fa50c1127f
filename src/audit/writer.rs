//! The append-only, hash-chained audit writer.
//!
//! One thread owns the file. Callers send records and wait until their record is on disk; the
//! thread writes whatever has queued up, fsyncs once and answers all of them (group commit), so
//! fsync-before-use costs one disk flush per batch, not per request.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::record::{rfc3339, AuditRecord, ChainedRecord};

/// The `prev_hash` of the first record of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path} cannot be written: {reason}")]
    Write { path: String, reason: String },
    #[error("audit log {path} ends with a record that does not parse; refusing to extend a damaged chain")]
    DamagedTail { path: String },
    #[error("audit writer has stopped")]
    Stopped,
}

type Job = (AuditRecord, oneshot::Sender<Result<u64, AuditError>>);

/// A handle to the audit log. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    path: PathBuf,
}

impl AuditLog {
    /// Open (or create) the log and continue its chain from the last record.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let (seq, prev_hash) = last_link(path)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| write_err(path, &e))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| write_err(path, &e))?;
        let (tx, rx) = mpsc::channel::<Job>();
        let mut chain = Chain { file, path: path.to_path_buf(), seq, prev_hash };
        std::thread::Builder::new().name("audit-writer".into()).spawn(move || chain.run(rx)).map_err(|e| write_err(path, &e))?;
        Ok(AuditLog { tx, path: path.to_path_buf() })
    }

    /// Append a record and wait until it is durable. Returns its sequence number.
    pub async fn append(&self, record: AuditRecord) -> Result<u64, AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx.send((record, done)).map_err(|_| AuditError::Stopped)?;
        wait.await.map_err(|_| AuditError::Stopped)?
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

struct Chain {
    file: File,
    path: PathBuf,
    seq: u64,
    prev_hash: String,
}

impl Chain {
    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let result = self.write_batch(&batch);
            for ((_, done), r) in batch.into_iter().zip(result) {
                let _ = done.send(r);
            }
        }
    }

    /// Write a batch and fsync once. On failure no record of the batch counts as written, and
    /// the chain state is restored so the next batch links to what is really on disk.
    fn write_batch(&mut self, batch: &[Job]) -> Vec<Result<u64, AuditError>> {
        let (seq0, hash0) = (self.seq, self.prev_hash.clone());
        let mut buf = Vec::with_capacity(batch.len() * 512);
        let mut seqs = Vec::with_capacity(batch.len());
        for (record, _) in batch {
            self.seq += 1;
            let line = chain_line(self.seq, &self.prev_hash, record);
            self.prev_hash = line.hash;
            buf.extend_from_slice(line.text.as_bytes());
            buf.push(b'\n');
            seqs.push(self.seq);
        }
        match self.file.write_all(&buf).and_then(|_| self.file.sync_data()) {
            Ok(()) => seqs.into_iter().map(Ok).collect(),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "audit write failed; refusing requests until it works");
                self.seq = seq0;
                self.prev_hash = hash0;
                batch.iter().map(|_| Err(write_err(&self.path, &e))).collect()
            }
        }
    }
}

pub(crate) struct Line {
    pub text: String,
    pub hash: String,
}

/// The hash covers the previous hash and the record's exact bytes; it is appended as the last
/// field so a verifier can recover those bytes without re-serialising.
pub(crate) fn chain_line(seq: u64, prev_hash: &str, record: &AuditRecord) -> Line {
    let chained = ChainedRecord { seq, timestamp: rfc3339(SystemTime::now()), prev_hash, record };
    let body = serde_json::to_string(&chained).unwrap_or_else(|e| format!("{{\"seq\":{seq},\"serialization_error\":\"{e}\"}}"));
    let hash = link_hash(prev_hash, body.as_bytes());
    let text = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
    Line { text, hash }
}

pub(crate) fn link_hash(prev_hash: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

/// The last record's sequence number and hash, or the genesis link for a new file.
fn last_link(path: &Path) -> Result<(u64, String), AuditError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, GENESIS_HASH.into())),
        Err(e) => return Err(write_err(path, &e)),
    };
    let mut last = None;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| write_err(path, &e))?;
        if !line.trim().is_empty() {
            last = Some(line);
        }
    }
    let Some(line) = last else { return Ok((0, GENESIS_HASH.into())) };
    let v: serde_json::Value = serde_json::from_str(&line).map_err(|_| AuditError::DamagedTail { path: path.display().to_string() })?;
    match (v["seq"].as_u64(), v["hash"].as_str()) {
        (Some(seq), Some(hash)) => Ok((seq, hash.to_string())),
        _ => Err(AuditError::DamagedTail { path: path.display().to_string() }),
    }
}

fn write_err(path: &Path, e: &std::io::Error) -> AuditError {
    AuditError::Write { path: path.display().to_string(), reason: e.to_string() }
}
