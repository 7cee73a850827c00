//! Entry point of the compute worker (built by trunk with data-type="worker").
fn main() {
    qplay_app::worker::start();
}
