//! Rebuilds the gateway when the editor page's built assets change, so a
//! binary never serves a stale page. `make web` builds them (npm + esbuild);
//! `crate::editor` embeds whatever `web/dist` holds at compile time.

fn main() {
    println!("cargo:rerun-if-changed=../../web/dist");
}
