//! Fanout's Socket.IO signalling server (built in the signalling issue).
