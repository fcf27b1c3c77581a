//! Framing: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! The length is checked against a cap before anything is allocated, so a
//! hostile prefix (`0xffffffff`) costs the reader four bytes of reading.

use std::io::{self, Read, Write};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Requests are small; this is generous for the largest (`ban add` with a
/// long reason).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Replies list maps that can hold hundreds of thousands of bans.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed")]
    Closed,
    #[error("connection closed mid-frame after {got} of {expected} bytes")]
    Truncated { expected: usize, got: usize },
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u64, max: usize },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// True when the error came from a read or write timeout on a blocking
    /// socket (which reports `WouldBlock` or `TimedOut` depending on the
    /// platform).
    pub fn is_timeout(&self) -> bool {
        matches!(self, FrameError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

fn check_len(len: usize, max: usize) -> Result<[u8; 4], FrameError> {
    match u32::try_from(len) {
        Ok(n) if len <= max => Ok(n.to_be_bytes()),
        _ => Err(FrameError::TooLarge {
            len: len as u64,
            max,
        }),
    }
}

fn header_len(header: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    match usize::try_from(len) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(FrameError::TooLarge {
            len: len.into(),
            max,
        }),
    }
}

/// Fills `buf`; `Ok(n < buf.len())` only at end of stream.
fn fill<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

async fn fill_async<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]).await {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn header_result(got: usize) -> Result<(), FrameError> {
    match got {
        0 => Err(FrameError::Closed),
        4 => Ok(()),
        _ => Err(FrameError::Truncated { expected: 4, got }),
    }
}

fn body_result(got: usize, expected: usize) -> Result<(), FrameError> {
    if got == expected {
        Ok(())
    } else {
        Err(FrameError::Truncated { expected, got })
    }
}

/// Reads one frame's body (blocking).
pub fn read_frame<R: Read>(r: &mut R, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    header_result(fill(r, &mut header)?)?;
    let len = header_len(header, max)?;
    let mut body = vec![0u8; len];
    body_result(fill(r, &mut body)?, len)?;
    Ok(body)
}

/// Writes one frame (blocking). Refuses bodies over `max` before writing
/// anything, so the stream stays in sync.
pub fn write_frame<W: Write>(w: &mut W, body: &[u8], max: usize) -> Result<(), FrameError> {
    let header = check_len(body.len(), max)?;
    // One buffer, one write: a frame never goes out half-written because of
    // a small first write.
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(body);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame's body (async).
pub async fn read_frame_async<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    header_result(fill_async(r, &mut header).await?)?;
    let len = header_len(header, max)?;
    let mut body = vec![0u8; len];
    body_result(fill_async(r, &mut body).await?, len)?;
    Ok(body)
}

/// Writes one frame (async).
pub async fn write_frame_async<W: AsyncWrite + Unpin>(
    w: &mut W,
    body: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    let header = check_len(body.len(), max)?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(body);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_frame(&mut v, body, MAX_REQUEST_BYTES).unwrap();
        v
    }

    #[test]
    fn round_trip_blocking() {
        let mut wire = framed(b"{\"a\":1}");
        wire.extend(framed(b""));
        assert_eq!(&wire[..4], &[0, 0, 0, 7]);
        let mut r = Cursor::new(wire);
        assert_eq!(read_frame(&mut r, 100).unwrap(), b"{\"a\":1}");
        assert_eq!(read_frame(&mut r, 100).unwrap(), b"");
        assert!(matches!(read_frame(&mut r, 100), Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn round_trip_async() {
        let mut wire = Vec::new();
        write_frame_async(&mut wire, b"hello", 10).await.unwrap();
        write_frame_async(&mut wire, b"world!", 10).await.unwrap();
        let mut r = wire.as_slice();
        assert_eq!(read_frame_async(&mut r, 10).await.unwrap(), b"hello");
        assert_eq!(read_frame_async(&mut r, 10).await.unwrap(), b"world!");
        assert!(matches!(
            read_frame_async(&mut r, 10).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn short_reads_are_truncation_not_closure() {
        let wire = framed(b"0123456789");
        for cut in 1..wire.len() {
            let mut r = &wire[..cut];
            match read_frame_async(&mut r, 100).await {
                Err(FrameError::Truncated { expected, got }) => {
                    if cut < 4 {
                        assert_eq!((expected, got), (4, cut));
                    } else {
                        assert_eq!((expected, got), (10, cut - 4));
                    }
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
            let mut r = Cursor::new(&wire[..cut]);
            assert!(matches!(
                read_frame(&mut r, 100),
                Err(FrameError::Truncated { .. })
            ));
        }
    }

    /// A reader that hands out one byte per call, as a slow peer would.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(slot)) => {
                    *slot = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn partial_reads_are_reassembled() {
        let wire = framed(b"slowly");
        assert_eq!(read_frame(&mut Trickle(&wire), 100).unwrap(), b"slowly");
    }

    #[tokio::test]
    async fn oversize_prefix_is_refused_without_reading_the_body() {
        let mut wire = vec![0xff, 0xff, 0xff, 0xff];
        wire.extend_from_slice(b"junk");
        let mut r = wire.as_slice();
        match read_frame_async(&mut r, MAX_REQUEST_BYTES).await {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(len, u64::from(u32::MAX));
                assert_eq!(max, MAX_REQUEST_BYTES);
            }
            other => panic!("{other:?}"),
        }
        // The body was not consumed.
        assert_eq!(r, b"junk");
        // Exactly at the limit is fine; one over is not.
        let at = vec![b' '; 64];
        let mut wire = Vec::new();
        write_frame(&mut wire, &at, 64).unwrap();
        assert_eq!(read_frame(&mut Cursor::new(&wire), 64).unwrap().len(), 64);
        assert!(matches!(
            read_frame(&mut Cursor::new(&wire), 63),
            Err(FrameError::TooLarge { len: 64, max: 63 })
        ));
    }

    #[test]
    fn oversize_bodies_are_not_written() {
        let mut out = Vec::new();
        let body = vec![0u8; 65];
        assert!(matches!(
            write_frame(&mut out, &body, 64),
            Err(FrameError::TooLarge { len: 65, max: 64 })
        ));
        assert!(out.is_empty(), "nothing may be written for a refused frame");
    }
}
