//! All transports modules available in engineioxide

pub mod polling;
pub mod ws;
