//! Dataflow runtime: stages, bounded edges, sources and sinks. Filled by the pipeline issue.
