//! Run results and their renderings: text, JSON, JUnit XML.

pub mod json;
pub mod junit;
pub mod model;
mod proxy;
pub mod text;

pub use proxy::proxy_rule_report;
