#![recursion_limit = "512"]
//! The hydrate entry point: the wasm module that takes over the server-rendered
//! dashboard in the browser.

use wasm_bindgen::prelude::wasm_bindgen;

#[wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
