//! The append-only, hash-chained audit writer.
//!
//! One thread owns the file. Callers send records and wait until their record is on disk; the
//! thread writes whatever has queued up, fsyncs once and answers all of them (group commit), so
//! fsync-before-use costs one disk flush per batch, not per request.
//!
//! Rotation: once the file reaches `max_file_bytes` it is renamed `<path>.000001`, `.000002`, …
//! and a new file is started at `<path>`. The chain does not restart: the new file's first record
//! carries the previous file's last hash and the next sequence number, so `audit verify` over the
//! files in order checks them as one chain.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
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

/// How the writer stores records besides the chain itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterOptions {
    /// Rotate once the current file reaches this many bytes.
    pub max_file_bytes: Option<u64>,
    /// Copy each durable record to stdout (for a log shipper).
    pub stdout: bool,
}

impl From<&crate::config::AuditConfig> for WriterOptions {
    fn from(c: &crate::config::AuditConfig) -> Self {
        WriterOptions { max_file_bytes: c.max_file_bytes, stdout: c.stdout }
    }
}

/// A handle to the audit log. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    path: PathBuf,
    /// Whether the last batch reached the disk; records not waited for are refused while not.
    healthy: Arc<AtomicBool>,
}

impl AuditLog {
    /// Open (or create) the log and continue its chain from the last record.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        Self::open_with(path, WriterOptions::default())
    }

    /// Open with rotation and/or a stdout copy. A new (or empty) file continues the chain of the
    /// newest rotated file beside it.
    pub fn open_with(path: &Path, options: WriterOptions) -> Result<AuditLog, AuditError> {
        let rotated = rotated_files(path);
        let (seq, prev_hash) = match last_link(path)? {
            (0, _) => match rotated.last() {
                Some((_, newest)) => last_link(newest)?,
                None => (0, GENESIS_HASH.into()),
            },
            link => link,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| write_err(path, &e))?;
        }
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let next_index = rotated.last().map_or(1, |(i, _)| i + 1);
        let (tx, rx) = mpsc::channel::<Job>();
        let healthy = Arc::new(AtomicBool::new(true));
        let mut chain = Chain { file, path: path.to_path_buf(), seq, prev_hash, size, next_index, options, healthy: healthy.clone() };
        std::thread::Builder::new().name("audit-writer".into()).spawn(move || chain.run(rx)).map_err(|e| write_err(path, &e))?;
        Ok(AuditLog { tx, path: path.to_path_buf(), healthy })
    }

    /// Queue a record without waiting for its fsync: it is chained in order and made durable by
    /// the next batch (milliseconds later). For records whose loss in a crash releases nothing —
    /// the use of an already-recorded credential — so the request does not pay a disk flush.
    /// While the log cannot be written, this refuses, so the broker still fails closed.
    pub fn append_in_background(&self, record: AuditRecord) -> Result<(), AuditError> {
        if !self.healthy.load(Ordering::Acquire) {
            return Err(AuditError::Write { path: self.path.display().to_string(), reason: "the last write failed".into() });
        }
        let (done, _) = oneshot::channel();
        self.tx.send((record, done)).map_err(|_| AuditError::Stopped)
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
    /// Bytes in the current file.
    size: u64,
    /// The suffix the current file gets when it is rotated.
    next_index: u64,
    options: WriterOptions,
    healthy: Arc<AtomicBool>,
}

impl Chain {
    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let result = self.write_batch(&batch);
            self.healthy.store(result.iter().all(Result::is_ok), Ordering::Release);
            for ((_, done), r) in batch.into_iter().zip(result) {
                let _ = done.send(r);
            }
        }
    }

    /// Write a batch and fsync once. On failure no record of the batch counts as written, and
    /// the chain state is restored so the next batch links to what is really on disk.
    fn write_batch(&mut self, batch: &[Job]) -> Vec<Result<u64, AuditError>> {
        if let Err(e) = self.ensure_linked() {
            tracing::error!(path = %self.path.display(), error = %e, "audit file is gone and cannot be recreated; refusing requests until it can");
            return batch.iter().map(|_| Err(write_err(&self.path, &e))).collect();
        }
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
            Ok(()) => {
                self.size += buf.len() as u64;
                if self.options.stdout {
                    // A copy for a log shipper; the file is the record, so a stdout failure is not fatal.
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf).and_then(|_| out.flush());
                }
                if self.options.max_file_bytes.is_some_and(|max| self.size >= max) {
                    self.rotate();
                }
                seqs.into_iter().map(Ok).collect()
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "audit write failed; refusing requests until it works");
                self.seq = seq0;
                self.prev_hash = hash0;
                batch.iter().map(|_| Err(write_err(&self.path, &e))).collect()
            }
        }
    }
}

impl Chain {
    /// The file was deleted or its directory removed under us (an operator, a cleanup job):
    /// records written to the unlinked inode would be lost, so start a new file at the path,
    /// continuing the chain; if that fails, the batch fails and requests fail closed.
    fn ensure_linked(&mut self) -> std::io::Result<()> {
        if self.file.metadata()?.nlink() > 0 {
            return Ok(());
        }
        tracing::warn!(path = %self.path.display(), "audit file was removed; starting a new one that continues the chain");
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Rename the full file aside and start a new one. On failure keep writing where we are: the
    /// chain stays intact, the file just grows past its limit.
    fn rotate(&mut self) {
        let target = rotated_name(&self.path, self.next_index);
        let result = std::fs::rename(&self.path, &target).and_then(|_| {
            self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
            if let Some(dir) = self.path.parent() {
                // Make the rename and the new file's entry durable too.
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                tracing::info!(rotated_to = %target.display(), seq = self.seq, head = %self.prev_hash, "audit log rotated");
                self.size = 0;
                self.next_index += 1;
            }
            Err(e) => tracing::error!(path = %self.path.display(), error = %e, "audit log rotation failed; continuing in the current file"),
        }
    }
}

/// `<path>.<index>`, zero-padded so a shell glob lists the files in chain order.
pub fn rotated_name(path: &Path, index: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index:06}"));
    PathBuf::from(name)
}

/// The rotated files beside `path`, oldest first.
pub fn rotated_files(path: &Path) -> Vec<(u64, PathBuf)> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return Vec::new() };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let index = name.strip_prefix(base)?.strip_prefix('.')?.parse().ok()?;
            Some((index, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new().create(true).append(true).open(path).map_err(|e| write_err(path, &e))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::AuditEvent;

    fn record(id: &str) -> AuditRecord {
        AuditRecord::new(AuditEvent::Allow, id, "agent-1", "acme")
    }

    #[tokio::test]
    async fn background_records_keep_their_place_in_the_chain_and_refuse_once_writes_fail() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("audit");
        let path = sub.join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append_in_background(record("r1")).unwrap();
        log.append(record("r2")).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> =
            text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].as_str().unwrap().to_string()).collect();
        assert_eq!(ids, ["r1", "r2"], "queued first, chained first, durable with the awaited one");
        assert!(crate::audit::verify::verify_text(&text).is_ok());

        // The directory is gone: the awaited write fails, and from then on records that are not
        // waited for are refused too, so requests fail closed instead of going unrecorded.
        std::fs::remove_dir_all(&sub).unwrap();
        assert!(log.append(record("r3")).await.is_err());
        assert!(log.append_in_background(record("r4")).is_err());
    }
}
