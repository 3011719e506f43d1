//! What every chapter shares, and nothing more: the command line, logging
//! that cannot crash, socket plumbing, the frame format, and the stop signals.
//!
//! Code that *is* a chapter's lesson stays in that chapter, even when a later
//! chapter repeats it: a reader should be able to read one chapter on its own.

pub mod args;
pub mod frame;
pub mod log;
pub mod net;
pub mod signals;
