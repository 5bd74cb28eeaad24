//! JSON Schema of every type that crosses to TypeScript: configurations and options (as the engine reads
//! them: fields with defaults are optional) and records and results (as it writes them). The package's
//! TypeScript types and their doc comments are generated from it (scripts/generate-types.ts), so they
//! cannot drift from these definitions.
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// The schema as one draft-07 document whose `definitions` hold every type by name.
pub fn engine_schema() -> Value {
    let mut inputs = SchemaSettings::draft07().for_deserialize().into_generator();
    add::<crate::experiment::ExperimentConfig>(&mut inputs);
    add::<crate::tasks::StreamConfig>(&mut inputs);
    add::<crate::eval::EvalOptions>(&mut inputs);
    add::<crate::analysis::AnalysisOptions>(&mut inputs);
    add::<crate::distributed::GroupSettings>(&mut inputs);

    let mut outputs = SchemaSettings::draft07().for_serialize().into_generator();
    add::<crate::experiment::StepRecord>(&mut outputs);
    add::<crate::params::ParamInfo>(&mut outputs);
    add::<crate::eval::EvalRaw>(&mut outputs);
    add::<crate::analysis::Analysis>(&mut outputs);
    add::<crate::analysis::learned::ArrayStats>(&mut outputs);
    add::<crate::runtime::RuntimeInfo>(&mut outputs);
    add::<crate::tasks::SineFn>(&mut outputs);
    add::<crate::tasks::DatasetInfo>(&mut outputs);
    add::<crate::tasks::omniglot::ZipSummary>(&mut outputs);

    // A type that is both read and written (options echoed in a result) keeps its input form.
    let mut definitions: Map<String, Value> = outputs.take_definitions(true);
    definitions.extend(inputs.take_definitions(true));
    // The names of the files the engine writes, so that TypeScript reads them from here instead of restating them.
    let files = json!({ "checkpoint": crate::checkpoint::MANIFEST });
    json!({ "$schema": "http://json-schema.org/draft-07/schema#", "title": "EngineTypes", "definitions": definitions, "x-files": files })
}

fn add<T: JsonSchema>(generator: &mut SchemaGenerator) {
    generator.subschema_for::<T>();
}
