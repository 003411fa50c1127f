//! `credential-broker audit verify`: walk the chain and report the first broken link, over one
//! file or over a rotated set of files given in order (the chain runs on across them).

use std::path::{Path, PathBuf};

use super::writer::{link_hash, GENESIS_HASH};

/// The result of verifying a file.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    /// The last record's hash: compare it with one logged earlier to detect a truncated tail.
    pub head: String,
}

/// Where and why the chain breaks.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct BrokenLink {
    pub line: usize,
    pub reason: String,
}

/// A broken link in one file of a set.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: broken at {link}", .file.display())]
pub struct BrokenFile {
    pub file: PathBuf,
    pub link: BrokenLink,
}

/// Where the chain stands after the records seen so far.
#[derive(Debug, Clone)]
struct ChainState {
    prev_hash: String,
    /// None before the first record: the first file of a set may start mid-chain (older files archived).
    expected_seq: Option<u64>,
    records: u64,
}

impl Default for ChainState {
    fn default() -> Self {
        ChainState { prev_hash: GENESIS_HASH.to_string(), expected_seq: None, records: 0 }
    }
}

pub fn verify_file(path: &Path) -> Result<Verified, BrokenLink> {
    verify_files(&[path.to_path_buf()]).map_err(|b| b.link)
}

/// Verify files as one chain, in the order given (oldest first: `audit.jsonl.000001`, …, `audit.jsonl`).
/// A missing, reordered or truncated file breaks the link at the next file's first record.
pub fn verify_files(paths: &[PathBuf]) -> Result<Verified, BrokenFile> {
    let mut state = ChainState::default();
    for path in paths {
        let broken = |link: BrokenLink| BrokenFile { file: path.clone(), link };
        let text = std::fs::read(path).map_err(|e| broken(BrokenLink { line: 0, reason: format!("cannot read {}: {e}", path.display()) }))?;
        let text = String::from_utf8(text).map_err(|_| broken(BrokenLink { line: 0, reason: "file is not UTF-8".into() }))?;
        state = verify_from(&text, state).map_err(broken)?;
    }
    Ok(Verified { records: state.records, head: state.prev_hash })
}

pub fn verify_text(text: &str) -> Result<Verified, BrokenLink> {
    let state = verify_from(text, ChainState::default())?;
    Ok(Verified { records: state.records, head: state.prev_hash })
}

fn verify_from(text: &str, state: ChainState) -> Result<ChainState, BrokenLink> {
    if !text.is_empty() && !text.ends_with('\n') {
        let line = text.lines().count();
        return Err(BrokenLink { line, reason: "the last record is cut off (truncated file)".into() });
    }
    let ChainState { mut prev_hash, mut expected_seq, mut records } = state;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let broken = |reason: String| BrokenLink { line: n, reason };
        let (body, hash) = split_hash(line).ok_or_else(|| broken("record does not end with its hash".into()))?;
        let v: serde_json::Value = serde_json::from_str(&format!("{body}}}")).map_err(|e| broken(format!("record is not valid JSON: {e}")))?;
        let seq = v["seq"].as_u64().ok_or_else(|| broken("record has no seq".into()))?;
        let claimed_prev = v["prev_hash"].as_str().ok_or_else(|| broken("record has no prev_hash".into()))?;
        if let Some(want) = expected_seq {
            if seq != want {
                return Err(broken(format!("seq {seq} follows seq {} (records deleted or reordered)", want - 1)));
            }
        } else if seq != 1 && claimed_prev == GENESIS_HASH {
            return Err(broken(format!("chain starts at seq {seq}, not 1")));
        }
        if expected_seq.is_some() && claimed_prev != prev_hash {
            return Err(broken("prev_hash does not match the previous record's hash".into()));
        }
        let actual = link_hash(claimed_prev, format!("{body}}}").as_bytes());
        if actual != hash {
            return Err(broken("hash does not match the record (record edited)".into()));
        }
        prev_hash = hash.to_string();
        expected_seq = Some(seq + 1);
        records += 1;
    }
    Ok(ChainState { prev_hash, expected_seq, records })
}

/// Split `{...,"hash":"<hex>"}` into `{...` and `<hex>`.
fn split_hash(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_suffix("\"}")?;
    let idx = rest.rfind(",\"hash\":\"")?;
    let hash = &rest[idx + 9..];
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some((&rest[..idx], hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditEvent, AuditRecord};
    use crate::audit::writer::chain_line;

    fn chain(n: u64) -> Vec<String> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let line = chain_line(seq, &prev, &AuditRecord::new(AuditEvent::Allow, &format!("req-{seq}"), "agent", "tenant"));
                prev = line.hash;
                line.text
            })
            .collect()
    }

    fn join(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let v = verify_text(&join(&chain(5))).unwrap();
        assert_eq!(v.records, 5);
    }

    #[test]
    fn one_byte_edit_deletion_swap_and_cut_are_detected() {
        let lines = chain(5);
        let mut edited = lines.clone();
        edited[2] = edited[2].replace("req-3", "req-X");
        assert_eq!(verify_text(&join(&edited)).unwrap_err().line, 3);

        let mut deleted = lines.clone();
        deleted.remove(1);
        assert_eq!(verify_text(&join(&deleted)).unwrap_err().line, 2);

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        assert_eq!(verify_text(&join(&swapped)).unwrap_err().line, 2);

        let text = join(&lines);
        assert!(verify_text(&text[..text.len() - 10]).is_err());
    }

    #[test]
    fn a_set_of_files_verifies_in_order_and_breaks_when_one_is_missing_or_moved() {
        let dir = tempfile::tempdir().unwrap();
        let lines = chain(6);
        let files: Vec<PathBuf> = lines
            .chunks(2)
            .enumerate()
            .map(|(i, part)| {
                let p = dir.path().join(format!("audit.jsonl.{:06}", i + 1));
                std::fs::write(&p, join(part)).unwrap();
                p
            })
            .collect();
        assert_eq!(verify_files(&files).unwrap().records, 6);
        // A later file alone verifies (archived predecessors), but not with a gap or out of order.
        assert!(verify_files(&files[1..]).is_ok());
        let gap = verify_files(&[files[0].clone(), files[2].clone()]).unwrap_err();
        assert_eq!((gap.file.clone(), gap.link.line), (files[2].clone(), 1));
        assert!(verify_files(&[files[1].clone(), files[0].clone(), files[2].clone()]).is_err());
    }
}
