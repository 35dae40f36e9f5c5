//! Run results and their renderings: text, JSON, JUnit XML.

pub mod model;
