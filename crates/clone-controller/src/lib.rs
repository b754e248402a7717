//! The clone controller.
