//! One control request, answered end to end: under the agent's lock
//! ([`control::handle`]), then, for a change, once it is on disk
//! (agent/writer.rs); a feed refresh without the lock, as it fetches over
//! the network (agent::feeds::refresh). The control server's handler in
//! agent/daemon.rs is this function and nothing else.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{
    Agent,
    control::{self, Handled},
    feeds::{self, RefreshError},
    lock, writer,
};
use crate::control::{ErrorKind, Peer, Request, Response};

/// Answers `req` from `peer`. `exit` is told when the request detached the
/// agent (`shieldctl detach`), which then exits.
pub async fn serve(
    agent: &Arc<Mutex<Agent>>,
    exit: &Notify,
    req: Request,
    peer: &Peer,
) -> Response {
    let mutation = req.is_mutation();
    let (handled, wrote) = {
        let mut a = lock(agent);
        let handled = control::handle(&mut a, req, peer);
        if a.is_detached() {
            exit.notify_one();
        }
        (handled, mutation && a.has_pending_writes())
    };
    let resp = match handled {
        Handled::Answer(resp) => resp,
        Handled::Refresh { name, force } => {
            tracing::info!(peer = %peer, ?name, force, "control request: feeds refresh");
            return refresh(agent, name, force).await;
        }
    };
    if !wrote {
        return resp;
    }
    // What this request changed is on disk before it answers, written
    // outside the lock (agent/writer.rs).
    writer::flush(agent).await;
    control::note_unsaved(&lock(agent), resp)
}

/// `feeds refresh [NAME]`: each feed in turn, or the one named. A feed
/// that does not exist is an error of its own; a feed whose refresh fails
/// is reported beside the others, and the answer is then an error.
async fn refresh(agent: &Arc<Mutex<Agent>>, name: Option<String>, force: bool) -> Response {
    let names: Vec<String> = match name {
        Some(n) => vec![n],
        None => lock(agent)
            .feeds()
            .states
            .iter()
            .map(|s| s.cfg.name.clone())
            .collect(),
    };
    if names.is_empty() {
        return Response::done("no feeds are configured");
    }
    let mut lines = Vec::new();
    let mut failed = false;
    for n in names {
        match feeds::refresh(agent.clone(), n.clone(), force).await {
            Ok(m) => lines.push(m),
            Err(e @ RefreshError::NotFound(_)) => {
                return Response::error(ErrorKind::NotFound, e.to_string());
            }
            Err(e) => {
                failed = true;
                lines.push(format!("{n}: {e}"));
            }
        }
    }
    if failed {
        Response::error(ErrorKind::Conflict, lines.join("\n"))
    } else {
        Response::done(lines.join("\n"))
    }
}
