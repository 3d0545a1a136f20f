//! The output a process produced, kept for readers that come (back) later.
//!
//! Chunks are numbered from 1 across both streams. The total kept is capped: the oldest
//! chunks go first, and a reader asking for them learns which `seq` range it missed.
//! A chunk never ends inside a UTF-8 character (an incomplete tail waits for the next
//! read of the same stream), so every chunk converts to text on its own while the raw
//! bytes stay exact for the terminal.

use std::collections::VecDeque;

use bytes::Bytes;
use hearth_proto::{DroppedOutput, OutputChunk, OutputStream};

#[derive(Debug, Clone)]
pub struct Chunk {
    pub seq: u64,
    pub stream: OutputStream,
    pub data: Bytes,
}

impl Chunk {
    pub fn to_wire(&self) -> OutputChunk {
        OutputChunk {
            seq: self.seq,
            stream: self.stream,
            data: String::from_utf8_lossy(&self.data).into_owned(),
        }
    }
}

#[derive(Debug)]
pub struct OutputBuf {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    keep: usize,
    next_seq: u64,
    dropped_bytes: u64,
    /// Incomplete UTF-8 tails, stdout and stderr.
    carry: [Vec<u8>; 2],
}

impl OutputBuf {
    pub fn new(keep: usize) -> OutputBuf {
        OutputBuf {
            chunks: VecDeque::new(),
            bytes: 0,
            keep,
            next_seq: 1,
            dropped_bytes: 0,
            carry: [Vec::new(), Vec::new()],
        }
    }

    fn carry(&mut self, stream: OutputStream) -> &mut Vec<u8> {
        &mut self.carry[matches!(stream, OutputStream::Stderr) as usize]
    }

    /// Appends what was just read from `stream`.
    pub fn push(&mut self, stream: OutputStream, data: &[u8]) {
        let carry = self.carry(stream);
        carry.extend_from_slice(data);
        let cut = complete_utf8_len(carry);
        let rest = carry.split_off(cut);
        let whole = std::mem::replace(carry, rest);
        self.append(stream, whole);
    }

    /// At the end of the streams: whatever incomplete tail is left goes out as it is.
    pub fn flush(&mut self) {
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let tail = std::mem::take(self.carry(stream));
            self.append(stream, tail);
        }
    }

    fn append(&mut self, stream: OutputStream, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        self.bytes += data.len();
        self.chunks.push_back(Chunk {
            seq: self.next_seq,
            stream,
            data: data.into(),
        });
        self.next_seq += 1;
        while self.bytes > self.keep && self.chunks.len() > 1 {
            let old = self.chunks.pop_front().expect("more than one chunk");
            self.bytes -= old.data.len();
            self.dropped_bytes += old.data.len() as u64;
        }
        // A single chunk larger than what is kept keeps its end (cut at a character).
        if self.bytes > self.keep {
            let last = self.chunks.back_mut().expect("just pushed");
            let mut cut = last.data.len() - self.keep;
            while cut < last.data.len() && (last.data[cut] & 0xc0) == 0x80 {
                cut += 1;
            }
            last.data = last.data.slice(cut..);
            self.bytes -= cut;
            self.dropped_bytes += cut as u64;
        }
    }

    /// Bytes no longer kept.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }

    /// The `seq` the next chunk will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Chunks after `seq` (a reader's last seen), and the range of them already dropped.
    pub fn after(&self, seq: u64) -> (Option<DroppedOutput>, Vec<Chunk>) {
        let first_kept = self.chunks.front().map_or(self.next_seq, |c| c.seq);
        let dropped = (seq + 1 < first_kept).then(|| DroppedOutput {
            from_seq: seq + 1,
            to_seq: first_kept - 1,
        });
        let chunks = self
            .chunks
            .iter()
            .filter(|c| c.seq > seq)
            .cloned()
            .collect();
        (dropped, chunks)
    }
}

/// Length of the longest prefix of `b` that does not end inside a UTF-8 sequence (an
/// invalid byte counts as complete: it is passed on, to be replaced when shown).
fn complete_utf8_len(b: &[u8]) -> usize {
    match std::str::from_utf8(b) {
        Ok(_) => b.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => {
            // An invalid sequence somewhere; only hold back a trailing incomplete one.
            let tail_start = b.len().saturating_sub(3);
            (tail_start..b.len())
                .find(|&i| {
                    let need = match b[i] {
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        0xf0..=0xf7 => 4,
                        _ => return false,
                    };
                    b.len() - i < need
                })
                .unwrap_or(b.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutputStream::*;

    #[test]
    fn characters_are_never_split_and_streams_keep_their_own_tails() {
        let snow = "☃".as_bytes();
        let mut o = OutputBuf::new(1 << 20);
        o.push(Stdout, &[b'a', snow[0]]);
        o.push(Stderr, b"e");
        o.push(Stdout, &snow[1..]);
        o.push(Stdout, &[0xff, b'z', 0xe2]);
        o.flush();
        let (dropped, chunks) = o.after(0);
        assert_eq!(dropped, None);
        let got: Vec<(u64, OutputStream, String)> = chunks
            .iter()
            .map(|c| (c.seq, c.stream, c.to_wire().data))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, Stdout, "a".into()),
                (2, Stderr, "e".into()),
                (3, Stdout, "☃".into()),
                (4, Stdout, "\u{fffd}z".into()),
                (5, Stdout, "\u{fffd}".into()),
            ]
        );
    }

    #[test]
    fn old_chunks_are_dropped_and_readers_told() {
        let mut o = OutputBuf::new(10);
        for i in 0..5 {
            o.push(Stdout, format!("{i}{i}{i}{i}").as_bytes());
        }
        // 20 bytes written, 10 kept: chunks 4 and 5.
        assert_eq!(o.dropped_bytes(), 12);
        let (dropped, chunks) = o.after(1);
        assert_eq!(
            dropped,
            Some(DroppedOutput {
                from_seq: 2,
                to_seq: 3
            })
        );
        assert_eq!(chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), [4, 5]);
        let (dropped, chunks) = o.after(3);
        assert_eq!((dropped, chunks.len()), (None, 2));
        let (dropped, chunks) = o.after(5);
        assert_eq!((dropped, chunks.len()), (None, 0));
        assert_eq!(o.next_seq(), 6);
        // One chunk larger than everything kept keeps its end, whole characters only.
        o.push(Stdout, "ab☃☃☃☃".as_bytes());
        let (_, chunks) = o.after(5);
        assert_eq!(chunks[0].to_wire().data, "☃☃☃");
        assert_eq!(o.dropped_bytes(), 12 + 8 + 5);
    }
}
