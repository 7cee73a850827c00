//! Entry point of the page: mounts the root component.
fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(qplay_app::App);
}
