//! Run results and their renderings: text, JSON, JUnit XML.

pub mod json;
pub mod junit;
pub mod model;
pub mod text;
