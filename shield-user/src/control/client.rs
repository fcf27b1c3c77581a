//! A blocking client for the control socket: what `shieldctl` and tests
//! use. One connection can carry several requests in turn.

use std::{
    io,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    frame::{FrameError, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, read_frame, write_frame},
    protocol::{DecodeError, Request, Response, decode_response, encode_request},
    server::CONTROL_GROUP,
};

pub const DEFAULT_SOCKET: &str = "/run/shield/shield.sock";
/// Long enough for any read; mutations that fetch or reload get more (see
/// `shieldctl`'s per-command timeouts).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach shield-agent at {}: is shield-agent running? (systemctl status shield-agent)",
        path.display()
    )]
    NotRunning {
        path: PathBuf,
        /// Not a `#[source]`: "No such file or directory" after that
        /// sentence adds noise, not information.
        cause: io::Error,
    },
    #[error(
        "permission denied on {}: run as root or add your user to group `{CONTROL_GROUP}` (then log in again)",
        path.display()
    )]
    PermissionDenied { path: PathBuf },
    #[error("talking to shield-agent at {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("shield-agent at {} did not answer within {}s", path.display(), timeout.as_secs_f64())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("shield-agent at {} closed the connection without answering", path.display())]
    Closed { path: PathBuf },
    #[error("the request is too large ({len} bytes; the limit is {max})")]
    RequestTooLarge { len: u64, max: usize },
    #[error("shield-agent at {} sent a reply over the {max}-byte limit ({len} bytes)", path.display())]
    ResponseTooLarge { path: PathBuf, len: u64, max: usize },
    #[error("unexpected reply from shield-agent at {}: {source}", path.display())]
    Protocol { path: PathBuf, source: DecodeError },
    #[error("cannot encode the request: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    /// Connects with [`DEFAULT_TIMEOUT`] for each request.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
                path: path.to_path_buf(),
                cause: e,
            },
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                path: path.to_path_buf(),
            },
            _ => ClientError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        let mut client = Client {
            stream,
            path: path.to_path_buf(),
            timeout: DEFAULT_TIMEOUT,
        };
        client.set_timeout(DEFAULT_TIMEOUT)?;
        Ok(client)
    }

    /// The time allowed for each of sending a request and receiving its
    /// reply.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        // A zero timeout means "block forever" to the socket API.
        let t = Some(timeout.max(Duration::from_millis(1)));
        self.stream
            .set_read_timeout(t)
            .and_then(|()| self.stream.set_write_timeout(t))
            .map_err(|e| self.io(e))?;
        self.timeout = timeout;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one request and waits for its response. An agent-side error
    /// is `Ok(Response::Err(..))`; `Err` means no usable answer arrived.
    pub fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        let body = encode_request(req)?;
        let sent = write_frame(&mut self.stream, &body, MAX_REQUEST_BYTES);
        match sent {
            Ok(()) => {}
            Err(FrameError::TooLarge { len, max }) => {
                return Err(ClientError::RequestTooLarge { len, max });
            }
            // The agent may have answered and closed before reading (over
            // its connection cap, say): its answer is still in our receive
            // buffer and says more than "broken pipe".
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                return match self.read_response() {
                    Ok(resp) => Ok(resp),
                    Err(_) => Err(self.io(e)),
                };
            }
            Err(e) => return Err(self.frame_err(e)),
        }
        self.read_response()
    }

    fn read_response(&mut self) -> Result<Response, ClientError> {
        let body =
            read_frame(&mut self.stream, MAX_RESPONSE_BYTES).map_err(|e| self.frame_err(e))?;
        decode_response(&body).map_err(|source| ClientError::Protocol {
            path: self.path.clone(),
            source,
        })
    }

    fn io(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn frame_err(&self, e: FrameError) -> ClientError {
        if e.is_timeout() {
            return ClientError::Timeout {
                path: self.path.clone(),
                timeout: self.timeout,
            };
        }
        match e {
            FrameError::Closed | FrameError::Truncated { .. } => ClientError::Closed {
                path: self.path.clone(),
            },
            FrameError::TooLarge { len, max } => ClientError::ResponseTooLarge {
                path: self.path.clone(),
                len,
                max,
            },
            FrameError::Io(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                ClientError::Closed {
                    path: self.path.clone(),
                }
            }
            FrameError::Io(e) => self.io(e),
        }
    }
}
