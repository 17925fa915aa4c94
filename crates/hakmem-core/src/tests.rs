//! Whole-engine tests through the `api` layer (module tests sit beside each
//! module).
