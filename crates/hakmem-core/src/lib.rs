//! hakmem-core: the allocation engine behind libhakmem.
//!
//! Modules, lowest layer first; each uses only modules above it in this list
//! (see README.md beside this file):
//!
//! - `os`, `sync`: the OS boundary (mmap, madvise, futex, stderr, thread
//!   ids, keys) and an allocation-free lock.
//! - `size_class`: the size classes (pure tables).
//! - `diag`, `config`, `stats`, `misuse`: `hakmem:` lines, HAKMEM_* flags,
//!   counters, misuse reports.
//! - `list`, `page_map`, `remote`: pure data structures.
//! - `slab`, `segment`: slabs of one size class inside 4 MiB segments.
//! - `thread_cache`, `heap`: per-class bins, and a thread's slabs and slow paths.
//! - `large`: blocks over 256 KiB.
//! - `reclaim`: memory whose owner is idle or gone comes back.
//! - `thread`: the calling thread's heap, the fast paths, thread start/exit.
//! - `guest`: this copy is loaded but is not the process's `malloc`.
//! - `foreign`: pointers that are not ours.
//! - `report`: the statistics report and glibc's introspection figures.
//! - `crash`: the opt-in crash report (HAKMEM_CRASH_REPORT=1).
//! - `api`: the C allocation API with glibc's semantics.
//! - `lifecycle`: load-time set-up and fork handlers.
//!
//! The crate is `no_std` and never allocates through a global allocator:
//! code reachable from `malloc` must not call `malloc`.

#![cfg_attr(not(any(test, loom)), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod os;
pub mod sync;

pub mod size_class;

pub mod config;
pub mod diag;
pub mod misuse;
pub mod stats;

pub mod list;
pub mod page_map;
pub mod remote;

pub mod segment;
pub mod slab;

pub mod heap;
pub mod thread_cache;

pub mod large;
pub mod reclaim;
pub mod thread;

pub mod guest;

pub mod foreign;

pub mod crash;
pub mod report;

pub mod api;
pub mod lifecycle;

#[cfg(test)]
mod tests;
