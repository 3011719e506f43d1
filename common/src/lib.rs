//! What every chapter shares, and nothing more: the command line, logging
//! that cannot crash, socket plumbing, the frame format, the stop signals,
//! an event loop's timeout, and the slab that later chapters keep their
//! connections and tasks in.
//!
//! Code that *is* a chapter's lesson stays in that chapter, even when a later
//! chapter repeats it: a reader should be able to read one chapter on its own.

// Every chapter depends on this crate, so on another system this is the
// first and only error a build shows, rather than pages of missing epoll,
// signalfd and accept4 (the modules are left out there for that reason).
#[cfg(not(target_os = "linux"))]
compile_error!(
    "echo-steps builds only on Linux: it teaches Linux's system calls (epoll, \
     signalfd, io_uring). On macOS or Windows, build and run it inside Linux: \
     a virtual machine, WSL2 on Windows, or a container such as \
     `docker run -it -v \"$PWD\":/src -w /src rust cargo test --workspace`."
);

#[cfg(target_os = "linux")]
pub mod args;
#[cfg(target_os = "linux")]
pub mod frame;
#[cfg(target_os = "linux")]
pub mod log;
#[cfg(target_os = "linux")]
pub mod net;
#[cfg(target_os = "linux")]
pub mod signals;
pub mod slab;
pub mod time;
