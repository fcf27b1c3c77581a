//! Whether each XDP link still holds its interface, asked from outside the
//! agent's lock (docs/ARCHITECTURE.md, "The agent's tasks").
//!
//! The kernel answers that question (the link's info, by its pin) under
//! rtnl, the one lock of the host's whole network configuration. Other
//! work on the host holds rtnl for long stretches: network namespaces
//! being torn down, containers coming and going, a busy `ip` or `tc`. Asked
//! under the agent's lock, the question would stall control requests,
//! scrapes, flood events, CrowdSec polls and the watchdog for as long as
//! rtnl is busy elsewhere. So a task of its own asks it on a blocking
//! thread, and the agent keeps the last answer; a scrape reports that
//! answer, at most a second old.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{Agent, lock};
use crate::dataplane;

/// How often the links are looked at.
const EVERY: Duration = Duration::from_secs(1);

/// The last answer for each attached interface.
#[derive(Debug, Default)]
pub struct LinkWatch {
    /// Whether the interface's link held it when last looked at (or when
    /// it was attached, before the first look).
    held: BTreeMap<String, bool>,
    /// Interfaces whose loss was logged (said once, and once when back).
    lost: Vec<String>,
    /// Bumped by every attach and detach: an answer about links that a
    /// reload replaced meanwhile is thrown away, not taken as a loss.
    generation: u64,
}

/// What to look at: the pins, the interfaces, and the generation asked.
pub struct Targets {
    pin_dir: PathBuf,
    ifaces: Vec<String>,
    generation: u64,
}

impl Agent {
    /// The links to look at; `None` once detached.
    fn link_targets(&self) -> Option<Targets> {
        (!self.detached).then(|| Targets {
            pin_dir: self.cfg.pin_dir.clone(),
            ifaces: self.attached.iter().map(|a| a.iface.clone()).collect(),
            generation: self.links.generation,
        })
    }

    /// Links were just attached (or replaced, or removed): what the agent
    /// holds now is what it knows, until the next look.
    pub(super) fn links_attached(&mut self) {
        let w = &mut self.links;
        w.generation += 1;
        w.held = self
            .attached
            .iter()
            .map(|a| (a.iface.clone(), true))
            .collect();
    }

    /// Takes an answer: says so when a link stopped holding its interface
    /// (deleted, or detached behind the agent's back) and when it holds one
    /// again.
    fn note_links(&mut self, generation: u64, seen: Vec<(String, bool)>) {
        if generation != self.links.generation || self.detached {
            return;
        }
        for (iface, live) in seen {
            let known_lost = self.links.lost.contains(&iface);
            if !live && !known_lost {
                let mode = self
                    .attached
                    .iter()
                    .find(|a| a.iface == iface)
                    .map_or("?", |a| a.mode.as_str());
                tracing::error!(
                    iface,
                    mode,
                    "XDP link no longer attached: traffic on this interface is NOT filtered; reload or restart shield-agent to attach again"
                );
                self.links.lost.push(iface.clone());
            } else if live && known_lost {
                tracing::info!(iface, "XDP link attached again");
                self.links.lost.retain(|i| i != &iface);
            }
            self.links.held.insert(iface, live);
        }
    }

    /// Whether `iface`'s link held it at the last look.
    pub(super) fn link_held(&self, iface: &str) -> bool {
        !self.detached && self.links.held.get(iface).copied().unwrap_or(false)
    }
}

/// Looks at the links every [`EVERY`] for as long as the agent runs. A
/// look that rtnl holds up delays only the next look.
pub async fn watch_loop(agent: Arc<Mutex<Agent>>) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(t) = lock(&agent).link_targets() else {
            continue;
        };
        let generation = t.generation;
        let looked = tokio::task::spawn_blocking(move || {
            t.ifaces
                .into_iter()
                .map(|i| {
                    let live = dataplane::link_live(&t.pin_dir, &i);
                    (i, live)
                })
                .collect::<Vec<_>>()
        })
        .await;
        match looked {
            Ok(seen) => lock(&agent).note_links(generation, seen),
            Err(e) => tracing::error!("looking at the XDP links failed: {e}"),
        }
    }
}
