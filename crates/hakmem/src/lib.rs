//! libhakmem: the C allocation API. Every exported symbol forwards to
//! `hakmem_core::api`, where glibc's semantics are implemented and tested;
//! nothing else happens here.
//!
//! The crate is `no_std`, so the library carries no Rust runtime that could
//! allocate behind the allocator's back; a panic (which the core is written
//! never to raise) aborts.

#![cfg_attr(not(test), no_std)]
#![allow(clippy::missing_safety_doc)]

use core::ffi::c_void;
use hakmem_core::api;

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    hakmem_core::os::write_stderr(b"hakmem: internal error (panic); aborting\n");
    hakmem_core::os::abort()
}

// The load-time constructor (ELF .init_array).
#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

extern "C" fn on_load() {
    hakmem_core::lifecycle::on_load();
}

#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    api::malloc(size).cast()
}

#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: C callers pass null or a pointer from an allocation function;
    // anything else is detected and reported by the core.
    unsafe { api::free(p.cast()) }
}

#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    api::calloc(n, size).cast()
}

#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: as for free.
    unsafe { api::realloc(p.cast(), size).cast() }
}

#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    // SAFETY: as for free.
    unsafe { api::reallocarray(p.cast(), n, size).cast() }
}

#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    // SAFETY: C callers pass a writable pointer.
    unsafe { api::posix_memalign(out.cast(), align, size) }
}

#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    api::aligned_alloc(align, size).cast()
}

#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    api::memalign(align, size).cast()
}

#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    api::valloc(size).cast()
}

#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    api::pvalloc(size).cast()
}

#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: as for free.
    unsafe { api::malloc_usable_size(p.cast()) }
}

#[no_mangle]
pub extern "C" fn malloc_trim(pad: usize) -> i32 {
    api::malloc_trim(pad)
}

#[no_mangle]
pub extern "C" fn malloc_stats() {
    api::malloc_stats();
}

#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    // SAFETY: as for free.
    unsafe { api::free_sized(p.cast(), size) }
}

#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    // SAFETY: as for free.
    unsafe { api::free_aligned_sized(p.cast(), align, size) }
}

#[no_mangle]
pub extern "C" fn mallinfo2() -> api::MallInfo2 {
    api::mallinfo2()
}

#[no_mangle]
pub extern "C" fn mallinfo() -> api::MallInfo {
    api::mallinfo()
}

#[no_mangle]
pub unsafe extern "C" fn malloc_info(options: i32, stream: *mut c_void) -> i32 {
    // SAFETY: C callers pass a FILE* open for writing.
    unsafe { api::malloc_info(options, stream.cast()) }
}

#[no_mangle]
pub extern "C" fn mallopt(param: i32, value: i32) -> i32 {
    api::mallopt(param, value)
}
