//! Monitors (to be written)
