//! Read-ahead on a separate thread, used for gzip input: decompression then
//! overlaps parsing, which roughly doubles throughput on two cores.

use std::io::{self, Read};

/// Size of one chunk handed from the decoder thread to the reader.
const CHUNK_BYTES: usize = 1 << 20;

/// Runs a reader (the gzip decoder) on its own thread, handing over 1 MiB
/// chunks through a bounded channel, so decompression overlaps parsing. Memory
/// stays bounded: at most `PREFETCH_CHUNKS + 2` chunks exist at once.
pub(crate) struct Prefetch {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    eof: bool,
}

const PREFETCH_CHUNKS: usize = 4;

impl Prefetch {
    pub(crate) fn spawn<R: Read + Send + 'static>(mut inner: R) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(PREFETCH_CHUNKS);
        std::thread::spawn(move || {
            loop {
                let mut buf = vec![0u8; CHUNK_BYTES];
                let mut filled = 0;
                let res = loop {
                    match inner.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == buf.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                let at_end = filled == 0;
                if filled > 0 && tx.send(Ok(buf)).is_err() {
                    return; // the reader was dropped
                }
                if let Err(e) = res {
                    let _ = tx.send(Err(e));
                    return;
                }
                if at_end {
                    let _ = tx.send(Ok(Vec::new()));
                    return;
                }
            }
        });
        Self {
            rx,
            cur: Vec::new(),
            pos: 0,
            eof: false,
        }
    }
}

impl Read for Prefetch {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.eof {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.eof = chunk.is_empty();
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.eof = true;
                    return Err(e);
                }
                Err(_) => {
                    self.eof = true;
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "decoder thread stopped",
                    ));
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that yields `data` in small pieces, then fails if asked to.
    struct Pieces {
        data: Vec<u8>,
        pos: usize,
        fail_at_end: bool,
    }

    impl Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return if self.fail_at_end {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut"))
                } else {
                    Ok(0)
                };
            }
            let n = out.len().min(7).min(self.data.len() - self.pos);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn passes_bytes_through_and_then_the_error() {
        let data: Vec<u8> = (0..3 * CHUNK_BYTES + 11).map(|i| (i % 251) as u8).collect();
        let mut r = Prefetch::spawn(Pieces {
            data: data.clone(),
            pos: 0,
            fail_at_end: false,
        });
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        let mut r = Prefetch::spawn(Pieces {
            data: data.clone(),
            pos: 0,
            fail_at_end: true,
        });
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(out, data, "bytes before the error are delivered");
    }
}
