//! Where percept's perceptions go out, beside the terminal: a live web page served by the
//! binary itself ([`web`]), and an MQTT broker with Home Assistant discovery ([`mqtt`]).
//!
//! Both are sinks of the dataflow graph: stages fed by edges of [`Event`]s, shared by
//! `describe`, `kiosk` and `percept run`. The apps hand their results to them through
//! [`Outlets`], whose edges drop the oldest item when a publisher falls behind, so a slow
//! browser or an absent broker never holds the pipeline back.

pub mod event;
pub mod mqtt;
pub mod web;

pub use event::{Event, Kind, Outlets, Publishable, Record, Sighting};
