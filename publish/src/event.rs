//! What the apps hand to the publishers: frames as the encoders saw them, and records
//! (captions, answers, actions, lines of text) as the JSON documents the apps print.

use std::time::Instant;

use pipeline::{EdgeConfig, Envelope, Frame, Graph, Input, Output, Payload};
use serde::Serialize;
use serde_json::Value;

/// What a record is: the last part of its MQTT topic, and how the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `describe`'s caption of a scene.
    Caption,
    /// The kiosk's answer to an utterance.
    Answer,
    /// The kiosk's action for a command.
    Action,
    /// An utterance the kiosk heard that asked for nothing.
    Transcript,
    /// A line of text from a graph.
    Text,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Caption => "caption",
            Kind::Answer => "answer",
            Kind::Action => "action",
            Kind::Transcript => "transcript",
            Kind::Text => "text",
        }
    }
}

/// A frame as the encoders saw it.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub frame: Frame,
    /// The detector's objects as the apps print them (label, score, box in frame pixels).
    pub objects: Value,
    /// What the classifier saw in the whole frame, best first.
    pub labels: Vec<String>,
}

impl Sighting {
    /// True when the detector found a person.
    pub fn person(&self) -> bool {
        self.objects
            .as_array()
            .is_some_and(|objects| objects.iter().any(|o| o["label"] == "person"))
    }
}

/// A result as the app printed it with `--json`.
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: Kind,
    /// Seconds since the start of the run (capture time, or the end of speech).
    pub t_s: f64,
    /// From capture (or the end of speech) to the finished result: the page plots it.
    pub latency_ms: f64,
    pub body: Value,
}

/// What travels to a publisher.
#[derive(Debug, Clone)]
pub enum Event {
    Seen(Sighting),
    Said(Record),
}

/// What a publisher's stage can take from its edge: the apps' events, and a graph file's
/// payloads.
pub trait Publishable: Send + 'static {
    /// The event to publish, if any. `t_s`: capture time, seconds since the publisher
    /// started; `age_ms`: time since capture.
    fn event(&self, seq: u64, t_s: f64, age_ms: f64) -> Option<Event>;
}

impl Publishable for Event {
    fn event(&self, _: u64, _: f64, _: f64) -> Option<Event> {
        Some(self.clone())
    }
}

/// A graph's text lines become `text` records, its frames are shown (nothing detected in
/// them), its audio has nothing to show.
impl Publishable for Payload {
    fn event(&self, seq: u64, t_s: f64, age_ms: f64) -> Option<Event> {
        match self {
            Payload::Text(text) => Some(Event::Said(Record {
                kind: Kind::Text,
                t_s,
                latency_ms: age_ms,
                body: serde_json::json!({"seq": seq, "text": text}),
            })),
            Payload::Frame(frame) => Some(Event::Seen(Sighting {
                frame: frame.clone(),
                objects: Value::Array(Vec::new()),
                labels: Vec::new(),
            })),
            Payload::Audio(_) => None,
        }
    }
}

/// Queue of each publisher: a slow one loses its oldest events, never holds up the sender.
pub const QUEUE: usize = 32;

/// The edges into the publishers of a run (none, the web page, MQTT, or both).
#[derive(Clone, Default)]
pub struct Outlets(Vec<Output<Envelope<Event>>>);

impl Outlets {
    /// A new edge into a publisher, watched by the graph's monitor as `name`: the
    /// publisher's stage reads the returned input.
    pub fn open(&mut self, graph: &Graph, name: &str) -> Input<Envelope<Event>> {
        let (tx, rx) = graph.edge(name, EdgeConfig::latest(QUEUE));
        self.0.push(tx);
        rx
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Hands an event to every publisher; `make` runs only when there is one. A publisher
    /// that has stopped is passed over (its failure stops the graph on its own).
    pub fn send(&self, seq: u64, captured: Instant, make: impl FnOnce() -> Event) {
        if self.0.is_empty() {
            return;
        }
        let event = make();
        for out in &self.0 {
            let _ = out.send(Envelope::new(seq, captured, event.clone()));
        }
    }
}
