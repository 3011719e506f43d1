//! What every chapter shares, and nothing more: the command line, logging
//! that cannot crash, socket plumbing, the frame format, the stop signals,
//! an event loop's timeout, and the slab that later chapters keep their
//! connections and tasks in.
//!
//! Code that *is* a chapter's lesson stays in that chapter, even when a later
//! chapter repeats it: a reader should be able to read one chapter on its own.

pub mod args;
pub mod frame;
pub mod log;
pub mod net;
pub mod signals;
pub mod slab;
pub mod time;
