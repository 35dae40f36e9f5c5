//! faultd
