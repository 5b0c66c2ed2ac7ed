//! The inbound SA database: finds the SA for a received ESP packet by SPI
//! and outer destination, and runs it through [`crate::esp::decap`].

use crate::buf::PacketBuf;
use crate::esp::{self, EspLocation};
use crate::sa::{InboundSa, LifetimeEvent, Seconds};
use crate::stats::{DropCounters, DropReason};
use std::collections::HashMap;

/// An SPI that is already in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("spi {0:#x} is already in use by another inbound SA")]
pub struct SpiInUse(pub u32);

/// Inbound SAs by SPI. SPIs are unique among a gateway's inbound SAs (the
/// control plane allocates or validates them); the destination check keeps
/// an SA from answering for an address that is not its own.
#[derive(Debug, Default)]
pub struct InboundSad {
    by_spi: HashMap<u32, InboundSa>,
    /// Drops before an SA was found (malformed, fragment, not-esp, unknown
    /// SPI); each SA counts its own.
    pub drops: DropCounters,
}

/// What a received packet was found to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub seq: u64,
    pub location: EspLocation,
}

impl InboundSad {
    pub fn insert(&mut self, sa: InboundSa) -> Result<(), SpiInUse> {
        let spi = sa.cfg.spi;
        if self.by_spi.contains_key(&spi) {
            return Err(SpiInUse(spi));
        }
        self.by_spi.insert(spi, sa);
        Ok(())
    }

    pub fn remove(&mut self, spi: u32) -> Option<InboundSa> {
        self.by_spi.remove(&spi)
    }

    pub fn get(&self, spi: u32) -> Option<&InboundSa> {
        self.by_spi.get(&spi)
    }

    /// The SA for this SPI and outer destination. An SA whose local address
    /// is unspecified accepts any destination.
    pub fn lookup(&mut self, loc: &EspLocation) -> Option<&mut InboundSa> {
        self.by_spi.get_mut(&loc.spi).filter(|sa| sa.cfg.local.is_unspecified() || sa.cfg.local == loc.dst)
    }

    /// Locates ESP in `pkt`, finds its SA and decapsulates: on success `pkt`
    /// holds the inner packet. Every drop is counted, here or on the SA.
    pub fn receive<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        pkt: &mut PacketBuf<B>,
        now: Seconds,
        events: &mut Vec<LifetimeEvent>,
    ) -> Result<Received, DropReason> {
        let location = esp::locate(pkt.data()).inspect_err(|&r| self.drops.count(r))?;
        let Some(sa) = self.lookup(&location) else {
            self.drops.count(DropReason::UnknownSpi);
            return Err(DropReason::UnknownSpi);
        };
        let seq = esp::decap(sa, pkt, &location, now, events)?;
        Ok(Received { seq, location })
    }
}
