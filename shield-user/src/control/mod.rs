//! The control plane: the protocol `shieldctl` speaks to `shield-agent`
//! over a Unix socket, the socket server the agent runs, the client, and
//! the CLI's definitions and rendering.
//!
//! What the agent does with each request is not here: it implements
//! [`server::Handler`].

pub mod cli;
pub mod client;
pub mod frame;
pub mod protocol;
pub mod render;
pub mod server;
pub mod units;

pub use client::{Client, ClientError, DEFAULT_SOCKET};
pub use protocol::{ErrorKind, ErrorReply, PROTOCOL_VERSION, Reply, Request, Response};
pub use server::{
    ControlSocket, Handler, Peer, RequestCounters, ServerConfig, ServerError, handler_fn, serve,
};

#[cfg(test)]
mod fuzz;
