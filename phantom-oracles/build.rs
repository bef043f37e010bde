//! Links libseccomp by its soname, `libseccomp.so.2`, rather than with
//! `-lseccomp`: `-lseccomp` needs the `libseccomp.so` symlink from
//! libseccomp-dev, which `cargo xtask test` installs, but xtask depends on
//! this crate and is built before it can install anything. The runtime
//! library (Debian's libseccomp2) is there already: apt depends on it.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-link-lib=dylib:+verbatim=libseccomp.so.2");
}
