//! Give libhakmem.so a SONAME, so that tools that look for an allocator by
//! library name (valgrind's `--soname-synonyms=somalloc=libhakmem.so`) and
//! programs linked against it record a stable name.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libhakmem.so");
}
