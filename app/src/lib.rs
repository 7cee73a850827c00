//! qplay-app: the Leptos playground (page) and the compute worker, talking through
//! [`protocol`]. The page renders and decodes nothing heavy; the worker owns the model.

pub mod bridge;
pub mod components;
pub mod protocol;
pub mod state;
pub mod url;
pub mod worker;
pub mod zoo;

pub use components::App;
