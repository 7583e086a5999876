//! Instrumentation HTTP server.
