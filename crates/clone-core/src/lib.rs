//! The pure clone engine.
