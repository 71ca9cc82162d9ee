//! On Windows, links WinFsp's DLL delay-loaded, as the `winfsp` crate
//! requires: the DLL is found at run time in WinFsp's install directory
//! (and `durafs mount` says so when it is not installed). Nothing to do on
//! other OSes.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "windows" {
        return;
    }
    let dll = match var("CARGO_CFG_TARGET_ARCH").as_str() {
        "x86_64" => "winfsp-x64.dll",
        "aarch64" => "winfsp-a64.dll",
        _ => "winfsp-x86.dll",
    };
    if var("CARGO_CFG_TARGET_ENV") == "msvc" {
        println!("cargo:rustc-link-lib=dylib=delayimp");
        println!("cargo:rustc-link-arg=/DELAYLOAD:{dll}");
    } else {
        println!("cargo:rustc-link-arg=-Wl,--delayload={dll}");
    }
}
