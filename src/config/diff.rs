//! What changed between two configs (SIGHUP reload), as pure code.
